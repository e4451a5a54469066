//! Runs every example rule of `patterns/` against its cases.
//!
//! Each `patterns/<id>.yaml` holds one rule; `patterns/cases/<id>.yaml`
//! holds the event streams that must fire it and those that must not:
//!
//! ```yaml
//! cases:
//!   - name: three failures, then a success
//!     events:
//!       - {key: acct-42, type: login_failed, time: "2026-03-02T09:00:00Z", data: {ip: 10.0.0.7}}
//!     advance_to: "2026-03-02T10:00:00Z"   # optional: end of input for every entity
//!     alerts:                               # the alerts expected, in order; [] = must not fire
//!       - {key: acct-42, time: "2026-03-02T09:00:03Z", message: "...", values: {failures.count: 3}}
//! ```
//!
//! The runner is `cepheus test`'s (`src/cli/rule_tests.rs`): events go to
//! every entity `Engine::routes` names, in order; then, with `advance_to`,
//! every entity's clock is advanced (in key order). Expected alerts are
//! compared in order: `key` and `time` always, `message` and each named
//! entry of `values` when given.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cepheus::cli::rule_tests::{self, TestFile};
use cepheus::rules::{self, Format, Rule, RuleLimits};

fn patterns_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("patterns")
}

/// The rule files directly in `patterns/` (what `cepheus check patterns/` reads).
fn rule_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(patterns_dir())
        .expect("patterns/ exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn load_rule(path: &Path) -> Arc<Rule> {
    let text = fs::read_to_string(path).expect("readable rule file");
    match rules::load(&text, Format::Yaml, 1, &RuleLimits::default()) {
        Ok(rule) => Arc::new(rule),
        Err(problems) => panic!("{}: the rule does not load: {problems:#?}", path.display()),
    }
}

fn load_cases(path: &Path) -> TestFile {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: every rule needs its cases file: {e}", path.display()));
    serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: cannot read the cases: {e}", path.display()))
}

#[test]
fn every_pattern_fires_on_its_cases_and_only_on_them() {
    let files = rule_files();
    assert!(
        files.len() >= 12,
        "patterns/ should hold at least 12 rules, has {}",
        files.len()
    );
    let mut failures = Vec::new();
    let mut cases_run = 0;
    for path in &files {
        let rule = load_rule(path);
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a UTF-8 file name");
        assert_eq!(
            &*rule.id,
            stem,
            "{}: a rule file is named after its id",
            path.display()
        );
        assert!(
            rule.document.description.is_some() && rule.message.is_some(),
            "{}: an example rule has a description and an alert message",
            path.display()
        );
        let cases_path = patterns_dir().join("cases").join(format!("{stem}.yaml"));
        let cases = load_cases(&cases_path);
        assert!(
            cases.cases.iter().any(|c| !c.alerts.is_empty())
                && cases.cases.iter().any(|c| c.alerts.is_empty()),
            "{}: needs a stream that fires the rule and one that must not",
            cases_path.display()
        );
        for case in &cases.cases {
            cases_run += 1;
            let actual = rule_tests::evaluate(&[Arc::clone(&rule)], case);
            if let Some(report) = rule_tests::diff(&case.alerts, &actual) {
                failures.push(format!("{} — case `{}`:\n{report}", rule.id, case.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases_run} cases disagree:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_cases_file_belongs_to_a_rule() {
    let ids: Vec<String> = rule_files()
        .iter()
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_owned))
        .collect();
    for entry in fs::read_dir(patterns_dir().join("cases")).expect("patterns/cases/ exists") {
        let path = entry.expect("readable directory entry").path();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        assert!(
            ids.contains(&stem),
            "{}: no rule patterns/{stem}.yaml",
            path.display()
        );
    }
}
