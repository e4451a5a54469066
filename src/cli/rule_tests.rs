//! `cepheus test FILE|DIR…`: runs rule test files, like `promtool test rules`.
//!
//! A test file holds event streams and the alerts each must give
//! (`docs/rules.md`, "Testing rules"):
//!
//! ```yaml
//! rule_files: [../brute-force-login.yaml]   # optional, relative to this file
//! cases:
//!   - name: three failures, then a success
//!     events:
//!       - {key: acct-42, type: login_failed, time: "2026-03-02T09:00:00Z"}
//!     advance_to: "2026-03-02T10:00:00Z"    # optional: end of input for every entity
//!     alerts:                                # expected, in order; [] = must not fire
//!       - {key: acct-42, time: "2026-03-02T09:00:03Z", message: "...", values: {failures.count: 3}}
//! ```
//!
//! Without `rule_files`, a test file `DIR/cases/NAME.yaml` tests the rule
//! file `DIR/NAME.yaml` (the layout of `patterns/`). A directory means its
//! `*.yaml` test files, or those of its `cases/` folder. Each case runs
//! through a fresh engine on event time, as `cepheus replay` does; expected
//! alerts are compared in order: `key` and `time` always, `rule`, `message`
//! and each named entry of `values` when given. The report prints `PASS` or
//! `FAIL` per case, with the missing, extra and differing alerts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::engine::{Alert, Engine, EngineConfig, KeyState, RuleSet};
use crate::event::Event;
use crate::rules::{self, Format, Rule, RuleLimits};
use crate::time::Timestamp;

/// A rule test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The rules under test, relative to the test file.
    #[serde(default)]
    pub rule_files: Vec<PathBuf>,
    /// The cases.
    pub cases: Vec<Case>,
}

/// One event stream and the alerts it must give.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What it shows.
    pub name: String,
    /// The events, in acceptance order.
    pub events: Vec<Event>,
    /// End of input: every entity's clock is advanced to it.
    #[serde(default)]
    pub advance_to: Option<Timestamp>,
    /// The alerts expected, in order (`[]`: none may fire).
    pub alerts: Vec<Expected>,
}

/// An expected alert: `key` and `time`, and optionally more.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// The entity key.
    pub key: String,
    /// The alert's time.
    pub time: Timestamp,
    /// The rule, when the file tests several.
    #[serde(default)]
    pub rule: Option<String>,
    /// The rendered message.
    #[serde(default)]
    pub message: Option<String>,
    /// Named values that must be present with these values.
    #[serde(default)]
    pub values: Option<Map<String, Value>>,
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// `None` when it passed; else how the alerts differ.
    pub failure: Option<String>,
}

/// The outcome of one test file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileResult {
    /// The file.
    pub path: PathBuf,
    /// Why it could not be run at all (unreadable, invalid rule).
    pub error: Option<String>,
    /// Its cases.
    pub cases: Vec<CaseResult>,
}

impl FileResult {
    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.cases.iter().all(|c| c.failure.is_none())
    }
}

/// Runs every test file `paths` names and writes the report to `out`;
/// returns true when every case passed.
pub fn run(paths: &[PathBuf], out: &mut impl Write) -> bool {
    let mut results = Vec::new();
    for path in paths {
        match test_files(path) {
            Ok(files) if files.is_empty() => results.push(FileResult {
                path: path.clone(),
                error: Some("no test files (*.yaml) here or in its cases/ folder".into()),
                cases: Vec::new(),
            }),
            Ok(files) => results.extend(files.iter().map(|f| run_file(f))),
            Err(e) => results.push(FileResult {
                path: path.clone(),
                error: Some(format!("cannot read: {e}")),
                cases: Vec::new(),
            }),
        }
    }
    let (mut passed, mut failed) = (0, 0);
    for result in &results {
        // NB: a failed write (closed pipe) must not turn into a panic; the
        // exit status still tells the outcome.
        if let Some(error) = &result.error {
            failed += 1;
            let _ = writeln!(out, "ERROR {}: {error}", result.path.display());
            continue;
        }
        for case in &result.cases {
            match &case.failure {
                None => {
                    passed += 1;
                    let _ = writeln!(out, "PASS  {}: {}", result.path.display(), case.name);
                }
                Some(diff) => {
                    failed += 1;
                    let _ = writeln!(out, "FAIL  {}: {}", result.path.display(), case.name);
                    let _ = write!(out, "{diff}");
                }
            }
        }
    }
    let _ = writeln!(out, "{passed} passed, {failed} failed");
    failed == 0
}

/// The test files `path` stands for.
fn test_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let cases = path.join("cases");
    let dir = if cases.is_dir() {
        cases
    } else {
        path.to_owned()
    };
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Runs one test file.
pub fn run_file(path: &Path) -> FileResult {
    let fail = |error: String| FileResult {
        path: path.to_owned(),
        error: Some(error),
        cases: Vec::new(),
    };
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return fail(format!("cannot read: {e}")),
    };
    let file: TestFile = match serde_saphyr::from_str(&text) {
        Ok(file) => file,
        Err(e) => return fail(format!("not a rule test file: {e}")),
    };
    let rule_paths = if file.rule_files.is_empty() {
        // `DIR/cases/NAME.yaml` tests `DIR/NAME.yaml`.
        let stem = path.file_stem().unwrap_or_default();
        let dir = path
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."));
        vec![dir.join(stem).with_extension("yaml")]
    } else {
        let base = path.parent().unwrap_or(Path::new("."));
        file.rule_files.iter().map(|p| base.join(p)).collect()
    };
    let mut rules = Vec::new();
    for rule_path in &rule_paths {
        match load_rule(rule_path) {
            Ok(rule) => rules.push(rule),
            Err(e) => return fail(e),
        }
    }
    let cases = file
        .cases
        .iter()
        .map(|case| CaseResult {
            name: case.name.clone(),
            failure: diff(&case.alerts, &evaluate(&rules, case)),
        })
        .collect();
    FileResult {
        path: path.to_owned(),
        error: None,
        cases,
    }
}

fn load_rule(path: &Path) -> Result<Arc<Rule>, String> {
    let text = fs::read_to_string(path)
        .map_err(|e| format!("cannot read the rule file {}: {e}", path.display()))?;
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        _ => Format::Yaml,
    };
    rules::load(&text, format, 1, &RuleLimits::default())
        .map(Arc::new)
        .map_err(|problems| {
            let mut message = format!("the rule file {} is invalid:", path.display());
            for p in problems {
                let _ = write!(message, "\n    {p}");
            }
            message
        })
}

/// Runs one case through a fresh engine; every firing alert in order. (Late
/// events are evaluated as the service would: dead letters give no alert.
/// Resolutions are not part of a case's expectations: a case says which
/// patterns complete, see docs/rules.md "Testing rules".)
pub fn evaluate(rules: &[Arc<Rule>], case: &Case) -> Vec<Alert> {
    let engine = Engine::new(
        Arc::new(RuleSet::new(rules.iter().cloned())),
        EngineConfig::default(),
    );
    let mut states: BTreeMap<String, KeyState> = BTreeMap::new();
    let mut alerts = Vec::new();
    for event in &case.events {
        let event = Arc::new(event.clone());
        for key in engine.routes(&event) {
            let state = states
                .entry(key.clone())
                .or_insert_with(|| KeyState::new(key));
            alerts.extend(engine.on_event(state, &event).alerts);
        }
    }
    if let Some(clock) = case.advance_to {
        for state in states.values_mut() {
            alerts.extend(engine.advance_to(state, clock));
        }
    }
    alerts.retain(|a| !a.is_resolution());
    alerts
}

/// Whether `actual` is what `expected` describes.
fn agrees(expected: &Expected, actual: &Alert) -> bool {
    expected.key == actual.key
        && expected.time == actual.time
        && expected.rule.as_deref().is_none_or(|r| r == &*actual.rule)
        && expected
            .message
            .as_ref()
            .is_none_or(|m| *m == actual.message)
        && expected
            .values
            .as_ref()
            .is_none_or(|values| values.iter().all(|(k, v)| actual.values.get(k) == Some(v)))
}

fn describe_expected(e: &Expected) -> String {
    let mut s = format!("key: {}, time: {}", e.key, e.time);
    if let Some(r) = &e.rule {
        let _ = write!(s, ", rule: {r}");
    }
    if let Some(m) = &e.message {
        let _ = write!(s, ", message: {m:?}");
    }
    if let Some(v) = &e.values {
        let _ = write!(s, ", values: {}", Value::Object(v.clone()));
    }
    s
}

fn describe_actual(a: &Alert) -> String {
    format!(
        "key: {}, time: {}, rule: {}, message: {:?}, values: {}",
        a.key,
        a.time,
        a.rule,
        a.message,
        Value::Object(a.values.clone())
    )
}

/// How `actual` differs from `expected` (`None` when it does not): each
/// alert position marked missing, extra, or differing, with the fields
/// that differ.
pub fn diff(expected: &[Expected], actual: &[Alert]) -> Option<String> {
    let same =
        expected.len() == actual.len() && expected.iter().zip(actual).all(|(e, a)| agrees(e, a));
    if same {
        return None;
    }
    let mut report = String::new();
    for i in 0..expected.len().max(actual.len()) {
        match (expected.get(i), actual.get(i)) {
            (Some(e), Some(a)) if agrees(e, a) => {
                let _ = writeln!(report, "    alert {i}: as expected");
            }
            (Some(e), Some(a)) => {
                let _ = writeln!(
                    report,
                    "  ✗ alert {i} differs in {}:",
                    differing_fields(e, a).join(", ")
                );
                let _ = writeln!(report, "      expected: {}", describe_expected(e));
                let _ = writeln!(report, "      actual:   {}", describe_actual(a));
            }
            (Some(e), None) => {
                let _ = writeln!(report, "  ✗ alert {i} missing:");
                let _ = writeln!(report, "      expected: {}", describe_expected(e));
            }
            (None, Some(a)) => {
                let _ = writeln!(report, "  ✗ alert {i} extra:");
                let _ = writeln!(report, "      actual:   {}", describe_actual(a));
            }
            (None, None) => {}
        }
    }
    Some(report)
}

fn differing_fields(e: &Expected, a: &Alert) -> Vec<String> {
    let mut fields = Vec::new();
    if e.key != a.key {
        fields.push("key".to_owned());
    }
    if e.time != a.time {
        fields.push("time".to_owned());
    }
    if e.rule.as_deref().is_some_and(|r| r != &*a.rule) {
        fields.push("rule".to_owned());
    }
    if e.message.as_ref().is_some_and(|m| *m != a.message) {
        fields.push("message".to_owned());
    }
    if let Some(values) = &e.values {
        for (k, v) in values {
            if a.values.get(k) != Some(v) {
                fields.push(format!("values.{k}"));
            }
        }
    }
    fields
}
