//! Events per second through the pattern engine alone (no actors, no disk):
//! one benchmark per pattern kind and one for a mixed three-rule set over
//! 100,000 keys, each key's state in a `HashMap<String, KeyState>` (with
//! the Fx hash, as a registry that trusts its keys would use) as an entity
//! registry would hold it.
//!
//! The rules are the example files `patterns/brute-force-login.yaml` (a
//! sequence), `patterns/cart-abandoned.yaml` (an absence) and
//! `patterns/card-velocity.yaml` (a sliding threshold). The stream is one
//! hour of a shop's traffic, in time order, keys interleaved: most accounts
//! log in, browse, pay by card and check out; a share of them complete each
//! pattern (a brute-forced login, an abandoned cart, a burst of card
//! authorizations) or come close without completing it. One pass feeds
//! every event, then advances every entity to the end of the hour (the
//! end-of-input mark, which fires the abandoned carts' deadlines).
//! `mixed_lookups_only` times just the `HashMap` lookups of the mixed
//! stream, the part of each pass that is the registry's, not the engine's.
//!
//! Run with `cargo bench --bench engine`. On a shared machine, set
//! `ENGINE_BENCH_CLOCK=cpu` to time the timed region with this thread's CPU
//! time instead of the wall clock: time the core spent on other processes
//! is then left out (their cache pollution is not).

use rustc_hash::FxHashMap as HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cepheus::engine::{Engine, EngineConfig, KeyState, RuleSet};
use cepheus::event::Event;
use cepheus::rules::{self, Format, Rule, RuleLimits};
use cepheus::time::Timestamp;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use serde_json::{json, Map, Value};

// The allocator the server runs with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: usize = 100_000;
/// 2026-03-02T00:00:00Z.
const T0: i64 = 1_772_409_600_000;
const HOUR_MS: i64 = 3_600_000;

const SEQUENCE: &str = include_str!("../patterns/brute-force-login.yaml");
const ABSENCE: &str = include_str!("../patterns/cart-abandoned.yaml");
const THRESHOLD: &str = include_str!("../patterns/card-velocity.yaml");

fn rule(yaml: &str) -> Arc<Rule> {
    Arc::new(
        rules::load(yaml, Format::Yaml, 1, &RuleLimits::default()).expect("the example rule loads"),
    )
}

/// A small deterministic generator (xorshift64*), so every run sees the
/// same stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn data(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// One hour of traffic over `KEYS` accounts, sorted by time.
fn stream() -> Vec<Arc<Event>> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut events: Vec<Event> = Vec::with_capacity(KEYS * 8);
    for k in 0..KEYS {
        let key = format!("acct-{k:06}");
        // Each account starts somewhere in the first 50 minutes.
        let start = T0 + rng.below(50 * 60_000) as i64;
        let ip = format!(
            "10.{}.{}.{}",
            rng.below(256),
            rng.below(256),
            rng.below(256)
        );
        let mut push = |offset_s: i64, event_type: &str, payload: Value| {
            events.push(Event {
                id: None,
                key: key.clone(),
                event_type: event_type.to_owned(),
                time: Timestamp(start + offset_s * 1000),
                data: data(payload),
            });
        };
        let login = json!({"ip": ip, "device": "web", "user_agent": "Mozilla/5.0"});
        let page = |p: &str| json!({"page": p, "referrer": "/"});
        let card = |m: u64| json!({"merchant": format!("merchant-{m}"), "amount": 19.99, "currency": "EUR"});
        let cart = |s: u64| json!({"sku": format!("SKU-{s}"), "price": 24.5, "quantity": 1});
        match rng.below(100) {
            // Ordinary session: log in, browse, buy, pay by card.
            0..=59 => {
                push(0, "login_success", login.clone());
                push(15, "page_view", page("/products"));
                push(40, "cart_item_added", cart(rng.below(5000)));
                push(70, "page_view", page("/cart"));
                push(95, "cart_item_added", cart(rng.below(5000)));
                push(
                    130,
                    "checkout_completed",
                    json!({"order": format!("o-{k}"), "total": 49.0}),
                );
                push(135, "card_authorization", card(rng.below(500)));
                push(600, "card_authorization", card(rng.below(500)));
            }
            // Brute-forced login (the sequence fires).
            60..=64 => {
                for i in 0..4 {
                    push(
                        i * 20,
                        "login_failed",
                        json!({"ip": "203.0.113.9", "reason": "bad_password"}),
                    );
                }
                push(
                    80,
                    "login_success",
                    json!({"ip": "203.0.113.9", "device": "curl"}),
                );
                push(100, "page_view", page("/account"));
            }
            // Two typos, then in (the sequence does not fire).
            65..=74 => {
                push(0, "login_failed", login.clone());
                push(8, "login_failed", login.clone());
                push(15, "login_success", login.clone());
                push(30, "page_view", page("/orders"));
                push(60, "page_view", page("/orders/1"));
            }
            // Abandoned cart (the absence fires at the end-of-input mark).
            75..=84 => {
                push(0, "login_success", login.clone());
                push(20, "cart_item_added", cart(rng.below(5000)));
                push(50, "page_view", page("/shipping"));
                push(90, "cart_item_added", cart(rng.below(5000)));
            }
            // Card authorization burst (the threshold fires).
            85..=89 => {
                for i in 0..6 {
                    push(i * 45, "card_authorization", card(rng.below(500)));
                }
            }
            // Browsing only: no rule cares about these events.
            _ => {
                for (i, p) in ["/", "/products", "/products/42", "/reviews", "/"]
                    .iter()
                    .enumerate()
                {
                    push(i as i64 * 20, "page_view", page(p));
                }
            }
        }
    }
    // NB: a stable sort by time keeps each key's events in order.
    events.sort_by_key(|e| e.time);
    // Copied in stream order, so that events sit in memory in the order they
    // are read, as freshly decoded events do in the service (generated per
    // key, each event would be a cache miss of the harness, not the engine).
    events.iter().map(|e| Arc::new(e.clone())).collect()
}

/// A clock for the timed region: the wall clock, or with
/// `ENGINE_BENCH_CLOCK=cpu` this thread's CPU time.
#[derive(Clone, Copy)]
struct Clock {
    cpu: bool,
}

impl Clock {
    fn from_env() -> Clock {
        Clock {
            cpu: std::env::var("ENGINE_BENCH_CLOCK").is_ok_and(|v| v == "cpu"),
        }
    }

    fn start(self) -> (Instant, Duration) {
        (
            Instant::now(),
            if self.cpu {
                thread_cpu_time()
            } else {
                Duration::ZERO
            },
        )
    }

    fn elapsed(self, (wall, cpu): (Instant, Duration)) -> Duration {
        if self.cpu {
            thread_cpu_time().saturating_sub(cpu)
        } else {
            wall.elapsed()
        }
    }
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write into; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is available on Linux");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The engine for `rules` and the events of `all` that those rules read.
struct Workload {
    engine: Engine,
    events: Vec<Arc<Event>>,
    keys: Vec<String>,
}

impl Workload {
    fn new(rules: &[&str], types: Option<&[&str]>, all: &[Arc<Event>]) -> Workload {
        let rules: Vec<Arc<Rule>> = rules.iter().map(|r| rule(r)).collect();
        let events: Vec<Arc<Event>> = all
            .iter()
            .filter(|e| types.is_none_or(|t| t.contains(&e.event_type.as_str())))
            .cloned()
            .collect();
        let mut keys: Vec<String> = events.iter().map(|e| e.key.clone()).collect();
        keys.sort();
        keys.dedup();
        Workload {
            engine: Engine::new(Arc::new(RuleSet::new(rules)), EngineConfig::default()),
            events,
            keys,
        }
    }

    /// Fresh, empty states for every key (built outside the timed region).
    fn fresh_states(&self) -> HashMap<String, KeyState> {
        let mut states = HashMap::with_capacity_and_hasher(self.keys.len(), Default::default());
        for key in &self.keys {
            states.insert(key.clone(), KeyState::new(key.as_str()));
        }
        states
    }

    /// The registry's share of a pass: finding each event's state (and
    /// touching it), with no engine call — the baseline to subtract.
    fn lookups_only(&self, states: &mut HashMap<String, KeyState>) -> u64 {
        let mut touched = 0;
        for event in &self.events {
            let state = states.get_mut(&event.key).expect("every key has a state");
            state.events_seen += 1;
            touched += state.events_seen;
        }
        touched
    }

    /// One pass: every event, then every entity advanced to the end of the
    /// hour. Returns the number of alerts.
    fn pass(&self, states: &mut HashMap<String, KeyState>) -> usize {
        let mut alerts = 0;
        for event in &self.events {
            let state = states.get_mut(&event.key).expect("every key has a state");
            alerts += self.engine.on_event(state, event).alerts.len();
        }
        let end = Timestamp(T0 + HOUR_MS);
        for state in states.values_mut() {
            alerts += self.engine.advance_to(state, end).len();
        }
        alerts
    }
}

fn engine_throughput(c: &mut Criterion) {
    let clock = Clock::from_env();
    let all = stream();
    let workloads = [
        (
            "sequence",
            Workload::new(&[SEQUENCE], Some(&["login_failed", "login_success"]), &all),
        ),
        (
            "absence",
            Workload::new(
                &[ABSENCE],
                Some(&["cart_item_added", "checkout_completed"]),
                &all,
            ),
        ),
        (
            "threshold",
            Workload::new(&[THRESHOLD], Some(&["card_authorization"]), &all),
        ),
        (
            "mixed_3_rules",
            Workload::new(&[SEQUENCE, ABSENCE, THRESHOLD], None, &all),
        ),
    ];

    let mut group = c.benchmark_group("engine");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for (name, workload) in &workloads {
        let mut check = workload.fresh_states();
        eprintln!(
            "engine/{name}: {} events over {} keys, {} alerts per pass",
            workload.events.len(),
            workload.keys.len(),
            workload.pass(&mut check)
        );
        group.throughput(Throughput::Elements(workload.events.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let mut states = workload.fresh_states();
                    let start = clock.start();
                    black_box(workload.pass(&mut states));
                    timed += clock.elapsed(start);
                    drop(states);
                }
                timed
            })
        });
    }
    // The HashMap<String, KeyState> lookups alone, for the mixed stream.
    let (_, mixed) = &workloads[3];
    group.throughput(Throughput::Elements(mixed.events.len() as u64));
    group.bench_function(BenchmarkId::from_parameter("mixed_lookups_only"), |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let mut states = mixed.fresh_states();
                let start = clock.start();
                black_box(mixed.lookups_only(&mut states));
                timed += clock.elapsed(start);
                drop(states);
            }
            timed
        })
    });
    group.finish();
}

criterion_group!(benches, engine_throughput);
criterion_main!(benches);
