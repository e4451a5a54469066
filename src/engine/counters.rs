//! Counted drops: what the per-key limits refused, kept in each entity's
//! state and reported as metrics. Its own module so that the pattern kinds
//! and the state that holds them both depend on it, not on each other.

use serde::{Deserialize, Serialize};

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
    /// Partial matches of sequences without `within` that reached
    /// `max_match_age` and were dropped.
    #[serde(default)]
    pub expired_matches: u64,
    /// Events the reorder buffer evaluated before their watermark passed
    /// them, out of time order, because it held `max_buffered_events`.
    #[serde(default)]
    pub released_early: u64,
}

impl DropCounters {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: DropCounters) {
        self.partial_matches += other.partial_matches;
        self.window_entries += other.window_entries;
        self.pending_deadlines += other.pending_deadlines;
        self.expired_matches += other.expired_matches;
        self.released_early += other.released_early;
    }

    /// What was dropped since `before` (an earlier copy of these counters).
    pub fn since(self, before: DropCounters) -> DropCounters {
        DropCounters {
            partial_matches: self.partial_matches - before.partial_matches,
            window_entries: self.window_entries - before.window_entries,
            pending_deadlines: self.pending_deadlines - before.pending_deadlines,
            expired_matches: self.expired_matches - before.expired_matches,
            released_early: self.released_early - before.released_early,
        }
    }

    /// True when nothing was dropped.
    pub fn is_empty(&self) -> bool {
        *self == DropCounters::default()
    }
}
