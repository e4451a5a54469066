//! Time (DESIGN §4): entity clocks that run with the wall clock between
//! events, and `POST /v1/clock` for historical data.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[test]
fn an_absence_alert_fires_on_time_with_no_further_events() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(
        r#"id: unshipped
severity: high
absence:
  after: type == "order_placed"
  expect: type == "order_shipped"
  within: 1s
alert:
  message: "{{key}}: order {{trigger.data.order}} not shipped"
"#,
    );
    let mut socket = server.ws("");
    // No `time`: event time is the receive time (the same for the whole
    // request, so shop-2's shipment gets a time of its own: an expected
    // event must come strictly after the trigger).
    let now = now_plus(0);
    server.send_events(&json!([
        {"key": "shop-1", "type": "order_placed", "data": {"order": "o-1"}},
        {"key": "shop-2", "type": "order_placed", "data": {"order": "o-2"}, "time": now},
        {"key": "shop-2", "type": "order_shipped", "time": at(&now, 300)},
    ]));
    let alert = socket.next_alert();
    assert_eq!(alert["rule"], "unshipped");
    assert_eq!(alert["key"], "shop-1");
    assert_eq!(alert["message"], "shop-1: order o-1 not shipped");
    assert_eq!(alert["values"]["within_ms"], 1000);
    assert!(alert["values"]["trigger_time"].is_string(), "{alert}");
    assert!(alert["values"]["deadline"].is_string(), "{alert}");
    // The alert's time is the deadline, one second after the trigger.
    let trigger =
        chrono::DateTime::parse_from_rfc3339(alert["values"]["trigger_time"].as_str().unwrap())
            .unwrap();
    let time = chrono::DateTime::parse_from_rfc3339(alert["time"].as_str().unwrap()).unwrap();
    assert_eq!((time - trigger).num_milliseconds(), 1000);
    // shop-2 got its shipment: nothing pending, nothing fired.
    assert!(server.entity("shop-2")["next_deadline"].is_null());
    assert_eq!(server.alerts("").len(), 1);
}

#[test]
fn heartbeat_loss_fires_once_per_silence_and_rearms() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(
        "id: heartbeat\nabsence:\n  expect: type == \"heartbeat\"\n  within: 1s\nalert:\n  message: \"{{key}} went quiet\"\n",
    );
    server.send_events(&json!({"key": "dev-1", "type": "heartbeat"}));
    let alerts = server.wait_alerts("rule=heartbeat", 1);
    assert_eq!(alerts[0]["message"], "dev-1 went quiet");
    assert!(
        alerts[0]["values"]["last_seen"].is_string(),
        "{}",
        alerts[0]
    );
    // Nothing is pending during the silence: it cannot fire again...
    let entity = server.entity("dev-1");
    assert!(entity["next_deadline"].is_null(), "{entity}");
    // ...until the next heartbeat re-arms it.
    server.send_events(&json!({"key": "dev-1", "type": "heartbeat"}));
    let alerts = server.wait_alerts("rule=heartbeat", 2);
    assert_ne!(alerts[0]["id"], alerts[1]["id"]);
    assert_eq!(server.alerts("rule=heartbeat").len(), 2);
}

#[test]
fn a_historical_file_then_advance_to_gives_the_alerts() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(
        r#"id: big-spender
severity: low
threshold:
  match: type == "purchase"
  window: {tumbling: 1h}
  aggregate: sum(data.amount)
  above: 1000
alert:
  message: "{{key}} spent {{value}}"
"#,
    );
    server.create_rule(
        "id: unshipped\nabsence:\n  after: type == \"order_placed\"\n  expect: type == \"order_shipped\"\n  within: 10m\n",
    );
    let base = history_base();
    let events = [
        json!({"id": "1", "key": "a", "type": "purchase", "time": at(&base, 60_000), "data": {"amount": 800}}),
        json!({"id": "2", "key": "b", "type": "order_placed", "time": at(&base, 120_000)}),
        json!({"id": "3", "key": "a", "type": "purchase", "time": at(&base, 1_800_000), "data": {"amount": 300}}),
        json!({"id": "4", "key": "c", "type": "order_placed", "time": at(&base, 1_900_000)}),
        json!({"id": "5", "key": "c", "type": "order_shipped", "time": at(&base, 2_000_000)}),
        json!({"id": "6", "key": "b", "type": "purchase", "time": at(&base, 2_100_000), "data": {"amount": 5}}),
        json!({"id": "7", "key": "a", "type": "purchase", "time": at(&base, 3_700_000), "data": {"amount": 2000}}),
    ];
    let file: String = events.iter().map(|e| format!("{e}\n")).collect();
    let summary = expect_json(
        server.post_ndjson(&file),
        StatusCode::ACCEPTED,
        "historical file",
    );
    assert_eq!(summary["accepted"], 7);

    // `b`'s deadline fired when `b`'s own clock passed it (event 6 at 35 min);
    // a's first window closed when a's clock reached 1 h (event 7).
    let alerts = server.wait_alerts("", 2);
    let mut fired: Vec<(String, String)> = alerts
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap().to_owned(),
                a["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    fired.sort();
    assert_eq!(
        fired,
        [
            ("big-spender".to_owned(), "a".to_owned()),
            ("unshipped".to_owned(), "b".to_owned())
        ]
    );

    // The second window of `a` (2000 from 1 h) is still open: the wall clock
    // will not reach its end for an hour. The end-of-input mark closes it.
    let end = at(&base, 3 * 3_600_000);
    let advanced = server.advance_clock(&end);
    assert_eq!(advanced["advanced_to"], end);
    assert!(advanced["entities"].as_u64().unwrap() >= 1, "{advanced}");
    assert_eq!(advanced["alert_seq"], 3);
    // The answer comes once the alerts it fired are published.
    let alerts = server.alerts("");
    assert_eq!(alerts.len(), 3);
    let last = &alerts[2];
    assert_eq!(
        (&last["rule"], &last["key"]),
        (&json!("big-spender"), &json!("a"))
    );
    assert_eq!(last["time"], at(&base, 2 * 3_600_000));
    assert_eq!(last["message"], "a spent 2000");
    let spent: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule"] == "big-spender")
        .map(|a| &a["message"])
        .collect();
    assert_eq!(spent, [&json!("a spent 1100"), &json!("a spent 2000")]);

    // Every entity's clock is now at least the mark: old events are late.
    assert_eq!(server.entity("c")["clock"], end);
    server.send_events(&json!({"key": "c", "type": "purchase", "time": at(&base, 3_000_000)}));
    wait_until("a late dead letter", || {
        server
            .deadletters()
            .into_iter()
            .find(|d| d["reason"] == "late")
    });
    // Advancing to an earlier time changes nothing.
    let again = server.advance_clock(&at(&base, 3_600_000));
    assert_eq!(again["alert_seq"], 3);
}

#[test]
fn advance_to_reaches_passivated_entities() {
    let server = Server::start(
        r#"
[timing]
passivate_after = "100ms"
timer_tick = "20ms"
checkpoint_interval = "200ms"
"#,
    );
    server.create_rule(
        "id: unshipped\nabsence:\n  after: type == \"order_placed\"\n  expect: type == \"order_shipped\"\n  within: 10m\n",
    );
    let base = history_base();
    server.send_events(&json!([
        {"key": "b", "type": "order_placed", "time": at(&base, 0)},
        {"key": "c", "type": "purchase", "time": at(&base, 0)},
    ]));
    wait_until("both entities to be passivated", || {
        (server.entity("b")["live"] == false && server.entity("c")["live"] == false).then_some(())
    });
    let advanced = server.advance_clock(&at(&base, 3_600_000));
    assert_eq!(advanced["alert_seq"], 1);
    let alerts = server.alerts("");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["key"], "b");
    assert_eq!(alerts[0]["time"], at(&base, 600_000));
    // An entity without timers moves its clock when it next wakes.
    server.send_events(&json!({"key": "c", "type": "purchase", "time": at(&base, 1_000)}));
    wait_until("c's old event to be late", || {
        server
            .deadletters()
            .into_iter()
            .find(|d| d["reason"] == "late" && d["key"] == "c")
    });
}

#[test]
fn bad_clock_requests_are_400() {
    let server = Server::start(FAST_TIMING);
    for body in [
        json!({}),
        json!({"advance_to": "tomorrow"}),
        json!({"advance_to": 12}),
        json!({"advance_to": "2026-01-01T00:00:00Z", "extra": 1}),
    ] {
        expect_error(
            server.post("/v1/clock", "application/json", body.to_string()),
            StatusCode::BAD_REQUEST,
            "bad_request",
        );
    }
    expect_error(
        server.post("/v1/clock", "application/json", "{"),
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    expect_error(
        server.post(
            "/v1/clock",
            "text/plain",
            json!({"advance_to": "2026-01-01T00:00:00Z"}).to_string(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
}
