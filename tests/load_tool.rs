//! `cepheus load` against a real server: it registers the benchmark rules,
//! sends every event (batched and one per request), and times the alerts
//! of the events that complete a pattern over the WebSocket.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn load(server: &Server, extra: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_cepheus"))
        .args(["load", "--url", &server.url(""), "--setup", "--json"])
        .args(extra)
        .output()
        .expect("cepheus load runs");
    assert!(
        output.status.success(),
        "cepheus load failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the report is JSON")
}

#[test]
fn batched_load_is_all_acknowledged_and_every_probe_alert_is_timed() {
    let server = Server::start(FAST_TIMING);
    let report = load(
        &server,
        &[
            "--keys",
            "200",
            "--events",
            "4000",
            "--batch",
            "100",
            "--connections",
            "2",
            "--complete",
            "0.2",
            "--latency",
        ],
    );
    assert_eq!(report["events"], 4000, "{report}");
    assert_eq!(report["requests"], 40, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["request_ms"]["count"], 40, "{report}");
    assert!(report["alerts_measured"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["alerts_missing"], 0, "{report}");
    assert!(
        report["alert_ms"]["p50"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    // The report says where the server's time went, stage by stage.
    let stages: Vec<&str> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    for stage in [
        "decode",
        "sequencer_wait",
        "sequence",
        "write",
        "fsync",
        "commit_wait",
        "mailbox_wait",
        "evaluate",
        "alert_durable",
        "publish",
    ] {
        assert!(stages.contains(&stage), "{stage} missing from {stages:?}");
    }
    // The server saw what the tool says it sent.
    assert_eq!(server.metric("cepheus_events_accepted_total"), Some(4000.0));
    assert!(
        server
            .metric("cepheus_alerts_total{rule=\"bench-sequence\"}")
            .unwrap_or(0.0)
            > 0.0
    );
}

#[test]
fn one_event_per_request_and_the_parse_floor() {
    let server = Server::start(FAST_TIMING);
    let report = load(
        &server,
        &[
            "--keys",
            "50",
            "--events",
            "300",
            "--batch",
            "1",
            "--connections",
            "8",
            "--threads",
            "2",
            "--floor",
        ],
    );
    assert_eq!(report["events"], 300, "{report}");
    assert_eq!(report["requests"], 300, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(
        report["floor_events_per_second"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert_eq!(server.metric("cepheus_events_accepted_total"), Some(300.0));
}

#[test]
fn a_second_run_against_the_same_server_sends_new_probe_ids() {
    let server = Server::start(FAST_TIMING);
    let args = [
        "--keys",
        "100",
        "--events",
        "800",
        "--batch",
        "100",
        "--complete",
        "0.2",
    ];
    for _ in 0..2 {
        let report = load(&server, &args);
        assert_eq!(report["errors"], 0, "{report}");
    }
    assert_eq!(server.metric("cepheus_events_accepted_total"), Some(1600.0));
    assert_eq!(
        server
            .metric("cepheus_events_duplicate_total")
            .unwrap_or(0.0),
        0.0,
        "the second run's probe ids were taken for the first run's"
    );
}
