//! Authentication of the mutating endpoints on TCP: `Authorization: Bearer <token>` (the
//! scheme in any case), the token read from `api.tokenFile` (a mounted Secret) at every
//! request, so a rotated token works at once. Without a token file the mutating endpoints are refused on TCP; the local
//! Unix socket (mode 0600) is trusted and used by the CLI inside the pod.
//!
//! Over HTTPS with `api.tls.clientAuth` set, a client certificate that rustls verified
//! against `api.tls.caFile` during the handshake authorises the request as well, token or not.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::ApiError;
use crate::instance::Instance;
use crate::tls::TlsPeer;

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of an `Authorization` header value: `Bearer <token>`, the scheme in any case
/// (RFC 9110 §11.1: auth schemes are case-insensitive), any run of spaces after it.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Middleware: lets the request through only with the right bearer token.
pub async fn require_token(State(instance): State<Arc<Instance>>, req: Request, next: Next) -> Response {
    let client_cert = req.extensions().get::<ConnectInfo<TlsPeer>>().and_then(|c| c.0.client_cert_serial.clone());
    if let Some(serial) = client_cert {
        tracing::info!(path = %req.uri().path(), client_cert_serial = %serial, "request authorised by a client certificate");
        return next.run(req).await;
    }
    let v = instance.config();
    let Some(file) = &v.config.api.token_file else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "mutating endpoints are disabled over TCP: no api.tokenFile is configured",
            "set api.tokenFile, or use the local socket (kubectl exec <pod> -- instance-manager ...)",
        )
        .into_response();
    };
    let expected = match crate::osuser::read_secret(file) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the API token file");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the API token cannot be read",
                "check api.tokenFile",
            )
            .into_response();
        }
    };
    let given = req.headers().get(header::AUTHORIZATION).and_then(|h| h.to_str().ok()).and_then(bearer_token);
    match given {
        Some(token) if constant_time_eq(token.trim().as_bytes(), expected.expose().as_bytes()) => next.run(req).await,
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
            "pass --token-file (or PGWARDEN_TOKEN_FILE) with the token from api.tokenFile, or over HTTPS \
             with api.tls.clientAuth a client certificate (--cert and --key)",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR   abc  "] {
            assert_eq!(bearer_token(v), Some("abc"), "{v:?}");
        }
        for v in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "abc"] {
            assert_eq!(bearer_token(v), None, "{v:?}");
        }
    }
}
