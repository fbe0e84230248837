//! `wal-archive` and `wal-restore`: Postgres' `archive_command` and `restore_command`. Thin
//! clients of the local manager's socket; what they print goes to Postgres' log.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::ApiClient;

/// Long enough for a slow store; Postgres waits for the command.
const TIMEOUT: Duration = Duration::from_secs(600);

/// Exit code that makes Postgres stop recovery instead of treating the file as missing.
pub const EXIT_FATAL: u8 = 255;

fn absolute(p: &Path) -> std::path::PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(p) }
}

fn message(body: &[u8]) -> String {
    serde_json::from_slice::<crate::api::ErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned())
}

/// Archives `path` (`%p`, relative to Postgres' working directory, the data directory).
pub async fn wal_archive(client: &ApiClient, path: &Path) -> u8 {
    let client = client.clone().with_timeout(TIMEOUT);
    match client.post_raw("/wal/archive", &json!({ "path": absolute(path) })).await {
        Ok((200, _)) => 0,
        Ok((code, body)) => {
            eprintln!("pgwarden wal-archive {}: {} ({code})", path.display(), message(&body));
            1
        }
        Err(e) => {
            eprintln!("pgwarden wal-archive {}: {e}", path.display());
            1
        }
    }
}

/// Restores `name` (`%f`) to `destination` (`%p`).
/// With `strict` (a recovery bootstrap), an unreachable manager stops recovery too.
pub async fn wal_restore(client: &ApiClient, name: &str, destination: &Path, strict: bool) -> u8 {
    let client = client.clone().with_timeout(TIMEOUT);
    let body = json!({ "name": name, "destination": absolute(destination) });
    match client.post_raw("/wal/restore", &body).await {
        Ok((200, _)) => 0,
        // Not in the archive: normal, and not worth a line in the log each time.
        Ok((404, _)) => 1,
        Ok((500, body)) => {
            eprintln!("pgwarden wal-restore {name}: {}: stopping recovery", message(&body));
            EXIT_FATAL
        }
        Ok((code, body)) => {
            eprintln!("pgwarden wal-restore {name}: {} ({code})", message(&body));
            1
        }
        // The manager is PID 1: unreachable means it is restarting. Not available, for now —
        // except in a recovery bootstrap, which must not end early.
        Err(e) => {
            eprintln!("pgwarden wal-restore {name}: {e}");
            if strict { EXIT_FATAL } else { 1 }
        }
    }
}
