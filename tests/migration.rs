//! A data directory written by the previous layout (store format 1: the
//! event log, event ids and late-letter ids in sled) is converted at the
//! first start, nothing lost and nothing counted twice (issue 11, item 9).
//!
//! `tests/fixtures/v1-data-dir.tar.gz` was written by cepheus at commit
//! 504a2fa: the rule `patterns/brute-force-login.yaml`, then events with ids
//! e1–e8 for acct-1 (a completed pattern: alert seq 1), acct-2 (a late
//! event e7: dead letter 2) and acct-3, one invalid event (dead letter 1),
//! entities passivated in between, and a `kill -9` with no checkpoint, so
//! the whole log had to be replayed.

mod common;

use std::process::Command;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn unpack_fixture(dir: &std::path::Path) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/v1-data-dir.tar.gz"
    );
    let status = Command::new("tar")
        .arg("xzf")
        .arg(fixture)
        .arg("-C")
        .arg(&data)
        .status()
        .expect("tar runs");
    assert!(status.success());
}

fn check_state(server: &Server) {
    let rules = server.get_json("/v1/rules");
    assert!(rules.to_string().contains("brute-force-login"), "{rules}");
    let alerts = server.all_alerts("");
    assert_eq!(
        alerts.len(),
        1,
        "no alert lost or published twice: {alerts:?}"
    );
    assert_eq!(alerts[0]["seq"], 1);
    assert_eq!(alerts[0]["key"], "acct-1");
    let id = alerts[0]["id"].as_str().unwrap();
    assert_eq!(server.get_json(&format!("/v1/alerts/{id}"))["seq"], 1);
    let letters = server.deadletters();
    let reasons: Vec<&str> = letters
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["invalid", "late"], "{letters:?}");
    for (key, seen) in [("acct-1", 4), ("acct-2", 2), ("acct-3", 1)] {
        wait_until(&format!("{key} to have evaluated {seen} events"), || {
            (server.entity(key)["events_seen"] == seen).then_some(())
        });
    }
}

#[test]
fn a_format_1_data_directory_is_migrated_at_the_first_start() {
    let mut server = Server::start_prepared(FAST_TIMING, None, unpack_fixture);
    assert!(
        server.log().contains("migrated the data directory"),
        "{}",
        server.log()
    );
    let journal = server.dir().join("data").join("journal");
    assert!(journal.is_dir(), "the journal was made");
    check_state(&server);
    // The ids the old store remembered still deduplicate.
    let retried: Vec<Value> = (1..=8)
        .map(|i| json!({"id": format!("e{i}"), "key": "acct-x", "type": "t"}))
        .collect();
    let answer = server.send_events(&Value::Array(retried.clone()));
    assert_eq!(answer["accepted"], 8, "ids are per key: {answer}");
    let answer = server.send_events(&json!([
        {"id": "e1", "key": "acct-1", "type": "login_failed"},
        {"id": "e7", "key": "acct-2", "type": "login_failed"},
        {"id": "e8", "key": "acct-3", "type": "login_failed"},
    ]));
    assert_eq!(answer["duplicates"], 3, "{answer}");
    // A second start finds the new layout: nothing changes.
    server.kill9();
    server.restart();
    assert_eq!(
        server.log().matches("migrating the data directory").count(),
        1
    );
    check_state(&server);
    let answer = server.send_events(&Value::Array(retried));
    assert_eq!(answer["duplicates"], 8, "{answer}");
    assert_eq!(
        server.get("/readyz").status(),
        StatusCode::OK,
        "{}",
        server.log()
    );
}
