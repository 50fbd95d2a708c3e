//! slapproxy's own test suites as master-lite's spec (issue 15).
//!
//! `tests/slapproxy-compat/run.py` runs slapos.core 1.26.1's `test_slapproxy.py` and
//! `test_slapproxy_json_rpc.py` (from `.venv/slapos`, see `scripts/deps/slapos-venv.sh`) with
//! slapproxy's in-process Flask app swapped for a fresh `slapos-master serve --cfg` per test,
//! and writes each test's outcome (`passed`, `failed`, `excluded` with its reason).
//!
//! The outcome is checked against `tests/slapproxy-compat/expected-failures.txt` (one test id
//! a line, `# why` after it): a test failing that is not listed fails this test, and so does a
//! listed test that now passes (remove it from the list), so both show up in review.
//!
//! Without the venv the test prints a reason and passes, unless `SLAPOS_REQUIRE_TOOLS=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use slapos_test_support::bins::bin;
use slapos_test_support::gate::{Need, skip};
use slapos_tests::repo_root;

/// The ids listed in the expected-failure file (comments and blank lines skipped).
fn expected_failures(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn slapproxy_suites_against_master_lite() {
    let root = repo_root();
    let python = root.join(".venv/slapos/bin/python");
    if !python.exists() {
        skip(
            Need::Tools,
            "slapproxy_suites_against_master_lite",
            &format!(
                "{} missing: run scripts/deps/slapos-venv.sh",
                python.display()
            ),
        );
        return;
    }
    let compat = root.join("tests/slapproxy-compat");
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = dir.path().join("results.json");
    let started = std::time::Instant::now();
    let run = Command::new(&python)
        .arg(compat.join("run.py"))
        .arg("--master")
        .arg(bin("slapos-master"))
        .arg("--out")
        .arg(&out)
        .arg("--jobs")
        .arg("2")
        .env("SLAPPROXY_COMPAT_TMP", dir.path())
        .output()
        .expect("run tests/slapproxy-compat/run.py");
    let log = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "run.py failed ({:?}):\n{log}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!(
        "{} ({:.0?})",
        log.lines().last().unwrap_or(""),
        started.elapsed()
    );

    let results: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&out).expect("read results.json"))
            .expect("results.json is a JSON object");
    let outcome = |o: &str| -> BTreeSet<String> {
        results
            .iter()
            .filter(|(_, r)| r["outcome"] == o)
            .map(|(id, _)| id.clone())
            .collect()
    };
    let failed = outcome("failed");
    let passed = outcome("passed");
    let list = compat.join("expected-failures.txt");
    let expected = expected_failures(&std::fs::read_to_string(&list).expect("read expected list"));

    let unknown: Vec<_> = expected
        .iter()
        .filter(|id| !results.contains_key(*id))
        .collect();
    assert!(
        unknown.is_empty(),
        "{} names tests that do not exist: {unknown:?}",
        list.display()
    );
    let newly_failing: Vec<_> = failed.difference(&expected).collect();
    let details: Vec<String> = newly_failing
        .iter()
        .map(|id| format!("{id}:\n{}", results[*id]["detail"].as_str().unwrap_or("")))
        .collect();
    assert!(
        newly_failing.is_empty(),
        "tests failing that {} does not list:\n{}",
        list.display(),
        details.join("\n\n")
    );
    let newly_passing: Vec<_> = expected.intersection(&passed).collect();
    assert!(
        newly_passing.is_empty(),
        "tests listed in {} now pass, remove them: {newly_passing:?}",
        list.display()
    );
    assert!(
        passed.len() >= 70,
        "only {} tests passed: the harness itself is broken?\n{log}",
        passed.len()
    );
}
