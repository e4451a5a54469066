//! `cepheus test FILE|DIR`: rule test files run like `promtool test rules`,
//! PASS or FAIL per case with a diff, exit status 1 on any failure.

mod common;

use std::process::Command;

/// Writes `text` to `path`, creating its folders.
fn write_file(path: &std::path::Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    common::write_file(path, text);
}

fn cepheus_test(args: &[&std::path::Path]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cepheus"))
        .arg("test")
        .args(args)
        .output()
        .expect("cepheus test runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

const RULE: &str = r#"id: two-failures
description: Two failed logins in a minute
sequence:
  within: 1m
  steps:
    - name: failures
      match: type == "login_failed"
      times: 2
alert:
  message: "{{key}}: {{failures.count}} failures"
"#;

#[test]
fn the_examples_in_patterns_pass() {
    let patterns = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("patterns");
    let (ok, out) = cepheus_test(&[&patterns]);
    assert!(ok, "{out}");
    assert!(out.contains("PASS"), "{out}");
    assert!(out.contains(" 0 failed"), "{out}");
}

#[test]
fn a_failing_case_shows_missing_extra_and_differing_alerts_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("rules/two-failures.yaml"), RULE);
    let tests = dir.path().join("tests/two.yaml");
    write_file(
        &tests,
        r#"rule_files: [../rules/two-failures.yaml]
cases:
  - name: fires once
    events:
      - {key: a, type: login_failed, time: "2026-01-01T00:00:00Z"}
      - {key: a, type: login_failed, time: "2026-01-01T00:00:10Z"}
    alerts:
      - {key: a, time: "2026-01-01T00:00:10Z", message: "a: 2 failures"}
  - name: wrong message and time
    events:
      - {key: b, type: login_failed, time: "2026-01-01T00:00:00Z"}
      - {key: b, type: login_failed, time: "2026-01-01T00:00:10Z"}
    alerts:
      - {key: b, time: "2026-01-01T00:00:11Z", message: "b: 3 failures"}
  - name: expected an alert that does not come
    events:
      - {key: c, type: login_failed, time: "2026-01-01T00:00:00Z"}
    alerts:
      - {key: c, time: "2026-01-01T00:00:00Z"}
  - name: an alert that should not fire
    events:
      - {key: d, type: login_failed, time: "2026-01-01T00:00:00Z"}
      - {key: d, type: login_failed, time: "2026-01-01T00:00:01Z"}
    alerts: []
"#,
    );
    let (ok, out) = cepheus_test(&[&tests]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("PASS  ") && out.contains(": fires once"),
        "{out}"
    );
    assert!(
        out.contains("alert 0 differs in time, message"),
        "the differing fields are named: {out}"
    );
    assert!(out.contains("alert 0 missing"), "{out}");
    assert!(out.contains("alert 0 extra"), "{out}");
    assert!(out.contains("1 passed, 3 failed"), "{out}");
}

#[test]
fn a_missing_or_invalid_rule_is_an_error_not_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("cases/nothing.yaml");
    write_file(&tests, "cases: []\n");
    let (ok, out) = cepheus_test(&[&tests]);
    assert!(
        !ok && out.contains("ERROR") && out.contains("nothing.yaml"),
        "{out}"
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (ok, out) = cepheus_test(&[&empty]);
    assert!(!ok && out.contains("no test files"), "{out}");
}
