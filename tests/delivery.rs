//! Delivery to receivers (issue 14): real webhook servers on loopback, the
//! real binary. Tests wait for conditions; none asserts on timing.

mod common;

use std::collections::HashSet;

use common::webhook::{Behaviour, Webhook};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Fast retries, private URLs allowed (the receivers are on loopback).
fn config(extra: &str) -> String {
    format!(
        "{FAST_TIMING}\n[delivery]\nallow_private_urls = true\nbackoff_initial = \"20ms\"\nbackoff_max = \"200ms\"\ntimeout = \"2s\"\n{extra}"
    )
}

fn create_receiver(server: &Server, receiver: Value) -> Value {
    expect_json(
        server.post("/v1/receivers", "application/json", receiver.to_string()),
        StatusCode::CREATED,
        "POST /v1/receivers",
    )
}

fn put_routes(server: &Server, routes: Value) -> Value {
    expect_json(
        server.put(
            "/v1/routes",
            "application/json",
            json!({ "routes": routes }).to_string(),
        ),
        StatusCode::OK,
        "PUT /v1/routes",
    )
}

/// `n` events of `event_type`, one per key `k0`, `k1`, …
fn events(n: usize, event_type: &str) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"key": format!("k{i}"), "type": event_type}))
            .collect(),
    )
}

/// The seqs in the order they first arrived.
fn first_arrivals(alerts: &[Value]) -> Vec<u64> {
    let mut seen = HashSet::new();
    alerts
        .iter()
        .map(|a| a["seq"].as_u64().expect("alerts carry their seq"))
        .filter(|s| seen.insert(*s))
        .collect()
}

fn seqs(alerts: &[Value]) -> Vec<u64> {
    alerts.iter().map(|a| a["seq"].as_u64().unwrap()).collect()
}

/// HMAC-SHA256, written out here so the test does not check cepheus
/// against itself.
fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let inner: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner_hash = Sha256::digest([inner.as_slice(), body].concat());
    let mac = Sha256::digest([outer.as_slice(), inner_hash.as_slice()].concat());
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn alerts_reach_a_receiver_in_order_signed_with_their_id_as_idempotency_key() {
    let server = Server::start(&config(""));
    let hook = Webhook::start(Behaviour::Ok);
    let created = create_receiver(
        &server,
        json!({"name": "hook", "url": hook.url(), "hmac_secret": "sesame-7f3a",
               "headers": {"X-Team": "fraud"},
               "secret_headers": {"Authorization": "Bearer hush-91c2"}}),
    );
    assert_eq!(created["hmac_secret"], "set");
    assert_eq!(created["secret_headers"]["Authorization"], "set");
    assert_eq!(created["version"], 1);
    put_routes(&server, json!([{"receiver": "hook"}]));
    server.create_rule(&every_event_rule("r1", "a", "high"));
    server.send_events(&events(5, "a"));
    let alerts = server.wait_alerts("", 5);
    wait_until("five alerts delivered", || {
        (hook.accepted_alerts().len() >= 5).then_some(())
    });
    let received = hook.accepted();
    let delivered = hook.accepted_alerts();
    assert_eq!(first_arrivals(&delivered), seqs(&alerts), "in seq order");
    for request in &received {
        let body = request.json();
        let alert = &body["alerts"][0];
        assert_eq!(
            body["alerts"].as_array().unwrap().len(),
            1,
            "one alert each"
        );
        assert_eq!(alert["state"], "firing");
        assert_eq!(body["status"], "firing");
        assert_eq!(request.header("Idempotency-Key"), alert["id"].as_str());
        assert_eq!(request.header("X-Cepheus-Alert-Id"), alert["id"].as_str());
        assert_eq!(request.header("X-Team"), Some("fraud"));
        assert_eq!(request.header("Authorization"), Some("Bearer hush-91c2"));
        let expected = format!("sha256={}", hmac_hex(b"sesame-7f3a", &request.body));
        assert_eq!(
            request.header("X-Cepheus-Signature"),
            Some(expected.as_str())
        );
    }
    // Secrets are never served back, nor logged.
    let text = server.get("/v1/receivers").text().unwrap();
    assert!(!text.contains("sesame") && !text.contains("hush"), "{text}");
    let shown = server.get_json("/v1/receivers/hook");
    assert_eq!(shown["hmac_secret"], "set");
    assert!(!server.log().contains("sesame") && !server.log().contains("hush"));
    // A replacement that leaves the secret out keeps it.
    let replaced = expect_json(
        server.put(
            "/v1/receivers/hook",
            "application/json",
            json!({"name": "hook", "url": hook.url(), "format": "slack"}).to_string(),
        ),
        StatusCode::OK,
        "PUT /v1/receivers/hook",
    );
    assert_eq!(replaced["version"], 2);
    let versions = server.get_json("/v1/receivers/hook/versions")["versions"].clone();
    assert_eq!(versions[0]["format"], "cepheus");
    assert_eq!(versions[1]["format"], "slack");
    assert!(!versions.to_string().contains("sesame"), "{versions}");
    assert_eq!(replaced["hmac_secret"], "set");
    assert_eq!(replaced["format"], "slack");
    server.send_events(&json!([{"key": "s", "type": "a"}]));
    let slack = wait_until("a slack message", || {
        hook.accepted()
            .into_iter()
            .find(|r| r.json().get("text").is_some())
    });
    assert!(slack.json()["text"]
        .as_str()
        .unwrap()
        .contains("[HIGH] r1 s"));
    assert!(slack.header("X-Cepheus-Signature").is_some());
    assert!(
        server
            .metric("cepheus_delivery_alerts_total{receiver=\"hook\"}")
            .unwrap_or(0.0)
            >= 6.0
    );
    assert!(server
        .metrics()
        .contains("cepheus_delivery_latency_seconds_count{receiver=\"hook\"}"));
}

#[test]
fn a_failing_receiver_is_retried_and_keeps_its_order() {
    let server = Server::start(&config(""));
    let hook = Webhook::start(Behaviour::FailFirst(3, 503));
    create_receiver(&server, json!({"name": "flaky", "url": hook.url()}));
    put_routes(&server, json!([{"receiver": "flaky"}]));
    server.create_rule(&every_event_rule("r1", "a", "high"));
    server.send_events(&events(4, "a"));
    let alerts = server.wait_alerts("", 4);
    wait_until("four alerts delivered", || {
        (first_arrivals(&hook.accepted_alerts()).len() >= 4).then_some(())
    });
    assert_eq!(first_arrivals(&hook.accepted_alerts()), seqs(&alerts));
    // The failed attempts were for the first alert: it was retried, not
    // overtaken.
    let tried: Vec<u64> = hook
        .received()
        .iter()
        .take(4)
        .map(|r| r.json()["alerts"][0]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(tried, vec![alerts[0]["seq"].as_u64().unwrap(); 4]);
    assert!(
        server
            .metric("cepheus_delivery_retries_total{receiver=\"flaky\"}")
            .unwrap_or(0.0)
            >= 3.0
    );
    assert!(server.get_json("/v1/receivers/flaky/failures")["failures"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn a_hanging_receiver_times_out_its_alerts_are_parked_and_can_be_sent_again() {
    let server = Server::start(&config(""));
    let hook = Webhook::start(Behaviour::Hang);
    create_receiver(
        &server,
        json!({"name": "slow", "url": hook.url(), "timeout": "300ms", "max_attempts": 2}),
    );
    put_routes(&server, json!([{"receiver": "slow"}]));
    server.create_rule(&every_event_rule("r1", "a", "high"));
    server.send_events(&events(2, "a"));
    let failures = wait_until("two failed deliveries", || {
        let f = server.get_json("/v1/receivers/slow/failures")["failures"]
            .as_array()
            .unwrap()
            .clone();
        (f.len() >= 2).then_some(f)
    });
    assert_eq!(failures[0]["attempts"], 2);
    assert!(
        failures[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer"),
        "{}",
        failures[0]
    );
    assert!(
        server
            .metric("cepheus_delivery_failures_total{receiver=\"slow\"}")
            .unwrap_or(0.0)
            >= 2.0
    );
    // The receiver recovers: a failed delivery is sent again by hand.
    hook.set(Behaviour::Ok);
    let id = failures[0]["id"].as_u64().unwrap();
    let resent = expect_json(
        server.post(
            &format!("/v1/receivers/slow/failures/{id}/resend"),
            "application/json",
            "",
        ),
        StatusCode::OK,
        "resend",
    );
    assert_eq!(resent["delivered"], true);
    let got = hook.accepted_alerts();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], failures[0]["alert_ids"][0]);
    let left = server.get_json("/v1/receivers/slow/failures")["failures"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(left, failures.len() - 1);
    // A receiver still failing answers 502 and keeps the failure.
    hook.set(Behaviour::Fail(500));
    let id = failures[1]["id"].as_u64().unwrap();
    expect_error(
        server.post(
            &format!("/v1/receivers/slow/failures/{id}/resend"),
            "application/json",
            "",
        ),
        StatusCode::BAD_GATEWAY,
        "delivery_failed",
    );
    let kept = server.get_json("/v1/receivers/slow/failures")["failures"].clone();
    assert!(kept
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["id"] == id && f["attempts"] == 3));
}

#[test]
fn a_dead_receiver_slows_neither_ingest_nor_other_receivers() {
    let server = Server::start(&config(""));
    let dead_port = free_port(); // nothing listens there
    let healthy = Webhook::start(Behaviour::Ok);
    create_receiver(
        &server,
        json!({"name": "dead", "url": format!("http://127.0.0.1:{dead_port}/x"), "max_attempts": 2}),
    );
    create_receiver(&server, json!({"name": "healthy", "url": healthy.url()}));
    put_routes(
        &server,
        json!([{"receiver": "dead", "continue": true}, {"receiver": "healthy"}]),
    );
    server.create_rule(&every_event_rule("r1", "a", "high"));
    let mut accepted = 0;
    for _ in 0..5 {
        accepted += server.send_events(&events(40, "a"))["accepted"]
            .as_u64()
            .unwrap();
    }
    assert_eq!(accepted, 200, "ingest accepted everything");
    let alerts = server.wait_alerts("limit=1000", 200);
    wait_until("the healthy receiver got all 200", || {
        (first_arrivals(&healthy.accepted_alerts()).len() >= 200).then_some(())
    });
    assert_eq!(first_arrivals(&healthy.accepted_alerts()), seqs(&alerts));
    let parked = wait_until("all 200 listed as failed for the dead one", || {
        let failures = server.get_json("/v1/receivers/dead/failures")["failures"].clone();
        let ids: Vec<Value> = failures
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|f| f["alert_ids"].as_array().unwrap().clone())
            .collect();
        (ids.len() >= 200).then_some(ids)
    });
    let expected: Vec<Value> = alerts.iter().map(|a| a["id"].clone()).collect();
    assert_eq!(parked, expected, "every alert is listed, in order");
    let status = server.get_json("/v1/receivers/dead")["status"].clone();
    assert_eq!(status["failures"], 200);
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot reach"),
        "{status}"
    );
    // Receiver tasks do not hold up a graceful shutdown.
    let mut server = server;
    server.stop();
}

#[test]
fn alerts_published_while_a_receiver_is_down_arrive_after_a_kill_9_in_order() {
    let port = free_port();
    let server_config = config(&format!(
        "max_attempts = 1000\n\n[[delivery.receivers]]\nname = \"later\"\nurl = \"http://127.0.0.1:{port}/hook\"\n\n[[delivery.routes]]\nreceiver = \"later\"\n"
    ));
    let mut server = Server::start(&server_config);
    server.create_rule(&every_event_rule("r1", "a", "high"));
    server.send_events(&events(10, "a"));
    let alerts = server.wait_alerts("", 10);
    wait_until("the receiver is being retried", || {
        (server.get_json("/v1/receivers/later")["status"]["retrying"] == true).then_some(())
    });
    server.kill9();
    server.restart();
    // The receiver comes up only now.
    let hook = Webhook::start_on(port, Behaviour::Ok);
    wait_until("all ten alerts delivered after the restart", || {
        (first_arrivals(&hook.accepted_alerts()).len() >= 10).then_some(())
    });
    assert_eq!(
        first_arrivals(&hook.accepted_alerts()),
        seqs(&alerts),
        "every alert, in order"
    );
    // The config file's receiver and route were stored once, not again at
    // the restart.
    assert_eq!(server.get_json("/v1/receivers/later")["version"], 1);
    assert_eq!(server.get_json("/v1/routes")["version"], 1);
}

#[test]
fn grouping_sends_one_notification_per_group() {
    let server = Server::start(&config(""));
    let hook = Webhook::start(Behaviour::Ok);
    create_receiver(&server, json!({"name": "grouped", "url": hook.url()}));
    put_routes(
        &server,
        json!([{"receiver": "grouped", "group_by": ["rule"], "group_wait": "2s", "group_interval": "2s"}]),
    );
    server.create_rule(&every_event_rule("r1", "a", "high"));
    server.create_rule(&every_event_rule("r2", "b", "low"));
    let mut batch = events(6, "a");
    batch
        .as_array_mut()
        .unwrap()
        .extend(events(6, "b").as_array().unwrap().clone());
    server.send_events(&batch);
    server.wait_alerts("", 12);
    wait_until("twelve alerts delivered", || {
        (hook.accepted_alerts().len() >= 12).then_some(())
    });
    let notifications = hook.accepted();
    assert!(
        notifications.len() < 12,
        "alerts were grouped: {} notifications",
        notifications.len()
    );
    for n in &notifications {
        let body = n.json();
        let rule = body["group_labels"]["rule"].as_str().unwrap().to_owned();
        assert!(
            body["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["rule"] == rule.as_str()),
            "{body}"
        );
        assert!(n.header("Idempotency-Key").is_some());
    }
    assert_eq!(first_arrivals(&hook.accepted_alerts()).len(), 12);
}

#[test]
fn a_rate_limited_receiver_gets_the_overflow_batched_not_dropped() {
    let server = Server::start(&config(""));
    let hook = Webhook::start(Behaviour::Ok);
    create_receiver(
        &server,
        json!({"name": "chat", "url": hook.url(), "rate_limit": {"rate": 1, "per": "1s", "burst": 1}}),
    );
    put_routes(&server, json!([{"receiver": "chat"}]));
    server.create_rule(&every_event_rule("r1", "a", "high"));
    server.send_events(&events(30, "a"));
    let alerts = server.wait_alerts("", 30);
    wait_until("thirty alerts delivered", || {
        (hook.accepted_alerts().len() >= 30).then_some(())
    });
    let notifications = hook.accepted().len();
    assert!(
        notifications < 30,
        "{notifications} notifications for 30 alerts"
    );
    assert_eq!(
        first_arrivals(&hook.accepted_alerts()),
        seqs(&alerts),
        "none dropped, in order"
    );
    assert!(
        server
            .metric("cepheus_delivery_rate_limited_alerts_total{receiver=\"chat\"}")
            .unwrap_or(0.0)
            > 0.0
    );
}

#[test]
fn private_urls_are_refused_unless_allowed_and_writes_are_checked() {
    let server = Server::start(FAST_TIMING);
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.8/hook",
        "http://[::1]/hook",
    ] {
        let body = expect_error(
            server.post(
                "/v1/receivers",
                "application/json",
                json!({"name": "x", "url": url}).to_string(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_receiver",
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("allow_private_urls"),
            "{body}"
        );
    }
    // A public address is accepted (nothing is sent: no route uses it).
    create_receiver(
        &server,
        json!({"name": "public", "url": "http://93.184.216.34/hook"}),
    );
    let body = expect_error(
        server.post(
            "/v1/receivers",
            "application/json",
            json!({"name": "Bad Name", "url": "ftp://x", "max_attempts": 0}).to_string(),
        ),
        StatusCode::BAD_REQUEST,
        "invalid_receiver",
    );
    assert!(!body["problems"].as_array().unwrap().is_empty(), "{body}");
    expect_error(
        server.post(
            "/v1/receivers",
            "application/json",
            json!({"name": "public", "url": "http://93.184.216.34/x"}).to_string(),
        ),
        StatusCode::CONFLICT,
        "conflict",
    );
    let body = expect_error(
        server.put(
            "/v1/routes",
            "application/json",
            json!({"routes": [{"receiver": "nobody"}]}).to_string(),
        ),
        StatusCode::BAD_REQUEST,
        "invalid_routes",
    );
    assert!(
        body["message"].as_str().unwrap().contains("nobody"),
        "{body}"
    );
    put_routes(
        &server,
        json!([{"receiver": "public", "match": {"rule": "never-*"}}]),
    );
    expect_error(
        server.delete("/v1/receivers/public"),
        StatusCode::CONFLICT,
        "conflict",
    );
    put_routes(&server, json!([]));
    assert_eq!(
        server.delete("/v1/receivers/public").status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.get_json("/v1/routes")["version"],
        2,
        "a refused list is not a version"
    );
    assert_eq!(
        server.get_json("/v1/routes/versions/1")["routes"][0]["receiver"],
        "public"
    );
}

#[test]
fn silences_mute_new_alerts_hold_back_waiting_ones_and_expire() {
    let server = Server::start(&config(""));
    let hook = Webhook::start(Behaviour::Fail(503));
    create_receiver(
        &server,
        json!({"name": "hook", "url": hook.url(), "max_attempts": 100000}),
    );
    put_routes(&server, json!([{"receiver": "hook"}]));
    server.create_rule(&every_event_rule("r1", "a", "high"));
    server.create_rule(&every_event_rule("r2", "b", "high"));
    // An r1 alert waits while the receiver fails...
    server.send_events(&events(1, "a"));
    wait_until("the receiver is being retried", || {
        (server.get_json("/v1/receivers/hook")["status"]["retrying"] == true).then_some(())
    });
    // ... and a silence created now holds it back.
    let silence = expect_json(
        server.post(
            "/v1/silences",
            "application/json",
            json!({"matchers": {"rule": "r1"}, "duration": "1h", "created_by": "ana", "comment": "maintenance"}).to_string(),
        ),
        StatusCode::CREATED,
        "POST /v1/silences",
    );
    assert_eq!(silence["state"], "active");
    let id = silence["id"].as_str().unwrap().to_owned();
    hook.set(Behaviour::Ok);
    // A new r1 alert is silenced: stored, marked, not listed by default.
    server.send_events(&json!([{"key": "muted", "type": "a"}]));
    let muted = server.wait_alerts("silenced=true&key=muted", 1);
    assert_eq!(muted[0]["silenced"], true);
    assert!(
        server.alerts("key=muted").is_empty(),
        "silenced alerts are left out by default"
    );
    let by_id = server.get_json(&format!("/v1/alerts/{}", muted[0]["id"].as_str().unwrap()));
    assert_eq!(by_id["silenced"], true);
    // An r2 alert, later in the log, goes through: the receiver is past
    // both r1 alerts, and got neither.
    server.send_events(&json!([{"key": "loud", "type": "b"}]));
    wait_until("the r2 alert delivered", || {
        hook.accepted_alerts()
            .iter()
            .any(|a| a["key"] == "loud")
            .then_some(())
    });
    assert!(
        hook.accepted_alerts().iter().all(|a| a["rule"] != "r1"),
        "{:?}",
        hook.accepted_alerts()
    );
    assert_eq!(
        server.metric("cepheus_alerts_silenced_total{rule=\"r1\"}"),
        Some(1.0)
    );
    // Expired, the silence mutes nothing new, and stays listed.
    let expired = expect_json(
        server.delete(&format!("/v1/silences/{id}")),
        StatusCode::OK,
        "expire",
    );
    assert_eq!(expired["state"], "expired");
    server.send_events(&json!([{"key": "after", "type": "a"}]));
    wait_until("the r1 alert after the silence delivered", || {
        hook.accepted_alerts()
            .iter()
            .any(|a| a["key"] == "after")
            .then_some(())
    });
    let listed = server.get_json("/v1/silences")["silences"].clone();
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(
        server.get_json("/v1/silences?state=active")["silences"],
        json!([])
    );
    // The silenced alert stays marked after the silence expired.
    assert_eq!(
        server.alerts("silenced=true&key=muted")[0]["silenced"],
        true
    );
    let body = expect_error(
        server.post(
            "/v1/silences",
            "application/json",
            json!({"matchers": {}, "duration": "1h", "created_by": "x"}).to_string(),
        ),
        StatusCode::BAD_REQUEST,
        "invalid_silence",
    );
    assert!(
        body["message"].as_str().unwrap().contains("matchers"),
        "{body}"
    );
}

#[test]
fn websocket_subscribers_get_silenced_alerts_only_when_they_ask() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(&every_event_rule("r1", "a", "high"));
    server.create_rule(&every_event_rule("r2", "b", "high"));
    expect_json(
        server.post(
            "/v1/silences",
            "application/json",
            json!({"matchers": {"rule": "r1", "severity": "high"}, "duration": "1h", "created_by": "ana"}).to_string(),
        ),
        StatusCode::CREATED,
        "POST /v1/silences",
    );
    let mut plain = server.ws("");
    let mut all = server.ws("silenced=true");
    server.send_events(&json!([{"key": "k", "type": "a"}]));
    server.send_events(&json!([{"key": "k", "type": "b"}]));
    let first = all.next_alert();
    assert_eq!(
        (first["rule"].as_str(), first["silenced"].as_bool()),
        (Some("r1"), Some(true))
    );
    assert_eq!(all.next_alert()["rule"], "r2");
    let only = plain.next_alert();
    assert_eq!(
        only["rule"], "r2",
        "the silenced alert was left out: {only}"
    );
    assert!(only.get("silenced").is_none());
    // Replays mark and filter the same way.
    let mut replay = server.ws("after=0");
    assert_eq!(replay.next_alert()["rule"], "r2");
}

#[test]
fn alerts_removed_by_retention_before_a_receiver_got_them_are_listed_as_lost() {
    let server = Server::start(&format!(
        "{}\nqueue_len = 1\nmax_attempts = 100000\n\n[history]\nalert_retention = \"1ms\"\ncompact_every = \"50ms\"\n",
        config("")
    ));
    let hook = Webhook::start(Behaviour::Fail(503));
    create_receiver(&server, json!({"name": "behind", "url": hook.url()}));
    put_routes(&server, json!([{"receiver": "behind"}]));
    server.create_rule(&every_event_rule("r1", "a", "high"));
    server.send_events(&events(5, "a"));
    // Retention keeps the newest alert only; the receiver holds the first
    // (its read-ahead is one alert) and is stuck on it.
    wait_until("retention removed the older alerts", || {
        (server.get("/v1/alerts?after=0").status() == StatusCode::GONE).then_some(())
    });
    hook.set(Behaviour::Ok);
    let lost = wait_until("the loss is listed", || {
        let lost = server.get_json("/v1/receivers/behind/lost");
        (lost["total"].as_u64().unwrap_or(0) > 0).then_some(lost)
    });
    wait_until("the newest alert delivered", || {
        hook.accepted_alerts()
            .iter()
            .any(|a| a["seq"] == 5)
            .then_some(())
    });
    let mut covered: Vec<u64> = first_arrivals(&hook.accepted_alerts());
    for range in lost["lost"].as_array().unwrap() {
        covered.extend(range["first_seq"].as_u64().unwrap()..=range["last_seq"].as_u64().unwrap());
    }
    covered.sort();
    assert_eq!(
        covered,
        vec![1, 2, 3, 4, 5],
        "every alert delivered or listed lost: {lost}"
    );
    assert_eq!(
        server.metric("cepheus_delivery_lost_alerts_total{receiver=\"behind\"}"),
        lost["total"].as_f64()
    );
    assert_eq!(
        server.get_json("/v1/receivers/behind")["status"]["lost"],
        lost["total"]
    );
}

/// Makes a self-signed certificate for 127.0.0.1 with openssl.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is needed to make the test certificate (.ci/run installs it)");
    assert!(status.success());
    (cert, key)
}

#[test]
fn https_receivers_are_checked_against_the_configured_authorities() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let server = Server::start(&config(&format!(
        "ca_file = {:?}\n",
        cert.display().to_string()
    )));
    let hook = Webhook::start_tls(Behaviour::Ok, &cert, &key);
    assert!(hook.url().starts_with("https://"));
    create_receiver(
        &server,
        json!({"name": "tls", "url": hook.url(), "format": "cloudevents"}),
    );
    put_routes(&server, json!([{"receiver": "tls"}]));
    server.create_rule(&every_event_rule("r1", "a", "high"));
    server.send_events(&events(1, "a"));
    let got = wait_until("the alert delivered over TLS", || hook.accepted().pop());
    assert_eq!(
        got.header("content-type"),
        Some("application/cloudevents+json")
    );
    let event = got.json();
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "io.cepheus.alert.firing");
    assert_eq!(event["subject"], "k0");
    assert_eq!(event["data"]["rule"], "r1");
}

#[test]
fn changing_receivers_routes_and_silences_needs_the_admin_scope() {
    let hex = |token: &str| -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let server = Server::start(&format!(
        "{}\n[[auth.tokens]]\nname = \"reader\"\nsha256 = \"{}\"\nscopes = [\"read\"]\n\n[[auth.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n",
        config(""),
        hex("reader-token"),
        hex("ops-token")
    ));
    let receiver = json!({"name": "r", "url": "http://127.0.0.1:9/x", "hmac_secret": "k-55e1"});
    let send = |method: reqwest::Method, path: &str, token: &str, body: &Value| {
        server
            .http()
            .request(method, server.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .unwrap()
    };
    for (method, path, body) in [
        (reqwest::Method::POST, "/v1/receivers", receiver.clone()),
        (reqwest::Method::PUT, "/v1/routes", json!({"routes": []})),
        (
            reqwest::Method::POST,
            "/v1/silences",
            json!({"matchers": {"rule": "x"}, "duration": "1h", "created_by": "me"}),
        ),
    ] {
        expect_error(
            send(method, path, "reader-token", &body),
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }
    expect_json(
        send(
            reqwest::Method::POST,
            "/v1/receivers",
            "ops-token",
            &receiver,
        ),
        StatusCode::CREATED,
        "admin creates",
    );
    let read = send(
        reqwest::Method::GET,
        "/v1/receivers/r",
        "reader-token",
        &json!({}),
    );
    let shown = expect_json(read, StatusCode::OK, "read");
    assert_eq!(shown["hmac_secret"], "set");
    assert!(!shown.to_string().contains("k-55e1"));
}
