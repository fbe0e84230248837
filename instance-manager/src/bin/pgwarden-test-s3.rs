//! `pgwarden-test-s3`: the test S3-compatible server ([`S3Server`]) as a process, for
//! benchmarks and manual runs. Prints one JSON line on stdout once it accepts connections:
//!
//! ```text
//! {"endpoint":"http://127.0.0.1:9000","bucket":"pgwarden-test","accessKey":"…","secretKey":"…"}
//! ```
//!
//! (with `"caFile"` too under TLS), then serves until SIGTERM or SIGINT.
//!
//! Under `--tls`, a client trusts the generated CA through
//! `object_store::ClientOptions::with_root_certificate`, or — with no code change, e.g. for
//! `instance-manager` in a benchmark — through `SSL_CERT_FILE=<caFile>` (object_store's
//! platform verifier then trusts that file instead of the system store).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Parser;
use instance_manager::testkit::{
    S3Server, S3ServerConfig, TEST_ACCESS_KEY, TEST_BUCKET, TEST_REGION, TEST_SECRET_KEY, TlsIdentity,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// An S3-compatible server over a directory (s3s + s3s-fs), SigV4 authentication required.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Directory holding the buckets (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// Address to listen on; port 0 picks a free one (the JSON line says which).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Bucket created at start.
    #[arg(long, default_value = TEST_BUCKET)]
    bucket: String,
    /// The only access key id accepted.
    #[arg(long, default_value = TEST_ACCESS_KEY, requires = "secret_key")]
    access_key: String,
    /// Its secret.
    #[arg(long, default_value = TEST_SECRET_KEY, requires = "access_key")]
    secret_key: String,
    /// Serve HTTPS with a generated CA and certificate for 127.0.0.1, ::1 and localhost.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    tls: bool,
    /// Serve HTTPS with this certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where to write the CA clients must trust under TLS [default: DIR.ca.pem, beside DIR].
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    // s3s logs every refused request (412, 403, 404) at ERROR: expected traffic in a
    // benchmark, so it is silent unless RUST_LOG asks.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,s3s=off"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("build the runtime")?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsIdentity::from_files(cert, key)?),
        _ if args.tls => Some(TlsIdentity::generate()?),
        _ => None,
    };
    let ca_file = match &tls {
        Some(tls) => {
            let path = args.ca_file.clone().unwrap_or_else(|| default_ca_file(&args.dir));
            std::fs::write(&path, &tls.ca_pem).with_context(|| format!("write the CA to {}", path.display()))?;
            Some(path)
        }
        None => None,
    };
    let config = S3ServerConfig {
        root: args.dir.clone(),
        bucket: args.bucket.clone(),
        access_key: args.access_key.clone(),
        secret_key: args.secret_key.clone(),
        tls,
    };
    let server = S3Server::new(&config)?;
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listen on {}", args.listen))?;
    let addr = listener.local_addr().context("read the listening address")?;

    let shutdown = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let token = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        token.cancel();
    });

    let scheme = if config.tls.is_some() { "https" } else { "http" };
    let mut ready = serde_json::json!({
        "endpoint": format!("{scheme}://{addr}"),
        "bucket": config.bucket,
        "region": TEST_REGION,
        "accessKey": config.access_key,
        "secretKey": config.secret_key,
    });
    if let Some(path) = ca_file {
        ready["caFile"] = serde_json::Value::String(path.display().to_string());
    }
    println!("{ready}");

    server.serve(listener, shutdown).await;
    Ok(())
}

/// `DIR.ca.pem` beside `DIR`, outside the store (whose root holds only buckets).
fn default_ca_file(dir: &Path) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "s3".into());
    dir.parent().unwrap_or(Path::new(".")).join(format!("{name}.ca.pem"))
}
