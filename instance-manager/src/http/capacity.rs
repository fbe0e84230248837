//! The file descriptor budget: how many connections each listener may hold, so that a flood of
//! clients can never take the descriptors the lease, Postgres' children and pipes, the
//! archive and the backups need.
//!
//! At start the manager raises its soft `RLIMIT_NOFILE` to the hard limit ([`raise_nofile`]).
//! Of that limit [`RESERVED_FDS`] stay for everything but the listeners; the listeners share
//! the rest, each up to its default cap ([`Capacity::of`]), scaled down together when the
//! limit is small. With the usual limits (a container's 1,048,576, a shell's 1,024 raised to
//! its hard limit) every listener gets its default cap.

use super::server::Limits;

/// Descriptors kept back for everything that is not a listener's connection.
pub const RESERVED_FDS: u64 = 512;

/// Default caps: connections and concurrent requests per listener.
const API: (usize, usize) = (512, 64);
const MANAGER_SOCKET: (usize, usize) = (32, 16);
const WAL_SOCKET: (usize, usize) = (32, 16);
const METRICS: (usize, usize) = (32, 8);
/// No listener gets fewer connections than this, however small the limit.
const FLOOR: usize = 4;

/// The limits of every listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// The API on TCP (plain or TLS).
    pub api: Limits,
    /// `manager.sock`, the CLI's.
    pub manager_socket: Limits,
    /// `wal.sock`, Postgres' archive and restore commands'.
    pub wal_socket: Limits,
    /// The metrics port.
    pub metrics: Limits,
}

impl Capacity {
    /// The limits when the process may open `nofile` descriptors.
    pub fn of(nofile: u64) -> Self {
        let wanted = (API.0 + MANAGER_SOCKET.0 + WAL_SOCKET.0 + METRICS.0) as u64;
        let room = nofile.saturating_sub(RESERVED_FDS);
        let scale = |(conns, reqs): (usize, usize)| {
            let conns = if room >= wanted { conns } else { ((conns as u64 * room) / wanted) as usize };
            let conns = conns.max(FLOOR);
            Limits::new(conns, reqs.min(conns))
        };
        Self {
            api: scale(API),
            manager_socket: scale(MANAGER_SOCKET),
            wal_socket: scale(WAL_SOCKET),
            metrics: scale(METRICS),
        }
    }

    /// The limits under the soft `RLIMIT_NOFILE` in force now.
    pub fn current() -> Self {
        Self::of(nofile_soft().unwrap_or(1024))
    }
}

fn nofile_soft() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ok().map(|(soft, _)| soft)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (before, after). A failure is
/// logged and the soft limit stays: the listeners' caps shrink with it.
pub fn raise_nofile() -> (u64, u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return (0, 0) };
    if soft >= hard {
        return (soft, soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => (soft, hard),
        Err(e) => {
            tracing::warn!(error = %e, soft, hard, "cannot raise the open files limit; the API takes fewer connections");
            (soft, soft)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_limit_gives_every_listener_its_default() {
        let c = Capacity::of(1_048_576);
        assert_eq!((c.api.max_connections, c.api.max_requests), API);
        assert_eq!(c.manager_socket.max_connections, MANAGER_SOCKET.0);
        assert_eq!(c.metrics.max_requests, METRICS.1);
    }

    #[test]
    fn a_small_limit_shrinks_the_caps_and_keeps_the_reserve() {
        for nofile in [0u64, 64, 600, 1024, 1100] {
            let c = Capacity::of(nofile);
            let total =
                [c.api, c.manager_socket, c.wal_socket, c.metrics].iter().map(|l| l.max_connections).sum::<usize>();
            let room = nofile.saturating_sub(RESERVED_FDS) as usize;
            assert!(total <= room.max(4 * FLOOR), "{nofile}: {total} connections in a room of {room}");
            assert!(c.api.max_requests <= c.api.max_connections && c.api.max_connections >= FLOOR, "{nofile}: {c:?}");
        }
        assert!(Capacity::of(1024).api.max_connections > 300, "a raised shell limit still serves a few hundred");
    }
}
