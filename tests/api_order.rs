//! Event-time order and closed windows through the service (issue 12):
//! the entity view shows the events waiting for their watermark, the clock
//! advance releases them, and an event for a closed window is a dead letter
//! with reason `window_closed`.

mod common;

use common::*;
use serde_json::Value;

const A_THEN_B: &str = r#"id: a-then-b
sequence:
  within: 1m
  steps:
    - name: a
      match: type == "A"
    - name: b
      match: type == "B"
"#;

const QUIET: &str = r#"id: quiet
lateness: {allowed: 1s, late: evaluate}
threshold:
  match: type == "x"
  window: {tumbling: 10s}
  below: 5
"#;

#[test]
fn waiting_events_are_shown_released_by_the_clock_and_matched_in_time_order() {
    // An hour of lateness: nothing is released by the wall clock during the test.
    let server = Server::start(&format!(
        "{FAST_TIMING}\n[engine]\nallowed_lateness = \"1h\"\n"
    ));
    server.create_rule(A_THEN_B);
    let base = history_base();
    server.send_events(&serde_json::json!([
        {"id": "b", "key": "k1", "type": "B", "time": at(&base, 5_000)},
        {"id": "a", "key": "k1", "type": "A", "time": at(&base, 3_000)},
    ]));
    let entity = wait_until("both events accepted", || {
        let entity = server.entity("k1");
        (entity["events_seen"] == 2).then_some(entity)
    });
    let waiting: Vec<&str> = entity["waiting"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|w| w["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(waiting, ["a", "b"], "in event-time order: {entity}");
    assert!(server.alerts("rule=a-then-b").is_empty());
    server.advance_clock(&at(&base, 3_600_000 + 10_000));
    let alerts = server.wait_alerts("rule=a-then-b", 1);
    let ids: Vec<&str> = alerts[0]["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(server.entity("k1")["waiting"], Value::Array(Vec::new()));

    // A late event for a window its rule already closed.
    server.create_rule(QUIET);
    server.send_events(&serde_json::json!([
        {"id": "x1", "key": "k2", "type": "x", "time": at(&base, 0)},
        {"id": "x2", "key": "k2", "type": "x", "time": at(&base, 100_000)},
    ]));
    server.wait_alerts("rule=quiet", 1);
    server.send_events(&serde_json::json!([
        {"id": "x3", "key": "k2", "type": "x", "time": at(&base, 5_000)},
    ]));
    let letter = wait_until("the dead letter", || {
        server
            .deadletters()
            .into_iter()
            .find(|l| l["event"]["id"] == "x3")
    });
    assert_eq!(letter["reason"], "window_closed", "{letter}");
    assert_eq!(
        server.alerts("rule=quiet").len(),
        1,
        "the window fired once"
    );
}
