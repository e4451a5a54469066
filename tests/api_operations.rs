//! Operating rules safely: versions, the keep/reset state policy, shadow
//! mode and its promotion, backtests over the stored log, and per-rule
//! lateness — against the real binary.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const VELOCITY: &str = "id: velocity\nthreshold:\n  match: type == \"charge\"\n  window: {sliding: 1h}\n  above: 2\nalert:\n  message: \"{{key}}: {{count}} charges\"\n";
const VELOCITY_MESSAGE: &str = "id: velocity\nthreshold:\n  match: type == \"charge\"\n  window: {sliding: 1h}\n  above: 2\nalert:\n  message: \"{{key}} made {{count}} charges in an hour\"\n";
const VELOCITY_WINDOW: &str =
    "id: velocity\nthreshold:\n  match: type == \"charge\"\n  window: {sliding: 2h}\n  above: 2\n";

fn charges(server: &Server, key: &str, base: &str, seconds: &[i64]) {
    let events: Vec<Value> = seconds
        .iter()
        .map(|s| json!({"key": key, "type": "charge", "time": at(base, s * 1000)}))
        .collect();
    server.send_events(&Value::Array(events));
}

fn replace(server: &Server, id: &str, yaml: &str, policy: &str) -> reqwest::blocking::Response {
    server.put(
        &format!("/v1/rules/{id}?state={policy}"),
        "application/yaml",
        yaml.to_owned(),
    )
}

#[test]
fn every_version_stays_readable_and_alerts_name_theirs() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(VELOCITY);
    let replaced = expect_json(
        replace(&server, "velocity", VELOCITY_MESSAGE, "reset"),
        StatusCode::OK,
        "replace",
    );
    assert_eq!(replaced["version"], 2);
    let versions = server.get_json("/v1/rules/velocity/versions");
    let numbers: Vec<&Value> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["version"])
        .collect();
    assert_eq!(numbers, [&json!(1), &json!(2)]);
    let first = server.get_json("/v1/rules/velocity/versions/1");
    assert_eq!(
        first["rule"]["alert"]["message"],
        "{{key}}: {{count}} charges"
    );
    expect_error(
        server.get("/v1/rules/velocity/versions/9"),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    expect_error(
        server.get("/v1/rules/nope/versions"),
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let base = history_base();
    charges(&server, "acct-1", &base, &[0, 10, 20]);
    let alerts = server.wait_alerts("rule=velocity", 1);
    assert_eq!(alerts[0]["rule_version"], 2);
    assert_eq!(alerts[0]["message"], "acct-1 made 3 charges in an hour");
}

#[test]
fn keep_continues_the_previous_versions_state_and_reset_drops_it() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(VELOCITY);
    let base = history_base();
    // Two charges each: one more makes three, above 2.
    charges(&server, "kept", &base, &[0, 10]);
    charges(&server, "reset", &base, &[0, 10]);
    wait_until("both entities to hold a window", || {
        let kept = server.entity("kept");
        let reset = server.entity("reset");
        (kept["rules"].as_array()?.len() == 1 && reset["rules"].as_array()?.len() == 1)
            .then_some(())
    });

    // A new message is the same shape: the state is kept.
    let kept = expect_json(
        replace(&server, "velocity", VELOCITY_MESSAGE, "keep"),
        StatusCode::OK,
        "keep",
    );
    assert_eq!(kept["version"], 2);
    charges(&server, "kept", &base, &[20]);
    let alerts = server.wait_alerts("rule=velocity&key=kept", 1);
    assert_eq!(alerts[0]["rule_version"], 2);
    assert_eq!(
        alerts[0]["values"]["count"], 3,
        "the two charges before the replacement still count"
    );

    // Reset: the next version starts empty, so one more charge is not enough.
    expect_json(
        replace(&server, "velocity", VELOCITY, "reset"),
        StatusCode::OK,
        "reset",
    );
    charges(&server, "reset", &base, &[20]);
    wait_until("the charge to be evaluated", || {
        let entity = server.entity("reset");
        (entity["events_seen"] == 3).then_some(())
    });
    assert!(server.alerts("rule=velocity&key=reset").is_empty());

    // A different window cannot keep the state: refused, nothing changed.
    let refused = expect_error(
        replace(&server, "velocity", VELOCITY_WINDOW, "keep"),
        StatusCode::BAD_REQUEST,
        "cannot_keep_state",
    );
    assert!(
        refused["message"].as_str().unwrap().contains("window"),
        "{refused}"
    );
    assert_eq!(server.get_json("/v1/rules/velocity")["version"], 3);
    expect_error(
        replace(&server, "velocity", VELOCITY, "sometimes"),
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
}

#[test]
fn a_shadow_rule_is_promoted_with_one_field_and_keeps_its_state() {
    let server = Server::start(FAST_TIMING);
    let shadow = VELOCITY.replace("id: velocity\n", "id: velocity\nmode: shadow\n");
    server.create_rule(&shadow);
    let base = history_base();
    charges(&server, "acct-1", &base, &[0, 10, 20]);
    let shadowed = server.wait_alerts("rule=velocity&shadow=true", 1);
    assert_eq!(shadowed[0]["shadow"], true);
    assert!(
        server.alerts("rule=velocity").is_empty(),
        "shadow alerts are not listed unless asked for"
    );

    // Promote: mode live, state kept; the window already holds 3 charges, so
    // the condition holds and stays held: no new edge until it drops.
    expect_json(
        replace(&server, "velocity", VELOCITY, "keep"),
        StatusCode::OK,
        "promote",
    );
    charges(&server, "acct-2", &base, &[0, 10, 20]);
    let live = server.wait_alerts("rule=velocity", 1);
    assert_eq!(live[0]["key"], "acct-2");
    assert!(live[0].get("shadow").is_none_or(|s| s == false));
}

#[test]
fn a_backtest_replays_the_stored_log_and_compares_two_versions() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(VELOCITY);
    let base = history_base();
    charges(&server, "a", &base, &[0, 10, 20, 30]);
    charges(&server, "b", &base, &[0, 10]);
    charges(&server, "c", &base, &[0, 10, 20, 30, 40]);
    // The live rule fired for a and c.
    server.wait_alerts("rule=velocity", 2);

    let stricter = "id: velocity\nthreshold:\n  match: type == \"charge\"\n  window: {sliding: 1h}\n  above: 3\n";
    let request = json!({
        "rule": {"id": "velocity"},
        "compare": {"yaml": stricter},
        "from": at(&base, 0),
        "to": at(&base, 3_600_000),
    });
    let response = server
        .http()
        .post(server.url("/v1/rules/backtest?wait=true"))
        .json(&request)
        .send()
        .unwrap();
    let job = expect_json(response, StatusCode::OK, "backtest");
    assert_eq!(job["status"], "done", "{job}");
    let result = &job["result"];
    assert_eq!(result["events"], 11);
    assert_eq!(result["runs"][0]["alerts_total"], 2, "{result}");
    assert_eq!(result["runs"][1]["alerts_total"], 2, "{result}");
    let diff = &result["difference"];
    // Above 2 fires at the third charge, above 3 at the fourth: same keys,
    // different times, so each version's alerts are its own.
    assert_eq!(diff["in_both"], 0, "{diff}");
    assert_eq!(diff["only_in_a"].as_array().unwrap().len(), 2);
    assert_eq!(diff["only_in_b"].as_array().unwrap().len(), 2);

    // The job stays readable.
    let id = job["id"].as_str().unwrap();
    let again = server.get_json(&format!("/v1/rules/backtest/{id}"));
    assert_eq!(again["status"], "done");
    assert_eq!(again["records_read"], again["records_total"]);
    expect_error(
        server.get("/v1/rules/backtest/bt-999"),
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // A range with no events gives no alerts; a bad range or rule is a 400.
    let empty = json!({"rule": {"id": "velocity"}, "from": at(&base, 7_200_000), "to": at(&base, 9_000_000)});
    let job = expect_json(
        server
            .http()
            .post(server.url("/v1/rules/backtest?wait=true"))
            .json(&empty)
            .send()
            .unwrap(),
        StatusCode::OK,
        "empty backtest",
    );
    assert_eq!(job["result"]["runs"][0]["alerts_total"], 0);
    let backwards = json!({"rule": {"id": "velocity"}, "from": at(&base, 10), "to": at(&base, 0)});
    expect_error(
        server
            .http()
            .post(server.url("/v1/rules/backtest"))
            .json(&backwards)
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    let invalid = json!({"rule": {"yaml": "id: x\nthreshold: {}\n"}, "from": at(&base, 0), "to": at(&base, 10)});
    expect_error(
        server
            .http()
            .post(server.url("/v1/rules/backtest"))
            .json(&invalid)
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_rule",
    );
}

#[test]
fn per_rule_lateness_evaluates_or_dead_letters_late_events_and_counts_them() {
    let server = Server::start(FAST_TIMING);
    server.create_rule(&every_event_rule("strict", "ping", "info"));
    server.create_rule(
        "id: patient\nlateness: {allowed: 10s}\nsequence:\n  steps:\n    - match: type == \"ping\"\n",
    );
    server.create_rule(
        "id: everything\nlateness: {late: evaluate}\nsequence:\n  steps:\n    - match: type == \"ping\"\n",
    );
    let base = history_base();
    server.send_events(&json!({"key": "dev", "type": "ping", "time": at(&base, 100_000)}));
    server.wait_alerts("rule=everything", 1);
    // 5 s behind the clock: late for `strict` (0 s), on time for `patient`
    // (10 s), late but evaluated for `everything`.
    server.send_events(&json!({"key": "dev", "type": "ping", "time": at(&base, 95_000)}));
    server.wait_alerts("rule=patient", 2);
    server.wait_alerts("rule=everything", 2);
    assert_eq!(server.alerts("rule=strict").len(), 1);
    let letter = wait_until("the late dead letter", || {
        server
            .deadletters()
            .into_iter()
            .find(|d| d["reason"] == "late")
    });
    assert!(
        letter["error"].as_str().unwrap().contains("strict"),
        "{letter}"
    );
    assert!(
        !letter["error"].as_str().unwrap().contains("patient"),
        "{letter}"
    );
    let metrics = server.metrics();
    assert!(
        metrics
            .contains("cepheus_rule_late_events_total{rule=\"strict\",policy=\"dead_letter\"} 1")
            || metrics.contains(
                "cepheus_rule_late_events_total{policy=\"dead_letter\",rule=\"strict\"} 1"
            ),
        "{metrics}"
    );
    assert!(metrics.contains("rule=\"everything\""), "{metrics}");

    // Invalid lateness is refused with its path.
    let bad = server.post_rule_yaml(
        "id: bad\nlateness: {allowed: soon, late: maybe}\nsequence:\n  steps:\n    - match: type == \"x\"\n",
    );
    let body = expect_error(bad, StatusCode::BAD_REQUEST, "invalid_rule");
    let paths: Vec<&str> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"lateness.allowed"), "{body}");
    assert!(paths.contains(&"lateness.late"), "{body}");
}
