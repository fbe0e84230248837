//! [`TlsListener`]: the API's TCP listener speaking TLS (served by `http::server::serve`).
//! The handshake runs in the connection's own task (the accept loop never waits for a client),
//! holding the connection's slot, at most [`MAX_HANDSHAKES`] at once, each within
//! [`HANDSHAKE_TIMEOUT`]. A client that does not speak TLS (plain `http://` to this port), or
//! whose certificate rustls refuses, fails its handshake and is disconnected; the failure is
//! logged at debug level with rustls' reason (an unknown CA, an expired certificate).
//!
//! The verified peer is a request extension, `ConnectInfo<TlsPeer>`, on every request of the
//! connection (the auth middleware reads it).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::ServerTls;

/// Handshakes in flight at most; further connections wait for one to finish.
pub const MAX_HANDSHAKES: usize = 64;
/// Time a client has to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP listener that completes TLS handshakes with the current [`ServerTls`] configuration.
pub struct TlsListener {
    tcp: TcpListener,
    tls: Arc<ServerTls>,
    handshakes: Arc<Semaphore>,
}

impl TlsListener {
    /// Serves TLS on `tcp`.
    pub fn new(tcp: TcpListener, tls: Arc<ServerTls>) -> Self {
        Self { tcp, tls, handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)) }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

impl TlsListener {
    /// The next TCP connection (its handshake has not started).
    pub async fn accept_tcp(&mut self) -> std::io::Result<(TcpStream, SocketAddr)> {
        self.tcp.accept().await
    }

    /// The TLS handshake of an accepted connection, in the caller's task: at most
    /// [`MAX_HANDSHAKES`] at once, each within [`HANDSHAKE_TIMEOUT`]; `None` when it fails.
    pub fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = Option<(TlsStream<TcpStream>, TlsPeer)>> + Send + 'static {
        let acceptor = TlsAcceptor::from(self.tls.config());
        let handshakes = Arc::clone(&self.handshakes);
        async move {
            let _turn = handshakes.acquire_owned().await.ok()?;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake refused");
                    return None;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return None;
                }
            };
            let verified = TlsPeer::of(&tls, peer);
            Some((tls, verified))
        }
    }
}

/// Who is at the other end of an HTTPS connection (axum `ConnectInfo`).
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The serial number (hex) of the client certificate, when the client presented one.
    /// rustls verified it against `api.tls.caFile` during the handshake: a connection with
    /// an unverified certificate never gets this far.
    pub client_cert_serial: Option<String>,
}

impl TlsPeer {
    /// The peer of an established connection.
    fn of(tls: &TlsStream<TcpStream>, addr: SocketAddr) -> Self {
        let (_, conn) = tls.get_ref();
        let client_cert_serial = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| super::CertInfo::from_der(c).map(|i| i.serial).unwrap_or_else(|| "unknown".into()));
        Self { addr, client_cert_serial }
    }
}
