//! A real `instance-manager run` process for tests.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::api::InstanceStatus;
use crate::cli::{ApiClient, ApiTarget};

use super::{free_port, manager_binary, wait_for};

/// What to start.
#[derive(Debug, Clone)]
pub struct InstanceOptions {
    /// Instance name.
    pub name: String,
    /// `Some((host, port))` for a replica.
    pub primary: Option<(String, u16)>,
    /// Extra Postgres parameters.
    pub parameters: BTreeMap<String, String>,
    /// `shutdown.smartTimeoutSeconds`.
    pub smart_timeout: u64,
    /// `shutdown.stopTimeoutSeconds`.
    pub stop_timeout: u64,
    /// Fixed ports (Postgres, API) instead of free ones (clusters know each other's ports).
    pub ports: Option<(u16, u16)>,
    /// YAML appended to the generated configuration (lease, members, ...).
    pub extra_yaml: String,
    /// A command that runs the manager (e.g. `unshare --pid --fork --mount-proc`, or
    /// [`TestNetwork::exec_prefix`](super::TestNetwork::exec_prefix)).
    pub wrapper: Vec<String>,
    /// The address Postgres (`listenAddresses`) and the API (`api.listen`) bind.
    pub listen_address: String,
    /// Reach the API over the manager's Unix socket `<runDir>/manager.sock` rather than TCP
    /// (the test process cannot reach an instance in another network namespace over TCP).
    pub api_over_socket: bool,
    /// Environment variables of the manager (`KUBECONFIG`, `POD_IP`, ...).
    pub env: Vec<(String, String)>,
    /// TLS from these files for the API (`api.tls`, `clientAuth: optional`; the API URL
    /// becomes `https://`) and for Postgres (`postgres.tls`, so replicas stream with
    /// `sslmode=verify-full`).
    pub tls: Option<super::TlsFiles>,
    /// `postgres.requireTls`.
    pub require_tls: bool,
    /// YAML lines under `metrics:`, each indented by two spaces (`  queriesFile: /path\n`),
    /// after `listen` on a free port of its own (unless these lines set `listen`).
    pub metrics_yaml: String,
    /// `dataDir`, instead of `<root>/<name>/pgdata` (a data directory on a volume of its own).
    pub data_dir: Option<PathBuf>,
    /// `runDir`, instead of `<root>/<name>/run`.
    pub run_dir: Option<PathBuf>,
    /// `walDir` (absent: `pg_wal` inside the data directory). A relative path is taken under
    /// the instance's directory (`walvol/pg_wal`: `<root>/<name>/walvol/pg_wal`); its parent,
    /// the WAL volume's mount, is created.
    pub wal_dir: Option<PathBuf>,
    /// `cluster` (`test` unless a test needs two clusters side by side).
    pub cluster: String,
    /// `api.tokenFile`: the members' shared bearer token (`<root>/secrets/token`), which the
    /// mutating endpoints over TCP and failsafe need.
    pub api_token: bool,
}

impl InstanceOptions {
    /// A primary named `name`.
    pub fn primary(name: &str) -> Self {
        Self {
            name: name.into(),
            primary: None,
            parameters: BTreeMap::new(),
            smart_timeout: 5,
            stop_timeout: 10,
            ports: None,
            extra_yaml: String::new(),
            wrapper: Vec::new(),
            listen_address: "127.0.0.1".into(),
            api_over_socket: false,
            env: Vec::new(),
            tls: None,
            require_tls: false,
            metrics_yaml: String::new(),
            data_dir: None,
            run_dir: None,
            wal_dir: None,
            cluster: "test".into(),
            api_token: false,
        }
    }

    /// A replica of `primary`, with its TLS settings.
    pub fn replica_of(name: &str, primary: &TestInstance) -> Self {
        Self {
            primary: Some(("127.0.0.1".into(), primary.pg_port)),
            tls: primary.tls.clone(),
            require_tls: primary.require_tls,
            ..Self::primary(name)
        }
    }
}

/// A running instance manager, killed with its Postgres on drop.
pub struct TestInstance {
    /// Instance name.
    pub name: String,
    /// Its directory (config, data, run, log).
    pub dir: PathBuf,
    /// Postgres port.
    pub pg_port: u16,
    /// API base URL.
    pub api_url: String,
    /// Base URL of the metrics endpoint (`http://127.0.0.1:<port>`; `/metrics` is on it).
    pub metrics_url: String,
    /// The config file.
    pub config_path: PathBuf,
    /// Manager stdout+stderr.
    pub log_path: PathBuf,
    /// The TLS files of the instance (`api.tls`, `postgres.tls`).
    pub tls: Option<super::TlsFiles>,
    /// `postgres.requireTls`.
    pub require_tls: bool,
    data_dir: PathBuf,
    run_dir: PathBuf,
    wal_dir: Option<PathBuf>,
    child: Option<Child>,
    wrapper: Vec<String>,
    env: Vec<(String, String)>,
}

/// Password written to every secret file of test clusters.
pub const TEST_PASSWORD: &str = "test-secret-pw";

impl TestInstance {
    /// Writes the config for `opts` under `root/<name>` and starts the manager.
    pub fn start(root: &Path, opts: &InstanceOptions) -> Self {
        let dir = root.join(&opts.name);
        std::fs::create_dir_all(&dir).expect("create instance dir");
        let secrets = root.join("secrets");
        std::fs::create_dir_all(&secrets).expect("create secrets dir");
        for s in ["superuser", "app", "replication", "token"] {
            // Written once per cluster, atomically: running managers read these files.
            let file = secrets.join(s);
            if !file.exists() {
                crate::paths::write_atomic(&file, format!("{TEST_PASSWORD}\n").as_bytes(), 0o600)
                    .expect("write secret");
            }
        }
        let (pg_port, api_port) = opts.ports.unwrap_or_else(|| (free_port(), free_port()));
        // Every instance gets a metrics port of its own: tests run in parallel.
        let metrics_port = free_port();
        let data_dir = opts.data_dir.clone().unwrap_or_else(|| dir.join("pgdata"));
        let run_dir = opts.run_dir.clone().unwrap_or_else(|| dir.join("run"));
        let wal_dir = opts.wal_dir.as_ref().map(|w| dir.join(w));
        if let Some(mount) = wal_dir.as_deref().and_then(Path::parent) {
            std::fs::create_dir_all(mount).expect("create the WAL volume's directory");
        }
        let mut yaml = render_config(opts, (&data_dir, &run_dir), &secrets, (pg_port, api_port, metrics_port));
        if let Some(w) = &wal_dir {
            yaml.push_str(&format!("walDir: {}\n", w.display()));
        }
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, yaml).expect("write config");
        let api_url = if opts.api_over_socket {
            format!("unix://{}/manager.sock", run_dir.display())
        } else if opts.tls.is_some() {
            format!("https://{}:{api_port}", opts.listen_address)
        } else {
            format!("http://{}:{api_port}", opts.listen_address)
        };
        let mut inst = Self {
            name: opts.name.clone(),
            dir: dir.clone(),
            pg_port,
            api_url,
            metrics_url: format!("http://{}:{metrics_port}", opts.listen_address),
            config_path,
            log_path: dir.join("manager.log"),
            tls: opts.tls.clone(),
            require_tls: opts.require_tls,
            data_dir,
            run_dir,
            wal_dir,
            child: None,
            wrapper: opts.wrapper.clone(),
            env: opts.env.clone(),
        };
        inst.spawn();
        inst
    }

    /// An instance named `name` bootstrapped by `recovery` from the `file://` archive `store`
    /// of cluster `test`; `target` is YAML under `recovery:` (indented four spaces), or empty
    /// for the end of the archive.
    pub fn recovered(root: &Path, name: &str, store: &Path, target: &str) -> Self {
        let mut o = InstanceOptions::primary(name);
        o.extra_yaml = format!(
            "bootstrap:\n  recovery:\n    sourceCluster: test\n    store:\n      destination: file://{}\n{target}",
            store.display()
        );
        Self::start(root, &o)
    }

    /// Starts (again) the manager with the existing config.
    pub fn spawn(&mut self) {
        let log = File::options().create(true).append(true).open(&self.log_path).expect("open log");
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(manager_binary());
                c
            }
            None => Command::new(manager_binary()),
        };
        let child = cmd
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .env_remove("POD_NAME")
            .env_remove("CLUSTER_NAME")
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn instance-manager");
        self.child = Some(child);
    }

    /// The manager's pid.
    pub fn manager_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    /// `walDir`, when the instance has one.
    pub fn wal_dir(&self) -> Option<PathBuf> {
        self.wal_dir.clone()
    }

    /// The run directory (sockets).
    pub fn run_dir(&self) -> PathBuf {
        self.run_dir.clone()
    }

    /// An API client for this instance (verifying its certificate with the test CA).
    pub fn client(&self) -> ApiClient {
        let client = ApiClient::new(ApiTarget::parse(&self.api_url).expect("api url"));
        match &self.tls {
            Some(tls) => client.with_tls_files(&tls.ca_file, None).expect("the test CA"),
            None => client,
        }
    }

    /// `unix://<runDir>/manager.sock`: the local socket, where mutating endpoints need no token.
    pub fn socket_url(&self) -> String {
        format!("unix://{}/manager.sock", self.run_dir().display())
    }

    /// A client of the local socket, with a per-request deadline of `timeout`.
    pub fn socket_client(&self, timeout: Duration) -> ApiClient {
        ApiClient::new(ApiTarget::parse(&self.socket_url()).expect("socket url")).with_timeout(timeout)
    }

    /// Waits until Postgres reports `wal` (or a later file) archived in `pg_stat_archiver`.
    pub async fn wait_archived(&self, wal: &str, timeout: Duration) {
        wait_for(&format!("{wal} archived by {}", self.name), timeout, || async {
            let c = self.connect("postgres").await?;
            let row = c
                .query_one("SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver", &[])
                .await
                .map_err(|e| e.to_string())?;
            let last: String = row.get(0);
            let failed: i64 = row.get(1);
            if last.as_str() >= wal { Ok(()) } else { Err(format!("last archived {last:?}, {failed} failures")) }
        })
        .await;
    }

    /// Switches to a new WAL segment and waits until the one it left is archived; returns
    /// that segment's name.
    pub async fn switch_wal_and_wait_archived(&self, timeout: Duration) -> String {
        let c = self.connect("postgres").await.expect("connect");
        let wal: String =
            c.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[]).await.expect("current WAL").get(0);
        c.query_one("SELECT pg_switch_wal()", &[]).await.expect("switch WAL");
        self.wait_archived(&wal, timeout).await;
        wal
    }

    /// GET a path, returning the status code and body text (`Err` if unreachable).
    pub async fn get(&self, path: &str) -> Result<(u16, String), String> {
        self.client()
            .get_raw(path)
            .await
            .map(|(code, body)| (code, String::from_utf8_lossy(&body).into_owned()))
            .map_err(|e| e.to_string())
    }

    /// The `/status` document.
    pub async fn status(&self) -> Result<InstanceStatus, String> {
        self.client().get_json::<InstanceStatus>("/status").await.map_err(|e| e.to_string())
    }

    /// `GET /metrics`: the Prometheus text (`Err` if unreachable or not 200).
    pub async fn scrape(&self) -> Result<String, String> {
        let target = ApiTarget::parse(&self.metrics_url).map_err(|e| e.to_string())?;
        match ApiClient::new(target).get_raw("/metrics").await {
            Ok((200, body)) => Ok(String::from_utf8_lossy(&body).into_owned()),
            Ok((code, body)) => Err(format!("{code} {}", String::from_utf8_lossy(&body))),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        let what = format!("{} to be ready (log: {})", self.name, self.log_path.display());
        wait_for(&what, timeout, || async {
            self.check_alive()?;
            match self.get("/readyz").await {
                Ok((200, _)) => Ok(()),
                Ok((code, body)) => Err(format!("{code} {body}")),
                Err(e) => Err(e),
            }
        })
        .await
    }

    fn check_alive(&self) -> Result<(), String> {
        match self.manager_pid() {
            Some(pid) if super::pid_alive(pid) => Ok(()),
            _ => Err(format!("manager is not running; log tail:\n{}", self.log_tail(20))),
        }
    }

    /// The last `n` lines of the manager's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The whole manager log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A superuser connection over the Unix socket.
    pub async fn connect(&self, dbname: &str) -> Result<tokio_postgres::Client, String> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(self.run_dir()).port(self.pg_port).user("postgres").dbname(dbname);
        cfg.connect_timeout(Duration::from_secs(3));
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// The postmaster's pid from `postmaster.pid`.
    pub fn postgres_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Sends `sig` to the manager.
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = self.manager_pid() {
            let _ = kill(Pid::from_raw(pid as i32), sig);
        }
    }

    /// Waits for the manager to exit; returns its exit code (`None` if killed by a signal).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let what = format!("{} to exit", self.name);
        let child = self.child.as_mut().expect("manager was started");
        let status = wait_for(&what, timeout, || {
            let r =
                child.try_wait().map_err(|e| e.to_string()).and_then(|s| s.ok_or_else(|| "still running".to_string()));
            async move { r }
        })
        .await;
        self.child = None;
        status.code()
    }

    /// Kills the manager and everything it left running with SIGKILL: its Postgres (also one it
    /// was just starting, before `postmaster.pid` names it) and any tool working on the data
    /// directory or its siblings (staging directories, the WAL spool).
    pub fn kill_all(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(volume) = self.data_dir().parent() {
            super::procs::kill_processes_under(volume);
        }
    }
}

impl Drop for TestInstance {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn render_config(opts: &InstanceOptions, dirs: (&Path, &Path), secrets: &Path, ports: (u16, u16, u16)) -> String {
    let (data_dir, run_dir) = dirs;
    let (pg_port, api_port, metrics_port) = ports;
    let mut params = String::new();
    for (k, v) in &opts.parameters {
        params.push_str(&format!("    {k}: {v:?}\n"));
    }
    if params.is_empty() {
        params = "    shared_buffers: 16MB\n".into();
    }
    let (api_tls, pg_tls) = match &opts.tls {
        Some(t) => {
            let files = format!(
                "certFile: {}\n    keyFile: {}\n    caFile: {}\n",
                t.cert_file.display(),
                t.key_file.display(),
                t.ca_file.display()
            );
            (
                format!("  tls:\n    {files}    clientAuth: optional\n"),
                format!("  tls:\n    {files}  requireTls: {}\n", opts.require_tls),
            )
        }
        None => (String::new(), String::new()),
    };
    let api_tls =
        if opts.api_token { format!("  tokenFile: {}\n{api_tls}", secrets.join("token").display()) } else { api_tls };
    let role = match &opts.primary {
        Some((host, port)) => format!("role: replica\nprimary: {{host: {host}, port: {port}}}\n"),
        None if opts.extra_yaml.contains("lease:") => String::new(),
        None => "role: primary\n".into(),
    };
    format!(
        "name: {name}\ncluster: {cluster}\ndataDir: {data}\nrunDir: {run}\n{role}\
         postgres:\n  port: {pg_port}\n  listenAddresses: {listen}\n  parameters:\n{params}{pg_tls}\
         api:\n  listen: {listen}:{api_port}\n{api_tls}\
         metrics:\n{metrics_listen}{metrics}\
         credentials:\n  superuserPasswordFile: {s}/superuser\n  appPasswordFile: {s}/app\n  replicationPasswordFile: {s}/replication\n\
         shutdown:\n  smartTimeoutSeconds: {smart}\n  stopTimeoutSeconds: {stop}\n{extra}",
        extra = opts.extra_yaml,
        cluster = opts.cluster,
        metrics = opts.metrics_yaml,
        metrics_listen = if opts.metrics_yaml.contains("listen:") {
            String::new()
        } else {
            format!("  listen: {}:{metrics_port}\n", opts.listen_address)
        },
        listen = opts.listen_address,
        name = opts.name,
        data = data_dir.display(),
        run = run_dir.display(),
        s = secrets.display(),
        smart = opts.smart_timeout,
        stop = opts.stop_timeout,
    )
}
