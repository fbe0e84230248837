//! A small HTTP/1 client for the instance manager's API, used by the CLI inside the pod.
//!
//! One connection per request, over TCP (`http://host:port`), TLS (`https://host:port`, the
//! server verified against a CA given with [`ApiClient::with_tls`]) or the manager's Unix
//! socket (`unix:///run/pgwarden/manager.sock`), every request bounded by a deadline. Non-2xx
//! answers carry an [`ErrorBody`] and become [`ClientError::Api`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{ACCEPT, AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_util::task::AbortOnDropHandle;

use crate::api::{DEFAULT_RUN_DIR, ErrorBody};

/// Deadline of one request (connect, send, read the whole answer) unless `with_timeout` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const ACCEPTED_FORMS: &str = "http://HOST:PORT, https://HOST:PORT or unix:///ABSOLUTE/PATH.sock";

/// Where the instance manager's API listens, as given to `--api`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTarget {
    /// Plain HTTP over TCP.
    Tcp {
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// TCP port.
        port: u16,
    },
    /// HTTPS over TCP (`api.tls`).
    Https {
        /// Host name or address (IPv6 without brackets); the certificate must name it.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// HTTP over the manager's Unix socket: the CLI's default inside the pod.
    Unix {
        /// Absolute path of the socket.
        path: PathBuf,
    },
}

impl ApiTarget {
    /// Parses `http://host:port`, `https://host:port` (a path after either is ignored) or
    /// `unix:///abs/path.sock`.
    pub fn parse(value: &str) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidTarget { value: value.to_owned(), reason: reason.to_owned() };
        if let Some(path) = value.strip_prefix("unix://") {
            if !path.starts_with('/') || path.len() == 1 {
                return Err(invalid("the socket path must be absolute (unix:///run/x.sock)"));
            }
            return Ok(Self::Unix { path: PathBuf::from(path) });
        }
        if let Some(rest) = value.strip_prefix("http://") {
            let (host, port) = parse_authority(rest).map_err(invalid)?;
            return Ok(Self::Tcp { host, port });
        }
        if let Some(rest) = value.strip_prefix("https://") {
            let (host, port) = parse_authority(rest).map_err(invalid)?;
            return Ok(Self::Https { host, port });
        }
        Err(invalid("it starts with none of http://, https:// and unix://"))
    }

    /// The manager's socket in this pod: `unix://$PGWARDEN_RUN_DIR/manager.sock`, the run
    /// directory defaulting to `/run/pgwarden`.
    pub fn default_local() -> Self {
        let run_dir = std::env::var_os("PGWARDEN_RUN_DIR")
            .filter(|dir| !dir.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_RUN_DIR), PathBuf::from);
        Self::Unix { path: run_dir.join("manager.sock") }
    }

    /// The `Host` header: HTTP/1.1 requires one even over a Unix socket.
    fn host_header(&self) -> String {
        match self {
            Self::Tcp { host, port } | Self::Https { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            Self::Tcp { host, port } | Self::Https { host, port } => format!("{host}:{port}"),
            Self::Unix { .. } => "localhost".to_owned(),
        }
    }
}

/// Splits `host:port[/path]`, accepting `[v6]:port`.
fn parse_authority(rest: &str) -> Result<(String, u16), &'static str> {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("user information is not supported");
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port),
        _ => return Err("the port is missing"),
    };
    let port = match port.parse::<u16>() {
        Ok(port) if port > 0 => port,
        _ => return Err("the port must be a number from 1 to 65535"),
    };
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() {
        return Err("the host is missing");
    }
    Ok((host.to_owned(), port))
}

impl FromStr for ApiTarget {
    type Err = ClientError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse(value)
    }
}

impl fmt::Display for ApiTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { .. } => write!(f, "http://{}", self.host_header()),
            Self::Https { .. } => write!(f, "https://{}", self.host_header()),
            Self::Unix { path } => write!(f, "unix://{}", path.display()),
        }
    }
}

/// Why a request to the instance manager failed.
///
/// `Display` is the message followed by `\nhint: …`. Underlying errors are part of the
/// message, so `source()` is `None` and printing the chain does not repeat them.
#[derive(Debug)]
pub enum ClientError {
    /// `--api` is not a URL the CLI understands.
    InvalidTarget {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The connection to the manager could not be opened.
    Unreachable {
        /// The target, as `http://…` or `unix://…`.
        target: String,
        /// The connect error.
        source: std::io::Error,
    },
    /// The TLS settings of the client cannot be used (a CA or client certificate file).
    TlsSetup {
        /// What is wrong, naming the file.
        detail: String,
    },
    /// The TLS handshake failed: typically the server's certificate is not signed by the CA
    /// given, or does not name the host.
    Tls {
        /// The target.
        target: String,
        /// What rustls said.
        source: std::io::Error,
    },
    /// The manager refused the TLS handshake after the client's part of it: in TLS 1.3 a
    /// client certificate is verified last, so its refusal arrives as an alert on the first read.
    TlsRefused {
        /// The target.
        target: String,
        /// The alert rustls received (`UnknownCA`, `BadCertificate`, `CertificateExpired`, ...).
        alert: String,
    },
    /// No complete answer within the deadline.
    Timeout {
        /// The target.
        target: String,
        /// The request path.
        path: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The HTTP exchange broke after the connection was opened.
    Http {
        /// The target.
        target: String,
        /// The request path.
        path: String,
        /// The protocol error.
        source: hyper::Error,
    },
    /// The request could not be built (a bad path, a body that does not serialise).
    Request {
        /// The request path.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// The manager answered with a non-2xx status and its [`ErrorBody`].
    Api {
        /// HTTP status code.
        status: u16,
        /// `ErrorBody::error`, or a description of a body that was not one.
        error: String,
        /// `ErrorBody::hint`.
        hint: Option<String>,
    },
    /// A 2xx answer that is not the JSON document expected.
    InvalidResponse {
        /// The target.
        target: String,
        /// The request path.
        path: String,
        /// The decoding error.
        detail: String,
    },
}

impl ClientError {
    /// What failed, on what; without the hint.
    pub fn message(&self) -> String {
        match self {
            Self::InvalidTarget { value, reason } => format!("invalid --api value {value:?}: {reason}"),
            Self::Unreachable { target, source } => {
                format!("the instance manager at {target} is not reachable: {source}")
            }
            Self::TlsSetup { detail } => format!("cannot set up TLS: {detail}"),
            Self::Tls { target, source } => {
                format!("TLS handshake with the instance manager at {target} failed: {source}")
            }
            Self::TlsRefused { target, alert } => format!(
                "the instance manager at {target} refused the TLS handshake ({alert}): it did not accept the \
                 client certificate"
            ),
            Self::Timeout { target, path, timeout } => {
                format!("the instance manager at {target} did not answer {path} within {}s", timeout.as_secs_f64())
            }
            Self::Http { target, path, source } => {
                format!("request {path} to the instance manager at {target} failed: {source}")
            }
            Self::Request { path, detail } => format!("cannot build the request {path}: {detail}"),
            Self::Api { status, error, .. } => format!("{error} (HTTP {status})"),
            Self::InvalidResponse { target, path, detail } => {
                format!("unexpected answer to {path} from the instance manager at {target}: {detail}")
            }
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            Self::InvalidTarget { .. } => format!("--api accepts {ACCEPTED_FORMS}"),
            Self::Unreachable { .. } => format!(
                "is the instance manager running in this pod? if it listens elsewhere, \
                 pass --api URL ({ACCEPTED_FORMS})"
            ),
            Self::TlsSetup { .. } => "--ca-file (PGWARDEN_CA_FILE) must hold the PEM certificate of the CA that \
                 signed the manager's api.tls.certFile; --cert and --key a client certificate and its key"
                .to_owned(),
            Self::Tls { .. } => "check that --ca-file (PGWARDEN_CA_FILE) is the CA that signed the manager's \
                 api.tls.certFile, and that the certificate names the host in --api"
                .to_owned(),
            Self::TlsRefused { .. } => "the manager verifies client certificates against its api.tls.caFile: pass \
                 --cert and --key of a certificate that CA signed (and not expired), or leave them out and use \
                 --token-file"
                .to_owned(),
            Self::Timeout { .. } => {
                format!("the manager may be stuck or restarting; check its log ({})", super::logs_hint::manager_log())
            }
            Self::Http { target, .. } if target.starts_with("http://") => {
                format!(
                    "the manager may be stuck or restarting (check its log: {}); \
                     if it serves HTTPS (api.tls), use an https:// address with --ca-file",
                    super::logs_hint::manager_log()
                )
            }
            Self::Http { .. } => {
                format!("the manager may be stuck or restarting; check its log ({})", super::logs_hint::manager_log())
            }
            Self::Request { .. } => return None,
            Self::Api { hint, .. } => return hint.clone(),
            Self::InvalidResponse { .. } => {
                "the CLI and the manager may be different versions; compare `instance-manager version`".to_owned()
            }
        };
        Some(hint)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())?;
        match self.hint() {
            Some(hint) => write!(f, "\nhint: {hint}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ClientError {}

/// A client of one instance manager's API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    target: ApiTarget,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl ApiClient {
    /// A client of `target` with the default 5 s deadline per request.
    pub fn new(target: ApiTarget) -> Self {
        Self { target, timeout: DEFAULT_TIMEOUT, tls: None }
    }

    /// Uses `config` for `https://` targets (trusted CA, client certificate).
    #[must_use]
    pub fn with_tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Verifies `https://` targets against the CA in `ca`, presenting the client certificate
    /// `identity` (certificate and key files) when the server asks for one.
    pub fn with_tls_files(self, ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, ClientError> {
        let config =
            crate::tls::client_config(ca, identity).map_err(|e| ClientError::TlsSetup { detail: e.to_string() })?;
        Ok(self.with_tls(Arc::new(config)))
    }

    /// Replaces the deadline of each request (connect, send, read the whole answer).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The manager this client talks to.
    pub fn target(&self) -> &ApiTarget {
        &self.target
    }

    /// `GET path`, decoding a 2xx JSON answer.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let answer = self.send(Method::GET, path, None, None).await?;
        self.decode(path, answer)
    }

    /// `GET path`, returning the status and body whatever the status (for `/readyz`).
    pub async fn get_raw(&self, path: &str) -> Result<(u16, Bytes), ClientError> {
        self.send(Method::GET, path, None, None).await
    }

    /// `POST path` with a JSON body and an optional bearer token, decoding a 2xx JSON answer.
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        bearer: Option<&str>,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| ClientError::Request { path: path.to_owned(), detail: e.to_string() })?;
        let answer = self.send(Method::POST, path, Some(Bytes::from(body)), bearer).await?;
        self.decode(path, answer)
    }

    /// `DELETE path` with an optional bearer token, decoding a 2xx JSON answer.
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str, bearer: Option<&str>) -> Result<T, ClientError> {
        let answer = self.send(Method::DELETE, path, None, bearer).await?;
        self.decode(path, answer)
    }

    /// `POST path` with a JSON body, returning the status and body whatever the status.
    pub async fn post_raw<B: Serialize>(&self, path: &str, body: &B) -> Result<(u16, Bytes), ClientError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| ClientError::Request { path: path.to_owned(), detail: e.to_string() })?;
        self.send(Method::POST, path, Some(Bytes::from(body)), None).await
    }

    fn decode<T: DeserializeOwned>(&self, path: &str, answer: (u16, Bytes)) -> Result<T, ClientError> {
        let (status, body) = answer;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::InvalidResponse {
            target: self.target.to_string(),
            path: path.to_owned(),
            detail: e.to_string(),
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        bearer: Option<&str>,
    ) -> Result<(u16, Bytes), ClientError> {
        let request = self.build_request(method, path, body, bearer)?;
        tokio::time::timeout(self.timeout, self.connect_and_exchange(path, request)).await.map_err(|_| {
            ClientError::Timeout { target: self.target.to_string(), path: path.to_owned(), timeout: self.timeout }
        })?
    }

    fn build_request(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        bearer: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.target.host_header())
            .header(ACCEPT, "application/json")
            .header(CONNECTION, "close");
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        if let Some(token) = bearer {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| ClientError::Request { path: path.to_owned(), detail: e.to_string() })
    }

    async fn connect_and_exchange(
        &self,
        path: &str,
        request: Request<Full<Bytes>>,
    ) -> Result<(u16, Bytes), ClientError> {
        let unreachable = |source| ClientError::Unreachable { target: self.target.to_string(), source };
        let answer = match &self.target {
            ApiTarget::Tcp { host, port } => {
                let stream = TcpStream::connect((host.as_str(), *port)).await.map_err(unreachable)?;
                exchange(stream, request).await
            }
            ApiTarget::Https { host, port } => {
                let Some(config) = &self.tls else {
                    return Err(ClientError::TlsSetup {
                        detail: format!("{} is an https:// address and no CA was given to verify it", self.target),
                    });
                };
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| ClientError::TlsSetup { detail: format!("{host:?} is not a TLS server name: {e}") })?;
                let stream = TcpStream::connect((host.as_str(), *port)).await.map_err(unreachable)?;
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
                let stream = connector
                    .connect(name, stream)
                    .await
                    .map_err(|source| ClientError::Tls { target: self.target.to_string(), source })?;
                let target = self.target.to_string();
                return exchange(stream, request).await.map_err(|source| match tls_alert(&source) {
                    Some(alert) => ClientError::TlsRefused { target, alert },
                    None => ClientError::Http { target, path: path.to_owned(), source },
                });
            }
            ApiTarget::Unix { path } => {
                let stream = UnixStream::connect(path).await.map_err(unreachable)?;
                exchange(stream, request).await
            }
        };
        answer.map_err(|source| ClientError::Http { target: self.target.to_string(), path: path.to_owned(), source })
    }
}

/// The TLS alert a failed exchange ended with, when the server sent one (a refused client
/// certificate), named as rustls names it.
fn tls_alert(e: &hyper::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        // `io::Error::source` skips the error it wraps: look inside it explicitly.
        let inner = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        for candidate in [Some(s), inner].into_iter().flatten() {
            if let Some(rustls::Error::AlertReceived(alert)) = candidate.downcast_ref::<rustls::Error>() {
                return Some(format!("{alert:?}"));
            }
        }
        source = s.source();
    }
    None
}

/// One HTTP/1 request on a fresh connection; the connection task ends when this returns.
async fn exchange<S>(stream: S, request: Request<Full<Bytes>>) -> Result<(u16, Bytes), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let _connection = AbortOnDropHandle::new(tokio::spawn(connection));
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// A non-2xx answer: its `ErrorBody`, or what the body says when it is not one.
fn api_error(status: u16, body: &[u8]) -> ClientError {
    if let Ok(ErrorBody { error, hint }) = serde_json::from_slice(body) {
        return ClientError::Api { status, error, hint };
    }
    let text = String::from_utf8_lossy(body);
    let text: String = text.trim().chars().take(200).collect();
    let error = if text.is_empty() {
        "the instance manager answered without an error body".to_owned()
    } else {
        format!("the instance manager answered: {text}")
    };
    ClientError::Api { status, error, hint: None }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use axum::Json;
    use axum::http::StatusCode;
    use axum::routing::get;
    use serde_json::{Value, json};

    #[test]
    fn parses_accepted_forms() {
        let tcp = |host: &str, port| ApiTarget::Tcp { host: host.into(), port };
        assert_eq!(ApiTarget::parse("http://pg-0.pg:8000").unwrap(), tcp("pg-0.pg", 8000));
        assert_eq!(ApiTarget::parse("http://10.0.0.1:8000/api/v1").unwrap(), tcp("10.0.0.1", 8000));
        assert_eq!(ApiTarget::parse("http://[::1]:8000/").unwrap(), tcp("::1", 8000));
        let unix = ApiTarget::parse("unix:///run/pgwarden/manager.sock").unwrap();
        assert_eq!(unix, ApiTarget::Unix { path: "/run/pgwarden/manager.sock".into() });
        assert_eq!(unix.to_string(), "unix:///run/pgwarden/manager.sock");
        assert_eq!(tcp("::1", 80).to_string(), "http://[::1]:80");
        let https = ApiTarget::parse("https://pg-0.pg:8000/").unwrap();
        assert_eq!(https, ApiTarget::Https { host: "pg-0.pg".into(), port: 8000 });
        assert_eq!(https.to_string(), "https://pg-0.pg:8000");
    }

    #[test]
    fn refuses_other_forms_naming_the_flag() {
        for bad in [
            "localhost:8000",
            "http://localhost",
            "http://:8000",
            "http://h:0",
            "http://h:port",
            "http://[::1]",
            "https://h",
            "ftp://h:8000",
            "unix://relative.sock",
            "unix:///",
            "",
        ] {
            let err = ApiTarget::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid --api value"), "{bad}: {err}");
            assert!(err.contains("http://HOST:PORT, https://HOST:PORT or unix:///"), "{bad}: {err}");
        }
    }

    #[test]
    fn default_local_is_the_run_dir_socket() {
        let ApiTarget::Unix { path } = ApiTarget::default_local() else {
            panic!("default target is not a unix socket");
        };
        assert!(path.ends_with("manager.sock"), "{}", path.display());
    }

    fn app() -> axum::Router {
        axum::Router::new().route("/status", get(|| async { Json(json!({"name": "pg-0", "extra": 1})) })).fallback(
            || async {
                let body = json!({"error": "no route /nope", "hint": "see the API docs"});
                (StatusCode::NOT_FOUND, Json(body))
            },
        )
    }

    async fn check_answers(client: ApiClient) {
        let doc: Value = client.get_json("/status").await.unwrap();
        assert_eq!(doc["name"], "pg-0");
        let err = client.get_json::<Value>("/nope").await.unwrap_err();
        let ClientError::Api { status, error, hint } = &err else { panic!("not an api error: {err}") };
        assert_eq!((*status, error.as_str()), (404, "no route /nope"));
        assert_eq!(hint.as_deref(), Some("see the API docs"));
        assert_eq!(err.to_string(), "no route /nope (HTTP 404)\nhint: see the API docs");
        let (status, _) = client.get_raw("/nope").await.unwrap();
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn talks_over_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = AbortOnDropHandle::new(tokio::spawn(async { axum::serve(listener, app()).await }));
        let target = ApiTarget::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        check_answers(ApiClient::new(target)).await;
        drop(server);
    }

    #[tokio::test]
    async fn talks_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manager.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = AbortOnDropHandle::new(tokio::spawn(async { axum::serve(listener, app()).await }));
        check_answers(ApiClient::new(ApiTarget::Unix { path })).await;
        drop(server);
    }

    #[tokio::test]
    async fn missing_socket_is_unreachable_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let target = ApiTarget::Unix { path: dir.path().join("none.sock") };
        let err = ApiClient::new(target.clone()).get_json::<Value>("/status").await.unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("the instance manager at {target} is not reachable")), "{text}");
        assert!(text.contains("--api URL"), "{text}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = ApiTarget::Tcp { host: "127.0.0.1".into(), port };
        let client = ApiClient::new(target).with_timeout(Duration::from_millis(200));
        // The listener accepts (the kernel completes the handshake) but never answers.
        let err = client.get_raw("/status").await.unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
        drop(listener);
    }
}
