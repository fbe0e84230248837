#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The scripts' own unit tests (`scripts/lib/test_*.py`: port hints, what a failed `up` leaves,
//! PATH, archive and restore planning, the configurations `up` writes, SQL through psql) run with
//! the rest of the suite, so the README's one test command (and CI) covers them. They get the
//! binary built for this suite (`PGWARDEN_TEST_MANAGER_BIN`): every kind of configuration `up`
//! writes must pass its `config check`. One of them starts a throw-away Postgres for psql.

use std::path::Path;
use std::process::Command;

#[test]
fn scripts_lib_python_unit_tests_pass() {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lib");
    let Ok(version) = Command::new("python3").arg("--version").output() else {
        eprintln!("SKIPPED: python3 is not on PATH, so scripts/lib/test_*.py did not run (apt-get install python3)");
        return;
    };
    assert!(version.status.success(), "python3 --version failed: {version:?}");
    let out = Command::new("python3")
        .args(["-B", "-m", "unittest", "discover", "-v", "-s"])
        .arg(&lib)
        .args(["-p", "test_*.py"])
        .current_dir(&lib)
        .env("PGWARDEN_TEST_MANAGER_BIN", env!("CARGO_BIN_EXE_instance-manager"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 -m unittest in {}: {e}", lib.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python3 -m unittest discover -s scripts/lib failed:\n{stderr}");
    // unittest reports "Ran N tests"; zero would mean discovery found nothing.
    assert!(stderr.contains("Ran ") && !stderr.contains("Ran 0 tests"), "{stderr}");
    // The tests that need the binary and Postgres ran (-v names every skipped test's reason).
    assert!(!stderr.contains("skipped 'needs"), "{stderr}");
}
