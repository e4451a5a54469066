//! Restarts with the same data directory (DESIGN §7): after SIGTERM and
//! after `kill -9`, rules, entity state, timers, alerts and the alert
//! cursor survive; a pattern begun before completes after, exactly once.

mod common;

use std::collections::HashSet;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug)]
enum Stop {
    /// SIGTERM: graceful shutdown with a final checkpoint.
    Term,
    /// SIGKILL right after the acknowledgements.
    Kill,
}

fn config(checkpoint_interval: &str) -> String {
    format!(
        r#"
[timing]
timer_tick = "20ms"
checkpoint_interval = "{checkpoint_interval}"
shutdown_grace = "2s"
"#
    )
}

fn assert_log_is_gap_free_and_unique(alerts: &[Value]) {
    let mut ids = HashSet::new();
    let twice: Vec<&Value> = alerts
        .iter()
        .filter(|a| !ids.insert(a["id"].as_str().unwrap()))
        .collect();
    assert!(twice.is_empty(), "alerts published twice: {twice:?}");
    let seqs: Vec<u64> = alerts.iter().map(|a| a["seq"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1..=alerts.len() as u64).collect();
    assert_eq!(seqs, expected, "seqs are not 1..=n");
}

/// Builds state, stops the server as told, restarts it, and checks what
/// survived.
fn survives(stop: Stop, checkpoint_interval: &str) {
    let mut server = Server::start(&config(checkpoint_interval));
    server.create_rule(BRUTE_FORCE);
    server.create_rule(&every_event_rule("watch", "poke", "low"));
    expect_json(
        server.put(
            "/v1/rules/watch",
            "application/yaml",
            every_event_rule("watch", "poke", "critical"),
        ),
        StatusCode::OK,
        "replace",
    );
    server.post("/v1/rules/brute-force-login/disable", "", "");
    server.post("/v1/rules/brute-force-login/enable", "", "");
    expect_json(
        server.put(
            "/v1/entities/acct-1",
            "application/json",
            json!({"attributes": {"tier": "gold"}}).to_string(),
        ),
        StatusCode::OK,
        "PUT entity",
    );
    // Two alerts before the stop.
    server.send_events(&json!([
        {"id": "w-1", "key": "dev-1", "type": "poke"},
        {"id": "w-2", "key": "dev-2", "type": "poke"},
    ]));
    let before = server.wait_alerts("", 2);
    // A pattern begun: three failures, no success yet.
    server.send_events(&json!([
        {"id": "f-1", "key": "acct-1", "type": "login_failed"},
        {"id": "f-2", "key": "acct-1", "type": "login_failed"},
        {"id": "f-3", "key": "acct-1", "type": "login_failed"},
    ]));
    wait_until("acct-1 to hold a partial match", || {
        (server.entity("acct-1")["events_seen"] == 3).then_some(())
    });
    let rules_before = server.get_json("/v1/rules");

    match stop {
        Stop::Term => server.stop(),
        Stop::Kill => server.kill9(),
    }
    server.restart();

    // Rules, with their versions and switches.
    assert_eq!(server.get_json("/v1/rules"), rules_before);
    assert_eq!(server.get_json("/v1/rules/watch")["version"], 2);
    // Alerts and their cursor.
    assert_eq!(
        server.alerts(""),
        before,
        "the alert log changed across the restart"
    );
    assert_eq!(server.alert_page("")["next"], 2);
    assert_eq!(
        server.get_json(&format!("/v1/alerts/{}", before[0]["id"].as_str().unwrap())),
        before[0]
    );
    // Entity state: the attributes and the partial match.
    let entity = wait_until("acct-1 to be restored", || {
        let entity = server.entity("acct-1");
        (entity["events_seen"] == 3).then_some(entity)
    });
    assert_eq!(entity["attributes"], json!({"tier": "gold"}));
    let partial = &entity["rules"][0]["state"]["partial_matches"][0];
    assert_eq!(partial["counts"][0], 3, "{entity}");

    // A subscriber resuming from the cursor it had.
    let mut socket = server.ws("after=2");
    // The pattern completes after the restart and fires once.
    server.send_events(
        &json!({"id": "s-1", "key": "acct-1", "type": "login_success", "data": {"ip": "10.1.1.1"}}),
    );
    let alert = socket.next_alert();
    assert_eq!(alert["seq"], 3, "the cursor did not continue: {alert}");
    assert_eq!(alert["rule"], "brute-force-login");
    assert_eq!(alert["values"]["failures.count"], 3);
    let ids: Vec<&str> = alert["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["f-1", "f-2", "f-3", "s-1"]);
    // Retries of events acknowledged before the restart are duplicates.
    let summary = server.send_events(&json!([
        {"id": "w-1", "key": "dev-1", "type": "poke"},
        {"id": "f-3", "key": "acct-1", "type": "login_failed"},
    ]));
    assert_eq!(summary["duplicates"], 2, "{summary}");
    // A fresh alert on each key that fired before, so every replayed
    // event has been evaluated before we look at the whole log.
    server.send_events(&json!([
        {"key": "dev-1", "type": "poke"},
        {"key": "dev-2", "type": "poke"},
    ]));
    let alerts = server.wait_alerts("", 5);
    assert_eq!(alerts.len(), 5, "{alerts:?}");
    assert_log_is_gap_free_and_unique(&alerts);
    assert_eq!(&alerts[..2], &before[..]);
    assert_eq!(server.alerts("rule=brute-force-login").len(), 1);
}

#[test]
fn sigterm_keeps_rules_state_alerts_and_the_cursor() {
    survives(Stop::Term, "200ms");
}

#[test]
fn kill9_after_checkpoints_keeps_rules_state_alerts_and_the_cursor() {
    survives(Stop::Kill, "50ms");
}

#[test]
fn kill9_before_any_checkpoint_recovers_from_the_event_log() {
    // No checkpoint runs: everything comes back by replaying the log, and
    // the replayed matches must not publish their alerts a second time.
    survives(Stop::Kill, "1h");
}

#[test]
fn a_pending_timer_fires_once_after_a_kill9() {
    let mut server = Server::start(&config("100ms"));
    server.create_rule(
        "id: no-ack\nabsence:\n  after: type == \"alarm\"\n  expect: type == \"ack\"\n  within: 2s\n",
    );
    server.send_events(&json!([
        {"key": "dev-1", "type": "alarm"},
        {"key": "dev-2", "type": "alarm", "time": now_plus(-60_000)},
    ]));
    // dev-2's deadline passed long ago in its own clock's terms, but its
    // clock only runs from its last event: it fires after 2 s too.
    wait_until("the timers to be pending", || {
        let a = server.entity("dev-1");
        let b = server.entity("dev-2");
        (a["next_deadline"].is_string() && b["next_deadline"].is_string()).then_some(())
    });
    server.kill9();
    server.restart();
    let alerts = server.wait_alerts("rule=no-ack", 2);
    let mut keys: Vec<&str> = alerts.iter().map(|a| a["key"].as_str().unwrap()).collect();
    keys.sort();
    assert_eq!(keys, ["dev-1", "dev-2"]);
    // Fired once each: nothing is pending any more, and a restart does not
    // publish them again.
    wait_until("the deadlines to be gone", || {
        (server.entity("dev-1")["next_deadline"].is_null()
            && server.entity("dev-2")["next_deadline"].is_null())
        .then_some(())
    });
    server.stop();
    server.restart();
    server.send_events(&json!({"key": "dev-1", "type": "alarm", "time": now_plus(0)}));
    wait_until("dev-1's new deadline", || {
        server.entity("dev-1")["next_deadline"]
            .is_string()
            .then_some(())
    });
    let alerts = server.alerts("");
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_log_is_gap_free_and_unique(&alerts);
}

#[test]
fn acknowledged_events_survive_kill9_immediately_after_the_answer() {
    let mut server = Server::start(&config("1h"));
    server.create_rule(
        "id: count-5\nthreshold:\n  window: {sliding: 1h}\n  at_least: 5\nalert:\n  message: \"{{key}}: {{count}} events\"\n",
    );
    for i in 0..4 {
        server.send_events(&json!({"id": format!("e-{i}"), "key": "k", "type": "t"}));
    }
    server.kill9();
    server.restart();
    wait_until("the 4 events to be replayed", || {
        (server.entity("k")["events_seen"] == 4).then_some(())
    });
    server.send_events(&json!({"id": "e-4", "key": "k", "type": "t"}));
    let alerts = server.wait_alerts("", 1);
    assert_eq!(alerts[0]["message"], "k: 5 events");
}

#[test]
fn repeated_kill9_during_ingest_loses_nothing_and_publishes_nothing_twice() {
    // Checkpoints run all the time, so the kills land before, during and
    // after them.
    let mut server = Server::start(&config("30ms"));
    server.create_rule(
        "id: pairs\nsequence:\n  steps:\n    - name: p\n      match: type == \"ping\"\n      times: 2\n",
    );
    let keys = ["k0", "k1", "k2", "k3"];
    const ROUNDS: usize = 10;
    const PER_KEY: usize = 50;
    for round in 0..ROUNDS {
        let batch: Vec<Value> = (0..PER_KEY)
            .flat_map(|i| {
                keys.map(|k| json!({"id": format!("{k}-{round}-{i}"), "key": k, "type": "ping"}))
            })
            .collect();
        assert_eq!(
            server.send_events(&Value::Array(batch))["accepted"],
            4 * PER_KEY
        );
        // Killed right after the acknowledgement, while the entities are
        // still recording the batch's 100 alerts.
        server.kill9();
        server.restart();
    }
    // Two more pings per key: 502 pings, 251 pairs per key. The last pair's
    // alert is recorded after every replayed event of its key.
    let batch: Vec<Value> = (0..2)
        .flat_map(|i| {
            keys.map(|k| json!({"id": format!("{k}-last-{i}"), "key": k, "type": "ping"}))
        })
        .collect();
    server.send_events(&Value::Array(batch));
    for key in keys {
        wait_until(&format!("{key}'s last pair"), || {
            let alerts = server.all_alerts(&format!("key={key}"));
            let last = alerts.last()?;
            (last["events"][1]["id"] == format!("{key}-last-1")).then_some(())
        });
    }
    let alerts = server.all_alerts("");
    assert_log_is_gap_free_and_unique(&alerts);
    assert_eq!(alerts.len(), 4 * 251);
    for key in keys {
        assert_eq!(
            alerts.iter().filter(|a| a["key"] == key).count(),
            251,
            "{key}"
        );
    }
}

#[test]
fn a_clock_advance_survives_kill9() {
    // No periodic checkpoint: without one of its own, the advance would
    // live only in memory and the log replay would set the clock back.
    let mut server = Server::start(&config("1h"));
    server.create_rule(&every_event_rule("r", "a", "low"));
    let base = history_base();
    server.send_events(&json!({"key": "k", "type": "a", "time": at(&base, 0)}));
    server.wait_alerts("", 1);
    server.advance_clock(&at(&base, 3_600_000));
    server.kill9();
    server.restart();
    assert_eq!(server.entity("k")["clock"], at(&base, 3_600_000));
    // An event older than the acknowledged mark is late, as without the crash.
    server.send_events(&json!({"key": "k", "type": "a", "time": at(&base, 60_000)}));
    let letter = wait_until("a late dead letter", || {
        server
            .deadletters()
            .into_iter()
            .find(|d| d["reason"] == "late")
    });
    assert_eq!(letter["key"], "k");
    assert_eq!(server.alerts("").len(), 1);
    assert_eq!(server.entity("k")["events_seen"], 1);
}

#[test]
fn client_retries_across_kill9_mid_request_never_double_count() {
    let mut server = Server::start(&config("30ms"));
    let port = server.port();
    let keys = ["k0", "k1", "k2", "k3"];
    const BATCHES: usize = 40;
    const PER_KEY: usize = 25;
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        // A client that retries each batch until it is acknowledged.
        scope.spawn(|| {
            let client = reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .unwrap();
            for b in 0..BATCHES {
                let batch: Vec<Value> = (0..PER_KEY)
                    .flat_map(|i| {
                        keys.map(|k| json!({"id": format!("{k}-{b}-{i}"), "key": k, "type": "t"}))
                    })
                    .collect();
                let body = Value::Array(batch).to_string();
                loop {
                    let sent = client
                        .post(format!("http://127.0.0.1:{port}/v1/events"))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send();
                    if sent.is_ok_and(|r| r.status() == StatusCode::ACCEPTED) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                done.store(b + 1, std::sync::atomic::Ordering::Release);
            }
        });
        // Kill it now and then while requests are in flight.
        let mut last = 0;
        while done.load(std::sync::atomic::Ordering::Acquire) < BATCHES {
            let now = done.load(std::sync::atomic::Ordering::Acquire);
            if now >= last + 4 {
                last = now;
                server.kill9();
                server.restart();
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    });
    // Every acknowledged event evaluated once: no loss, no double count.
    for key in keys {
        wait_until(&format!("{key} to have evaluated every event once"), || {
            let seen = server.entity(key)["events_seen"].as_u64().unwrap();
            assert!(
                seen <= (BATCHES * PER_KEY) as u64,
                "{key} evaluated {seen} events"
            );
            (seen == (BATCHES * PER_KEY) as u64).then_some(())
        });
    }
}

#[test]
fn a_late_event_is_dead_lettered_once_across_kill9() {
    let mut server = Server::start(&config("1h"));
    let base = history_base();
    server.send_events(&json!({"key": "k", "type": "a", "time": at(&base, 10_000)}));
    server.send_events(&json!({"key": "k", "type": "a", "time": at(&base, 0)}));
    wait_until("the late dead letter", || {
        (server.deadletters().len() == 1).then_some(())
    });
    // No checkpoint ran: the restart replays both events, late one included.
    server.kill9();
    server.restart();
    // An event after the restart is evaluated after the replayed ones.
    server.send_events(&json!({"key": "k", "type": "a", "time": at(&base, 20_000)}));
    wait_until("k to evaluate the new event", || {
        (server.entity("k")["events_seen"] == 2).then_some(())
    });
    let letters = server.deadletters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["reason"], "late");
}

/// Event ids are written to the id log behind the journal, after the frame
/// holding their events is durable, so a crash can take ids the journal
/// kept. The start reads them back from the journal frames the id log does
/// not cover: the client's retry of the request whose answer the crash took
/// is a duplicate, not a second evaluation.
#[test]
fn ids_the_id_log_lost_still_deduplicate_the_retry_after_a_crash() {
    let mut server = Server::start(&config("1h"));
    server.create_rule(&every_event_rule("watch", "poke", "low"));
    let event = json!([{"id": "retried-1", "key": "k1", "type": "poke"}]);
    let first = expect_json(server.post_events(&event), StatusCode::ACCEPTED, "first");
    assert_eq!(first["accepted"], 1, "{first}");
    server.kill9();
    // What a crash before the id log was written leaves behind: no id log.
    let ids = server.dir().join("data").join("journal").join("ids");
    std::fs::remove_dir_all(&ids).expect("the id log is where the journal keeps it");
    server.restart();
    let retry = expect_json(server.post_events(&event), StatusCode::ACCEPTED, "retry");
    assert_eq!(retry["accepted"], 0, "{retry}");
    assert_eq!(retry["duplicates"], 1, "{retry}");
    let alerts = server.alerts("rule=watch");
    assert_eq!(alerts.len(), 1, "evaluated once: {alerts:?}");
}

fn sled_compression(server: &Server) -> String {
    let conf =
        std::fs::read(server.dir().join("data").join("conf")).expect("sled's conf file is there");
    String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|line| line.strip_prefix("use_compression:"))
        .expect("sled's conf names its compression")
        .trim()
        .to_owned()
}

#[test]
fn a_data_directory_keeps_the_compression_it_was_created_with() {
    let mut server = Server::start(&format!(
        "{}\n[storage]\ncompression = true\n",
        config("1h")
    ));
    assert_eq!(sled_compression(&server), "true");
    server.create_rule(&every_event_rule("watch", "poke", "low"));
    let accepted = expect_json(
        server.post_events(&json!([{"key": "k1", "type": "poke"}])),
        StatusCode::ACCEPTED,
        "post",
    );
    assert_eq!(accepted["accepted"], 1, "{accepted}");
    server.stop();

    // The default (uncompressed) setting meets a directory made with
    // compression: sled would refuse to open it with the other setting.
    std::fs::write(server.dir().join("cepheus.toml"), config("1h")).unwrap();
    server.restart();
    assert_eq!(sled_compression(&server), "true");
    assert!(
        server.log().contains("storage.compression differs"),
        "the server says it kept the directory's setting; log:\n{}",
        server.log()
    );
    server.get_json("/v1/rules/watch");
    let alerts = server.all_alerts("");
    assert_eq!(
        alerts.len(),
        1,
        "the alert from before the restart: {alerts:?}"
    );

    let fresh = Server::start(&config("1h"));
    assert_eq!(
        sled_compression(&fresh),
        "false",
        "new directories are not compressed by default"
    );
}

#[test]
fn events_posted_while_the_log_is_replayed_follow_the_replayed_ones() {
    // No checkpoint: everything is replayed at the restart, and the replay
    // runs while the server already serves.
    let mut server = Server::start(&config("1h"));
    server.create_rule(BRUTE_FORCE);
    for batch in 0..40 {
        let lines: String = (0..1000)
            .map(|i| {
                format!(
                    "{{\"key\": \"noise-{}\", \"type\": \"page_view\"}}\n",
                    (batch * 1000 + i) % 5000
                )
            })
            .collect();
        expect_json(server.post_ndjson(&lines), StatusCode::ACCEPTED, "noise");
    }
    for i in 0..3 {
        server.send_events(
            &json!({"id": format!("fail-{i}"), "key": "victim", "type": "login_failed"}),
        );
    }
    server.kill9();
    server.restart();
    // Sent at once: if it reached `victim` before its replayed failures,
    // the sequence would never complete.
    server.send_events(&json!({"id": "success", "key": "victim", "type": "login_success", "data": {"ip": "10.0.0.9"}}));
    let alerts = server.wait_alerts("", 1);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["key"], "victim");
    assert_eq!(
        alerts[0]["message"],
        "victim: 3 failed logins, then a success from 10.0.0.9"
    );
    let during = server.log().contains("events=40004");
    eprintln!(
        "the success was posted {} the replay ended",
        if during { "before" } else { "after" }
    );
}

#[test]
fn the_replay_keeps_to_the_live_entity_limit() {
    let mut server = Server::start(&config("1h"));
    server.create_rule(
        "id: count\nthreshold:\n  window: {sliding: 1h}\n  at_least: 1000\nalert:\n  message: \"{{key}}\"\n",
    );
    for batch in 0..3 {
        let lines: String = (batch * 1000..(batch + 1) * 1000)
            .map(|i| format!("{{\"key\": \"k-{i}\", \"type\": \"t\"}}\n"))
            .collect();
        expect_json(
            server.post_ndjson(&lines),
            StatusCode::ACCEPTED,
            "1000 keys",
        );
    }
    server.kill9();
    std::fs::write(
        server.dir().join("cepheus.toml"),
        "[timing]\ntimer_tick = \"20ms\"\ncheckpoint_interval = \"1h\"\npassivate_after = \"100ms\"\n\n[limits]\nmax_live_entities = 50\n",
    )
    .unwrap();
    server.restart();
    // Every key is replayed (the last one too), never many more than the
    // limit live at once: the replay waits for passivation to make room
    // before each log record (a record of ~6 KiB holds up to ~150 of these
    // events, the limit's slack, as for a request).
    let mut most_live = 0.0f64;
    wait_until("k-2999 to be replayed", || {
        let metrics = server.get("/metrics").text().unwrap_or_default();
        most_live = most_live.max(metric_value(&metrics, "cepheus_entities_live").unwrap_or(0.0));
        let response = server.get("/v1/entities/k-2999");
        let seen = response.status() == StatusCode::OK
            && response
                .json::<Value>()
                .is_ok_and(|e| e["events_seen"] == 1);
        seen.then_some(())
    });
    assert!(most_live <= 300.0, "{most_live} entities were live at once");
    assert_eq!(server.entity("k-0")["events_seen"], 1);
}
