//! A whole HA cluster of `pgwarden/postgres` containers, as a pod would run them: the instance
//! manager PID 1 of each, `--read-only`, `--user 26:26`, `--cap-drop ALL`, no new privileges;
//! its data directory a subdirectory of a volume owned by root and group 26 (mode 2775, as
//! Kubernetes mounts a volume for `fsGroup: 26`), its run directory a tmpfs owned by root (mode
//! 2777, as an `emptyDir`). The members elect their primary through the Kubernetes Lease of a
//! [`FakeApiServer`] that listens on the network's gateway: a container cut off the network is
//! cut off the API server too, as a pod cut off its node's network would be. (A file lease on a
//! shared volume would stay reachable from a disconnected container, which would then never
//! fence.) Every member has a fixed address on the network; the test reaches Postgres and the
//! API over TCP at those addresses.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::PathBuf;
use std::time::Duration;

use super::docker::{Container, Network, unique_name};
use super::{FakeApiServer, TEST_PASSWORD, TestDir, Timing, free_port, wait_for};
use crate::api::InstanceStatus;
use crate::cli::{ApiClient, ApiTarget};

/// Postgres' user and group in the image.
pub const IMAGE_UID: u32 = 26;
/// The grace period of `docker stop` and of the managers' own shutdown budget, in seconds.
pub const STOP_GRACE: u64 = 30;
const PG_PORT: u16 = 5432;
const API_PORT: u16 = 8000;

/// One member: its container (absent while removed) and its fixed address.
pub struct Member {
    /// `pg-k`.
    pub name: String,
    /// Its address on the network.
    pub ip: IpAddr,
    /// The container.
    pub container: Container,
}

/// A cluster of `n` containers `pg-1..pg-n`; everything is removed on drop.
pub struct ContainerCluster {
    /// The members, in name order.
    pub members: Vec<Member>,
    /// The API server holding the Lease `test-primary`.
    pub api: FakeApiServer,
    /// The network (dropped after the containers: fields drop in order).
    pub network: Network,
    /// Configurations, secrets and the data volumes.
    pub root: TestDir,
}

impl ContainerCluster {
    /// Starts `n` members of `image` with lease `timing`; `extra_yaml` is appended to every
    /// configuration (e.g. `synchronous: {number: 1}`).
    pub fn start(image: &str, n: usize, timing: Timing, extra_yaml: &str) -> Result<Self, String> {
        let prefix = unique_name();
        let network = Network::create(&prefix)?;
        let api = FakeApiServer::start(SocketAddr::new(IpAddr::V4(network.gateway), free_port()), "default")?;
        let root = TestDir::new();
        let secrets = root.path().join("secrets");
        private_dir(&secrets, 0o700)?;
        for s in ["superuser", "app", "replication", "token"] {
            let file = secrets.join(s);
            std::fs::write(&file, format!("{TEST_PASSWORD}\n")).map_err(|e| e.to_string())?;
            give(&file, 0o600)?;
        }
        let ips: Vec<IpAddr> = (1..=n).map(|k| network.host_ip(k)).collect();
        let config = render(&ips, timing, extra_yaml);
        let config_path = root.path().join("instance.yaml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let mut members = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let name = format!("pg-{}", i + 1);
            api.add_pod(&name);
            let volume = root.path().join(format!("volume-{name}"));
            std::fs::create_dir(&volume).map_err(|e| e.to_string())?;
            chown(&volume, Some(0), Some(IMAGE_UID)).map_err(|e| e.to_string())?;
            std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o2775)).map_err(|e| e.to_string())?;
            let args = run_args(image, &network, &name, *ip, &volume, &config_path, &secrets, &api.kubeconfig());
            let container = Container::run(&format!("{prefix}-{name}"), &args)?;
            members.push(Member { name, ip: *ip, container });
        }
        Ok(Self { members, api, network, root })
    }

    /// The member `name`.
    pub fn get(&self, name: &str) -> &Member {
        self.members.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("no member {name}"))
    }

    /// The names of the members.
    pub fn names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    /// Waits until exactly one of `among` reports itself primary and every other member of
    /// `among` answers; its name.
    pub async fn wait_primary(&self, among: &[&str], timeout: Duration) -> String {
        wait_for(&format!("one primary among {among:?}"), timeout, || async {
            let mut primaries = Vec::new();
            for name in among {
                let st = self.get(name).status().await.map_err(|e| format!("{name}: {e}"))?;
                if st.role == "primary" && st.postgres.accepting_connections {
                    primaries.push(name.to_string());
                }
            }
            match primaries.as_slice() {
                [one] => Ok(one.clone()),
                _ => Err(format!("primaries {primaries:?}")),
            }
        })
        .await
    }

    /// Every member's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for m in &self.members {
            let log = m.container.logs();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            s.push_str(&format!("\n--- {} ---\n", m.name));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

impl Member {
    /// A client of its API over TCP.
    pub fn client(&self) -> ApiClient {
        let url = format!("http://{}:{API_PORT}", self.ip);
        ApiClient::new(ApiTarget::parse(&url).expect("api url")).with_timeout(Duration::from_secs(2))
    }

    /// Its `/status`.
    pub async fn status(&self) -> Result<InstanceStatus, String> {
        self.client().get_json("/status").await.map_err(|e| e.message())
    }

    /// A connection to its Postgres as `postgres` over TCP.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, String> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.hostaddr(self.ip)
            .port(PG_PORT)
            .user("postgres")
            .password(TEST_PASSWORD)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(2));
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(|e| format!("{}: {e}", self.name))?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// Postgres' port.
    pub fn pg_port(&self) -> u16 {
        PG_PORT
    }
}

/// A directory of the test, given to the image's user with `mode`.
fn private_dir(dir: &PathBuf, mode: u32) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    give(dir, mode)
}

fn give(path: &PathBuf, mode: u32) -> Result<(), String> {
    chown(path, Some(IMAGE_UID), Some(IMAGE_UID)).map_err(|e| format!("chown {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}

#[allow(clippy::too_many_arguments)]
fn run_args(
    image: &str,
    network: &Network,
    name: &str,
    ip: IpAddr,
    volume: &std::path::Path,
    config: &std::path::Path,
    secrets: &std::path::Path,
    kubeconfig: &std::path::Path,
) -> Vec<String> {
    let mount = |src: &std::path::Path, dst: &str, ro: bool| {
        format!("type=bind,source={},target={dst}{}", src.display(), if ro { ",readonly" } else { "" })
    };
    [
        "--network",
        &network.name,
        "--ip",
        &ip.to_string(),
        "--hostname",
        name,
        "--read-only",
        "--user",
        &format!("{IMAGE_UID}:{IMAGE_UID}"),
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--tmpfs",
        "/run/pgwarden:rw,nosuid,nodev,mode=2777",
        "--shm-size",
        "128m",
        "--stop-timeout",
        &STOP_GRACE.to_string(),
        "--mount",
        &mount(volume, "/var/lib/postgresql/data", false),
        "--mount",
        &mount(config, "/etc/pgwarden/instance.yaml", true),
        "--mount",
        &mount(secrets, "/etc/pgwarden/secrets", true),
        "--mount",
        &mount(kubeconfig, "/etc/pgwarden/kubeconfig", true),
        "-e",
        &format!("POD_NAME={name}"),
        "-e",
        "POD_NAMESPACE=default",
        "-e",
        &format!("POD_IP={ip}"),
        "-e",
        "KUBECONFIG=/etc/pgwarden/kubeconfig",
        "-e",
        "RUST_LOG=info",
        image,
    ]
    .map(String::from)
    .to_vec()
}

/// The configuration every member reads (`POD_NAME` names it).
fn render(ips: &[IpAddr], timing: Timing, extra_yaml: &str) -> String {
    let (d, r, p, f) = timing;
    let mut members = String::from("members:\n");
    for (i, ip) in ips.iter().enumerate() {
        members.push_str(&format!(
            "  - {{name: pg-{}, host: '{ip}', port: {PG_PORT}, api: 'http://{ip}:{API_PORT}'}}\n",
            i + 1
        ));
    }
    format!(
        "cluster: test\n\
         dataDir: /var/lib/postgresql/data/pgdata\n\
         runDir: /run/pgwarden\n\
         postgres:\n  parameters:\n    shared_buffers: 16MB\n\
         api:\n  tokenFile: /etc/pgwarden/secrets/token\n\
         credentials:\n  superuserPasswordFile: /etc/pgwarden/secrets/superuser\n  appPasswordFile: /etc/pgwarden/secrets/app\n  replicationPasswordFile: /etc/pgwarden/secrets/replication\n\
         shutdown:\n  smartTimeoutSeconds: 5\n  stopTimeoutSeconds: 10\n\
         lease:\n  backend: kubernetes\n  leaseDurationSeconds: {d}\n  renewDeadlineSeconds: {r}\n  retryPeriodSeconds: {p}\n  fenceBudgetSeconds: {f}\n\
         {members}{extra_yaml}"
    )
}
