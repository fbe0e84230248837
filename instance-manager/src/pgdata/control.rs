//! `pg_controldata` and `pg_rewind`: what the data directory was last doing, and moving a
//! former primary onto the new primary's timeline.

use std::process::Command;
use std::time::Duration;

use super::{Error, postgres_env};
use crate::config::Validated;
use crate::paths::Paths;
use crate::supervisor::{self, Supervisor};

/// `Database cluster state` from `pg_control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// `starting up`
    StartingUp,
    /// `shut down`: a primary, stopped cleanly.
    ShutDown,
    /// `shut down in recovery`: a standby, stopped cleanly.
    ShutDownInRecovery,
    /// `shutting down`
    ShuttingDown,
    /// `in crash recovery`
    InCrashRecovery,
    /// `in archive recovery`: a standby.
    InArchiveRecovery,
    /// `in production`: a running (or crashed) primary.
    InProduction,
}

impl ClusterState {
    /// Parses `pg_controldata` output.
    pub fn parse(output: &str) -> Option<Self> {
        let line = output.lines().find_map(|l| l.strip_prefix("Database cluster state:"))?;
        Some(match line.trim() {
            "starting up" => Self::StartingUp,
            "shut down" => Self::ShutDown,
            "shut down in recovery" => Self::ShutDownInRecovery,
            "shutting down" => Self::ShuttingDown,
            "in crash recovery" => Self::InCrashRecovery,
            "in archive recovery" => Self::InArchiveRecovery,
            "in production" => Self::InProduction,
            _ => return None,
        })
    }

    /// Whether the data directory was last running as a primary (so it may hold WAL that a
    /// new primary does not have).
    pub fn was_primary(self) -> bool {
        matches!(self, Self::InProduction | Self::ShutDown | Self::InCrashRecovery | Self::ShuttingDown)
    }
}

/// Reads the cluster state with `pg_controldata`.
pub async fn cluster_state(sup: &Supervisor, v: &Validated, paths: &Paths) -> Result<ClusterState, Error> {
    let mut cmd = Command::new(v.bin("pg_controldata"));
    cmd.arg("-D").arg(&paths.data_dir);
    postgres_env(v, &mut cmd);
    let out = supervisor::run_quiet(sup, "pg_controldata", &mut cmd, Duration::from_secs(30)).await?;
    if !out.status.success() {
        return Err(Error::Tool { tool: "pg_controldata", status: out.status, last_line: out.last_line().into() });
    }
    ClusterState::parse(&out.stdout).ok_or_else(|| Error::Tool {
        tool: "pg_controldata",
        status: out.status,
        last_line: "no \"Database cluster state\" in its output".into(),
    })
}

/// `Latest checkpoint location` from `pg_control` (after a clean shutdown: the shutdown
/// checkpoint, the last record a primary wrote).
pub async fn latest_checkpoint(sup: &Supervisor, v: &Validated, paths: &Paths) -> Result<u64, Error> {
    let mut cmd = Command::new(v.bin("pg_controldata"));
    cmd.arg("-D").arg(&paths.data_dir);
    postgres_env(v, &mut cmd);
    let out = supervisor::run_quiet(sup, "pg_controldata", &mut cmd, Duration::from_secs(30)).await?;
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Latest checkpoint location:"))
        .and_then(|l| l.trim().parse::<crate::api::Lsn>().ok())
        .map(crate::api::Lsn::as_u64)
        .ok_or_else(|| Error::Tool {
            tool: "pg_controldata",
            status: out.status,
            last_line: "no \"Latest checkpoint location\" in its output".into(),
        })
}

/// `pg_rewind` of the data directory onto the primary at `host:port` (as the superuser, with
/// the password from the pgpass file). pg_rewind finishes crash recovery itself first when the
/// former primary did not shut down cleanly.
pub async fn rewind(sup: &Supervisor, v: &Validated, paths: &Paths, host: &str, port: u16) -> Result<(), Error> {
    // A just-promoted primary records its new timeline in pg_control only at its next
    // checkpoint; before that pg_rewind sees "the same timeline" and does nothing, leaving a
    // replica that cannot follow. Ask for that checkpoint first.
    crate::pgconf::tls::install(v, paths).map_err(|e| Error::Tool {
        tool: "pg_rewind",
        status: supervisor::ExitStatus::Code(-1),
        last_line: format!("cannot copy the TLS files: {e}"),
    })?;
    checkpoint_source(v, paths, host, port).await?;
    let source = format!(
        "host={host} port={port} user={} dbname=postgres passfile={} {} connect_timeout=5",
        crate::pgconf::SUPERUSER,
        paths.pgpass().display(),
        crate::pgconf::tls::ssl_conninfo(v, paths),
    );
    let mut cmd = Command::new(v.bin("pg_rewind"));
    cmd.arg("--target-pgdata").arg(&paths.data_dir).arg(format!("--source-server={source}")).arg("--progress");
    // The single-user crash recovery pg_rewind may run must use pgwarden's configuration:
    // with the data directory's bare postgresql.conf it recycles the WAL (no wal_keep_size)
    // that the rewind then needs, and the rewind fails into a full re-clone.
    cmd.arg(format!("--config-file={}", paths.conf_file().display()));
    if v.config.backup.is_some() {
        // WAL already recycled locally is fetched from the archive (restore_command).
        cmd.arg("--restore-target-wal");
    }
    postgres_env(v, &mut cmd);
    let out = supervisor::run_logged(sup, "pg_rewind", &mut cmd, Duration::from_secs(3600)).await?;
    if !out.status.success() {
        return Err(Error::Tool { tool: "pg_rewind", status: out.status, last_line: out.last_line().into() });
    }
    Ok(())
}

async fn checkpoint_source(v: &Validated, paths: &Paths, host: &str, port: u16) -> Result<(), Error> {
    let Some(file) = &v.config.credentials.superuser_password_file else {
        return Err(Error::Tool {
            tool: "pg_rewind",
            status: supervisor::ExitStatus::Code(-1),
            last_line: "no superuser password file: pg_rewind cannot connect to the primary".into(),
        });
    };
    let password = crate::osuser::read_secret(file)?;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(host)
        .port(port)
        .user(crate::pgconf::SUPERUSER)
        .password(password.expose())
        .dbname("postgres")
        .application_name("pgwarden-rewind")
        .connect_timeout(Duration::from_secs(5));
    let fail = |e: tokio_postgres::Error| Error::Tool {
        tool: "CHECKPOINT on the primary",
        status: supervisor::ExitStatus::Code(-1),
        last_line: e.to_string(),
    };
    // The same TLS as pg_rewind's own connection: verify-full with a CA, else TLS when the
    // server offers it (libpq's prefer).
    let tls_error = |e: crate::tls::Error| Error::Tool {
        tool: "CHECKPOINT on the primary",
        status: supervisor::ExitStatus::Code(-1),
        last_line: e.to_string(),
    };
    let tls = match v.config.postgres.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
        Some(_) => {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
            crate::tls::postgres::MakeRustlsConnect::verify_full(&paths.ssl_ca_file())
        }
        None => crate::tls::postgres::MakeRustlsConnect::encrypt_only(),
    }
    .map_err(tls_error)?;
    let (client, conn) = cfg.connect(tls).await.map_err(fail)?;
    tokio::spawn(conn);
    client.batch_execute("CHECKPOINT").await.map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_state() {
        let out =
            "pg_control version number:            1300\nDatabase cluster state:               shut down in recovery\n";
        assert_eq!(ClusterState::parse(out), Some(ClusterState::ShutDownInRecovery));
        assert!(!ClusterState::ShutDownInRecovery.was_primary());
        assert!(ClusterState::InProduction.was_primary());
        assert_eq!(ClusterState::parse("nothing"), None);
    }
}
