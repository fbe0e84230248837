//! `operator`: parses the command line, installs logging and the TLS provider, runs the
//! operator until a signal (see `pgwarden_operator::controller`).

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use pgwarden_operator::controller::leader::{self, DEFAULT_LEASE_NAME, LeaseSettings, Timings};
use pgwarden_operator::controller::{Operator, Settings, signals};
use pgwarden_operator::logging::{self, LogFormat};

/// pgwarden's Kubernetes operator: turns PostgresCluster resources into pods, PVCs, Services,
/// Secrets and RBAC, and reports their status. High availability does not depend on it: the
/// instances elect their primary themselves.
#[derive(Debug, Parser)]
#[command(name = "operator", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

const EXIT_CODES: &str = "\
Without a command, `operator` runs as `operator run` (the container's default).

Exit codes: 0 stopped on SIGTERM/SIGINT; 1 failed (the error is logged); 2 bad command line;
3 lost the leader lease (Kubernetes restarts the pod as a standby).";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator: compete for the leader lease, and reconcile PostgresClusters and
    /// PostgresBackups while leading. Serves /healthz, /readyz and /metrics. SIGTERM drains
    /// and releases the lease.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions (PostgresCluster, PostgresBackup) as YAML
    /// (operator/deploy/crd.yaml).
    Crd,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Reconcile only the PostgresClusters and PostgresBackups of this namespace. Unset or
    /// empty: every namespace.
    #[arg(long, env = "WATCH_NAMESPACE", value_name = "NS", value_parser = parse_namespace)]
    namespace: Option<String>,

    /// Address of the HTTP endpoints (/healthz, /readyz, /metrics).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080", value_parser = parse_listen)]
    listen: SocketAddr,

    /// Name of the coordination.k8s.io Lease the operator's replicas elect their leader with.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_LEASE_NAME, value_parser = parse_lease_name)]
    leader_lease: String,

    /// Namespace of the leader Lease: the operator's own. Default: the namespace of the
    /// ServiceAccount in a pod (or of the kubeconfig context outside one).
    #[arg(long, env = "POD_NAMESPACE", value_name = "NS", value_parser = parse_namespace)]
    leader_namespace: Option<String>,

    /// Log format on stderr: json (one object per line) or text.
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "json")]
    log_format: LogFormat,

    /// Log filter, RUST_LOG syntax: a level (error, warn, info, debug, trace) or directives such
    /// as info,kube_runtime=debug.
    #[arg(long, env = "RUST_LOG", value_name = "FILTER", default_value = logging::DEFAULT_LEVEL,
        value_parser = logging::parse_filter)]
    log_level: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Crd) => return print_crd(),
        Some(Command::Run(args)) => args,
        // No command: `run` with its defaults and the environment (the container's entrypoint
        // is the bare binary). Its flags belong to `run` alone, so that `operator crd` never
        // fails on a `run` setting in the environment.
        None => match Cli::parse_from(["operator", "run"]).command {
            Some(Command::Run(args)) => args,
            _ => return ExitCode::from(2),
        },
    };
    logging::init(args.log_format, &args.log_level);
    // One process-wide TLS provider for every rustls user (the Kubernetes client).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(1);
        }
    };
    ExitCode::from(runtime.block_on(run(args)))
}

/// `operator crd`: the CRDs on stdout. A closed pipe (`operator crd | head`) is not an error.
fn print_crd() -> ExitCode {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(pgwarden_operator::crd::crd_yaml().as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the CRD to stdout: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: RunArgs) -> u8 {
    let shutdown = match signals::on_signals() {
        Ok(shutdown) => shutdown,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGTERM/SIGINT handlers");
            return 1;
        }
    };
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot configure the Kubernetes client; hint: in a pod, mount the \
                ServiceAccount token (automountServiceAccountToken: true); outside one, set KUBECONFIG");
            return 1;
        }
    };
    let namespace = non_empty(args.namespace);
    let lease = LeaseSettings {
        name: args.leader_lease,
        namespace: non_empty(args.leader_namespace).unwrap_or_else(|| client.default_namespace().to_owned()),
        identity: identity(),
        timings: Timings::default(),
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), listen = %args.listen,
        namespace = namespace.as_deref().unwrap_or("(all)"), lease = %format!("{}/{}", lease.namespace, lease.name),
        identity = %lease.identity, "pgwarden operator starting");
    let settings = Settings { namespace, lease };
    let operator = match Operator::bind(args.listen, settings).await {
        Ok(operator) => operator,
        Err(e) => {
            tracing::error!(error = %e, listen = %args.listen,
                "cannot listen (--listen); fix: choose a free address, e.g. --listen 0.0.0.0:8081");
            return 1;
        }
    };
    tokio::select! {
        exit = operator.run(client, shutdown.graceful.clone()) => exit.code(),
        () = shutdown.forced.cancelled() => 1,
    }
}

/// An empty flag or variable is an unset one.
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// `POD_NAME`, or the host name with a random suffix.
fn identity() -> String {
    let pod = std::env::var("POD_NAME").ok();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().or_else(|| std::env::var("HOSTNAME").ok());
    // Without randomness the suffix is the process id: unique on the host, which is enough.
    let random = getrandom::u32().unwrap_or_else(|_| std::process::id());
    leader::identity(pod.as_deref(), host.as_deref(), random)
}

/// A namespace name (RFC 1123 label); empty means none.
fn parse_namespace(value: &str) -> Result<String, String> {
    if value.is_empty() || is_dns_label(value) {
        return Ok(value.to_owned());
    }
    Err("not a namespace name; use lower-case letters, digits and '-', at most 63, starting and ending \
         with a letter or digit (e.g. pgwarden-system)"
        .into())
}

/// A Lease name (RFC 1123 subdomain).
fn parse_lease_name(value: &str) -> Result<String, String> {
    if value.len() <= 253 && !value.is_empty() && value.split('.').all(is_dns_label) {
        return Ok(value.to_owned());
    }
    Err("not a Lease name; use lower-case letters, digits, '-' and '.', such as pgwarden-operator".into())
}

fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=63).contains(&bytes.len())
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes.iter().all(|b| edge(b) || *b == b'-')
}

/// `HOST:PORT`.
fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        format!("{value:?} is not an IP address and port; use HOST:PORT such as 0.0.0.0:8080 or [::]:8080")
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["operator", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.command {
            Some(Command::Run(args)) => Ok(args),
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_every_flag() {
        let args = run_args(&[
            "--namespace=db",
            "--listen=127.0.0.1:9090",
            "--leader-lease=my-lease",
            "--leader-namespace=ops",
            "--log-format=text",
            "--log-level=debug,kube=info",
        ])
        .unwrap();
        assert_eq!(args.namespace.as_deref(), Some("db"));
        assert_eq!(args.listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!((args.leader_lease.as_str(), args.leader_namespace.as_deref()), ("my-lease", Some("ops")));
        assert_eq!((args.log_format, args.log_level.as_str()), (LogFormat::Text, "debug,kube=info"));
    }

    #[test]
    fn bad_values_name_the_flag_and_the_fix() {
        for (args, flag, fix) in [
            (["--listen=8080"], "--listen", "HOST:PORT such as 0.0.0.0:8080"),
            (["--namespace=Prod_DB"], "--namespace", "lower-case letters"),
            (["--leader-lease=-x"], "--leader-lease", "such as pgwarden-operator"),
            (["--log-level=info,kube=loud"], "--log-level", "use a level"),
            (["--log-format=yaml"], "--log-format", "json"),
        ] {
            let err = run_args(&args).expect_err("refused").to_string();
            assert!(err.contains(flag) && err.contains(fix), "{args:?}: {err}");
        }
    }

    #[test]
    fn identity_is_the_pod_name_or_the_host_with_a_suffix() {
        assert_eq!(leader::identity(Some("pgwarden-operator-7d9f-x2k"), Some("node"), 7), "pgwarden-operator-7d9f-x2k");
        assert_eq!(leader::identity(None, Some("laptop\n"), 0xabc), "laptop-00000abc");
        assert_eq!(leader::identity(Some(""), None, 1), "operator-00000001");
    }

    #[test]
    fn names_follow_kubernetes_rules() {
        assert!(is_dns_label("pgwarden-system") && is_dns_label("a") && is_dns_label("a1"));
        assert!(!is_dns_label("-a") && !is_dns_label("a-") && !is_dns_label("A") && !is_dns_label(""));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(parse_lease_name("leases.pgwarden.io").is_ok() && parse_lease_name("a..b").is_err());
        assert_eq!(parse_namespace("").as_deref(), Ok(""));
    }
}
