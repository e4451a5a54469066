//! Absence, one test per semantic statement of DESIGN §3–§4 and of the
//! module docs of `src/engine/absence.rs`. Times are seconds after `T0`.

mod engine_support;

use cepheus::engine::EngineConfig;
use engine_support::*;
use serde_json::json;

/// After each `order`, a `payment` is expected within 60 s.
const PAYMENT_AFTER_ORDER: &str = r#"
id: unpaid-order
absence:
  after: type == "order"
  expect: type == "payment"
  within: 60s
alert:
  message: "order {{trigger.data.order}} of {{key}} unpaid by {{deadline}} (within {{within}})"
"#;

/// Without a trigger: the entity's heartbeats must keep coming.
const HEARTBEAT: &str = r#"
id: device-offline
absence:
  expect: type == "heartbeat"
  within: 60s
alert:
  message: "{{key}} silent since {{last.time}}"
"#;

// --- with a trigger -------------------------------------------------------------

#[test]
fn a_trigger_with_no_expected_event_fires_when_the_watermark_reaches_t_plus_within() {
    let mut w = World::new(&[PAYMENT_AFTER_ORDER]);
    assert!(w
        .send_data("order", 10.0, json!({"order": "o-1"}))
        .is_empty());
    assert_eq!(w.state(KEY).next_deadline(), Some(at(70.0)));
    assert!(w.advance(69.999).is_empty());
    let alert = only(w.advance(70.0));
    assert_eq!(secs(alert.time), 70.0, "the alert's time is the deadline");
    assert_eq!(
        event_times(&alert),
        vec![10.0],
        "the trigger explains the alert"
    );
    assert_eq!(
        alert.message,
        "order o-1 of k unpaid by 2026-01-01T00:01:10.000Z (within 1m)"
    );
    assert_eq!(
        value(&alert, "trigger_time"),
        &json!("2026-01-01T00:00:10.000Z")
    );
    assert_eq!(
        value(&alert, "deadline"),
        &json!("2026-01-01T00:01:10.000Z")
    );
    assert_eq!(value(&alert, "within_ms"), &json!(60_000));
}

#[test]
fn an_expected_event_inside_the_open_interval_cancels_the_alert() {
    let mut w = World::new(&[PAYMENT_AFTER_ORDER]);
    w.send("order", 10.0);
    w.send("payment", 69.999);
    assert!(w.advance(1000.0).is_empty());
    assert!(w.state(KEY).rules.is_empty(), "nothing is left pending");
}

#[test]
fn an_expected_event_at_the_trigger_time_does_not_cancel_the_interval_is_exclusive_at_t() {
    let mut w = World::new(&[PAYMENT_AFTER_ORDER]);
    w.send("order", 10.0);
    w.send("payment", 10.0);
    assert_eq!(times(&w.advance(1000.0)), vec![70.0]);
}

#[test]
fn an_expected_event_at_t_plus_within_does_not_cancel_the_interval_is_exclusive_at_the_deadline() {
    let mut w = World::new(&[PAYMENT_AFTER_ORDER]);
    w.send("order", 10.0);
    let alert = only(w.send("payment", 70.0));
    assert_eq!(
        secs(alert.time),
        70.0,
        "the timer fires before the event is evaluated"
    );

    // Even when it arrives before the timer fired (allowed lateness).
    let mut w = World::with_lateness(&[PAYMENT_AFTER_ORDER], 30);
    w.send("order", 10.0);
    w.send("noise", 80.0);
    assert!(w.send("payment", 70.0).is_empty());
    assert_eq!(times(&w.advance(100.0)), vec![70.0]);
}

#[test]
fn an_expected_event_before_the_trigger_does_not_cancel_it() {
    let mut w = World::new(&[PAYMENT_AFTER_ORDER]);
    w.send("payment", 5.0);
    w.send("order", 10.0);
    assert_eq!(times(&w.advance(1000.0)), vec![70.0]);
}

#[test]
fn several_triggers_are_independent() {
    let mut w = World::new(&[PAYMENT_AFTER_ORDER]);
    w.send_data("order", 0.0, json!({"order": "o-1"}));
    w.send_data("order", 30.0, json!({"order": "o-2"}));
    // 65 is in (30, 90) but not in (0, 60): o-1 fires first, o-2 is paid.
    let alert = only(w.send("payment", 65.0));
    assert_eq!(secs(alert.time), 60.0);
    assert!(alert.message.starts_with("order o-1 "), "{}", alert.message);
    assert!(w.advance(1000.0).is_empty());
}

#[test]
fn several_due_triggers_fire_in_deadline_order_with_distinct_ids() {
    let mut w = World::new(&[PAYMENT_AFTER_ORDER]);
    w.send("order", 0.0);
    w.send("order", 10.0);
    w.send("order", 10.0);
    let alerts = w.advance(1000.0);
    assert_eq!(times(&alerts), vec![60.0, 70.0, 70.0]);
    assert_ne!(
        alerts[1].id, alerts[2].id,
        "two triggers at the same time are two matches"
    );
}

#[test]
fn an_event_matching_both_cancels_earlier_deadlines_then_opens_its_own() {
    let rule = r#"
id: no-second-dose
absence:
  after: type == "dose"
  expect: type == "dose"
  within: 8h
"#;
    let mut w = World::new(&[rule]);
    w.send("dose", 0.0);
    w.send("dose", 3600.0);
    assert_eq!(times(&w.advance(86_400.0)), vec![3600.0 + 8.0 * 3600.0]);
}

#[test]
fn more_open_deadlines_than_the_limit_are_dropped_and_counted() {
    let config = EngineConfig {
        max_partial_matches: 2,
        ..EngineConfig::default()
    };
    let mut w = World::with_config(&[PAYMENT_AFTER_ORDER], config);
    w.send("order", 0.0);
    w.send("order", 1.0);
    let outcome = w.outcome(KEY, "order", 2.0, json!({}));
    assert_eq!(
        outcome.dropped.pending_deadlines, 1,
        "the newest is dropped"
    );
    assert_eq!(w.state(KEY).dropped.pending_deadlines, 1);
    assert_eq!(times(&w.advance(1000.0)), vec![60.0, 61.0]);
}

// --- without a trigger: heartbeat loss ---------------------------------------

#[test]
fn a_heartbeat_rule_fires_when_the_entity_stops_for_within() {
    let mut w = World::new(&[HEARTBEAT]);
    w.send("heartbeat", 0.0);
    w.send("heartbeat", 50.0);
    assert!(
        w.advance(109.999).is_empty(),
        "the latest heartbeat sets the deadline"
    );
    let alert = only(w.advance(110.0));
    assert_eq!(secs(alert.time), 110.0);
    assert_eq!(alert.message, "k silent since 2026-01-01T00:00:50.000Z");
    assert_eq!(
        value(&alert, "last_seen"),
        &json!("2026-01-01T00:00:50.000Z")
    );
}

#[test]
fn a_heartbeat_exactly_within_after_the_previous_one_is_too_late() {
    let mut w = World::new(&[HEARTBEAT]);
    w.send("heartbeat", 0.0);
    assert!(w.send("heartbeat", 59.999).is_empty());
    let alert = only(w.send("heartbeat", 119.999));
    assert_eq!(
        secs(alert.time),
        119.999,
        "a silence of exactly `within` is one"
    );
}

#[test]
fn a_heartbeat_rule_fires_once_per_silence() {
    let mut w = World::new(&[HEARTBEAT]);
    w.send("heartbeat", 0.0);
    assert_eq!(w.advance(60.0).len(), 1);
    assert!(
        w.advance(86_400.0).is_empty(),
        "a long silence is one alert"
    );
    assert!(
        w.send("other", 86_401.0).is_empty(),
        "other events do not re-arm it"
    );
    assert!(w.advance(2.0 * 86_400.0).is_empty());
}

#[test]
fn a_heartbeat_rule_re_arms_on_the_next_expected_event() {
    let mut w = World::new(&[HEARTBEAT]);
    w.send("heartbeat", 0.0);
    assert_eq!(w.advance(100.0).len(), 1);
    w.send("heartbeat", 500.0);
    assert_eq!(times(&w.advance(1000.0)), vec![560.0]);
}

#[test]
fn a_heartbeat_rule_never_fires_for_an_entity_that_never_sent_an_expected_event() {
    let mut w = World::new(&[HEARTBEAT]);
    w.send("boot", 0.0);
    assert!(w.advance(86_400.0).is_empty());
    assert_eq!(w.state(KEY).next_deadline(), None);
}

#[test]
fn a_heartbeat_older_than_the_latest_changes_nothing() {
    let mut w = World::with_lateness(&[HEARTBEAT], 60);
    w.send("heartbeat", 100.0);
    w.send("heartbeat", 50.0);
    assert!(w.advance(159.999 + 60.0).is_empty());
    assert_eq!(times(&w.advance(160.0 + 60.0)), vec![160.0]);
}

#[test]
fn heartbeats_of_different_entities_are_independent() {
    let mut w = World::new(&[HEARTBEAT]);
    w.outcome("dev-1", "heartbeat", 0.0, json!({}));
    w.outcome("dev-2", "heartbeat", 30.0, json!({}));
    assert_eq!(times(&w.advance_key("dev-1", 1000.0)), vec![60.0]);
    assert!(w.advance_key("dev-2", 89.0).is_empty());
    let alert = only(w.advance_key("dev-2", 90.0));
    assert_eq!(alert.key, "dev-2");
}
