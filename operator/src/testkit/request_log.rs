//! [`RecordedRequest`]: one entry of the fake API server's request log.

use std::fmt;

use http::Method;
use serde_json::Value;

/// One request the fake received, as it received it, and how it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The query's pairs, percent-decoded, in order (`fieldManager`, `force`,
    /// `labelSelector`...).
    pub query: Vec<(String, String)>,
    /// The `Content-Type` header (`application/apply-patch+yaml`...).
    pub content_type: Option<String>,
    /// The body as JSON; `None` when empty; a JSON string of the text when it was not JSON.
    pub body: Option<Value>,
    /// The resource the path names, when it names one.
    pub plural: Option<String>,
    /// The namespace in the path.
    pub namespace: Option<String>,
    /// The object's name in the path.
    pub name: Option<String>,
    /// `status`, `eviction`.
    pub subresource: Option<String>,
    /// The HTTP code of the answer.
    pub status: u16,
    /// Whether the request changed a stored object (a write of an unchanged object does not).
    pub changed: bool,
}

impl RecordedRequest {
    /// Anything but a read (`GET`, `HEAD`).
    pub fn is_write(&self) -> bool {
        self.method != Method::GET && self.method != Method::HEAD
    }

    /// The value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `fieldManager`.
    pub fn field_manager(&self) -> Option<&str> {
        self.param("fieldManager")
    }

    /// Whether this is a server-side apply.
    pub fn is_apply(&self) -> bool {
        self.method == Method::PATCH
            && self.content_type.as_deref().is_some_and(|c| c.starts_with("application/apply-patch"))
    }
}

impl fmt::Display for RecordedRequest {
    /// `PATCH /api/v1/namespaces/db/pods/pg-1?fieldManager=m&force=true (application/apply-patch+yaml) -> 200`,
    /// for assertion messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        for (i, (k, v)) in self.query.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
        }
        if let Some(content_type) = &self.content_type {
            write!(f, " ({content_type})")?;
        }
        write!(f, " -> {}", self.status)?;
        if self.is_write() && self.status < 300 && !self.changed {
            write!(f, " (no change)")?;
        }
        Ok(())
    }
}
