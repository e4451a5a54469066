//! The actor layer: one actix actor per live entity, the router that finds
//! (or starts) it, the timer service that wakes it, checkpoints that persist
//! it, and the alert hub that publishes what it finds.
//!
//! [`Runtime`] is the shared state every part holds an `Arc` of; it is the
//! only place that reads the wall clock ([`wall_now`]).

pub mod alerts;
pub mod checkpoint;
mod clock_floor;
mod engine_handle;
pub mod entity;
mod handoff;
pub mod history;
mod maintenance;
mod passivation;
pub mod router;
pub mod timers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::engine::{Engine, EngineConfig, RuleSet};
use crate::journal::{DurableGroup, Journal};
use crate::store::Store;
use crate::time::Timestamp;

pub use alerts::AlertHub;
pub use clock_floor::ClockFloor;
pub use engine_handle::EngineHandle;
pub use entity::{EntityActor, EntityMsg};
pub use router::{Router, Routing};
pub use timers::TimerService;

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
    /// Keep alerts and dead letters this long.
    pub alert_retention: crate::time::Duration,
}

impl Default for Upkeep {
    fn default() -> Self {
        Upkeep {
            every: std::time::Duration::from_secs(60),
            retention: crate::time::Duration::from_secs(7 * 24 * 3600),
            max_log_bytes: 10 * 1024 * 1024 * 1024,
            alert_retention: crate::time::Duration::from_secs(30 * 24 * 3600),
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

/// Everything the actor layer shares: parts with one job each.
pub struct Runtime {
    /// Entity state, rules, alert and dead-letter views (sled).
    pub store: Store,
    /// What was accepted, in order; durable before anyone is told.
    pub journal: Arc<dyn Journal>,
    /// Routes messages to entity actors.
    pub router: Router,
    /// Wakes entities whose timers are due.
    pub timers: TimerService,
    /// Journals, publishes and stores alerts and dead letters.
    pub alerts: AlertHub,
    /// Settings.
    pub config: RuntimeConfig,
    /// The engine with the current rules.
    pub engine: EngineHandle,
    /// The clock floor set by `POST /v1/clock`.
    pub clock: ClockFloor,
    /// The last hour of events and alerts, for the live page.
    pub history: history::History,
    ready: AtomicBool,
    /// Held for a whole checkpoint round: two rounds at once could record
    /// the later one's position before the earlier one's snapshots are
    /// written.
    pub(crate) checkpoint_round: tokio::sync::Mutex<()>,
}

impl Runtime {
    /// A runtime over `store` and `journal` evaluating `rules`. Starts no
    /// tasks; see [`Runtime::start`].
    pub fn new(
        store: Store,
        journal: Arc<dyn Journal>,
        rules: RuleSet,
        engine_config: EngineConfig,
        config: RuntimeConfig,
    ) -> Arc<Runtime> {
        Arc::new(Runtime {
            router: Router::new(config.arbiters, store.partitions()),
            timers: TimerService::new(),
            alerts: AlertHub::new(store.clone(), Arc::clone(&journal), config.alert_backlog),
            clock: ClockFloor::open(&store),
            engine: EngineHandle::new(rules, engine_config),
            history: history::History::default(),
            store,
            journal,
            config,
            ready: AtomicBool::new(false),
            checkpoint_round: tokio::sync::Mutex::new(()),
        })
    }

    /// The engine with the current rules.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.current()
    }

    /// Swaps in a new rule set. Entities re-align on their next message:
    /// live ones at once, passivated ones when they wake.
    pub fn set_rules(&self, rules: RuleSet) {
        self.engine.set_rules(rules);
    }

    /// The clock floor set by `POST /v1/clock`, if any.
    pub fn clock_floor(&self) -> Option<Timestamp> {
        self.clock.get()
    }

    /// True once recovery has finished and ingest may proceed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// True while the journal after the last checkpoint is still being routed.
    pub fn is_replaying(&self) -> bool {
        self.journal.is_replaying()
    }

    /// Starts serving: brings the alert and dead-letter views up to the
    /// journal, starts their publisher, upkeep and passivation, and is
    /// ready; the replay of the journal after the last checkpoint runs on a
    /// thread of its own, and the timers and checkpoints start when it is
    /// done.
    ///
    /// NB: serving during the replay is safe because appends leave routing
    /// to it until it has caught up (under the journal's sequencer), so
    /// every key still receives its events in journal order. Timers,
    /// checkpoints and `POST /v1/clock` wait: a timer or a clock advance
    /// reaching an entity before its replayed events could fire an alert
    /// those events cancel, and a checkpoint would record a position the
    /// entities have not seen.
    pub async fn start(
        self: &Arc<Self>,
        durable_groups: std::sync::mpsc::Receiver<DurableGroup>,
    ) -> Result<(), crate::store::StoreError> {
        self.router.start_arbiters();
        let checkpoint = checkpoint::last_checkpoint(&self.store)?;
        self.alerts.catch_up(checkpoint)?;
        alerts::start_publisher(Arc::clone(self), durable_groups)?;
        actix::spawn(maintenance::run(Arc::clone(self)));
        // NB: passivation runs during the replay, which waits for it at the
        // live-entity limit.
        actix::Arbiter::new().spawn(passivation::run(Arc::clone(self)));
        if self.journal.keeps_changelog() {
            self.journal.hand_over(handoff::Handoff::start(self));
        }
        {
            let runtime = Arc::clone(self);
            self.journal.attach(
                Arc::new(router::SharedRouting::new(Arc::clone(self))),
                Arc::new(move || checkpoint::wait_for_room(&runtime)),
            );
        }
        self.journal.begin_replay();
        // NB: ready before the replay starts, so a replay that fails at
        // once cannot be overtaken by this and leave cepheus "ready".
        self.ready.store(true, Ordering::Release);
        let runtime = Arc::clone(self);
        let system = actix::Arbiter::current();
        actix::Arbiter::new().spawn(async move {
            // The replay's own thread ends with it.
            let _stop = StopArbiterOnDrop;
            let started = std::time::Instant::now();
            match checkpoint::replay(&runtime, checkpoint) {
                Ok(events) => tracing::info!(
                    events,
                    seconds = started.elapsed().as_secs_f64(),
                    "replayed the journal"
                ),
                Err(e) => {
                    // Ingest stays refused (503): what the journal holds
                    // past the checkpoint cannot reach the entities.
                    tracing::error!(error = %e, "cannot replay the journal; restart cepheus");
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
