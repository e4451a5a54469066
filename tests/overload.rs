//! Backpressure and bounded memory (DESIGN §7): a flood far beyond what
//! the server can evaluate is answered with `429` and `Retry-After`
//! instead of being buffered; the server's resident memory stays under a
//! stated bound meanwhile; every acknowledged event is evaluated; and the
//! server serves normally once the flood stops.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The bound on resident memory during the flood. The server's page cache
/// is set to 16 MiB; what remains is the code, the actors' state (64 keys),
/// at most `max_inflight_events` events waiting, one request body per
/// connection being read (8 clients × ~300 KB), and what the allocator
/// keeps of freed memory for reuse: mimalloc holds freed pages for a second
/// in each thread's heap before returning them. A debug build idles at about
/// 85–100 MiB and peaks at 180–215 MiB under this flood (CI machine), however
/// long it lasts (`CEPHEUS_FLOOD_SECS`).
const RSS_BOUND_KIB: u64 = 288 * 1024;

/// How much the peak may grow from the first half of the flood to the
/// second: memory must not grow with the number of events accepted. The
/// allocator's cache of freed pages (returned after a second) makes the peak
/// vary by a few tens of MiB from one half to the other.
const RSS_GROWTH_KIB: u64 = 64 * 1024;

const CLIENTS: usize = 8;
const BATCH: usize = 2_000;
const KEYS: usize = 64;
/// How long the flood lasts (`CEPHEUS_FLOOD_SECS`, default 6).
fn flood() -> Duration {
    Duration::from_secs(
        std::env::var("CEPHEUS_FLOOD_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(6),
    )
}

#[test]
fn a_flood_gets_429_with_retry_after_memory_stays_bounded_and_nothing_acknowledged_is_lost() {
    let mut server = Server::start(&format!(
        "{FAST_TIMING}\n[limits]\nmax_inflight_events = 4000\n[storage]\ncache_bytes = 16777216\n"
    ));
    // A rule that fires on every marked event (one in a hundred), so the
    // flood also records alerts.
    server.create_rule(&every_event_rule("mark", "mark", "low"));
    let idle_rss = server.rss_kib().expect("the server's VmRSS is readable");
    let port = server.port();

    let stop = AtomicBool::new(false);
    let acknowledged = AtomicU64::new(0);
    let acknowledged_marks = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let requests = AtomicU64::new(0);
    let mut peak_rss = idle_rss;
    let mut samples = Vec::new();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for c in 0..CLIENTS {
            let (stop, acknowledged, acknowledged_marks, refused, requests) = (
                &stop,
                &acknowledged,
                &acknowledged_marks,
                &refused,
                &requests,
            );
            scope.spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                // One body, posted again and again (no ids, so no dedup):
                // the clients spend their time sending, not building JSON.
                let events: Vec<Value> = (0..BATCH)
                    .map(|n| {
                        json!({
                            "key": format!("k{}", (c * BATCH + n) % KEYS),
                            "type": if n % 100 == 0 { "mark" } else { "e" },
                            "data": {"n": n, "pad": "x".repeat(64)},
                        })
                    })
                    .collect();
                let marks = (BATCH / 100) as u64;
                let body = Value::Array(events).to_string();
                while !stop.load(Ordering::Acquire) {
                    let response = http
                        .post(format!("http://127.0.0.1:{port}/v1/events"))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .expect("the server answers during the flood");
                    requests.fetch_add(1, Ordering::Relaxed);
                    match response.status() {
                        StatusCode::ACCEPTED => {
                            let summary: Value = response.json().unwrap();
                            assert_eq!(summary["accepted"], BATCH, "{summary}");
                            acknowledged.fetch_add(BATCH as u64, Ordering::Relaxed);
                            acknowledged_marks.fetch_add(marks, Ordering::Relaxed);
                        }
                        StatusCode::TOO_MANY_REQUESTS => {
                            let retry_after = response
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<u64>().ok());
                            assert!(
                                retry_after.is_some_and(|s| s >= 1),
                                "a 429 without Retry-After"
                            );
                            let body: Value = response.json().unwrap();
                            assert_eq!(body["error"], "overloaded", "{body}");
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("unexpected {other}: {:?}", response.text()),
                    }
                }
            });
        }
        // Sample the resident memory while the flood lasts.
        while started.elapsed() < flood() {
            if let Some(rss) = server.rss_kib() {
                peak_rss = peak_rss.max(rss);
                samples.push(rss);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Release);
        if std::env::var("CEPHEUS_FLOOD_TRACE").is_ok() {
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", server.pid().unwrap())).unwrap();
            eprintln!(
                "{}",
                status
                    .lines()
                    .filter(|l| l.starts_with("Rss") || l.starts_with("Vm"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    });
    let acknowledged = acknowledged.load(Ordering::Relaxed);
    let refused = refused.load(Ordering::Relaxed);
    eprintln!(
        "flood: {} requests in {:?}, {acknowledged} events acknowledged, {refused} requests refused with 429; \
         RSS idle {idle_rss} KiB, peak {peak_rss} KiB, bound {RSS_BOUND_KIB} KiB",
        requests.load(Ordering::Relaxed),
        started.elapsed()
    );
    let half = samples.len() / 2;
    let first_half = samples[..half].iter().max().copied().unwrap_or(0);
    let second_half = samples[half..].iter().max().copied().unwrap_or(0);
    eprintln!(
        "RSS peak in the first half of the flood {first_half} KiB, in the second {second_half} KiB"
    );
    if std::env::var("CEPHEUS_FLOOD_TRACE").is_ok() {
        for (i, chunk) in samples.chunks(50).enumerate() {
            eprintln!("  {:>4} s: {} KiB", i, chunk.iter().max().unwrap());
        }
    }
    assert!(
        second_half <= first_half + RSS_GROWTH_KIB,
        "resident memory grows with the flood: {first_half} KiB, then {second_half} KiB"
    );
    assert!(refused > 0, "the flood never hit max_inflight_events");
    assert!(
        acknowledged > 0,
        "nothing was acknowledged during the flood"
    );
    assert!(
        peak_rss < RSS_BOUND_KIB,
        "resident memory reached {peak_rss} KiB, over the bound of {RSS_BOUND_KIB} KiB"
    );
    assert!(
        server
            .metric("cepheus_ingest_overloaded_total")
            .unwrap_or(0.0)
            >= refused as f64,
        "every 429 is counted"
    );

    // Every acknowledged event is evaluated: the keys' counts add up, the
    // in-flight gauge drains, and every marked event alerted once.
    let seen = wait_until("every acknowledged event to be evaluated", || {
        let seen: u64 = (0..KEYS)
            .map(|k| {
                server.entity(&format!("k{k}"))["events_seen"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum();
        (seen >= acknowledged).then_some(seen)
    });
    assert_eq!(
        seen, acknowledged,
        "events evaluated that were never acknowledged"
    );
    assert_eq!(server.metric("cepheus_inflight_events"), Some(0.0));
    assert_eq!(
        server.metric("cepheus_events_accepted_total"),
        Some(acknowledged as f64)
    );
    let marks = acknowledged_marks.load(Ordering::Relaxed) as usize;
    let alerts = wait_until("an alert per marked event", || {
        let alerts = server.all_alerts("rule=mark");
        (alerts.len() >= marks).then_some(alerts)
    });
    assert_eq!(alerts.len(), marks);

    // Recovered: a normal request is served at once.
    let asked = Instant::now();
    let summary = server.send_events(&json!({"key": "after", "type": "mark"}));
    assert_eq!(summary["accepted"], 1);
    server.wait_alerts("key=after", 1);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "slow after the flood: {:?}",
        asked.elapsed()
    );
    assert_eq!(server.get("/readyz").status(), StatusCode::OK);
    assert!(server.is_running());
}

#[test]
fn a_body_is_refused_with_429_before_it_is_read_when_the_server_is_full() {
    // Nothing can be accepted (the limit is below one event), so the
    // server knows the answer before reading a byte of the body: a body
    // far over the size limit gets 429, not 413.
    let server = Server::start(&format!(
        "{FAST_TIMING}\n[limits]\nmax_inflight_events = 0\nmax_body_bytes = 1024\n"
    ));
    let big: Vec<Value> = (0..200)
        .map(|i| json!({"key": format!("k{i}"), "type": "t"}))
        .collect();
    let response = server.post_events(&Value::Array(big));
    assert!(response.headers().contains_key("retry-after"));
    expect_error(response, StatusCode::TOO_MANY_REQUESTS, "overloaded");
}
