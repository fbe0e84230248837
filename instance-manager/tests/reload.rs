#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Editing the configuration file of a running instance: reloadable parameters take effect,
//! restart-only ones (a Postgres parameter, `api.tls`) show up as pending in `/status`, and an invalid edit changes nothing and
//! is reported.

use std::time::Duration;

use instance_manager::testkit::{InstanceOptions, TestCa, TestDir, TestInstance, TlsFiles, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_changes_are_applied_or_reported_pending() {
    let root = TestDir::new();
    let mut opts = InstanceOptions::primary("pg-1");
    opts.parameters.insert("work_mem".into(), "4MB".into());
    let inst = TestInstance::start(root.path(), &opts);
    inst.wait_ready(Duration::from_secs(90)).await;

    // Turning on HTTPS for the API needs a restart too: the listener is bound at start.
    let ca = TestCa::new("reload-ca");
    let tls = TlsFiles::kubernetes(&inst.dir.join("api-tls"), &ca.server_cert(), &ca);
    let original = std::fs::read_to_string(&inst.config_path).expect("read config");
    let edited = original.replace("work_mem: \"4MB\"", "work_mem: \"8MB\"\n    shared_buffers: \"32MB\"").replace(
        "api:\n",
        &format!("api:\n  tls:\n    certFile: {}\n    keyFile: {}\n", tls.cert_file.display(), tls.key_file.display()),
    );
    assert_ne!(original, edited, "the edit must change the file");
    // Replace the file the way editors and Kubernetes do: write beside it, rename over it.
    let tmp = inst.dir.join("config.yaml.new");
    std::fs::write(&tmp, &edited).expect("write");
    std::fs::rename(&tmp, &inst.config_path).expect("rename");

    wait_for("work_mem reloaded", Duration::from_secs(30), || async {
        let c = inst.connect("postgres").await?;
        let v: String = c.query_one("SHOW work_mem", &[]).await.map_err(|e| e.to_string())?.get(0);
        if v == "8MB" { Ok(()) } else { Err(v) }
    })
    .await;
    let st = wait_for("shared_buffers and api.tls pending restart", Duration::from_secs(30), || async {
        let st = inst.status().await?;
        if ["shared_buffers", "api.tls"].iter().all(|f| st.pending_restart.iter().any(|p| p == f)) {
            Ok(st)
        } else {
            Err(format!("{:?}", st.pending_restart))
        }
    })
    .await;
    assert_eq!(st.config_error, None);
    // /status was read over plain HTTP: the running listener is unchanged.

    // An invalid edit is refused and reported; the running configuration stays.
    std::fs::write(&tmp, edited.replace("work_mem: \"8MB\"", "work_mem: \"8MB\"\n    port: \"1234\"")).expect("write");
    std::fs::rename(&tmp, &inst.config_path).expect("rename");
    let st = wait_for("config error reported", Duration::from_secs(30), || async {
        let st = inst.status().await?;
        match &st.config_error {
            Some(e) => Ok(e.clone()),
            None => Err("no config_error yet".into()),
        }
    })
    .await;
    assert!(st.contains("postgres.parameters.port"), "{st}");
    assert_eq!(inst.get("/readyz").await.expect("readyz").0, 200, "the instance keeps running");
}
