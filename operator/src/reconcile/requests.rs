//! Manual control from kubectl, through annotations on the cluster (docs/operator.md):
//!
//! | annotation | value | what the operator does |
//! |---|---|---|
//! | `pgwarden.io/switchover` | an instance, or `auto` | `POST /switchover` to the primary (the Lease holder), with that target |
//! | `pgwarden.io/fence` | instances, comma-separated | `POST /fence` to each: Postgres stops and stays stopped |
//! | `pgwarden.io/unfence` | instances | `POST /unfence` to each |
//! | `pgwarden.io/restart` | instances | deletes each Pod (a primary hands over on SIGTERM); it is created again on its PVC |
//!
//! A request is acknowledged by removing its annotation, recording the outcome in
//! `status.requests` and an Event. A request the instance refused, or that names something
//! that is not an instance of the cluster, is acknowledged as refused; one that could not reach
//! an instance stays, and is tried again at the next pass.

use std::collections::BTreeMap;

use crate::names::Names;

/// `kubectl annotate pgc <name> pgwarden.io/switchover=<instance|auto>`.
pub const SWITCHOVER: &str = "pgwarden.io/switchover";
/// `kubectl annotate pgc <name> pgwarden.io/fence=<instance>[,<instance>]`.
pub const FENCE: &str = "pgwarden.io/fence";
/// `kubectl annotate pgc <name> pgwarden.io/unfence=<instance>[,<instance>]`.
pub const UNFENCE: &str = "pgwarden.io/unfence";
/// `kubectl annotate pgc <name> pgwarden.io/restart=<instance>[,<instance>]`.
pub const RESTART: &str = "pgwarden.io/restart";

/// What a person asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Hand the primary over to `target` (`None`: the best replica).
    Switchover {
        /// The replica to hand over to.
        target: Option<String>,
    },
    /// Fence these instances.
    Fence(Vec<String>),
    /// Unfence these instances.
    Unfence(Vec<String>),
    /// Re-create these instances' Pods.
    Restart(Vec<String>),
}

/// One annotation, understood or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The annotation's key.
    pub annotation: &'static str,
    /// Its value as written.
    pub value: String,
    /// The request, or why it is refused.
    pub request: Result<Request, String>,
}

fn instances(names: &Names, count: i32, value: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if list.is_empty() {
        return Err(format!("name one or more instances of {} (e.g. {})", names.cluster, names.instance(1)));
    }
    for i in &list {
        match names.instance_number(i) {
            Some(n) if n <= count => {}
            _ => {
                return Err(format!(
                    "{i} is not an instance of {} (instances {}..{})",
                    names.cluster,
                    names.instance(1),
                    names.instance(count)
                ));
            }
        }
    }
    Ok(list)
}

/// The requests in `annotations`, in a fixed order: switchover, fence, unfence, restart.
pub fn parse(annotations: &BTreeMap<String, String>, names: &Names, count: i32) -> Vec<Parsed> {
    let mut out = Vec::new();
    for key in [SWITCHOVER, FENCE, UNFENCE, RESTART] {
        let Some(value) = annotations.get(key) else { continue };
        let request = match key {
            SWITCHOVER if value.trim() == "auto" => Ok(Request::Switchover { target: None }),
            SWITCHOVER => instances(names, count, value).and_then(|l| match l.as_slice() {
                [one] => Ok(Request::Switchover { target: Some(one.clone()) }),
                _ => Err("a switchover has one target (or auto)".to_owned()),
            }),
            FENCE => instances(names, count, value).map(Request::Fence),
            UNFENCE => instances(names, count, value).map(Request::Unfence),
            _ => instances(names, count, value).map(Request::Restart),
        };
        out.push(Parsed { annotation: key, value: value.clone(), request });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn requests_name_instances_of_the_cluster() {
        let names = Names::new("pg", "db");
        let p = parse(&ann(&[(SWITCHOVER, "pg-2"), (FENCE, "pg-1, pg-3"), ("other", "x")]), &names, 3);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].request, Ok(Request::Switchover { target: Some("pg-2".into()) }));
        assert_eq!(p[1].request, Ok(Request::Fence(vec!["pg-1".into(), "pg-3".into()])));
        let p = parse(&ann(&[(SWITCHOVER, "auto"), (RESTART, "pg-4"), (UNFENCE, "")]), &names, 3);
        assert_eq!(p[0].request, Ok(Request::Switchover { target: None }));
        assert!(p[1].request.as_ref().is_err_and(|e| e.contains("name one or more instances")), "{:?}", p[1]);
        assert!(p[2].request.as_ref().is_err_and(|e| e.contains("pg-4 is not an instance of pg")), "{:?}", p[2]);
        let p = parse(&ann(&[(SWITCHOVER, "pg-1,pg-2")]), &names, 3);
        assert!(p[0].request.is_err());
    }
}
