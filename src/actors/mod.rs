//! The actor layer: one actix actor per live entity, the router that finds
//! (or starts) it, the timer service that wakes it, checkpoints that persist
//! it, and the alert hub that publishes what it finds.
//!
//! [`Runtime`] is the shared state every part holds an `Arc` of; it is the
//! only place that reads the wall clock ([`wall_now`]).

pub mod alerts;
pub mod checkpoint;
pub mod entity;
mod maintenance;
mod passivation;
pub mod router;
pub mod timers;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::engine::{Engine, EngineConfig, RuleSet};
use crate::store::Store;
use crate::time::Timestamp;

pub use alerts::AlertHub;
pub use entity::{EntityActor, EntityMsg};
pub use router::Router;
pub use timers::TimerService;

/// Name of the clock floor in the store's meta tree.
const CLOCK_FLOOR: &str = "clock_floor";

/// Settings of the actor layer.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Number of arbiters (threads) entity actors are spread over.
    pub arbiters: usize,
    /// An entity with no message for this long is passivated.
    pub passivate_after: std::time::Duration,
    /// How often the timer service looks for due timers.
    pub timer_tick: std::time::Duration,
    /// How often touched entities are snapshotted and the checkpoint moved.
    pub checkpoint_interval: std::time::Duration,
    /// Most events accepted but not yet evaluated, across all entities;
    /// ingest answers 429 beyond it.
    pub max_inflight_events: usize,
    /// Most live (in-memory) entities; ingest answers 429 at it, until
    /// passivation makes room.
    pub max_live_entities: usize,
    /// Capacity of the live alert broadcast (per-subscriber backlog).
    pub alert_backlog: usize,
    /// Upkeep of the store.
    pub upkeep: Upkeep,
}

/// Background upkeep settings.
#[derive(Debug, Clone)]
pub struct Upkeep {
    /// How often upkeep runs.
    pub every: std::time::Duration,
    /// Keep accepted events this long.
    pub retention: crate::time::Duration,
    /// Keep at most this many bytes of event log.
    pub max_log_bytes: u64,
    /// Forget event ids older than this.
    pub dedup_horizon: crate::time::Duration,
}

impl Default for Upkeep {
    fn default() -> Self {
        Upkeep {
            every: std::time::Duration::from_secs(60),
            retention: crate::time::Duration::from_secs(7 * 24 * 3600),
            max_log_bytes: 10 * 1024 * 1024 * 1024,
            dedup_horizon: crate::time::Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            arbiters: std::thread::available_parallelism().map_or(2, |n| n.get()),
            passivate_after: std::time::Duration::from_secs(60),
            timer_tick: std::time::Duration::from_millis(100),
            checkpoint_interval: std::time::Duration::from_secs(5),
            max_inflight_events: 1_000_000,
            max_live_entities: 4_000_000,
            alert_backlog: 1024,
            upkeep: Upkeep::default(),
        }
    }
}

/// Everything the actor layer shares.
pub struct Runtime {
    /// The store.
    pub store: Store,
    /// Routes messages to entity actors.
    pub router: Router,
    /// Wakes entities whose timers are due.
    pub timers: TimerService,
    /// Records and publishes alerts.
    pub alerts: AlertHub,
    /// Settings.
    pub config: RuntimeConfig,
    engine: RwLock<Arc<Engine>>,
    engine_config: EngineConfig,
    /// Held while a batch is appended to the log and routed, so log order
    /// is delivery order for every key (DESIGN §7: per-key order is the
    /// order of acceptance). Holds the last acceptance time: events sent
    /// without `time` get the acceptance time, taken under this lock and
    /// never going back, so their times follow log order.
    pub sequencer: Mutex<Timestamp>,
    /// Concurrent requests' events, appended together under the sequencer.
    pub appender: crate::ingest::append::GroupAppend,
    ready: AtomicBool,
    /// True until the log after the last checkpoint has been routed (see
    /// [`checkpoint::replay`]): appends then leave routing to the replay.
    replaying: AtomicBool,
    engine_generation: std::sync::atomic::AtomicU64,
    /// The clock floor set by `POST /v1/clock` (ms; `i64::MIN` when none):
    /// a passivated entity moves its clock to it when it wakes.
    clock_floor: AtomicI64,
    /// Held for a whole checkpoint round: two rounds at once could record
    /// the later one's position before the earlier one's snapshots are
    /// written.
    pub(crate) checkpoint_round: tokio::sync::Mutex<()>,
}

impl Runtime {
    /// A runtime over `store` evaluating `rules`. Starts no tasks; see
    /// [`Runtime::start`].
    pub fn new(
        store: Store,
        rules: RuleSet,
        engine_config: EngineConfig,
        config: RuntimeConfig,
    ) -> Arc<Runtime> {
        let engine = Engine::new(Arc::new(rules), engine_config.clone());
        let floor = store
            .meta_u64(CLOCK_FLOOR)
            .ok()
            .flatten()
            .map_or(i64::MIN, |f| f as i64);
        Arc::new(Runtime {
            router: Router::new(config.arbiters, store.partitions()),
            timers: TimerService::new(),
            alerts: AlertHub::new(store.clone(), config.alert_backlog),
            store,
            config,
            engine: RwLock::new(Arc::new(engine)),
            engine_config,
            sequencer: Mutex::new(Timestamp(i64::MIN)),
            appender: Default::default(),
            ready: AtomicBool::new(false),
            replaying: AtomicBool::new(true),
            engine_generation: std::sync::atomic::AtomicU64::new(0),
            clock_floor: AtomicI64::new(floor),
            checkpoint_round: tokio::sync::Mutex::new(()),
        })
    }

    /// The clock floor set by `POST /v1/clock`, if any.
    pub fn clock_floor(&self) -> Option<Timestamp> {
        match self.clock_floor.load(Ordering::Acquire) {
            i64::MIN => None,
            f => Some(Timestamp(f)),
        }
    }

    /// Raises the clock floor in memory: entities woken from now on move
    /// their clocks to it. [`Runtime::persist_clock_floor`] makes it durable.
    pub fn raise_clock_floor(&self, to: Timestamp) {
        self.clock_floor.fetch_max(to.millis(), Ordering::AcqRel);
    }

    /// Writes the clock floor to the store (durable with the next flush).
    ///
    /// NB: only once a checkpoint covers every event logged before the floor
    /// was raised. An entity restored after a restart moves its clock to the
    /// floor at once, so events from before the floor must not be replayed
    /// to it afterwards (they would be late, though they were not).
    pub fn persist_clock_floor(&self) -> crate::store::StoreResult<()> {
        match self.clock_floor() {
            Some(floor) => self.store.set_meta_u64(CLOCK_FLOOR, floor.millis() as u64),
            None => Ok(()),
        }
    }

    /// The engine with the current rules.
    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Swaps in a new rule set. Entities re-align on their next message:
    /// live ones at once, passivated ones when they wake.
    pub fn set_rules(&self, rules: RuleSet) {
        let engine = Arc::new(Engine::new(Arc::new(rules), self.engine_config.clone()));
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) = engine;
        self.engine_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes each time the rules change, so actors can keep their own
    /// handle on the engine and refresh it only then (cloning the shared
    /// handle on every message would make every core write one cache line).
    pub fn engine_generation(&self) -> u64 {
        self.engine_generation.load(Ordering::Acquire)
    }

    /// True once recovery has finished and ingest may proceed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks recovery finished.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// True while the log after the last checkpoint is still being routed.
    pub fn is_replaying(&self) -> bool {
        self.replaying.load(Ordering::Acquire)
    }

    /// Starts serving: remembers the ids of the newest log records, starts
    /// the alert publisher, log upkeep and passivation, and is ready; the
    /// replay of the log after the last checkpoint runs on a thread of its
    /// own, and the timers and checkpoints start when it is done.
    ///
    /// NB: serving during the replay is safe because appends leave routing
    /// to it until it has routed the last record (under the sequencer lock),
    /// so every key still receives its events in log order. Timers,
    /// checkpoints and `POST /v1/clock` wait: a timer or a clock advance
    /// reaching an entity before its replayed events could fire an alert
    /// those events cancel, and a checkpoint would record a position the
    /// entities have not seen.
    pub async fn start(self: &Arc<Self>) -> crate::store::StoreResult<()> {
        self.router.start_arbiters();
        checkpoint::remember_newest_ids(self)?;
        actix::spawn(alerts::run_publisher(Arc::clone(self)));
        actix::spawn(maintenance::run(Arc::clone(self)));
        // NB: passivation runs during the replay, which waits for it at the
        // live-entity limit.
        actix::Arbiter::new().spawn(passivation::run(Arc::clone(self)));
        // NB: ready before the replay starts, so a replay that fails at
        // once cannot be overtaken by this and leave cepheus "ready".
        self.set_ready();
        let runtime = Arc::clone(self);
        let system = actix::Arbiter::current();
        actix::Arbiter::new().spawn(async move {
            // The replay's own thread ends with it.
            let _stop = StopArbiterOnDrop;
            let started = std::time::Instant::now();
            match checkpoint::replay(&runtime) {
                Ok(events) => tracing::info!(
                    events,
                    seconds = started.elapsed().as_secs_f64(),
                    "replayed the event log"
                ),
                Err(e) => {
                    // Ingest stays refused (503): what the log holds past
                    // the checkpoint cannot reach the entities.
                    tracing::error!(error = %e, "cannot replay the event log; restart cepheus");
                    runtime.ready.store(false, Ordering::Release);
                    return;
                }
            }
            system.spawn(timers::run(Arc::clone(&runtime)));
            // NB: the store writers get threads of their own. On the system
            // thread a checkpoint round's snapshot writes held up the alert
            // publisher (alerts waited hundreds of milliseconds), and behind
            // rounds of millions of snapshots the sweep passivated nothing
            // for minutes while new entities kept arriving.
            actix::Arbiter::new().spawn(checkpoint::run(runtime));
        });
        Ok(())
    }
}

/// Stops the current arbiter when dropped: a one-off task's thread ends
/// with the task, however it returns.
struct StopArbiterOnDrop;

impl Drop for StopArbiterOnDrop {
    fn drop(&mut self) {
        actix::Arbiter::current().stop();
    }
}

pub use crate::time::wall_now;
