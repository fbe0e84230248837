//! Postgres' copies of the `postgres.tls` files, and the TLS part of its connection strings.
//!
//! Postgres insists that its key be owned by its OS user and readable by nobody else, which a
//! Kubernetes Secret volume does not give (and cannot be changed in place: it is read-only).
//! So the files are copied into `<runDir>/tls/` (not the data directory: base backups must
//! not carry the key), owned by the OS user, the key with mode 0600. Each copy is atomic
//! (written beside, owned, then renamed) because Postgres may read them at any SIGHUP.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::config::Validated;
use crate::osuser::OsUser;
use crate::paths::Paths;

/// Copies the `postgres.tls` files for Postgres (nothing without `postgres.tls`). A CA copy
/// left from an earlier configuration is removed when `caFile` is no longer set.
pub fn install(v: &Validated, paths: &Paths) -> std::io::Result<()> {
    let Some(spec) = &v.config.postgres.tls else { return Ok(()) };
    v.os_user.ensure_dir(&paths.tls_dir(), 0o700).map_err(std::io::Error::other)?;
    copy_owned(&spec.cert_file, &paths.ssl_cert_file(), 0o644, &v.os_user)?;
    copy_owned(&spec.key_file, &paths.ssl_key_file(), 0o600, &v.os_user)?;
    match &spec.ca_file {
        Some(ca) => copy_owned(ca, &paths.ssl_ca_file(), 0o644, &v.os_user)?,
        None => match std::fs::remove_file(paths.ssl_ca_file()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        },
    }
    if let Ok(certified) = crate::tls::certified_key(&spec.cert_file, &spec.key_file) {
        crate::tls::warn_if_expired("postgres.tls.certFile", &certified);
    }
    Ok(())
}

/// Copies `src` to `dst` (mode `mode`, owned by `user`) unless `dst` already holds the same bytes.
fn copy_owned(src: &Path, dst: &Path, mode: u32, user: &OsUser) -> std::io::Result<()> {
    let with_path =
        |what: &str, p: &Path, e: std::io::Error| std::io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()));
    let contents = std::fs::read(src).map_err(|e| with_path("cannot read", src, e))?;
    if std::fs::read(dst).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    let dir = dst.parent().unwrap_or(Path::new("."));
    let name = dst.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        if user.switch {
            std::os::unix::fs::fchown(&f, Some(user.uid), Some(user.gid))?;
        }
        f.write_all(&contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dst)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| with_path("cannot write", dst, e))
}

/// The TLS words of a connection string to another member's Postgres: `sslmode=verify-full`
/// with the CA when `postgres.tls.caFile` is set (the member's certificate must name the host
/// it is reached by), else `sslmode=prefer`.
pub fn ssl_conninfo(v: &Validated, paths: &Paths) -> String {
    match v.config.postgres.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
        Some(_) => {
            format!("sslmode=verify-full sslrootcert={}", super::conninfo_quote(&paths.ssl_ca_file().to_string_lossy()))
        }
        None => "sslmode=prefer".into(),
    }
}

/// The managed parameters for `postgres.tls` (none without it).
pub fn parameters(v: &Validated, paths: &Paths) -> Vec<(&'static str, String)> {
    let Some(spec) = &v.config.postgres.tls else { return Vec::new() };
    let path = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    vec![
        ("ssl", "on".into()),
        ("ssl_cert_file", path(paths.ssl_cert_file())),
        ("ssl_key_file", path(paths.ssl_key_file())),
        ("ssl_ca_file", spec.ca_file.as_ref().map(|_| path(paths.ssl_ca_file())).unwrap_or_default()),
    ]
}
