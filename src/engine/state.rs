//! Per-key state: everything the engine remembers about one entity.
//!
//! A [`KeyState`] is plain data — serde-serializable, versioned, with no
//! references to the rule set — so the service can snapshot it to disk,
//! drop the actor, and later restore it without changing a single alert.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::absence::AbsenceState;
use crate::engine::sequence::SequenceState;
use crate::engine::threshold::ThresholdState;
use crate::time::Timestamp;

/// Version of the [`KeyState`] layout. Bump it, and add a migration from the
/// previous layout, whenever a persisted field changes meaning or shape.
pub const STATE_FORMAT: u32 = 1;

/// The engine's memory of one entity.
///
/// # Invariants
/// `rules` is sorted by `index` and only holds states aligned to the rule
/// set whose fingerprint is `ruleset`; the engine re-aligns it (dropping the
/// state of removed or replaced rules) before touching it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyState {
    /// Layout version, [`STATE_FORMAT`] when written by this build.
    pub format: u32,
    /// The entity key.
    pub key: String,
    /// Static attributes, visible to predicates as `entity.*`.
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// The entity's event-time clock: the greatest event time it accepted,
    /// or a later time it was advanced to. `None` before anything happened.
    pub clock: Option<Timestamp>,
    /// How many events this entity has evaluated; the n-th event has ordinal n.
    pub events_seen: u64,
    /// Fingerprint of the rule set `rules` is aligned to.
    pub ruleset: u64,
    /// State of each rule that has any, sorted by rule index.
    pub rules: Vec<RuleState>,
    /// The clock time at which advancing would fire or expire something;
    /// the timer service wakes the entity then.
    pub next_due: Option<Timestamp>,
    /// Things dropped because a limit was hit, for metrics and the entity view.
    #[serde(default)]
    pub dropped: DropCounters,
}

/// Counted drops: work refused because a per-key limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DropCounters {
    /// Partial matches not started (or branches not taken) because the rule
    /// already had `max_partial_matches` for this key.
    pub partial_matches: u64,
    /// Window entries, open windows or sessions not kept because of
    /// `max_window_entries`.
    pub window_entries: u64,
    /// Pending absence deadlines not kept because of `max_partial_matches`.
    pub pending_deadlines: u64,
}

impl DropCounters {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: DropCounters) {
        self.partial_matches += other.partial_matches;
        self.window_entries += other.window_entries;
        self.pending_deadlines += other.pending_deadlines;
    }

    /// True when nothing was dropped.
    pub fn is_empty(&self) -> bool {
        *self == DropCounters::default()
    }
}

/// The state one rule keeps for one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    /// The rule's id (to re-align after the rule set changes).
    pub rule: Arc<str>,
    /// The rule version this state belongs to.
    pub version: u64,
    /// Position of the rule in the rule set with fingerprint `KeyState::ruleset`.
    pub index: u32,
    /// The pattern's own state.
    pub pattern: PatternState,
}

/// Pattern state, one variant per pattern kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternState {
    /// Partial matches of a sequence.
    Sequence(SequenceState),
    /// Pending deadlines of an absence rule.
    Absence(AbsenceState),
    /// Windows of a threshold rule.
    Threshold(ThresholdState),
}

impl PatternState {
    /// True when the state holds nothing worth keeping.
    pub fn is_empty(&self) -> bool {
        match self {
            PatternState::Sequence(s) => s.is_empty(),
            PatternState::Absence(s) => s.is_empty(),
            PatternState::Threshold(s) => s.is_empty(),
        }
    }
}

impl KeyState {
    /// A fresh entity with no history.
    pub fn new(key: impl Into<String>) -> KeyState {
        KeyState {
            format: STATE_FORMAT,
            key: key.into(),
            attributes: Map::new(),
            clock: None,
            events_seen: 0,
            ruleset: 0,
            rules: Vec::new(),
            next_due: None,
            dropped: DropCounters::default(),
        }
    }

    /// The clock time at which the entity next has timer work, if any.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.next_due
    }

    /// True when the entity holds no rule state, no attributes and no
    /// timers: it can be forgotten once its clock and counters are not needed.
    pub fn is_idle(&self) -> bool {
        self.rules.is_empty() && self.next_due.is_none()
    }

    /// Number of partial matches, pending deadlines and open windows held.
    pub fn live_items(&self) -> usize {
        self.rules
            .iter()
            .map(|r| match &r.pattern {
                PatternState::Sequence(s) => s.len(),
                PatternState::Absence(s) => s.len(),
                PatternState::Threshold(s) => s.len(),
            })
            .sum()
    }
}
