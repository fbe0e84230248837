//! SIGTERM and SIGINT. The first starts a graceful shutdown (stop taking work, finish the
//! reconciles in flight, release the leader lease, exit 0); a second one forces the exit at
//! once, for an operator that is stuck or a person who does not want to wait.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The two stages of shutdown.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled by the first signal: shut down gracefully.
    pub graceful: CancellationToken,
    /// Cancelled by the second signal: exit now.
    pub forced: CancellationToken,
}

/// Installs the handlers (in the current tokio runtime) and returns the tokens they cancel.
pub fn on_signals() -> std::io::Result<Shutdown> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let shutdown = Shutdown::default();
    let tokens = shutdown.clone();
    tokio::spawn(async move {
        // Two signals at most: the first is graceful, the second forced.
        for stage in 0..2 {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            if stage == 0 {
                tracing::info!(
                    signal = name,
                    "shutting down: no new reconciles, finishing those in flight, \
                    then releasing the leader lease (a second signal exits at once)"
                );
                tokens.graceful.cancel();
            } else {
                tracing::warn!(signal = name, "second signal: exiting now");
                tokens.forced.cancel();
            }
        }
    });
    Ok(shutdown)
}
