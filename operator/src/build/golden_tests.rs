//! Golden manifests.
