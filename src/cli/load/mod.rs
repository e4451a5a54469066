//! `cepheus load`: drives a running server with a synthetic keyed workload
//! and reports what it sustained.
//!
//! It sends pre-built NDJSON bodies (built before the clock starts) over N
//! keep-alive connections from one or more client threads, optionally
//! paced to a rate, and reports events/s and request latency percentiles.
//! With `--latency` a WebSocket subscriber measures POST→alert latency for
//! the events that complete a pattern. `--floor` measures the cost of
//! parsing the same bodies alone, so a report can say how far end-to-end
//! throughput is from that floor.

mod stages;
mod workload;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::event::EventLimits;
use crate::ingest::{decode, BodyFormat, DecodeLimits};
use crate::time::Timestamp;

pub use stages::{StageSample, StageTime};
pub use workload::{Body, Workload, RULES};

/// Flags of `cepheus load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API token, if the server needs one.
    #[arg(long, env = "CEPHEUS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Distinct entity keys.
    #[arg(long, default_value_t = 100_000)]
    pub keys: usize,
    /// Events to send in all.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Events per request (1: one JSON event per request).
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Client threads the connections are spread over.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Pace to this many events/s (0: as fast as the server takes them).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Share of keys that complete each benchmark pattern.
    #[arg(long, default_value_t = 0.05)]
    pub complete: f64,
    /// Bytes of padding in each event's data (event size).
    #[arg(long, default_value_t = 64)]
    pub data_bytes: usize,
    /// Give every event an id (as producers that retry do); by default
    /// only the events that complete a pattern carry one.
    #[arg(long)]
    pub ids: bool,
    /// Give every event this time (RFC 3339): a time behind what the
    /// entities have seen makes every event late (the late-flood benchmark).
    #[arg(long, value_name = "RFC3339")]
    pub time: Option<String>,
    /// Register the three benchmark rules (a sequence, an absence, a
    /// threshold) before sending, replacing them if present.
    #[arg(long)]
    pub setup: bool,
    /// Measure POST→alert latency with a WebSocket subscriber.
    #[arg(long)]
    pub latency: bool,
    /// Also measure the floor: parsing the same bodies alone, on one core.
    #[arg(long)]
    pub floor: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Events acknowledged (202).
    pub events: u64,
    /// Seconds from the first request to the last answer.
    pub seconds: f64,
    /// Events per second.
    pub events_per_second: f64,
    /// Requests answered 202.
    pub requests: u64,
    /// Requests that failed (other than 429, which is retried).
    pub errors: u64,
    /// 429 answers (each retried after Retry-After).
    pub overloaded: u64,
    /// Request latency in milliseconds: p50, p99, p99.9, max.
    pub request_ms: Percentiles,
    /// POST→alert latency in milliseconds, when measured.
    pub alert_ms: Option<Percentiles>,
    /// Alerts matched to a probe event.
    pub alerts_measured: u64,
    /// Probe events whose alert never arrived.
    pub alerts_missing: u64,
    /// Times the server cut the subscriber off as too slow (it resumed).
    pub resubscribed: u64,
    /// Parsing the same bodies alone, events/s on one core, when measured.
    pub floor_events_per_second: Option<f64>,
    /// Where the server spent the time, per stage of the path (from its
    /// `/metrics`, scraped before and after the run).
    pub stages: Vec<StageTime>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Samples.
    pub count: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50: ms(h.value_at_quantile(0.5)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            count: h.len(),
        }
    }
}

/// Counters shared by the client threads.
#[derive(Default)]
struct Progress {
    next_body: AtomicUsize,
    events: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    overloaded: AtomicU64,
    alerts: AtomicU64,
    /// Times the server closed the alert subscription (too slow) and it
    /// was resumed.
    resubscribed: AtomicU64,
    done: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Per body: answered (acknowledged or failed), so the bodies holding
    /// the next events of its keys may go.
    settled: Vec<AtomicBool>,
}

impl Progress {
    fn new(bodies: usize) -> Progress {
        Progress {
            settled: (0..bodies).map(|_| AtomicBool::new(false)).collect(),
            ..Progress::default()
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Runs the load described by `args` and prints the report.
pub fn run(args: &LoadArgs) -> anyhow::Result<()> {
    let workload = Workload {
        keys: args.keys,
        events: args.events,
        complete: args.complete,
        data_bytes: args.data_bytes,
        run: format!("{:x}", crate::time::wall_now().millis()),
        ids: args.ids,
        time: args.time.clone(),
    };
    eprintln!(
        "building {} events for {} keys in bodies of {} ...",
        args.events, args.keys, args.batch
    );
    let bodies: Arc<Vec<Body>> = Arc::new(workload.bodies(args.batch));
    let floor = args.floor.then(|| measure_floor(&bodies));
    if args.setup {
        setup_rules(args)?;
    }

    let stages_before = scrape_stages(args);
    let progress = Arc::new(Progress::new(bodies.len()));
    let probes: Arc<DashMap<String, Instant>> = Arc::new(DashMap::new());
    let alert_latency = Arc::new(Mutex::new(histogram()));
    let subscriber = args.latency.then(|| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = spawn_subscriber(args, &progress, &probes, &alert_latency, ready_tx);
        let _ = ready_rx.recv_timeout(Duration::from_secs(10));
        handle
    });

    let started = Instant::now();
    let display = spawn_display(&progress, args.events as u64, started);
    let threads = args.threads.max(1);
    let per_thread = (args.connections.max(1)).div_ceil(threads);
    let senders: Vec<_> = (0..threads)
        .map(|_| {
            let (args, workload, bodies, progress, probes) = (
                args.clone(),
                workload.clone(),
                bodies.clone(),
                progress.clone(),
                probes.clone(),
            );
            std::thread::spawn(move || {
                send_loop(
                    &args, &workload, &bodies, &progress, &probes, per_thread, started,
                )
            })
        })
        .collect();
    let mut requests = histogram();
    for sender in senders {
        if let Ok(h) = sender.join() {
            let _ = requests.add(h);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(subscriber) = subscriber {
        // Give alerts of the last requests time to arrive.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !probes.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        progress.done.store(true, Ordering::Release);
        let _ = subscriber.join();
    }
    progress.done.store(true, Ordering::Release);
    let _ = display.join();

    let stages = match (&stages_before, scrape_stages(args)) {
        (Some(before), Some(after)) => before.until(&after),
        _ => Vec::new(),
    };
    let events = progress.events.load(Ordering::Acquire);
    let alert_hist = alert_latency.lock().unwrap_or_else(|p| p.into_inner());
    let report = Report {
        events,
        seconds,
        events_per_second: events as f64 / seconds.max(1e-9),
        requests: progress.requests.load(Ordering::Acquire),
        errors: progress.errors.load(Ordering::Acquire),
        overloaded: progress.overloaded.load(Ordering::Acquire),
        request_ms: Percentiles::of(&requests),
        alert_ms: args.latency.then(|| Percentiles::of(&alert_hist)),
        alerts_measured: alert_hist.len(),
        alerts_missing: probes.len() as u64,
        resubscribed: progress.resubscribed.load(Ordering::Acquire),
        floor_events_per_second: floor,
        stages,
    };
    if let Some(e) = progress
        .last_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
    {
        eprintln!("last error: {e}");
    }
    print_report(args, &report);
    Ok(())
}

fn print_report(args: &LoadArgs, r: &Report) {
    if args.json {
        println!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
        return;
    }
    let mode = if args.batch <= 1 {
        "one event per request".to_owned()
    } else {
        format!("NDJSON batches of {}", args.batch)
    };
    println!(
        "cepheus load: {} events, {} keys, {mode}, {} connections on {} client thread(s), target {}",
        args.events, args.keys, args.connections, args.threads, args.url
    );
    println!(
        "  throughput      {:>12.0} events/s  ({} events acknowledged in {:.2} s)",
        r.events_per_second, r.events, r.seconds
    );
    println!(
        "  requests        {:>12}  ({} errors, {} answered 429 and retried)",
        r.requests, r.errors, r.overloaded
    );
    let line = |name: &str, p: &Percentiles| {
        println!(
            "  {name:<15} p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  ({} samples)",
            p.p50, p.p99, p.p999, p.max, p.count
        )
    };
    line("request", &r.request_ms);
    if let Some(a) = &r.alert_ms {
        line("POST→alert", a);
        if r.alerts_missing > 0 || r.resubscribed > 0 {
            println!(
                "  alerts          {} probes without an alert; subscriber cut off as too slow {} times (resumed each time)",
                r.alerts_missing, r.resubscribed
            );
        }
    }
    if let Some(floor) = r.floor_events_per_second {
        println!(
            "  parse floor     {floor:>12.0} events/s on one core; end-to-end ÷ floor = {:.3}",
            r.events_per_second / floor
        );
    }
    if !r.stages.is_empty() {
        println!("  where the server's time went (cepheus_stage_seconds during the run):");
        for s in &r.stages {
            println!(
                "    {:<15} {:>10} × mean {:>8.3} ms  p50 ≤ {:>8.3} ms  p99 ≤ {:>8.3} ms",
                s.stage, s.count, s.mean_ms, s.p50_ms, s.p99_ms
            );
        }
    }
}

/// The server's stage histograms, if its `/metrics` can be read.
fn scrape_stages(args: &LoadArgs) -> Option<StageSample> {
    let args = args.clone();
    actix_web::rt::System::new().block_on(async move {
        let mut response = client(&args, 1)
            .get(format!("{}/metrics", args.url))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = response.body().limit(64 << 20).await.ok()?;
        Some(StageSample::parse(&String::from_utf8_lossy(&body)))
    })
}

/// Events/s of decoding the bodies alone, on this thread.
fn measure_floor(bodies: &[Body]) -> f64 {
    let limits = DecodeLimits {
        max_events: usize::MAX,
        event: EventLimits::default(),
    };
    let started = Instant::now();
    let mut events = 0usize;
    for body in bodies {
        if let Ok(decoded) = decode(
            body.text.as_bytes(),
            BodyFormat::NdJson,
            &limits,
            Timestamp(0),
        ) {
            events += decoded.events.len();
        }
    }
    events as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

fn client(args: &LoadArgs, connections: usize) -> awc::Client {
    let mut builder = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .connector(awc::Connector::new().limit(connections.max(1)));
    if let Some(token) = &args.token {
        builder = builder.bearer_auth(token);
    }
    builder.finish()
}

/// Registers (or replaces) the benchmark rules.
fn setup_rules(args: &LoadArgs) -> anyhow::Result<()> {
    let args = args.clone();
    actix_web::rt::System::new().block_on(async move {
        let client = client(&args, 1);
        for (id, yaml) in RULES {
            let url = format!("{}/v1/rules/{id}", args.url);
            let mut response = client
                .put(&url)
                .insert_header(("content-type", "application/yaml"))
                .send_body(yaml)
                .await
                .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", args.url))?;
            if response.status().as_u16() == 404 {
                // Read the answer first: it holds the only connection.
                let _ = response.body().await;
                response = client
                    .post(format!("{}/v1/rules", args.url))
                    .insert_header(("content-type", "application/yaml"))
                    .send_body(yaml)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", args.url))?;
            }
            if !response.status().is_success() {
                let body = response.body().await.unwrap_or_default();
                anyhow::bail!(
                    "registering {id} failed: {}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
        Ok(())
    })
}

/// One client thread: `connections` loops taking the next body until none is left.
fn send_loop(
    args: &LoadArgs,
    workload: &Workload,
    bodies: &Arc<Vec<Body>>,
    progress: &Arc<Progress>,
    probes: &Arc<DashMap<String, Instant>>,
    connections: usize,
    started: Instant,
) -> Histogram<u64> {
    let latencies = Arc::new(Mutex::new(histogram()));
    let content_type = if args.batch <= 1 {
        "application/json"
    } else {
        "application/x-ndjson"
    };
    let system = actix_web::rt::System::new();
    system.block_on(async {
        let client = client(args, connections);
        let url = format!("{}/v1/events", args.url);
        let loops = (0..connections).map(|_| {
            let (client, url, workload, bodies, progress, probes, latencies) = (
                client.clone(),
                url.clone(),
                workload.clone(),
                bodies.clone(),
                progress.clone(),
                probes.clone(),
                latencies.clone(),
            );
            let (rate, batch) = (args.rate, args.batch.max(1));
            async move {
                loop {
                    let index = progress.next_body.fetch_add(1, Ordering::AcqRel);
                    let Some(body) = bodies.get(index) else { break };
                    for before in workload.predecessors(index, batch) {
                        while !progress.settled[before].load(Ordering::Acquire) {
                            actix_web::rt::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    if rate > 0 {
                        let due =
                            started + Duration::from_secs_f64((index * batch) as f64 / rate as f64);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            actix_web::rt::time::sleep(wait).await;
                        }
                    }
                    loop {
                        let sent = Instant::now();
                        for probe in &body.probes {
                            probes.insert(probe.clone(), sent);
                        }
                        let result = client
                            .post(&url)
                            .insert_header(("content-type", content_type))
                            .send_body(body.text.clone())
                            .await;
                        match result {
                            Ok(mut response) => {
                                let status = response.status().as_u16();
                                let answer =
                                    response.body().limit(1 << 20).await.unwrap_or_default();
                                if status == 202 {
                                    let us = sent.elapsed().as_micros() as u64;
                                    let _ = latencies
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .record(us.max(1));
                                    progress.requests.fetch_add(1, Ordering::AcqRel);
                                    progress
                                        .events
                                        .fetch_add(body.events as u64, Ordering::AcqRel);
                                    progress.settled[index].store(true, Ordering::Release);
                                    break;
                                }
                                if status == 429 {
                                    progress.overloaded.fetch_add(1, Ordering::AcqRel);
                                    let wait = response
                                        .headers()
                                        .get("retry-after")
                                        .and_then(|v| v.to_str().ok())
                                        .and_then(|v| v.parse::<u64>().ok())
                                        .unwrap_or(1);
                                    actix_web::rt::time::sleep(Duration::from_millis(
                                        wait.min(5) * 100,
                                    ))
                                    .await;
                                    continue;
                                }
                                progress.errors.fetch_add(1, Ordering::AcqRel);
                                *progress
                                    .last_error
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner()) =
                                    Some(format!("{status}: {}", String::from_utf8_lossy(&answer)));
                                progress.settled[index].store(true, Ordering::Release);
                                break;
                            }
                            Err(e) => {
                                progress.errors.fetch_add(1, Ordering::AcqRel);
                                *progress
                                    .last_error
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                                progress.settled[index].store(true, Ordering::Release);
                                break;
                            }
                        }
                    }
                }
            }
        });
        futures_util::future::join_all(loops).await;
    });
    let h = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    h
}

/// The WebSocket subscriber measuring POST→alert latency.
fn spawn_subscriber(
    args: &LoadArgs,
    progress: &Arc<Progress>,
    probes: &Arc<DashMap<String, Instant>>,
    latency: &Arc<Mutex<Histogram<u64>>>,
    ready: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<()> {
    let (args, progress, probes, latency) = (
        args.clone(),
        progress.clone(),
        probes.clone(),
        latency.clone(),
    );
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let ws_url = args.url.replacen("http", "ws", 1);
            let mut ready = Some(ready);
            // NB: the server closes a subscriber that falls behind (DESIGN:
            // slow consumers are cut off, with the seq to resume from); the
            // subscriber resumes after the last alert it saw, so alerts are
            // still timed, late as the client really got them.
            let mut last_seq: Option<u64> = None;
            while !progress.done.load(Ordering::Acquire) {
                let mut url = format!("{ws_url}/v1/alerts/ws");
                let mut query = Vec::new();
                if let Some(token) = &args.token {
                    query.push(format!("access_token={token}"));
                }
                if let Some(seq) = last_seq {
                    query.push(format!("after={seq}"));
                }
                if !query.is_empty() {
                    url.push('?');
                    url.push_str(&query.join("&"));
                }
                let connected = awc::Client::new().ws(url).connect().await;
                let mut socket = match connected {
                    Ok((_, socket)) => socket,
                    Err(e) => {
                        eprintln!("cannot subscribe to alerts: {e}");
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                            return;
                        }
                        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                while !progress.done.load(Ordering::Acquire) {
                    let frame =
                        actix_web::rt::time::timeout(Duration::from_millis(200), socket.next())
                            .await;
                    let frame = match frame {
                        Err(_) => continue,
                        Ok(None) | Ok(Some(Err(_))) => break,
                        Ok(Some(Ok(frame))) => frame,
                    };
                    match frame {
                        awc::ws::Frame::Text(bytes) => {
                            let Ok(alert) = serde_json::from_slice::<serde_json::Value>(&bytes)
                            else {
                                continue;
                            };
                            if let Some(seq) = alert["seq"].as_u64() {
                                last_seq = Some(seq);
                            }
                            progress.alerts.fetch_add(1, Ordering::AcqRel);
                            let ids = alert["events"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|e| e["id"].as_str());
                            for id in ids {
                                if let Some((_, sent)) = probes.remove(id) {
                                    let us = sent.elapsed().as_micros() as u64;
                                    let _ = latency
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .record(us.max(1));
                                }
                            }
                        }
                        awc::ws::Frame::Ping(bytes) => {
                            let _ = socket.send(awc::ws::Message::Pong(bytes)).await;
                        }
                        awc::ws::Frame::Close(_) => {
                            progress.resubscribed.fetch_add(1, Ordering::AcqRel);
                            break;
                        }
                        _ => {}
                    }
                }
            }
        });
    })
}

/// Prints progress once a second: a live line on a terminal, plain lines otherwise.
fn spawn_display(
    progress: &Arc<Progress>,
    total: u64,
    started: Instant,
) -> std::thread::JoinHandle<()> {
    let progress = progress.clone();
    std::thread::spawn(move || {
        let terminal = std::io::stderr().is_terminal();
        let mut last = (Instant::now(), 0u64);
        while !progress.done.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(if terminal { 250 } else { 1000 }));
            let events = progress.events.load(Ordering::Acquire);
            let now = Instant::now();
            let rate =
                (events - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
            last = (now, events);
            let line = format!(
                "{:>6.1}s  {events:>11}/{total} events  {rate:>10.0} events/s  {} errors  {} alerts",
                started.elapsed().as_secs_f64(),
                progress.errors.load(Ordering::Acquire),
                progress.alerts.load(Ordering::Acquire),
            );
            if terminal {
                eprint!("\r{line}   ");
            } else {
                eprintln!("{line}");
            }
            if events >= total {
                break;
            }
        }
        if terminal {
            eprintln!();
        }
    })
}
