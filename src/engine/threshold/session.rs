//! Session windows (`window: {session: {gap: 30s}}`): runs of matching
//! events at most `gap` apart, firing when they close. Compiled from
//! `WindowSpec::Session` (`rules/compile/threshold.rs`).
//!
//! An event joins every session whose events it comes within `gap` of
//! (inclusive), merging them; a session closes when the watermark passes
//! `last + gap` and fires once if its aggregate satisfies the condition;
//! the alert's time is `last + gap`. Closed sessions are not remembered, so
//! a late event that joins no open session is refused (`window_closed`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::alert::{closed_window_alert, window_json};
use crate::engine::aggregate::{Accumulator, Samples};
use crate::engine::alert::Alert;
use crate::engine::counters::DropCounters;
use crate::engine::env::RuleEnv;
use crate::event::{Event, EventRef};
use crate::rules::ThresholdPattern;
use crate::time::{Duration, Timestamp};

/// Open sessions, sorted by start.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Sessions {
    sessions: Vec<Session>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Session {
    start: Timestamp,
    last: Timestamp,
    acc: Accumulator,
}

/// The watermark at which a session whose last event is at `last` closes:
/// it must pass `last + gap`, because an event at exactly `last + gap` joins.
fn close_at(last: Timestamp, gap: Duration) -> Timestamp {
    last.plus(gap).plus(Duration(1))
}

impl Sessions {
    /// True when no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// The watermark at which the first session closes.
    pub fn next_deadline(&self, gap: Duration) -> Option<Timestamp> {
        self.sessions.iter().map(|x| close_at(x.last, gap)).min()
    }

    /// Whether a late event at `time` (older than `watermark`) would join
    /// no open session.
    pub fn closed_for(&self, time: Timestamp, gap: Duration, watermark: Timestamp) -> bool {
        time < watermark
            && !self
                .sessions
                .iter()
                .any(|x| time >= x.start.minus(gap) && time <= x.last.plus(gap))
    }

    /// Closes every session the watermark passed, in closing order.
    pub(super) fn advance(
        &mut self,
        env: &RuleEnv<'_>,
        pattern: &ThresholdPattern,
        gap: Duration,
        watermark: Timestamp,
        alerts: &mut Vec<Alert>,
    ) {
        loop {
            let due = self
                .sessions
                .iter()
                .enumerate()
                .filter(|(_, x)| close_at(x.last, gap) <= watermark)
                .min_by_key(|(_, x)| (close_at(x.last, gap), x.start))
                .map(|(i, _)| i);
            let Some(i) = due else { break };
            let session = self.sessions.remove(i);
            let end = session.last.plus(gap);
            if let Some(alert) =
                closed_window_alert(env, pattern, "session", session.start, end, &session.acc)
            {
                alerts.push(alert);
            }
        }
    }

    /// A JSON view of the open sessions.
    pub fn view(&self) -> Value {
        json!({
            "kind": "sessions",
            "sessions": self.sessions.iter().map(|x| {
                let mut v = window_json(x.start, &x.acc);
                v["last"] = json!(x.last);
                v
            }).collect::<Vec<_>>(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn add(
        &mut self,
        time: Timestamp,
        gap: Duration,
        sample: &Samples,
        reference: EventRef,
        full: Option<&Arc<Event>>,
        limits: (usize, usize),
        dropped: &mut DropCounters,
    ) {
        let joins = |s: &Session| time >= s.start.minus(gap) && time <= s.last.plus(gap);
        let mut merged = Session {
            start: time,
            last: time,
            acc: Accumulator::default(),
        };
        let mut joined: Vec<Session> = Vec::new();
        self.sessions.retain(|s| {
            if joins(s) {
                joined.push(s.clone());
                false
            } else {
                true
            }
        });
        if joined.is_empty() && self.sessions.len() >= limits.0 {
            dropped.window_entries += 1;
            return;
        }
        let mut first = true;
        for s in joined {
            merged.start = merged.start.min(s.start);
            merged.last = merged.last.max(s.last);
            if first {
                merged.acc = s.acc;
                first = false;
            } else if !merged.acc.merge(s.acc, limits) {
                dropped.window_entries += 1;
            }
        }
        if !merged.acc.add(sample, reference, full, limits) {
            dropped.window_entries += 1;
        }
        let at = self.sessions.partition_point(|s| s.start <= merged.start);
        self.sessions.insert(at, merged);
    }
}
