//! `instance-manager backup create|list|delete`: thin clients of `POST /backup`,
//! `GET /backups` and `DELETE /backups/{id}`.

use std::time::Duration;

use anyhow::Context as _;

use super::args::{BackupCommand, Output};
use super::client::ApiClient;
use super::status::{align_columns, format_uptime, write_stdout};
use crate::api::{BackupList, BackupRequest, BackupStarted, ListedBackup};
use crate::backup::BackupInfo;

/// How long `backup create --wait` waits for the backup (a large database takes hours).
const WAIT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Runs a `backup` subcommand; returns the exit code.
pub async fn backup_command(client: &ApiClient, bearer: Option<&str>, command: BackupCommand) -> anyhow::Result<i32> {
    match command {
        BackupCommand::Create { wait, from_standby, output } => {
            let req = BackupRequest { from_standby, wait };
            let text = if wait {
                let client = client.clone().with_timeout(WAIT_TIMEOUT);
                let info: BackupInfo = client.post_json("/backup", &req, bearer).await.context("backup failed")?;
                match output {
                    Output::Json => serde_json::to_string_pretty(&info)?,
                    Output::Table => {
                        let id = info.id.clone();
                        let listed = ListedBackup { info, retention: None };
                        format!("backup {id} done\n{}", render_backups(std::slice::from_ref(&listed)))
                    }
                }
            } else {
                let started: BackupStarted =
                    client.post_json("/backup", &req, bearer).await.context("backup not started")?;
                match output {
                    Output::Json => serde_json::to_string_pretty(&started)?,
                    Output::Table => {
                        format!("backup {} started; `instance-manager status` shows when it is done", started.id)
                    }
                }
            };
            write_stdout(&text)?;
        }
        BackupCommand::List { output } => {
            let list: BackupList = client.get_json("/backups").await?;
            let text = match output {
                Output::Json => serde_json::to_string_pretty(&list)?,
                Output::Table => {
                    let policy = list.retention.as_deref().unwrap_or("keep everything");
                    let head = format!("{} (retention: {policy})\n", list.destination);
                    if list.backups.is_empty() {
                        format!("{head}no backups")
                    } else {
                        format!("{head}{}", render_backups(&list.backups))
                    }
                }
            };
            write_stdout(&text)?;
        }
        BackupCommand::Delete { id } => {
            let path = format!("/backups/{id}");
            let _: serde_json::Value = client.delete_json(&path, bearer).await.context("delete failed")?;
            write_stdout(&format!("backup {id} deleted"))?;
        }
    }
    Ok(0)
}

/// The backups as a table: id, timeline, LSNs, sizes, duration, instance; the data pages
/// that failed checksum verification when any backup found some; the retention verdict.
pub fn render_backups(backups: &[ListedBackup]) -> String {
    let with_verdict = backups.iter().any(|b| b.retention.is_some());
    let with_bad_pages = backups.iter().any(|b| b.info.checksum_failures.is_some_and(|n| n > 0));
    let mut header = vec!["ID", "TL", "START LSN", "STOP LSN", "STORED", "DATA", "DURATION", "INSTANCE"];
    if with_bad_pages {
        header.push("BAD PAGES");
    }
    if with_verdict {
        header.push("RETENTION");
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for b in backups {
        let i = &b.info;
        let seconds = i.stopped_at.duration_since(i.started_at).as_secs().max(0) as u64;
        let instance = if i.from_standby { format!("{} (standby)", i.instance) } else { i.instance.clone() };
        let mut row = vec![
            i.id.clone(),
            i.timeline.to_string(),
            i.start_lsn.to_string(),
            i.stop_lsn.to_string(),
            size(i.stored_bytes),
            size(i.data_bytes),
            format_uptime(seconds),
            instance,
        ];
        if with_bad_pages {
            row.push(i.checksum_failures.map_or_else(|| "-".into(), |n| n.to_string()));
        }
        if with_verdict {
            row.push(match b.retention {
                Some(crate::api::RetentionVerdict::Keep) => "keep".into(),
                Some(crate::api::RetentionVerdict::Expired) => "expired".into(),
                None => "-".into(),
            });
        }
        rows.push(row);
    }
    align_columns(&rows)
}

/// Bytes in binary units, one decimal: `231.4 MiB`.
fn size(bytes: u64) -> String {
    let mut value = bytes as f64;
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"] {
        if value < 1024.0 || unit == "TiB" {
            return if unit == "B" { format!("{bytes} B") } else { format!("{value:.1} {unit}") };
        }
        value /= 1024.0;
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(242_000_000), "230.8 MiB");
    }

    #[test]
    fn the_table_has_one_row_per_backup() {
        let info: BackupInfo = serde_json::from_value(serde_json::json!({
            "id": "20261130T030000Z", "cluster": "main", "instance": "pg-2", "fromStandby": true,
            "systemIdentifier": "1", "postgresVersion": "15.18", "postgresVersionNum": 150018,
            "timeline": 3, "segmentSize": 16777216, "startLsn": "0/5000028", "stopLsn": "0/5000138",
            "startWal": "000000030000000000000005", "stopWal": "000000030000000000000005",
            "startedAt": "2026-11-30T03:00:00Z", "stoppedAt": "2026-11-30T03:01:05Z",
            "compression": "zstd", "files": [], "dataBytes": 242000000, "storedBytes": 30000000
        }))
        .unwrap();
        let listed = ListedBackup { info, retention: Some(crate::api::RetentionVerdict::Expired) };
        let table = render_backups(std::slice::from_ref(&listed));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(lines[0].starts_with("ID") && lines[0].ends_with("RETENTION"), "{table}");
        assert!(!table.contains("BAD PAGES"), "no backup found bad pages: {table}");
        let mut corrupt = listed.clone();
        corrupt.info.checksum_failures = Some(3);
        let table = render_backups(&[listed.clone(), corrupt]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("BAD PAGES"), "{table}");
        assert!(lines[1].contains(" - ") && lines[2].contains(" 3 "), "{table}");
        for cell in
            ["20261130T030000Z", "0/5000028", "0/5000138", "28.6 MiB", "230.8 MiB", "1m5s", "pg-2 (standby)", "expired"]
        {
            assert!(lines[1].contains(cell), "{cell} missing: {table}");
        }
    }
}
