# pgwarden/postgres: PostgreSQL from Debian with pgwarden's instance manager as PID 1.
# Built by images/build (which assembles the base and builds the binary on the host); the
# context is a directory holding `instance-manager` and this file.
ARG BASE=pgwarden/debian:bookworm-minbase

# --- 1. Install PostgreSQL into the base, then remove what a server never runs ----------------
FROM ${BASE} AS rootfs
ARG PG_MAJOR=15
# Postgres' user and group are 26:26 — fixed (Debian's package would pick the next free system
# id) and the same as in CloudNativePG's and Red Hat's images, so runAsUser/fsGroup, Pod
# Security admission and volumes that already carry 26 keep working. Created before the
# package, which then finds it. Debian gives gid 26 to `tape`, which no container uses: it goes.
RUN groupdel tape \
 && groupadd --system --gid 26 postgres \
 && useradd --system --uid 26 --gid 26 --home-dir /var/lib/postgresql --no-create-home \
      --shell /usr/sbin/nologin --comment "PostgreSQL administrator" postgres \
 && mkdir -p /etc/postgresql-common \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \
 && apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "postgresql-${PG_MAJOR}" \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/* /var/cache/debconf/*-old
# Removed (measured on bookworm + PostgreSQL 15):
# - the JIT: llvmjit.so, its bitcode and LLVM itself (with z3, ~125 MB). Without its provider
#   Postgres plans without JIT (jit has no effect), which is what OLTP wants anyway.
# - perl and the postgresql-common wrappers written in it (pg_ctlcluster, pg_wrapper): the
#   instance manager calls the server's binaries directly, and PATH holds them (psql included).
# - package management (apt; dpkg's status file stays, for scanners that read it), the
#   pgdg/cluster configuration of postgresql-common, and the binaries' manuals.
# - the locales' sources (/usr/share/i18n): initdb runs with --no-locale, and C.UTF-8 is built
#   into glibc.
RUN set -eu; lib=/usr/lib/postgresql/${PG_MAJOR}/lib; \
    rm -rf "$lib"/llvmjit* "$lib"/bitcode /usr/lib/x86_64-linux-gnu/libLLVM* /usr/lib/x86_64-linux-gnu/libz3* \
      /usr/lib/llvm-* /usr/bin/perl* /usr/lib/x86_64-linux-gnu/perl* /usr/share/perl* /usr/lib/x86_64-linux-gnu/perl-base \
      /usr/share/postgresql-common /usr/lib/postgresql/${PG_MAJOR}/bin/pg_ctlcluster /usr/bin/pg_* /usr/sbin/pg_* \
      /usr/share/postgresql/${PG_MAJOR}/man /usr/lib/apt /usr/bin/apt* /var/lib/apt /var/cache/* /etc/postgresql \
      /var/lib/postgresql/* /usr/share/zsh /usr/share/bash-completion /usr/share/common-licenses \
      /usr/share/i18n /usr/sbin/locale-gen /usr/lib/x86_64-linux-gnu/libapt* /usr/lib/x86_64-linux-gnu/libperl* /var/lib/dpkg/info/*.md5sums; \
    mkdir -p /etc/pgwarden /run/pgwarden /var/lib/postgresql/data; \
    chown 26:26 /var/lib/postgresql/data; chmod 0750 /var/lib/postgresql/data; chmod 1777 /run/pgwarden

# /run/pgwarden is root's and 1777 like /tmp, because Docker copies a directory's mode onto a
# tmpfs mounted over it (`--tmpfs /run/pgwarden`) but not its owner: a 0700 directory of 26's
# would become a 0700 tmpfs of root's. The manager uses a run directory it does not own as it is
# (every socket and file in it is private by its own mode); an emptyDir replaces it in a pod.

# --- 2. One layer: the trimmed filesystem, the binary, the metadata ---------------------------
FROM scratch
ARG PG_MAJOR=15
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
COPY --from=rootfs / /
COPY instance-manager /usr/local/bin/instance-manager
ENV PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:/usr/local/bin:/usr/bin:/bin \
    PGWARDEN_CONFIG=/etc/pgwarden/instance.yaml \
    PGHOST=/run/pgwarden \
    LANG=C.UTF-8
LABEL org.opencontainers.image.title="pgwarden/postgres" \
      org.opencontainers.image.description="PostgreSQL ${PG_MAJOR} (Debian) with pgwarden's instance manager as PID 1" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="pgwarden/debian:bookworm-minbase" \
      io.pgwarden.postgres.major="${PG_MAJOR}"
USER 26:26
WORKDIR /var/lib/postgresql
# Postgres, the instance API, metrics.
EXPOSE 5432 8000 9187
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/instance-manager", "run"]
