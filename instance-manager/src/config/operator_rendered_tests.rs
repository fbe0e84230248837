#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The contract seen from this side: every `instance.yaml` the operator renders (its golden
//! manifests under `testdata/golden/`, one per sample cluster) is accepted by this manager's
//! parser and validation as each of the cluster's pods would load it (`POD_NAME`,
//! `POD_NAMESPACE` from the downward API). The operator builds the same files from the
//! contract's types, so a field renamed or made stricter here fails this test, not a pod.
//!
//! The pod's files are laid out for real under a temporary directory (the paths rewritten into
//! it): the projected credentials, a server certificate, the backup credentials, the volume.

use std::path::Path;

use super::{Overrides, parse, validate};
use crate::testkit::TestCa;

/// `yaml` with the pod's mount points moved under `root`, and every file it names created.
fn lay_out_pod(yaml: &str, root: &Path) -> String {
    let etc = root.join("etc");
    let data = root.join("data");
    let wal = root.join("wal");
    std::fs::create_dir_all(&data).expect("the volume");
    std::fs::create_dir_all(&wal).expect("the WAL volume");
    let yaml = yaml
        .replace("/etc/pgwarden", &etc.display().to_string())
        .replace("/var/lib/postgresql/data", &data.display().to_string())
        .replace("/var/lib/postgresql/wal", &wal.display().to_string());
    let ca = TestCa::new("operator-rendered");
    let pair = ca.server_cert();
    let tls = etc.join("tls");
    std::fs::create_dir_all(&tls).expect("tls dir");
    pair.write(&tls.join("tls.crt"), &tls.join("tls.key"));
    ca.write(&tls.join("ca.crt"));
    for word in yaml.split_whitespace() {
        let path = Path::new(word);
        let under_etc = path.starts_with(&etc) && !path.starts_with(&tls) && !word.ends_with('/');
        if under_etc && path.extension().is_none() && path.parent().is_some_and(|p| p != etc.as_path()) {
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("a secret dir");
            let value = if word.ends_with("KEY") {
                "5d3f0a9e8c7b6a5948372615049382716a5b4c3d2e1f00112233445566778899"
            } else {
                "secret"
            };
            std::fs::write(path, format!("{value}\n")).expect("a secret file");
        }
    }
    yaml
}

fn golden_configs() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/golden");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("testdata/golden") {
        let path = entry.expect("an entry").path();
        let text = std::fs::read_to_string(&path).expect("a golden file");
        for doc in text.split("\n---\n") {
            let v: serde_yaml::Value = serde_yaml::from_str(doc).expect("YAML");
            if v.get("kind").and_then(|k| k.as_str()) == Some("ConfigMap") {
                let yaml = v["data"]["instance.yaml"].as_str().expect("instance.yaml").to_owned();
                out.push((path.display().to_string(), yaml));
            }
        }
    }
    assert!(out.len() >= 4, "the operator's golden manifests are missing: {out:?}");
    out
}

#[test]
fn every_configuration_the_operator_renders_is_valid_for_every_pod() {
    for (file, yaml) in golden_configs() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let yaml = lay_out_pod(&yaml, root.path());
        let cfg = parse(&yaml, Path::new(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let cluster = cfg.cluster.clone().expect("the cluster name");
        for n in 1..=cfg.members.len() {
            let mut one = cfg.clone();
            Overrides { name: Some(format!("{cluster}-{n}")), namespace: Some("db".into()), ..Overrides::default() }
                .apply(&mut one);
            let v = validate(one).unwrap_or_else(|p| panic!("{file}, pod {cluster}-{n}:\n{p}"));
            assert_eq!(v.name, format!("{cluster}-{n}"));
            assert!(v.config.lease.is_some(), "{file}: elected through the Kubernetes lease");
        }
    }
}
