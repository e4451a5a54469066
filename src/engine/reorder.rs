//! The reorder buffer: events that wait for their watermark (DESIGN §4).
//!
//! With allowed lateness `L > 0` an entity's events are evaluated in
//! event-time order, as Flink CEP does: each waits here until the watermark
//! (clock − L) of every rule that sees it passes its time; ties keep the
//! order of acceptance. Rules with different lateness share the buffer: an
//! event waits for the rule with the largest lateness among those that see
//! it, and each rule evaluates it once its own watermark passes it. With
//! `L = 0` everywhere the buffer stays empty and costs nothing.
//!
//! The buffer is part of the entity's state (snapshots, passivation,
//! replay), bounded by `max_buffered_events`: past it, the oldest events are
//! evaluated at once, out of time order, and counted (`released_early`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::event::Event;

/// Events accepted but not yet evaluated by every rule that sees them,
/// sorted by (time, ordinal).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ReorderBuffer {
    pub(crate) events: Vec<Waiting>,
}

/// One waiting event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    /// The event.
    pub(crate) event: Arc<Event>,
    /// Its position in the entity's stream (acceptance order).
    pub(crate) ordinal: u64,
    /// The rules that have yet to evaluate it, by id (plain data: the
    /// buffer outlives rule-set changes).
    pub(crate) rules: Vec<Arc<str>>,
}

impl ReorderBuffer {
    /// Adds an event in (time, ordinal) order.
    pub(crate) fn insert(&mut self, waiting: Waiting) {
        let key = (waiting.event.time, waiting.ordinal);
        let at = self
            .events
            .partition_point(|w| (w.event.time, w.ordinal) <= key);
        self.events.insert(at, waiting);
    }

    /// Number of waiting events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when no event waits.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Forgets the rules that are no longer in the rule set (and the events
    /// only they waited for).
    pub(crate) fn retain_rules(&mut self, known: impl Fn(&str) -> bool) {
        for waiting in &mut self.events {
            waiting.rules.retain(|r| known(r));
        }
        self.events.retain(|w| !w.rules.is_empty());
    }

    /// A JSON view for the entities API: each waiting event with the rules
    /// still to evaluate it.
    pub fn view(&self) -> Value {
        Value::Array(
            self.events
                .iter()
                .map(|w| {
                    json!({
                        "id": w.event.id,
                        "type": w.event.event_type,
                        "time": w.event.time,
                        "ordinal": w.ordinal,
                        "waiting_for": w.rules,
                    })
                })
                .collect(),
        )
    }
}
