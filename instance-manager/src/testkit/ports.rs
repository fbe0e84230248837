//! Ports for test processes that run side by side (nextest runs every test in a process of
//! its own): a port handed out here is below the kernel's ephemeral range, so no outgoing
//! connection and no `bind(…:0)` of another process can take it, and it is reserved with a
//! lock file for as long as this process lives, so no other test process hands it out again.
//!
//! (A port taken from `bind(127.0.0.1:0)` and released is free only "a moment ago": once, in
//! CI, another test's primary came up on the API port a cluster member was about to bind,
//! and the cluster's health check saw two primaries.)

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};

/// Reservations held until the process exits (the kernel drops the locks then).
static HELD: Mutex<Vec<Flock<File>>> = Mutex::new(Vec::new());

/// The lowest port handed out.
const FLOOR: u16 = 10_000;

/// Where the lock files live: one directory per machine, shared by every test process.
fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("pgwarden-test-ports")
}

/// The first port of the kernel's ephemeral range (Linux: `ip_local_port_range`).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32_768)
}

/// A small pseudo-random sequence seeded by the process and the clock (no dependency needed
/// for picking ports).
fn candidates(n: usize, low: u16, high: u16) -> impl Iterator<Item = u16> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut x = (nanos as u64) ^ (u64::from(std::process::id()) << 32) | 1;
    let span = u64::from(high - low);
    (0..n).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        low + (x % span) as u16
    })
}

/// A TCP port on 127.0.0.1 that is free and reserved for this process.
pub fn reserve() -> u16 {
    let high = ephemeral_start();
    if high <= FLOOR + 1_000 {
        return ephemeral();
    }
    let dir = lock_dir();
    if std::fs::create_dir_all(&dir).is_err() {
        return ephemeral();
    }
    for port in candidates(2_000, FLOOR, high) {
        let Ok(file) = File::options().create(true).truncate(false).write(true).open(dir.join(format!("{port}.lock")))
        else {
            continue;
        };
        // Another process (or an earlier reservation of this one: flock is per open file)
        // holds it.
        let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else { continue };
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue; // in use by something that does not take part in the reservations
        }
        HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(lock);
        return port;
    }
    ephemeral()
}

/// The fallback where no range below the ephemeral one is available.
fn ephemeral() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| super::reserve()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice: {ports:?}");
        let start = super::ephemeral_start();
        assert!(ports.iter().all(|p| *p < start), "{ports:?} reach into the ephemeral range from {start}");
        for p in ports {
            std::net::TcpListener::bind(("127.0.0.1", p)).expect("a reserved port binds");
        }
    }
}
