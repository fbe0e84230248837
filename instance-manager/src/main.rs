//! `instance-manager`: parses the command line, installs logging, dispatches.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use instance_manager::cli::{self, ApiClient, ApiTarget, Cli, Command, Output, RunArgs};
use instance_manager::config;
use instance_manager::instance::{self, ExitReason, Instance};
use instance_manager::tasks::Tasks;

/// How long the manager waits for its tasks to end once Postgres is stopped.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One process-wide TLS provider for every rustls user (the Kubernetes client).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match cli.command {
        Command::Deadman => ExitCode::from(u8::try_from(instance_manager::ha::deadman::deadman_main()).unwrap_or(1)),
        Command::ChildGuard => {
            ExitCode::from(u8::try_from(instance_manager::supervisor::guard::child_guard_main()).unwrap_or(1))
        }
        Command::Run(args) => runtime.block_on(run(args)),
        Command::Config { command } => ExitCode::from(cli::config_command(command)),
        command => {
            instance_manager::logging::init_cli();
            let tls = ClientTls { ca_file: cli.ca_file, cert: cli.cert, key: cli.key };
            match runtime.block_on(client_command(cli.api, cli.token_file, tls, command)) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn run(args: RunArgs) -> ExitCode {
    let overrides = args.overrides.resolve();
    let validated = match config::load(&args.config, &overrides) {
        Ok(v) => v,
        Err(e) => {
            instance_manager::logging::config_refused(&e);
            return ExitCode::from(2);
        }
    };
    instance_manager::logging::init_json();
    tracing::info!(name = %validated.name, cluster = %validated.cluster, version = env!("CARGO_PKG_VERSION"), "instance manager starting");
    // Room for the API's connection caps with descriptors to spare (http::capacity).
    let (before, after) = instance_manager::http::capacity::raise_nofile();
    tracing::info!(before, after, "open files limit");
    let inst = Arc::new(Instance::new(validated, args.config, overrides));
    // The run dir holds the API socket: it must exist before the API starts.
    match inst.config().os_user.ensure_run_dir(&inst.paths.run_dir, instance_manager::paths::RUN_DIR_MODE) {
        Ok(false) => {}
        Ok(true) => tracing::info!(
            dir = %inst.paths.run_dir.display(),
            "the run directory is a volume the manager does not own: used as it is (its sockets and files are private by their own modes)"
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot prepare the run directory");
            return ExitCode::from(3);
        }
    }
    // Every long-lived task is spawned through `tasks` and ends on its token (shut_down).
    let tasks = Tasks::new();
    if let Err(e) = instance_manager::http::serve(Arc::clone(&inst), &tasks).await {
        tracing::error!(error = %e, "cannot start the HTTP API");
        return ExitCode::from(3);
    }
    // A metrics port that cannot be bound is logged and retried: it never stops the manager.
    instance_manager::exporter::spawn(Arc::clone(&inst), &tasks);
    instance_manager::jobs::backups::spawn(Arc::clone(&inst), &tasks);
    let sup = match instance::prepare(&inst) {
        Ok(sup) => sup,
        Err(e) => {
            tracing::error!(error = %e, "instance manager failed");
            shut_down(&tasks).await;
            return ExitCode::from(3);
        }
    };
    // With a lease, the HA loop decides the role; the run loop carries it out.
    if inst.config().config.lease.is_some()
        && let Err(e) = instance_manager::ha::start(&sup, &inst, &tasks).await
    {
        tracing::error!(error = %e, "cannot start the HA loop");
        shut_down(&tasks).await;
        return ExitCode::from(3);
    }
    let ended = instance::run(inst, sup).await;
    shut_down(&tasks).await;
    match ended {
        Ok(ExitReason::Clean) => {
            tracing::info!("instance manager stopped cleanly");
            ExitCode::SUCCESS
        }
        Ok(ExitReason::Unclean(why)) => {
            tracing::warn!(reason = %why, "instance manager stopped; the stop was not clean");
            ExitCode::from(1)
        }
        Err(e) => {
            tracing::error!(error = %e, "instance manager failed");
            ExitCode::from(3)
        }
    }
}

/// Ends every task (Postgres is stopped by now) and says whether they all ended.
async fn shut_down(tasks: &Tasks) {
    let running = tasks.running().len();
    let left = tasks.shutdown(SHUTDOWN_GRACE).await;
    if left.is_empty() {
        tracing::info!(tasks = running, "every task ended");
    } else {
        tracing::warn!(tasks = ?left, grace_s = SHUTDOWN_GRACE.as_secs(), "tasks still running at exit");
    }
}

/// `--ca-file`, `--cert`, `--key`.
struct ClientTls {
    ca_file: Option<std::path::PathBuf>,
    cert: Option<std::path::PathBuf>,
    key: Option<std::path::PathBuf>,
}

async fn client_command(
    api: Option<String>,
    token_file: Option<std::path::PathBuf>,
    tls: ClientTls,
    command: Command,
) -> anyhow::Result<u8> {
    if let Command::Version = command {
        print_version();
        return Ok(0);
    }
    let target = match api {
        Some(url) => ApiTarget::parse(&url)?,
        None => ApiTarget::default_local(),
    };
    let mut client = ApiClient::new(target);
    if let Some(ca) = &tls.ca_file {
        let identity = tls.cert.as_deref().zip(tls.key.as_deref());
        client = client.with_tls_files(ca, identity)?;
    }
    let token = match &token_file {
        Some(f) => Some(instance_manager::osuser::read_secret(f).context("cannot read --token-file")?),
        None => None,
    };
    let token = token.as_ref().map(|t| t.expose());
    let (path, body) = match command {
        Command::Status { output } => return Ok(code_of(cli::status_command(&client, output == Output::Json).await?)),
        Command::Diagnose { output, data_dir } => {
            return Ok(code_of(cli::diagnose_command(&client, data_dir, output == Output::Json).await?));
        }
        Command::Switchover { to } => ("/switchover", serde_json::json!({ "target": to })),
        Command::Promote { force } => ("/promote", serde_json::json!({ "force": force })),
        Command::Fence => ("/fence", serde_json::json!({})),
        Command::Unfence => ("/unfence", serde_json::json!({})),
        Command::Pause => ("/pause", serde_json::json!({})),
        Command::Resume => ("/resume", serde_json::json!({})),
        Command::Backup { command } => return Ok(code_of(cli::backup_command(&client, token, command).await?)),
        Command::WalArchive { path } => return Ok(cli::wal_archive(&client, &path).await),
        Command::WalRestore { name, destination, strict } => {
            return Ok(cli::wal_restore(&client, &name, &destination, strict).await);
        }
        Command::Run(_) | Command::Config { .. } | Command::Version | Command::Deadman | Command::ChildGuard => {
            return Ok(0);
        }
    };
    // A switchover waits for a shutdown and a catch-up: allow it time.
    let client = client.with_timeout(std::time::Duration::from_secs(90));
    let answer: serde_json::Value = client.post_json(path, &body, token).await.context("command failed")?;
    println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
    Ok(0)
}

fn code_of(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(1)
}

fn print_version() {
    println!("instance-manager {}", env!("CARGO_PKG_VERSION"));
    // The CLI process is not the supervisor, so waiting for this child here is fine.
    match std::process::Command::new("postgres").arg("--version").output() {
        Ok(out) if out.status.success() => print!("{}", String::from_utf8_lossy(&out.stdout)),
        _ => println!("postgres: not found on PATH"),
    }
}
