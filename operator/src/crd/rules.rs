//! The CEL rules (`x-kubernetes-validations`) the API server applies to a `PostgresCluster`
//! beyond its schema: a spec that cannot work is refused at `kubectl apply` with a message that
//! names the field and the fix, never discovered later by a crash-looping pod.
//!
//! Rules that use `oldSelf` are transition rules: the API server runs them on updates only.
//! Tests evaluate every rule client-side with the same CEL library (`crd_tests.rs`).

use serde_json::{Value, json};

fn rule(rule: &str, message: &str) -> Value {
    json!({"rule": rule, "message": message})
}

/// Rules across fields of the spec.
pub fn spec_rules() -> Value {
    json!([
        rule(
            "!has(self.synchronous) || self.synchronous.number < self.instances",
            "synchronous.number must be lower than instances: a primary and that many standbys; raise instances or lower synchronous.number",
        ),
        rule(
            "!has(self.replicaSource) || self.replicaSource != 'backup' || has(self.backup)",
            "replicaSource: backup needs backup (an object store with base backups); set backup, or use replicaSource: auto",
        ),
        rule(
            "has(self.walStorage) == has(oldSelf.walStorage)",
            "walStorage cannot be added to or removed from an existing cluster: the instances would have to move their WAL; create a new cluster (a restore from a backup) instead",
        ),
    ])
}

/// A size in MiB, from a `size` that matched [`SIZE_PATTERN`] (CEL's string library; the
/// `quantity` library would be shorter but needs Kubernetes 1.29).
fn mib(v: &str) -> String {
    format!("(int({v}.substring(0, size({v}) - 2)) * ({v}.endsWith('Ti') ? 1048576 : ({v}.endsWith('Gi') ? 1024 : 1)))")
}

/// A volume size: a whole number of MiB, GiB or TiB, which is how storage is sized.
pub const SIZE_PATTERN: &str = "^[1-9][0-9]{0,8}(Mi|Gi|Ti)$";

/// `storage` and `walStorage`: a size that never shrinks, on a fixed class.
pub fn storage_rules() -> Value {
    json!([
        rule(
            &format!("self.size.matches('{SIZE_PATTERN}')"),
            "size must be a whole number of Mi, Gi or Ti, such as 10Gi",
        ),
        rule(
            &format!(
                "!self.size.matches('{SIZE_PATTERN}') || !oldSelf.size.matches('{SIZE_PATTERN}') || {} >= {}",
                mib("self.size"),
                mib("oldSelf.size")
            ),
            "size cannot shrink: a volume only grows; restore into a new cluster to make it smaller",
        ),
        rule(
            "has(self.storageClass) == has(oldSelf.storageClass) && (!has(self.storageClass) || self.storageClass == oldSelf.storageClass)",
            "storageClass is immutable: existing volumes keep their class",
        ),
    ])
}

/// The lease timing rules (docs/architecture.md §4.2).
pub fn timing_rules() -> Value {
    json!([
        rule(
            "double(self.retryPeriodSeconds) * 1.2 < double(self.renewDeadlineSeconds)",
            "retryPeriodSeconds × 1.2 must be below renewDeadlineSeconds, so that a renew is retried before the deadline; e.g. 15/10/2 or 5/3/1",
        ),
        rule(
            "double(self.renewDeadlineSeconds) + double(self.fenceBudgetSeconds) < double(self.leaseDurationSeconds)",
            "renewDeadlineSeconds + fenceBudgetSeconds must be below leaseDurationSeconds, so that a primary has fenced before its lease expires; e.g. 15/10/2 with a 2 s budget",
        ),
    ])
}

/// `bootstrap`: `initdb` or `recovery`, not both, and fixed once the cluster exists.
pub fn bootstrap_rules() -> Value {
    json!([
        rule("!(has(self.initdb) && has(self.recovery))", "bootstrap takes one of initdb and recovery, not both"),
        rule(
            "self == oldSelf",
            "bootstrap is immutable: it only applies when the cluster is created; create a new cluster instead",
        ),
    ])
}

/// A recovery target names one point.
pub fn one_target() -> Value {
    json!([rule(
        "(has(self.time) ? 1 : 0) + (has(self.lsn) ? 1 : 0) + (has(self.xid) ? 1 : 0) + (has(self.name) ? 1 : 0) + (self.immediate ? 1 : 0) <= 1",
        "target takes at most one of time, lsn, xid, name and immediate",
    )])
}

/// An object store's credentials match its destination.
pub fn one_store() -> Value {
    json!([
        rule("!has(self.s3) || self.destination.startsWith('s3://')", "s3 credentials need an s3:// destination"),
        rule("!has(self.gcs) || self.destination.startsWith('gs://')", "gcs credentials need a gs:// destination"),
        rule("!has(self.azure) || self.destination.startsWith('az://')", "azure credentials need an az:// destination"),
    ])
}

/// Retention by window or by count.
pub fn one_retention() -> Value {
    json!([rule(
        "has(self.recoveryWindowDays) != has(self.count)",
        "retention takes exactly one of recoveryWindowDays and count",
    )])
}

/// The cluster's name becomes pod, Service and DNS names (`<name>-headless`, `<name>-N`).
pub const NAME_RULE: &str =
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 50";
/// Its message.
pub const NAME_MESSAGE: &str = "metadata.name must be a DNS label of at most 50 characters (lower case letters, digits and '-'): it names pods, Services and DNS records";
