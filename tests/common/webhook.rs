//! A webhook receiver for delivery tests: a small HTTP/1.1 server on
//! loopback that records every request and answers as told (200, an
//! error for the first N requests, or nothing at all).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    /// 200 to everything.
    Ok,
    /// `status` to the first `n` requests, then 200.
    FailFirst(usize, u16),
    /// `status` to everything.
    Fail(u16),
    /// Never answers (holds the connection for a minute).
    Hang,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Header names in lowercase.
    pub headers: HashMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
    /// What the receiver answered (0: nothing).
    pub status: u16,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_lowercase()).map(String::as_str)
    }
}

/// A running receiver.
pub struct Webhook {
    port: u16,
    behaviour: Arc<Mutex<Behaviour>>,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    https: bool,
}

impl Webhook {
    /// Starts a receiver on a free port.
    pub fn start(behaviour: Behaviour) -> Webhook {
        Webhook::start_on(super::free_port(), behaviour)
    }

    /// Starts a receiver on `port` (e.g. one a test kept free while it was
    /// "down").
    pub fn start_on(port: u16, behaviour: Behaviour) -> Webhook {
        Webhook::listen(port, behaviour, None)
    }

    /// Starts an `https://` receiver with the PEM certificate and key.
    pub fn start_tls(
        behaviour: Behaviour,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Webhook {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Webhook::listen(super::free_port(), behaviour, Some(Arc::new(config)))
    }

    fn listen(port: u16, behaviour: Behaviour, tls: Option<Arc<rustls::ServerConfig>>) -> Webhook {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("the webhook port is free");
        let hook = Webhook {
            port,
            behaviour: Arc::new(Mutex::new(behaviour)),
            received: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            https: tls.is_some(),
        };
        let (behaviour, received, stop) = (
            Arc::clone(&hook.behaviour),
            Arc::clone(&hook.received),
            Arc::clone(&hook.stop),
        );
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (behaviour, received, stop) = (
                            Arc::clone(&behaviour),
                            Arc::clone(&received),
                            Arc::clone(&stop),
                        );
                        let tls = tls.clone();
                        std::thread::spawn(move || {
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
                            match tls {
                                Some(config) => {
                                    let Ok(connection) = rustls::ServerConnection::new(config)
                                    else {
                                        return;
                                    };
                                    let tls = rustls::StreamOwned::new(connection, stream);
                                    serve(tls, behaviour, received, stop)
                                }
                                None => serve(stream, behaviour, received, stop),
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        hook
    }

    /// Its URL.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/hook", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Changes how it answers.
    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The requests answered 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// The alerts of the accepted notifications (cepheus format), in the
    /// order they arrived.
    pub fn accepted_alerts(&self) -> Vec<Value> {
        self.accepted()
            .iter()
            .flat_map(|r| r.json()["alerts"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    stream: impl Read + Write,
    behaviour: Arc<Mutex<Behaviour>>,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
) {
    let mut reader = BufReader::new(stream);
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = {
            let mut list = received.lock().unwrap();
            let answered = list.len();
            let status = match *behaviour.lock().unwrap() {
                Behaviour::Ok => 200,
                Behaviour::FailFirst(n, status) if answered < n => status,
                Behaviour::FailFirst(..) => 200,
                Behaviour::Fail(status) => status,
                Behaviour::Hang => 0,
            };
            list.push(Received {
                headers,
                body,
                status,
            });
            status
        };
        if status == 0 {
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        let writer = reader.get_mut();
        if writer.write_all(answer.as_bytes()).is_err() || writer.flush().is_err() {
            return;
        }
    }
}
