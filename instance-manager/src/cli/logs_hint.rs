//! Where a hint sends the reader for the manager's log: `kubectl logs POD` in a pod, the
//! manager's stdout (and `scripts/local-cluster logs NAME`) elsewhere.

/// The hint's words for "the manager's log", for where the CLI runs (a Kubernetes pod sets
/// `KUBERNETES_SERVICE_HOST`).
pub(crate) fn manager_log() -> &'static str {
    for_environment(std::env::var_os("KUBERNETES_SERVICE_HOST").is_some())
}

fn for_environment(in_pod: bool) -> &'static str {
    if in_pod { "kubectl logs POD" } else { "its stdout; for scripts/local-cluster: `scripts/local-cluster logs NAME`" }
}

#[cfg(test)]
mod tests {
    use super::for_environment;

    #[test]
    fn outside_a_pod_the_hint_does_not_say_kubectl() {
        assert_eq!(for_environment(true), "kubectl logs POD");
        assert!(!for_environment(false).contains("kubectl"));
        assert!(for_environment(false).contains("scripts/local-cluster logs NAME"));
    }
}
