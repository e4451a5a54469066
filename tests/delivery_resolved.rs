//! Resolved notifications reach the receivers that ask for them
//! (`send_resolved`, as in Alertmanager), after their alert; the others get
//! the alert only. Real binary, real webhook servers on loopback.

mod common;

use common::webhook::{Behaviour, Webhook};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const DEVICE_OFFLINE: &str = r#"id: device-offline
severity: medium
absence:
  expect: type == "heartbeat"
  within: 60s
"#;

fn create_receiver(server: &Server, receiver: Value) {
    expect_json(
        server.post("/v1/receivers", "application/json", receiver.to_string()),
        StatusCode::CREATED,
        "POST /v1/receivers",
    );
}

#[test]
fn a_resolution_follows_its_alert_to_receivers_that_ask_for_it() {
    let server = Server::start(&format!(
        "{FAST_TIMING}\n[delivery]\nallow_private_urls = true\nbackoff_initial = \"20ms\"\n"
    ));
    let asks = Webhook::start(Behaviour::Ok);
    let plain = Webhook::start(Behaviour::Ok);
    create_receiver(
        &server,
        json!({"name": "asks", "url": asks.url(), "send_resolved": true}),
    );
    create_receiver(&server, json!({"name": "plain", "url": plain.url()}));
    expect_json(
        server.put(
            "/v1/routes",
            "application/json",
            json!({"routes": [{"receiver": "asks", "continue": true}, {"receiver": "plain"}]})
                .to_string(),
        ),
        StatusCode::OK,
        "PUT /v1/routes",
    );
    server.create_rule(DEVICE_OFFLINE);
    let base = history_base();
    server.send_events(&json!([
        {"id": "hb-1", "key": "dev-7", "type": "heartbeat", "time": at(&base, 0)},
        {"id": "hb-2", "key": "dev-7", "type": "heartbeat", "time": at(&base, 120_000)},
    ]));
    let log = server.wait_alerts("", 2);
    let (fired, resolution) = (&log[0], &log[1]);
    assert_eq!(resolution["resolves"], fired["id"]);

    let got = wait_until("the alert and its resolution at `asks`", || {
        let alerts = asks.accepted_alerts();
        (alerts.len() >= 2).then_some(alerts)
    });
    assert_eq!(got[0]["id"], fired["id"]);
    assert_eq!(got[0]["state"], "firing");
    assert_eq!(got[1]["id"], resolution["id"]);
    assert_eq!(got[1]["state"], "resolved");
    assert_eq!(got[1]["resolves"], fired["id"]);
    let bodies: Vec<Value> = asks.accepted().iter().map(|r| r.json()).collect();
    assert!(
        bodies.iter().any(|b| b["status"] == "resolved"),
        "{bodies:#?}"
    );

    // `plain` gets the alert, never the resolution.
    let plain_got = wait_until("the alert at `plain`", || {
        let alerts = plain.accepted_alerts();
        (!alerts.is_empty()).then_some(alerts)
    });
    assert_eq!(plain_got[0]["id"], fired["id"]);
    // Something delivered after the resolution proves `plain` passed it.
    server.create_rule(&every_event_rule("later", "ping", "low"));
    server.send_events(&json!([{"key": "x", "type": "ping"}]));
    let plain_got = wait_until("the later alert at `plain`", || {
        let alerts = plain.accepted_alerts();
        alerts
            .iter()
            .any(|a| a["rule"] == "later")
            .then_some(alerts)
    });
    assert!(
        plain_got.iter().all(|a| a["resolves"].is_null()),
        "{plain_got:#?}"
    );
}
