//! Per-key state: everything the engine remembers about one entity.
//!
//! A [`KeyState`] is plain data — serde-serializable, versioned, with no
//! references to the rule set — so the service can snapshot it to disk,
//! drop the actor, and later restore it without changing a single alert.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::absence::AbsenceState;
use crate::engine::counters::DropCounters;
use crate::engine::reorder::ReorderBuffer;
use crate::engine::sequence::SequenceState;
use crate::engine::threshold::ThresholdState;
use crate::time::Timestamp;

/// Version of the [`KeyState`] layout. Bump it, and add a migration from the
/// previous layout, whenever a persisted field changes meaning or shape.
///
/// - 1: the first layout.
/// - 2: adds the reorder buffer and the `expired_matches` and
///   `released_early` counters at the ends of their structs; a format-1
///   state reads as format 2 with those empty (see [`KeyState::migrate`]).
/// - 3: thresholds with several aggregates and sequences with groups: a
///   window entry's and a window summary's other aggregates (`more`) and a
///   run's group `iteration`, each at the end of its struct; a format-2
///   state reads as format 3 with those empty, which is what it had (one
///   aggregate, no group).
pub const STATE_FORMAT: u32 = 3;

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
    /// Events waiting for their watermark (allowed lateness above 0).
    #[serde(default)]
    pub buffer: ReorderBuffer,
}

/// The state one rule keeps for one key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleState {
    /// The rule's id (to re-align after the rule set changes).
    pub rule: Arc<str>,
    /// The rule version this state belongs to.
    pub version: u64,
    /// Position of the rule in the rule set with fingerprint `KeyState::ruleset`.
    pub index: u32,
    /// The pattern's own state.
    pub pattern: PatternState,
    /// The watermark at which the pattern's timers next act, as computed
    /// after the engine last changed it: kept so that finding an entity's
    /// next deadline does not visit every rule's (cold) state on every
    /// event. Not persisted; a restored state recomputes it.
    #[serde(skip)]
    pub(crate) due: Due,
}

/// A rule state's next deadline, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Due {
    /// Not computed since the state was restored or changed.
    #[default]
    Unknown,
    /// The watermark at which its timers next act, if any.
    Known(Option<Timestamp>),
}

/// NB: equality is that of what is persisted; `due` is a cache of it.
impl PartialEq for RuleState {
    fn eq(&self, other: &RuleState) -> bool {
        self.rule == other.rule
            && self.version == other.version
            && self.index == other.index
            && self.pattern == other.pattern
    }
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
    /// Whether this is the state of `pattern`'s kind.
    pub(crate) fn is_kind_of(&self, pattern: &crate::rules::Pattern) -> bool {
        use crate::rules::Pattern;
        match self {
            PatternState::Sequence(_) => matches!(pattern, Pattern::Sequence(_)),
            PatternState::Absence(_) => matches!(pattern, Pattern::Absence(_)),
            PatternState::Threshold(_) => matches!(pattern, Pattern::Threshold(_)),
        }
    }

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
            buffer: ReorderBuffer::default(),
        }
    }

    /// Brings a state read from an older layout to [`STATE_FORMAT`].
    /// Format 1 had no reorder buffer and fewer drop counters: they read as
    /// empty, which is what a format-1 entity had. Format 2 had one
    /// aggregate per threshold and no groups: the fields format 3 added read
    /// as empty, which is what a format-2 entity had.
    pub fn migrate(&mut self) {
        if self.format < STATE_FORMAT {
            self.format = STATE_FORMAT;
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

    /// Number of partial matches, pending deadlines, open windows and
    /// waiting events held.
    pub fn live_items(&self) -> usize {
        self.buffer.len()
            + self
                .rules
                .iter()
                .map(|r| match &r.pattern {
                    PatternState::Sequence(s) => s.len(),
                    PatternState::Absence(s) => s.len(),
                    PatternState::Threshold(s) => s.len(),
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The format-1 layout, as the previous release wrote it.
    #[derive(Serialize)]
    struct KeyStateV1 {
        format: u32,
        key: String,
        attributes: Map<String, Value>,
        clock: Option<Timestamp>,
        events_seen: u64,
        ruleset: u64,
        rules: Vec<RuleState>,
        next_due: Option<Timestamp>,
        dropped: DropCountersV1,
    }

    #[derive(Serialize)]
    struct DropCountersV1 {
        partial_matches: u64,
        window_entries: u64,
        pending_deadlines: u64,
    }

    #[test]
    fn a_format_1_snapshot_reads_and_migrates_to_the_current_format() {
        let old = KeyStateV1 {
            format: 1,
            key: "acct-1".into(),
            attributes: Map::new(),
            clock: Some(Timestamp(1_000)),
            events_seen: 7,
            ruleset: 42,
            rules: Vec::new(),
            next_due: Some(Timestamp(2_000)),
            dropped: DropCountersV1 {
                partial_matches: 1,
                window_entries: 2,
                pending_deadlines: 3,
            },
        };
        // Positional, as entity snapshots are stored.
        let bytes = rmp_serde::to_vec(&old).expect("serializes");
        let mut state: KeyState = rmp_serde::from_slice(&bytes).expect("format 1 reads");
        assert_eq!(state.format, 1);
        state.migrate();
        assert_eq!(state.format, STATE_FORMAT);
        assert_eq!(state.key, "acct-1");
        assert_eq!(state.events_seen, 7);
        assert_eq!(state.next_due, Some(Timestamp(2_000)));
        assert_eq!(
            state.dropped,
            DropCounters {
                partial_matches: 1,
                window_entries: 2,
                pending_deadlines: 3,
                expired_matches: 0,
                released_early: 0,
            }
        );
        assert!(state.buffer.is_empty());
    }
}
