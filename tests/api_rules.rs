//! `/v1/rules`: the rule lifecycle over REST (DESIGN §3, §6).

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn brute_force_json() -> Value {
    json!({
        "id": "brute-force-login",
        "description": "Three or more failed logins, then a success, within 5 minutes",
        "severity": "high",
        "sequence": {"within": "5m", "steps": [
            {"name": "failures", "match": "type == \"login_failed\"", "times": {"min": 3}},
            {"name": "success", "match": "type == \"login_success\""}
        ]},
        "alert": {"message": "{{key}}: {{failures.count}} failed logins, then a success from {{success.data.ip}}"}
    })
}

fn three_failures_and_success(key: &str) -> Value {
    json!([
        {"key": key, "type": "login_failed"},
        {"key": key, "type": "login_failed"},
        {"key": key, "type": "login_failed"},
        {"key": key, "type": "login_success", "data": {"ip": "10.0.0.9"}},
    ])
}

#[test]
fn create_yaml_then_get_and_list() {
    let server = Server::start(FAST_TIMING);
    let response = server.post_rule_yaml(BRUTE_FORCE);
    assert_eq!(
        response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap()),
        Some("/v1/rules/brute-force-login")
    );
    let created = expect_json(response, StatusCode::CREATED, "create");
    assert_eq!(created["version"], 1);
    assert_eq!(created["rule"], brute_force_json());
    assert!(created["created_at"].is_string());
    assert_eq!(created["created_at"], created["updated_at"]);

    assert_eq!(server.get_json("/v1/rules/brute-force-login"), created);
    let list = server.get_json("/v1/rules");
    assert_eq!(list, json!({"rules": [created]}));

    // The rule works.
    server.send_events(&three_failures_and_success("acct-42"));
    let alerts = server.wait_alerts("rule=brute-force-login", 1);
    assert_eq!(
        alerts[0]["message"],
        "acct-42: 3 failed logins, then a success from 10.0.0.9"
    );
}

#[test]
fn create_json_is_the_same_schema() {
    let server = Server::start(FAST_TIMING);
    let created = expect_json(
        server.post_rule_json(&brute_force_json()),
        StatusCode::CREATED,
        "create JSON",
    );
    assert_eq!(created["rule"], brute_force_json());
    assert_eq!(created["version"], 1);
    // Without a content type the body is read as YAML, which reads JSON too.
    let mut other = brute_force_json();
    other["id"] = json!("second");
    let created = expect_json(
        server.post("/v1/rules", "", other.to_string()),
        StatusCode::CREATED,
        "no type",
    );
    assert_eq!(created["rule"]["id"], "second");
    let ids: Vec<Value> = server.get_json("/v1/rules")["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"]["id"].clone())
        .collect();
    assert_eq!(ids, [json!("brute-force-login"), json!("second")]);
}

#[test]
fn unknown_rules_are_404() {
    let server = Server::start(FAST_TIMING);
    let body = expect_error(
        server.get("/v1/rules/nope"),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert!(body["message"].as_str().unwrap().contains("nope"), "{body}");
    let mut doc = brute_force_json();
    doc["id"] = json!("nope");
    expect_error(
        server.put("/v1/rules/nope", "application/json", doc.to_string()),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    expect_error(
        server.delete("/v1/rules/nope"),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    expect_error(
        server.post("/v1/rules/nope/enable", "", ""),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    expect_error(
        server.post("/v1/rules/nope/disable", "", ""),
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[test]
fn a_duplicate_id_is_409() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(BRUTE_FORCE);
    let body = expect_error(
        server.post_rule_yaml(BRUTE_FORCE),
        StatusCode::CONFLICT,
        "conflict",
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("brute-force-login"),
        "{body}"
    );
    assert_eq!(server.get_json("/v1/rules/brute-force-login")["version"], 1);
}

#[test]
fn an_invalid_yaml_rule_lists_every_problem_with_path_line_and_column() {
    let server = Server::start(FAST_TIMING);
    let yaml = "id: Bad Id\nseverity: extreme\nsequence:\n  within: 5 minutes\n  steps:\n    - name: failures\n      match: type ==\n      times: {min: 0, max: 0}\n";
    let body = expect_error(
        server.post_rule_yaml(yaml),
        StatusCode::BAD_REQUEST,
        "invalid_rule",
    );
    let problems = body["problems"].as_array().unwrap();
    let paths: Vec<&str> = problems
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    for expected in [
        "id",
        "severity",
        "sequence.within",
        "sequence.steps[0].match",
    ] {
        assert!(
            paths.contains(&expected),
            "no problem at `{expected}` in {body}"
        );
    }
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("sequence.steps[0].times")),
        "{body}"
    );
    for problem in problems {
        assert!(problem["line"].as_u64().unwrap() >= 1, "{problem}");
        assert!(problem["column"].as_u64().unwrap() >= 1, "{problem}");
        assert!(
            !problem["message"].as_str().unwrap().is_empty(),
            "{problem}"
        );
    }
    let at = |path: &str| problems.iter().find(|p| p["path"] == path).unwrap();
    assert_eq!(
        (at("id")["line"].as_u64(), at("id")["column"].as_u64()),
        (Some(1), Some(5))
    );
    assert_eq!(at("severity")["line"], 2);
    assert_eq!(at("sequence.within")["line"], 4);
    assert!(
        at("sequence.within")["message"]
            .as_str()
            .unwrap()
            .contains("5m"),
        "{body}"
    );
    assert_eq!(at("sequence.steps[0].match")["line"], 7);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{} problems", problems.len())),
        "{message}"
    );
    // Nothing was stored.
    assert_eq!(server.get_json("/v1/rules"), json!({"rules": []}));
}

#[test]
fn an_invalid_json_rule_lists_every_problem_with_its_path() {
    let server = Server::start(FAST_TIMING);
    let body = expect_error(
        server.post_rule_json(&json!({
            "id": "x", "severity": "extreme", "colour": "red",
            "absence": {"expect": "type ==", "within": "zz"}
        })),
        StatusCode::BAD_REQUEST,
        "invalid_rule",
    );
    let problems = body["problems"].as_array().unwrap();
    let paths: Vec<&str> = problems
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    for expected in ["severity", "absence.expect", "absence.within"] {
        assert!(
            paths.contains(&expected),
            "no problem at `{expected}` in {body}"
        );
    }
    assert!(
        paths.iter().any(|p| p.contains("colour")) || body.to_string().contains("colour"),
        "{body}"
    );
    // Two pattern kinds, and none.
    let body = expect_error(
        server.post_rule_json(
            &json!({"id": "y", "absence": {"expect": "true", "within": "1s"},
                                       "threshold": {"window": {"sliding": "1m"}, "above": 1}}),
        ),
        StatusCode::BAD_REQUEST,
        "invalid_rule",
    );
    assert!(!body["problems"].as_array().unwrap().is_empty());
    expect_error(
        server.post_rule_json(&json!({"id": "z"})),
        StatusCode::BAD_REQUEST,
        "invalid_rule",
    );
}

#[test]
fn unreadable_rule_bodies_are_400_and_wrong_types_415() {
    let server = Server::start(FAST_TIMING);
    for (content_type, text) in [
        ("application/yaml", "id: [unclosed\n"),
        ("application/json", "{\"id\": "),
        ("application/yaml", ""),
        ("application/yaml", "- a list\n- not a rule\n"),
    ] {
        let response = server.post("/v1/rules", content_type, text.to_owned());
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{content_type}: {text:?}"
        );
        let body: Value = response.json().unwrap();
        assert!(
            body["error"] == "invalid_rule" || body["error"] == "bad_request",
            "{body}"
        );
        assert!(body["message"].is_string());
    }
    expect_error(
        server.post("/v1/rules", "application/yaml", vec![0xff, 0xfe]),
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    for content_type in ["text/plain", "application/xml"] {
        expect_error(
            server.post("/v1/rules", content_type, BRUTE_FORCE),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
        expect_error(
            server.post("/v1/rules/validate", content_type, BRUTE_FORCE),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
    }
}

#[test]
fn a_rule_over_the_size_limit_is_413() {
    let server = Server::start(&format!(
        "{FAST_TIMING}\n[limits.rules]\nmax_rule_bytes = 300\n"
    ));
    let long = format!("{BRUTE_FORCE}# {}\n", "padding ".repeat(50));
    expect_error(
        server.post_rule_yaml(&long),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    expect_error(
        server.post("/v1/rules/validate", "application/yaml", long),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
}

#[test]
fn validate_checks_without_saving() {
    let server = Server::start(FAST_TIMING);
    let valid = expect_json(
        server.post("/v1/rules/validate", "application/yaml", BRUTE_FORCE),
        StatusCode::OK,
        "validate",
    );
    assert_eq!(valid["valid"], true);
    assert_eq!(valid["id"], "brute-force-login");
    let mut types: Vec<String> = valid["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    types.sort();
    assert_eq!(types, ["login_failed", "login_success"]);
    let valid = expect_json(
        server.post(
            "/v1/rules/validate",
            "application/json",
            brute_force_json().to_string(),
        ),
        StatusCode::OK,
        "validate JSON",
    );
    assert_eq!(valid["valid"], true);
    expect_error(
        server.get("/v1/rules/brute-force-login"),
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let body = expect_error(
        server.post(
            "/v1/rules/validate",
            "application/yaml",
            "id: x\nabsence:\n  expect: \"type ==\"\n  within: 1s\n",
        ),
        StatusCode::BAD_REQUEST,
        "invalid_rule",
    );
    let problem = &body["problems"][0];
    assert_eq!(problem["path"], "absence.expect");
    assert_eq!(problem["line"], 3);
    assert_eq!(server.get_json("/v1/rules"), json!({"rules": []}));
}

#[test]
fn replace_bumps_the_version_and_applies_to_live_entities() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(&every_event_rule("watch", "a", "low"));
    server.send_events(&json!({"key": "dev-1", "type": "a"}));
    let first = server.wait_alerts("rule=watch", 1);
    assert_eq!(first[0]["rule_version"], 1);

    let replaced = expect_json(
        server.put(
            "/v1/rules/watch",
            "application/yaml",
            every_event_rule("watch", "b", "critical"),
        ),
        StatusCode::OK,
        "replace",
    );
    assert_eq!(replaced["version"], 2);
    assert_eq!(replaced["rule"]["severity"], "critical");
    assert_eq!(server.get_json("/v1/rules/watch")["version"], 2);
    assert_ne!(replaced["updated_at"], Value::Null);

    // The same live entity now follows the new version.
    server.send_events(&json!([{"key": "dev-1", "type": "a"}, {"key": "dev-1", "type": "b"}]));
    let alerts = server.wait_alerts("rule=watch", 2);
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[1]["rule_version"], 2);
    assert_eq!(alerts[1]["severity"], "critical");
    assert_eq!(alerts[1]["message"], "dev-1 sent b");

    // Replacing with another id in the body is refused; so is an invalid rule.
    expect_error(
        server.put(
            "/v1/rules/watch",
            "application/yaml",
            every_event_rule("other", "b", "low"),
        ),
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    expect_error(
        server.put(
            "/v1/rules/watch",
            "application/yaml",
            "id: watch\nseverity: nope\nabsence:\n  expect: \"true\"\n  within: 1s\n",
        ),
        StatusCode::BAD_REQUEST,
        "invalid_rule",
    );
    assert_eq!(server.get_json("/v1/rules/watch")["version"], 2);
}

#[test]
fn a_replaced_rule_starts_with_empty_per_key_state() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(BRUTE_FORCE);
    server.send_events(&json!([
        {"key": "acct-1", "type": "login_failed"},
        {"key": "acct-1", "type": "login_failed"},
    ]));
    wait_until("a partial match", || {
        let entity = server.entity("acct-1");
        let rules = entity["rules"].as_array()?;
        (rules.len() == 1 && rules[0]["state"]["partial_matches"][0]["counts"][0] == 2)
            .then_some(())
    });

    let mut doc = brute_force_json();
    doc["description"] = json!("same pattern, new version");
    let replaced = expect_json(
        server.put(
            "/v1/rules/brute-force-login",
            "application/json",
            doc.to_string(),
        ),
        StatusCode::OK,
        "replace",
    );
    assert_eq!(replaced["version"], 2);
    // The old partial match is gone from the entity's view...
    let entity = server.entity("acct-1");
    assert_eq!(entity["rules"], json!([]), "{entity}");
    // ...and does not count: one more failure and a success are not enough.
    server.send_events(&json!([
        {"key": "acct-1", "type": "login_failed"},
        {"key": "acct-1", "type": "login_success", "data": {"ip": "1.1.1.1"}},
    ]));
    wait_until("the entity to evaluate the events", || {
        (server.entity("acct-1")["events_seen"] == 4).then_some(())
    });
    assert!(server.alerts("rule=brute-force-login").is_empty());
    // Three more failures and a success under version 2 fire: the match
    // counts the 4 failures since the replacement, not the 2 before it.
    server.send_events(&three_failures_and_success("acct-1"));
    let alerts = server.wait_alerts("rule=brute-force-login", 1);
    assert_eq!(alerts[0]["rule_version"], 2);
    assert_eq!(alerts[0]["values"]["failures.count"], 4);
}

#[test]
fn delete_removes_the_rule_and_stops_its_alerts() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(&every_event_rule("watch", "a", "low"));
    let response = server.delete("/v1/rules/watch");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.text().unwrap().is_empty());
    expect_error(
        server.get("/v1/rules/watch"),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    expect_error(
        server.delete("/v1/rules/watch"),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    server.send_events(&json!({"key": "dev-1", "type": "a"}));
    wait_until("the event to be evaluated", || {
        (server.get("/v1/entities/dev-1").status() == StatusCode::OK).then_some(())
    });
    assert!(server.alerts("").is_empty());
    // A re-created rule continues the version numbers, so alert ids never repeat.
    let created = server.create_rule(&every_event_rule("watch", "a", "low"));
    assert_eq!(created["version"], 2);
}

#[test]
fn disable_and_enable() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(&every_event_rule("watch", "a", "low"));
    let disabled = expect_json(
        server.post("/v1/rules/watch/disable", "", ""),
        StatusCode::OK,
        "disable",
    );
    assert_eq!(disabled["rule"]["enabled"], false);
    assert_eq!(disabled["version"], 1);
    assert_eq!(server.get_json("/v1/rules/watch")["rule"]["enabled"], false);

    server.send_events(&json!({"key": "dev-1", "type": "a"}));
    wait_until("the event to be evaluated", || {
        (server.get("/v1/entities/dev-1").status() == StatusCode::OK).then_some(())
    });
    assert!(
        server.alerts("rule=watch").is_empty(),
        "a disabled rule fired"
    );

    let enabled = expect_json(
        server.post("/v1/rules/watch/enable", "", ""),
        StatusCode::OK,
        "enable",
    );
    // A disabled rule kept no state: enabling stores a new version that
    // starts afresh.
    assert_eq!(enabled["version"], 2);
    assert!(
        enabled["rule"].get("enabled").is_none_or(|e| e == true),
        "{enabled}"
    );
    server.send_events(&json!({"key": "dev-1", "type": "a"}));
    let alerts = server.wait_alerts("rule=watch", 1);
    assert_eq!(alerts.len(), 1);
}

#[test]
fn rules_loaded_from_a_folder_at_start() {
    let rules = tempfile::tempdir().unwrap();
    write_file(&rules.path().join("brute.yaml"), BRUTE_FORCE);
    write_file(
        &rules.path().join("watch.json"),
        &json!({"id": "watch", "sequence": {"steps": [{"match": "type == \"a\""}]}}).to_string(),
    );
    let server = Server::start_with(FAST_TIMING, Some(rules.path()));
    let list = server.get_json("/v1/rules");
    let ids: Vec<&str> = list["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["brute-force-login", "watch"]);
    server.send_events(&json!({"key": "k", "type": "a"}));
    server.wait_alerts("rule=watch", 1);
}

#[test]
fn a_changed_rule_file_replaces_the_rule_at_the_next_start() {
    let rules = tempfile::tempdir().unwrap();
    write_file(
        &rules.path().join("watch.yaml"),
        &every_event_rule("watch", "a", "low"),
    );
    let mut server = Server::start_with(FAST_TIMING, Some(rules.path()));
    assert_eq!(server.get_json("/v1/rules/watch")["version"], 1);
    // The same file again: nothing changes.
    server.stop();
    server.restart();
    assert_eq!(server.get_json("/v1/rules/watch")["version"], 1);
    // A changed file: the next version.
    write_file(
        &rules.path().join("watch.yaml"),
        &every_event_rule("watch", "b", "high"),
    );
    server.stop();
    server.restart();
    let rule = server.get_json("/v1/rules/watch");
    assert_eq!(rule["version"], 2);
    assert_eq!(rule["rule"]["severity"], "high");
}

#[test]
fn an_invalid_rule_file_stops_the_start_with_the_problems() {
    let rules = tempfile::tempdir().unwrap();
    write_file(
        &rules.path().join("bad.yaml"),
        "id: bad\nseverity: extreme\nabsence:\n  expect: \"true\"\n  within: 1s\n",
    );
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cepheus"))
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(data.path())
        .arg("--rules")
        .arg(rules.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("severity"),
        "{stderr}"
    );
}

#[test]
fn a_sequence_without_within_is_stored_with_a_warning() {
    let server = Server::start(FAST_TIMING);
    let open =
        "id: open\nsequence:\n  steps:\n    - match: type == \"a\"\n    - match: type == \"b\"\n";
    let created = expect_json(server.post_rule_yaml(open), StatusCode::CREATED, "create");
    let got = server.get_json("/v1/rules/open");
    assert_eq!(got["warnings"][0]["path"], "sequence");
    let message = got["warnings"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("max_match_age"), "{message}");
    assert_eq!(created["warnings"], got["warnings"]);
    let bounded = server.get_json("/v1/rules");
    assert_eq!(bounded["rules"][0]["warnings"], got["warnings"]);
}
