//! A whole HA cluster of real instance managers electing their primary through a lease: a
//! file on loopback, or on a [`TestNetwork`] a file or a Kubernetes Lease of a [`FakeApiServer`].

use std::path::PathBuf;
use std::time::Duration;

use super::{FakeApiServer, InstanceOptions, TestDir, TestInstance, TestNetwork, free_port, wait_for};
use crate::lease::LeaseRecord;

/// Lease timing for tests, in seconds: (leaseDuration, renewDeadline, retryPeriod, fenceBudget).
pub type Timing = (f64, f64, f64, f64);

/// The configuration's defaults (`api::DEFAULT_*`): client-go's 15/10/2 s and a 2 s fence budget.
pub const DEFAULTS: Timing = (
    crate::api::DEFAULT_LEASE_DURATION.as_secs_f64(),
    crate::api::DEFAULT_RENEW_DEADLINE.as_secs_f64(),
    crate::api::DEFAULT_RETRY_PERIOD.as_secs_f64(),
    crate::api::DEFAULT_FENCE_BUDGET.as_secs_f64(),
);

/// A fast profile that keeps tests short.
pub const FAST: Timing = (4.0, 2.5, 0.5, 1.0);

/// Postgres' port on a [`TestNetwork`] host (each host has its own network namespace).
const NET_PG_PORT: u16 = 5432;
/// The API's port on a [`TestNetwork`] host.
const NET_API_PORT: u16 = 8008;

/// Where a cluster on a [`TestNetwork`] keeps its lease.
#[derive(Debug, Clone, Copy)]
pub enum ClusterLease<'a> {
    /// A lease file in the cluster's directory: the filesystem is shared by every namespace,
    /// so a cut host still reaches it.
    File,
    /// The Lease `test-primary` of a fake API server in the network's hub (`KUBECONFIG`,
    /// `POD_NAMESPACE`, `POD_IP` set for each instance): routing writes the EndpointSlice
    /// `test-rw` and labels the pods, which the caller creates with [`FakeApiServer::add_pod`].
    Kubernetes(&'a FakeApiServer),
}

/// One member: name, host (address), Postgres and API ports.
#[derive(Debug, Clone)]
struct Seat {
    name: String,
    host: String,
    ports: (u16, u16),
}

/// A cluster of `n` instances `pg-1..pg-n` sharing a lease.
pub struct TestCluster {
    /// The root directory (lease file, secrets, one directory per instance).
    pub root: TestDir,
    /// The instances, in name order.
    pub instances: Vec<TestInstance>,
    /// The lease file.
    pub lease_path: PathBuf,
    /// Every member ever started, in order (a removed one included: it may still run).
    seats: Vec<Seat>,
    timing: Timing,
    /// On a [`TestNetwork`]: members cannot be added ([`add_instance`](Self::add_instance) is
    /// for loopback clusters).
    on_network: bool,
}

impl TestCluster {
    /// Writes the configurations and starts every instance.
    pub fn start(n: usize, timing: Timing) -> Self {
        Self::start_with(n, timing, |_| {})
    }

    /// Like [`start`](Self::start), letting `tweak` adjust each instance's options.
    pub fn start_with(n: usize, timing: Timing, tweak: impl Fn(&mut InstanceOptions)) -> Self {
        let seats = (1..=n)
            .map(|i| Seat { name: format!("pg-{i}"), host: "127.0.0.1".into(), ports: (free_port(), free_port()) })
            .collect();
        Self::launch(seats, timing, false, |_, _| {}, tweak)
    }

    /// A cluster of `n` instances where `pg-k` runs in host `k`'s namespace of `net`, binds
    /// Postgres and its API to that host's address, and is reached by the test over its Unix
    /// sockets only. `tweak` adjusts each instance's options last.
    pub fn start_on_network(
        net: &TestNetwork,
        n: usize,
        timing: Timing,
        lease: ClusterLease<'_>,
        tweak: impl Fn(&mut InstanceOptions),
    ) -> Self {
        assert!(n <= net.hosts(), "{n} instances on a network of {} hosts", net.hosts());
        let seats = (1..=n)
            .map(|k| Seat {
                name: format!("pg-{k}"),
                host: net.host_ip(k).to_string(),
                ports: (NET_PG_PORT, NET_API_PORT),
            })
            .collect();
        let kubernetes = match lease {
            ClusterLease::File => None,
            ClusterLease::Kubernetes(api) => Some(api),
        };
        let place = |k: usize, opts: &mut InstanceOptions| {
            opts.wrapper = net.exec_prefix(k);
            opts.listen_address = net.host_ip(k).to_string();
            opts.api_over_socket = true;
            if let Some(api) = kubernetes {
                opts.env.extend([
                    ("KUBECONFIG".to_string(), api.kubeconfig().display().to_string()),
                    ("POD_NAMESPACE".to_string(), api.namespace().to_string()),
                    ("POD_IP".to_string(), net.host_ip(k).to_string()),
                ]);
            }
        };
        Self::launch(seats, timing, kubernetes.is_some(), place, tweak)
    }

    /// Writes the configurations of `seats` (the lease in a file, or with `kubernetes` a
    /// Kubernetes Lease) and starts every instance; `place` sets what depends on the seat's
    /// number (1-based), then `tweak` runs.
    fn launch(
        seats: Vec<Seat>,
        timing: Timing,
        kubernetes: bool,
        place: impl Fn(usize, &mut InstanceOptions),
        tweak: impl Fn(&mut InstanceOptions),
    ) -> Self {
        let root = TestDir::new();
        let lease_path = root.path().join("lease.json");
        let members = members_yaml(&seats, false);
        let instances = seats
            .iter()
            .enumerate()
            .map(|(i, seat)| {
                let mut opts = seat_options(root.path(), &lease_path, seat, timing, kubernetes, &members);
                place(i + 1, &mut opts);
                tweak(&mut opts);
                start_member(root.path(), opts)
            })
            .collect();
        let on_network = seats.iter().any(|s| s.host != "127.0.0.1");
        Self { root, instances, lease_path, seats, timing, on_network: on_network || kubernetes }
    }

    /// Starts a new instance `name` of this (loopback, file-lease) cluster, its configuration
    /// listing every member started so far and itself; `tweak` as for
    /// [`start_with`](Self::start_with). The others do not know it until their configuration
    /// lists it too ([`set_members`](Self::set_members)), as when an operator scales out.
    pub fn add_instance(&mut self, name: &str, tweak: impl Fn(&mut InstanceOptions)) -> &TestInstance {
        let seat = self.seat(name);
        let members = members_yaml(&self.seats, false);
        let mut opts = seat_options(self.root.path(), &self.lease_path, &seat, self.timing, false, &members);
        tweak(&mut opts);
        self.instances.push(start_member(self.root.path(), opts));
        self.instances.last().expect("just pushed")
    }

    /// The seat of `name`, given ports now if it has none yet (a member named in the
    /// configuration before its instance starts, as an operator names a pod it is about to create).
    fn seat(&mut self, name: &str) -> Seat {
        if let Some(s) = self.seats.iter().find(|s| s.name == name) {
            return s.clone();
        }
        assert!(!self.on_network, "new members are for loopback clusters with a lease file");
        let seat = Seat { name: name.into(), host: "127.0.0.1".into(), ports: (free_port(), free_port()) };
        self.seats.push(seat.clone());
        seat
    }

    /// Rewrites the `members` of every instance's configuration file to `names` (atomically,
    /// as Kubernetes swaps a mounted ConfigMap): the managers notice the edit and apply it. A
    /// name not started yet gets its ports now, for [`add_instance`](Self::add_instance).
    pub fn set_members(&mut self, names: &[&str]) {
        let instances: Vec<String> = self.instances.iter().map(|i| i.name.clone()).collect();
        for inst in instances {
            self.set_members_of(&inst, names);
        }
    }

    /// Rewrites the `members` of `instance`'s configuration file to `names`.
    pub fn set_members_of(&mut self, instance: &str, names: &[&str]) {
        let seats: Vec<Seat> = names.iter().map(|n| self.seat(n)).collect();
        let path = &self.get(instance).config_path;
        let text = std::fs::read_to_string(path).expect("read the configuration");
        let https = text.contains("api: 'https://");
        let begin = text.find("members:\n").expect("a members block");
        let block_end = text[begin..]
            .split_inclusive('\n')
            .skip(1)
            .take_while(|l| l.starts_with("  - "))
            .map(str::len)
            .sum::<usize>()
            + "members:\n".len();
        let edited = format!("{}{}{}", &text[..begin], members_yaml(&seats, https), &text[begin + block_end..]);
        crate::paths::write_atomic(path, edited.as_bytes(), 0o644).expect("write the configuration");
    }

    /// Deletes the lease file as a person would, but atomically with respect to the members'
    /// writes: under the file store's lock (`<path>.lock`). Without it, a renew that read the
    /// file just before the deletion renames its copy back over it (the same holder and term:
    /// safe, but the deletion is lost and a test of what follows it sees nothing happen).
    pub fn delete_lease(&self) {
        let mut lock = self.lease_path.clone().into_os_string();
        lock.push(".lock");
        let mut file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .expect("open the lease lock file");
        // Bounded: a member frozen (SIGSTOP) inside its locked section holds the lock for
        // good; after 2 s the file is deleted without it.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let _locked = loop {
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(locked) => break Some(locked),
                Err((back, _)) if std::time::Instant::now() < deadline => {
                    file = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => break None,
            }
        };
        std::fs::remove_file(&self.lease_path).expect("delete the lease file");
    }

    /// The lease as stored in the file (`None` with a Kubernetes lease: ask the API server).
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

    /// Waits until the lease publishes a synchronous standby set; returns it.
    pub async fn wait_sync_published(&self, timeout: Duration) -> Vec<String> {
        super::wait_for("a published synchronous standby", timeout, || async {
            match self.lease() {
                Some(l) if !l.sync_standbys.is_empty() => Ok(l.sync_standbys),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }

    /// Waits until every member's `/status` shows a published synchronous set (a replica that
    /// never read it cannot know who has every acknowledged commit).
    pub async fn wait_sync_read_by_all(&self, timeout: Duration) {
        super::wait_for("a synchronous standby set every member has read", timeout, || async {
            let mut seen = Vec::new();
            for inst in &self.instances {
                seen.push(inst.status().await?.lease.map(|l| l.sync_standbys).unwrap_or_default());
            }
            if seen.iter().all(|s| !s.is_empty()) { Ok(()) } else { Err(format!("{seen:?}")) }
        })
        .await
    }

    /// Names of all instances.
    pub fn names(&self) -> Vec<String> {
        self.instances.iter().map(|i| i.name.clone()).collect()
    }
}

/// The `members:` block listing `seats` (API over `https://` with `https`).
fn members_yaml(seats: &[Seat], https: bool) -> String {
    let scheme = if https { "https" } else { "http" };
    let mut members = String::from("members:\n");
    for s in seats {
        let (host, (pg, api)) = (&s.host, s.ports);
        members
            .push_str(&format!("  - {{name: {}, host: {host}, port: {pg}, api: '{scheme}://{host}:{api}'}}\n", s.name));
    }
    members
}

/// The options of `seat` in a cluster under `root` with the lease at `lease_path` (or with
/// `kubernetes` a Kubernetes Lease) and the `members` block.
fn seat_options(
    root: &std::path::Path,
    lease_path: &std::path::Path,
    seat: &Seat,
    timing: Timing,
    kubernetes: bool,
    members: &str,
) -> InstanceOptions {
    let (d, r, p, f) = timing;
    let fault = root.join(format!("{}.fault.json", seat.name));
    let backend = if kubernetes {
        "backend: kubernetes".to_string()
    } else {
        format!("backend: file\n  path: {}", lease_path.display())
    };
    let mut opts = InstanceOptions::primary(&seat.name);
    opts.ports = Some(seat.ports);
    opts.extra_yaml = format!(
        "lease:\n  {backend}\n  leaseDurationSeconds: {d}\n  renewDeadlineSeconds: {r}\n  retryPeriodSeconds: {p}\n  fenceBudgetSeconds: {f}\n  faultFile: {}\n{members}",
        fault.display(),
    );
    opts
}

/// Starts an instance with `opts`; members with `api.tls` are reached over HTTPS.
fn start_member(root: &std::path::Path, mut opts: InstanceOptions) -> TestInstance {
    if opts.tls.is_some() {
        opts.extra_yaml = opts.extra_yaml.replace("api: 'http://", "api: 'https://");
    }
    TestInstance::start(root, &opts)
}
