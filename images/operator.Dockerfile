# pgwarden/operator: the operator binary and exactly the shared libraries it loads, nothing else
# (no shell, no package manager). Built by images/build; the context is a directory holding
# `operator` and this file.
ARG BASE=pgwarden/debian:bookworm-minbase

# --- 1. Collect the binary, the libraries ldd resolves for it, and the CA bundle -------------
FROM ${BASE} AS collect
COPY operator /out/usr/local/bin/operator
RUN set -eu; \
    for lib in $(ldd /out/usr/local/bin/operator | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do \
      mkdir -p "/out$(dirname "$lib")"; cp -L "$lib" "/out$lib"; \
    done; \
    mkdir -p /out/etc/ssl/certs /out/tmp; \
    cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/; \
    echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin' > /out/etc/passwd; \
    echo 'nonroot:x:65532:' > /out/etc/group; \
    chmod 1777 /out/tmp

# --- 2. The image ------------------------------------------------------------------------------
FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
COPY --from=collect /out/ /
LABEL org.opencontainers.image.title="pgwarden/operator" \
      org.opencontainers.image.description="pgwarden's Kubernetes operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/operator"]
