//! The live page, end to end in headless Chromium: a test registers a rule,
//! posts events and sees the alert appear on the page; it also flips a
//! rule's switch, looks up an entity and reads the counters and the
//! instances.
//!
//! Chromium is driven over the DevTools protocol (a WebSocket, with the
//! `tungstenite` client the other tests use). `.ci/run` installs Debian's
//! `chromium`; where it is missing outside CI the test says so and passes.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

struct Browser {
    child: Child,
    page: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Opens `url` in a new headless Chromium; `None` when Chromium is not
    /// installed (allowed outside CI only).
    fn open(url: &str) -> Option<Browser> {
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(binary) = binary else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have chromium (see .ci/run)"
            );
            eprintln!("chromium is not installed: skipping the browser test");
            return None;
        };
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        // Chromium prints "DevTools listening on ws://127.0.0.1:PORT/..." on stderr.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut port = None;
        let mut line = String::new();
        while port.is_none() && stderr.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                port = rest.split('/').next().and_then(|p| p.parse::<u16>().ok());
            }
            line.clear();
        }
        let port = port.expect("chromium prints its DevTools address");
        // Keep draining stderr so chromium never blocks on a full pipe.
        std::thread::spawn(move || for _ in stderr.lines() {});
        let targets: Vec<Value> = wait_until("the page target", || {
            reqwest::blocking::get(format!("http://127.0.0.1:{port}/json/list"))
                .ok()?
                .json::<Vec<Value>>()
                .ok()
                .filter(|t| t.iter().any(|t| t["type"] == "page"))
        });
        let target = targets.iter().find(|t| t["type"] == "page").unwrap();
        let ws_url = target["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
        let (page, _) = tungstenite::connect(ws_url).expect("the DevTools socket connects");
        Some(Browser {
            child,
            page,
            next_id: 1,
            _profile: profile,
        })
    }

    /// Evaluates `expression` in the page and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"id": id, "method": "Runtime.evaluate",
                             "params": {"expression": expression, "returnByValue": true, "awaitPromise": true}});
        self.page.send(Message::text(request.to_string())).unwrap();
        loop {
            let message = self.page.read().expect("the DevTools socket stays open");
            let Message::Text(text) = message else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == id {
                return reply["result"]["result"]["value"].clone();
            }
        }
    }

    /// Saves a PNG of the page as `name`.png in the test's output
    /// directory (`target/tmp/page-screenshots/`), for a person to look at.
    fn screenshot(&mut self, name: &str) {
        let id = self.next_id;
        self.next_id += 1;
        let request =
            json!({"id": id, "method": "Page.captureScreenshot", "params": {"format": "png"}});
        self.page.send(Message::text(request.to_string())).unwrap();
        let data = loop {
            let Message::Text(text) = self.page.read().expect("the DevTools socket stays open")
            else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == id {
                break reply["result"]["data"]
                    .as_str()
                    .expect("a screenshot")
                    .to_owned();
            }
        };
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("page-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    /// Waits until `expression` is truthy in the page; returns its value.
    fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.eval(expression);
            let truthy = !matches!(value, Value::Null | Value::Bool(false))
                && value != json!("")
                && value != json!(0);
            if truthy {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last value {value}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const RULE: &str = r#"id: brute-force-login
description: Three or more failed logins, then a success, within 5 minutes
severity: high
sequence:
  within: 5m
  steps:
    - name: failures
      match: type == "login_failed"
      times: {min: 3}
    - name: success
      match: type == "login_success"
alert:
  message: "{{key}}: {{failures.count}} failed logins, then a success from {{success.data.ip}}"
"#;

const ABSENCE: &str = r#"id: session-heartbeat
severity: low
absence:
  expect: type == "heartbeat"
  within: 10m
alert:
  message: "{{key}} went quiet"
"#;

#[test]
fn the_live_page_shows_an_alert_as_it_fires_and_drives_rules_and_entities() {
    let server = Server::start(&format!(
        "{FAST_TIMING}\n[delivery]\nallow_private_urls = true\nbackoff_initial = \"20ms\"\nbackoff_max = \"50ms\"\n"
    ));
    server.create_rule(RULE);
    server.create_rule(ABSENCE);
    // A receiver nobody listens at: its notification fails and is parked.
    let down = format!("http://127.0.0.1:{}/hook", free_port());
    let created = server.post(
        "/v1/receivers",
        "application/json",
        json!({"name": "case-queue", "url": down, "max_attempts": 2}).to_string(),
    );
    assert_eq!(created.status(), 201);
    let routed = server.put(
        "/v1/routes",
        "application/json",
        json!({"routes": [{"receiver": "case-queue"}]}).to_string(),
    );
    assert_eq!(routed.status(), 200);
    let Some(mut browser) = Browser::open(&server.url("/")) else {
        return;
    };

    browser.wait_for(
        "the alert stream to connect",
        "document.getElementById('status').textContent === 'live'",
    );
    browser.wait_for(
        "the rule to be listed",
        "!!document.querySelector('tr[data-rule=\"brute-force-login\"]')",
    );

    // Events posted after the page opened: the alert must arrive live.
    let base = now_plus(0);
    server.send_events(&json!([
        {"key": "acct-42", "type": "login_failed", "time": at(&base, 0), "data": {"ip": "10.0.0.7"}},
        {"key": "acct-42", "type": "login_failed", "time": at(&base, 1000), "data": {"ip": "10.0.0.7"}},
        {"key": "acct-42", "type": "login_failed", "time": at(&base, 2000), "data": {"ip": "10.0.0.8"}},
        {"key": "acct-42", "type": "login_success", "time": at(&base, 3000), "data": {"ip": "203.0.113.9"}},
    ]));
    let shown = browser.wait_for(
        "the alert on the page",
        "[...document.querySelectorAll('#alerts li.alert .message')].map(e => e.textContent).join('\\n')",
    );
    assert!(
        shown
            .as_str()
            .unwrap()
            .contains("acct-42: 3 failed logins, then a success from 203.0.113.9"),
        "{shown}"
    );

    // The counters come from /metrics.
    browser.wait_for(
        "the events counter",
        "document.getElementById('c-events').textContent.replace(/,/g, '') === '4'",
    );

    // The instances view, from /v1/instances: this one, owning every
    // partition (the embedded mode).
    browser.wait_for(
        "the instances view",
        "document.querySelector('#instances tr[data-instance] .partitions')?.textContent === '0–63 (64 of 64)'",
    );

    // The last hour: events/s and alerts/s per rule, from /v1/stats/history.
    browser.eval("loadHistory(); true");
    browser.wait_for(
        "the rule in the alerts chart's legend",
        "!!document.querySelector('#chart-legend li[data-rule=\"brute-force-login\"]')",
    );
    browser.wait_for(
        "the events chart",
        "!!document.querySelector('#chart-events polygon[data-series=\"events\"]')",
    );
    browser.wait_for(
        "the alerts chart's line",
        "!!document.querySelector('#chart-alerts polyline[data-series=\"brute-force-login\"]')",
    );

    // A new partial match and a heartbeat's deadline, for the entity's timeline.
    server.send_events(&json!([
        {"key": "acct-42", "type": "login_failed", "time": at(&base, 4000), "data": {"ip": "10.0.0.7"}},
        {"key": "acct-42", "type": "heartbeat", "time": at(&base, 5000)},
    ]));

    // The entity lookup shows its state.
    browser.eval(
        "document.getElementById('entity-key').value = 'acct-42';\
         document.getElementById('lookup').requestSubmit(); true",
    );
    let summary = browser.wait_for(
        "the entity summary",
        "document.querySelector('#entity .summary')?.textContent",
    );
    assert!(summary.as_str().unwrap().contains("6 events"), "{summary}");
    // ...as a timeline: the partial match as a bar with its event, the
    // absence deadline as a bar, the clock and the next timer as lines.
    browser.wait_for(
        "the partial match on the timeline",
        "!!document.querySelector('#entity .tl-row[data-rule=\"brute-force-login\"] rect.tl-bar')\
         && !!document.querySelector('#entity .tl-row[data-rule=\"brute-force-login\"] circle.tl-event')",
    );
    browser.wait_for(
        "the absence deadline on the timeline",
        "!!document.querySelector('#entity .tl-row[data-rule=\"session-heartbeat\"] rect.tl-bar.absence')",
    );
    browser.wait_for(
        "the clock and the next timer",
        "!!document.querySelector('#entity .tl-clock') && !!document.querySelector('#entity .tl-timer')",
    );
    browser.screenshot("live-page");

    // The receiver's failed delivery is listed, and can be sent again.
    browser.eval("loadReceivers(); true");
    browser.wait_for(
        "the receiver's failure on the page",
        "document.querySelector('tr[data-receiver=\"case-queue\"] .failures')?.textContent === '1'\
         && !!document.querySelector('#failures .failure[data-receiver=\"case-queue\"] button.resend')",
    );

    // A silence made on the page is listed, then expired from it.
    browser.eval(
        "document.getElementById('s-rule').value = 'brute-*';\
         document.getElementById('s-by').value = 'oncall';\
         document.getElementById('s-comment').value = 'pen test';\
         document.getElementById('silence-form').requestSubmit(); true",
    );
    let silence = wait_until("the silence over REST", || {
        let list = server.get_json("/v1/silences");
        list["silences"].as_array().and_then(|s| s.first().cloned())
    });
    assert_eq!(silence["matchers"]["rule"], "brute-*");
    assert_eq!(silence["created_by"], "oncall");
    assert_eq!(silence["state"], "active");
    let id = silence["id"].as_str().unwrap().to_owned();
    browser.wait_for(
        "the silence on the page",
        &format!(
            "!!document.querySelector('tr.silence-active[data-silence=\"{id}\"] button.expire')"
        ),
    );
    browser.screenshot("receivers-and-silences");
    browser.eval(&format!(
        "document.querySelector('tr[data-silence=\"{id}\"] button.expire').click(); true"
    ));
    wait_until("the silence to expire", || {
        (server.get_json(&format!("/v1/silences/{id}"))["state"] == "expired").then_some(())
    });
    browser.wait_for(
        "the expired silence on the page",
        &format!("!!document.querySelector('tr.silence-expired[data-silence=\"{id}\"]')"),
    );

    // The switch disables the rule through the API.
    browser.eval(
        "document.querySelector('tr[data-rule=\"brute-force-login\"] input.enabled').click(); true",
    );
    wait_until("the rule to be disabled", || {
        let rule = server.get_json("/v1/rules/brute-force-login");
        (rule["rule"]["enabled"] == json!(false)).then_some(())
    });
}
