//! Validation of `metrics`: the address, the deadline, and the custom queries file (read and
//! validated here, so that a bad file is refused with the configuration, every problem named
//! with its query and column).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::validate::Collector;
use crate::api::DEFAULT_METRICS_PORT;
use crate::api::InstanceConfig;
use crate::metrics::QuerySet;

/// What validation resolved of `metrics`.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// Where the endpoint listens.
    pub listen: SocketAddr,
    /// The deadline of a scrape.
    pub timeout: Duration,
    /// The custom queries (empty without `queriesFile`).
    pub queries: Arc<QuerySet>,
}

/// Checks `cfg.metrics`; `api` and `pg_port` are the API's address and Postgres' port when
/// they are valid (the metrics may share neither).
pub(super) fn check_metrics(
    c: &mut Collector,
    cfg: &InstanceConfig,
    api: Option<SocketAddr>,
    pg_port: Option<u16>,
) -> Option<MetricsSettings> {
    let m = &cfg.metrics;
    let before = c.len();
    let Some(text) = &m.listen else {
        // Absent: the API's address (a pod's 0.0.0.0, or loopback outside one), port 9187.
        let ip = api.map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
        return finish(c, before, m, Some(SocketAddr::new(ip, DEFAULT_METRICS_PORT)), api, pg_port);
    };
    let listen = match text.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => {
            c.add("metrics.listen", "port 0 is not a fixed port", "use a fixed port such as 0.0.0.0:9187");
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            c.add("metrics.listen", format!("{text:?} is not an address:port"), "use e.g. 0.0.0.0:9187 or [::]:9187");
            None
        }
    };
    finish(c, before, m, listen, api, pg_port)
}

/// The checks shared by a given and a default address: the ports, the deadline, the queries.
fn finish(
    c: &mut Collector,
    before: usize,
    m: &crate::api::MetricsSpec,
    listen: Option<SocketAddr>,
    api: Option<SocketAddr>,
    pg_port: Option<u16>,
) -> Option<MetricsSettings> {
    if let Some(a) = listen {
        if api.is_some_and(|api| {
            api.port() == a.port() && (api.ip() == a.ip() || api.ip().is_unspecified() || a.ip().is_unspecified())
        }) {
            c.add(
                "metrics.listen",
                format!("port {} is also api.listen's", a.port()),
                "give the metrics and the API different ports",
            );
        }
        if pg_port == Some(a.port()) {
            c.add(
                "metrics.listen",
                format!("port {} is also postgres.port", a.port()),
                "give the metrics and Postgres different ports",
            );
        }
    }
    let t = m.timeout_seconds;
    if !(t.is_finite() && (0.1..=300.0).contains(&t)) {
        c.add(
            "metrics.timeoutSeconds",
            format!("{t} is outside 0.1..=300"),
            "keep it below Prometheus' scrape_timeout, e.g. 5",
        );
    }
    let queries = match &m.queries_file {
        None => QuerySet::default(),
        Some(path) if !path.is_absolute() => {
            c.add("metrics.queriesFile", format!("{} is not an absolute path", path.display()), "use an absolute path");
            QuerySet::default()
        }
        Some(path) => match std::fs::read_to_string(path) {
            Err(e) => {
                c.add(
                    "metrics.queriesFile",
                    format!("cannot read {}: {e}", path.display()),
                    "check the path and its permissions",
                );
                QuerySet::default()
            }
            Ok(text) => crate::metrics::builtin::parse_custom(&text).unwrap_or_else(|errors| {
                for e in errors.0 {
                    c.add("metrics.queriesFile", format!("{}: {e}", path.display()), "");
                }
                QuerySet::default()
            }),
        },
    };
    match (c.len() == before, listen) {
        (true, Some(listen)) => {
            Some(MetricsSettings { listen, timeout: Duration::from_secs_f64(t), queries: Arc::new(queries) })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    use crate::config::{parse, validate};

    fn config(dir: &Path, metrics: &str) -> String {
        format!(
            "name: pg-1\ndataDir: {0}/pgdata\nrunDir: {0}/run\nbinDir: /usr/lib/postgresql/15/bin\n{metrics}",
            dir.display()
        )
    }

    fn problems(text: &str) -> Vec<String> {
        match validate(parse(text, Path::new("t.yaml")).unwrap()) {
            Ok(_) => Vec::new(),
            Err(p) => p.0.into_iter().map(|p| format!("{}: {}", p.field, p.message)).collect(),
        }
    }

    #[test]
    fn defaults_are_cloudnativepgs_port_and_five_seconds() {
        let d = tempfile::tempdir().unwrap();
        let v = validate(parse(&config(d.path(), ""), Path::new("t")).unwrap()).unwrap();
        assert_eq!(v.metrics.listen.to_string(), "0.0.0.0:9187");
        assert_eq!(v.metrics.timeout, std::time::Duration::from_secs(5));
        assert!(v.metrics.queries.queries.is_empty());
    }

    #[test]
    fn the_default_address_is_the_apis_so_a_loopback_api_keeps_the_metrics_on_loopback() {
        let d = tempfile::tempdir().unwrap();
        let text = config(d.path(), "api: {listen: '127.0.0.1:18001'}\n");
        let v = validate(parse(&text, Path::new("t")).unwrap()).unwrap();
        assert_eq!(v.metrics.listen.to_string(), "127.0.0.1:9187");
        let text = config(d.path(), "api: {listen: '127.0.0.1:18001'}\nmetrics: {listen: '0.0.0.0:19187'}\n");
        let v = validate(parse(&text, Path::new("t")).unwrap()).unwrap();
        assert_eq!(v.metrics.listen.to_string(), "0.0.0.0:19187", "a given address is kept");
        let got = problems(&config(d.path(), "api: {listen: '127.0.0.1:9187'}\n"));
        assert_eq!(got, ["metrics.listen: port 9187 is also api.listen's"]);
    }

    #[test]
    fn bad_settings_name_their_field() {
        let d = tempfile::tempdir().unwrap();
        let got = problems(&config(
            d.path(),
            "api: {listen: '0.0.0.0:9000'}\nmetrics: {listen: '127.0.0.1:9000', timeoutSeconds: 0, queriesFile: rel.yaml}\n",
        ));
        for want in [
            "metrics.listen: port 9000 is also api.listen's",
            "metrics.timeoutSeconds: 0 is outside 0.1..=300",
            "metrics.queriesFile: rel.yaml is not an absolute path",
        ] {
            assert!(got.iter().any(|g| g == want), "missing {want:?} in {got:#?}");
        }
        let got = problems(&config(d.path(), "metrics: {listen: 'nowhere'}\npostgres: {port: 9187}\n"));
        assert!(got.iter().any(|g| g.starts_with("metrics.listen: \"nowhere\" is not an address:port")), "{got:#?}");
        let got = problems(&config(d.path(), "postgres: {port: 9187}\n"));
        assert_eq!(got, ["metrics.listen: port 9187 is also postgres.port"]);
    }

    #[test]
    fn the_queries_file_is_read_and_every_problem_named() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("queries.yaml");
        let got = problems(&config(d.path(), &format!("metrics: {{queriesFile: {}}}\n", file.display())));
        assert!(got.len() == 1 && got[0].contains("cannot read") && got[0].contains("queries.yaml"), "{got:#?}");
        std::fs::write(
            &file,
            "slow:\n  query: SELECT 1 AS n, 'x' AS l\n  metrics:\n    - n: {usage: HISTOGRAM}\n    - l: {usage: LABEL}\nok:\n  query: SELECT 2\n  metrics:\n    - n: {usage: GAUGES}\n",
        )
        .unwrap();
        let got = problems(&config(d.path(), &format!("metrics: {{queriesFile: {}}}\n", file.display())));
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(got[0].contains("queries.yaml: query ok, column n: unknown usage \"GAUGES\""), "{got:#?}");
        assert!(got[1].contains("query slow, column n: usage HISTOGRAM is not supported"), "{got:#?}");
        assert!(got[2].contains("query slow: no column is a GAUGE"), "{got:#?}");
        std::fs::write(&file, "mine:\n  query: SELECT 1 AS n\n  metrics:\n    - n: {usage: GAUGE}\n").unwrap();
        let text = config(d.path(), &format!("metrics: {{queriesFile: {}, timeoutSeconds: 0.5}}\n", file.display()));
        let v = validate(parse(&text, Path::new("t")).unwrap()).unwrap();
        assert_eq!(v.metrics.queries.queries[0].name, "mine");
        assert_eq!(v.metrics.timeout, std::time::Duration::from_millis(500));
    }
}
