//! Loading the [`InstanceConfig`]: file, then environment, then flags; validation; hot reload.
//!
//! Validation runs before anything touches the disk and reports **every** problem at once,
//! one line each, naming the field and the fix ([`Problems`]). What validation learns about
//! the machine (the resolved bin dir, the OS user's uid/gid) is kept in [`Validated`] so the
//! rest of the manager never re-derives it.

mod validate;
mod validate_backup;
mod validate_metrics;
mod validate_tls;
mod validate_wal_dir;
mod watch;

use std::path::{Path, PathBuf};

pub use validate::{Problem, Problems, Purpose, RESERVED_PARAMETERS, Validated, validate, validate_for};
pub use validate_metrics::MetricsSettings;
pub use watch::watch_files;

use crate::api::InstanceConfig;

/// Errors loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML did not parse or has unknown/mistyped fields.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What serde said, with the field path in front.
        message: String,
    },
    /// The document parsed but is not acceptable.
    #[error("config file {path} is invalid:\n{problems}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Problems,
    },
}

/// Values that override the file: the environment (`POD_NAME`, `POD_NAMESPACE`,
/// `CLUSTER_NAME`) and command-line flags. Flags win over the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Instance name.
    pub name: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// Cluster name.
    pub cluster: Option<String>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
}

impl Overrides {
    /// The overrides the environment provides, the way Kubernetes' downward API sets them.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self { name: var("POD_NAME"), namespace: var("POD_NAMESPACE"), cluster: var("CLUSTER_NAME"), data_dir: None }
    }

    /// `self` with every value `flags` sets replaced by the flag's.
    pub fn then(self, flags: Overrides) -> Self {
        Self {
            name: flags.name.or(self.name),
            namespace: flags.namespace.or(self.namespace),
            cluster: flags.cluster.or(self.cluster),
            data_dir: flags.data_dir.or(self.data_dir),
        }
    }

    fn apply(&self, cfg: &mut InstanceConfig) {
        if let Some(v) = &self.name {
            cfg.name = Some(v.clone());
        }
        if let Some(v) = &self.namespace {
            cfg.namespace = Some(v.clone());
        }
        if let Some(v) = &self.cluster {
            cfg.cluster = Some(v.clone());
        }
        if let Some(v) = &self.data_dir {
            cfg.data_dir = v.clone();
        }
    }
}

/// Parses a YAML document, naming the field of any error (`postgres.port: invalid type ...`).
/// Broken YAML is reported as such first: the typed pass reads lazily and would otherwise
/// report the first field it cannot type (`name: [unclosed` as "invalid type: sequence").
pub fn parse(text: &str, path: &Path) -> Result<InstanceConfig, Error> {
    if let Err(e) = serde_yaml::from_str::<serde_yaml::Value>(text) {
        return Err(Error::Parse {
            path: path.to_path_buf(),
            message: format!(
                "YAML syntax error: {e}\n  hint: check quoting, brackets and indentation there (a value starting \
                 with [, {{, * or & must be quoted)"
            ),
        });
    }
    let de = serde_yaml::Deserializer::from_str(text);
    // serde_yaml's messages already start with the path of the offending field
    // (`postgres.port: invalid type ...`), plus the line and column.
    serde_path_to_error::deserialize(de)
        .map_err(|e| Error::Parse { path: path.to_path_buf(), message: add_parse_hint(e.into_inner().to_string()) })
}

fn add_parse_hint(message: String) -> String {
    if message.contains("unknown field `faultFile`") {
        format!(
            "{message}\n  hint: lease.faultFile injects lease-store faults for tests and exists only in builds with \
             the cargo feature `testkit`; a production build refuses it: remove lease.faultFile"
        )
    } else if message.contains("unknown field") {
        format!(
            "{message}\n  hint: check the spelling; fields are camelCase (see the InstanceConfig reference in README.md)"
        )
    } else {
        message
    }
}

/// Reads, parses, applies overrides and validates the configuration at `path` for a start.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Validated, Error> {
    load_for(path, overrides, Purpose::Start)
}

/// Reads, parses, applies overrides and validates the configuration at `path` for `purpose`
/// (an edit of a running instance's file is [`Purpose::Edit`]).
pub fn load_for(path: &Path, overrides: &Overrides, purpose: Purpose) -> Result<Validated, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
    let mut cfg = parse(&text, path)?;
    overrides.apply(&mut cfg);
    validate_for(cfg, purpose).map_err(|problems| Error::Invalid { path: path.to_path_buf(), problems })
}

#[cfg(all(test, feature = "testkit"))]
mod operator_rendered_tests;
#[cfg(test)]
mod tests;
