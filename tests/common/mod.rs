//! The integration-test harness: starts the real `cepheus` binary on a free
//! port with its own temporary data directory and talks to it as a client
//! would (HTTP with `reqwest`, WebSocket with `tungstenite`).
//!
//! Tests never assert on timing: they wait for a condition with a generous
//! deadline ([`wait_until`]). Every test starts its own server, so tests
//! share no port, directory or state and can run in parallel.

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod kafka;
pub mod lazyfs;
pub mod tansu;
pub mod webhook;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// How long any condition may take before a test gives up. Generous: the
/// binary is a debug build and the machine may be busy with other tests.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Timings that make background work fast enough for tests; use as the
/// `[timing]` table of a config (or write your own).
pub const FAST_TIMING: &str = r#"
[timing]
timer_tick = "20ms"
checkpoint_interval = "200ms"
shutdown_grace = "2s"
"#;

/// A running `cepheus serve`.
pub struct Server {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    client: Client,
}

impl Server {
    /// Starts the binary with `config_toml` as its config file and waits
    /// until `GET /readyz` answers 200.
    pub fn start(config_toml: &str) -> Server {
        Server::start_with(config_toml, None)
    }

    /// As [`Server::start`], also loading the rule files in `rules_dir`.
    pub fn start_with(config_toml: &str, rules_dir: Option<&Path>) -> Server {
        Server::start_prepared(config_toml, rules_dir, |_| {})
    }

    /// As [`Server::start_with`], calling `prepare` with the server's
    /// directory before the first start (the data directory will be
    /// `dir/data`; e.g. mount a small file system there).
    pub fn start_prepared(
        config_toml: &str,
        rules_dir: Option<&Path>,
        prepare: impl FnOnce(&Path),
    ) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("cepheus-itest-")
            .tempdir()
            .expect("a temporary directory can be created");
        std::fs::write(dir.path().join("cepheus.toml"), config_toml)
            .expect("the config file can be written");
        if let Some(rules) = rules_dir {
            std::fs::write(
                dir.path().join("rules-dir"),
                rules.to_string_lossy().as_bytes(),
            )
            .expect("the rules path can be remembered");
        }
        let client = Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("the HTTP client builds");
        prepare(dir.path());
        let mut server = Server {
            child: None,
            port: free_port(),
            dir,
            client,
        };
        server.spawn();
        server
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's temporary directory (data, config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The full URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The HTTP client.
    pub fn http(&self) -> &Client {
        &self.client
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's resident memory in KiB (`VmRSS` of
    /// `/proc/<pid>/status`), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Replaces the config file (read at the next start).
    pub fn set_config(&self, config_toml: &str) {
        std::fs::write(self.dir.path().join("cepheus.toml"), config_toml)
            .expect("the config file can be written");
    }

    /// Whether the process is still running (false once it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Everything the server wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("the log file opens");
        writeln!(&log, "---- starting cepheus on port {} ----", self.port)
            .expect("the log file is writable");
        let mut command = Command::new(env!("CARGO_BIN_EXE_cepheus"));
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--config")
            .arg(self.dir.path().join("cepheus.toml"));
        if let Ok(rules) = std::fs::read_to_string(self.dir.path().join("rules-dir")) {
            command.arg("--rules").arg(rules);
        }
        // NB: the environment could otherwise override the flags.
        for (name, _) in std::env::vars() {
            if name.starts_with("CEPHEUS_") {
                command.env_remove(name);
            }
        }
        let child = command
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file handle clones"))
            .stderr(log)
            .spawn()
            .expect("the cepheus binary starts");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "cepheus exited during start ({status}); its log:\n{}",
                        self.log()
                    );
                }
            }
            if let Ok(response) = self
                .client
                .get(self.url("/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
            {
                if response.status() == StatusCode::OK {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "cepheus was not ready within {PATIENCE:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Kills the server with SIGKILL (no shutdown work) and waits for it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM (graceful shutdown) and waits for it;
    /// panics if it does not exit cleanly in time.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id().to_string();
        let sent = Command::new("kill").arg("-TERM").arg(&pid).status();
        assert!(
            sent.is_ok_and(|s| s.success()),
            "SIGTERM could not be sent to {pid}"
        );
        let deadline = Instant::now() + PATIENCE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    assert!(
                        status.success(),
                        "cepheus exited with {status} after SIGTERM; log:\n{}",
                        self.log()
                    );
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "cepheus did not stop within {PATIENCE:?} of SIGTERM; log:\n{}",
                        self.log()
                    );
                }
            }
        }
    }

    /// Starts the server again on the same port and data directory (after
    /// [`Server::kill9`] or [`Server::stop`]; kills it first if running).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    // ---- HTTP helpers -------------------------------------------------

    /// `GET path`.
    pub fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .expect("GET is answered")
    }

    /// `GET path`, expecting 200 and JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let response = self.get(path);
        expect_json(response, StatusCode::OK, &format!("GET {path}"))
    }

    /// `POST path` with `body` as `content_type` (none when empty).
    pub fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::blocking::Body>,
    ) -> Response {
        let mut request = self.client.post(self.url(path)).body(body);
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        request.send().expect("POST is answered")
    }

    /// `PUT path` with `body` as `content_type`.
    pub fn put(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::blocking::Body>,
    ) -> Response {
        self.client
            .put(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .expect("PUT is answered")
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .send()
            .expect("DELETE is answered")
    }

    /// `POST /v1/rules` with a YAML rule.
    pub fn post_rule_yaml(&self, yaml: &str) -> Response {
        self.post("/v1/rules", "application/yaml", yaml.to_owned())
    }

    /// `POST /v1/rules` with a JSON rule.
    pub fn post_rule_json(&self, rule: &Value) -> Response {
        self.post("/v1/rules", "application/json", rule.to_string())
    }

    /// Creates a YAML rule, expecting 201; returns the stored rule.
    pub fn create_rule(&self, yaml: &str) -> Value {
        expect_json(
            self.post_rule_yaml(yaml),
            StatusCode::CREATED,
            "POST /v1/rules",
        )
    }

    /// `POST /v1/events` with a JSON body (an event or an array).
    pub fn post_events(&self, events: &Value) -> Response {
        self.post("/v1/events", "application/json", events.to_string())
    }

    /// `POST /v1/events` with an NDJSON body.
    pub fn post_ndjson(&self, lines: &str) -> Response {
        self.post("/v1/events", "application/x-ndjson", lines.to_owned())
    }

    /// Posts events (JSON), expecting 202; returns the summary.
    pub fn send_events(&self, events: &Value) -> Value {
        expect_json(
            self.post_events(events),
            StatusCode::ACCEPTED,
            "POST /v1/events",
        )
    }

    /// `GET /v1/alerts?query`, expecting 200; returns the page.
    pub fn alert_page(&self, query: &str) -> Value {
        self.get_json(&format!("/v1/alerts?{query}"))
    }

    /// The alerts of `GET /v1/alerts?query` (one page).
    pub fn alerts(&self, query: &str) -> Vec<Value> {
        self.alert_page(query)["alerts"]
            .as_array()
            .expect("`alerts` is an array")
            .clone()
    }

    /// Every alert of `GET /v1/alerts?query`, following `next` page by page.
    pub fn all_alerts(&self, query: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self.alert_page(&format!("{query}&after={after}&limit=1000"));
            let alerts = page["alerts"].as_array().expect("`alerts` is an array");
            let next = page["next"].as_u64().expect("`next` is a number");
            if alerts.is_empty() && next == after {
                return all;
            }
            all.extend(alerts.iter().cloned());
            after = next;
        }
    }

    /// Waits until `GET /v1/alerts?query` holds at least `n` alerts;
    /// returns them.
    pub fn wait_alerts(&self, query: &str, n: usize) -> Vec<Value> {
        wait_until(&format!("{n} alert(s) for `{query}`"), || {
            let alerts = self.alerts(query);
            (alerts.len() >= n).then_some(alerts)
        })
    }

    /// `GET /v1/entities/{key}`, expecting 200.
    pub fn entity(&self, key: &str) -> Value {
        self.get_json(&format!("/v1/entities/{key}"))
    }

    /// The dead letters (first page).
    pub fn deadletters(&self) -> Vec<Value> {
        self.get_json("/v1/deadletters?limit=1000")["deadletters"]
            .as_array()
            .expect("`deadletters` is an array")
            .clone()
    }

    /// `POST /v1/clock` to `advance_to`, expecting 200.
    pub fn advance_clock(&self, advance_to: &str) -> Value {
        let response = self.post(
            "/v1/clock",
            "application/json",
            json!({ "advance_to": advance_to }).to_string(),
        );
        expect_json(response, StatusCode::OK, "POST /v1/clock")
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        let response = self.get("/metrics");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().expect("the metrics are text")
    }

    /// The value of the metric sample `name` (a full series name such as
    /// `cepheus_alerts_total{rule="x"}`, or a name without labels), if present.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.metrics(), name)
    }

    /// Opens a WebSocket on `/v1/alerts/ws?query`.
    pub fn ws(&self, query: &str) -> AlertSocket {
        self.try_ws(query)
            .unwrap_or_else(|e| panic!("the WebSocket `{query}` opens: {e}"))
    }

    /// Tries to open a WebSocket on `/v1/alerts/ws?query`.
    pub fn try_ws(&self, query: &str) -> Result<AlertSocket, tungstenite::Error> {
        let stream = TcpStream::connect(("127.0.0.1", self.port))
            .expect("the server accepts TCP connections");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("a read timeout can be set");
        let url = format!("ws://127.0.0.1:{}/v1/alerts/ws?{query}", self.port);
        match tungstenite::client::client(url, stream) {
            Ok((socket, _)) => Ok(AlertSocket { socket, pings: 0 }),
            Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
            Err(tungstenite::HandshakeError::Interrupted(_)) => {
                Err(tungstenite::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the WebSocket handshake timed out",
                )))
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "==== cepheus log ({}) ====\n{}",
                self.log_path().display(),
                self.log()
            );
        }
    }
}

/// A port that was free a moment ago (bind to port 0, read, drop), never
/// one handed out before in this test process.
///
/// NB: the kernel may give the same port to two tests running at once
/// (each drops its listener before its server binds); the second server
/// then failed to bind while its test, asking `/readyz` on that port, was
/// answered by the first one and went on talking to the wrong server.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port exists");
        let port = listener
            .local_addr()
            .expect("a bound socket has an address")
            .port();
        let mut given = GIVEN
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if given.insert(port) {
            return port;
        }
    }
}

/// Checks `response`'s status and returns its JSON body.
pub fn expect_json(response: Response, status: StatusCode, what: &str) -> Value {
    let got = response.status();
    let text = response.text().unwrap_or_default();
    assert_eq!(got, status, "{what}: unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {text}"))
}

/// Checks that `response` is an error with `status` in the one error shape
/// (`{"error": code, "message": sentence, ...}`) with `code`; returns the body.
pub fn expect_error(response: Response, status: StatusCode, code: &str) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = expect_json(response, status, &format!("expecting {status} {code}"));
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type}"
    );
    assert_eq!(body["error"], code, "error code in {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "an error has a message: {body}");
    body
}

/// Polls `condition` until it returns `Some` (or [`PATIENCE`] passes, which
/// fails the test naming `what`).
pub fn wait_until<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A metric sample's value from Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series == name).then(|| value.parse().ok()).flatten()
        })
}

/// An RFC 3339 timestamp `offset_ms` after `base` (RFC 3339 too).
pub fn at(base: &str, offset_ms: i64) -> String {
    let base = chrono::DateTime::parse_from_rfc3339(base).expect("the base time is RFC 3339");
    (base + chrono::Duration::milliseconds(offset_ms))
        .to_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Now, as RFC 3339, shifted by `offset_ms`.
pub fn now_plus(offset_ms: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds(offset_ms))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A time well in the past (30 days before now, on a whole hour, so
/// epoch-aligned windows of up to an hour start there), for historical
/// data that the wall clock must not move past by itself.
pub fn history_base() -> String {
    let t = chrono::Utc::now() - chrono::Duration::days(30);
    let hour = t.timestamp() / 3600 * 3600;
    chrono::DateTime::from_timestamp(hour, 0)
        .expect("a valid time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A client WebSocket on `/v1/alerts/ws`.
pub struct AlertSocket {
    socket: WebSocket<TcpStream>,
    /// Pings received from the server (answered automatically).
    pub pings: usize,
}

/// What the server sent next.
#[derive(Debug)]
pub enum WsEvent {
    /// An alert (a text message parsed as JSON).
    Alert(Value),
    /// A close frame, with its code and reason.
    Closed(Option<(CloseCode, String)>),
}

impl AlertSocket {
    /// The next alert or close within `timeout`; `None` if nothing came.
    /// Pings are answered (tungstenite queues the pong and sends it on the
    /// next read) and counted.
    pub fn next_event(&mut self, timeout: Duration) -> Option<WsEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    let value = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("a WebSocket alert is JSON ({e}): {text}"));
                    return Some(WsEvent::Alert(value));
                }
                Ok(Message::Ping(_)) => {
                    self.pings += 1;
                    let _ = self.socket.flush();
                }
                Ok(Message::Close(frame)) => {
                    return Some(WsEvent::Closed(
                        frame.map(|f| (f.code, f.reason.to_string())),
                    ));
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(
                    tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Protocol(
                        tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                    ),
                ) => return Some(WsEvent::Closed(None)),
                Err(e) => panic!("WebSocket read failed: {e}"),
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// The next alert, waiting up to [`PATIENCE`]; panics on close or timeout.
    pub fn next_alert(&mut self) -> Value {
        match self.next_event(PATIENCE) {
            Some(WsEvent::Alert(alert)) => alert,
            other => panic!("expected an alert on the WebSocket, got {other:?}"),
        }
    }

    /// Asserts that no alert arrives within `quiet`.
    pub fn expect_silence(&mut self, quiet: Duration) {
        if let Some(event) = self.next_event(quiet) {
            panic!("expected nothing on the WebSocket, got {event:?}");
        }
    }

    /// Sends a message.
    pub fn send(&mut self, message: Message) {
        self.socket
            .send(message)
            .expect("the WebSocket message is sent");
    }

    /// Reads raw messages (pings included) until `accept` returns true for
    /// one, or `timeout` passes; returns it.
    pub fn read_raw_until(
        &mut self,
        timeout: Duration,
        mut accept: impl FnMut(&Message) -> bool,
    ) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.socket.read() {
                Ok(message) => {
                    if accept(&message) {
                        return Some(message);
                    }
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("WebSocket read failed: {e}"),
            }
        }
        None
    }

    /// Closes the socket politely.
    pub fn close(mut self) {
        let _ = self.socket.close(None);
        let _ = self.socket.flush();
    }
}

/// A one-step sequence rule firing on every event of `event_type`, with
/// `severity`; the message names the key.
pub fn every_event_rule(id: &str, event_type: &str, severity: &str) -> String {
    format!(
        "id: {id}\nseverity: {severity}\nsequence:\n  steps:\n    - name: hit\n      match: type == \"{event_type}\"\nalert:\n  message: \"{{{{key}}}} sent {event_type}\"\n"
    )
}

/// The brute-force rule of DESIGN §3.
pub const BRUTE_FORCE: &str = r#"id: brute-force-login
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

/// Writes `text` to `path`.
pub fn write_file(path: &Path, text: &str) {
    let mut file = File::create(path).expect("the file can be created");
    file.write_all(text.as_bytes())
        .expect("the file can be written");
}
