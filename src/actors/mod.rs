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

    /// Starts the background tasks (timers, alert publisher, checkpoints) on
    /// the current actix system, then replays the log past the last
    /// checkpoint; ready when the replay has been routed.
    pub async fn start(self: &Arc<Self>) -> crate::store::StoreResult<u64> {
        self.router.start_arbiters();
        let replayed = checkpoint::replay(self)?;
        actix::spawn(timers::run(Arc::clone(self)));
        actix::spawn(alerts::run_publisher(Arc::clone(self)));
        actix::spawn(maintenance::run(Arc::clone(self)));
        // NB: the store writers get threads of their own. On the system
        // thread a checkpoint round's snapshot writes held up the alert
        // publisher (alerts waited hundreds of milliseconds), and behind
        // rounds of millions of snapshots the sweep passivated nothing for
        // minutes while new entities kept arriving.
        actix::Arbiter::new().spawn(checkpoint::run(Arc::clone(self)));
        actix::Arbiter::new().spawn(passivation::run(Arc::clone(self)));
        self.set_ready();
        Ok(replayed)
    }
}

/// The wall clock, in cepheus's time type. The only wall-clock read in
/// cepheus outside logging.
pub fn wall_now() -> Timestamp {
    Timestamp(chrono::Utc::now().timestamp_millis())
}
