//! The backstop (architecture invariant 8, docs/architecture.md §4.5): a tiny separate process
//! that SIGKILLs Postgres when the HA loop stops renewing.
//!
//! A manager that is frozen (SIGSTOP, a stuck runtime, a blocked disk) cannot fence itself,
//! and a thread of it would be frozen too. So the manager starts `instance-manager deadman`
//! as a child and, after every successful renew while it is primary, writes
//! `arm <postmaster pid> <milliseconds>` to its stdin: "kill that process group unless you
//! hear from me again within this time". `disarm` stands it down (replica, fenced, stopped).
//! If the manager dies, stdin closes and an armed deadman still fires at its deadline. The
//! deadline is measured on `CLOCK_BOOTTIME`, and sized `renewDeadline + fenceBudget/2` from
//! the renew's send, so it fires before anyone else may acquire the lease.

use std::io::{BufRead, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::clock::BootInstant;
use crate::supervisor::{Child, Supervisor};

/// The manager's handle on its deadman.
pub struct Deadman {
    stdin: ChildStdin,
    _child: Child,
}

impl Deadman {
    /// Starts `<this executable> deadman`.
    pub fn spawn(sup: &Supervisor) -> Result<Self, crate::supervisor::Error> {
        let exe = std::env::current_exe().unwrap_or_else(|_| "instance-manager".into());
        let mut cmd = Command::new(exe);
        cmd.arg("deadman").stdin(Stdio::piped()).stdout(Stdio::inherit()).stderr(Stdio::inherit());
        let mut child = sup.spawn("deadman", &mut cmd)?;
        let stdin = child_stdin(&mut child);
        match stdin {
            Some(stdin) => Ok(Self { stdin, _child: child }),
            None => Err(crate::supervisor::Error::Exited("deadman")),
        }
    }

    /// Kill Postgres (`pid`'s process group) unless re-armed within `within`.
    pub fn arm(&mut self, pid: u32, within: Duration) {
        self.send(&format!("arm {pid} {}\n", within.as_millis()));
    }

    /// Stand down.
    pub fn disarm(&mut self) {
        self.send("disarm\n");
    }

    fn send(&mut self, line: &str) {
        if let Err(e) = self.stdin.write_all(line.as_bytes()).and_then(|()| self.stdin.flush()) {
            tracing::error!(error = %e, "cannot reach the deadman process");
        }
    }
}

fn child_stdin(child: &mut Child) -> Option<ChildStdin> {
    child.stdin.take()
}

/// One command from the manager.
#[derive(Debug, PartialEq, Eq)]
pub enum DeadmanCommand {
    /// Kill `pid`'s group unless re-armed within the duration.
    Arm(u32, Duration),
    /// Stand down.
    Disarm,
}

/// Parses one line of the protocol.
pub fn parse(line: &str) -> Option<DeadmanCommand> {
    let mut w = line.split_whitespace();
    match (w.next()?, w.next(), w.next()) {
        ("arm", Some(pid), Some(ms)) => {
            Some(DeadmanCommand::Arm(pid.parse().ok()?, Duration::from_millis(ms.parse().ok()?)))
        }
        ("disarm", None, None) => Some(DeadmanCommand::Disarm),
        _ => None,
    }
}

/// `instance-manager deadman`: reads commands from stdin until it closes; fires when armed and
/// not re-armed in time. Plain threads, no runtime: it must stay tiny and independent.
pub fn deadman_main() -> i32 {
    let (tx, rx) = mpsc::channel::<Option<DeadmanCommand>>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if let Some(c) = parse(&line) {
                let _ = tx.send(Some(c));
            }
        }
        let _ = tx.send(None);
    });
    let mut armed: Option<(u32, BootInstant)> = None;
    let mut open = true;
    loop {
        // Wake at least every 100 ms so that suspended time (BOOTTIME) is noticed promptly.
        let wait = match armed {
            Some((_, at)) => at.duration_since(BootInstant::now()).min(Duration::from_millis(100)),
            None if open => Duration::from_millis(500),
            None => return 0,
        };
        match if open {
            rx.recv_timeout(wait)
        } else {
            std::thread::sleep(wait);
            Err(mpsc::RecvTimeoutError::Timeout)
        } {
            Ok(Some(DeadmanCommand::Arm(pid, within))) => {
                armed = BootInstant::now().checked_add(within).map(|at| (pid, at))
            }
            Ok(Some(DeadmanCommand::Disarm)) => armed = None,
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some((pid, at)) = armed
            && BootInstant::now() >= at
        {
            fire(pid);
            armed = None;
        }
    }
}

fn fire(pid: u32) {
    let p = Pid::from_raw(pid as i32);
    let group = killpg(p, Signal::SIGKILL);
    let leader = kill(p, Signal::SIGKILL);
    let record = serde_json::json!({
        "timestamp": jiff::Timestamp::now().to_string(),
        "level": "ERROR",
        "logger": "deadman",
        "message": "the HA loop stopped renewing the lease: killed postgres",
        "pid": pid,
        "killed": group.is_ok() || leader.is_ok(),
    });
    println!("{record}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_protocol() {
        assert_eq!(parse("arm 123 4500"), Some(DeadmanCommand::Arm(123, Duration::from_millis(4500))));
        assert_eq!(parse("disarm"), Some(DeadmanCommand::Disarm));
        assert_eq!(parse("arm x 1"), None);
        assert_eq!(parse("bogus"), None);
    }
}
