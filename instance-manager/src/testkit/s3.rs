//! An S3-compatible server on loopback for the archive and backup tests (issue 4): the `s3s`
//! protocol layer over `s3s-fs` (each object is a file under `<root>/<bucket>/`), with SigV4
//! authentication on — a request signed with the wrong secret is refused, so the client's
//! signing is exercised for real. Plain HTTP by default; TLS with a generated CA on request
//! (the benchmark's reference numbers were measured through TLS).
//!
//! # Why a thread with its own runtime
//!
//! [`TestS3`] binds its listener in the caller (so the port is known and accepting before
//! `start` returns) and serves from a dedicated OS thread running its own multi-threaded
//! tokio runtime. It therefore works the same from `#[tokio::test]` (any flavour) and from
//! plain `#[test]`, it cannot be starved by a test that blocks its own runtime, and it does
//! not depend on the order in which a test runtime drops its tasks: the test's runtime may
//! already be gone while the store still answers. Dropping the `TestS3` stops the accept
//! loop and drops the server runtime (which closes every connection), then joins the thread.
//! An in-process server is preferred to a child process (the `pgwarden-test-s3` binary) for
//! tests: nothing to locate on disk, no orphan if the test is killed, and errors surface as
//! values. The binary exists for benchmarks and manual runs and shares [`S3Server`].
//!
//! # Conditional writes
//!
//! `s3s-fs` honours `If-None-Match: *` and `If-Match` on `PutObject` and
//! `CompleteMultipartUpload`, but checks the condition and then writes without a lock, so two
//! concurrent creates of one key could both pass the check and the later one would silently
//! replace the first. [`S3Server`] serialises every conditional write per request path, so the
//! check and the write of one are never interleaved with another conditional write of the same
//! key. (Unconditional writes are not serialised: like S3, the last one wins.)
//!
//! Like S3, the server reads a request's whole body before answering, even when it refuses
//! the request up front (see `SharedBody`): otherwise a refused 16 MiB create reaches the
//! client as a broken pipe rather than as `412 Precondition Failed`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use http::{Method, Request, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use object_store::ClientOptions;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{HttpError, HttpResponse};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::TestDir;

/// The access key id [`TestS3`] and `pgwarden-test-s3` accept unless told otherwise.
pub const TEST_ACCESS_KEY: &str = "pgwarden-test-access-key";
/// The secret key paired with [`TEST_ACCESS_KEY`].
pub const TEST_SECRET_KEY: &str = "pgwarden-test-secret-key";
/// The bucket created at start unless told otherwise.
pub const TEST_BUCKET: &str = "pgwarden-test";
/// The region clients sign for. `s3s` accepts any region in the signature; this is the one
/// pgwarden's configuration uses for S3-compatible stores.
pub const TEST_REGION: &str = "us-east-1";

/// A failure to set up or run the S3 server.
#[derive(Debug, thiserror::Error)]
pub enum S3ServerError {
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, on what.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The `s3s-fs` store could not open its root directory.
    #[error("open the s3s-fs store at {root}: {message}")]
    Store {
        /// The root directory.
        root: PathBuf,
        /// What `s3s-fs` said.
        message: String,
    },
    /// The TLS certificate or key could not be generated, read or used.
    #[error("tls: {0}")]
    Tls(String),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> S3ServerError {
    let what = what.into();
    move |source| S3ServerError::Io { what, source }
}

/// The certificate the server presents, and the CA a client must trust to accept it.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The server certificate chain (PEM).
    pub cert_pem: String,
    /// The server's private key (PEM).
    pub key_pem: String,
    /// The trust anchor for clients (PEM): the generated CA, or the given chain.
    pub ca_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// A new CA, and a server certificate it signs for `127.0.0.1`, `::1` and `localhost`.
    /// The CA is a separate certificate because webpki refuses a CA certificate presented as
    /// the server's own.
    pub fn generate() -> Result<Self, S3ServerError> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let tls = |e: rcgen::Error| S3ServerError::Tls(format!("generate a test certificate: {e}"));

        let ca_key = KeyPair::generate().map_err(tls)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "pgwarden test S3 CA");
        let ca_cert = ca_params.self_signed(&ca_key).map_err(tls)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let names = vec!["127.0.0.1".to_owned(), "::1".to_owned(), "localhost".to_owned()];
        let key = KeyPair::generate().map_err(tls)?;
        let mut params = CertificateParams::new(names).map_err(tls)?;
        params.distinguished_name.push(DnType::CommonName, "pgwarden test S3");
        let cert = params.signed_by(&key, &issuer).map_err(tls)?;

        Ok(Self { cert_pem: cert.pem(), key_pem: key.serialize_pem(), ca_pem: ca_cert.pem() })
    }

    /// A certificate chain and key read from PEM files; clients are told to trust the chain.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, S3ServerError> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(io_error(format!("read {}", p.display())));
        let cert_pem = read(cert)?;
        Ok(Self { ca_pem: cert_pem.clone(), cert_pem, key_pem: read(key)? })
    }

    fn acceptor(&self) -> Result<TlsAcceptor, S3ServerError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let tls = |what: &str, e: &dyn std::fmt::Display| S3ServerError::Tls(format!("{what}: {e}"));

        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls("parse the certificate chain", &e))?;
        let key =
            PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| tls("parse the private key", &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls("choose protocol versions", &e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| tls("use the certificate and key", &e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// What an [`S3Server`] serves.
#[derive(Debug, Clone)]
pub struct S3ServerConfig {
    /// The directory holding the buckets (one subdirectory each); created if missing.
    pub root: PathBuf,
    /// The bucket created at start.
    pub bucket: String,
    /// The only access key accepted.
    pub access_key: String,
    /// Its secret.
    pub secret_key: String,
    /// Serve HTTPS with this identity instead of HTTP.
    pub tls: Option<TlsIdentity>,
}

impl S3ServerConfig {
    /// The test bucket and credentials over plain HTTP, objects under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            bucket: TEST_BUCKET.into(),
            access_key: TEST_ACCESS_KEY.into(),
            secret_key: TEST_SECRET_KEY.into(),
            tls: None,
        }
    }
}

/// An S3-compatible server over a directory, ready to serve on a bound listener.
pub struct S3Server {
    service: S3Service,
    conditional_writes: KeyLocks,
    tls: Option<TlsAcceptor>,
}

impl S3Server {
    /// Opens the store under `config.root` and creates the bucket directory.
    pub fn new(config: &S3ServerConfig) -> Result<Self, S3ServerError> {
        let bucket_dir = config.root.join(&config.bucket);
        std::fs::create_dir_all(&bucket_dir)
            .map_err(io_error(format!("create the bucket directory {}", bucket_dir.display())))?;
        let store = s3s_fs::FileSystem::new(&config.root)
            .map_err(|e| S3ServerError::Store { root: config.root.clone(), message: format!("{e:?}") })?;
        let mut builder = S3ServiceBuilder::new(store);
        builder.set_auth(SimpleAuth::from_single(config.access_key.clone(), config.secret_key.clone()));
        let tls = config.tls.as_ref().map(TlsIdentity::acceptor).transpose()?;
        Ok(Self { service: builder.build(), conditional_writes: KeyLocks::default(), tls })
    }

    /// Accepts connections on `listener` until `shutdown` is cancelled. Connections still
    /// open then are closed when the caller drops the runtime.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let this = Arc::new(self);
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "test S3 server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(Arc::clone(&this).connection(stream, peer));
        }
    }

    async fn connection(self: Arc<Self>, stream: tokio::net::TcpStream, peer: SocketAddr) {
        match self.tls.clone() {
            None => self.http(stream, peer).await,
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(tls) => self.http(tls, peer).await,
                Err(e) => tracing::debug!(%peer, error = %e, "test S3 server: TLS handshake failed"),
            },
        }
    }

    async fn http<S>(self: Arc<Self>, stream: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = hyper::service::service_fn(move |req| Arc::clone(&self).handle(req));
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        if let Err(e) = conn.await {
            tracing::debug!(%peer, error = %e, "test S3 server: connection ended with an error");
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<HttpResponse, HttpError> {
        let serialised =
            if is_conditional_write(&req) { Some(self.conditional_writes.lock(req.uri().path()).await) } else { None };
        let (parts, body) = req.into_parts();
        let body = SharedBody(Arc::new(Mutex::new(Some(body))));
        let response = self.service.call(Request::from_parts(parts, s3s::Body::http_body(body.clone()))).await;
        // The outcome is decided: let the next conditional write of this key go ahead.
        drop(serialised);
        body.drain().await;
        response
    }
}

/// How long a refused upload may take to arrive in full before its connection is dropped.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

/// The request body, shared between `s3s` and the handler so that whatever `s3s` leaves
/// unread can be read before answering.
///
/// `s3s` answers some requests without reading their body (a failed precondition, a bad
/// signature). hyper would then send the answer and close the connection while the client is
/// still sending: the client sees a broken pipe instead of the status, and `object_store`
/// does not retry a non-idempotent create, so a refused create of an existing WAL segment
/// would surface as a network error rather than `AlreadyExists`. S3 reads the whole request
/// before answering; so does this server.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<Option<Incoming>>>);

impl SharedBody {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Incoming>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads and discards the rest of the body (nothing, if `s3s` read it all).
    async fn drain(self) {
        use http_body_util::BodyExt as _;
        let Some(mut rest) = self.slot().take() else { return };
        let _ = tokio::time::timeout(DRAIN_DEADLINE, async { while let Some(Ok(_)) = rest.frame().await {} }).await;
    }
}

impl hyper::body::Body for SharedBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.slot().as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.slot().as_ref().is_none_or(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.slot().as_ref().map_or_else(|| hyper::body::SizeHint::with_exact(0), hyper::body::Body::size_hint)
    }
}

/// A write whose outcome depends on the current object: `If-None-Match` (create only) or
/// `If-Match` (replace only that version) on a put, a multipart completion or a delete.
fn is_conditional_write<B>(req: &Request<B>) -> bool {
    let write = matches!(*req.method(), Method::PUT | Method::POST | Method::DELETE);
    let headers = req.headers();
    write && (headers.contains_key(header::IF_NONE_MATCH) || headers.contains_key(header::IF_MATCH))
}

/// One async mutex per request path, present only while some request holds or awaits it.
#[derive(Default, Clone)]
struct KeyLocks(Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>);

impl KeyLocks {
    async fn lock(&self, key: &str) -> KeyGuard {
        let mutex = {
            let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(map.entry(key.to_owned()).or_default())
        };
        let guard = mutex.lock_owned().await;
        KeyGuard { locks: self.clone(), key: key.to_owned(), guard: Some(guard) }
    }
}

/// Holds a key's lock; on drop releases it and forgets the key if nobody else wants it.
struct KeyGuard {
    locks: KeyLocks,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the map's own reference left: no holder, no waiter.
        if map.get(&self.key).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.key);
        }
    }
}

/// How to start a [`TestS3`].
#[derive(Debug, Clone, Default)]
pub struct TestS3Options {
    /// Keep the objects in this directory instead of a new [`TestDir`].
    pub root: Option<PathBuf>,
    /// The bucket (default [`TEST_BUCKET`]).
    pub bucket: Option<String>,
    /// Serve HTTPS with a freshly generated CA ([`TestS3::ca_pem`]).
    pub tls: bool,
}

/// An S3-compatible server on `127.0.0.1:<free port>`, stopped when dropped. See the module
/// documentation for how it runs.
pub struct TestS3 {
    endpoint: String,
    config: S3ServerConfig,
    shutdown: CancellationToken,
    thread: Option<JoinHandle<()>>,
    /// Declared last: removed after the server thread has stopped.
    _dir: Option<TestDir>,
}

impl TestS3 {
    /// The test bucket and credentials over plain HTTP, objects in a new temporary directory.
    pub fn start() -> Self {
        Self::start_with(TestS3Options::default())
    }

    /// As [`start`](Self::start), over HTTPS with a generated CA.
    pub fn start_tls() -> Self {
        Self::start_with(TestS3Options { tls: true, ..TestS3Options::default() })
    }

    /// Starts a server as `options` say. Panics if it cannot (a test harness).
    pub fn start_with(options: TestS3Options) -> Self {
        let (dir, root) = match options.root {
            Some(root) => (None, root),
            None => {
                let dir = TestDir::new();
                let root = dir.path().join("s3");
                (Some(dir), root)
            }
        };
        let mut config = S3ServerConfig::new(root);
        if let Some(bucket) = options.bucket {
            config.bucket = bucket;
        }
        if options.tls {
            config.tls = Some(TlsIdentity::generate().expect("generate the test S3 certificate"));
        }
        let server = S3Server::new(&config).expect("set up the test S3 server");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the test S3 listener");
        listener.set_nonblocking(true).expect("make the test S3 listener non-blocking");
        let addr = listener.local_addr().expect("test S3 listener address");
        let scheme = if options.tls { "https" } else { "http" };
        let endpoint = format!("{scheme}://{addr}");

        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("test-s3-{}", addr.port()))
            .enable_all()
            .build()
            .expect("build the test S3 runtime");
        let thread = std::thread::Builder::new()
            .name(format!("test-s3-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("register the test S3 listener");
                    server.serve(listener, token).await;
                });
                // Drops the open connections; a request still being served is abandoned.
                runtime.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("spawn the test S3 thread");

        Self { endpoint, config, shutdown, thread: Some(thread), _dir: dir }
    }

    /// `http://127.0.0.1:<port>` (or `https://`): the endpoint for path-style requests.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &str {
        &self.config.bucket
    }

    /// `s3://<bucket>`.
    pub fn url(&self) -> String {
        format!("s3://{}", self.config.bucket)
    }

    /// The access key id the server accepts.
    pub fn access_key(&self) -> &str {
        &self.config.access_key
    }

    /// Its secret.
    pub fn secret_key(&self) -> &str {
        &self.config.secret_key
    }

    /// The region to sign for ([`TEST_REGION`]).
    pub fn region(&self) -> &str {
        TEST_REGION
    }

    /// The directory holding the buckets.
    pub fn root(&self) -> &Path {
        &self.config.root
    }

    /// The file an object of the bucket is stored in (to inspect or damage it behind the
    /// server's back).
    pub fn object_file(&self, key: &str) -> PathBuf {
        self.config.root.join(&self.config.bucket).join(key)
    }

    /// With TLS, the CA certificate (PEM) a client must trust.
    pub fn ca_pem(&self) -> Option<&str> {
        self.config.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// An `object_store` builder for the bucket, configured as pgwarden configures an
    /// S3-compatible store: the endpoint, path-style requests, HTTP allowed, the region and
    /// the credentials (and the CA with TLS).
    pub fn store_builder(&self) -> AmazonS3Builder {
        let mut client = ClientOptions::new().with_allow_http(true);
        if let Some(ca) = self.ca_pem() {
            let ca = object_store::Certificate::from_pem(ca.as_bytes()).expect("parse the test CA");
            client = client.with_root_certificate(ca);
        }
        AmazonS3Builder::new()
            // First: it replaces the client options the later calls would edit.
            .with_client_options(client)
            .with_endpoint(&self.endpoint)
            .with_bucket_name(&self.config.bucket)
            .with_region(TEST_REGION)
            .with_access_key_id(&self.config.access_key)
            .with_secret_access_key(&self.config.secret_key)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(true)
    }

    /// [`store_builder`](Self::store_builder), built.
    pub fn store(&self) -> AmazonS3 {
        self.store_builder().build().expect("build the object_store client for the test S3")
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
            && !std::thread::panicking()
        {
            panic!("the test S3 server thread panicked");
        }
    }
}
