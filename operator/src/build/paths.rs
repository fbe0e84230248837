//! Where the pod mounts what, and so what `instance.yaml` names: the one place the pod and the
//! configuration agree on paths.

/// The data volume's mount point (the image's).
pub const DATA_MOUNT: &str = "/var/lib/postgresql/data";
/// The data directory: a subdirectory of the volume, which Postgres may own with mode 0700.
pub const DATA_DIR: &str = "/var/lib/postgresql/data/pgdata";
/// The WAL volume's mount point (`walStorage`).
pub const WAL_MOUNT: &str = "/var/lib/postgresql/wal";
/// `walDir`: a subdirectory of the WAL volume, which the instance manager creates.
pub const WAL_DIR: &str = "/var/lib/postgresql/wal/pg_wal";
/// The run directory (an `emptyDir`).
pub const RUN_DIR: &str = "/run/pgwarden";
/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/pgwarden/config";
/// The configuration file, `PGWARDEN_CONFIG`.
pub const CONFIG_FILE: &str = "/etc/pgwarden/config/instance.yaml";
/// The key of `instance.yaml` in the ConfigMap.
pub const CONFIG_KEY: &str = "instance.yaml";
/// Where the credentials are projected (one file each).
pub const SECRETS_DIR: &str = "/etc/pgwarden/secrets";
/// Where the server certificate is mounted (`tls.crt`, `tls.key`, `ca.crt`).
pub const TLS_DIR: &str = "/etc/pgwarden/tls";
/// Where backup credentials are projected, as `<secret>/<key>`.
pub const BACKUP_DIR: &str = "/etc/pgwarden/backup";
/// Where the custom queries ConfigMap key is mounted.
pub const QUERIES_DIR: &str = "/etc/pgwarden/queries";

/// The file a credential is projected to.
pub fn secret_file(name: &str) -> String {
    format!("{SECRETS_DIR}/{name}")
}

/// The file a TLS key of the server secret is mounted as.
pub fn tls_file(key: &str) -> String {
    format!("{TLS_DIR}/{key}")
}

/// The file a backup credential (`secret`, `key`) is projected to.
pub fn backup_file(secret: &str, key: &str) -> String {
    format!("{BACKUP_DIR}/{secret}/{key}")
}
