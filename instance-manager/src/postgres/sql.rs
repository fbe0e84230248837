//! SQL over Postgres' Unix socket, as the superuser (peer authentication through the
//! `pgwarden` ident map). One connection is kept and re-opened when it breaks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

/// Errors talking to Postgres.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting or querying failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// It took too long.
    #[error("postgres did not answer within {0:?}")]
    Timeout(Duration),
}

/// A cached superuser connection to the local Postgres.
pub struct Db {
    socket_dir: PathBuf,
    port: std::sync::atomic::AtomicU16,
    client: Mutex<Option<Arc<Client>>>,
}

impl Db {
    /// A connection to the Postgres whose socket is in `socket_dir` on `port`.
    pub fn new(socket_dir: PathBuf, port: u16) -> Self {
        Self { socket_dir, port: port.into(), client: Mutex::new(None) }
    }

    /// Points at a postmaster started on another port; drops the cached connection.
    pub async fn set_port(&self, port: u16) {
        self.port.store(port, std::sync::atomic::Ordering::Relaxed);
        *self.client.lock().await = None;
    }

    /// The port of the running postmaster (the metrics open connections of their own to it).
    pub fn port(&self) -> u16 {
        self.port.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The directory holding Postgres' Unix socket.
    pub fn socket_dir(&self) -> &std::path::Path {
        &self.socket_dir
    }

    /// The cached connection, or a new one (within `timeout`).
    pub async fn client(&self, timeout: Duration) -> Result<Arc<Client>, Error> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(c));
        }
        *slot = None;
        let client =
            tokio::time::timeout(timeout, self.connect(timeout)).await.map_err(|_| Error::Timeout(timeout))??;
        let client = Arc::new(client);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    async fn connect(&self, timeout: Duration) -> Result<Client, Error> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(&self.socket_dir)
            .port(self.port.load(std::sync::atomic::Ordering::Relaxed))
            .user(crate::pgconf::SUPERUSER)
            .dbname("postgres")
            .application_name("pgwarden")
            .connect_timeout(timeout);
        let (client, conn) = cfg.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "local postgres connection closed");
            }
        });
        Ok(client)
    }

    /// A connection of its own, for statements that may wait (promotion, DDL under synchronous
    /// replication): the cached one serves the HA loop's observations, which must never queue
    /// behind them.
    pub async fn dedicated(&self, timeout: Duration) -> Result<Client, Error> {
        tokio::time::timeout(timeout, self.connect(timeout)).await.map_err(|_| Error::Timeout(timeout))?
    }

    /// Whether Postgres accepts a connection and answers `SELECT 1` within `timeout`.
    pub async fn accepting(&self, timeout: Duration) -> bool {
        let probe = async {
            let c = self.client(timeout).await?;
            c.simple_query("SELECT 1").await?;
            Ok::<_, Error>(())
        };
        matches!(tokio::time::timeout(timeout, probe).await, Ok(Ok(())))
    }

    /// Drops the cached connection (after Postgres stopped).
    pub async fn reset(&self) {
        *self.client.lock().await = None;
    }
}
