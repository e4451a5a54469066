//! Access control end to end: API tokens with scopes from the config file
//! on every route class (the WebSocket included, by header and by
//! `?access_token=`), the refusal to expose an open API on a non-loopback
//! address, TLS with a self-signed certificate, and logs that never show a
//! token or an event payload at the default level.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use reqwest::blocking::RequestBuilder;
use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A token made by `cepheus token`, and the config entry it printed.
fn cli_token(name: &str, scopes: &str) -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cepheus"))
        .args(["token", "--name", name, "--scopes", scopes])
        .output()
        .expect("cepheus token runs");
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let token = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cph_"))
        .expect("the token is printed")
        .to_owned();
    let entry = text[text.find("[[auth.tokens]]").expect("the entry is printed")..].to_owned();
    assert!(
        entry.contains(&sha256_hex(&token)),
        "the entry holds the hash"
    );
    assert!(!entry.contains(&token), "the entry never holds the token");
    (token, entry)
}

const READ_TOKEN: &str = "read-token-7f3a";
const ADMIN_TOKEN: &str = "admin-token-91c2";

struct Tokens {
    ingest: String,
    read: String,
    admin: String,
}

fn server_with_tokens() -> (Server, Tokens) {
    let (ingest, entry) = cli_token("ingest-bot", "ingest");
    let config = format!(
        "{FAST_TIMING}\n{entry}\n[[auth.tokens]]\nname = \"dashboard\"\nsha256 = \"{}\"\nscopes = [\"read\"]\n\n[[auth.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n",
        sha256_hex(READ_TOKEN),
        sha256_hex(ADMIN_TOKEN)
    );
    let server = Server::start(&config);
    (
        server,
        Tokens {
            ingest,
            read: READ_TOKEN.into(),
            admin: ADMIN_TOKEN.into(),
        },
    )
}

/// One request of each route class, with the scope it needs.
fn routes(server: &Server) -> Vec<(&'static str, &'static str, RequestBuilder)> {
    let http = server.http();
    let rule = every_event_rule("r2", "t", "low");
    vec![
        (
            "ingest",
            "POST /v1/events",
            http.post(server.url("/v1/events"))
                .header("content-type", "application/json")
                .body(json!({"key": "k", "type": "t"}).to_string()),
        ),
        ("read", "GET /v1/alerts", http.get(server.url("/v1/alerts"))),
        ("read", "GET /v1/rules", http.get(server.url("/v1/rules"))),
        (
            "read",
            "GET /v1/rules/r",
            http.get(server.url("/v1/rules/r")),
        ),
        (
            "read",
            "GET /v1/entities/k",
            http.get(server.url("/v1/entities/k")),
        ),
        (
            "read",
            "GET /v1/deadletters",
            http.get(server.url("/v1/deadletters")),
        ),
        ("read", "GET /metrics", http.get(server.url("/metrics"))),
        (
            "read",
            "POST /v1/rules/validate",
            http.post(server.url("/v1/rules/validate"))
                .header("content-type", "application/yaml")
                .body(rule.clone()),
        ),
        (
            "admin",
            "POST /v1/rules",
            http.post(server.url("/v1/rules"))
                .header("content-type", "application/yaml")
                .body(rule),
        ),
        (
            "admin",
            "PUT /v1/rules/r",
            http.put(server.url("/v1/rules/r"))
                .header("content-type", "application/yaml")
                .body(every_event_rule("r", "t", "high")),
        ),
        (
            "admin",
            "POST /v1/rules/r/disable",
            http.post(server.url("/v1/rules/r/disable")),
        ),
        (
            "admin",
            "POST /v1/rules/r/enable",
            http.post(server.url("/v1/rules/r/enable")),
        ),
        (
            "admin",
            "PUT /v1/entities/k",
            http.put(server.url("/v1/entities/k"))
                .header("content-type", "application/json")
                .body(json!({"attributes": {"tier": "gold"}}).to_string()),
        ),
        (
            "admin",
            "POST /v1/clock",
            http.post(server.url("/v1/clock"))
                .header("content-type", "application/json")
                .body(json!({"advance_to": "2020-01-01T00:00:00Z"}).to_string()),
        ),
        (
            "admin",
            "DELETE /v1/rules/r2",
            http.delete(server.url("/v1/rules/r2")),
        ),
    ]
}

fn send(request: RequestBuilder, token: Option<&str>) -> reqwest::blocking::Response {
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().expect("the request is answered")
}

#[test]
fn every_route_class_needs_a_token_with_its_scope() {
    let (server, tokens) = server_with_tokens();
    // A rule and an entity to read (as admin).
    let created = send(
        server
            .http()
            .post(server.url("/v1/rules"))
            .header("content-type", "application/yaml")
            .body(every_event_rule("r", "t", "low")),
        Some(&tokens.admin),
    );
    assert_eq!(created.status(), StatusCode::CREATED);

    for (scope, name, request) in routes(&server) {
        // No token: 401 with WWW-Authenticate, in the one error shape.
        let response = send(request.try_clone().unwrap(), None);
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{name}"
        );
        let body = expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized");
        assert!(
            body["message"].as_str().unwrap().contains("token"),
            "{body}"
        );
        // A wrong token: 401.
        expect_error(
            send(request.try_clone().unwrap(), Some("cph_not-a-token")),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
        // Tokens without the scope: 403 naming it.
        let lacking: Vec<&str> = match scope {
            "ingest" => vec![&tokens.read],
            "read" => vec![&tokens.ingest],
            _ => vec![&tokens.ingest, &tokens.read],
        };
        for token in lacking {
            let body = expect_error(
                send(request.try_clone().unwrap(), Some(token)),
                StatusCode::FORBIDDEN,
                "forbidden",
            );
            assert!(
                body["message"].as_str().unwrap().contains(scope),
                "{name}: {body}"
            );
        }
        // The right scope, and admin, pass.
        let right = match scope {
            "ingest" => &tokens.ingest,
            "read" => &tokens.read,
            _ => &tokens.admin,
        };
        let mut passing = vec![right];
        if right != &tokens.admin {
            passing.push(&tokens.admin);
        }
        for token in passing {
            let status = send(request.try_clone().unwrap(), Some(token)).status();
            assert!(
                status.is_success() || status == StatusCode::CONFLICT,
                "{name} with the `{scope}` scope: {status}"
            );
        }
    }
    // Public routes need nothing.
    for path in ["/healthz", "/readyz", "/openapi.json", "/docs/"] {
        assert_eq!(server.get(path).status(), StatusCode::OK, "{path}");
    }
}

/// Opens `/v1/alerts/ws?query` with `header` as the Authorization header.
fn ws_with(
    server: &Server,
    query: &str,
    header: Option<&str>,
) -> Result<AlertSocketRaw, tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    let stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut request = format!("ws://127.0.0.1:{}/v1/alerts/ws?{query}", server.port())
        .into_client_request()
        .unwrap();
    if let Some(header) = header {
        request
            .headers_mut()
            .insert("authorization", header.parse().unwrap());
    }
    match tungstenite::client::client(request, stream) {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => panic!("handshake timed out"),
    }
}

type AlertSocketRaw = tungstenite::WebSocket<TcpStream>;

fn refused_with(result: Result<AlertSocketRaw, tungstenite::Error>, status: u16) {
    match result {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), status)
        }
        Err(e) => panic!("expected {status}, got {e}"),
        Ok(_) => panic!("expected {status}, the WebSocket opened"),
    }
}

#[test]
fn the_websocket_takes_the_token_by_header_or_access_token() {
    let (server, tokens) = server_with_tokens();
    refused_with(ws_with(&server, "", None), 401);
    refused_with(ws_with(&server, "access_token=wrong", None), 401);
    refused_with(ws_with(&server, "", Some("Bearer wrong")), 401);
    refused_with(
        ws_with(&server, &format!("access_token={}", tokens.ingest), None),
        403,
    );
    refused_with(
        ws_with(&server, "", Some(&format!("Bearer {}", tokens.ingest))),
        403,
    );
    // The read scope opens it, either way, and alerts arrive.
    let mut by_query = ws_with(&server, &format!("access_token={}", tokens.read), None).unwrap();
    let mut by_header = ws_with(&server, "", Some(&format!("Bearer {}", tokens.read))).unwrap();
    send(
        server
            .http()
            .post(server.url("/v1/rules"))
            .header("content-type", "application/yaml")
            .body(every_event_rule("r", "t", "low")),
        Some(&tokens.admin),
    );
    send(
        server
            .http()
            .post(server.url("/v1/events"))
            .header("content-type", "application/json")
            .body(json!({"key": "k", "type": "t"}).to_string()),
        Some(&tokens.ingest),
    );
    for socket in [&mut by_query, &mut by_header] {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match socket.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    assert!(text.contains("\"rule\":\"r\""), "{text}");
                    break;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("WebSocket read failed: {e}"),
            }
            assert!(Instant::now() < deadline, "no alert on the WebSocket");
        }
    }
}

#[test]
fn tokens_and_event_payloads_never_reach_the_log() {
    let (mut server, tokens) = server_with_tokens();
    let payload = "payload-secret-5d1e";
    for token in [
        tokens.ingest.as_str(),
        tokens.read.as_str(),
        "cph_wrong-token-2b8f",
    ] {
        send(
            server
                .http()
                .post(server.url("/v1/events"))
                .header("content-type", "application/json")
                .body(
                    json!([
                        {"key": "k", "type": "t", "data": {"secret": payload}},
                        {"key": "k", "type": "t", "data": {"secret": payload}, "bad": 1},
                    ])
                    .to_string(),
                ),
            Some(token),
        );
        let _ = ws_with(&server, &format!("access_token={token}"), None);
    }
    send(
        server
            .http()
            .post(server.url("/v1/rules"))
            .header("content-type", "application/yaml")
            .body(format!("id: x\nsequence: {payload}\n")),
        Some(&tokens.admin),
    );
    server.stop();
    let log = server.log();
    assert!(
        log.contains("cepheus is serving"),
        "the log is written: {log}"
    );
    for secret in [
        tokens.ingest.as_str(),
        tokens.read.as_str(),
        tokens.admin.as_str(),
        "cph_wrong-token-2b8f",
        payload,
    ] {
        assert!(!log.contains(secret), "`{secret}` is in the log:\n{log}");
    }
}

/// Runs `cepheus serve` with `args` and a fresh data dir; returns whether
/// it exited (with its status and output) within `wait`, killing it if not.
fn serve_briefly(args: &[&str], dir: &Path, wait: Duration) -> Option<(bool, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cepheus"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(args)
        .env_remove("CEPHEUS_INSECURE")
        .env_remove("CEPHEUS_CONFIG")
        .env_remove("CEPHEUS_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cepheus starts");
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let mut text = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut text);
            let _ = child.stdout.take().unwrap().read_to_string(&mut text);
            return Some((status.success(), text));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn a_non_loopback_address_without_tokens_is_refused_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("0.0.0.0:{}", free_port());
    let (ok, text) =
        serve_briefly(&["--listen", &listen], dir.path(), PATIENCE).expect("cepheus exits at once");
    assert!(!ok);
    assert!(
        text.contains("refusing to listen") && text.contains("--insecure"),
        "{text}"
    );
    // With --insecure it serves (it is still running when killed).
    let listen = format!("0.0.0.0:{}", free_port());
    assert!(
        serve_briefly(
            &["--listen", &listen, "--insecure"],
            dir.path(),
            Duration::from_secs(2)
        )
        .is_none(),
        "cepheus --insecure did not keep serving"
    );
    // With tokens it serves too.
    let config = dir.path().join("tokens.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.tokens]]\nname = \"a\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n",
            sha256_hex(ADMIN_TOKEN)
        ),
    )
    .unwrap();
    let listen = format!("0.0.0.0:{}", free_port());
    assert!(serve_briefly(
        &["--listen", &listen, "--config", config.to_str().unwrap()],
        dir.path(),
        Duration::from_secs(2)
    )
    .is_none());
    // A token entry that is not a hash is refused with its name.
    std::fs::write(
        &config,
        "[[auth.tokens]]\nname = \"broken\"\nsha256 = \"abc\"\nscopes = [\"read\"]\n",
    )
    .unwrap();
    let (ok, text) = serve_briefly(
        &["--config", config.to_str().unwrap()],
        dir.path(),
        PATIENCE,
    )
    .expect("cepheus exits at once");
    assert!(!ok && text.contains("broken"), "{text}");
}

/// Makes a self-signed certificate for 127.0.0.1 and localhost with
/// openssl; returns (cert, key) paths, or `None` if openssl is missing.
fn self_signed(dir: &Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        // NB: an end-entity certificate; webpki refuses a CA one as a server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    status.success().then_some((cert, key))
}

/// A child process killed when dropped (also when a test panics).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTPS GET over rustls trusting only `ca`; returns the raw answer.
fn https_get(port: u16, path: &str, ca: &Path) -> std::io::Result<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let socket = TcpStream::connect(("127.0.0.1", port))?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(connection, socket);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    match tls.read_to_string(&mut answer) {
        Ok(_) => Ok(answer),
        // actix closes without close_notify: what was read is the answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => Ok(answer),
        Err(e) => Err(e),
    }
}

#[test]
fn tls_with_a_certificate_and_key_serves_https_only() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed(dir.path()) else {
        panic!("openssl is needed to make the test certificate (.ci/run installs it)");
    };
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_cepheus"))
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Killed(child);
    let answer = wait_until("cepheus to answer over TLS", || {
        https_get(port, "/readyz", &cert)
            .ok()
            .filter(|a| a.starts_with("HTTP/1.1 200"))
    });
    assert!(answer.contains("\"status\":\"ok\""), "{answer}");
    let rules = https_get(port, "/v1/rules", &cert).unwrap();
    assert!(rules.starts_with("HTTP/1.1 200"), "{rules}");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .timeout(Duration::from_secs(5))
        .send();
    assert!(
        plain.is_err() || plain.is_ok_and(|r| r.status() != StatusCode::OK),
        "plain HTTP was served on the TLS port"
    );
    // A client that does not trust the certificate cannot connect.
    let other = tempfile::tempdir().unwrap();
    let (stranger, _) = self_signed(other.path()).unwrap();
    assert!(https_get(port, "/readyz", &stranger).is_err());
    drop(child);

    // A key that does not fit the certificate is a clear start error.
    let (_, other_key) = (stranger, other.path().join("key.pem"));
    let (ok, text) = serve_briefly(
        &[
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            other_key.to_str().unwrap(),
        ],
        dir.path(),
        PATIENCE,
    )
    .expect("cepheus exits at once");
    assert!(!ok && text.contains("do not fit"), "{text}");
}
