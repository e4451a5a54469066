//! Operations surface (DESIGN §6): health, readiness, metrics, the OpenAPI
//! document, the docs page, unknown routes.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;

#[test]
fn healthz_and_readyz_answer_ok() {
    let server = Server::start(FAST_TIMING);
    assert_eq!(server.get_json("/healthz"), json!({"status": "ok"}));
    assert_eq!(server.get_json("/readyz"), json!({"status": "ok"}));
}

#[test]
fn the_embedded_mode_lists_one_instance_owning_every_partition() {
    let server = Server::start(&format!("partitions = 8\n{FAST_TIMING}"));
    let list = server.get_json("/v1/instances");
    assert_eq!(list["partitions"], 8, "{list}");
    assert_eq!(list["unowned"], json!([]), "{list}");
    let instances = list["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 1, "{list}");
    assert_eq!(instances[0]["self"], true);
    assert_eq!(instances[0]["assigned"], json!([0, 1, 2, 3, 4, 5, 6, 7]));
    assert_eq!(
        instances[0]["url"],
        format!("http://127.0.0.1:{}", server.port())
    );
    // The id is made once and kept in the data directory.
    let id = instances[0]["id"].clone();
    let mut server = server;
    server.stop();
    server.restart();
    assert_eq!(server.get_json("/v1/instances")["instances"][0]["id"], id);
}

#[test]
fn metrics_are_prometheus_text_with_the_documented_names() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(&every_event_rule("ping", "ping", "low"));
    server.send_events(&json!([{"key": "m-1", "type": "ping"}, {"key": "m-2", "type": "other"}]));
    server.wait_alerts("rule=ping", 1);
    let _ = server.get("/v1/rules/nope");

    let response = server.get("/metrics");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().unwrap();
    assert_eq!(
        metric_value(&text, "cepheus_events_accepted_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "cepheus_alerts_total{rule=\"ping\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "cepheus_entities_live"),
        Some(2.0),
        "{text}"
    );
    for name in [
        "cepheus_events_rejected_total",
        "cepheus_events_duplicate_total",
        "cepheus_entities_activated_total",
        "cepheus_mailbox_depth",
        "cepheus_inflight_events",
        "cepheus_ws_subscribers",
        "cepheus_store_bytes",
        "cepheus_event_log_bytes",
        "cepheus_http_request_duration_seconds_bucket",
        "cepheus_http_request_duration_seconds_count",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "metric {name} missing from:\n{text}"
        );
    }
    // Request latency is labelled by route pattern, not by concrete path.
    assert!(
        text.contains(r#"cepheus_http_request_duration_seconds_count{method="POST",route="/v1/events",status="202"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"cepheus_http_request_duration_seconds_count{method="GET",route="/v1/rules/{id}",status="404"}"#),
        "{text}"
    );
}

#[test]
fn openapi_document_is_served_and_lists_every_route() {
    let server = Server::start(FAST_TIMING);
    let doc = server.get_json("/openapi.json");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "cepheus");
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/events", "post"),
        ("/v1/deadletters", "get"),
        ("/v1/rules", "get"),
        ("/v1/rules", "post"),
        ("/v1/rules/validate", "post"),
        ("/v1/rules/{id}", "get"),
        ("/v1/rules/{id}", "put"),
        ("/v1/rules/{id}", "delete"),
        ("/v1/rules/{id}/enable", "post"),
        ("/v1/rules/{id}/disable", "post"),
        ("/v1/alerts", "get"),
        ("/v1/alerts/{id}", "get"),
        ("/v1/alerts/ws", "get"),
        ("/v1/entities/{key}", "get"),
        ("/v1/entities/{key}", "put"),
        ("/v1/clock", "post"),
        ("/v1/instances", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    // The served document is the one `cepheus openapi` prints.
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_cepheus"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(printed.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(printed, doc);
}

#[test]
fn docs_page_is_html_served_from_the_binary() {
    let server = Server::start(FAST_TIMING);
    let response = server.get("/docs/");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = response.text().unwrap();
    assert!(html.to_lowercase().contains("<html"), "{html}");
    assert!(html.contains("swagger"), "{html}");
    // Its assets come from the binary, not from a CDN.
    assert!(
        !html.contains("https://"),
        "the docs page loads something from the network:\n{html}"
    );
    let script = server.get("/docs/swagger-ui-bundle.js");
    assert_eq!(script.status(), StatusCode::OK);
    assert!(script.text().unwrap().len() > 10_000);
    let initializer = server.get("/docs/swagger-initializer.js").text().unwrap();
    assert!(initializer.contains("/openapi.json"), "{initializer}");
}

#[test]
fn unknown_routes_are_404_in_the_error_shape() {
    let server = Server::start(FAST_TIMING);
    let body = expect_error(
        server.get("/v1/nothing-here"),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("/v1/nothing-here"),
        "{body}"
    );
    expect_error(server.get("/nope"), StatusCode::NOT_FOUND, "not_found");
}

#[test]
fn a_wrong_method_gets_the_error_shape() {
    let server = Server::start(FAST_TIMING);
    for (method, path) in [
        ("GET", "/v1/events"),
        ("DELETE", "/v1/alerts"),
        ("POST", "/healthz"),
        ("GET", "/v1/clock"),
    ] {
        let response = server
            .http()
            .request(method.parse().unwrap(), server.url(path))
            .send()
            .unwrap();
        let status = response.status();
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {status}"
        );
        let body: serde_json::Value = response.json().unwrap();
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{method} {path}: {body}"
        );
    }
}

#[test]
fn the_history_counts_events_and_alerts_per_rule_in_steps() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(&every_event_rule("r", "t", "low"));
    server.send_events(&serde_json::json!([
        {"key": "a", "type": "t"}, {"key": "b", "type": "t"}, {"key": "c", "type": "other"}
    ]));
    server.wait_alerts("", 2);
    let body = server.get_json("/v1/stats/history?minutes=5");
    assert_eq!(body["step_seconds"], 10);
    let steps = body["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 30, "five minutes of ten-second steps");
    let events: u64 = steps.iter().map(|s| s["events"].as_u64().unwrap()).sum();
    let alerts: u64 = steps.iter().filter_map(|s| s["alerts"]["r"].as_u64()).sum();
    assert_eq!((events, alerts), (3, 2), "{body}");
    expect_error(
        server.get("/v1/stats/history?minutes=61"),
        reqwest::StatusCode::BAD_REQUEST,
        "bad_request",
    );
}
