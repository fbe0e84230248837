//! Asking Postgres whether it accepts a configuration before it is written.
//!
//! A value Postgres refuses (`work_mem: bogus`) must never reach `pgwarden.conf`: on a reload
//! Postgres only logs the refusal and keeps the old value, and at the next start it exits at
//! once, a crash loop whose cause is buried in the log. So every configuration is rendered to
//! a scratch file beside `pgwarden.conf` first (relative includes resolve the same way) and
//! checked with `postgres -D <dataDir> -c config_file=<scratch> -C port`: the postmaster reads
//! and validates every parameter of the file, including those that need a restart, prints
//! one value and exits without touching the running server (about 20 ms). A file with errors
//! makes it exit non-zero after one log line per bad parameter, which [`parse_refusals`]
//! turns into [`RefusedParameter`]s.
//!
//! Only values are checked: a value that is valid but too large for the machine
//! (`shared_buffers = 1TB`) still fails at start, with Postgres' own message.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{Upstream, render_conf};
use crate::api::RefusedParameter;
use crate::config::Validated;
use crate::paths::{Paths, write_atomic};
use crate::supervisor::{self, Supervisor};

/// The scratch file, in the data directory so that `include_if_exists 'postgresql.conf'`
/// resolves as it will for `pgwarden.conf`.
const SCRATCH: &str = ".pgwarden.conf.check";
/// `postgres -C` reads a few files; a minute means something is badly wrong.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a configuration may not be written.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Postgres refuses these parameters.
    #[error("postgres refuses {}: {}; fix postgres.parameters in the instance configuration", names(.0), messages(.0))]
    Refused(Vec<RefusedParameter>),
    /// The check could not be run.
    #[error("cannot check the postgres parameters with {program}: {reason}")]
    Unchecked {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },
}

impl CheckError {
    /// The refused parameters (empty when the check could not run).
    pub fn refused(&self) -> &[RefusedParameter] {
        match self {
            CheckError::Refused(r) => r,
            CheckError::Unchecked { .. } => &[],
        }
    }
}

fn names(refused: &[RefusedParameter]) -> String {
    let names: Vec<&str> = refused.iter().filter_map(|r| r.parameter.as_deref()).collect();
    if names.is_empty() { "its configuration".into() } else { names.join(", ") }
}

fn messages(refused: &[RefusedParameter]) -> String {
    refused.iter().map(|r| r.message.as_str()).collect::<Vec<_>>().join("; ")
}

/// Checks that Postgres accepts the configuration `v` would render, without writing
/// `pgwarden.conf`. The data directory must exist.
pub async fn check(
    sup: &Supervisor,
    v: &Validated,
    paths: &Paths,
    upstream: Option<&Upstream>,
    sync: &str,
) -> Result<(), CheckError> {
    let scratch = paths.data_dir.join(SCRATCH);
    let program = v.bin("postgres");
    let unchecked = |reason: String| CheckError::Unchecked { program: program.display().to_string(), reason };
    write_atomic(&scratch, render_conf(v, paths, upstream, sync).as_bytes(), 0o600)
        .map_err(|e| unchecked(format!("cannot write {}: {e}", scratch.display())))?;
    let out = match v.os_user.chown(&scratch) {
        Ok(()) => run_check(sup, v, &paths.data_dir, &scratch).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let _ = std::fs::remove_file(&scratch);
    let out = out.map_err(unchecked)?;
    if out.status.success() {
        return Ok(());
    }
    let refused = parse_refusals(&out.stderr);
    if refused.is_empty() {
        return Err(unchecked(format!("{} ({})", out.last_line(), out.status)));
    }
    Err(CheckError::Refused(refused))
}

async fn run_check(
    sup: &Supervisor,
    v: &Validated,
    data_dir: &Path,
    scratch: &Path,
) -> Result<supervisor::CommandOutput, supervisor::Error> {
    let mut cmd = Command::new(v.bin("postgres"));
    cmd.arg("-D").arg(data_dir).arg("-c").arg(format!("config_file={}", scratch.display())).args(["-C", "port"]);
    crate::pgdata::postgres_env(v, &mut cmd);
    supervisor::run_quiet(sup, "postgres -C", &mut cmd, CHECK_TIMEOUT).await
}

/// The parameters a failed `postgres -C` complained about, from its stderr: one entry per
/// `LOG`/`ERROR` line, with the `DETAIL`/`HINT` lines that follow it. The closing `FATAL`
/// ("configuration file … contains errors") is kept only when nothing else was said.
pub fn parse_refusals(stderr: &str) -> Vec<RefusedParameter> {
    let mut refused: Vec<RefusedParameter> = Vec::new();
    let mut fatal = None;
    for line in stderr.lines() {
        let Some((level, message)) = split_level(line) else { continue };
        // `include_if_exists` of a file that is not there: information, not a refusal.
        if message.starts_with("skipping missing configuration file") {
            continue;
        }
        match level {
            "LOG" | "ERROR" | "WARNING" => {
                refused.push(RefusedParameter { parameter: parameter_named(message), message: message.to_string() })
            }
            "DETAIL" | "HINT" => {
                if let Some(last) = refused.last_mut() {
                    last.message = format!("{} ({message})", last.message);
                }
            }
            "FATAL" | "PANIC" => fatal = Some(message.to_string()),
            _ => {}
        }
    }
    if refused.is_empty()
        && let Some(message) = fatal
    {
        refused.push(RefusedParameter { parameter: parameter_named(&message), message });
    }
    refused
}

/// `2026-01-01 00:00:00.000 GMT [42] LOG:  invalid value …` → (`LOG`, `invalid value …`).
fn split_level(line: &str) -> Option<(&str, &str)> {
    ["LOG", "ERROR", "WARNING", "DETAIL", "HINT", "FATAL", "PANIC"].into_iter().find_map(|level| {
        let marker = format!("{level}:  ");
        let at = line.find(&marker)?;
        Some((level, line[at + marker.len()..].trim()))
    })
}

/// The name in `parameter "work_mem"`, if the message has one.
fn parameter_named(message: &str) -> Option<String> {
    let rest = &message[message.find("parameter \"")? + "parameter \"".len()..];
    Some(rest[..rest.find('"')?].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: &str = "\
2026-12-04 14:07:32.499 GMT [18410] LOG:  invalid value for parameter \"work_mem\": \"bogus\"
2026-12-04 14:07:32.499 GMT [18410] LOG:  invalid value for parameter \"shared_buffers\": \"12x\"
2026-12-04 14:07:32.499 GMT [18410] HINT:  Valid units for this parameter are \"B\", \"kB\", \"MB\", \"GB\", and \"TB\".
2026-12-04 14:07:32.499 GMT [18410] FATAL:  configuration file \"/d/.pgwarden.conf.check\" contains errors
";

    #[test]
    fn each_bad_value_is_named_with_its_hint() {
        let r = parse_refusals(BAD);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].parameter.as_deref(), Some("work_mem"));
        assert_eq!(r[0].message, "invalid value for parameter \"work_mem\": \"bogus\"");
        assert_eq!(r[1].parameter.as_deref(), Some("shared_buffers"));
        assert!(r[1].message.contains("Valid units"), "{}", r[1].message);
    }

    #[test]
    fn a_skipped_optional_include_is_not_a_refusal() {
        let r = parse_refusals(&format!(
            "2026 GMT [1] LOG:  skipping missing configuration file \"/d/pgwarden-recovery.conf\"\n{BAD}"
        ));
        assert_eq!(
            r.iter().map(|r| r.parameter.as_deref()).collect::<Vec<_>>(),
            [Some("work_mem"), Some("shared_buffers")]
        );
    }

    #[test]
    fn an_unknown_parameter_is_named() {
        let r = parse_refusals(
            "2026-12-04 14:07:29.971 GMT [1] LOG:  unrecognized configuration parameter \"foo_bar\" in file \"/d/x\" line 4\n\
             2026-12-04 14:07:29.971 GMT [1] FATAL:  configuration file \"/d/x\" contains errors\n",
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].parameter.as_deref(), Some("foo_bar"));
    }

    #[test]
    fn a_lone_fatal_is_kept() {
        let r = parse_refusals("postgres: some noise\n2026 GMT [1] FATAL:  could not access directory \"/d\"\n");
        assert_eq!(r, [RefusedParameter { parameter: None, message: "could not access directory \"/d\"".into() }]);
        assert!(parse_refusals("").is_empty());
    }

    #[test]
    fn the_error_names_the_parameter_and_the_fix() {
        let e = CheckError::Refused(parse_refusals(BAD)).to_string();
        assert!(e.starts_with("postgres refuses work_mem, shared_buffers: invalid value"), "{e}");
        assert!(e.contains("fix postgres.parameters"), "{e}");
    }
}
