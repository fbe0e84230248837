//! What `/status` reports about Postgres, read with SQL in one round trip per view.
//!
//! A standby's timeline is the highest of: the WAL receiver's, the last restartpoint's, and the
//! newest timeline history file it holds. Without a running WAL receiver (its primary just died)
//! the restartpoint's alone lags behind a timeline switch it already followed, and an election
//! would then wrongly see it as behind. The timeline it replays ([`Observed::replay_timeline`])
//! leaves the history files out: a diverged ex-primary fetches the new timeline's history file
//! from its new primary although it can never follow that timeline.

use std::time::Duration;

use tokio_postgres::Client;

use tokio_postgres::Row;

use crate::api::{Lsn, ReplicationPeer, WalReceiver};

use super::sql::Error;

/// Postgres' view of itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// `server_version`.
    pub version: String,
    /// Database system identifier.
    pub system_identifier: Option<String>,
    /// Timeline.
    pub timeline: Option<u32>,
    /// The timeline whose WAL is replayed: a standby's WAL receiver's, else its last
    /// restartpoint's (a primary's: its timeline). Unlike `timeline`, not raised by a history
    /// file fetched for a timeline the standby cannot follow.
    pub replay_timeline: Option<u32>,
    /// Primary's current LSN.
    pub current_lsn: Option<Lsn>,
    /// Standby's received LSN.
    pub received_lsn: Option<Lsn>,
    /// Standby's replayed LSN.
    pub replayed_lsn: Option<Lsn>,
    /// Standby's replay lag in seconds.
    pub replay_lag_seconds: Option<f64>,
    /// Parameters waiting for a restart.
    pub pending_restart: Vec<String>,
    /// `synchronous_standby_names` in force.
    pub synchronous_standby_names: String,
    /// Connected standbys (primary).
    pub replication: Vec<ReplicationPeer>,
    /// WAL receiver (standby).
    pub wal_receiver: Option<WalReceiver>,
}

const SELF_QUERY: &str = "SELECT pg_is_in_recovery(), current_setting('server_version'), \
    (SELECT system_identifier::text FROM pg_control_system()), \
    CASE WHEN pg_is_in_recovery() \
      THEN greatest((SELECT received_tli FROM pg_stat_wal_receiver), (SELECT timeline_id FROM pg_control_checkpoint()), \
        (SELECT max(('x' || substr(name, 1, 8))::bit(32)::int) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{8}[.]history$')) \
      ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END, \
    pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
    CASE WHEN pg_is_in_recovery() THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END, \
    ARRAY(SELECT name FROM pg_settings WHERE pending_restart ORDER BY name), \
    current_setting('synchronous_standby_names'), \
    CASE WHEN pg_is_in_recovery() \
      THEN greatest((SELECT received_tli FROM pg_stat_wal_receiver), (SELECT timeline_id FROM pg_control_checkpoint())) END";

const REPLICATION_QUERY: &str = "SELECT coalesce(application_name, ''), client_addr::text, coalesce(state, ''), \
    coalesce(sync_state, ''), sent_lsn::text, flush_lsn::text, replay_lsn::text, \
    greatest(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint, extract(epoch FROM replay_lag)::float8 \
    FROM pg_stat_replication ORDER BY application_name";

const RECEIVER_QUERY: &str = "SELECT status, sender_host, sender_port FROM pg_stat_wal_receiver";

/// Reads everything `/status` shows, within `timeout`.
pub async fn observe(client: &Client, timeout: Duration) -> Result<Observed, Error> {
    tokio::time::timeout(timeout, observe_inner(client)).await.map_err(|_| Error::Timeout(timeout))?
}

async fn observe_inner(client: &Client) -> Result<Observed, Error> {
    let row = client.query_one(SELF_QUERY, &[]).await?;
    let timeline: Option<i32> = row.get(3);
    let timeline = timeline.and_then(|t| u32::try_from(t).ok());
    let replay_timeline: Option<i32> = row.get(10);
    let mut o = Observed {
        in_recovery: row.get(0),
        version: row.get(1),
        system_identifier: row.get(2),
        timeline,
        replay_timeline: replay_timeline.and_then(|t| u32::try_from(t).ok()).or(timeline),
        current_lsn: lsn(&row, 4),
        received_lsn: lsn(&row, 5),
        replayed_lsn: lsn(&row, 6),
        replay_lag_seconds: row.get(7),
        pending_restart: row.get(8),
        synchronous_standby_names: row.get(9),
        ..Observed::default()
    };
    if o.in_recovery {
        o.wal_receiver = client.query_opt(RECEIVER_QUERY, &[]).await?.map(|r| WalReceiver {
            status: r.get::<_, String>(0).into(),
            sender_host: r.get(1),
            sender_port: r.get(2),
        });
    } else {
        o.replication = client
            .query(REPLICATION_QUERY, &[])
            .await?
            .iter()
            .map(|r| ReplicationPeer {
                name: r.get(0),
                client_addr: r.get(1),
                state: r.get::<_, String>(2).into(),
                sync_state: r.get(3),
                sent_lsn: lsn(r, 4),
                flush_lsn: lsn(r, 5),
                replay_lsn: lsn(r, 6),
                lag_bytes: r.get(7),
                replay_lag_seconds: r.get(8),
            })
            .collect();
    }
    Ok(o)
}

/// Column `i`, a `pg_lsn` read as text: `None` when it is NULL (and, never seen, when Postgres
/// printed something that is no LSN, which is logged).
fn lsn(row: &Row, i: usize) -> Option<Lsn> {
    let text: Option<String> = row.get(i);
    text.and_then(|t| {
        t.parse()
            .map_err(
                |e| tracing::warn!(error = %e, column = i, "postgres returned an unreadable LSN; reported as null"),
            )
            .ok()
    })
}
