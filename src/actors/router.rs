//! The router: finds the actor of a key, starting it if needed, and
//! delivers messages to it in the order they are given.
//!
//! # Invariants
//! - Every message goes through [`Router::deliver`] (or `deliver_if_live`),
//!   which counts it in the handle's `pending` before sending and the actor
//!   uncounts it after handling. An actor leaves the map only when its
//!   `pending` is zero, under the map's shard lock, so no message is ever
//!   sent to an actor that stopped (which would drop it silently).
//! - Entities are placed on arbiter `partition(key) mod arbiters`, so one
//!   partition's entities share a thread.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix::{Actor, Addr, ArbiterHandle};
use dashmap::DashMap;

use crate::actors::entity::{Delivery, EntityActor, EntityMsg};
use crate::actors::Runtime;
use crate::event::Event;
use crate::journal::EventSink;
use crate::store::entities::partition_of;

/// A live entity's actor and what the router shares with it.
#[derive(Clone)]
pub struct EntityHandle {
    addr: Addr<EntityActor>,
    liveness: Arc<Liveness>,
    id: u64,
}

/// What the router and an entity's actor both read and write about the actor.
#[derive(Debug, Default)]
pub struct Liveness {
    /// Messages sent and not yet handled.
    pending: AtomicU32,
    /// When the actor last did work, in [`monotonic_ms`]. The passivation
    /// sweep reads it so that it asks only actors idle long enough, not
    /// every live one.
    last_active_ms: AtomicU64,
}

impl Liveness {
    /// Records that the actor did work now.
    pub fn mark_active(&self) {
        self.last_active_ms.store(monotonic_ms(), Ordering::Relaxed);
    }

    /// How long the actor has done no work.
    pub fn idle_for(&self) -> Duration {
        Duration::from_millis(
            monotonic_ms().saturating_sub(self.last_active_ms.load(Ordering::Relaxed)),
        )
    }
}

/// Milliseconds on a monotonic clock that starts with the process.
fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The map of live entities.
pub struct Router {
    entities: DashMap<String, EntityHandle>,
    arbiters: OnceLock<Vec<ArbiterHandle>>,
    arbiter_count: usize,
    partitions: u16,
    next_id: AtomicU64,
    /// Events handed to actors and not yet evaluated.
    inflight_events: AtomicI64,
    /// Keys that received anything since the last checkpoint began.
    touched: Mutex<Touched>,
}

/// Keys to snapshot at the next checkpoint.
#[derive(Debug, Default)]
pub struct Touched {
    /// Keys that changed.
    pub keys: HashSet<String>,
    /// Keys whose last snapshot hand-over was not written: ask for a full one.
    pub force: HashSet<String>,
}

impl Router {
    pub(crate) fn new(arbiters: usize, partitions: u16) -> Router {
        Router {
            entities: DashMap::new(),
            arbiters: OnceLock::new(),
            arbiter_count: arbiters.max(1),
            partitions,
            next_id: AtomicU64::new(1),
            inflight_events: AtomicI64::new(0),
            touched: Mutex::new(Touched::default()),
        }
    }

    /// Starts the arbiters (needs a running actix system).
    pub(crate) fn start_arbiters(&self) {
        self.arbiters.get_or_init(|| {
            (0..self.arbiter_count)
                .map(|_| actix::Arbiter::new().handle())
                .collect()
        });
    }

    /// Delivers `msg` to `key`'s actor, starting the actor if it is not live.
    /// `events` is how many events the message carries (for backpressure).
    pub fn deliver(&self, runtime: &Arc<Runtime>, key: &str, msg: EntityMsg, events: usize) {
        self.mark_touched(key);
        self.send(runtime, key, msg, events);
    }

    /// As [`Router::deliver`], for a key the caller already marked touched.
    pub(crate) fn send(&self, runtime: &Arc<Runtime>, key: &str, msg: EntityMsg, events: usize) {
        if events > 0 {
            self.inflight_events
                .fetch_add(events as i64, Ordering::AcqRel);
        }
        let handle = match self.entities.get(key) {
            Some(h) => h,
            None => self
                .entities
                .entry(key.to_owned())
                .or_insert_with(|| self.spawn(runtime, key))
                .downgrade(),
        };
        handle.liveness.pending.fetch_add(1, Ordering::AcqRel);
        handle.addr.do_send(msg);
    }

    /// Delivers `msg` only if `key`'s actor is live; returns whether it was.
    pub fn deliver_if_live(&self, key: &str, msg: EntityMsg) -> bool {
        match self.entities.get(key) {
            Some(handle) => {
                handle.liveness.pending.fetch_add(1, Ordering::AcqRel);
                handle.addr.do_send(msg);
                true
            }
            None => false,
        }
    }

    /// Called by an actor after handling a message carrying `events` events.
    pub(crate) fn handled(&self, liveness: &Liveness, events: usize) {
        liveness.pending.fetch_sub(1, Ordering::AcqRel);
        if events > 0 {
            self.inflight_events
                .fetch_sub(events as i64, Ordering::AcqRel);
        }
    }

    /// Removes the actor `id` of `key` if it has no pending message; returns
    /// whether it did (and the actor must then stop).
    pub(crate) fn remove_if_idle(&self, key: &str, id: u64) -> bool {
        self.entities
            .remove_if(key, |_, h| {
                h.id == id && h.liveness.pending.load(Ordering::Acquire) == 0
            })
            .is_some()
    }

    /// Removes the actor `id` of `key` whatever is pending (the actor
    /// leaves: its partition moved away).
    pub(crate) fn remove(&self, key: &str, id: u64) {
        // NB: no event of its partition is routed while it leaves (the
        // consumer thread waits for the revocation), so its mailbox holds
        // at most timer ticks and reads, which are dropped with it.
        self.entities.remove_if(key, |_, h| h.id == id);
    }

    /// Keys of every live entity.
    pub fn live_keys(&self) -> Vec<String> {
        self.entities.iter().map(|e| e.key().clone()).collect()
    }

    /// Number of live entities.
    pub fn live_count(&self) -> usize {
        self.entities.len()
    }

    /// Whether `key` is live.
    pub fn is_live(&self, key: &str) -> bool {
        self.entities.contains_key(key)
    }

    /// Events accepted and not yet evaluated.
    pub fn inflight_events(&self) -> usize {
        self.inflight_events.load(Ordering::Acquire).max(0) as usize
    }

    /// Messages waiting in entity mailboxes, summed.
    pub fn mailbox_depth(&self) -> u64 {
        self.entities
            .iter()
            .map(|e| u64::from(e.liveness.pending.load(Ordering::Relaxed)))
            .sum()
    }

    /// Keys of the live entities that did no work for at least `idle` and
    /// have no message waiting.
    pub(crate) fn idle_keys(&self, idle: Duration) -> Vec<String> {
        self.entities
            .iter()
            .filter(|e| {
                e.liveness.pending.load(Ordering::Relaxed) == 0 && e.liveness.idle_for() >= idle
            })
            .map(|e| e.key().clone())
            .collect()
    }

    /// Records that `key` changed since the last checkpoint began.
    pub fn mark_touched(&self, key: &str) {
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        if !touched.keys.contains(key) {
            touched.keys.insert(key.to_owned());
        }
    }

    /// Records that each of `keys` changed, taking the lock once.
    pub fn mark_touched_many<'k>(&self, keys: impl Iterator<Item = &'k str>) {
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            if !touched.keys.contains(key) {
                touched.keys.insert(key.to_owned());
            }
        }
    }

    /// Takes the keys touched since the last call.
    pub(crate) fn take_touched(&self) -> Touched {
        std::mem::take(&mut *self.touched.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts back keys whose snapshots could not be written, to be asked for
    /// a full snapshot next time.
    pub(crate) fn retouch(&self, failed: Touched) {
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        for key in failed.keys {
            touched.force.insert(key.clone());
            touched.keys.insert(key);
        }
    }

    fn spawn(&self, runtime: &Arc<Runtime>, key: &str) -> EntityHandle {
        let liveness = Arc::new(Liveness::default());
        liveness.mark_active();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let arbiters = self
            .arbiters
            .get()
            .expect("arbiters start before any entity");
        let arbiter = &arbiters[usize::from(partition_of(key, self.partitions)) % arbiters.len()];
        let actor = EntityActor::new(
            key.to_owned(),
            Arc::clone(runtime),
            Arc::clone(&liveness),
            id,
        );
        let addr = EntityActor::start_in_arbiter(arbiter, move |_| actor);
        EntityHandle { addr, liveness, id }
    }
}

/// Routing of accepted events: each key gets one message with its events in
/// journal order, its own key and the keys `partition_by` gives. The
/// journal calls it under its sequencer (and the replay, in journal order).
pub struct Routing<'r> {
    runtime: &'r Arc<Runtime>,
}

impl<'r> Routing<'r> {
    /// Routing to `runtime`'s entities.
    pub fn new(runtime: &'r Arc<Runtime>) -> Self {
        Routing { runtime }
    }
}

/// [`Routing`] that owns its runtime: the sink a journal with its own
/// consumer thread keeps ([`crate::journal::Journal::attach`]).
pub struct SharedRouting {
    runtime: Arc<Runtime>,
}

impl SharedRouting {
    /// Routing to `runtime`'s entities.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        SharedRouting { runtime }
    }
}

impl EventSink for SharedRouting {
    fn accepted(&self, lsn: u64, first: u32, events: &[Arc<Event>]) {
        Routing::new(&self.runtime).accepted(lsn, first, events);
    }

    fn accepted_own(&self, lsn: u64, first: u32, events: &[Arc<Event>]) {
        Routing::new(&self.runtime).accepted_own(lsn, first, events);
    }

    fn partition_routes(&self, event: &Event) -> Vec<String> {
        Routing::new(&self.runtime).partition_routes(event)
    }

    fn repartitioned(&self, key: &str, source: (u16, u64), event: Arc<Event>) {
        Routing::new(&self.runtime).repartitioned(key, source, event);
    }
}

impl EventSink for Routing<'_> {
    fn accepted(&self, lsn: u64, first: u32, events: &[Arc<Event>]) {
        self.route(lsn, first, events, true);
    }

    fn accepted_own(&self, lsn: u64, first: u32, events: &[Arc<Event>]) {
        self.route(lsn, first, events, false);
    }

    fn partition_routes(&self, event: &Event) -> Vec<String> {
        self.runtime.engine().partition_routes(event)
    }

    fn repartitioned(&self, key: &str, source: (u16, u64), event: Arc<Event>) {
        // NB: the place only names the delivery (a late event's dead
        // letter); `source` decides whether the entity applied it.
        let delivery = Delivery {
            lsn: source.1 + 1,
            index: u32::from(source.0) + 1,
            event,
            source: Some(source),
        };
        let now = std::time::Instant::now();
        self.runtime.router.deliver(
            self.runtime,
            key,
            EntityMsg::Deliver(vec![delivery], now),
            1,
        );
    }
}

impl Routing<'_> {
    /// Routes each event to its own key and, with `others`, to the keys
    /// `partition_by` rules give it.
    fn route(&self, lsn: u64, first: u32, events: &[Arc<Event>], others: bool) {
        use std::borrow::Cow;
        let engine = self.runtime.engine();
        // Groups in order of first appearance; keys borrowed from the events
        // where they are the events' own (the common case: no copy).
        let mut groups: Vec<(Cow<'_, str>, Vec<Delivery>)> = Vec::new();
        let mut group_of: rustc_hash::FxHashMap<Cow<'_, str>, usize> = Default::default();
        for (i, event) in events.iter().enumerate() {
            let own = std::iter::once(Cow::Borrowed(event.key.as_str()));
            let derived = if others {
                engine.partition_routes(event)
            } else {
                Vec::new()
            };
            for key in own.chain(derived.into_iter().map(Cow::Owned)) {
                let delivery = Delivery {
                    lsn,
                    index: first + i as u32,
                    event: Arc::clone(event),
                    source: None,
                };
                match group_of.get(&key) {
                    Some(&g) => groups[g].1.push(delivery),
                    None => {
                        group_of.insert(key.clone(), groups.len());
                        groups.push((key, vec![delivery]));
                    }
                }
            }
        }
        let router = &self.runtime.router;
        router.mark_touched_many(groups.iter().map(|(key, _)| key.as_ref()));
        let now = std::time::Instant::now();
        for (key, deliveries) in groups {
            let n = deliveries.len();
            router.send(self.runtime, &key, EntityMsg::Deliver(deliveries, now), n);
        }
    }
}
