#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! Test harness shared by the integration tests of both crates (feature `testkit`):
//! temporary directories Postgres may use, free ports, and [`TestInstance`] — a real
//! `instance-manager run` process with its own config, data, sockets and log file, killed
//! (with its Postgres) when dropped. For partition tests: [`TestNetwork`] (network namespaces
//! joined by a bridge, hosts that can be cut off) and [`FakeApiServer`] (an in-memory
//! Kubernetes API server for the `kubernetes` lease and routing backends, which can stall, fail
//! and reset connections on demand: [`Fault`]). For the images: [`ContainerCluster`], three
//! `pgwarden/postgres` containers as pods would run them, over the [`docker`] CLI.
//!
//! Tests run as root; the manager then runs Postgres as the OS user `postgres`, which must
//! exist (`.ci/run` creates it). Every wait here has a deadline and says what it saw.

mod api_faults;
mod api_serve;
mod cluster;
mod containers;
pub mod docker;
mod fake_apiserver;
mod instance;
mod netns;
mod ports;
mod procs;
mod s3;
mod tls;
mod writer;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use api_faults::{Fault, FaultId, FaultRequest, Verb, Verbs};
pub use cluster::{ClusterLease, DEFAULTS, FAST, TestCluster, Timing};
pub use containers::{ContainerCluster, IMAGE_UID, Member, STOP_GRACE};
pub use fake_apiserver::{FakeApiServer, loopback};
pub use instance::{InstanceOptions, TEST_PASSWORD, TestInstance};
pub use netns::{TestNetwork, in_netns, netns_available};
pub use s3::{
    S3Server, S3ServerConfig, S3ServerError, TEST_ACCESS_KEY, TEST_BUCKET, TEST_REGION, TEST_SECRET_KEY, TestS3,
    TestS3Options, TlsIdentity,
};
pub use tls::{CertKey, TestCa, TlsFiles, not_after_of, serial_of, served_serial};
pub use writer::{Ack, Writer};

/// A temporary directory that Postgres' OS user can traverse (mode 0755), removed on drop
/// unless `PGWARDEN_KEEP_TEST_DIRS` is set (to read the logs of a failed test).
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("PGWARDEN_KEEP_TEST_DIRS").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept test directory {}", self.dir.path().display());
        }
    }
}

impl TestDir {
    /// A new directory under /tmp.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("pgwarden-test-").tempdir_in("/tmp").expect("create temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        Self { dir }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

/// A TCP port on 127.0.0.1, free and reserved for this test process (see [`ports`]).
pub fn free_port() -> u16 {
    ports::reserve()
}

/// The `instance-manager` binary under test: `CARGO_BIN_EXE_instance-manager` when cargo
/// provides it, else the one next to the test executable.
pub fn manager_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CARGO_BIN_EXE_instance-manager") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("instance-manager")
}

/// Polls `check` every 100 ms until it returns `Ok`, or panics after `timeout` with the
/// last thing `check` reported.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a process exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    let exists = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok();
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false);
    exists && !zombie
}
