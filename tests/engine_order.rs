//! Event-time order within the allowed lateness (DESIGN §4, issue 12 §2):
//! with lateness L > 0 an entity's events wait in its reorder buffer until
//! its watermark (clock − L) passes them, then run in time order (ties in
//! acceptance order); with L = 0 nothing waits.

mod engine_support;

use cepheus::engine::{EngineConfig, KeyState};
use cepheus::time::Duration;
use engine_support::*;
use serde_json::json;

const A_THEN_B: &str = r#"
id: a-then-b
sequence:
  within: 1m
  steps:
    - name: a
      match: type == "A"
    - name: b
      match: type == "B"
"#;

#[test]
fn events_out_of_order_within_the_lateness_match_in_time_order() {
    // The issue's example: B@00:05 then A@00:03, lateness 10 s.
    let mut w = World::with_lateness(&[A_THEN_B], 10);
    assert!(w.send("B", 5.0).is_empty());
    assert!(w.send("A", 3.0).is_empty(), "both wait for the watermark");
    let alert = only(w.advance(15.0));
    assert_eq!(event_times(&alert), vec![3.0, 5.0]);
    assert_eq!(secs(alert.time), 5.0);
    assert!(w.advance(100.0).is_empty(), "once");
}

#[test]
fn a_later_event_releases_the_waiting_ones() {
    let mut w = World::with_lateness(&[A_THEN_B], 10);
    w.send("B", 5.0);
    w.send("A", 3.0);
    let alert = only(w.send("other", 16.0));
    assert_eq!(event_times(&alert), vec![3.0, 5.0]);
}

#[test]
fn ties_keep_acceptance_order() {
    let mut w = World::with_lateness(&[A_THEN_B], 10);
    w.send("A", 5.0);
    w.send("B", 5.0);
    assert_eq!(times(&w.advance(15.0)), vec![5.0]);
    let mut w = World::with_lateness(&[A_THEN_B], 10);
    w.send("B", 5.0);
    w.send("A", 5.0);
    assert!(w.advance(15.0).is_empty(), "B was accepted before A");
}

#[test]
fn with_no_lateness_nothing_waits() {
    let mut w = World::new(&[A_THEN_B]);
    w.send("A", 3.0);
    assert_eq!(times(&w.send("B", 5.0)), vec![5.0]);
    assert!(w.state(KEY).buffer.is_empty());
}

#[test]
fn the_buffer_is_visible_in_the_entity_view_and_due_for_the_timer_service() {
    let mut w = World::with_lateness(&[A_THEN_B], 10);
    w.send("A", 3.0);
    let view = w.engine.describe(w.states.get(KEY).expect("state"));
    assert_eq!(view.waiting.as_array().map(Vec::len), Some(1));
    assert_eq!(view.waiting[0]["waiting_for"], json!(["a-then-b"]));
    // The timer service wakes an idle entity when the watermark passes it.
    assert_eq!(w.state(KEY).next_deadline(), Some(at(13.0)));
    assert!(!w.state(KEY).is_idle());
}

#[test]
fn the_buffer_survives_a_snapshot() {
    let mut w = World::with_lateness(&[A_THEN_B], 10);
    w.send("B", 5.0);
    w.send("A", 3.0);
    let state = w.states.remove(KEY).expect("state");
    let bytes = rmp_serde::to_vec(&state).expect("positional MessagePack");
    let restored: KeyState = rmp_serde::from_slice(&bytes).expect("reads back");
    assert_eq!(restored, state);
    w.states.insert(KEY.into(), restored);
    assert_eq!(times(&w.advance(15.0)), vec![5.0]);
}

#[test]
fn a_full_buffer_evaluates_its_oldest_events_at_once_and_counts_them() {
    let config = EngineConfig {
        allowed_lateness: Duration::from_secs(10),
        max_buffered_events: 2,
        ..EngineConfig::default()
    };
    let mut w = World::with_config(&[A_THEN_B], config);
    w.send("A", 1.0);
    w.send("A", 2.0);
    let alerts = w.send("B", 3.0);
    assert!(alerts.is_empty());
    assert_eq!(w.state(KEY).buffer.len(), 2);
    assert_eq!(w.state(KEY).dropped.released_early, 1);
    assert_eq!(times(&w.advance(13.0)), vec![3.0]);
}

#[test]
fn each_rule_evaluates_a_waiting_event_at_its_own_watermark() {
    let quick = "id: quick\nlateness: {allowed: 0s}\nsequence:\n  steps:\n    - match: type == \"A\"\n    - match: type == \"B\"\n";
    let patient = "id: patient\nlateness: {allowed: 10s}\nsequence:\n  steps:\n    - match: type == \"A\"\n    - match: type == \"B\"\n";
    let mut w = World::new(&[quick, patient]);
    w.send("B", 5.0);
    let outcome = w.outcome(KEY, "A", 3.0, json!({}));
    let late: Vec<&str> = outcome.late_for.iter().map(|(r, _)| &**r).collect();
    assert_eq!(late, ["quick"], "late for the rule without lateness only");
    let alert = only(w.send("A", 20.0));
    assert_eq!(&*alert.rule, "patient");
    assert_eq!(event_times(&alert), vec![3.0, 5.0]);
    assert_eq!(
        times(&w.send("B", 21.0)),
        vec![21.0],
        "quick: A@20 then B@21"
    );
}

#[test]
fn a_sliding_window_covers_size_up_to_each_event_not_more() {
    // Before event-time order, entries left when the watermark (clock − L)
    // passed time + size: the window at the event at 65 s was (−5 s, 65 s].
    let rule =
        "id: burst\nthreshold:\n  match: type == \"x\"\n  window: {sliding: 1m}\n  at_least: 2\n";
    let mut w = World::with_lateness(&[rule], 10);
    w.send("x", 0.0);
    w.send("x", 65.0);
    assert!(w.advance(200.0).is_empty(), "(5 s, 65 s] holds one event");
    w.send("x", 230.0);
    w.send("x", 250.0);
    assert_eq!(times(&w.advance(300.0)), vec![250.0]);
}
