#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Bad configurations are refused before anything is written: exit code 2, one line per
//! problem naming the field and the fix, and the data and run directories untouched.

use std::path::Path;
use std::process::Command;

use instance_manager::testkit::{TestDir, manager_binary};

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

fn run_with(dir: &Path, yaml: &str) -> Outcome {
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, yaml).expect("write config");
    let out = Command::new(manager_binary())
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("POD_NAME")
        .env_remove("CLUSTER_NAME")
        .output()
        .expect("run instance-manager");
    Outcome { code: out.status.code(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

fn base(dir: &Path) -> String {
    format!("name: pg-1\ndataDir: {0}/pgdata\nrunDir: {0}/run\n", dir.display())
}

fn assert_untouched(dir: &Path) {
    assert!(!dir.join("pgdata").exists(), "data dir was created");
    assert!(!dir.join("run").exists(), "run dir was created");
    assert!(!dir.join(".pgdata.bootstrap").exists(), "staging dir was created");
}

#[test]
fn unknown_field_names_the_field() {
    let d = TestDir::new();
    let o = run_with(d.path(), &format!("{}postgres:\n  prot: 5432\n", base(d.path())));
    assert_eq!(o.code, Some(2));
    assert!(o.stderr.contains("postgres: unknown field `prot`"), "{}", o.stderr);
    assert!(o.stderr.contains("expected one of") && o.stderr.contains("camelCase"), "{}", o.stderr);
    assert_untouched(d.path());
}

#[test]
fn every_problem_is_reported_at_once() {
    let d = TestDir::new();
    let yaml = format!(
        "{}binDir: /nonexistent/bin\nrole: replica\npostgres:\n  port: 70000\n  parameters:\n    port: 5433\n    archive_command: /bin/true\napi:\n  listen: nowhere\nbootstrap:\n  database: postgres\n",
        base(d.path())
    );
    let o = run_with(d.path(), &yaml);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    for expected in [
        "binDir: /nonexistent/bin lacks postgres",
        "postgres.port: 70000 is not a valid port (fix: use a number between 1 and 65535)",
        "postgres.parameters.port: is managed by pgwarden and cannot be set (fix: set postgres.port instead)",
        "postgres.parameters.archive_command: is managed by pgwarden",
        "api.listen: \"nowhere\" is not an address:port",
        "primary: is missing for role replica",
        "credentials.replicationPasswordFile: is missing for role replica",
        "bootstrap.database: \"postgres\" is a system database",
    ] {
        assert!(o.stderr.contains(expected), "missing {expected:?} in:\n{}", o.stderr);
    }
    assert_untouched(d.path());
}

#[test]
fn data_dir_owned_by_someone_else_is_refused_and_left_alone() {
    let d = TestDir::new();
    let data = d.path().join("pgdata");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("PG_VERSION"), "15\n").expect("write");
    // Owned by root (the test runs as root), while Postgres would run as `postgres`.
    let o = run_with(d.path(), &base(d.path()));
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("dataDir:") && o.stderr.contains("is owned by uid 0"), "{}", o.stderr);
    assert!(o.stderr.contains("chown -R postgres"), "{}", o.stderr);
    let entries: Vec<_> = std::fs::read_dir(&data).expect("read").flatten().map(|e| e.file_name()).collect();
    assert_eq!(entries, ["PG_VERSION"], "the data dir was modified");
    assert!(!d.path().join("run").exists());
}

#[test]
fn non_postgres_directory_and_missing_name_are_refused() {
    let d = TestDir::new();
    let data = d.path().join("pgdata");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("notes.txt"), "mine").expect("write");
    nix::unistd::chown(&data, Some(nix::unistd::User::from_name("postgres").unwrap().unwrap().uid), None).unwrap();
    let yaml = format!("dataDir: {0}/pgdata\nrunDir: {0}/run\n", d.path().display());
    let o = run_with(d.path(), &yaml);
    assert_eq!(o.code, Some(2));
    assert!(
        o.stderr.contains("name: is missing (fix: set name in the file or the POD_NAME environment variable)"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("holds no Postgres data directory"), "{}", o.stderr);
    assert_eq!(std::fs::read_to_string(data.join("notes.txt")).unwrap(), "mine");
}

#[test]
fn yaml_type_errors_and_missing_file_are_clear() {
    let d = TestDir::new();
    let o = run_with(d.path(), &format!("{}postgres:\n  port: lots\n", base(d.path())));
    assert_eq!(o.code, Some(2));
    assert!(o.stderr.contains("postgres.port: invalid type"), "{}", o.stderr);
    let out = Command::new(manager_binary()).args(["run", "--config", "/nonexistent/pgwarden.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file /nonexistent/pgwarden.yaml"));
}

#[test]
fn with_stdout_and_stderr_in_one_log_every_line_is_json_naming_field_and_fix() {
    // How scripts/local-cluster runs the manager: stdout and stderr into manager.log.
    let d = TestDir::new();
    let cfg = d.path().join("config.yaml");
    std::fs::write(&cfg, format!("{}postgres:\n  port: 70000\n", base(d.path()))).unwrap();
    let log_path = d.path().join("manager.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let status = Command::new(manager_binary())
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("POD_NAME")
        .env_remove("CLUSTER_NAME")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .expect("run instance-manager");
    assert_eq!(status.code(), Some(2));
    let text = std::fs::read_to_string(&log_path).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{text}")))
        .collect();
    let port = records.iter().find(|r| r["field"] == "postgres.port").unwrap_or_else(|| panic!("{text}"));
    assert_eq!(port["level"], "ERROR", "{text}");
    assert!(port["problem"].as_str().unwrap().contains("70000 is not a valid port"), "{text}");
    assert!(port["fix"].as_str().unwrap().contains("between 1 and 65535"), "{text}");
    assert_untouched(d.path());
}
