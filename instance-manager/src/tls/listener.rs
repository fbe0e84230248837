//! [`TlsListener`]: an [`axum::serve::Listener`] handing out connections whose TLS handshake
//! is done. Handshakes run as their own tasks, so a slow or silent client never holds up the
//! accept loop; at most [`MAX_HANDSHAKES`] run at once, each within [`HANDSHAKE_TIMEOUT`].
//! A client that does not speak TLS (plain `http://` to this port) fails its handshake and is
//! disconnected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::ServerTls;

/// Handshakes in flight at most; further connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 64;
/// Time a client has to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type Handshake = Option<(TlsStream<TcpStream>, SocketAddr)>;

/// A TCP listener that completes TLS handshakes with the current [`ServerTls`] configuration.
pub struct TlsListener {
    tcp: TcpListener,
    tls: Arc<ServerTls>,
    handshakes: JoinSet<Handshake>,
}

impl TlsListener {
    /// Serves TLS on `tcp`.
    pub fn new(tcp: TcpListener, tls: Arc<ServerTls>) -> Self {
        Self { tcp, tls, handshakes: JoinSet::new() }
    }

    fn start_handshake(&mut self, stream: TcpStream, peer: SocketAddr) {
        let acceptor = TlsAcceptor::from(self.tls.config());
        self.handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Some((tls, peer)),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    None
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let room = self.handshakes.len() < MAX_HANDSHAKES;
            tokio::select! {
                accepted = self.tcp.accept(), if room => match accepted {
                    Ok((stream, peer)) => self.start_handshake(stream, peer),
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "HTTPS API: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(done) = self.handshakes.join_next() => {
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
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

impl Connected<IncomingStream<'_, TlsListener>> for TlsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let (_, conn) = stream.io().get_ref();
        let client_cert_serial = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| super::CertInfo::from_der(c).map(|i| i.serial).unwrap_or_else(|| "unknown".into()));
        Self { addr: *stream.remote_addr(), client_cert_serial }
    }
}
