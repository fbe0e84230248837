//! `operator`: not implemented yet; the instance managers run without it (docs/architecture.md §1).

fn main() -> std::process::ExitCode {
    eprintln!(
        "pgwarden operator: not available yet in this version; run instances with `instance-manager run` (see README.md)"
    );
    std::process::ExitCode::from(2)
}
