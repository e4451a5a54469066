//! The timer service: wakes entities whose clocks reach a deadline.
//!
//! Live entities register their next due wall time here (in memory).
//! Passivated entities' timers are in the store's `timers` tree, written with
//! their snapshot; the service scans it for entries that fell due since its
//! last scan. Either way the entity gets a `Tick` with the wall time and
//! works out its own clock (DESIGN §4: between events an entity's clock runs
//! at wall-clock speed from where its last event set it).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::actors::entity::EntityMsg;
use crate::actors::{wall_now, Runtime};
use crate::time::Timestamp;

/// Due times of live entities.
pub struct TimerService {
    live: Mutex<BTreeSet<(Timestamp, String)>>,
    /// Scan the stored timers from the beginning again (a partition came
    /// back to this instance: its overdue timers were skipped meanwhile).
    rescan: AtomicBool,
}

impl TimerService {
    pub(crate) fn new() -> Self {
        TimerService {
            live: Mutex::new(BTreeSet::new()),
            rescan: AtomicBool::new(false),
        }
    }

    /// Makes the next tick scan the stored timers from the beginning.
    pub fn rescan(&self) {
        self.rescan.store(true, Ordering::Release);
    }

    /// Replaces `key`'s registration `old` by `due`.
    pub fn schedule(&self, key: &str, due: Option<Timestamp>, old: Option<Timestamp>) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = old {
            live.remove(&(old, key.to_owned()));
        }
        if let Some(due) = due {
            live.insert((due, key.to_owned()));
        }
    }

    /// Removes and returns every live registration due at or before `now`.
    fn take_due(&self, now: Timestamp) -> Vec<String> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = Vec::new();
        while let Some(first) = live.first() {
            if first.0 > now {
                break;
            }
            if let Some((_, key)) = live.pop_first() {
                due.push(key);
            }
        }
        due
    }

    /// Number of live registrations.
    pub fn live_count(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or(0)
    }
}

/// Most passivated timers woken per tick (the rest wait for the next tick).
const WAKE_BATCH: usize = 10_000;

/// The timer loop. Runs until the system stops.
pub(crate) async fn run(runtime: Arc<Runtime>) {
    let mut interval = tokio::time::interval(runtime.config.timer_tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Scan position in the stored timers: entries at or before it were
    // woken. Starts at the beginning: after a restart every overdue timer
    // fires once.
    let mut cursor: Vec<u8> = Vec::new();
    // NB: in the scale-out mode only the entities of the partitions this
    // instance evaluates are woken; the others' timers are their owners'.
    let entities = runtime.store.entities();
    let evaluated = |key: &str| runtime.journal.evaluates(entities.partition_of(key));
    loop {
        interval.tick().await;
        if runtime.timers.rescan.swap(false, Ordering::AcqRel) {
            cursor.clear();
        }
        let now = wall_now();
        for key in runtime.timers.take_due(now) {
            if evaluated(&key) {
                runtime
                    .router
                    .deliver(&runtime, &key, EntityMsg::Tick(now), 0);
            }
        }
        match runtime
            .store
            .entities()
            .due_timers(&cursor, now, WAKE_BATCH)
        {
            Ok((due, next)) => {
                for (_, key) in due.iter().filter(|(_, key)| evaluated(key)) {
                    runtime
                        .router
                        .deliver(&runtime, key, EntityMsg::Tick(now), 0);
                }
                cursor = next;
            }
            Err(e) => tracing::warn!(error = %e, "cannot scan stored timers"),
        }
    }
}
