#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;

fn yaml(dir: &Path, extra: &str) -> String {
    format!(
        "name: pg-1\ndataDir: {0}/pgdata\nrunDir: {0}/run\nbinDir: /usr/lib/postgresql/15/bin\n{extra}",
        dir.display()
    )
}

fn problems(text: &str) -> Vec<String> {
    let cfg = parse(text, Path::new("test.yaml")).expect("parses");
    match validate(cfg) {
        Ok(_) => vec![],
        Err(p) => p.0.into_iter().map(|p| format!("{}: {}", p.field, p.message)).collect(),
    }
}

#[test]
fn minimal_config_gets_defaults() {
    let d = tempfile::tempdir().unwrap();
    let v = validate(parse(&yaml(d.path(), ""), Path::new("t")).unwrap()).unwrap();
    assert_eq!(v.name, "pg-1");
    assert_eq!(v.cluster, "pgwarden");
    assert_eq!(v.port, 5432);
    assert_eq!(v.api_listen.to_string(), "0.0.0.0:8000");
    assert_eq!(v.config.bootstrap.database, "app");
    assert_eq!(v.config.shutdown.smart_timeout_seconds, 15);
}

#[test]
fn parameters_accept_any_scalar() {
    let d = tempfile::tempdir().unwrap();
    let text = yaml(
        d.path(),
        "postgres:\n  parameters:\n    max_connections: 200\n    jit: false\n    random_page_cost: 1.1\n    work_mem: 8MB\n",
    );
    let v = validate(parse(&text, Path::new("t")).unwrap()).unwrap();
    let p = &v.config.postgres.parameters;
    assert_eq!(p["max_connections"], "200");
    assert_eq!(p["jit"], "off");
    assert_eq!(p["random_page_cost"], "1.1");
    assert_eq!(p["work_mem"], "8MB");
}

#[test]
fn reserved_parameters_are_refused_with_a_hint() {
    let d = tempfile::tempdir().unwrap();
    for (name, _) in RESERVED_PARAMETERS {
        let text = yaml(d.path(), &format!("postgres:\n  parameters:\n    {name}: x\n"));
        assert_eq!(
            problems(&text),
            vec![format!("postgres.parameters.{name}: is managed by pgwarden and cannot be set")]
        );
    }
}

#[test]
fn bad_values_are_each_reported() {
    let d = tempfile::tempdir().unwrap();
    let text = yaml(
        d.path(),
        "cluster: Bad_Name\nrole: replica\nprimary: {host: 'a b', port: 0}\npostgres:\n  port: 0\n  parameters:\n    wal_level: minimal\n    'Bad-Name': 1\napi: {listen: '127.0.0.1:0'}\nbootstrap: {owner: streaming_replica, database: 'x-y'}\nshutdown: {smartTimeoutSeconds: 20, stopTimeoutSeconds: 10}\n",
    );
    let got = problems(&text);
    let expect = [
        "cluster: \"Bad_Name\" is not a DNS label",
        "postgres.port: 0 is not a valid port",
        "api.listen: port 0 is not a fixed port",
        "primary.host: \"a b\" is not a host name or address",
        "primary.port: 0 is not a valid port",
        "postgres.parameters.Bad-Name: is not a valid parameter name",
        "postgres.parameters.wal_level: \"minimal\" would break replication",
        "bootstrap.database: \"x-y\" is not a plain identifier",
        "bootstrap.owner: \"streaming_replica\" is reserved",
        "credentials.replicationPasswordFile: is missing for role replica",
        "shutdown.stopTimeoutSeconds: 10 is less than smartTimeoutSeconds (20)",
    ];
    for e in expect {
        assert!(got.iter().any(|g| g == e), "missing {e:?} in {got:#?}");
    }
    assert_eq!(got.len(), expect.len(), "{got:#?}");
}

#[test]
fn unknown_fields_name_their_path() {
    let err = parse("name: x\ndataDir: /x\nshutdown:\n  smartTimeout: 3\n", Path::new("t.yaml")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("config file t.yaml: shutdown: unknown field `smartTimeout`"), "{msg}");
}

#[test]
fn secrets_must_exist_and_not_be_empty() {
    let d = tempfile::tempdir().unwrap();
    let empty = d.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let text = yaml(
        d.path(),
        &format!("credentials:\n  appPasswordFile: {}\n  superuserPasswordFile: /nonexistent\n", empty.display()),
    );
    let got = problems(&text);
    assert!(
        got.iter().any(|g| g.starts_with("credentials.appPasswordFile: secret file") && g.ends_with("is empty")),
        "{got:?}"
    );
    assert!(
        got.iter().any(|g| g.starts_with("credentials.superuserPasswordFile: cannot read secret file /nonexistent")),
        "{got:?}"
    );
}

#[test]
fn overrides_win_over_the_file() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("c.yaml");
    std::fs::write(&path, yaml(d.path(), "cluster: filecluster\n")).unwrap();
    let env = Overrides { name: Some("from-env".into()), cluster: Some("envcluster".into()), ..Overrides::default() };
    let flags = Overrides { name: Some("from-flag".into()), ..Overrides::default() };
    let v = load(&path, &env.then(flags)).unwrap();
    assert_eq!(v.name, "from-flag");
    assert_eq!(v.cluster, "envcluster");
}

#[test]
fn rendered_configuration_is_stable() {
    let d = tempfile::tempdir().unwrap();
    let text = format!(
        "name: pg-2\ncluster: demo\ndataDir: /tmp/pgwarden-snapshot-pgdata\nrunDir: /run/pgwarden\nbinDir: /usr/lib/postgresql/15/bin\nrole: replica\nprimary: {{host: demo-1.demo, port: 5432}}\ncredentials: {{replicationPasswordFile: {}}}\npostgres:\n  parameters: {{shared_buffers: 256MB, work_mem: \"4MB\", search_path: \"'$user', public\"}}\n  pgHba: ['hostssl all all 10.0.0.0/8 scram-sha-256']\n",
        d.path().join("repl").display()
    );
    std::fs::write(d.path().join("repl"), "pw\n").unwrap();
    let cfg = parse(&text, Path::new("t")).unwrap();
    // The data dir path need not exist for rendering; validation of its parent is skipped here.
    let v = validate(cfg).unwrap_or_else(|p| panic!("{p}"));
    let paths = crate::paths::Paths::new(&v.config.data_dir, &v.config.run_dir);
    insta::assert_snapshot!(
        "pgwarden_conf",
        crate::pgconf::render_conf(&v, &paths, crate::pgconf::configured_upstream(&v).as_ref(), "")
    );
    insta::assert_snapshot!("pg_hba", crate::pgconf::render_hba(&v.config.postgres.pg_hba, false));
    insta::assert_snapshot!("pg_ident", crate::pgconf::render_ident("root", "postgres"));
}

#[test]
fn broken_yaml_is_a_syntax_error_not_a_type_error() {
    let e = parse("name: [unclosed\n", Path::new("c.yaml")).unwrap_err().to_string();
    assert!(e.starts_with("config file c.yaml: YAML syntax error: "), "{e}");
    assert!(e.contains("line 1") || e.contains("line 2"), "names the place: {e}");
    assert!(!e.contains("invalid type"), "{e}");
    // Well-formed YAML of the wrong type is still a type error naming the field.
    let e = parse("name: [a, b]\n", Path::new("c.yaml")).unwrap_err().to_string();
    assert!(e.contains("name: invalid type: sequence"), "{e}");
}

#[test]
fn a_fault_file_is_testkit_only() {
    let d = tempfile::tempdir().unwrap();
    let text = yaml(
        d.path(),
        "lease:\n  backend: file\n  path: /tmp/lease.json\n  faultFile: /tmp/fault.json\nmembers: [{name: pg-1, host: 127.0.0.1, api: 'http://127.0.0.1:8000'}]\n",
    );
    let parsed = parse(&text, Path::new("t.yaml"));
    #[cfg(feature = "testkit")]
    assert_eq!(parsed.unwrap().lease.unwrap().fault_file, Some("/tmp/fault.json".into()));
    #[cfg(not(feature = "testkit"))]
    {
        let e = parsed.unwrap_err().to_string();
        assert!(e.contains("lease: unknown field `faultFile`"), "{e}");
        assert!(e.contains("cargo feature `testkit`") && e.contains("remove lease.faultFile"), "{e}");
    }
}

#[test]
fn an_edit_may_leave_this_instance_out_of_members_a_start_may_not() {
    // The operator removes an instance by leaving it out of the one file every member reads:
    // the running instance must take that edit (and never take the lease again), while a
    // start without it is a mistake (a misspelt name) and is refused.
    let d = tempfile::tempdir().unwrap();
    let text = yaml(
        d.path(),
        "lease:\n  backend: file\n  path: /tmp/lease.json\nsynchronous: {number: 2}\nmembers:\n  \
         - {name: pg-2, host: 127.0.0.1, api: 'http://127.0.0.1:8002'}\n  \
         - {name: pg-3, host: 127.0.0.1, api: 'http://127.0.0.1:8003'}\n",
    );
    assert_eq!(problems(&text), vec!["members: does not list this instance (pg-1)".to_string()]);
    let edit = validate_for(parse(&text, Path::new("t")).unwrap(), Purpose::Edit).unwrap();
    assert_eq!(edit.config.members.len(), 2, "both others count for synchronous.number");
    // Everything else is checked alike.
    let nobody = yaml(d.path(), "lease:\n  backend: file\n  path: /tmp/lease.json\nmembers: []\n");
    let e = validate_for(parse(&nobody, Path::new("t")).unwrap(), Purpose::Edit).unwrap_err().to_string();
    assert!(e.contains("members: is empty"), "{e}");
    let bad = text.replace("number: 2", "number: 3");
    let e = validate_for(parse(&bad, Path::new("t")).unwrap(), Purpose::Edit).unwrap_err().to_string();
    assert!(e.contains("synchronous.number: 3 is not between 1 and the number of other members (2)"), "{e}");
}
