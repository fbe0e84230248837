#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `instance-manager config check|print`, run as a real binary: a good file passes and nothing
//! is created, a bad one is refused with exactly the lines `run` prints (exit code 2, each naming
//! the field and the fix), `print` shows every default, the overrides `run` takes apply, and no
//! secret is ever printed. Tools (`scripts/local-cluster`, the benchmarks) rely on all of this
//! instead of validating configurations themselves.

use std::path::Path;
use std::process::{Command, Output};

use instance_manager::testkit::{TestDir, manager_binary};

fn manager(args: &[&str]) -> Command {
    let mut cmd = Command::new(manager_binary());
    cmd.args(args)
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .env_remove("CLUSTER_NAME")
        .env_remove("PGWARDEN_CONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST");
    cmd
}

fn write(dir: &Path, yaml: &str) -> std::path::PathBuf {
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    cfg
}

fn base(dir: &Path) -> String {
    format!("name: pg-1\ndataDir: {0}/pgdata\nrunDir: {0}/run\n", dir.display())
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn check_accepts_a_good_file_and_creates_nothing() {
    let d = TestDir::new();
    let cfg = write(d.path(), &base(d.path()));
    let out = manager(&["config", "check"]).arg(&cfg).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("valid (instance pg-1, cluster pgwarden, Postgres binaries in /"), "{stdout}");
    assert!(!d.path().join("pgdata").exists() && !d.path().join("run").exists(), "check created a directory");
}

#[test]
fn check_refuses_a_bad_file_with_the_lines_run_prints() {
    let d = TestDir::new();
    let yaml = format!(
        "{}postgres:\n  port: 70000\n  parameters:\n    archive_command: /bin/true\nlease:\n  backend: file\n  \
         leaseDurationSeconds: 5\n  renewDeadlineSeconds: 10\n",
        base(d.path())
    );
    let cfg = write(d.path(), &yaml);
    let check = manager(&["config", "check"]).arg(&cfg).output().unwrap();
    let (stdout, stderr) = text(&check);
    assert_eq!(check.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    for expected in [
        "postgres.port: 70000 is not a valid port (fix: use a number between 1 and 65535)",
        "postgres.parameters.archive_command: is managed by pgwarden and cannot be set",
        "lease.path: is missing for backend file (fix: set the path of the shared lease file)",
        "lease.renewDeadlineSeconds",
        "members: does not list this instance (pg-1)",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
    // `run` with separate stdout and stderr prints the same text on stderr (after its JSON log).
    let run = manager(&["run", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert_eq!(text(&run).1, stderr, "config check and run disagree");
}

#[test]
fn check_names_unknown_fields_and_unreadable_files() {
    let d = TestDir::new();
    let cfg = write(d.path(), &format!("{}postgres:\n  prot: 5432\n", base(d.path())));
    let out = manager(&["config", "check"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out).1;
    assert!(stderr.contains("postgres: unknown field `prot`") && stderr.contains("camelCase"), "{stderr}");

    let out = manager(&["config", "check", "/nonexistent/pgwarden.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("cannot read config file /nonexistent/pgwarden.yaml"), "{:?}", text(&out));
}

#[test]
fn print_fills_in_every_default_and_round_trips() {
    let d = TestDir::new();
    let cfg = write(d.path(), &base(d.path()));
    let out = manager(&["config", "print", "-o", "json"]).arg(&cfg).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(doc["name"], "pg-1");
    assert_eq!(doc["cluster"], "pgwarden", "the default cluster name is resolved");
    assert!(doc["binDir"].as_str().is_some_and(|b| b.starts_with('/')), "binDir resolved from PATH: {doc}");
    assert_eq!(doc["osUser"], "postgres");
    assert_eq!(doc["postgres"]["port"], 5432);
    assert_eq!(doc["api"]["listen"], "0.0.0.0:8000");
    assert_eq!(doc["bootstrap"]["database"], "app");
    assert!(doc["shutdown"]["stopTimeoutSeconds"].as_u64().is_some(), "{doc}");
    assert!(doc["metrics"].is_object(), "{doc}");

    // The YAML form is a valid configuration of its own, printing the same document.
    let yaml = manager(&["config", "print"]).arg(&cfg).output().unwrap();
    assert_eq!(yaml.status.code(), Some(0));
    let yaml = text(&yaml).0;
    assert!(yaml.contains("port: 5432") && yaml.contains("cluster: pgwarden"), "{yaml}");
    let again = d.path().join("printed.yaml");
    std::fs::write(&again, &yaml).unwrap();
    let out = manager(&["config", "print", "-o", "json"]).arg(&again).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), doc);
}

#[test]
fn print_applies_the_overrides_of_run_and_prints_no_secret() {
    let d = TestDir::new();
    let secret = d.path().join("superuser.password");
    std::fs::write(&secret, "s3cr3t-never-printed\n").unwrap();
    let yaml = format!(
        "dataDir: {0}/pgdata\nrunDir: {0}/run\ncredentials:\n  superuserPasswordFile: {1}\n",
        d.path().display(),
        secret.display()
    );
    let cfg = write(d.path(), &yaml);
    let out = manager(&["config", "print", "--name", "pg-7"]).arg(&cfg).env("CLUSTER_NAME", "orders").output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("name: pg-7") && stdout.contains("cluster: orders"), "{stdout}");
    assert!(stdout.contains(&secret.display().to_string()), "the file is named: {stdout}");
    assert!(!stdout.contains("s3cr3t") && !stderr.contains("s3cr3t"), "a secret was printed: {stdout}{stderr}");

    // Without a name anywhere, print refuses like run.
    let out = manager(&["config", "print"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("name: is missing (fix: set name in the file or the POD_NAME environment variable)"));
}

#[test]
fn help_lists_both_subcommands() {
    let out = manager(&["config", "--help"]).output().unwrap();
    let help = text(&out).0;
    assert!(out.status.success(), "{help}");
    assert!(help.contains("check") && help.contains("print"), "{help}");
    let out = manager(&["--help"]).output().unwrap();
    assert!(text(&out).0.contains("config"), "{:?}", text(&out));
}
