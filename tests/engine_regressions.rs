//! Shrunk failures of `tests/engine_props.rs`, kept as plain tests (as sled
//! keeps its `tests/00_regression.rs`). Each test names the bug in a one-line
//! post-mortem; the stream is the one proptest shrank to.

use std::sync::Arc;

use cepheus::engine::{Alert, Engine, EngineConfig, KeyState, RuleSet};
use cepheus::event::Event;
use cepheus::rules::{load, Format, RuleLimits};
use cepheus::time::{Duration, Timestamp};
use serde_json::{json, Map};

/// One input to one key.
enum In {
    /// type, time (ms), `data.v`
    Ev(&'static str, i64, Option<i64>),
    /// advance the clock to (ms)
    To(i64),
}
use In::{Ev, To};

/// Runs `inputs` for one key through `rules` (YAML) with `config`; returns
/// every alert in order.
fn run_config(rules: &[&str], config: EngineConfig, inputs: &[In]) -> Vec<Alert> {
    let compiled = rules.iter().map(|yaml| {
        Arc::new(
            load(yaml, Format::Yaml, 1, &RuleLimits::default())
                .unwrap_or_else(|p| panic!("{p:#?}")),
        )
    });
    let engine = Engine::new(Arc::new(RuleSet::new(compiled)), config);
    let mut state = KeyState::new("k");
    let mut alerts = Vec::new();
    let mut n = 0;
    for input in inputs {
        match input {
            Ev(ty, time, v) => {
                n += 1;
                let mut data = Map::new();
                if let Some(v) = v {
                    data.insert("v".into(), json!(v));
                }
                let event = Arc::new(Event {
                    id: Some(format!("e{n}")),
                    key: "k".into(),
                    event_type: (*ty).into(),
                    time: Timestamp(*time),
                    data,
                });
                alerts.extend(engine.on_event(&mut state, &event).alerts);
            }
            To(time) => alerts.extend(engine.advance_to(&mut state, Timestamp(*time))),
        }
    }
    // Firing alerts only: resolutions are tested in tests/engine_resolved.rs.
    alerts.retain(|a| !a.is_resolution());
    alerts
}

/// The same with `lateness` ms of allowed lateness.
fn run_with(rules: &[&str], lateness: i64, inputs: &[In]) -> Vec<Alert> {
    let config = EngineConfig {
        allowed_lateness: Duration(lateness),
        ..EngineConfig::default()
    };
    run_config(rules, config, inputs)
}

fn run(rules: &[&str], inputs: &[In]) -> Vec<Alert> {
    run_with(rules, 0, inputs)
}

/// Each alert as (rule, time, ordinals of its events).
fn summary(alerts: &[Alert]) -> Vec<(String, i64, Vec<u64>)> {
    alerts
        .iter()
        .map(|a| {
            (
                a.rule.to_string(),
                a.time.millis(),
                a.events.iter().map(|e| e.ordinal).collect(),
            )
        })
        .collect()
}

fn one(rule: &str, time: i64, ordinals: &[u64]) -> (String, i64, Vec<u64>) {
    (rule.to_owned(), time, ordinals.to_vec())
}

/// Post-mortem: `any` branches went ahead of older ones, so `past_last_event` emitted a later tied match.
#[test]
fn any_contiguity_emits_the_leftmost_of_matches_with_one_start() {
    let rule = "id: r1
sequence:
  contiguity: any
  steps:
    - {name: s1, match: \"type == 'a'\", times: 2}
    - {name: s2, match: \"type == 'b'\", times: {min: 1}}
";
    let alerts = run(
        &[rule],
        &[
            Ev("a", 0, None),
            Ev("a", 0, None),
            Ev("a", 0, None),
            Ev("b", 0, None),
        ],
    );
    // Of [a1 a2 b4], [a1 a3 b4] and [a2 a3 b4]: the earliest start, then the
    // earliest events, as `relaxed` would match.
    assert_eq!(summary(&alerts), vec![one("r1", 0, &[1, 2, 4])]);
}

/// Post-mortem: tied `any` branches were ordered by their bounded explanation, which hides the middle events.
#[test]
fn tied_branches_are_told_apart_by_every_event_not_the_explanation() {
    let rule = "id: r1
sequence:
  contiguity: any
  steps:
    - {name: s1, match: \"type == 'c'\"}
    - {name: s2, match: \"true\", times: 2}
    - {name: s3, match: \"true\"}
    - {name: s4, match: \"type == 'c'\"}
";
    let config = EngineConfig {
        max_explained_events: 2,
        ..EngineConfig::default()
    };
    let events = [
        Ev("c", 0, None),
        Ev("a", 0, None),
        Ev("a", 0, None),
        Ev("a", 0, None),
        Ev("a", 0, None),
        Ev("c", 0, None),
    ];
    let alerts = run_config(&[rule], config, &events);
    // Every branch explains itself as [c1, c6]; the match is c1 a2 a3 a4 c6.
    assert_eq!(summary(&alerts), vec![one("r1", 0, &[1, 6])]);
    assert_eq!(alerts[0].values["events_omitted"], json!(3));
    let leftmost = run(&[rule], &events);
    assert_eq!(summary(&leftmost), vec![one("r1", 0, &[1, 2, 3, 4, 6])]);
    assert_eq!(
        alerts[0].id, leftmost[0].id,
        "the same match, explained at two lengths"
    );
}

/// Post-mortem: runs completed only on the last positive step, so an optional one there was required.
#[test]
fn an_optional_step_before_a_trailing_negation_may_be_skipped() {
    let rule = "id: r2
sequence:
  within: 4ms
  steps:
    - {name: s1, match: \"type == 'a'\"}
    - {name: s2, match: \"type == 'b'\", optional: true}
    - {name: s3, match: \"type == 'c'\", not: true}
";
    // a, nothing else: a match at first + within.
    let alerts = run(&[rule], &[Ev("a", 4, None), To(100)]);
    assert_eq!(summary(&alerts), vec![one("r2", 8, &[1])]);
    assert_eq!(alerts[0].values["s2.count"], json!(0));
    // a then b: the optional step is still taken while pending.
    let alerts = run(&[rule], &[Ev("a", 4, None), Ev("b", 5, None), To(100)]);
    assert_eq!(summary(&alerts), vec![one("r2", 8, &[1, 2])]);
    // a then c: the trailing negation ends the run that skipped b.
    let alerts = run(&[rule], &[Ev("a", 4, None), Ev("c", 6, None), To(100)]);
    assert!(alerts.is_empty(), "{alerts:#?}");
}

/// Post-mortem: one advance sorted by alert time, but sessions fire 1 ms after theirs, so ties reordered.
#[test]
fn a_session_alert_fires_after_an_alert_of_equal_time_due_earlier() {
    let session = "id: r1
threshold:
  window: {session: {gap: 2ms}}
  aggregate: count
  below: 1.5
";
    let heartbeat = "id: r2
absence:
  expect: \"type == 'b'\"
  within: 2ms
";
    let jump = run(
        &[session, heartbeat],
        &[Ev("b", 0, None), Ev("a", 3, None), To(43)],
    );
    let steps = run(
        &[session, heartbeat],
        &[Ev("b", 0, None), To(1), To(2), Ev("a", 3, None), To(43)],
    );
    // The heartbeat is due at watermark 2, the session closes at 3.
    assert_eq!(
        summary(&jump)[..2],
        [one("r2", 2, &[1]), one("r1", 2, &[1])]
    );
    assert_eq!(jump, steps);
}

/// Post-mortem: sliding windows explained in time order, every other kind in
/// acceptance order. Since issue 12 every kind evaluates and explains in
/// event-time order (ties in acceptance order): the events wait for the
/// watermark, then the one at 22 enters first.
#[test]
fn a_sliding_window_explains_in_the_order_it_evaluates() {
    let rule = "id: r1
threshold:
  window: {sliding: 5ms}
  aggregate: count
  at_least: 2
";
    let alerts = run_with(
        &[rule],
        2,
        &[Ev("a", 23, Some(0)), Ev("a", 22, Some(1)), To(30)],
    );
    assert_eq!(summary(&alerts), vec![one("r1", 23, &[2, 1])]);
}
