//! A whole HA cluster of real instance managers electing their primary through a file lease.

use std::path::PathBuf;
use std::time::Duration;

use super::{InstanceOptions, TestDir, TestInstance, free_port, wait_for};
use crate::lease::LeaseRecord;

/// Lease timing for tests, in seconds: (leaseDuration, renewDeadline, retryPeriod, fenceBudget).
pub type Timing = (f64, f64, f64, f64);

/// A fast profile that keeps tests short.
pub const FAST: Timing = (4.0, 2.5, 0.5, 1.0);

/// A cluster of `n` instances `pg-1..pg-n` sharing a lease file.
pub struct TestCluster {
    /// The root directory (lease file, secrets, one directory per instance).
    pub root: TestDir,
    /// The instances, in name order.
    pub instances: Vec<TestInstance>,
    /// The lease file.
    pub lease_path: PathBuf,
}

impl TestCluster {
    /// Writes the configurations and starts every instance.
    pub fn start(n: usize, timing: Timing) -> Self {
        Self::start_with(n, timing, |_| {})
    }

    /// Like [`start`](Self::start), letting `tweak` adjust each instance's options.
    pub fn start_with(n: usize, timing: Timing, tweak: impl Fn(&mut InstanceOptions)) -> Self {
        let root = TestDir::new();
        let lease_path = root.path().join("lease.json");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let mut members = String::from("members:\n");
        for (i, (pg, api)) in ports.iter().enumerate() {
            members.push_str(&format!(
                "  - {{name: pg-{}, host: 127.0.0.1, port: {pg}, api: 'http://127.0.0.1:{api}'}}\n",
                i + 1
            ));
        }
        let (d, r, p, f) = timing;
        let instances = ports
            .iter()
            .enumerate()
            .map(|(i, ports)| {
                let name = format!("pg-{}", i + 1);
                let fault = root.path().join(format!("{name}.fault.json"));
                let mut opts = InstanceOptions::primary(&name);
                opts.ports = Some(*ports);
                opts.extra_yaml = format!(
                    "lease:\n  backend: file\n  path: {}\n  leaseDurationSeconds: {d}\n  renewDeadlineSeconds: {r}\n  retryPeriodSeconds: {p}\n  fenceBudgetSeconds: {f}\n  faultFile: {}\n{members}",
                    lease_path.display(),
                    fault.display(),
                );
                tweak(&mut opts);
                TestInstance::start(root.path(), &opts)
            })
            .collect();
        Self { root, instances, lease_path }
    }

    /// The lease as stored in the file.
    pub fn lease(&self) -> Option<LeaseRecord> {
        #[derive(serde::Deserialize)]
        struct Stored {
            record: LeaseRecord,
        }
        let text = std::fs::read_to_string(&self.lease_path).ok()?;
        serde_json::from_str::<Stored>(&text).ok().map(|s| s.record)
    }

    /// The instance named `name`.
    pub fn get(&self, name: &str) -> &TestInstance {
        self.instances.iter().find(|i| i.name == name).expect("no such instance")
    }

    /// Mutable access to the instance named `name`.
    pub fn get_mut(&mut self, name: &str) -> &mut TestInstance {
        self.instances.iter_mut().find(|i| i.name == name).expect("no such instance")
    }

    /// Writes a fault for `name`'s lease store (see `lease::faulty`); `None` clears it.
    pub fn set_fault(&self, name: &str, fault: Option<&str>) {
        let file = self.root.path().join(format!("{name}.fault.json"));
        crate::paths::write_atomic(&file, fault.unwrap_or("").as_bytes(), 0o644).expect("write fault file");
    }

    /// Waits until exactly one instance answers `/primary` 200 and every other running
    /// instance among `among` is a ready replica; returns the primary's name.
    pub async fn wait_primary(&self, among: &[&str], timeout: Duration) -> String {
        wait_for("one primary and ready replicas", timeout, || async {
            let mut primaries = Vec::new();
            let mut not_ready = Vec::new();
            for inst in self.instances.iter().filter(|i| among.contains(&i.name.as_str())) {
                match inst.get("/primary").await {
                    Ok((200, _)) => primaries.push(inst.name.clone()),
                    _ => {
                        if !matches!(inst.get("/readyz").await, Ok((200, _))) {
                            not_ready.push(inst.name.clone());
                        }
                    }
                }
            }
            match (primaries.as_slice(), not_ready.is_empty()) {
                ([one], true) => Ok(one.clone()),
                _ => Err(format!("primaries {primaries:?}, not ready {not_ready:?}, lease {:?}", self.lease())),
            }
        })
        .await
    }

    /// Names of all instances.
    pub fn names(&self) -> Vec<String> {
        self.instances.iter().map(|i| i.name.clone()).collect()
    }
}
