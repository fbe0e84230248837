//! `pgwarden-test-apiserver`: the testkit's fake Kubernetes API server ([`FakeApiServer`]) as
//! a process, for benchmarks and manual runs of the `kubernetes` lease backend. Prints one JSON
//! line on stdout once it accepts connections:
//!
//! ```text
//! {"url":"http://127.0.0.1:40123","kubeconfig":"/tmp/pgwarden-test-…/kubeconfig","namespace":"db"}
//! ```
//!
//! then serves until SIGTERM or SIGINT. Faults are laid and cleared over HTTP on the same port
//! (`POST /testkit/faults`, `DELETE /testkit/faults`; see `testkit::api_serve`), objects are read
//! and deleted through the ordinary API paths.

use anyhow::Context as _;
use clap::Parser;
use instance_manager::testkit::FakeApiServer;
use tokio::signal::unix::{SignalKind, signal};

/// An in-memory Kubernetes API server (Leases, EndpointSlices, Pods) that can misbehave on demand.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free one (the JSON line says which).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// The namespace of the kubeconfig's context.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Pods to create at start (the instances label their own pod), repeatable.
    #[arg(long = "pod")]
    pods: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("build the runtime")?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let server = FakeApiServer::start(args.listen, &args.namespace).map_err(anyhow::Error::msg)?;
    for pod in &args.pods {
        server.add_pod(pod);
    }
    let line = serde_json::json!({
        "url": server.url(),
        "kubeconfig": server.kubeconfig(),
        "namespace": server.namespace(),
    });
    println!("{line}");
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.context("wait for SIGINT")?,
    }
    Ok(())
}
