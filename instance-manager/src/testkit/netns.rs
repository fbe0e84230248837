//! Network partitions on one machine: Linux network namespaces joined by a bridge.
//!
//! # Layout
//!
//! A [`TestNetwork`] named `pgw<pid>-<k>` (unique per test process and network) is:
//!
//! ```text
//!   netns pgw<pid>-<k>-hub            netns pgw<pid>-<k>-n1 … -nN
//!   ┌───────────────────────────┐     ┌───────────────────────┐
//!   │ br0  10.a.b.254/24        │     │ eth0  10.a.b.1/24     │
//!   │  ├── v1 ──────────veth────┼─────┼─┘                     │
//!   │  ├── v2 …                 │     │ lo up                 │
//!   │  lo up                    │     └───────────────────────┘
//!   └───────────────────────────┘
//! ```
//!
//! Nothing is created in (or routed from) the root namespace: the test process cannot reach
//! the 10.a.b.0/24 addresses and talks to instances over their Unix sockets only. The subnet
//! is derived from the pid and counter so that logs of parallel tests are not ambiguous;
//! isolation itself does not depend on it, since each network has a bridge of its own.
//!
//! # A cut is a black hole
//!
//! [`cut`](TestNetwork::cut) sets the host's bridge port to `disabled` (STP port state 0):
//! the bridge silently drops every frame from and to it while both ends of the veth stay up.
//! Every host (and the hub) knows every other address through permanent neighbour entries, so
//! a cut never becomes a quick "host unreachable" once ARP gives up: as behind a switch that
//! drops everything, connects and retransmissions simply go unanswered until their timeouts.
//! (`tc netem loss 100%` would do the same but needs `sch_netem`, which kernels of small VMs
//! often lack; the bridge needs nothing beyond what veth and bridges need anyway.)
//!
//! Every command is checked; an error names the command and what it printed.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Networks created by this process so far (names and subnets).
static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// Prefix of every namespace the testkit creates: `pgw<pid>-…`.
const PREFIX: &str = "pgw";

/// Whether this machine can run partition tests: root, `ip netns` and `bridge` work, and the
/// kernel makes bridges and veth pairs (tried in a namespace of its own). The error says what
/// is missing; tests print it as "skipped: …" and return.
pub fn netns_available() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("network namespaces need root".into());
    }
    run("ip", &["-V"]).map_err(|e| format!("iproute2 is missing (apt-get install iproute2): {e}"))?;
    run("bridge", &["-V"]).map_err(|e| format!("the bridge tool of iproute2 is missing: {e}"))?;
    let probe = format!("{PREFIX}{}-probe{}", std::process::id(), NETWORKS.fetch_add(1, Ordering::Relaxed));
    run("ip", &["netns", "add", &probe])?;
    let tried = ip(&["-n", &probe, "link", "add", "br0", "type", "bridge"])
        .and_then(|_| ip(&["-n", &probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1"]));
    let deleted = delete_netns(&probe);
    tried.and(deleted)
}

/// Runs `program args…`; its stdout, or an error naming the command and what it printed.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let line = || format!("{program} {}", args.join(" "));
    let out = Command::new(program).args(args).output().map_err(|e| format!("cannot run `{}`: {e}", line()))?;
    if !out.status.success() {
        return Err(format!("`{}` failed ({}): {}", line(), out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `f` on a thread of its own that first enters the network namespace `netns`: sockets
/// it creates belong to that namespace for their whole life, wherever they are used later.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    let path = format!("/run/netns/{netns}");
    let file = std::fs::File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // Only this thread changes namespace; it ends with `f`.
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("cannot enter network namespace {netns}: {e}"))?;
            Ok(f())
        })
        .join()
        .map_err(|_| format!("the thread in network namespace {netns} panicked"))?
    })
}

/// A hub namespace with a bridge and `n` host namespaces plugged into it, all deleted (with
/// any process left inside) on drop.
pub struct TestNetwork {
    name: String,
    subnet: (u8, u8),
    hosts: usize,
    /// Namespaces created so far, deleted on drop (also after a failed construction).
    created: Vec<String>,
}

impl TestNetwork {
    /// Creates the hub and `hosts` host namespaces (numbered from 1). Namespaces left over by
    /// test processes that died are removed first.
    pub fn new(hosts: usize) -> Result<Self, String> {
        if hosts == 0 || hosts > 250 {
            return Err(format!("{hosts} hosts: a test network has 1 to 250"));
        }
        remove_leftovers();
        let pid = std::process::id();
        let k = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let n = pid.wrapping_mul(16).wrapping_add(k);
        let mut net =
            Self { name: format!("{PREFIX}{pid}-{k}"), subnet: ((n >> 8) as u8, n as u8), hosts, created: Vec::new() };
        net.build()?;
        Ok(net)
    }

    fn build(&mut self) -> Result<(), String> {
        let hub = self.hub();
        self.add_netns(&hub)?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "addr", "add", &format!("{}/24", self.hub_ip()), "dev", "br0"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for host in 1..=self.hosts {
            let ns = self.netns(host);
            let port = format!("v{host}");
            self.add_netns(&ns)?;
            ip(&["-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &port, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", self.host_ip(host)), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        // Permanent neighbours, read once every port is in the bridge (a bridge takes its MAC
        // from its ports).
        let mut macs = vec![(hub.clone(), "br0", self.hub_ip(), mac_of(&hub, "br0")?)];
        for host in 1..=self.hosts {
            let ns = self.netns(host);
            let mac = mac_of(&ns, "eth0")?;
            macs.push((ns, "eth0", self.host_ip(host), mac));
        }
        for (ns, dev, _, _) in &macs {
            for (other, _, addr, mac) in &macs {
                if other != ns {
                    let addr = addr.to_string();
                    ip(&["-n", ns, "neigh", "replace", &addr, "lladdr", mac, "dev", dev, "nud", "permanent"])?;
                }
            }
        }
        Ok(())
    }

    fn add_netns(&mut self, ns: &str) -> Result<(), String> {
        ip(&["netns", "add", ns])?;
        self.created.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// The hub namespace (bridge, and servers every host should reach).
    pub fn hub(&self) -> String {
        format!("{}-hub", self.name)
    }

    /// The bridge's address in the hub.
    pub fn hub_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet.0, self.subnet.1, 254)
    }

    /// The namespace of `host` (1-based).
    pub fn netns(&self, host: usize) -> String {
        assert!((1..=self.hosts).contains(&host), "host {host} is not in 1..={}", self.hosts);
        format!("{}-n{host}", self.name)
    }

    /// The address of `host` (1-based).
    pub fn host_ip(&self, host: usize) -> Ipv4Addr {
        assert!((1..=self.hosts).contains(&host), "host {host} is not in 1..={}", self.hosts);
        Ipv4Addr::new(10, self.subnet.0, self.subnet.1, host as u8)
    }

    /// How many hosts.
    pub fn hosts(&self) -> usize {
        self.hosts
    }

    /// A command prefix that runs a program in `host`'s namespace (for
    /// [`InstanceOptions::wrapper`](super::InstanceOptions::wrapper)). `ip netns exec` execs
    /// the program itself, so the pid of the spawned child is the program's.
    pub fn exec_prefix(&self, host: usize) -> Vec<String> {
        ["ip", "netns", "exec"].iter().map(|s| s.to_string()).chain([self.netns(host)]).collect()
    }

    /// Partitions `host` from every other host and from the hub: its frames are dropped
    /// silently in both directions.
    pub fn cut(&self, host: usize) -> Result<(), String> {
        self.set_port_state(host, "0")
    }

    /// Undoes [`cut`](Self::cut).
    pub fn heal(&self, host: usize) -> Result<(), String> {
        self.set_port_state(host, "3")
    }

    fn set_port_state(&self, host: usize, state: &str) -> Result<(), String> {
        let _ = self.netns(host);
        run("bridge", &["-n", &self.hub(), "link", "set", "dev", &format!("v{host}"), "state", state]).map(drop)
    }

    /// Whether a TCP connection from `host` to `to` is established within `timeout`: `Ok(false)`
    /// when it times out (a black hole), an error when it is refused or fails otherwise.
    pub fn can_connect(&self, host: usize, to: SocketAddr, timeout: Duration) -> Result<bool, String> {
        match in_netns(&self.netns(host), || TcpStream::connect_timeout(&to, timeout))? {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => Ok(false),
            Err(e) => Err(format!("connecting from host {host} to {to}: {e}")),
        }
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = delete_netns(ns) {
                eprintln!("test network cleanup: {e}");
            }
        }
    }
}

impl std::fmt::Debug for TestNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNetwork").field("name", &self.name).field("hub_ip", &self.hub_ip()).finish()
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

/// The MAC address of `dev` in `ns`.
fn mac_of(ns: &str, dev: &str) -> Result<String, String> {
    let out = ip(&["-n", ns, "-j", "link", "show", "dev", dev])?;
    let links: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("`ip -n {ns} -j link show dev {dev}`: {e}: {out}"))?;
    links[0]["address"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("`ip -n {ns} -j link show dev {dev}` printed no address: {out}"))
}

/// Kills every process in `ns`, then deletes it.
fn delete_netns(ns: &str) -> Result<(), String> {
    for pid in ip(&["netns", "pids", ns])?.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    ip(&["netns", "del", ns]).map(drop)
}

/// Deletes namespaces `pgw<pid>-…` whose test process is gone (a test killed by a timeout
/// cannot run its `Drop`).
fn remove_leftovers() {
    let Ok(list) = ip(&["netns", "list"]) else { return };
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let owner = ns.strip_prefix(PREFIX).and_then(|rest| rest.split('-').next()).and_then(|p| p.parse().ok());
        if let Some(pid) = owner
            && !super::pid_alive(pid)
            && let Err(e) = delete_netns(ns)
        {
            eprintln!("removing a leftover test namespace: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn a_cut_is_a_black_hole_and_heals() {
        if let Err(why) = netns_available() {
            eprintln!("skipped: {why}");
            return;
        }
        let net = TestNetwork::new(2).expect("create a test network");
        let listener = in_netns(&net.netns(2), || TcpListener::bind((net.host_ip(2), 0))).unwrap().unwrap();
        let to = listener.local_addr().unwrap();
        let hub = in_netns(&net.hub(), || TcpListener::bind((net.hub_ip(), 0))).unwrap().unwrap();
        let second = Duration::from_secs(1);
        assert_eq!(net.can_connect(1, to, second), Ok(true), "host 1 reaches host 2");
        assert_eq!(net.can_connect(1, hub.local_addr().unwrap(), second), Ok(true), "host 1 reaches the hub");

        net.cut(1).unwrap();
        assert_eq!(net.can_connect(1, to, second), Ok(false), "a cut host's connects hang");
        assert_eq!(net.can_connect(2, SocketAddr::from((net.host_ip(1), 9)), second), Ok(false), "both ways");
        assert_eq!(net.can_connect(1, hub.local_addr().unwrap(), second), Ok(false), "and to the hub");

        net.heal(1).unwrap();
        assert_eq!(net.can_connect(1, to, second), Ok(true), "healed");
        let refused = net.can_connect(1, SocketAddr::from((net.host_ip(2), 9)), second);
        assert!(refused.as_ref().is_err_and(|e| e.contains("refused")), "a closed port refuses: {refused:?}");

        let names = [net.hub(), net.netns(1), net.netns(2)];
        drop(net);
        let left = ip(&["netns", "list"]).unwrap();
        for n in names {
            assert!(!left.lines().any(|l| l.split_whitespace().next() == Some(n.as_str())), "{n} left behind");
        }
    }
}
