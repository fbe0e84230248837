//! Reading each instance's `GET /status` (the contract's `InstanceStatus`) over HTTPS, for the
//! cluster's status: role, timeline, LSN and lag as the instances themselves see them.
//!
//! The operator connects to the Pod's IP and verifies the certificate against the instance's
//! stable DNS name (`<cluster>-N.<cluster>-headless.<namespace>.svc`, which the server
//! certificate carries) with the cluster's CA, so it needs neither cluster DNS nor a Service.
//! Every call is bounded ([`CALL_TIMEOUT`]) and they run in parallel: an instance that does not
//! answer costs one timeout, never a stuck reconcile. An operator outside the cluster (a
//! developer's laptop) cannot reach Pod IPs; the status then says so per instance and is built
//! from the Pods and the Lease alone.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use pgwarden_contract::InstanceStatus;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::names::{API_PORT, Names};

/// How long one `/status` call may take, connection included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest `/status` document read.
const MAX_BODY: usize = 1 << 20;

/// A TLS client trusting only the cluster's CA.
pub fn tls_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("the cluster's CA is not PEM: {e}"))?;
        roots.add(cert).map_err(|e| format!("the cluster's CA: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the cluster's CA holds no certificate".into());
    }
    // The provider is named, not taken from the process default: in a build where rustls has
    // both ring and aws-lc-rs (the workspace's tests), no default can be inferred.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One instance's API, as the operator reaches it: the pod's IP, the name its certificate
/// carries, the cluster's CA and the API token.
#[derive(Clone)]
pub struct Target {
    /// The instance's name.
    pub name: String,
    /// The pod's IP and the API port.
    pub addr: SocketAddr,
    /// The DNS name verified in its certificate.
    pub host: String,
    /// A TLS client trusting the cluster's CA.
    pub tls: Arc<rustls::ClientConfig>,
    /// The bearer token of the mutating routes.
    pub token: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("name", &self.name).field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// How long a control call (`POST /switchover`, `/fence`) may take: a switchover waits for
/// its target to catch up.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// One HTTPS request to `target`: the status code and the body. Bounded by `timeout`.
pub async fn call(
    target: &Target,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
    timeout: Duration,
) -> Result<(http::StatusCode, Bytes), String> {
    let addr = target.addr;
    let host = target.host.as_str();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(target.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host} at {addr}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP with {addr}: {e}"))?;
        let conn = tokio::spawn(conn);
        let mut req = http::Request::builder().method(method.clone()).uri(path).header(http::header::HOST, host);
        if let Some(t) = &target.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let bytes = match &body {
            Some(b) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(bytes)).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| format!("{method} {path} on {addr}: {e}"))?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading {path} from {addr}: {e}"))?
            .to_bytes();
        conn.abort();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("{addr} did not answer within {timeout:?}")))
}

/// Why a control call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No answer (connection, TLS, timeout): worth trying again.
    #[error("{0}")]
    Unreachable(String),
    /// The instance answered and refused, with its reason: a definite answer.
    #[error("{0}")]
    Refused(String),
}

/// `POST path` with a JSON body to `target`; the answer's JSON, or why not (the instance's
/// `{"error", "hint"}` in words when it refused).
pub async fn post(target: &Target, path: &str, body: serde_json::Value) -> Result<serde_json::Value, ControlError> {
    let answer = request(target, http::Method::POST, path, Some(body), CONTROL_TIMEOUT)
        .await
        .map_err(ControlError::Unreachable)?;
    if answer.status.is_success() {
        return Ok(answer.body);
    }
    let message = answer.refusal(&target.name, path);
    // A 5xx other than 500 (the instance cannot now: no Postgres, no store) is worth trying
    // again, like no answer.
    if answer.status.is_server_error() && answer.status != http::StatusCode::INTERNAL_SERVER_ERROR {
        return Err(ControlError::Unreachable(message));
    }
    Err(ControlError::Refused(message))
}

/// An instance's answer, whatever its status code.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The HTTP status.
    pub status: http::StatusCode,
    /// The body as JSON; `null` when it is not JSON.
    pub body: serde_json::Value,
}

impl Answer {
    /// The instance's `{"error", "hint"}` in words: what `instance` answered to `path`.
    pub fn refusal(&self, instance: &str, path: &str) -> String {
        let error = self.body.get("error").and_then(|e| e.as_str()).unwrap_or("no error message");
        let hint = self.body.get("hint").and_then(|e| e.as_str()).map(|h| format!(" ({h})")).unwrap_or_default();
        format!("{instance} answered {path} with HTTP {}: {error}{hint}", self.status)
    }
}

/// `method path` (with a JSON body) to `target`, bounded by `timeout`: the answer, whatever
/// its status; `Err` when there is none (connection, TLS, timeout).
pub async fn request(
    target: &Target,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
    timeout: Duration,
) -> Result<Answer, String> {
    let (status, bytes) = call(target, method, path, body, timeout).await?;
    Ok(Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null) })
}

/// `GET /status` of the instance at `addr`, verified as `host`.
pub async fn read_one(
    tls: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    host: &str,
    token: Option<&str>,
) -> Result<InstanceStatus, String> {
    let target = Target { name: host.to_owned(), addr, host: host.to_owned(), tls, token: token.map(str::to_owned) };
    let (status, body) = call(&target, http::Method::GET, "/status", None, CALL_TIMEOUT).await?;
    if !status.is_success() {
        return Err(format!("GET /status from {addr}: HTTP {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("/status from {addr} is not an instance status: {e}"))
}

/// The API of every scheduled instance of `names`, by instance name.
pub fn targets(
    names: &Names,
    pods: &[Pod],
    tls: &Arc<rustls::ClientConfig>,
    token: Option<&str>,
) -> BTreeMap<String, Target> {
    pods.iter()
        .filter_map(|p| {
            let n = names.instance_number(&p.name_any())?;
            let ip: std::net::IpAddr = p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
            let target = Target {
                name: p.name_any(),
                addr: SocketAddr::new(ip, API_PORT as u16),
                host: names.instance_host(n),
                tls: tls.clone(),
                token: token.map(str::to_owned),
            };
            Some((p.name_any(), target))
        })
        .collect()
}

/// Every scheduled instance's `/status`, in parallel, keyed by instance name. Pods without an
/// IP yet are left out; without a CA nothing is read.
pub async fn read_all(
    names: &Names,
    pods: &[Pod],
    ca_pem: Option<&str>,
    token: Option<&str>,
) -> BTreeMap<String, Result<InstanceStatus, String>> {
    let targets: Vec<(String, SocketAddr, String)> = pods
        .iter()
        .filter_map(|p| {
            let n = names.instance_number(&p.name_any())?;
            let ip: std::net::IpAddr = p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
            Some((p.name_any(), SocketAddr::new(ip, API_PORT as u16), names.instance_host(n)))
        })
        .collect();
    if targets.is_empty() {
        return BTreeMap::new();
    }
    let tls = match ca_pem.map(tls_config) {
        Some(Ok(tls)) => tls,
        Some(Err(e)) => return targets.into_iter().map(|(n, _, _)| (n, Err(e.clone()))).collect(),
        None => {
            return targets
                .into_iter()
                .map(|(n, _, _)| (n, Err("no CA to verify the instances with".into())))
                .collect();
        }
    };
    let calls = targets.into_iter().map(|(name, addr, host)| {
        let tls = tls.clone();
        async move { (name, read_one(tls, addr, &host, token).await) }
    });
    futures_util::future::join_all(calls).await.into_iter().collect()
}

#[cfg(test)]
pub(crate) mod instances_tests;
