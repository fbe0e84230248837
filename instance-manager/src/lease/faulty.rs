//! A [`LeaseStore`] wrapper that injects faults, for tests (docs/architecture.md §4.1). Compiled only with the
//! cargo feature `testkit` (and for unit tests): a production build has no fault injection, and
//! refuses a configuration that names `lease.faultFile`.
//!
//! Faults are set either in-process ([`FaultyStore::set`], [`FaultyStore::set_for`],
//! [`FaultyStore::once`], [`FaultyStore::clear`]) or, when the store lives in another process
//! (a manager started by a multi-process test), through a JSON *fault file* read on every call:
//!
//! ```json
//! {"fault": "hang"}
//! {"fault": "error", "message": "api server down"}            // Unavailable
//! {"fault": "error", "kind": "fatal", "message": "forbidden"}  // Fatal
//! {"fault": "delay", "ms": 500}
//! {"fault": "conflict"}
//! {"fault": "rate_limited", "retry_after_ms": 1000}
//! {"fault": "write_then_conflict", "ops": ["replace"]}
//! ```
//!
//! `ops` (any of `get`, `create`, `replace`) limits a fault to those operations. An absent or
//! empty file (or `{"fault": "none"}`) means no fault; an unreadable or malformed one makes the
//! call fail with [`LeaseError::Fatal`], so a broken test setup is loud. Write the file
//! atomically (write a temporary file, then rename). In-process rules take precedence over
//! the file.
//!
//! A hang lasts until the faults change: for in-process rules, any call of `set`, `set_for`,
//! `once` or `clear`; for the file, until it no longer says `hang` (polled every 50 ms). The
//! call then proceeds with whatever the faults say by then.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use super::{LeaseError, LeaseFuture, LeaseRecord, LeaseStore, Result, Version};

/// How often a call hung by the fault file re-reads it.
const FAULT_FILE_POLL: Duration = Duration::from_millis(50);

/// A lease operation, to aim a fault at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// [`LeaseStore::get`].
    Get,
    /// [`LeaseStore::create`].
    Create,
    /// [`LeaseStore::replace`].
    Replace,
}

impl Operation {
    fn index(self) -> usize {
        self as usize
    }
}

/// What goes wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Fail with this error without calling the inner store.
    Error(LeaseError),
    /// Wait this long, then call the inner store.
    Delay(Duration),
    /// Never answer until the faults change.
    Hang,
    /// Fail with [`LeaseError::Conflict`] without calling the inner store.
    Conflict,
    /// Fail with [`LeaseError::RateLimited`] without calling the inner store.
    RateLimited(Option<Duration>),
    /// Perform the write on the inner store, then answer [`LeaseError::Conflict`] whatever it
    /// said: the write landed but its answer was lost. Reads pass through.
    WriteThenConflict,
}

#[derive(Clone, Debug)]
struct Rule {
    only: Option<Operation>,
    fault: Fault,
    /// `Some(n)`: applies to the next `n` matching calls only.
    remaining: Option<u32>,
}

/// The fault chosen for one call, and where it came from.
struct Picked {
    fault: Fault,
    from_file: bool,
    /// [`Plan::generation`] when it was chosen.
    generation: u64,
}

#[derive(Debug, Default)]
struct Plan {
    rules: Vec<Rule>,
    /// Bumped by every explicit change (not by one-shot rules being used up): what a hang waits for.
    generation: u64,
}

/// Wraps a store and injects [`Fault`]s into its operations.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    plan: watch::Sender<Plan>,
    fault_file: Option<PathBuf>,
    calls: [AtomicU64; 3],
}

impl<S: LeaseStore> FaultyStore<S> {
    /// Wraps `inner` with no fault set.
    pub fn new(inner: S) -> Self {
        Self { inner, plan: watch::Sender::new(Plan::default()), fault_file: None, calls: Default::default() }
    }

    /// Also reads faults from `path` on every call (see the module docs).
    pub fn with_fault_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.fault_file = Some(path.into());
        self
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Applies `fault` to every operation until cleared (replacing all rules).
    pub fn set(&self, fault: Fault) {
        self.change(|rules| *rules = vec![Rule { only: None, fault, remaining: None }]);
    }

    /// Applies `fault` to `op` until cleared, replacing any earlier rule for `op` alone.
    pub fn set_for(&self, op: Operation, fault: Fault) {
        self.change(|rules| {
            rules.retain(|r| r.only != Some(op));
            rules.insert(0, Rule { only: Some(op), fault, remaining: None });
        });
    }

    /// Applies `fault` to the next call of `op` (of any operation if `None`), before any other rule.
    pub fn once(&self, op: Option<Operation>, fault: Fault) {
        self.change(|rules| rules.insert(0, Rule { only: op, fault, remaining: Some(1) }));
    }

    /// Removes every in-process rule (the fault file, if any, still applies).
    pub fn clear(&self) {
        self.change(Vec::clear);
    }

    /// How many calls of `op` were made, faulty or not.
    pub fn calls(&self, op: Operation) -> u64 {
        self.calls[op.index()].load(Ordering::SeqCst)
    }

    fn change(&self, f: impl FnOnce(&mut Vec<Rule>)) {
        self.plan.send_modify(|plan| {
            f(&mut plan.rules);
            plan.generation += 1;
        });
    }

    /// The fault for this call of `op`, using up a one-shot rule; then the fault file's.
    fn pick(&self, op: Operation) -> Result<Option<Picked>> {
        let mut picked = None;
        let mut generation = 0;
        self.plan.send_if_modified(|plan| {
            generation = plan.generation;
            let Some(i) = plan.rules.iter().position(|r| r.only.is_none_or(|o| o == op)) else { return false };
            let rule = &mut plan.rules[i];
            picked = Some(rule.fault.clone());
            match rule.remaining {
                Some(n) if n <= 1 => {
                    plan.rules.remove(i);
                }
                Some(n) => rule.remaining = Some(n - 1),
                None => {}
            }
            false
        });
        let from_file = picked.is_none();
        let fault = match picked {
            Some(fault) => Some(fault),
            None => self.file_fault(op)?,
        };
        Ok(fault.map(|fault| Picked { fault, from_file, generation }))
    }

    fn file_fault(&self, op: Operation) -> Result<Option<Fault>> {
        let Some(path) = &self.fault_file else { return Ok(None) };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fatal_file(path, &e)),
        };
        if text.trim().is_empty() {
            return Ok(None);
        }
        let spec: FileFault = serde_json::from_str(&text).map_err(|e| fatal_file(path, &e))?;
        Ok(spec.ops.is_none_or(|ops| ops.contains(&op)).then(|| spec.fault.into_fault()).flatten())
    }

    /// Waits until the faults that hung this call of `op` changed: any explicit change of the
    /// in-process rules, or, for a hang set by the fault file, the file no longer saying so.
    async fn hang(&self, op: Operation, picked: &Picked) -> Result<()> {
        let mut changes = self.plan.subscribe();
        loop {
            // Checked before waiting: a change between `pick` and `subscribe` is not missed.
            if changes.borrow_and_update().generation != picked.generation
                || (picked.from_file && self.file_fault(op)? != Some(Fault::Hang))
            {
                return Ok(());
            }
            if picked.from_file {
                // Changes arrive through the file too: poll it.
                tokio::select! {
                    _ = changes.changed() => {}
                    () = tokio::time::sleep(FAULT_FILE_POLL) => {}
                }
            } else if changes.changed().await.is_err() {
                // Unreachable: `self` holds the sender.
                return Ok(());
            }
        }
    }

    async fn run<'a, T>(&'a self, op: Operation, call: impl Fn() -> LeaseFuture<'a, T>) -> Result<T> {
        self.calls[op.index()].fetch_add(1, Ordering::SeqCst);
        // Bounded by the hangs: each pass but the last waited for a change of faults.
        loop {
            let Some(picked) = self.pick(op)? else { return call().await };
            match picked.fault {
                Fault::Hang => self.hang(op, &picked).await?,
                Fault::Error(e) => return Err(e),
                Fault::Delay(d) => {
                    tokio::time::sleep(d).await;
                    return call().await;
                }
                Fault::Conflict => return Err(LeaseError::Conflict),
                Fault::RateLimited(retry_after) => return Err(LeaseError::RateLimited { retry_after }),
                Fault::WriteThenConflict if op == Operation::Get => return call().await,
                Fault::WriteThenConflict => {
                    let _landed = call().await;
                    return Err(LeaseError::Conflict);
                }
            }
        }
    }
}

fn fatal_file(path: &std::path::Path, e: &dyn std::fmt::Display) -> LeaseError {
    LeaseError::Fatal {
        message: format!(
            "fault file {} is unreadable: {e}; hint: write it atomically as e.g. {{\"fault\":\"hang\"}}",
            path.display()
        ),
    }
}

impl<S: LeaseStore> LeaseStore for FaultyStore<S> {
    fn get(&self) -> LeaseFuture<'_, Option<(LeaseRecord, Version)>> {
        Box::pin(self.run(Operation::Get, || self.inner.get()))
    }

    fn create<'a>(&'a self, record: &'a LeaseRecord) -> LeaseFuture<'a, Version> {
        Box::pin(self.run(Operation::Create, move || self.inner.create(record)))
    }

    fn replace<'a>(&'a self, record: &'a LeaseRecord, expected: &'a Version) -> LeaseFuture<'a, Version> {
        Box::pin(self.run(Operation::Replace, move || self.inner.replace(record, expected)))
    }

    fn describe(&self) -> String {
        format!("{} (with fault injection)", self.inner.describe())
    }
}

/// The fault file's document.
#[derive(Deserialize)]
struct FileFault {
    #[serde(flatten)]
    fault: FileFaultKind,
    #[serde(default)]
    ops: Option<Vec<Operation>>,
}

#[derive(Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
enum FileFaultKind {
    None,
    Hang,
    Error {
        #[serde(default)]
        kind: ErrorKind,
        #[serde(default)]
        message: Option<String>,
    },
    Delay {
        ms: u64,
    },
    Conflict,
    RateLimited {
        #[serde(default)]
        retry_after_ms: Option<u64>,
    },
    WriteThenConflict,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ErrorKind {
    #[default]
    Unavailable,
    Fatal,
}

impl FileFaultKind {
    fn into_fault(self) -> Option<Fault> {
        Some(match self {
            Self::None => return None,
            Self::Hang => Fault::Hang,
            Self::Error { kind, message } => {
                let message = message.unwrap_or_else(|| "injected by the fault file".into());
                Fault::Error(match kind {
                    ErrorKind::Unavailable => LeaseError::Unavailable { message },
                    ErrorKind::Fatal => LeaseError::Fatal { message },
                })
            }
            Self::Delay { ms } => Fault::Delay(Duration::from_millis(ms)),
            Self::Conflict => Fault::Conflict,
            Self::RateLimited { retry_after_ms } => Fault::RateLimited(retry_after_ms.map(Duration::from_millis)),
            Self::WriteThenConflict => Fault::WriteThenConflict,
        })
    }
}

#[cfg(test)]
#[path = "faulty_tests.rs"]
mod tests;
