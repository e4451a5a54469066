//! The entity actor: one per live key, holding that key's engine state.
//!
//! Each handler is the pure step inside a thin shell (STYLE habit 4): call
//! the engine, record alerts and dead letters, re-arm the timer.

use std::sync::Arc;

use actix::{Actor, ActorContext, Context, Handler, Message};
use serde_json::{Map, Value};

use tokio::sync::oneshot;

use crate::actors::router::Liveness;
use crate::actors::{wall_now, Runtime};
use crate::engine::{Alert, Engine, EntityView, KeyState, LateReason, LateTreatment};
use crate::event::Event;
use crate::journal::{LetterEntry, LetterReason};
use crate::store::entities::{ClockAnchor, EncodedSnapshot, SnapshotWrite};
use crate::telemetry::{self, Stage};
use crate::time::Timestamp;

/// One event delivered to an entity, with its place in the journal.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The journal frame holding it.
    pub lsn: u64,
    /// Index of the event among the frame's events.
    pub index: u32,
    /// The event.
    pub event: Arc<Event>,
    /// For an event of another key that a `partition_by` rule sends here
    /// through the scale-out mode's repartition topic: its partition and
    /// offset in the events topic. Such a delivery is skipped if the entity
    /// applied that record already (the repartition topic may hold it
    /// twice after a crash); `lsn` and `index` then only name it.
    pub source: Option<(u16, u64)>,
}

/// Everything an entity actor is asked to do. One message type, so every
/// message passes the router's accounting the same way.
pub enum EntityMsg {
    /// Evaluate these events, in order (routed at that instant).
    Deliver(Vec<Delivery>, std::time::Instant),
    /// The wall clock is `now`: advance the entity's clock and fire what is due.
    Tick(Timestamp),
    /// Move the entity's clock to at least this time (`POST /v1/clock`).
    AdvanceClock(Timestamp, oneshot::Sender<()>),
    /// Hand over a snapshot if anything changed since the last one (or in
    /// any case, with `force`).
    Persist {
        /// Hand one over even if nothing changed.
        force: bool,
        /// Where to send it.
        done: oneshot::Sender<Option<SnapshotWrite>>,
    },
    /// Describe the live state.
    Describe(oneshot::Sender<EntityView>),
    /// Passivation, first half (sent by the passivation sweep): if idle for
    /// `passivate_after`, answer `Some` with the snapshot to write (`None`
    /// inside when nothing changed since the last one); answer `None` to
    /// stay live.
    Passivate(oneshot::Sender<Option<Option<SnapshotWrite>>>),
    /// Passivation, second half: the snapshot handed over was `written` (or
    /// not). Leave memory if it was and nothing happened since.
    Stop {
        /// Whether the sweep wrote the snapshot.
        written: bool,
    },
    /// Leave memory now, handing over the snapshot to write if anything
    /// changed (`Err` if the entity's state cannot be persisted): its
    /// partition moved to another instance (the scale-out mode).
    Release(oneshot::Sender<Result<Option<SnapshotWrite>, ()>>),
    /// Replace the static attributes; answers with the new view and the
    /// snapshot to write (the caller writes it once the journal is durable
    /// past what the entity reflects).
    SetAttributes(
        Map<String, Value>,
        oneshot::Sender<(EntityView, Option<SnapshotWrite>)>,
    ),
}

impl Message for EntityMsg {
    type Result = ();
}

impl EntityMsg {
    fn events(&self) -> usize {
        match self {
            EntityMsg::Deliver(d, _) => d.len(),
            _ => 0,
        }
    }
}

/// The actor of one live entity.
pub struct EntityActor {
    key: String,
    runtime: Arc<Runtime>,
    liveness: Arc<Liveness>,
    id: u64,
    state: KeyState,
    anchor: Option<ClockAnchor>,
    applied: (u64, u32),
    /// Per partition of the events topic, the offset of the last record
    /// applied that came through the repartition topic (scale-out mode).
    repartitioned: Vec<(u16, u64)>,
    /// The timer entry the last written snapshot carries.
    stored_timer: Option<Timestamp>,
    /// The wall time registered with the in-memory timer service.
    live_timer: Option<Timestamp>,
    /// Changed since the last snapshot.
    dirty: bool,
    /// Handed its snapshot to the passivation sweep, and nothing happened
    /// since: it may leave when the sweep says the snapshot is written.
    passivating: bool,
    /// False once the entity's state may disagree with the store (its
    /// snapshot could not be read, or its alerts could not be logged): it
    /// keeps working in memory but never writes a snapshot, so replay from
    /// the last checkpoint can still redo what it did.
    persistable: bool,
    /// This actor's handle on the engine, and the rules generation it is of.
    engine: Arc<Engine>,
    engine_generation: u64,
}

impl EntityActor {
    pub(crate) fn new(
        key: String,
        runtime: Arc<Runtime>,
        liveness: Arc<Liveness>,
        id: u64,
    ) -> Self {
        EntityActor {
            state: KeyState::new(key.clone()),
            key,
            engine_generation: runtime.engine.generation(),
            engine: runtime.engine(),
            runtime,
            liveness,
            id,
            anchor: None,
            applied: (0, 0),
            repartitioned: Vec::new(),
            stored_timer: None,
            live_timer: None,
            dirty: false,
            passivating: false,
            persistable: true,
        }
    }

    fn restore(&mut self) {
        self.refresh_engine();
        match self.runtime.store.entities().get(&self.key) {
            Ok(Some(snapshot)) => {
                self.state = snapshot.state;
                self.applied = snapshot.applied;
                self.repartitioned = snapshot.repartitioned;
                self.anchor = snapshot.anchor;
                self.stored_timer = snapshot.timer_due;
            }
            Ok(None) => {}
            Err(e) => {
                // NB: starting empty would silently forget this entity's
                // state, and the next snapshot would overwrite it; the actor
                // keeps the fresh state in memory only and never persists.
                tracing::error!(key = %self.key, error = %e, "cannot restore entity; it will not be persisted");
                telemetry::snapshot_restore_failed();
                self.persistable = false;
            }
        }
        if let Some(floor) = self.runtime.clock_floor() {
            if self.state.clock.is_some_and(|c| c < floor) {
                let alerts = self.engine.advance_to(&mut self.state, floor);
                self.record_alerts(&alerts);
                self.dirty = true;
            }
        }
    }

    /// Takes the current engine if the rules changed since this actor last
    /// looked.
    fn refresh_engine(&mut self) {
        let generation = self.runtime.engine.generation();
        if generation != self.engine_generation {
            self.engine = self.runtime.engine();
            self.engine_generation = generation;
        }
    }

    fn deliver(&mut self, deliveries: Vec<Delivery>) {
        let engine = &self.engine;
        let now = wall_now();
        let mut alerts = Vec::new();
        let mut late = Vec::new();
        for d in deliveries {
            let applied = match d.source {
                None => (d.lsn, d.index) <= self.applied,
                Some((partition, offset)) => self
                    .repartitioned
                    .iter()
                    .any(|&(p, o)| p == partition && o >= offset),
            };
            if applied {
                continue;
            }
            let before = self.state.clock;
            let outcome = engine.on_event(&mut self.state, &d.event);
            for (rule, policy) in &outcome.late_for {
                telemetry::late_for_rule(rule, policy.as_str());
            }
            if outcome.late {
                let rules: Vec<String> = outcome
                    .late_for
                    .iter()
                    .filter(|(_, t)| *t != LateTreatment::Evaluate)
                    .map(|(r, _)| r.to_string())
                    .collect();
                late.push((d.lsn, d.index, d.event, rules, outcome.late_reason));
            } else if self.state.clock > before {
                if let Some(clock) = self.state.clock {
                    self.anchor = Some(ClockAnchor { clock, wall: now });
                }
            }
            telemetry::dropped(&outcome.dropped);
            alerts.extend(outcome.alerts);
            match d.source {
                None => self.applied = (d.lsn, d.index),
                Some((partition, offset)) => {
                    match self.repartitioned.iter_mut().find(|(p, _)| *p == partition) {
                        Some(mark) => mark.1 = offset,
                        None => self.repartitioned.push((partition, offset)),
                    }
                }
            }
        }
        self.dirty = true;
        self.record_alerts(&alerts);
        self.record_late(late, now);
    }

    fn tick(&mut self, now: Timestamp) {
        let Some(due) = self.state.next_deadline() else {
            return;
        };
        let clock = match self.anchor {
            Some(anchor) => anchor.clock_at(now),
            None => now,
        };
        if clock < due {
            return;
        }
        let before = self.state.dropped;
        let alerts = self.engine.advance_to(&mut self.state, clock);
        telemetry::dropped(&self.state.dropped.since(before));
        self.dirty = true;
        self.record_alerts(&alerts);
    }

    fn record_alerts(&mut self, alerts: &[Alert]) {
        if alerts.is_empty() {
            return;
        }
        if let Err(e) = self.runtime.alerts.record(alerts) {
            // NB: the match is consumed in memory but its alert is not in the
            // log. The entity must not persist past this point, or the alert
            // would be lost; replay from the checkpoint recreates it.
            tracing::error!(key = %self.key, error = %e, "cannot record alerts; entity stops persisting");
            self.persistable = false;
        }
    }

    /// Dead-letters late events, each identified by its key and journal
    /// place: a replay after a crash evaluates them again, and the alert hub
    /// then lists each once.
    fn record_late(&self, late: Vec<LateEvent>, now: Timestamp) {
        if late.is_empty() {
            return;
        }
        telemetry::events_late(late.len());
        let watermark = self
            .state
            .clock
            .map(|c| c.minus(self.engine.config().allowed_lateness));
        let letters: Vec<LetterEntry> = late
            .iter()
            .map(|(lsn, index, e, rules, reason)| {
                let mut identity = self.key.as_bytes().to_vec();
                identity.push(0);
                identity.extend_from_slice(&lsn.to_be_bytes());
                identity.extend_from_slice(&index.to_be_bytes());
                LetterEntry {
                    identity: Some(identity),
                    reason: match reason {
                        LateReason::Late => LetterReason::Late,
                        LateReason::WindowClosed => LetterReason::WindowClosed,
                    },
                    error: if *reason == LateReason::WindowClosed {
                        format!(
                            "event time {} is late for rule(s) {}, and every window of theirs it belongs to has closed",
                            e.time,
                            rules.join(", ")
                        )
                    } else if rules.is_empty() {
                        format!(
                            "event time {} is older than the entity's watermark {}",
                            e.time,
                            watermark.map_or_else(|| "-".into(), |w| w.to_string())
                        )
                    } else {
                        format!(
                            "event time {} is older than the watermark of rule(s) {} (the entity's clock {} minus the allowed lateness)",
                            e.time,
                            rules.join(", "),
                            self.state.clock.map_or_else(|| "-".into(), |c| c.to_string())
                        )
                    },
                    key: Some(self.key.clone()),
                    received_at: now,
                    event: serde_json::to_string(&**e).unwrap_or_default(),
                }
            })
            .collect();
        if let Err(e) = self.runtime.alerts.record_letters(letters) {
            tracing::error!(key = %self.key, error = %e, "cannot record late events as dead letters");
        }
    }

    /// The wall time at which the entity's clock reaches its next deadline.
    fn wall_due(&self) -> Option<Timestamp> {
        let due = self.state.next_deadline()?;
        Some(match self.anchor {
            Some(anchor) => anchor.wall_at(due),
            None => wall_now(),
        })
    }

    fn rearm_timer(&mut self) {
        let due = self.wall_due();
        let later =
            matches!((due, self.live_timer), (Some(d), Some(registered)) if d >= registered);
        // NB: a deadline that moved later (a heartbeat rule's, on every
        // heartbeat) keeps the earlier registration: it wakes the entity,
        // which then registers the new one. One registration per deadline
        // instead of one per event; a deadline that went away wakes it once.
        if due != self.live_timer && !later && due.is_some() {
            self.runtime
                .timers
                .schedule(&self.key, due, self.live_timer);
            self.live_timer = due;
        }
    }

    /// The snapshot to write, if anything changed since the last one.
    fn snapshot(&mut self) -> Option<SnapshotWrite> {
        if !self.dirty || !self.persistable {
            return None;
        }
        let timer_due = self.wall_due();
        let encoded = match EncodedSnapshot::encode(
            &self.state,
            self.applied,
            self.anchor,
            timer_due,
            &self.repartitioned,
        ) {
            Ok(encoded) => encoded,
            Err(e) => {
                // NB: as when the store cannot be read: keep working in
                // memory, never write a snapshot (the replay redoes it).
                tracing::error!(key = %self.key, error = %e, "cannot encode the entity's snapshot; it will not be persisted");
                self.persistable = false;
                return None;
            }
        };
        let write = SnapshotWrite {
            key: self.key.clone(),
            snapshot: Some(encoded),
            old_timer: self.stored_timer,
        };
        self.stored_timer = timer_due;
        self.dirty = false;
        Some(write)
    }

    fn describe(&self) -> EntityView {
        self.engine.describe(&self.state)
    }

    /// The snapshot to hand to the passivation sweep, or `None` to stay
    /// live: an entity that cannot persist stays in memory (dropping it
    /// would forget what it did since its last good snapshot), and so does
    /// one whose timer is about to fire (waking it from disk a moment later
    /// would cost more than staying).
    fn passivation_snapshot(&mut self) -> Option<Option<SnapshotWrite>> {
        if !self.persistable || self.liveness.idle_for() < self.runtime.config.passivate_after {
            return None;
        }
        let soon = wall_now().plus(crate::time::Duration(
            2 * self.runtime.config.timer_tick.as_millis() as i64,
        ));
        // NB: not while the log is replayed: timers do not run then, and a
        // replay held at the live-entity limit would wait forever for
        // entities whose deadlines passed while cepheus was down.
        if !self.runtime.is_replaying() && self.wall_due().is_some_and(|due| due <= soon) {
            return None;
        }
        Some(self.snapshot())
    }

    /// Leaves memory after the sweep wrote the snapshot, unless something
    /// happened since (the change is then the next checkpoint's) or a
    /// message is waiting (see the router's invariants).
    fn stop_if_passivated(&mut self, written: bool, ctx: &mut Context<Self>) {
        let handed_over = std::mem::take(&mut self.passivating);
        if !handed_over
            || !written
            || self.liveness.idle_for() < self.runtime.config.passivate_after
        {
            return;
        }
        // Nothing happened since the snapshot the sweep wrote: it is the
        // state.
        self.dirty = false;
        if self.runtime.router.remove_if_idle(&self.key, self.id) {
            self.runtime
                .timers
                .schedule(&self.key, None, self.live_timer);
            self.live_timer = None;
            telemetry::passivated();
            ctx.stop();
        }
    }
}

impl EntityActor {
    /// Hands over the last snapshot and leaves, whatever is pending: the
    /// partition's events go to its new owner, which restores this state.
    fn release(
        &mut self,
        done: oneshot::Sender<Result<Option<SnapshotWrite>, ()>>,
        ctx: &mut Context<Self>,
    ) {
        let write = if self.persistable {
            Ok(self.snapshot())
        } else {
            Err(())
        };
        self.runtime.router.remove(&self.key, self.id);
        self.runtime
            .timers
            .schedule(&self.key, None, self.live_timer);
        self.live_timer = None;
        telemetry::passivated();
        ctx.stop();
        let _ = done.send(write);
    }
}

impl Actor for EntityActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        self.restore();
        self.rearm_timer();
        telemetry::activated();
    }
}

impl Handler<EntityMsg> for EntityActor {
    type Result = ();

    fn handle(&mut self, msg: EntityMsg, ctx: &mut Self::Context) {
        if let EntityMsg::Stop { written } = msg {
            // NB: uncounted first: the actor leaves the router only with no
            // message pending, and this one is done.
            self.runtime.router.handled(&self.liveness, 0);
            self.stop_if_passivated(written, ctx);
            return;
        }
        if let EntityMsg::Release(done) = msg {
            self.runtime.router.handled(&self.liveness, 0);
            self.release(done, ctx);
            return;
        }
        let events = msg.events();
        self.refresh_engine();
        // NB: reads (a GET of the entity, a checkpoint's request) are not
        // activity, or polling an entity would keep it in memory forever.
        if !matches!(
            msg,
            EntityMsg::Describe(_) | EntityMsg::Persist { .. } | EntityMsg::Passivate(_)
        ) {
            self.liveness.mark_active();
            self.passivating = false;
        }
        match msg {
            EntityMsg::Deliver(deliveries, routed_at) => {
                let started = std::time::Instant::now();
                telemetry::stage(Stage::MailboxWait, started - routed_at);
                self.deliver(deliveries);
                telemetry::stage(Stage::Evaluate, started.elapsed());
            }
            EntityMsg::Tick(now) => {
                // The timer service dropped the registration it woke us for.
                self.live_timer = None;
                self.tick(now)
            }
            EntityMsg::AdvanceClock(to, done) => {
                let alerts = self.engine.advance_to(&mut self.state, to);
                self.dirty = true;
                self.record_alerts(&alerts);
                let _ = done.send(());
            }
            EntityMsg::Persist { force, done } => {
                self.dirty |= force;
                let _ = done.send(self.snapshot());
            }
            EntityMsg::Describe(done) => {
                let _ = done.send(self.describe());
            }
            EntityMsg::Passivate(done) => {
                let handed = self.passivation_snapshot();
                if matches!(handed, Some(Some(_))) {
                    // NB: still dirty until the sweep says it wrote this: a
                    // checkpoint round in between must not take "handed
                    // over" for "written" (it writes the state again).
                    self.dirty = true;
                }
                self.passivating = handed.is_some();
                let _ = done.send(handed);
            }
            EntityMsg::Stop { .. } | EntityMsg::Release(_) => unreachable!("handled above"),
            EntityMsg::SetAttributes(attributes, done) => {
                self.state.attributes = attributes;
                self.dirty = true;
                let write = self.snapshot();
                let _ = done.send((self.describe(), write));
            }
        }
        self.rearm_timer();
        self.runtime.router.handled(&self.liveness, events);
    }
}

/// A late event to dead-letter: its journal place (lsn, index), the event,
/// the rules it was late for and why.
type LateEvent = (u64, u32, Arc<Event>, Vec<String>, LateReason);
