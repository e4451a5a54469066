//! `POST /v1/events` and `GET /v1/deadletters` (DESIGN §2, §4).

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn events_seen(server: &Server, key: &str) -> u64 {
    server.entity(key)["events_seen"].as_u64().unwrap()
}

fn wait_events_seen(server: &Server, key: &str, n: u64) {
    wait_until(&format!("{key} to have evaluated {n} events"), || {
        let response = server.get(&format!("/v1/entities/{key}"));
        if response.status() != StatusCode::OK {
            return None;
        }
        let entity: Value = response.json().unwrap();
        (entity["events_seen"].as_u64() == Some(n)).then_some(())
    });
}

#[test]
fn one_object_an_array_and_ndjson_are_accepted() {
    let server = Server::start(FAST_TIMING);
    let one = server.send_events(
        &json!({"id": "e-1", "key": "acct-1", "type": "login_failed", "data": {"ip": "10.0.0.7"}}),
    );
    assert_eq!(one, json!({"accepted": 1, "duplicates": 0, "rejected": []}));

    let array = server.send_events(&json!([
        {"key": "acct-1", "type": "login_failed"},
        {"key": "acct-2", "type": "login_failed", "time": "2026-01-01T00:00:01.123Z"},
    ]));
    assert_eq!(
        array,
        json!({"accepted": 2, "duplicates": 0, "rejected": []})
    );

    let ndjson = "{\"key\": \"acct-1\", \"type\": \"a\"}\n\n{\"key\": \"acct-1\", \"type\": \"b\"}\r\n{\"key\": \"acct-3\", \"type\": \"c\"}\n";
    let summary = expect_json(server.post_ndjson(ndjson), StatusCode::ACCEPTED, "NDJSON");
    assert_eq!(
        summary,
        json!({"accepted": 3, "duplicates": 0, "rejected": []})
    );

    wait_events_seen(&server, "acct-1", 4);
    wait_events_seen(&server, "acct-2", 1);
    wait_events_seen(&server, "acct-3", 1);
    assert_eq!(server.entity("acct-2")["clock"], "2026-01-01T00:00:01.123Z");
}

#[test]
fn cloudevents_structured_and_batch_map_subject_to_key() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(
        "id: big-transfer\nseverity: high\nsequence:\n  steps:\n    - name: t\n      match: type == \"transfer\" && data.amount > 1000\nalert:\n  message: \"{{key}} moved {{t.data.amount}}\"\n",
    );
    let single = json!({
        "specversion": "1.0", "id": "ce-1", "source": "/bank", "type": "transfer",
        "subject": "acct-9", "time": now_plus(0), "datacontenttype": "application/json",
        "data": {"amount": 5000}
    });
    let summary = expect_json(
        server.post(
            "/v1/events",
            "application/cloudevents+json",
            single.to_string(),
        ),
        StatusCode::ACCEPTED,
        "CloudEvent",
    );
    assert_eq!(
        summary,
        json!({"accepted": 1, "duplicates": 0, "rejected": []})
    );

    let batch = json!([
        {"specversion": "1.0", "id": "ce-2", "source": "/bank", "type": "transfer", "subject": "acct-9", "data": {"amount": 10}},
        {"specversion": "1.0", "id": "ce-3", "source": "/bank", "type": "transfer", "subject": "acct-8", "data": {"amount": 2000}},
        {"specversion": "1.0", "id": "ce-4", "source": "/bank", "type": "transfer", "data": {"amount": 2000}},
        {"id": "ce-5", "source": "/bank", "type": "transfer", "subject": "acct-8"},
    ]);
    let summary = expect_json(
        server.post(
            "/v1/events",
            "application/cloudevents-batch+json; charset=utf-8",
            batch.to_string(),
        ),
        StatusCode::ACCEPTED,
        "CloudEvents batch",
    );
    assert_eq!(summary["accepted"], 2, "{summary}");
    let rejected = summary["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{summary}");
    assert_eq!(rejected[0]["index"], 2);
    assert!(
        rejected[0]["error"].as_str().unwrap().contains("subject"),
        "{summary}"
    );
    assert_eq!(rejected[1]["index"], 3);
    assert!(
        rejected[1]["error"]
            .as_str()
            .unwrap()
            .contains("specversion"),
        "{summary}"
    );

    let alerts = server.wait_alerts("rule=big-transfer", 2);
    let keys: Vec<&str> = alerts.iter().map(|a| a["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["acct-9", "acct-8"]);
    assert_eq!(alerts[0]["message"], "acct-9 moved 5000");
    assert_eq!(alerts[0]["events"][0]["id"], "ce-1");
    wait_events_seen(&server, "acct-9", 2);

    // A batch must be an array.
    expect_error(
        server.post(
            "/v1/events",
            "application/cloudevents-batch+json",
            single.to_string(),
        ),
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
}

#[test]
fn invalid_events_in_a_batch_are_rejected_one_by_one_and_dead_lettered() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(&every_event_rule("seen", "ok", "info"));
    let long_key = "k".repeat(300);
    let summary = server.send_events(&json!([
        {"key": "acct-1", "type": "ok"},
        {"type": "ok"},
        {"key": "acct-1", "type": "ok", "time": "yesterday"},
        {"key": "acct-1", "type": "ok", "amount": 3},
        {"key": "acct-1", "type": "ok", "data": [1, 2]},
        {"key": long_key, "type": "ok"},
        "not an object",
        {"key": "acct-2", "type": "ok"},
    ]));
    assert_eq!(summary["accepted"], 2, "{summary}");
    assert_eq!(summary["duplicates"], 0, "{summary}");
    let rejected = summary["rejected"].as_array().unwrap();
    let indexes: Vec<u64> = rejected
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [1, 2, 3, 4, 5, 6], "{summary}");
    for (r, word) in rejected
        .iter()
        .zip(["key", "time", "amount", "data", "key", "object"])
    {
        let error = r["error"].as_str().unwrap();
        assert!(
            error.contains(word),
            "the error `{error}` should mention `{word}`"
        );
    }

    // The valid ones were evaluated.
    server.wait_alerts("rule=seen", 2);

    // The invalid ones are dead letters with reason `invalid`, as received.
    let letters = server.deadletters();
    assert_eq!(letters.len(), 6, "{letters:?}");
    for (letter, r) in letters.iter().zip(rejected) {
        assert_eq!(letter["reason"], "invalid");
        assert_eq!(letter["error"], r["error"]);
        assert!(letter["seq"].as_u64().unwrap() >= 1);
        assert!(letter["received_at"].is_string());
    }
    assert_eq!(letters[0]["event"], json!({"type": "ok"}));
    assert_eq!(letters[1]["key"], "acct-1");
    assert_eq!(letters[5]["event"], "not an object");

    // NDJSON: a line that is not JSON is rejected with its index; the others go on.
    let summary = expect_json(
        server
            .post_ndjson("{\"key\": \"acct-3\", \"type\": \"ok\"}\n{oops\n{\"key\": \"acct-3\"}\n"),
        StatusCode::ACCEPTED,
        "NDJSON with bad lines",
    );
    assert_eq!(summary["accepted"], 1, "{summary}");
    let indexes: Vec<u64> = summary["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [1, 2], "{summary}");
    assert_eq!(server.deadletters().len(), 8);

    // An NDJSON index is the line number − 1, blank lines included, so a
    // client can find the line.
    let summary = expect_json(
        server.post_ndjson("{\"key\": \"acct-3\", \"type\": \"ok\"}\n\n\n{\"type\": \"ok\"}\n"),
        StatusCode::ACCEPTED,
        "NDJSON with blank lines",
    );
    assert_eq!(summary["rejected"][0]["index"], 3, "{summary}");
}

#[test]
fn deadletters_page_with_after_limit_and_next() {
    let server = Server::start(FAST_TIMING);
    let bad: Vec<Value> = (0..5).map(|i| json!({"key": format!("k{i}")})).collect();
    let summary = server.send_events(&Value::Array(bad));
    assert_eq!(summary["rejected"].as_array().unwrap().len(), 5);

    let page = server.get_json("/v1/deadletters?limit=2");
    let seqs: Vec<u64> = page["deadletters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(page["next"], 2);
    let page = server.get_json("/v1/deadletters?after=2&limit=10");
    let seqs: Vec<u64> = page["deadletters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert_eq!(page["next"], 5);
    let page = server.get_json("/v1/deadletters?after=5");
    assert_eq!(page, json!({"deadletters": [], "next": 5}));

    expect_error(
        server.get("/v1/deadletters?limit=0"),
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    expect_error(
        server.get("/v1/deadletters?limit=100000"),
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    expect_error(
        server.get("/v1/deadletters?after=-1"),
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
}

#[test]
fn late_events_are_dead_lettered_and_not_evaluated() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(&every_event_rule("any-ping", "ping", "info"));
    let base = history_base();
    server.send_events(
        &json!({"id": "p-2", "key": "dev-1", "type": "ping", "time": at(&base, 10_000)}),
    );
    server.wait_alerts("rule=any-ping", 1);
    // Older than the entity's watermark (allowed lateness 0 s).
    let summary = server.send_events(
        &json!({"id": "p-1", "key": "dev-1", "type": "ping", "time": at(&base, 5_000)}),
    );
    assert_eq!(
        summary,
        json!({"accepted": 1, "duplicates": 0, "rejected": []}),
        "late is decided per entity, after acceptance"
    );
    let letter = wait_until("a late dead letter", || {
        server
            .deadletters()
            .into_iter()
            .find(|d| d["reason"] == "late")
    });
    assert_eq!(letter["key"], "dev-1");
    assert_eq!(letter["event"]["id"], "p-1");
    assert!(
        letter["error"].as_str().unwrap().contains("watermark"),
        "{letter}"
    );
    // Another entity's clock is its own: the same old time is not late there.
    server.send_events(&json!({"key": "dev-2", "type": "ping", "time": at(&base, 5_000)}));
    server.wait_alerts("rule=any-ping", 2);
    wait_until("the late counter", || {
        (server.metric("cepheus_events_late_total") == Some(1.0)).then_some(())
    });
    assert_eq!(
        server.alerts("rule=any-ping&key=dev-1").len(),
        1,
        "the late event was evaluated"
    );
    assert_eq!(events_seen(&server, "dev-1"), 1);
}

#[test]
fn allowed_lateness_from_the_config_accepts_slightly_late_events() {
    let server = Server::start(&format!(
        "{FAST_TIMING}\n[engine]\nallowed_lateness = \"10s\"\n"
    ));
    let base = history_base();
    server.send_events(&json!([
        {"key": "dev-1", "type": "ping", "time": at(&base, 20_000)},
        {"key": "dev-1", "type": "ping", "time": at(&base, 12_000)},
        {"key": "dev-1", "type": "ping", "time": at(&base, 9_000)},
    ]));
    wait_until("one late dead letter", || {
        (server
            .deadletters()
            .iter()
            .filter(|d| d["reason"] == "late")
            .count()
            == 1)
            .then_some(())
    });
    wait_events_seen(&server, "dev-1", 2);
    assert_eq!(server.entity("dev-1")["watermark"], at(&base, 10_000));
}

#[test]
fn duplicate_ids_are_acknowledged_and_not_evaluated_again() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(
        "id: two-pings\nsequence:\n  steps:\n    - name: p\n      match: type == \"ping\"\n      times: 2\n",
    );
    let summary = server.send_events(&json!({"id": "e-1", "key": "dev-1", "type": "ping"}));
    assert_eq!(
        summary,
        json!({"accepted": 1, "duplicates": 0, "rejected": []})
    );
    // A client retry, alone and inside a batch.
    let summary = server.send_events(&json!({"id": "e-1", "key": "dev-1", "type": "ping"}));
    assert_eq!(
        summary,
        json!({"accepted": 0, "duplicates": 1, "rejected": []})
    );
    let summary = server.send_events(&json!([
        {"id": "e-1", "key": "dev-1", "type": "ping"},
        {"id": "e-1", "key": "dev-2", "type": "ping"},
    ]));
    assert_eq!(
        summary,
        json!({"accepted": 1, "duplicates": 1, "rejected": []}),
        "ids are per key"
    );
    // The same id twice in one request counts once.
    let summary = server.send_events(&json!([
        {"id": "e-7", "key": "dev-3", "type": "ping"},
        {"id": "e-7", "key": "dev-3", "type": "ping"},
    ]));
    assert_eq!(
        summary,
        json!({"accepted": 1, "duplicates": 1, "rejected": []})
    );

    wait_events_seen(&server, "dev-1", 1);
    wait_events_seen(&server, "dev-3", 1);
    assert!(
        server.alerts("rule=two-pings").is_empty(),
        "a duplicate completed a match"
    );
    assert_eq!(server.metric("cepheus_events_duplicate_total"), Some(3.0));

    // After a restart the ids are still known.
    server_restart_keeps_dedup(server);
}

fn server_restart_keeps_dedup(mut server: Server) {
    server.kill9();
    server.restart();
    let summary = server.send_events(&json!({"id": "e-1", "key": "dev-1", "type": "ping"}));
    assert_eq!(
        summary,
        json!({"accepted": 0, "duplicates": 1, "rejected": []})
    );
    let summary = server.send_events(&json!({"id": "e-2", "key": "dev-1", "type": "ping"}));
    assert_eq!(summary["accepted"], 1);
    let alerts = server.wait_alerts("rule=two-pings", 1);
    assert_eq!(alerts.len(), 1);
    let ids: Vec<&Value> = alerts[0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["id"])
        .collect();
    assert_eq!(ids, [&json!("e-1"), &json!("e-2")]);
}

#[test]
fn unparseable_bodies_are_400() {
    let server = Server::start(FAST_TIMING);
    for (content_type, body) in [
        ("application/json", "{\"key\": "),
        ("application/json", "42"),
        ("application/json", "\"text\""),
        ("application/json", ""),
        ("application/x-ndjson", "{oops\nnot json either\n"),
        ("application/x-ndjson", "\u{0}\u{ff}"),
        ("application/cloudevents+json", "[1,"),
    ] {
        let body = expect_error(
            server.post("/v1/events", content_type, body.to_owned()),
            StatusCode::BAD_REQUEST,
            "bad_request",
        );
        assert!(body["message"].is_string());
    }
    let invalid_utf8 = server.post(
        "/v1/events",
        "application/x-ndjson",
        vec![0xff, 0xfe, b'\n'],
    );
    expect_error(invalid_utf8, StatusCode::BAD_REQUEST, "bad_request");
    // Nothing was accepted or dead-lettered.
    assert!(server.deadletters().is_empty());
    assert_eq!(
        server
            .metric("cepheus_events_accepted_total")
            .unwrap_or(0.0),
        0.0
    );
}

#[test]
fn unsupported_content_types_are_415() {
    let server = Server::start(FAST_TIMING);
    let event = json!({"key": "k", "type": "t"}).to_string();
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let body = expect_error(
            server.post("/v1/events", content_type, event.clone()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("application/json"),
            "{body}"
        );
    }
}

#[test]
fn bodies_and_batches_over_the_limits_are_413() {
    let server = Server::start(&format!(
        "{FAST_TIMING}\n[limits]\nmax_body_bytes = 2048\nmax_events_per_request = 3\n"
    ));
    let big = json!({"key": "k", "type": "t", "data": {"pad": "x".repeat(4096)}});
    let body = expect_error(
        server.post_events(&big),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert!(body["message"].as_str().unwrap().contains("2048"), "{body}");

    let four: Vec<Value> = (0..4)
        .map(|i| json!({"key": "k", "type": format!("t{i}")}))
        .collect();
    let body = expect_error(
        server.post_events(&Value::Array(four.clone())),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert!(body["message"].as_str().unwrap().contains('3'), "{body}");
    let ndjson: String = four.iter().map(|e| format!("{e}\n")).collect();
    expect_error(
        server.post_ndjson(&ndjson),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    // Exactly at the limit is fine, and nothing of the refused requests was kept.
    let summary = server.send_events(&Value::Array(four[..3].to_vec()));
    assert_eq!(summary["accepted"], 3);
    wait_events_seen(&server, "k", 3);
    assert!(server.deadletters().is_empty());
}

#[test]
fn an_event_over_the_per_event_limits_is_rejected_alone() {
    let server = Server::start(&format!(
        "{FAST_TIMING}\n[limits.event]\nmax_data_bytes = 64\nmax_data_depth = 2\n"
    ));
    let summary = server.send_events(&json!([
        {"key": "k", "type": "t", "data": {"pad": "x".repeat(100)}},
        {"key": "k", "type": "t", "data": {"a": {"b": {"c": 1}}}},
        {"key": "k", "type": "t", "data": {"a": {"b": 1}}},
    ]));
    assert_eq!(summary["accepted"], 1, "{summary}");
    assert_eq!(
        summary["rejected"].as_array().unwrap().len(),
        2,
        "{summary}"
    );
}

#[test]
fn overload_is_429_with_retry_after() {
    // At most 2 events may wait for evaluation: a request of 3 can never fit.
    let server = Server::start(&format!(
        "{FAST_TIMING}\n[limits]\nmax_inflight_events = 2\n"
    ));
    let three: Vec<Value> = (0..3)
        .map(|i| json!({"key": format!("k{i}"), "type": "t"}))
        .collect();
    let response = server.post_events(&Value::Array(three));
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = expect_error(response, StatusCode::TOO_MANY_REQUESTS, "overloaded");
    let retry_after: u64 = retry_after
        .expect("a 429 carries Retry-After")
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert!(
        body["message"].as_str().unwrap().contains("retry"),
        "{body}"
    );
    assert_eq!(server.metric("cepheus_ingest_overloaded_total"), Some(1.0));
    // Within the limit, the same events are accepted.
    let summary =
        server.send_events(&json!([{"key": "k0", "type": "t"}, {"key": "k1", "type": "t"}]));
    assert_eq!(summary["accepted"], 2);
}

#[test]
fn live_entities_at_their_limit_are_429_until_idle_ones_are_passivated() {
    let server = Server::start(&format!(
        "{FAST_TIMING}passivate_after = \"1s\"\n[limits]\nmax_live_entities = 2\n"
    ));
    let two = json!([{"key": "a", "type": "t"}, {"key": "b", "type": "t"}]);
    assert_eq!(server.send_events(&two)["accepted"], 2);
    // Two live entities fill the limit: nothing more is accepted.
    let response = server.post_events(&json!({"key": "c", "type": "t"}));
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = expect_error(response, StatusCode::TOO_MANY_REQUESTS, "overloaded");
    assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("entities in memory"),
        "{body}"
    );
    assert_eq!(server.metric("cepheus_ingest_overloaded_total"), Some(1.0));
    expect_error(
        server.get("/v1/entities/c"),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // Once the idle ones are passivated, there is room again.
    wait_until("the entities to be passivated", || {
        (server.metric("cepheus_entities_live") == Some(0.0)).then_some(())
    });
    assert_eq!(
        server.send_events(&json!({"key": "c", "type": "t"}))["accepted"],
        1
    );
}

/// Concurrent requests are appended together; an id sent by several of
/// them at once is still accepted exactly once.
#[test]
fn the_same_id_sent_concurrently_is_accepted_once() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(&every_event_rule("watch", "poke", "low"));
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..16)
            .map(|i| {
                let server = &server;
                scope.spawn(move || {
                    // Half send the event alone, half with a fresh one beside it.
                    let mut events = vec![json!({"id": "once", "key": "k", "type": "poke"})];
                    if i % 2 == 1 {
                        events.push(json!({"id": format!("own-{i}"), "key": "k", "type": "poke"}));
                    }
                    server.send_events(&Value::Array(events))
                })
            })
            .collect();
        senders.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let accepted: u64 = answers
        .iter()
        .map(|a| a["accepted"].as_u64().unwrap())
        .sum();
    let duplicates: u64 = answers
        .iter()
        .map(|a| a["duplicates"].as_u64().unwrap())
        .sum();
    assert_eq!((accepted, duplicates), (1 + 8, 15), "{answers:?}");
    wait_until("the alerts", || {
        (server.alerts("rule=watch").len() == 9).then_some(())
    });
}

#[test]
fn an_id_is_accepted_again_after_the_dedup_horizon() {
    let server = Server::start(&format!("{FAST_TIMING}dedup_horizon = \"1s\"\n"));
    let event = json!({"id": "e-1", "key": "k", "type": "t"});
    assert_eq!(server.send_events(&event)["accepted"], 1);
    assert_eq!(server.send_events(&event)["duplicates"], 1);
    wait_until("the id to be forgotten", || {
        (server.send_events(&event)["accepted"] == 1).then_some(())
    });
}
