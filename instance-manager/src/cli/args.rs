//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// pgwarden's instance manager: runs and supervises one PostgreSQL instance (as PID 1 of its
/// pod), and answers questions about it.
#[derive(Debug, Parser)]
#[command(name = "instance-manager", version, propagate_version = true)]
pub struct Cli {
    /// The instance manager to talk to: http://HOST:PORT, https://HOST:PORT (with --ca-file),
    /// or unix:///PATH/manager.sock. Default: the local manager's socket,
    /// unix://$PGWARDEN_RUN_DIR/manager.sock (PGWARDEN_RUN_DIR defaults to /run/pgwarden).
    #[arg(long, global = true, env = "PGWARDEN_API", value_name = "URL")]
    pub api: Option<String>,
    /// The CA (PEM) that signed the manager's API certificate: needed for https:// addresses.
    #[arg(long, global = true, env = "PGWARDEN_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for an API with api.tls.clientAuth: it authorises mutating
    /// commands like the bearer token. Needs --key.
    #[arg(long, global = true, env = "PGWARDEN_CERT_FILE", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, global = true, env = "PGWARDEN_KEY_FILE", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// File holding the bearer token for mutating commands over TCP (the manager's
    /// api.tokenFile). Not needed on the local socket.
    #[arg(long, global = true, env = "PGWARDEN_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the instance: bootstrap, start and supervise Postgres, serve the HTTP API.
    ///
    /// Exit codes: 0 Postgres stopped cleanly (smart or fast shutdown); 1 it needed an
    /// immediate shutdown or SIGKILL, or had crashed; 2 invalid configuration or arguments;
    /// 3 a fatal error (bootstrap failed, port in use). Signals: SIGTERM smart shutdown
    /// (escalating to fast after shutdown.smartTimeoutSeconds and to immediate after
    /// shutdown.stopTimeoutSeconds), SIGINT fast, SIGQUIT immediate; a second signal during
    /// a stop forces an immediate shutdown.
    Run(RunArgs),
    /// Show the instance's status: role, Postgres, timeline, LSNs, replication.
    Status {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Check the instance and say what is wrong and how to fix it. Exit code 1 if a check fails.
    Diagnose {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Data directory to check when the manager does not answer.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Planned handover: the primary stops, the target catches up and takes the lease.
    /// Run it against the primary.
    Switchover {
        /// The replica to hand over to (default: the best streaming replica).
        #[arg(long, value_name = "NAME")]
        to: Option<String>,
    },
    /// Promote this replica. Refused while a live primary holds the lease, unless --force
    /// (which waits until that primary must have fenced itself before promoting).
    Promote {
        /// Take the lease from a live primary.
        #[arg(long)]
        force: bool,
    },
    /// Stop Postgres and keep it stopped (a primary gives up its lease).
    Fence,
    /// Let a fenced instance run Postgres again.
    Unfence,
    /// Disable automatic failover on this instance (switchover and promote still work).
    Pause,
    /// Enable automatic failover again.
    Resume,
    /// Base backups to the backup store: take one, list the catalog, delete one.
    Backup {
        /// What to do.
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Postgres' archive_command: has the local manager archive one WAL file (`%p`).
    ///
    /// Exit codes: 0 archived (or already archived with the same content); 1 not archived
    /// (Postgres keeps the file and retries).
    WalArchive {
        /// The WAL file, relative to the data directory (`%p`).
        path: PathBuf,
    },
    /// Postgres' restore_command: has the local manager fetch one WAL file (`%f %p`).
    ///
    /// Exit codes: 0 restored; 1 not in the archive (or, on a streaming standby, the store
    /// failing); 255 the store failed during a recovery bootstrap (recovery stops rather than
    /// ending early).
    WalRestore {
        /// The WAL file name (`%f`).
        name: String,
        /// Where to write it (`%p`).
        destination: PathBuf,
        /// Recovery bootstrap: any failure stops recovery, an unreachable manager included.
        #[arg(long)]
        strict: bool,
    },
    /// Check an InstanceConfig file, or print it with every default filled in, without
    /// running anything (no manager needs to be up).
    Config {
        /// What to do.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the version of the instance manager and of the Postgres binaries on PATH.
    Version,
    /// Internal: the backstop process `run` starts to kill Postgres if the HA loop stalls.
    #[command(hide = true)]
    Deadman,
    /// Internal: the process `run` starts to kill its tools if the manager dies.
    #[command(hide = true)]
    ChildGuard,
}

/// `backup` subcommands.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a base backup of this instance. Without --wait it starts the backup and returns
    /// its id; `status` shows when it is done.
    Create {
        /// Wait until the backup is done and print it (a large database takes a while).
        #[arg(long)]
        wait: bool,
        /// Take it on this replica (refused on the primary; without it, refused on a replica).
        #[arg(long)]
        from_standby: bool,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// List the backups in the store, oldest first, with what retention does with each.
    List {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Delete a backup.
    Delete {
        /// The backup's id (see `backup list`).
        id: String,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate a configuration exactly as `run` does (file, then POD_NAME,
    /// POD_NAMESPACE and CLUSTER_NAME, then the flags), reading the machine but changing
    /// nothing: the bin dir, the OS user, the data dir's owner, the files it names.
    ///
    /// Exit codes: 0 valid (one line on stdout: the instance, its cluster and bin dir);
    /// 2 unreadable, unparsable or invalid (every problem on stderr, one line each, naming the
    /// field and the fix). Secrets are never printed: the configuration names files only.
    Check(ConfigArgs),
    /// Validate like `check`, then print the effective configuration: every default filled in,
    /// the overrides applied, name, cluster and binDir resolved. Exit code 2 when invalid.
    Print {
        /// The file and its overrides.
        #[command(flatten)]
        args: ConfigArgs,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = ConfigFormat::Yaml)]
        output: ConfigFormat,
    },
}

/// Arguments of `config check` and `config print`: the file and the overrides `run` takes.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The InstanceConfig YAML file (JSON is YAML too).
    #[arg(env = "PGWARDEN_CONFIG", value_name = "FILE", default_value = "/etc/pgwarden/instance.yaml")]
    pub file: PathBuf,
    /// The overrides, as `run` takes them.
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

/// The flags that override the configuration file (after the environment: `POD_NAME`,
/// `CLUSTER_NAME`), taken by `run` and `config check|print` alike.
#[derive(Debug, Clone, Args)]
pub struct OverrideArgs {
    /// Instance name (overrides POD_NAME and the file).
    #[arg(long)]
    pub name: Option<String>,
    /// Cluster name (overrides CLUSTER_NAME and the file).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Data directory (overrides the file).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl OverrideArgs {
    /// The environment's overrides, then these flags.
    pub fn resolve(&self) -> crate::config::Overrides {
        let flags = crate::config::Overrides {
            name: self.name.clone(),
            cluster: self.cluster.clone(),
            data_dir: self.data_dir.clone(),
            namespace: None,
        };
        crate::config::Overrides::from_env().then(flags)
    }
}

/// Formats of `config print`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigFormat {
    /// YAML, the configuration file's own format.
    Yaml,
    /// JSON for scripts.
    Json,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The InstanceConfig YAML file.
    #[arg(long, env = "PGWARDEN_CONFIG", value_name = "FILE", default_value = "/etc/pgwarden/instance.yaml")]
    pub config: PathBuf,
    /// The overrides of the file.
    #[command(flatten)]
    pub overrides: OverrideArgs,
}
