//! A durability probe: a task that commits numbered rows to one instance as fast as it can
//! and remembers every commit Postgres acknowledged, and when. A row committed without an
//! acknowledgement (its connection dropped mid-commit) is not counted, and the probe moves on.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One acknowledged commit.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    /// The row id.
    pub id: i64,
    /// When the acknowledgement arrived.
    pub at: Instant,
}

/// A running writer; [`stop`](Writer::stop) returns what it saw acknowledged.
pub struct Writer {
    acks: Arc<Mutex<Vec<Ack>>>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Starts writing rows `first..` into `table` (created if missing) on the Postgres whose
    /// socket is in `run_dir` on `port`, one row per transaction, every `pause`.
    pub fn start(run_dir: PathBuf, port: u16, table: &str, first: i64, pause: Duration) -> Self {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(run_dir).port(port).user("postgres");
        Self::start_with(cfg, table, first, pause)
    }

    /// Like [`start`](Self::start), on the Postgres at `host:port` over TCP, as `postgres` with
    /// the test clusters' password.
    pub fn start_tcp(host: std::net::IpAddr, port: u16, table: &str, first: i64, pause: Duration) -> Self {
        let mut cfg = tokio_postgres::Config::new();
        cfg.hostaddr(host).port(port).user("postgres").password(super::TEST_PASSWORD);
        Self::start_with(cfg, table, first, pause)
    }

    /// Like [`start`](Self::start), connecting with `cfg` (host, port, user, password).
    pub fn start_with(mut cfg: tokio_postgres::Config, table: &str, first: i64, pause: Duration) -> Self {
        cfg.dbname("postgres").connect_timeout(Duration::from_secs(1));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let cancel = CancellationToken::new();
        let (a, c, table) = (Arc::clone(&acks), cancel.clone(), table.to_string());
        let task = tokio::spawn(async move {
            let mut id = first;
            let mut client: Option<tokio_postgres::Client> = None;
            while !c.is_cancelled() {
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    client = connect(&cfg).await;
                    if let Some(cl) = &client {
                        let _ = cl
                            .batch_execute(&format!("CREATE TABLE IF NOT EXISTS {table} (id bigint primary key)"))
                            .await;
                    }
                }
                if let Some(cl) = &client {
                    let sql = format!("INSERT INTO {table} VALUES ({id})");
                    match tokio::time::timeout(Duration::from_secs(2), cl.batch_execute(&sql)).await {
                        Ok(Ok(())) => {
                            a.lock().expect("acks").push(Ack { id, at: Instant::now() });
                            id += 1;
                        }
                        // An earlier attempt committed this row but its acknowledgement never
                        // came (the connection was dropped while the commit waited, e.g. for a
                        // synchronous standby): not acknowledged, and the next row goes on.
                        Ok(Err(e)) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => id += 1,
                        _ => client = None,
                    }
                }
                tokio::time::sleep(pause).await;
            }
        });
        Self { acks, cancel, task }
    }

    /// Acknowledged commits so far.
    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().expect("acks").clone()
    }

    /// Stops the writer and returns every acknowledged commit.
    pub async fn stop(self) -> Vec<Ack> {
        self.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        self.acks.lock().expect("acks").clone()
    }
}

async fn connect(cfg: &tokio_postgres::Config) -> Option<tokio_postgres::Client> {
    let (client, conn) =
        tokio::time::timeout(Duration::from_secs(2), cfg.connect(tokio_postgres::NoTls)).await.ok()?.ok()?;
    tokio::spawn(conn);
    Some(client)
}
