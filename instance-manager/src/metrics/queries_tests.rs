use proptest::prelude::*;

use super::*;

fn parse_ok(text: &str) -> QuerySet {
    parse(text, "cnpg", &BTreeSet::new()).unwrap_or_else(|e| panic!("refused:\n{e}"))
}

fn parse_err(text: &str) -> String {
    match parse(text, "cnpg", &BTreeSet::from(["cnpg_builtin_total".to_string()])) {
        Ok(q) => panic!("accepted: {q:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_cloudnativepg_query_parses() {
    let set = parse_ok(
        r#"
pg_database:
  query: |
    SELECT datname, pg_database_size(datname) AS size_bytes FROM pg_database;
  metrics:
    - datname:
        usage: "LABEL"
        description: "Name of the database"
    - size_bytes:
        usage: "GAUGE"
        description: "Disk space used by the database"
pg_stat_archiver:
  query: SELECT archived_count, 'x' AS ignored FROM pg_stat_archiver
  predicate_query: SELECT NOT pg_is_in_recovery()
  master: true
  runonserver: ">=12.0.0"
  cache_seconds: 30
  metrics:
    - archived_count: {usage: COUNTER, description: Archived}
    - ignored: {usage: DISCARD}
"#,
    );
    let names: Vec<&str> = set.queries.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["pg_database", "pg_stat_archiver"]);
    let db = &set.queries[0];
    assert_eq!(db.sql, "SELECT datname, pg_database_size(datname) AS size_bytes FROM pg_database");
    assert_eq!(db.labels().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["datname"]);
    let values: Vec<(String, Kind)> = db.values().map(|(_, n, k)| (n, k)).collect();
    assert_eq!(values, [("cnpg_pg_database_size_bytes".to_string(), Kind::Gauge)]);
    let archiver = &set.queries[1];
    assert!(archiver.primary_only && archiver.predicate.is_some() && archiver.server_versions.is_some());
    assert_eq!(archiver.cache, Some(Duration::from_secs(30)));
    let values: Vec<(String, Kind)> = archiver.values().map(|(_, n, k)| (n, k)).collect();
    assert_eq!(values, [("cnpg_pg_stat_archiver_archived_count".to_string(), Kind::Untyped)]);
    assert_eq!(
        set.metric_names().into_iter().collect::<Vec<_>>(),
        ["cnpg_pg_database_size_bytes", "cnpg_pg_stat_archiver_archived_count"]
    );
}

#[test]
fn name_overrides_the_metric_prefix_and_mapped_metrics_map() {
    let set = parse_ok(
        "q17:\n  name: checkpoints\n  runonserver: '>=17'\n  query: SELECT 1 AS n, 'on' AS state\n  metrics:\n    - n: {usage: GAUGE}\n    - state: {usage: MAPPEDMETRIC, metric_mapping: {'on': 1, 'off': 0}}\n",
    );
    let names: Vec<String> = set.queries[0].values().map(|(_, n, _)| n).collect();
    assert_eq!(names, ["cnpg_checkpoints_n", "cnpg_checkpoints_state"]);
}

#[test]
fn an_empty_file_has_no_queries() {
    assert_eq!(parse_ok(""), QuerySet::default());
    assert_eq!(parse_ok("# nothing yet\n"), QuerySet::default());
}

#[test]
fn errors_name_the_query_and_the_column() {
    let e = parse_err(
        "bad:\n  query: SELECT 1\n  metrics:\n    - n: {usage: HISTOGRAM}\n    - m: {usage: gauges}\n    - 1x: {usage: GAUGE}\n",
    );
    assert!(e.contains("query bad, column n: usage HISTOGRAM is not supported"), "{e}");
    assert!(e.contains("query bad, column m: unknown usage \"gauges\""), "{e}");
    assert!(e.contains("query bad, column 1x: the name is not usable"), "{e}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = parse_err(
        "a:\n  query: ' ; '\n  metrics: []\nb-c:\n  query: SELECT 1\n  runonserver: '>=x'\n  timeout_seconds: -1\n  metrics:\n    - l: {usage: LABEL}\n",
    );
    for want in [
        "query a: query is empty",
        "query a: metrics is empty",
        "query b-c: the name is not usable",
        "query b-c: runonserver:",
        "query b-c: timeout_seconds -1",
        "query b-c: no column is a GAUGE",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn unknown_fields_and_bad_types_name_the_query() {
    let e = parse_err("q:\n  query: SELECT 1\n  metrics:\n    - n: {usage: GAUGE, descripton: typo}\n");
    assert!(e.contains("q.metrics[0].n") && e.contains("unknown field `descripton`"), "{e}");
    let e = parse_err("q:\n  querry: SELECT 1\n");
    assert!(e.starts_with("q: unknown field `querry`"), "{e}");
    let e = parse_err("q:\n  query: SELECT 1\n  primary: maybe\n  metrics: []\n");
    assert!(e.contains("q.primary"), "{e}");
    let e = parse_err("- just\n- a list\n");
    assert!(e.contains("invalid type"), "{e}");
}

#[test]
fn metrics_must_name_one_column_each() {
    let e = parse_err("q:\n  query: SELECT 1\n  metrics:\n    - {a: {usage: GAUGE}, b: {usage: GAUGE}}\n");
    assert!(e.contains("query q: metrics[0] must name exactly one column, not 2"), "{e}");
}

#[test]
fn mapped_metrics_need_a_mapping_and_only_they_have_one() {
    let e = parse_err(
        "q:\n  query: SELECT 1\n  metrics:\n    - a: {usage: MAPPEDMETRIC}\n    - b: {usage: GAUGE, metric_mapping: {x: 1}}\n",
    );
    assert!(e.contains("column a: usage MAPPEDMETRIC needs a metric_mapping"), "{e}");
    assert!(e.contains("column b: metric_mapping is only for usage MAPPEDMETRIC"), "{e}");
}

#[test]
fn duplicates_and_collisions_are_refused() {
    let e = parse_err(
        "twice:\n  query: SELECT 1\n  metrics:\n    - total: {usage: GAUGE}\n    - total: {usage: GAUGE}\n\
         builtin:\n  query: SELECT 1\n  metrics:\n    - total: {usage: GAUGE}\n\
         a:\n  query: SELECT 1\n  name: shared\n  metrics:\n    - n: {usage: GAUGE}\n\
         b:\n  query: SELECT 1\n  name: shared\n  metrics:\n    - n: {usage: GAUGE}\n\
         c:\n  query: SELECT 1\n  target_databases: [app, app, '']\n  metrics:\n    - n: {usage: GAUGE}\n",
    );
    assert!(e.contains("query twice, column total: listed twice"), "{e}");
    assert!(e.contains("cnpg_builtin_total is a built-in metric"), "{e}");
    assert!(e.contains("query b, column n: cnpg_shared_n is also produced by query a"), "{e}");
    assert!(e.contains("query c: target_databases lists \"app\" twice"), "{e}");
    assert!(e.contains("query c: target_databases has an empty name"), "{e}");
}

#[test]
fn version_specific_queries_may_share_metrics() {
    let set = parse_ok(
        "old:\n  name: bg\n  runonserver: '<17'\n  query: SELECT 1 AS n\n  metrics:\n    - n: {usage: GAUGE}\n\
         new:\n  name: bg\n  runonserver: '>=17'\n  query: SELECT 2 AS n\n  metrics:\n    - n: {usage: GAUGE}\n",
    );
    assert_eq!(set.queries.len(), 2);
}

#[test]
fn identifiers() {
    assert!(is_identifier("pg_stat_archiver") && is_identifier("_x1"));
    assert!(!is_identifier("") && !is_identifier("1x") && !is_identifier("a-b") && !is_identifier("é"));
}

/// Arbitrary YAML built from the format's own words, so that the generator reaches deep
/// into the validation rather than stopping at the first syntax error.
fn yamlish() -> impl Strategy<Value = String> {
    let word = prop::sample::select(vec![
        "query",
        "metrics",
        "usage",
        "description",
        "LABEL",
        "GAUGE",
        "COUNTER",
        "MAPPEDMETRIC",
        "DISCARD",
        "HISTOGRAM",
        "metric_mapping",
        "primary",
        "master",
        "runonserver",
        "predicate_query",
        "target_databases",
        "cache_seconds",
        "timeout_seconds",
        "name",
        "SELECT 1",
        ">=17.0.0",
        "'*'",
        "true",
        "-1",
        "1e400",
        "q",
        "n",
        "__x",
        "",
        "~",
        "[]",
        "{}",
    ]);
    let piece = prop_oneof![
        word.prop_map(str::to_string),
        "[ -~]{0,12}",
        Just(":".to_string()),
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just("- ".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just(", ".to_string()),
    ];
    prop::collection::vec(piece, 0..60).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_input_is_accepted_or_refused_without_panicking(text in yamlish()) {
        match parse(&text, "cnpg", &BTreeSet::new()) {
            Ok(set) => {
                for q in &set.queries {
                    prop_assert!(is_identifier(&q.name) && !q.sql.is_empty());
                    prop_assert!(q.values().count() > 0);
                }
            }
            Err(e) => prop_assert!(!e.0.is_empty() && e.0.iter().all(|line| !line.is_empty())),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(text in "\\PC{0,200}") {
        let _ = parse(&text, "cnpg", &BTreeSet::new());
    }
}
