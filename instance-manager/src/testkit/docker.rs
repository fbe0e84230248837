//! The Docker CLI, for the tests of pgwarden's images (`tests/containers.rs`): every call is
//! bounded in time and says what it ran when it fails, and what a test creates (a network,
//! containers) is removed when its handle drops.
//!
//! Tests skip where no engine answers ([`engine`]) or the image was not built
//! ([`image_or_skip`]); with `PGWARDEN_REQUIRE_IMAGES=1` (set by `.ci/run` after it built
//! them) a missing engine or image fails the test instead, so CI cannot skip them silently.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The image of the container tests: `PGWARDEN_TEST_IMAGE`, else `pgwarden/postgres:15`.
pub fn test_image() -> String {
    std::env::var("PGWARDEN_TEST_IMAGE").unwrap_or_else(|_| "pgwarden/postgres:15".into())
}

/// Runs `docker args…` with a deadline; its trimmed stdout, or what failed with its stderr.
pub fn docker(args: &[&str], timeout: Duration) -> Result<String, String> {
    let what = format!("docker {}", args.join(" "));
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: cannot run docker: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what}: no answer within {timeout:?}"));
            }
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
    let out = child.wait_with_output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!("{what}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// [`docker`] with a one-minute deadline.
pub fn dk(args: &[&str]) -> Result<String, String> {
    docker(args, Duration::from_secs(60))
}

fn required() -> bool {
    std::env::var("PGWARDEN_REQUIRE_IMAGES").is_ok_and(|v| v == "1")
}

/// Whether a Docker engine answers (`docker info` within 10 s).
pub fn engine() -> Result<(), String> {
    docker(&["info", "--format", "{{.ServerVersion}}"], Duration::from_secs(10)).map(drop)
}

/// The image to test, or `None` after printing why the test is skipped: no engine answers, or
/// the image is not built (`images/build`). Panics instead where `PGWARDEN_REQUIRE_IMAGES=1`.
pub fn image_or_skip() -> Option<String> {
    let image = test_image();
    let why = match engine() {
        Err(e) => format!("no Docker engine answers ({e})"),
        Ok(()) if dk(&["image", "inspect", "--format", "{{.Id}}", &image]).is_err() => {
            format!("the image {image} is not built (run images/build)")
        }
        Ok(()) => return Some(image),
    };
    assert!(!required(), "PGWARDEN_REQUIRE_IMAGES=1, but {why}");
    eprintln!("SKIP: {why}");
    None
}

/// A name no other test process uses at the same time: `pgw-<pid>-<n>`.
pub fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("pgw-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A user-defined bridge network, removed (with whatever is still attached) on drop.
pub struct Network {
    /// Its name.
    pub name: String,
    /// The host's address on it (where a server of the test listens for the containers).
    pub gateway: Ipv4Addr,
    subnet: Ipv4Addr,
}

impl Network {
    /// Creates a network on a free `/24` of 10.213.0.0/16 (containers get fixed addresses,
    /// which Docker allows only on a subnet given at creation): a random one, and the next
    /// while Docker answers that it overlaps another network's.
    pub fn create(name: &str) -> Result<Self, String> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let start = (std::process::id() as usize * 7 + nanos.subsec_nanos() as usize) % 256;
        let mut last = String::new();
        for i in 0..64 {
            let third = (start + i * 37) % 256;
            let (subnet, gateway) = (format!("10.213.{third}.0/24"), format!("10.213.{third}.1"));
            match dk(&["network", "create", "--driver", "bridge", "--subnet", &subnet, "--gateway", &gateway, name]) {
                Ok(_) => return Self::inspect(name),
                Err(e) if e.contains("overlap") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(format!("no free subnet for network {name}: {last}"))
    }

    fn inspect(name: &str) -> Result<Self, String> {
        let conf =
            dk(&["network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}", name])?;
        let mut parts = conf.split_whitespace();
        let subnet = parts.next().and_then(|s| s.split('/').next()).and_then(|s| s.parse().ok());
        let gateway = parts.next().and_then(|s| s.parse().ok());
        match (subnet, gateway) {
            (Some(subnet), Some(gateway)) => Ok(Self { name: name.into(), gateway, subnet }),
            _ => {
                let _ = dk(&["network", "rm", name]);
                Err(format!("network {name}: cannot read its subnet and gateway from {conf:?}"))
            }
        }
    }

    /// The `k`-th fixed address handed to a container (`.10 + k` of the subnet).
    pub fn host_ip(&self, k: usize) -> IpAddr {
        let base = u32::from(self.subnet);
        IpAddr::V4(Ipv4Addr::from(base + 10 + k as u32))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = dk(&["network", "rm", &self.name]);
    }
}

/// A container, removed (`docker rm -f`) on drop.
pub struct Container {
    /// Its name.
    pub name: String,
}

impl Container {
    /// `docker run -d --name <name> <args…>`.
    pub fn run(name: &str, args: &[String]) -> Result<Self, String> {
        let mut argv: Vec<&str> = vec!["run", "-d", "--name", name];
        argv.extend(args.iter().map(String::as_str));
        // A refused `run` may leave the container created: the handle removes it either way.
        let container = Self { name: name.into() };
        dk(&argv)?;
        Ok(container)
    }

    /// `docker <verb> <name>`: kill, start, pause, unpause.
    pub fn act(&self, verb: &str) -> Result<(), String> {
        dk(&[verb, &self.name]).map(drop)
    }

    /// `docker stop -t <grace> <name>`: SIGTERM, and SIGKILL after `grace` seconds. Answers
    /// how long it took.
    pub fn stop(&self, grace: u64) -> Result<Duration, String> {
        let started = Instant::now();
        docker(&["stop", "-t", &grace.to_string(), &self.name], Duration::from_secs(grace + 60))?;
        Ok(started.elapsed())
    }

    /// `docker inspect` of one Go template.
    pub fn inspect(&self, format: &str) -> Result<String, String> {
        dk(&["inspect", "--format", format, &self.name])
    }

    /// The exit code of a stopped container.
    pub fn exit_code(&self) -> Result<i32, String> {
        let s = self.inspect("{{.State.ExitCode}}")?;
        s.parse().map_err(|e| format!("{}: exit code {s:?}: {e}", self.name))
    }

    /// `docker exec <name> <args…>` (as the image's user).
    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut argv = vec!["exec", self.name.as_str()];
        argv.extend(args);
        dk(&argv)
    }

    /// The processes in the container as the host sees them: (pid, state, command) rows of
    /// `docker top`.
    pub fn processes(&self) -> Result<Vec<(u32, String, String)>, String> {
        let out = dk(&["top", &self.name, "-o", "pid,stat,args"])?;
        Ok(out
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let pid = f.next()?.parse().ok()?;
                let stat = f.next()?.to_string();
                Some((pid, stat, f.collect::<Vec<_>>().join(" ")))
            })
            .collect())
    }

    /// The container's output (the manager's JSON log), stdout and stderr together.
    pub fn logs(&self) -> String {
        let out = Command::new("docker").args(["logs", &self.name]).output();
        match out {
            Ok(o) => format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
            Err(e) => format!("(docker logs {}: {e})", self.name),
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = dk(&["rm", "-f", "-v", &self.name]);
    }
}
