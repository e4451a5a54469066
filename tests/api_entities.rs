//! `GET/PUT /v1/entities/{key}` (DESIGN §6) and passivation (DESIGN §1, §4).

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const UNSHIPPED: &str = r#"id: unshipped
severity: medium
absence:
  after: type == "order_placed"
  expect: type == "order_shipped"
  within: 10m
alert:
  message: "{{key}}: order placed at {{trigger.time}} not shipped"
"#;

const BIG_SPENDER: &str = r#"id: big-spender
threshold:
  match: type == "purchase"
  window: {tumbling: 1h}
  aggregate: sum(data.amount)
  above: 1000
"#;

fn rule_state<'a>(entity: &'a Value, rule: &str) -> &'a Value {
    entity["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == rule)
        .unwrap_or_else(|| panic!("no state of {rule} in {entity}"))
}

#[test]
fn the_entity_view_shows_partial_matches_windows_and_the_next_deadline() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(BRUTE_FORCE);
    server.create_rule(UNSHIPPED);
    server.create_rule(BIG_SPENDER);
    let base = history_base();
    server.send_events(&json!([
        {"id": "f1", "key": "acct-1", "type": "login_failed", "time": at(&base, 1_000)},
        {"id": "f2", "key": "acct-1", "type": "login_failed", "time": at(&base, 2_000)},
        {"id": "o1", "key": "acct-1", "type": "order_placed", "time": at(&base, 3_000)},
        {"id": "p1", "key": "acct-1", "type": "purchase", "time": at(&base, 4_000), "data": {"amount": 300}},
        {"id": "p2", "key": "acct-1", "type": "purchase", "time": at(&base, 5_000), "data": {"amount": 200}},
    ]));
    let entity = wait_until("acct-1 to evaluate 5 events", || {
        let entity = server.entity("acct-1");
        (entity["events_seen"] == 5).then_some(entity)
    });
    assert_eq!(entity["key"], "acct-1");
    assert_eq!(entity["live"], true);
    assert_eq!(entity["attributes"], json!({}));
    assert_eq!(entity["clock"], at(&base, 5_000));
    assert_eq!(entity["watermark"], at(&base, 5_000));
    assert_eq!(entity["rules"].as_array().unwrap().len(), 3, "{entity}");

    let sequence = &rule_state(&entity, "brute-force-login")["state"];
    assert_eq!(rule_state(&entity, "brute-force-login")["version"], 1);
    assert_eq!(sequence["kind"], "sequence");
    let partial = &sequence["partial_matches"][0];
    assert_eq!(partial["counts"][0], 2, "{sequence}");
    assert_eq!(partial["started"], at(&base, 1_000));
    assert_eq!(partial["events"].as_array().unwrap().len(), 2);

    let absence = &rule_state(&entity, "unshipped")["state"];
    assert_eq!(absence["kind"], "absence");
    assert_eq!(
        absence["pending"][0]["deadline"],
        at(&base, 603_000),
        "{absence}"
    );

    let windows = &rule_state(&entity, "big-spender")["state"];
    assert_eq!(windows["kind"], "windows");
    assert_eq!(windows["windows"][0]["start"], base);
    assert_eq!(windows["windows"][0]["count"], 2);
    assert_eq!(windows["windows"][0]["sum"], 500.0);

    // The earliest of the partial match's expiry (first failure + 5 min),
    // the absence deadline (+10 min) and the window's end (+1 h).
    assert_eq!(entity["next_deadline"], at(&base, 301_000));
    assert_eq!(entity["dropped"]["partial_matches"], 0);

    // The shipment cancels the absence deadline; a success completes the
    // sequence: the next deadline is the window's end.
    server.send_events(&json!([
        {"key": "acct-1", "type": "order_shipped", "time": at(&base, 6_000)},
        {"key": "acct-1", "type": "login_failed", "time": at(&base, 7_000)},
        {"key": "acct-1", "type": "login_success", "time": at(&base, 8_000)},
    ]));
    let entity = wait_until("the deadlines to go", || {
        let entity = server.entity("acct-1");
        (entity["events_seen"] == 8).then_some(entity)
    });
    assert_eq!(entity["next_deadline"], at(&base, 3_600_000), "{entity}");
    let rules: Vec<&Value> = entity["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["rule"])
        .collect();
    assert_eq!(rules, [&json!("big-spender")], "{entity}");
    server.wait_alerts("rule=brute-force-login", 1);
}

#[test]
fn an_unknown_entity_is_404() {
    let server = Server::start(FAST_TIMING);
    let body = expect_error(
        server.get("/v1/entities/nobody"),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert!(
        body["message"].as_str().unwrap().contains("nobody"),
        "{body}"
    );
}

#[test]
fn attributes_put_on_an_entity_are_visible_to_predicates() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(
        r#"id: gold-purchase
sequence:
  steps:
    - name: p
      match: type == "purchase" && entity.tier == "gold"
alert:
  message: "{{key}} ({{entity.tier}}) bought"
"#,
    );
    let response = server.put(
        "/v1/entities/acct-1",
        "application/json",
        json!({"attributes": {"tier": "gold", "country": "NL"}}).to_string(),
    );
    let entity = expect_json(response, StatusCode::OK, "PUT entity");
    assert_eq!(entity["key"], "acct-1");
    assert_eq!(
        entity["attributes"],
        json!({"tier": "gold", "country": "NL"})
    );
    assert_eq!(server.entity("acct-1")["attributes"]["tier"], "gold");

    server.send_events(&json!([
        {"key": "acct-1", "type": "purchase"},
        {"key": "acct-2", "type": "purchase"},
    ]));
    let alerts = server.wait_alerts("rule=gold-purchase", 1);
    assert_eq!(alerts[0]["key"], "acct-1");
    assert_eq!(alerts[0]["message"], "acct-1 (gold) bought");

    // Attributes are replaced as a whole.
    expect_json(
        server.put(
            "/v1/entities/acct-1",
            "application/json",
            json!({"attributes": {"tier": "silver"}}).to_string(),
        ),
        StatusCode::OK,
        "PUT entity",
    );
    expect_json(
        server.put(
            "/v1/entities/acct-2",
            "application/json",
            json!({"attributes": {"tier": "gold"}}).to_string(),
        ),
        StatusCode::OK,
        "PUT entity",
    );
    assert_eq!(
        server.entity("acct-1")["attributes"],
        json!({"tier": "silver"})
    );
    server.send_events(&json!([
        {"key": "acct-1", "type": "purchase"},
        {"key": "acct-2", "type": "purchase"},
    ]));
    let alerts = server.wait_alerts("rule=gold-purchase", 2);
    assert_eq!(alerts[1]["key"], "acct-2");
    wait_until("acct-1 to evaluate its purchase", || {
        (server.entity("acct-1")["events_seen"] == 2).then_some(())
    });
    assert_eq!(server.alerts("rule=gold-purchase").len(), 2);
}

#[test]
fn bad_entity_puts_are_refused() {
    let server = Server::start(&format!(
        "{FAST_TIMING}\n[limits.event]\nmax_data_bytes = 100\n"
    ));
    for body in [
        "{\"attrs\": {}}",
        "{\"attributes\": [1]}",
        "{\"attributes\": ",
        "{}",
    ] {
        expect_error(
            server.put("/v1/entities/acct-1", "application/json", body.to_owned()),
            StatusCode::BAD_REQUEST,
            "bad_request",
        );
    }
    expect_error(
        server.put(
            "/v1/entities/acct-1",
            "text/plain",
            json!({"attributes": {}}).to_string(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    expect_error(
        server.put(
            "/v1/entities/acct-1",
            "application/json",
            json!({"attributes": {"pad": "x".repeat(200)}}).to_string(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let long_key = "k".repeat(300);
    expect_error(
        server.put(
            &format!("/v1/entities/{long_key}"),
            "application/json",
            json!({"attributes": {}}).to_string(),
        ),
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    // None of that created the entity.
    expect_error(
        server.get("/v1/entities/acct-1"),
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[test]
fn a_passivated_entity_still_fires_its_timer() {
    let server = Server::start(
        r#"
[timing]
passivate_after = "200ms"
timer_tick = "20ms"
checkpoint_interval = "200ms"
"#,
    );
    server.create_rule(
        "id: no-ack\nabsence:\n  after: type == \"alarm\"\n  expect: type == \"ack\"\n  within: 4s\n",
    );
    server.send_events(&json!({"key": "dev-1", "type": "alarm"}));
    // The entity leaves memory with its timer pending...
    let entity = wait_until("dev-1 to be passivated", || {
        let entity = server.entity("dev-1");
        (entity["live"] == false).then_some(entity)
    });
    assert!(entity["next_deadline"].is_string(), "{entity}");
    assert!(
        server.alerts("").is_empty(),
        "the alert fired before the entity was passivated; the test proves nothing"
    );
    assert!(
        server
            .metric("cepheus_entities_passivated_total")
            .unwrap_or(0.0)
            >= 1.0
    );
    // ...and is woken by it to fire, with no further event.
    let alerts = server.wait_alerts("rule=no-ack", 1);
    assert_eq!(alerts[0]["key"], "dev-1");
    assert!(
        server
            .metric("cepheus_entities_activated_total")
            .unwrap_or(0.0)
            >= 2.0
    );
    // Fired once, and then the entity has nothing pending.
    wait_until("dev-1 to have no deadline", || {
        server.entity("dev-1")["next_deadline"]
            .is_null()
            .then_some(())
    });
    assert_eq!(server.alerts("").len(), 1);
}

#[test]
fn a_passivated_entity_wakes_for_its_next_event_with_its_state() {
    let server = Server::start(
        r#"
[timing]
passivate_after = "100ms"
timer_tick = "20ms"
checkpoint_interval = "200ms"
"#,
    );
    server.create_rule(BRUTE_FORCE);
    server.put(
        "/v1/entities/acct-1",
        "application/json",
        json!({"attributes": {"tier": "gold"}}).to_string(),
    );
    server.send_events(&json!([
        {"key": "acct-1", "type": "login_failed"},
        {"key": "acct-1", "type": "login_failed"},
        {"key": "acct-1", "type": "login_failed"},
    ]));
    let entity = wait_until("acct-1 to be passivated", || {
        let entity = server.entity("acct-1");
        (entity["live"] == false && entity["events_seen"] == 3).then_some(entity)
    });
    assert_eq!(entity["attributes"]["tier"], "gold");
    assert_eq!(
        rule_state(&entity, "brute-force-login")["state"]["partial_matches"][0]["counts"][0],
        3
    );
    wait_until("the live gauge to drop", || {
        (server.metric("cepheus_entities_live") == Some(0.0)).then_some(())
    });
    server
        .send_events(&json!({"key": "acct-1", "type": "login_success", "data": {"ip": "1.2.3.4"}}));
    let alerts = server.wait_alerts("", 1);
    assert_eq!(alerts[0]["values"]["failures.count"], 3);
}

#[test]
fn keys_with_reserved_url_characters_round_trip() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(&every_event_rule("r", "a", "low"));
    for key in ["acct 1/x", "ü-ß", "a%2Fb", "100%", "a?b#c&d=e"] {
        server.send_events(&json!({"key": key, "type": "a"}));
        let encoded: String = key
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let entity = wait_until(&format!("entity {key}"), || {
            let response = server.get(&format!("/v1/entities/{encoded}"));
            (response.status() == StatusCode::OK).then(|| response.json::<Value>().unwrap())
        });
        assert_eq!(entity["key"], key);
        let alerts = server.wait_alerts(&format!("key={encoded}"), 1);
        assert_eq!(alerts.len(), 1, "{key}");
        assert_eq!(alerts[0]["key"], key);
        let entity = expect_json(
            server.put(
                &format!("/v1/entities/{encoded}"),
                "application/json",
                json!({"attributes": {"n": 1}}).to_string(),
            ),
            StatusCode::OK,
            "PUT",
        );
        assert_eq!(entity["key"], key);
    }
}

#[test]
fn partition_by_feeds_a_second_entity() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(
        r#"id: busy-merchant
partition_by: data.merchant
threshold:
  match: type == "payment"
  window: {sliding: 1h}
  at_least: 3
alert:
  message: "{{key}}: {{count}} payments"
"#,
    );
    server.send_events(&json!([
        {"key": "acct-1", "type": "payment", "data": {"merchant": "m-1"}},
        {"key": "acct-2", "type": "payment", "data": {"merchant": "m-1"}},
        {"key": "acct-3", "type": "payment", "data": {"merchant": "m-2"}},
        {"key": "acct-3", "type": "payment", "data": {"merchant": "m-1"}},
    ]));
    let alerts = server.wait_alerts("", 1);
    assert_eq!(alerts[0]["key"], "m-1");
    assert_eq!(alerts[0]["message"], "m-1: 3 payments");
    let merchant = server.entity("m-1");
    assert_eq!(merchant["events_seen"], 3);
    assert_eq!(rule_state(&merchant, "busy-merchant")["state"]["count"], 3);
    // Each event also reached its own account.
    wait_until("acct-3 to see its two events", || {
        (server.entity("acct-3")["events_seen"] == 2).then_some(())
    });
    assert_eq!(server.entity("m-2")["events_seen"], 1);
}
