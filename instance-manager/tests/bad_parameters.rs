#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A Postgres parameter value Postgres refuses never lands: saved while running, the edit is
//! refused with the parameter named (log, `/status`, `diagnose`) and Postgres runs on with
//! the previous value; a later valid edit applies; at start, the manager exits with one
//! error naming the parameter instead of crash-looping.

use std::process::Command;
use std::time::Duration;

use instance_manager::testkit::{InstanceOptions, TestDir, TestInstance, manager_binary, wait_for};

fn replace_config(inst: &TestInstance, from: &str, to: &str) {
    let original = std::fs::read_to_string(&inst.config_path).expect("read config");
    let edited = original.replace(from, to);
    assert_ne!(original, edited, "the edit must change the file");
    // The way editors and Kubernetes replace a file: write beside it, rename over it.
    let tmp = inst.dir.join("config.yaml.new");
    std::fs::write(&tmp, edited).expect("write");
    std::fs::rename(&tmp, &inst.config_path).expect("rename");
}

async fn work_mem(inst: &TestInstance) -> Result<String, String> {
    let c = inst.connect("postgres").await?;
    Ok(c.query_one("SHOW work_mem", &[]).await.map_err(|e| e.to_string())?.get(0))
}

fn diagnose(inst: &TestInstance) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(manager_binary())
        .args(["--api", &inst.socket_url(), "diagnose", "-o", "json"])
        .env_remove("PGWARDEN_API")
        .output()
        .expect("run diagnose");
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("diagnose printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code(), json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_value_is_named_and_the_old_one_runs_on() {
    let root = TestDir::new();
    let mut opts = InstanceOptions::primary("pg-1");
    opts.parameters.insert("work_mem".into(), "4MB".into());
    let mut inst = TestInstance::start(root.path(), &opts);
    inst.wait_ready(Duration::from_secs(90)).await;
    let conf_before = std::fs::read_to_string(inst.data_dir().join("pgwarden.conf")).expect("read pgwarden.conf");

    replace_config(&inst, "work_mem: \"4MB\"", "work_mem: \"bogus\"");
    let st = wait_for("work_mem refused in /status", Duration::from_secs(30), || async {
        let st = inst.status().await?;
        if st.refused_parameters.iter().any(|r| r.parameter.as_deref() == Some("work_mem")) {
            Ok(st)
        } else {
            Err(format!("refused_parameters {:?}, config_error {:?}", st.refused_parameters, st.config_error))
        }
    })
    .await;
    let refused = st.refused_parameters.iter().find(|r| r.parameter.as_deref() == Some("work_mem")).unwrap();
    assert!(refused.message.contains("invalid value for parameter \"work_mem\": \"bogus\""), "{refused:?}");
    assert!(st.config_error.as_deref().unwrap_or("").contains("work_mem"), "{:?}", st.config_error);
    assert_eq!(work_mem(&inst).await.as_deref(), Ok("4MB"), "postgres keeps the previous value");
    let conf_after = std::fs::read_to_string(inst.data_dir().join("pgwarden.conf")).expect("read pgwarden.conf");
    assert_eq!(conf_after, conf_before, "nothing Postgres cannot start with is written");
    let log = inst.log();
    assert!(
        log.lines().any(|l| l.contains("\"level\":\"ERROR\"") && l.contains("work_mem") && l.contains("refused")),
        "an ERROR line names the parameter:\n{}",
        inst.log_tail(30)
    );

    let (code, checks) = diagnose(&inst);
    assert_eq!(code, Some(1), "diagnose fails: {checks:#}");
    let check = checks
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "postgres parameters"))
        .unwrap_or_else(|| panic!("no postgres parameters check: {checks:#}"));
    assert_eq!(check["outcome"], "fail", "{check:#}");
    assert!(check["detail"].as_str().unwrap_or("").contains("work_mem"), "{check:#}");
    assert!(check["hint"].as_str().unwrap_or("").contains("postgres.parameters"), "{check:#}");

    // A valid edit after the refused one applies, and clears the report.
    replace_config(&inst, "work_mem: \"bogus\"", "work_mem: \"8MB\"");
    wait_for("work_mem 8MB", Duration::from_secs(30), || async {
        let v = work_mem(&inst).await?;
        if v == "8MB" { Ok(()) } else { Err(v) }
    })
    .await;
    let st = inst.status().await.expect("status");
    assert!(st.refused_parameters.is_empty(), "{:?}", st.refused_parameters);
    assert_eq!(st.config_error, None);

    // At start: one error naming the parameter and a non-zero exit, no crash loop.
    inst.signal(nix::sys::signal::Signal::SIGINT);
    assert_eq!(inst.wait_exit(Duration::from_secs(60)).await, Some(0), "{}", inst.log_tail(20));
    replace_config(&inst, "work_mem: \"8MB\"", "work_mem: \"bogus\"");
    let log_len = inst.log().len();
    inst.spawn();
    let code = inst.wait_exit(Duration::from_secs(60)).await;
    let log = inst.log()[log_len..].to_string();
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}:\n{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("\"level\":\"ERROR\"")).collect();
    assert_eq!(errors.len(), 1, "one error line:\n{log}");
    assert!(errors[0].contains("work_mem") && errors[0].contains("bogus"), "{}", errors[0]);
    assert!(!log.contains("postgres started"), "postgres was never started with the bad value:\n{log}");
}
