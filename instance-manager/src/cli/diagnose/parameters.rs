//! The `postgres parameters` check: values Postgres refused when the configuration was last
//! edited (`/status` `refused_parameters`). The edit was not applied; the fix is in the
//! configuration, not in Postgres.

use super::Check;
use crate::api::InstanceStatus;

const NAME: &str = "postgres parameters";

/// Fails when Postgres refused a parameter of the last edit; absent otherwise (the
/// `configuration` check already says that the last reload was applied).
pub fn parameters_check(s: &InstanceStatus) -> Option<Check> {
    if s.refused_parameters.is_empty() {
        return None;
    }
    let said: Vec<String> = s
        .refused_parameters
        .iter()
        .map(|r| match &r.parameter {
            Some(p) => format!("{p}: {}", r.message),
            None => r.message.clone(),
        })
        .collect();
    let names: Vec<&str> = s.refused_parameters.iter().filter_map(|r| r.parameter.as_deref()).collect();
    let fix = if names.is_empty() {
        "correct postgres.parameters in the cluster spec or instance configuration".to_string()
    } else {
        format!("correct {} under postgres.parameters in the cluster spec or instance configuration", names.join(", "))
    };
    Some(Check::fail(
        NAME,
        format!("postgres refused the last edit, which was not applied: {}", said.join("; ")),
        format!("{fix}; the previous values stay in effect until then"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RefusedParameter;
    use crate::cli::diagnose::Outcome;

    #[test]
    fn a_refused_parameter_fails_with_its_name_and_fix() {
        let mut s = crate::cli::status::tests::primary_status();
        assert_eq!(parameters_check(&s), None);
        s.refused_parameters = vec![RefusedParameter {
            parameter: Some("work_mem".into()),
            message: "invalid value for parameter \"work_mem\": \"bogus\"".into(),
        }];
        let c = parameters_check(&s).expect("a check");
        assert_eq!(c.outcome, Outcome::Fail);
        assert!(c.detail.contains("work_mem: invalid value"), "{}", c.detail);
        assert!(c.hint.as_deref().unwrap_or("").contains("correct work_mem under postgres.parameters"), "{c:?}");
    }
}
