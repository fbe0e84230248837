//! [`Fault`]: a failure scripted into the fake API server.

use http::Method;

use super::routes::Route;

/// A scripted failure: the next `times` requests with this method on this resource (and
/// name, and subresource, when given) answer `code` with a `Status`, and change nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The method to fail.
    pub method: Method,
    /// The resource's plural.
    pub plural: String,
    /// Only this object (any when `None`).
    pub name: Option<String>,
    /// Only this subresource, `status` (any, the main resource included, when `None`).
    pub subresource: Option<String>,
    /// How many more requests fail.
    pub times: usize,
    /// The HTTP code: 409 `Conflict`, 403 `Forbidden`, 500 `InternalError`, 429...
    pub code: u16,
    /// The `Status` message; a default one names the fault.
    pub message: Option<String>,
}

impl Fault {
    /// The next `method` request on `plural` answers `code`.
    pub fn new(method: Method, plural: &str, code: u16) -> Self {
        Self { method, plural: plural.to_owned(), name: None, subresource: None, times: 1, code, message: None }
    }

    /// Only requests on object `name`.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Only requests on `subresource` (`status`).
    pub fn subresource(mut self, subresource: &str) -> Self {
        self.subresource = Some(subresource.to_owned());
        self
    }

    /// The next `times` matching requests, not just one.
    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }

    /// The `Status` message.
    pub fn message(mut self, message: &str) -> Self {
        self.message = Some(message.to_owned());
        self
    }

    pub(super) fn matches(&self, method: &Method, route: &Route) -> bool {
        self.method == method
            && self.plural == route.plural
            && self.name.as_ref().is_none_or(|n| route.name.as_ref() == Some(n))
            && self.subresource.as_ref().is_none_or(|s| route.subresource.as_ref() == Some(s))
    }
}
