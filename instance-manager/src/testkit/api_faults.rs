//! Faults of the [`FakeApiServer`](super::FakeApiServer): what a real API server or its etcd
//! does on a bad day, injected per verb (and optionally per resource), for a time window or
//! until cleared.
//!
//! | fault | what the client sees | seen on a real cluster when |
//! |---|---|---|
//! | [`Fault::Stall`] | the connection is accepted and the request read, then nothing until the answer comes late (or the client gives up) | the API server or etcd is stopped, overloaded, or electing a leader |
//! | [`Fault::Status`] | a 5xx with a Kubernetes `Status` body ([`Fault::etcd_timeout`], [`Fault::unavailable`], [`Fault::gateway_timeout`]) | etcd times out, the API server is starting or shedding load |
//! | [`Fault::Reset`] | the connection closed without an answer (RST) | the API server restarts, a load balancer drops it |
//! | [`Fault::TooManyRequests`] | 429 with `Retry-After` | priority-and-fairness or max-in-flight throttling |
//!
//! A held request ([`Fault::Stall`]) is served normally once it is released, like the requests
//! a stopped API server finds in its sockets when it continues: a write the client gave up on
//! may still land (its outcome was unknown to the client).
//!
//! [`FaultRules`] is the pure part: which fault, if any, applies to a request at an instant.
//! The newest matching rule wins, so a narrower fault can be laid over a broad one.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// A request method the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verb {
    /// Read one object.
    Get,
    /// Create an object.
    Post,
    /// Replace an object (the lease's compare-and-swap).
    Put,
    /// Merge-patch an object (pod labels).
    Patch,
    /// Delete an object.
    Delete,
}

impl Verb {
    /// The verb of an HTTP method, `None` for methods the fake does not serve.
    pub fn of(method: &http::Method) -> Option<Self> {
        Some(match *method {
            http::Method::GET => Self::Get,
            http::Method::POST => Self::Post,
            http::Method::PUT => Self::Put,
            http::Method::PATCH => Self::Patch,
            http::Method::DELETE => Self::Delete,
            _ => return None,
        })
    }
}

/// Which verbs a fault applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Verbs {
    /// Every request.
    #[default]
    All,
    /// Only these.
    Only(Vec<Verb>),
}

impl Verbs {
    fn contains(&self, verb: Option<Verb>) -> bool {
        match self {
            Self::All => true,
            Self::Only(verbs) => verb.is_some_and(|v| verbs.contains(&v)),
        }
    }
}

/// How the fake misbehaves (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Fault {
    /// Hold each request, then serve it normally: after `answer_after`, or with `None` once
    /// the fault ends (cleared, or its window passed) — as an API server stopped and continued.
    Stall {
        /// How long each request is held; `None`: while the fault lasts.
        #[serde(default, with = "seconds")]
        answer_after: Option<Duration>,
    },
    /// Answer `code` with a `Status` body.
    Status {
        /// The HTTP status (500, 503, 504, …).
        code: u16,
        /// `Status.reason` (empty for etcd's errors, which the API server passes on as is).
        reason: String,
        /// `Status.message`.
        message: String,
    },
    /// Close the connection without answering.
    Reset,
    /// 429 Too Many Requests with `Retry-After`.
    TooManyRequests {
        /// The `Retry-After` header, in seconds.
        retry_after_seconds: u32,
    },
}

impl Fault {
    /// Every request held until the fault ends.
    pub fn stall() -> Self {
        Self::Stall { answer_after: None }
    }

    /// Every request answered `delay` late.
    pub fn slow(delay: Duration) -> Self {
        Self::Stall { answer_after: Some(delay) }
    }

    /// What the API server answers when etcd does not commit in time: 500
    /// "etcdserver: request timed out".
    pub fn etcd_timeout() -> Self {
        Self::Status { code: 500, reason: String::new(), message: "etcdserver: request timed out".into() }
    }

    /// 503, as an API server that is starting or has no healthy etcd.
    pub fn unavailable() -> Self {
        Self::Status {
            code: 503,
            reason: "ServiceUnavailable".into(),
            message: "the server is currently unable to handle the request".into(),
        }
    }

    /// 504, as an API server whose request deadline passed while etcd was slow.
    pub fn gateway_timeout() -> Self {
        Self::Status {
            code: 504,
            reason: "Timeout".into(),
            message: "Timeout: request did not complete within requested timeout - context deadline exceeded".into(),
        }
    }
}

/// Optional durations as fractional seconds in JSON (`"answerAfter": 2.5`).
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let secs = Option::<f64>::deserialize(d)?;
        secs.map(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom)).transpose()
    }
}

/// A fault as the control endpoint (`POST /testkit/faults`) takes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRequest {
    /// The fault.
    pub fault: Fault,
    /// The verbs it applies to (default: all).
    #[serde(default)]
    pub verbs: Verbs,
    /// The resource it applies to (`leases`, `endpointslices`, `pods`); default: all.
    #[serde(default)]
    pub resource: Option<String>,
    /// How long it lasts, in seconds; default: until cleared.
    #[serde(default)]
    pub seconds: Option<f64>,
}

/// Names one fault laid by [`FakeApiServer::set_fault`](super::FakeApiServer::set_fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FaultId(pub u64);

#[derive(Clone, Debug)]
struct Rule {
    id: FaultId,
    fault: Fault,
    verbs: Verbs,
    resource: Option<String>,
    until: Option<Instant>,
}

/// The faults laid and not yet cleared (expired ones are dropped as they are seen).
#[derive(Debug, Default)]
pub struct FaultRules {
    last_id: u64,
    rules: Vec<Rule>,
}

impl FaultRules {
    /// Lays `fault` on `verbs` of `resource` (all resources with `None`) from `now` for
    /// `window` (until cleared with `None`).
    pub fn add(
        &mut self,
        fault: Fault,
        verbs: Verbs,
        resource: Option<String>,
        window: Option<Duration>,
        now: Instant,
    ) -> FaultId {
        self.last_id += 1;
        let id = FaultId(self.last_id);
        let until = window.map(|w| now + w);
        self.rules.push(Rule { id, fault, verbs, resource, until });
        id
    }

    /// Removes one fault; whether it was still there.
    pub fn remove(&mut self, id: FaultId) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.id != id);
        self.rules.len() != before
    }

    /// Removes every fault.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The fault that applies to a `verb` request on `resource` at `now`: the newest match.
    pub fn applicable(&mut self, verb: Option<Verb>, resource: Option<&str>, now: Instant) -> Option<(FaultId, Fault)> {
        self.rules.retain(|r| r.until.is_none_or(|u| now < u));
        let matches =
            |r: &&Rule| r.verbs.contains(verb) && r.resource.as_deref().is_none_or(|want| resource == Some(want));
        self.rules.iter().rev().find(matches).map(|r| (r.id, r.fault.clone()))
    }

    /// Whether the fault `id` still lasts at `now`.
    pub fn lasts(&self, id: FaultId, now: Instant) -> bool {
        self.rules.iter().any(|r| r.id == id && r.until.is_none_or(|u| now < u))
    }
}

/// The resource a request path addresses: the segment after `namespaces/{ns}/`.
pub fn resource_of(path: &str) -> Option<&str> {
    let mut segments = path.split('/').skip_while(|s| *s != "namespaces");
    segments.nth(2).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_matching_fault_applies_until_its_window_passes() {
        let t0 = Instant::now();
        let mut rules = FaultRules::default();
        let broad = rules.add(Fault::etcd_timeout(), Verbs::All, None, Some(Duration::from_secs(10)), t0);
        let narrow = rules.add(Fault::Reset, Verbs::Only(vec![Verb::Put]), Some("leases".into()), None, t0);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(rules.applicable(Some(Verb::Put), Some("leases"), at(1)), Some((narrow, Fault::Reset)));
        assert_eq!(rules.applicable(Some(Verb::Get), Some("leases"), at(1)), Some((broad, Fault::etcd_timeout())));
        assert_eq!(rules.applicable(Some(Verb::Put), Some("pods"), at(1)).map(|(id, _)| id), Some(broad));
        assert!(rules.lasts(broad, at(9)) && !rules.lasts(broad, at(10)));
        assert_eq!(rules.applicable(Some(Verb::Get), Some("leases"), at(10)), None, "the window passed");
        assert!(rules.remove(narrow) && !rules.remove(narrow));
        assert_eq!(rules.applicable(Some(Verb::Put), Some("leases"), at(11)), None);
    }

    #[test]
    fn resources_are_read_from_core_and_group_paths() {
        assert_eq!(resource_of("/api/v1/namespaces/db/pods/pg-1"), Some("pods"));
        assert_eq!(resource_of("/apis/coordination.k8s.io/v1/namespaces/db/leases"), Some("leases"));
        assert_eq!(resource_of("/version"), None);
    }

    #[test]
    fn fault_requests_read_from_json() {
        let r: FaultRequest = serde_json::from_str(
            r#"{"fault": {"kind": "stall", "answerAfter": 1.5}, "verbs": {"only": ["PUT"]}, "seconds": 5}"#,
        )
        .unwrap();
        assert_eq!(r.fault, Fault::slow(Duration::from_millis(1500)));
        assert_eq!((r.verbs, r.resource, r.seconds), (Verbs::Only(vec![Verb::Put]), None, Some(5.0)));
        let r: FaultRequest = serde_json::from_str(r#"{"fault": {"kind": "stall"}}"#).unwrap();
        assert_eq!((r.fault, r.verbs), (Fault::stall(), Verbs::All));
        let r: FaultRequest =
            serde_json::from_str(r#"{"fault": {"kind": "tooManyRequests", "retryAfterSeconds": 2}}"#).unwrap();
        assert_eq!(r.fault, Fault::TooManyRequests { retry_after_seconds: 2 });
    }
}
