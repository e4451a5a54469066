//! Resolved notifications (issue 14 §3): where a pattern has a natural end,
//! the engine emits a resolution of its alert — an absence alert when the
//! expected event finally arrives, a sliding-threshold alert when the
//! aggregate falls back across its bound. A resolution names the alert it
//! resolves, carries the resolving event, and has a deterministic id of its
//! own. Times are seconds after `T0`.

mod engine_support;

use cepheus::engine::{Alert, EngineConfig};
use engine_support::*;
use serde_json::json;

const HEARTBEAT: &str = r#"
id: device-offline
absence:
  expect: type == "heartbeat"
  within: 60s
"#;

const PAYMENT_AFTER_ORDER: &str = r#"
id: unpaid-order
absence:
  after: type == "order"
  expect: type == "payment"
  within: 60s
"#;

const VELOCITY: &str = r#"
id: velocity
threshold:
  match: type == "x"
  window: {sliding: 1m}
  aggregate: count
  at_least: 3
"#;

/// The only resolution set aside so far.
fn only_resolution(w: &mut World) -> Alert {
    only(std::mem::take(&mut w.resolutions))
}

#[test]
fn a_heartbeat_after_the_silence_resolves_the_offline_alert() {
    let mut w = World::new(&[HEARTBEAT]);
    w.send("heartbeat", 0.0);
    let fired = only(w.advance(60.0));
    assert!(w.resolutions.is_empty(), "nothing resolved while silent");
    assert!(w.advance(200.0).is_empty() && w.resolutions.is_empty());

    assert!(w.send("heartbeat", 250.0).is_empty(), "no new alert");
    let resolution = only_resolution(&mut w);
    assert_eq!(resolution.resolves.as_deref(), Some(fired.id.as_str()));
    assert_ne!(resolution.id, fired.id);
    assert_eq!(secs(resolution.time), 250.0, "resolved at the event's time");
    assert_eq!(event_times(&resolution), vec![250.0], "by that heartbeat");
    assert_eq!(resolution.rule, fired.rule);
    assert_eq!(resolution.key, fired.key);
    assert_eq!(value(&resolution, "resolves"), &json!(fired.id));

    // Resolved once: the next heartbeats resolve nothing more, and the rule
    // is armed again.
    w.send("heartbeat", 260.0);
    assert!(w.resolutions.is_empty());
    let again = only(w.advance(320.0));
    assert_ne!(again.id, fired.id);
}

#[test]
fn a_heartbeat_older_than_the_silence_resolves_nothing() {
    let mut w = World::with_lateness(&[HEARTBEAT], 100);
    w.send("heartbeat", 100.0);
    w.advance(300.0); // watermark 200: the alert fired at 160
    assert_eq!(w.resolutions.len(), 0);
    w.send("heartbeat", 90.0); // within lateness, but before the silence began
    assert!(w.resolutions.is_empty(), "{:#?}", w.resolutions);
}

#[test]
fn the_expected_event_after_a_missed_deadline_resolves_that_trigger_s_alert() {
    let mut w = World::new(&[PAYMENT_AFTER_ORDER]);
    w.send("order", 0.0);
    w.send("order", 30.0);
    let first = only(w.advance(60.0));
    let second = only(w.advance(90.0));
    w.send("payment", 120.0);
    let mut resolved: Vec<String> = w
        .resolutions
        .drain(..)
        .map(|r| r.resolves.expect("a resolution"))
        .collect();
    resolved.sort();
    let mut expected = vec![first.id, second.id];
    expected.sort();
    assert_eq!(resolved, expected, "both unpaid orders are resolved");
}

#[test]
fn a_trigger_after_the_expected_event_is_not_resolved_by_it() {
    let mut w = World::new(&[PAYMENT_AFTER_ORDER]);
    w.send("payment", 5.0);
    w.send("order", 10.0);
    only(w.advance(70.0));
    assert!(w.resolutions.is_empty());
}

#[test]
fn a_sliding_threshold_is_resolved_when_its_aggregate_falls_back_across_the_bound() {
    let mut w = World::new(&[VELOCITY]);
    w.send("x", 0.0);
    w.send("x", 10.0);
    let fired = only(w.send("x", 20.0));
    w.send("x", 30.0);
    assert!(w.resolutions.is_empty(), "still above the bound");
    // At 70 the events of 0 and 10 have left the minute: 2 < 3. (The
    // instant settles once the clock has passed it: an event at 70 could
    // still have come.)
    assert!(w.send("y", 71.0).is_empty());
    let resolution = only_resolution(&mut w);
    assert_eq!(resolution.resolves.as_deref(), Some(fired.id.as_str()));
    assert_eq!(value(&resolution, "value"), &json!(2.0));
    assert_eq!(secs(resolution.time), 70.0, "when the entries left");
    assert!(resolution.events.is_empty(), "time, not an event, ended it");
    // Crossing again fires a new alert, which its own resolution follows.
    let again = only(w.send("x", 75.0));
    assert_ne!(again.id, fired.id);
}

#[test]
fn resolutions_are_deterministic() {
    let run = || {
        let mut w = World::new(&[HEARTBEAT, VELOCITY]);
        for t in [0.0, 1.0, 2.0] {
            w.send("x", t);
        }
        w.send("heartbeat", 3.0);
        w.advance(100.0);
        w.send("heartbeat", 120.0);
        w.send("x", 121.0);
        w.resolutions
            .iter()
            .map(|r| r.id.clone())
            .collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(first, run());
}

#[test]
fn alerts_waiting_for_their_resolution_are_bounded() {
    let config = EngineConfig {
        max_partial_matches: 2,
        ..EngineConfig::default()
    };
    let mut w = World::with_config(&[PAYMENT_AFTER_ORDER], config);
    for t in [0.0, 1.0, 2.0, 3.0] {
        w.send("order", t * 100.0);
        w.advance(t * 100.0 + 60.0);
    }
    w.send("payment", 1000.0);
    assert_eq!(
        w.resolutions.len(),
        2,
        "only the newest two alerts are remembered for resolution"
    );
}

#[test]
fn a_threshold_with_several_aggregates_is_resolved_with_their_values() {
    let mut w = World::new(&[r#"
id: big-spender
threshold:
  match: type == "x"
  window: {sliding: 1m}
  aggregates:
    n: count
    total: sum(data.v)
  condition: n >= 2 && total > 10
"#]);
    w.send_data("x", 0.0, v(6.0));
    let fired = only(w.send_data("x", 30.0, v(6.0)));
    assert!(w.send_data("x", 61.0, v(1.0)).is_empty());
    let resolution = only_resolution(&mut w);
    assert_eq!(resolution.resolves.as_deref(), Some(fired.id.as_str()));
    // At 60 the first entry left: one transfer of 6 remained.
    assert_eq!(secs(resolution.time), 60.0);
    assert_eq!(value(&resolution, "n"), &json!(1.0));
    assert_eq!(value(&resolution, "total"), &json!(6.0));
}
