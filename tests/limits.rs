//! Every limit of `docs/limits.md` answers with a clear error or a counted
//! drop, end to end through the server and its config file — the ones the
//! `api_*` tests do not already cover (body size, events per request, data
//! size and depth, in-flight events, rule size, subscribers, subscriber
//! backlog, page size, dedup horizon are there).

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[test]
fn key_type_and_id_over_their_limits_reject_that_event_alone() {
    let server = Server::start(&format!(
        "{FAST_TIMING}\n[limits.event]\nmax_key_bytes = 8\nmax_type_bytes = 4\nmax_id_bytes = 6\n"
    ));
    let summary = server.send_events(&json!([
        {"key": "k".repeat(9), "type": "t"},
        {"key": "k", "type": "ttttt"},
        {"id": "i".repeat(7), "key": "k", "type": "t"},
        {"id": "i".repeat(6), "key": "k".repeat(8), "type": "tttt"},
    ]));
    assert_eq!(summary["accepted"], 1, "{summary}");
    let rejected = summary["rejected"].as_array().unwrap();
    let indexes: Vec<u64> = rejected
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2]);
    for (r, field) in rejected.iter().zip(["key", "type", "id"]) {
        let error = r["error"].as_str().unwrap();
        assert!(error.contains(field), "{error}");
    }
    let letters = server.deadletters();
    assert_eq!(letters.len(), 3);
    assert!(letters.iter().all(|d| d["reason"] == "invalid"));
}

/// Posts `rule` and expects a 400 `invalid_rule` whose problems mention
/// `needle` (the setting's name).
fn refused(server: &Server, rule: &str, needle: &str) {
    let body = expect_error(
        server.post_rule_yaml(rule),
        StatusCode::BAD_REQUEST,
        "invalid_rule",
    );
    let problems = body["problems"].to_string();
    assert!(problems.contains(needle), "{needle} not in {problems}");
}

#[test]
fn rule_limits_from_the_config_file_refuse_rules_naming_the_limit() {
    let server = Server::start(&format!(
        "{FAST_TIMING}
[limits.rules]
max_steps = 2
max_template_bytes = 16
max_duration = \"1h\"
max_quantifier = 5
max_open_windows = 10
[limits.rules.expr]
max_length = 40
max_depth = 3
"
    ));
    let step = |n: usize| format!("    - name: s{n}\n      match: type == \"a\"\n");
    refused(
        &server,
        &format!(
            "id: r\nsequence:\n  steps:\n{}",
            (0..3).map(step).collect::<String>()
        ),
        "max_steps",
    );
    refused(
        &server,
        "id: r\nsequence:\n  steps:\n    - name: a\n      match: type == \"a\"\nalert:\n  message: \"this message is longer than sixteen bytes\"\n",
        "max_template_bytes",
    );
    refused(
        &server,
        "id: r\nsequence:\n  within: 2h\n  steps:\n    - name: a\n      match: type == \"a\"\n",
        "max_duration",
    );
    refused(
        &server,
        "id: r\nsequence:\n  steps:\n    - name: a\n      match: type == \"a\"\n      times: 6\n",
        "max_quantifier",
    );
    refused(
        &server,
        "id: r\nthreshold:\n  window: {hopping: {size: 20m, advance: 1m}}\n  above: 1\n",
        "max_open_windows",
    );
    refused(
        &server,
        "id: r\nsequence:\n  steps:\n    - name: a\n      match: type == \"a\" || type == \"b\" || type == \"c\" || type == \"d\"\n",
        "max_length",
    );
    refused(
        &server,
        "id: r\nsequence:\n  steps:\n    - name: a\n      match: ((((1 == 1))))\n",
        // NB: this message names the depth, not the setting (`expr.max_depth`).
        "deeper than 3 levels",
    );
    // Nothing was stored.
    assert_eq!(server.get_json("/v1/rules")["rules"], json!([]));
}

#[test]
fn fixed_expression_limits_refuse_hostile_rules() {
    let server = Server::start(FAST_TIMING);
    // Punctuation per expression (the parser's stack guard): 2,048.
    let dots = format!("data{}", ".a".repeat(2_100));
    let body = expect_error(
        server.post_rule_json(
            &json!({"id": "r", "sequence": {"steps": [{"name": "a", "match": dots}]}}),
        ),
        StatusCode::BAD_REQUEST,
        "invalid_rule",
    );
    assert!(!body["message"].as_str().unwrap().is_empty());
    // A regex whose compiled form is over 1 MiB.
    let body = expect_error(
        server.post_rule_json(&json!({"id": "r", "sequence": {"steps": [
            {"name": "a", "match": "data.s.matches('(a{1000}){1000}')"}
        ]}})),
        StatusCode::BAD_REQUEST,
        "invalid_rule",
    );
    assert!(
        body["problems"]
            .to_string()
            .to_lowercase()
            .contains("regex")
            || body["problems"].to_string().contains("pattern"),
        "{body}"
    );
    assert_eq!(server.get("/healthz").status(), StatusCode::OK);
}

#[test]
fn an_evaluation_visiting_over_10000_elements_is_false_not_a_crash() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(
        "id: r\nsequence:\n  steps:\n    - name: a\n      match: data.items.exists(x, x == 2)\n",
    );
    let mut many = vec![1; 20_000];
    many.push(2);
    let few = vec![1, 1, 2];
    server.send_events(&json!([
        {"key": "big", "type": "t", "data": {"items": many}},
        {"key": "small", "type": "t", "data": {"items": few}},
    ]));
    server.wait_alerts("key=small", 1);
    wait_until("big to evaluate its event", || {
        (server.entity("big")["events_seen"] == 1).then_some(())
    });
    assert!(server.alerts("key=big").is_empty());
}

#[test]
fn partial_matches_over_the_limit_are_counted_in_metrics_and_the_entity_view() {
    let server = Server::start(&format!(
        "{FAST_TIMING}\n[engine]\nmax_partial_matches = 2\n"
    ));
    server.create_rule(
        "id: a-then-b\nsequence:\n  within: 1h\n  steps:\n    - {name: a, match: type == \"a\"}\n    - {name: b, match: type == \"b\"}\n",
    );
    server.create_rule(
        "id: unpaid\nabsence:\n  after: type == \"order\"\n  expect: type == \"payment\"\n  within: 1h\n",
    );
    let events: Vec<Value> = (0..5)
        .map(|_| json!({"key": "k", "type": "a"}))
        .chain((0..4).map(|_| json!({"key": "k", "type": "order"})))
        .collect();
    server.send_events(&Value::Array(events));
    let entity = wait_until("the drops to show", || {
        let entity = server.entity("k");
        (entity["events_seen"] == 9).then_some(entity)
    });
    assert_eq!(entity["dropped"]["partial_matches"], 3, "{entity}");
    assert_eq!(entity["dropped"]["pending_deadlines"], 2, "{entity}");
    let metrics = server.metrics();
    assert_eq!(
        metric_value(&metrics, "cepheus_dropped_total{kind=\"partial_match\"}"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "cepheus_dropped_total{kind=\"pending_deadline\"}"),
        Some(2.0)
    );
    // The runs kept still complete.
    server.send_events(&json!({"key": "k", "type": "b"}));
    server.wait_alerts("rule=a-then-b", 1);
}

#[test]
fn sliding_window_entries_over_the_limit_are_dropped_and_counted() {
    let server = Server::start(&format!(
        "{FAST_TIMING}\n[engine]\nmax_window_entries = 3\n"
    ));
    server.create_rule(
        "id: many\nthreshold:\n  match: type == \"x\"\n  window: {sliding: 1h}\n  above: 3\n",
    );
    let events: Vec<Value> = (0..5).map(|_| json!({"key": "k", "type": "x"})).collect();
    server.send_events(&Value::Array(events));
    let entity = wait_until("the drops to show", || {
        let entity = server.entity("k");
        (entity["events_seen"] == 5).then_some(entity)
    });
    assert_eq!(entity["dropped"]["window_entries"], 2, "{entity}");
    assert_eq!(
        server.metric("cepheus_dropped_total{kind=\"window_entry\"}"),
        Some(2.0)
    );
    assert!(
        server.alerts("").is_empty(),
        "the window never holds more than 3"
    );
}

#[test]
fn an_alert_lists_at_most_max_explained_events_and_says_how_many_were_left_out() {
    let server = Server::start(&format!(
        "{FAST_TIMING}\n[engine]\nmax_explained_events = 3\n"
    ));
    server.create_rule(
        "id: ten\nsequence:\n  steps:\n    - name: a\n      match: type == \"a\"\n      times: 10\n",
    );
    let events: Vec<Value> = (0..10)
        .map(|i| json!({"id": format!("e{i}"), "key": "k", "type": "a"}))
        .collect();
    server.send_events(&Value::Array(events));
    let alert = server.wait_alerts("", 1).remove(0);
    let ids: Vec<&str> = alert["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{alert}");
    assert_eq!(ids.first(), Some(&"e0"));
    assert_eq!(ids.last(), Some(&"e9"));
    assert_eq!(alert["values"]["events_omitted"], 7, "{alert}");
}

#[test]
fn json_bodies_of_other_routes_over_1_mib_are_413() {
    let server = Server::start(FAST_TIMING);
    let padding = "x".repeat(1 << 20);
    let body = json!({"advance_to": "2026-01-01T00:00:00Z", "pad": padding}).to_string();
    expect_error(
        server.post("/v1/clock", "application/json", body),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let body = json!({"attributes": {"pad": padding}}).to_string();
    expect_error(
        server.put("/v1/entities/k", "application/json", body),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    // Attributes over max_data_bytes but under 1 MiB: 413 too.
    let body = json!({"attributes": {"pad": "x".repeat(70_000)}}).to_string();
    expect_error(
        server.put("/v1/entities/k", "application/json", body),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert_eq!(server.get("/v1/entities/k").status(), StatusCode::NOT_FOUND);
}

#[test]
fn page_sizes_over_max_page_are_400() {
    let server = Server::start(&format!("{FAST_TIMING}\n[limits]\nmax_page = 10\n"));
    for path in ["/v1/alerts?limit=11", "/v1/deadletters?limit=11"] {
        let body = expect_error(server.get(path), StatusCode::BAD_REQUEST, "bad_request");
        assert!(body["message"].as_str().unwrap().contains("10"), "{body}");
    }
    server.get_json("/v1/alerts?limit=10");
    server.get_json("/v1/deadletters?limit=10");
}
