//! `cepheus replay`: offline, on event time, deterministic.

use std::path::Path;
use std::process::Command;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn replay(rules: &Path, events: &Path) -> (String, String, Option<i32>) {
    let out = Command::new(env!("CARGO_BIN_EXE_cepheus"))
        .arg("replay")
        .arg("--rules")
        .arg(rules)
        .arg(events)
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.code(),
    )
}

#[test]
fn replay_prints_the_alerts_of_a_file_the_same_way_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    write(
        &rules,
        "offline.yaml",
        "id: offline\nabsence:\n  expect: type == \"heartbeat\"\n  within: 30s\n",
    );
    write(
        &rules,
        "velocity.yaml",
        "id: velocity\nthreshold:\n  match: type == \"charge\"\n  window: {tumbling: 1m}\n  above: 2\n",
    );
    // 200 devices, each with heartbeats and charges; every 7th device goes silent.
    let mut events = String::new();
    for minute in 0..5 {
        for device in 0..200 {
            if device % 7 == 0 && minute >= 2 {
                continue;
            }
            for second in [0, 20, 40] {
                events.push_str(&format!(
                    "{{\"key\":\"d-{device}\",\"type\":\"heartbeat\",\"time\":\"2026-01-01T00:0{minute}:{second:02}Z\"}}\n"
                ));
                if device % 5 == 0 {
                    events.push_str(&format!(
                        "{{\"key\":\"d-{device}\",\"type\":\"charge\",\"time\":\"2026-01-01T00:0{minute}:{second:02}Z\",\"data\":{{\"amount\":3}}}}\n"
                    ));
                }
            }
        }
    }
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, &events).unwrap();

    let (first, summary, code) = replay(&rules, &file);
    assert_eq!(code, Some(0), "{summary}");
    let (second, _, _) = replay(&rules, &file);
    assert_eq!(
        first, second,
        "the same input must give byte-identical output"
    );

    let alerts: Vec<serde_json::Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let offline = alerts.iter().filter(|a| a["rule"] == "offline").count();
    // Devices 0, 7, ..., 196 (29 of them) fall silent after minute 1: one alert each.
    assert_eq!(offline, 29);
    let velocity = alerts.iter().filter(|a| a["rule"] == "velocity").count();
    // Devices 0, 5, ..., 195 (40) charge 3 times a minute; the ones also silent
    // (multiples of 35: 0, 35, ..., 175 → 6) stop after minute 1. The last
    // minute's window ends after the input, so it is not closed.
    assert_eq!(velocity, 34 * 4 + 6 * 2);
    assert!(summary.contains("alerts"), "{summary}");
}

#[test]
fn lines_without_time_or_json_are_rejected_with_their_line_number() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "r.yaml",
        "id: r\nsequence:\n  steps:\n    - match: type == \"x\"\n",
    );
    let file = dir.path().join("e.ndjson");
    std::fs::write(
        &file,
        "{\"key\":\"k\",\"type\":\"x\",\"time\":\"2026-01-01T00:00:00Z\"}\n{\"key\":\"k\",\"type\":\"x\"}\nnope\n",
    )
    .unwrap();
    let (out, err, code) = replay(&dir.path().join("r.yaml"), &file);
    assert_eq!(out.lines().count(), 1);
    assert_eq!(code, Some(3));
    assert!(
        err.contains("line 2: offline replay needs a `time`"),
        "{err}"
    );
    assert!(err.contains("line 3: not valid JSON"), "{err}");
}
