//! Leader election between the operator's replicas, on a `coordination.k8s.io/v1` Lease of
//! its own (default `pgwarden-operator` in the operator's namespace). Exactly one replica
//! reconciles; the others wait, ready to take over within a lease duration (15 s) of the
//! leader's last renewal, or at once when it releases the lease on shutdown.
//!
//! The decisions are pure ([`decide`]): when to create, take over, renew or step down, and why
//! expiry is measured on our own monotonic clock. This module is the thin shell around them:
//! one task, the [`Elector`], owns the lease state (role, last sighting, the object a
//! compare-and-swap starts from) and publishes a [`Snapshot`] through a `watch` channel that
//! the controller and the health endpoints read. Each tick (every retry period, 2 s) reads the
//! Lease, decides, and writes at most once, every call bounded by [`Timings::call_timeout`].
//!
//! Writes are compare-and-swap: a `PUT` carrying the `resourceVersion` read, which the API
//! server refuses with 409 if anyone wrote in between. A leader that gets a 409, reads another
//! holder, or cannot renew within its renew deadline (10 s) ends the election with
//! [`End::Lost`]; the process then stops reconciling and exits so that Kubernetes restarts it
//! as a clean candidate. On shutdown a leader releases the lease (clears `holderIdentity`)
//! so that the standby takes over without waiting for expiry.

mod decide;
mod object;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use decide::{Decision, Observed, Role, Sighting, WriteOutcome, after_write, decide, sight};
pub use decide::{Loss, Timings};

/// The default name of the operator's Lease.
pub const DEFAULT_LEASE_NAME: &str = "pgwarden-operator";

/// Which Lease to compete for, as whom, and how fast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// Its namespace (the operator's own).
    pub namespace: String,
    /// This replica's identity, written as `holderIdentity` (the pod name).
    pub identity: String,
    /// Durations of the election.
    pub timings: Timings,
}

/// This replica's identity in the election: the pod name when Kubernetes gives it (`POD_NAME`
/// from the downward API; a restarted container keeps it, and takes back a lease its previous
/// process held without waiting for it to expire), otherwise the host name with a random
/// suffix, so that two processes on one host never share an identity.
pub fn identity(pod_name: Option<&str>, hostname: Option<&str>, random: u32) -> String {
    match pod_name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(pod) => pod.to_owned(),
        None => {
            let host = hostname.map(str::trim).filter(|h| !h.is_empty()).unwrap_or("operator");
            format!("{host}-{random:08x}")
        }
    }
}

/// Where this replica stands in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Election {
    /// Not leading. `holder` is the replica holding the lease, if one was read.
    Candidate {
        /// The current holder.
        holder: Option<String>,
    },
    /// Leading: this replica reconciles.
    Leader,
    /// The election loop has ended.
    Ended(End),
}

/// How the election loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Stopped while a candidate: nothing to release.
    Stopped,
    /// Stopped while leading, and the lease was released.
    Released,
    /// Stopped while leading, but the lease could not be released (it expires by itself).
    NotReleased(String),
    /// Leadership was lost.
    Lost(Loss),
}

/// What the election looks like now, and when its loop last completed a tick (for liveness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The election's state.
    pub election: Election,
    /// When the loop last completed a tick.
    pub ticked_at: Instant,
}

/// The task that owns the lease state. Created with [`Elector::new`], driven by
/// [`Elector::run`].
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    role: Role,
    sighting: Option<Sighting>,
    status: watch::Sender<Snapshot>,
    /// The failure logged last, so that a persisting failure is logged once.
    last_failure: Option<String>,
}

impl Elector {
    /// An elector on `settings.namespace/settings.name`, and the channel it publishes on.
    /// Nothing is sent until [`Elector::run`].
    pub fn new(client: kube::Client, settings: LeaseSettings) -> (Self, watch::Receiver<Snapshot>) {
        let api = Api::namespaced(client, &settings.namespace);
        let initial = Snapshot { election: Election::Candidate { holder: None }, ticked_at: Instant::now() };
        let (status, receiver) = watch::channel(initial);
        let elector = Self { api, settings, role: Role::Candidate, sighting: None, status, last_failure: None };
        (elector, receiver)
    }

    /// Competes for the lease until `stop` is cancelled (then releases it if held) or
    /// leadership is lost. The final state is also published as [`Election::Ended`].
    pub async fn run(mut self, stop: CancellationToken) -> End {
        tracing::info!(lease = %self.describe(), identity = %self.settings.identity, "joining the leader election");
        // Bounded by `stop` and by the loss of leadership; each tick is bounded by the call
        // timeouts (and, when leading, by the renew deadline).
        loop {
            let started = Instant::now();
            let loss = match self.role.deadline(&self.settings.timings) {
                Some(deadline) => timeout_at(deadline, self.tick())
                    .await
                    .unwrap_or(Some(Loss::RenewDeadline(self.settings.timings.renew_deadline))),
                None => self.tick().await,
            };
            if let Some(loss) = loss {
                return self.end(End::Lost(loss));
            }
            let next = started + self.settings.timings.retry_period;
            // A leader wakes at its deadline even if that comes before the next tick.
            let wake = self.role.deadline(&self.settings.timings).map_or(next, |d| d.min(next));
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                () = sleep_until(wake) => {}
            }
        }
        let end = match self.role {
            Role::Candidate => End::Stopped,
            Role::Leader { .. } => self.release().await,
        };
        self.end(end)
    }

    /// One round: read, decide, write at most once. Returns the loss that ends leadership.
    async fn tick(&mut self) -> Option<Loss> {
        let (observed, base) = self.observe().await;
        let settings = &self.settings;
        match decide(&self.role, &observed, &settings.identity, &settings.timings, Instant::now()) {
            Decision::Retry | Decision::Wait { .. } => {}
            Decision::StepDown(loss) => return Some(loss),
            decision @ (Decision::Create | Decision::Acquire | Decision::Renew) => {
                let sent_at = Instant::now();
                let outcome = self.write(&decision, base.as_ref()).await;
                let was_candidate = self.role == Role::Candidate;
                match after_write(&self.role, outcome, sent_at) {
                    Ok(role) => self.role = role,
                    Err(loss) => return Some(loss),
                }
                if was_candidate && self.role != Role::Candidate {
                    tracing::info!(lease = %self.describe(), identity = %self.settings.identity,
                        "acquired the leader lease; this replica reconciles");
                }
            }
        }
        self.publish();
        None
    }

    /// Reads the Lease: what the decision sees, and the object a write starts from.
    async fn observe(&mut self) -> (Observed, Option<Lease>) {
        let limit = self.settings.timings.call_timeout();
        let lease = match within(limit, self.api.get_opt(&self.settings.name)).await {
            Ok(lease) => lease,
            Err(e) => {
                let why = e.describe(&self.settings.namespace);
                return (self.failed("read", &why), None);
            }
        };
        let Some(lease) = lease else {
            self.recovered();
            self.sighting = None;
            return (Observed::Absent, None);
        };
        match object::read(&lease, self.settings.timings.lease_duration) {
            Ok(read) => {
                self.recovered();
                let sighting = sight(self.sighting.as_ref(), read, Instant::now());
                if self.role == Role::Candidate && self.holder() != sighting.read.holder {
                    match &sighting.read.holder {
                        Some(holder) => {
                            tracing::info!(lease = %self.describe(), %holder, "standby: another replica holds the leader lease")
                        }
                        None => tracing::info!(lease = %self.describe(), "the leader lease is free"),
                    }
                }
                self.sighting = Some(sighting.clone());
                (Observed::Present(sighting), Some(lease))
            }
            Err(why) => (self.failed("read", &why), None),
        }
    }

    /// Carries out a create, takeover or renewal.
    async fn write(&mut self, decision: &Decision, base: Option<&Lease>) -> WriteOutcome {
        let (s, now, pp) = (&self.settings, jiff::Timestamp::now(), PostParams::default());
        let limit = s.timings.call_timeout();
        let result = match (decision, base) {
            (Decision::Create, _) => {
                let lease = object::create(&s.name, &s.namespace, &s.identity, &s.timings, now);
                within(limit, self.api.create(&pp, &lease)).await
            }
            (Decision::Acquire, Some(base)) => {
                let lease = object::acquire(base, &s.identity, &s.timings, now);
                within(limit, self.api.replace(&s.name, &pp, &lease)).await
            }
            (Decision::Renew, Some(base)) => {
                let lease = object::renew(base, &s.timings, now);
                within(limit, self.api.replace(&s.name, &pp, &lease)).await
            }
            // `decide` asks for a takeover or a renewal only of a Lease it read.
            _ => return WriteOutcome::Failed,
        };
        let verb = match decision {
            Decision::Create => "create",
            Decision::Acquire => "take over",
            _ => "renew",
        };
        match result {
            Ok(_) => {
                self.recovered();
                WriteOutcome::Written
            }
            Err(CallError::Api(e)) if is_conflict(&e) => {
                tracing::info!(lease = %self.describe(), action = verb, "the lease changed since it was read (conflict)");
                WriteOutcome::Conflict
            }
            Err(e) => {
                let why = e.describe(&self.settings.namespace);
                self.failed(verb, &why);
                WriteOutcome::Failed
            }
        }
    }

    /// Releases a lease that still names us, compare-and-swap on the version just read.
    async fn release(&mut self) -> End {
        let (observed, base) = self.observe().await;
        let (Observed::Present(sighting), Some(base)) = (observed, base) else {
            return End::NotReleased("the lease could not be read, or is gone".into());
        };
        if sighting.read.holder.as_deref() != Some(self.settings.identity.as_str()) {
            return End::NotReleased(format!("the lease names {:?}, not this replica", sighting.read.holder));
        }
        let lease = object::release(&base, jiff::Timestamp::now());
        let pp = PostParams::default();
        let call = self.api.replace(&self.settings.name, &pp, &lease);
        match within(self.settings.timings.call_timeout(), call).await {
            Ok(_) => End::Released,
            Err(e) => End::NotReleased(e.describe(&self.settings.namespace)),
        }
    }

    /// Publishes the final state, logs it, and returns it.
    fn end(self, end: End) -> End {
        let lease = self.describe();
        match &end {
            End::Stopped => tracing::info!(%lease, "left the leader election"),
            End::Released => tracing::info!(%lease, "released the leader lease; a standby can take over at once"),
            End::NotReleased(why) => tracing::warn!(%lease, why = %why,
                "could not release the leader lease; a standby takes over once it expires"),
            End::Lost(loss) => tracing::error!(%lease, reason = %loss, "lost the leader lease"),
        }
        self.status.send_replace(Snapshot { election: Election::Ended(end.clone()), ticked_at: Instant::now() });
        end
    }

    fn publish(&self) {
        let election = match self.role {
            Role::Leader { .. } => Election::Leader,
            Role::Candidate => Election::Candidate { holder: self.holder() },
        };
        self.status.send_replace(Snapshot { election, ticked_at: Instant::now() });
    }

    fn holder(&self) -> Option<String> {
        self.sighting.as_ref().and_then(|s| s.read.holder.clone())
    }

    /// Logs a failure once per distinct message; returns [`Observed::Unreadable`].
    fn failed(&mut self, action: &str, why: &str) -> Observed {
        let message = format!("cannot {action} the lease: {why}");
        if self.last_failure.as_deref() != Some(message.as_str()) {
            tracing::warn!(lease = %self.describe(), leading = self.role != Role::Candidate, error = %message,
                "leader election call failed; retrying every retry period");
            self.last_failure = Some(message);
        }
        Observed::Unreadable
    }

    fn recovered(&mut self) {
        if self.last_failure.take().is_some() {
            tracing::info!(lease = %self.describe(), "leader election calls succeed again");
        }
    }

    fn describe(&self) -> String {
        format!("{}/{}", self.settings.namespace, self.settings.name)
    }
}

/// Why a call failed: the API server said so, or it did not answer in time.
enum CallError {
    Api(kube::Error),
    Timeout(std::time::Duration),
}

impl CallError {
    fn describe(&self, namespace: &str) -> String {
        match self {
            Self::Api(e) => describe_error(e, namespace),
            Self::Timeout(d) => format!("no answer within {d:?}"),
        }
    }
}

/// Awaits `call` for at most `limit`.
async fn within<T>(
    limit: std::time::Duration,
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, CallError> {
    match timeout(limit, call).await {
        Ok(result) => result.map_err(CallError::Api),
        Err(_) => Err(CallError::Timeout(limit)),
    }
}

/// 409, or 404 on a `PUT` (the Lease was deleted since it was read): the version read is not
/// current any more.
fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 404)
}

/// A failed call, with a hint when the operator lacks the permission.
fn describe_error(e: &kube::Error, namespace: &str) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "{e}; hint: the operator's ServiceAccount needs get, create and update on leases \
             (apiGroup coordination.k8s.io) in namespace {namespace} (operator/deploy/rbac.yaml)"
        ),
        _ => e.to_string(),
    }
}

#[cfg(test)]
#[path = "leader_tests.rs"]
mod tests;
