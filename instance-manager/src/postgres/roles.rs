//! The roles and database a primary must have, created or corrected at every start.
//!
//! Idempotent, so a manager that died between initdb and this step finishes the job on its
//! next start. Passwords are hashed here into SCRAM verifiers, so the plain text never
//! reaches Postgres (nor its logs, even with `log_statement = all`).

use tokio_postgres::Client;

use crate::config::Validated;
use crate::osuser::read_secret;
use crate::pgconf::{REPLICATION_USER, SUPERUSER};

use super::sql::Error;

/// Errors ensuring roles.
#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    /// SQL failed.
    #[error(transparent)]
    Sql(#[from] Error),
    /// A password file could not be read.
    #[error(transparent)]
    Secret(#[from] crate::osuser::Error),
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn verifier(file: &std::path::Path) -> Result<String, crate::osuser::Error> {
    let secret = read_secret(file)?;
    Ok(postgres_protocol::password::scram_sha_256(secret.expose().as_bytes()))
}

/// Creates the replication role, the application owner and database when missing, and sets
/// every password that has a file.
pub async fn ensure_roles(client: &Client, v: &Validated) -> Result<(), RolesError> {
    // These are bootstrap statements, idempotent and repeated at every start: they must not
    // wait for a synchronous standby that cannot connect before its role exists.
    client.batch_execute("SET synchronous_commit TO local").await.map_err(Error::from)?;
    let boot = &v.config.bootstrap;
    ensure_role(client, REPLICATION_USER, "LOGIN REPLICATION").await?;
    ensure_role(client, &boot.owner, "LOGIN").await?;
    for (role, file) in password_files(v) {
        set_password(client, &role, &file).await?;
    }
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&boot.database])
        .await
        .map_err(Error::from)?
        .is_some();
    if !exists {
        let sql = format!("CREATE DATABASE {} OWNER {}", ident(&boot.database), ident(&boot.owner));
        client.batch_execute(&sql).await.map_err(Error::from)?;
        tracing::info!(database = %boot.database, owner = %boot.owner, "application database created");
    }
    Ok(())
}

/// The roles whose password comes from a file, with the file.
pub fn password_files(v: &Validated) -> Vec<(String, std::path::PathBuf)> {
    let creds = &v.config.credentials;
    [
        (SUPERUSER, &creds.superuser_password_file),
        (REPLICATION_USER, &creds.replication_password_file),
        (v.config.bootstrap.owner.as_str(), &creds.app_password_file),
    ]
    .into_iter()
    .filter_map(|(role, file)| file.clone().map(|f| (role.to_string(), f)))
    .collect()
}

/// A fingerprint of a password file's secret (SHA-256), to notice a rotation without
/// keeping the secret.
pub fn fingerprint(file: &std::path::Path) -> Result<[u8; 32], crate::osuser::Error> {
    use sha2::Digest;
    let secret = read_secret(file)?;
    Ok(sha2::Sha256::digest(secret.expose().as_bytes()).into())
}

/// Sets `role`'s password from `file` (as a SCRAM verifier).
pub async fn set_password(client: &Client, role: &str, file: &std::path::Path) -> Result<(), RolesError> {
    let sql = format!("ALTER ROLE {} PASSWORD {}", ident(role), literal(&verifier(file)?));
    client.batch_execute(&sql).await.map_err(Error::from)?;
    Ok(())
}

async fn ensure_role(client: &Client, role: &str, options: &str) -> Result<(), Error> {
    let exists = client.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role]).await?.is_some();
    if !exists {
        client.batch_execute(&format!("CREATE ROLE {} {options}", ident(role))).await?;
        tracing::info!(role, "role created");
    }
    Ok(())
}
