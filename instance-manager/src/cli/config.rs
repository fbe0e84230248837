//! `config check` and `config print`: the configuration as `run` would load it, without running
//! anything. Tools that write an InstanceConfig (`scripts/local-cluster`, the benchmarks, an
//! operator's tests) check it here instead of re-implementing the validation, and read the
//! defaults here instead of copying them.
//!
//! Both go through [`crate::config::load`], the very function `run` calls: the same overrides
//! (environment, then flags), the same problems naming the field and the fix, the same exit
//! code 2. Nothing secret is printed: an InstanceConfig names files holding secrets, never the
//! secrets themselves.

use super::args::{ConfigArgs, ConfigCommand, ConfigFormat};
use crate::api::InstanceConfig;
use crate::config::{self, Validated};

/// Exit code of a configuration that cannot be loaded, as `run` exits with.
pub const EXIT_INVALID: u8 = 2;

/// Runs a `config` subcommand; returns the exit code. Writes to stdout and stderr only.
pub fn config_command(command: ConfigCommand) -> u8 {
    match command {
        ConfigCommand::Check(args) => match load(&args) {
            Ok(v) => {
                println!(
                    "{}: valid (instance {}, cluster {}, Postgres binaries in {})",
                    args.file.display(),
                    v.name,
                    v.cluster,
                    v.bin_dir.display()
                );
                0
            }
            Err(code) => code,
        },
        ConfigCommand::Print { args, output } => match load(&args) {
            Ok(v) => match render(&effective(&v), output) {
                Ok(text) => {
                    print!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("error: cannot render the configuration of {}: {e}", args.file.display());
                    1
                }
            },
            Err(code) => code,
        },
    }
}

/// Loads `args.file` as `run` does; a refusal is printed on stderr and becomes the exit code.
fn load(args: &ConfigArgs) -> Result<Validated, u8> {
    config::load(&args.file, &args.overrides.resolve()).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_INVALID
    })
}

/// The configuration the manager would run with: overrides applied (by `load`), and what
/// validation resolved written back (name, the default cluster name, the bin dir found on PATH).
pub fn effective(v: &Validated) -> InstanceConfig {
    let mut cfg = v.config.clone();
    cfg.name = Some(v.name.clone());
    cfg.cluster = Some(v.cluster.clone());
    cfg.bin_dir = Some(v.bin_dir.clone());
    cfg
}

/// Why a configuration could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The YAML encoder refused it.
    #[error(transparent)]
    Yaml(#[from] serde_yaml::Error),
    /// The JSON encoder refused it.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// `cfg` as YAML or pretty JSON, ending with a newline.
pub fn render(cfg: &InstanceConfig, format: ConfigFormat) -> Result<String, RenderError> {
    Ok(match format {
        ConfigFormat::Yaml => serde_yaml::to_string(cfg)?,
        ConfigFormat::Json => serde_json::to_string_pretty(cfg)? + "\n",
    })
}
