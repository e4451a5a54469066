//! The exact boundaries of DESIGN §3, checked end to end: a historical file
//! posted in time order, then `POST /v1/clock` as the end-of-input mark.

mod common;

use common::*;
use serde_json::{json, Value};

/// Posts `(key, type, offset_ms)` events after `base` as one NDJSON file,
/// then advances every clock a day past `base`; returns the alerts.
fn run(server: &Server, base: &str, events: &[(&str, &str, i64)]) -> Vec<Value> {
    let file: String = events
        .iter()
        .enumerate()
        .map(|(i, (key, kind, offset))| {
            format!(
                "{}\n",
                json!({"id": format!("e{i}"), "key": key, "type": kind, "time": at(base, *offset), "data": {"n": i}})
            )
        })
        .collect();
    let summary = server.post_ndjson(&file);
    assert_eq!(summary.status(), 202);
    server.advance_clock(&at(base, 86_400_000));
    // The firing alerts: resolutions (entries with `resolves`) have their
    // own tests in api_alerts.rs.
    let mut alerts = server.alerts("limit=1000");
    alerts.retain(|a| a["resolves"].is_null());
    alerts
}

#[test]
fn greedy_quantifier_and_earliest_start_within_a_strict_window() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(BRUTE_FORCE);
    let base = history_base();
    let alerts = run(
        &server,
        &base,
        &[
            ("a", "login_failed", 0),
            ("a", "login_failed", 100_000),
            ("a", "login_failed", 200_000),
            ("a", "login_failed", 290_000),
            ("a", "login_success", 310_000),
        ],
    );
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["values"]["failures.count"], 3);
    assert_eq!(alerts[0]["events"][0]["time"], at(&base, 100_000));
}

#[test]
fn within_is_strict() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(BRUTE_FORCE);
    let base = history_base();
    let alerts = run(
        &server,
        &base,
        &[
            // 299.999 s from first to last: a match.
            ("in", "login_failed", 0),
            ("in", "login_failed", 1),
            ("in", "login_failed", 2),
            ("in", "login_success", 299_999),
            // 300.000 s: none.
            ("out", "login_failed", 0),
            ("out", "login_failed", 1),
            ("out", "login_failed", 2),
            ("out", "login_success", 300_000),
        ],
    );
    let keys: Vec<&Value> = alerts.iter().map(|a| &a["key"]).collect();
    assert_eq!(keys, [&json!("in")]);
}

#[test]
fn a_completed_match_ends_the_run() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(BRUTE_FORCE);
    let base = history_base();
    let f = "login_failed";
    let s = "login_success";
    let alerts = run(
        &server,
        &base,
        &[
            ("one", f, 0),
            ("one", f, 1_000),
            ("one", f, 2_000),
            ("one", s, 3_000),
            ("one", s, 4_000),
            ("two", f, 0),
            ("two", f, 1_000),
            ("two", f, 2_000),
            ("two", s, 3_000),
            ("two", f, 4_000),
            ("two", f, 5_000),
            ("two", f, 6_000),
            ("two", s, 7_000),
        ],
    );
    assert_eq!(
        alerts.iter().filter(|a| a["key"] == "one").count(),
        1,
        "{alerts:?}"
    );
    assert_eq!(
        alerts.iter().filter(|a| a["key"] == "two").count(),
        2,
        "{alerts:?}"
    );
}

#[test]
fn an_expected_event_cancels_only_before_the_deadline() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(
        "id: unshipped\nabsence:\n  after: type == \"placed\"\n  expect: type == \"shipped\"\n  within: 1m\n",
    );
    let base = history_base();
    let alerts = run(
        &server,
        &base,
        &[
            ("early", "placed", 0),
            ("early", "shipped", 59_999),
            ("on-time-is-late", "placed", 0),
            ("on-time-is-late", "shipped", 60_000),
            ("never", "placed", 0),
        ],
    );
    let mut keys: Vec<&str> = alerts.iter().map(|a| a["key"].as_str().unwrap()).collect();
    keys.sort();
    assert_eq!(keys, ["never", "on-time-is-late"]);
    for alert in &alerts {
        assert_eq!(alert["time"], at(&base, 60_000), "{alert}");
    }
}

#[test]
fn tumbling_windows_include_their_start_and_exclude_their_end() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(
        "id: busy\nthreshold:\n  window: {tumbling: 1m}\n  at_least: 2\nalert:\n  message: \"{{count}} from {{window_start}}\"\n",
    );
    let base = history_base();
    let alerts = run(
        &server,
        &base,
        &[
            ("k", "t", 0),
            ("k", "t", 59_999),
            // Exactly start + size: the next window, alone.
            ("k", "t", 60_000),
            ("j", "t", 0),
            ("j", "t", 60_000),
        ],
    );
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["key"], "k");
    assert_eq!(alerts[0]["values"]["count"], 2);
    assert_eq!(alerts[0]["time"], at(&base, 60_000));
}

#[test]
fn a_session_joins_at_exactly_the_gap() {
    let server = Server::start(FAST_TIMING);
    server
        .create_rule("id: sessions\nthreshold:\n  window: {session: {gap: 30s}}\n  at_least: 3\n");
    let base = history_base();
    let alerts = run(
        &server,
        &base,
        &[
            ("joins", "t", 0),
            ("joins", "t", 30_000),
            ("joins", "t", 60_000),
            ("splits", "t", 0),
            ("splits", "t", 30_001),
            ("splits", "t", 60_002),
        ],
    );
    let keys: Vec<&Value> = alerts.iter().map(|a| &a["key"]).collect();
    assert_eq!(keys, [&json!("joins")]);
}

#[test]
fn above_is_strict_and_at_least_inclusive() {
    let server = Server::start(FAST_TIMING);
    server.create_rule("id: above\nthreshold:\n  window: {tumbling: 1h}\n  above: 2\n");
    server.create_rule("id: at-least\nthreshold:\n  window: {tumbling: 1h}\n  at_least: 2\n");
    let base = history_base();
    let alerts = run(&server, &base, &[("k", "t", 0), ("k", "t", 1_000)]);
    let rules: Vec<&Value> = alerts.iter().map(|a| &a["rule"]).collect();
    assert_eq!(rules, [&json!("at-least")]);
}

/// The rules of the live-versus-historical comparison.
const MIXED_RULES: [&str; 3] = [
    "id: unshipped\nabsence:\n  after: type == \"placed\"\n  expect: type == \"shipped\"\n  within: 1s\n",
    "id: pair\nsequence:\n  within: 1s\n  steps:\n    - name: a\n      match: type == \"a\"\n    - name: b\n      match: type == \"b\"\n",
    "id: busy\nthreshold:\n  window: {tumbling: 1s}\n  at_least: 2\n",
];

/// (key, type, offset ms): offsets keep 200 ms from every deadline, so
/// the live run's scheduling jitter cannot reorder an event and a timer.
const MIXED_STREAM: [(&str, &str, i64); 9] = [
    ("k1", "placed", 0),
    ("k2", "a", 0),
    ("k3", "t", 100),
    ("k2", "b", 400),
    ("k3", "t", 500),
    ("k1", "shipped", 600),
    ("k1", "placed", 1_200),
    ("k2", "a", 1_600),
    ("k2", "b", 2_800),
];

fn millis(time: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

/// What must agree between the runs: rule, key, alert time and the times
/// of the explaining events, relative to the stream's start.
fn normalized(alerts: &[Value], start: &str) -> Vec<(String, String, i64, Vec<i64>)> {
    let start = millis(&json!(start));
    let mut out: Vec<_> = alerts
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap().to_owned(),
                a["key"].as_str().unwrap().to_owned(),
                millis(&a["time"]) - start,
                a["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| millis(&e["time"]) - start)
                    .collect(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_historical_file_gives_the_same_alerts_as_the_events_lived() {
    // Some lateness, so the live run's jitter is never lateness.
    let config = format!("{FAST_TIMING}\n[engine]\nallowed_lateness = \"300ms\"\n");

    let historical = Server::start(&config);
    for rule in MIXED_RULES {
        historical.create_rule(rule);
    }
    let base = history_base();
    let from_file = run(&historical, &base, &MIXED_STREAM);
    assert!(from_file.len() >= 4, "{from_file:?}");

    let live = Server::start(&config);
    for rule in MIXED_RULES {
        live.create_rule(rule);
    }
    // Start on a whole second, so the 1 s tumbling windows line up too.
    let now = chrono::Utc::now().timestamp_millis();
    let start_ms = (now / 1000 + 2) * 1000;
    let start = chrono::DateTime::from_timestamp_millis(start_ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for (i, (key, kind, offset)) in MIXED_STREAM.iter().enumerate() {
        let due = start_ms + offset;
        let wait = due - chrono::Utc::now().timestamp_millis();
        if wait > 0 {
            std::thread::sleep(std::time::Duration::from_millis(wait as u64));
        }
        live.send_events(&json!({"id": format!("e{i}"), "key": key, "type": kind, "time": at(&start, *offset), "data": {"n": i}}));
    }
    // Lived until every entity has nothing left pending.
    wait_until("every timer of the live run", || {
        ["k1", "k2", "k3"]
            .iter()
            .all(|k| live.entity(k)["next_deadline"].is_null())
            .then_some(())
    });
    let lived = live.alerts("limit=1000");
    assert!(live.deadletters().is_empty(), "{:?}", live.deadletters());
    assert_eq!(normalized(&lived, &start), normalized(&from_file, &base));
}
