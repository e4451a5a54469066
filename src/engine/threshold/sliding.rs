//! Sliding windows (`window: {sliding: 1m}`): the matching events of the
//! last `size` up to each moment, edge-triggered. Compiled from
//! `WindowSpec::Sliding` (`rules/compile/threshold.rs`).
//!
//! An entry leaves the window when the watermark reaches `time + size`, so
//! right after an event at `t` the window is `(t - size, t]` (events are
//! evaluated in event-time order, so with allowed lateness too). The
//! condition is evaluated after every entry enters and at every instant
//! entries leave, once every event of that instant is in: when an event at
//! that instant arrives, or else when the watermark passes the instant (the
//! alert's time is the instant). So an entry leaving at the very instant
//! another enters is one change, and a steady stream at the limit's rate
//! fires once, not at every event. It fires when it becomes true and re-arms
//! when it becomes false. On an empty window `count` and `distinct` are 0,
//! `sum` is 0, and `avg`, `min`, `max` have no value (the condition is
//! false).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::alert::{threshold_alert, ThresholdFacts};
use super::condition_holds;
use crate::engine::aggregate::{fold_numbers, value_of, Sample, Samples};
use crate::engine::alert::{Alert, Explanation};
use crate::engine::counters::DropCounters;
use crate::engine::env::RuleEnv;
use crate::event::{Event, EventRef};
use crate::rules::{Aggregate, Condition, ThresholdPattern};
use crate::time::{Duration, Timestamp};

/// The entries of a sliding window and its edge-trigger state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SlidingWindow {
    /// Entries sorted by (time, ordinal).
    entries: VecDeque<Entry>,
    /// Distinct values in the window with their number of entries.
    #[serde(default)]
    distinct: BTreeMap<String, u32>,
    /// The condition held at the last evaluation (so it cannot fire again
    /// until it has been false).
    #[serde(default)]
    holding: bool,
    /// The most recent event, for the message template.
    #[serde(default)]
    last: Option<Arc<Event>>,
    /// An instant at which entries left when the watermark had only reached
    /// it: events at that instant may still come, so the condition is
    /// evaluated there once one arrives or the watermark passes it.
    #[serde(default)]
    unsettled: Option<Timestamp>,
    /// The id of the alert that set `holding`, until the condition stops
    /// holding and resolves it.
    #[serde(default)]
    fired: Option<String>,
}

/// What bounds the window an evaluation looks at.
#[derive(Debug, Clone, Copy)]
enum Span {
    /// `(at - size, at]`.
    Time(Duration),
    /// The last N entries (a count window).
    Count,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    event: EventRef,
    /// The first aggregate's sample.
    sample: Sample,
    /// The other aggregates' samples (state format 3; empty in the single
    /// form).
    #[serde(default)]
    more: Vec<Sample>,
}

impl SlidingWindow {
    /// True when nothing needs remembering.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && !self.holding && self.unsettled.is_none() && self.fired.is_none()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The watermark at which an entry next leaves (or an instant settles).
    pub fn next_deadline(&self, size: Duration) -> Option<Timestamp> {
        match self.unsettled {
            // NB: the watermark must pass the instant, not just reach it.
            Some(instant) => Some(instant.plus(Duration(1))),
            None => self.entries.front().map(|e| e.event.time.plus(size)),
        }
    }

    /// Whether an event at `time` comes too late for every window still to
    /// be evaluated: its entry would already have left.
    pub fn closed_for(&self, time: Timestamp, size: Duration, watermark: Timestamp) -> bool {
        time.plus(size) <= watermark
    }

    /// Adds one matching event and evaluates the condition.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add(
        &mut self,
        env: &RuleEnv<'_>,
        pattern: &ThresholdPattern,
        size: Duration,
        event: &Arc<Event>,
        ordinal: u64,
        samples: Samples,
        reference: EventRef,
        full: Option<&Arc<Event>>,
        alerts: &mut Vec<Alert>,
        dropped: &mut DropCounters,
    ) {
        let cap = env.config.max_window_entries.max(1);
        self.insert(
            Entry {
                event: reference,
                sample: samples.first,
                more: samples.more,
            },
            full,
            cap,
            dropped,
        );
        // This evaluation also covers entries that left at this instant.
        self.unsettled = None;
        self.evaluate(
            env,
            pattern,
            Span::Time(size),
            event.time,
            Some(ordinal),
            Some(event),
            alerts,
        );
    }

    /// Adds one matching event to a window of the last `n` and evaluates
    /// the condition over them (`count.rs`: no timers, nothing expires).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_last(
        &mut self,
        env: &RuleEnv<'_>,
        pattern: &ThresholdPattern,
        n: u32,
        event: &Arc<Event>,
        ordinal: u64,
        samples: Samples,
        reference: EventRef,
        full: Option<&Arc<Event>>,
        alerts: &mut Vec<Alert>,
        dropped: &mut DropCounters,
    ) {
        let cap = env.config.max_window_entries.max(1);
        self.insert(
            Entry {
                event: reference,
                sample: samples.first,
                more: samples.more,
            },
            full,
            cap,
            dropped,
        );
        // NB: the oldest entry leaves when the window holds more than n: the
        // window's own rule, not a limit, so not counted as a drop.
        while self.entries.len() > n as usize {
            if let Some(old) = self.entries.pop_front() {
                self.forget(&old);
            }
        }
        self.evaluate(
            env,
            pattern,
            Span::Count,
            event.time,
            Some(ordinal),
            Some(event),
            alerts,
        );
    }

    /// Expires entries the watermark reached, evaluating at each instant.
    pub(super) fn advance(
        &mut self,
        env: &RuleEnv<'_>,
        pattern: &ThresholdPattern,
        size: Duration,
        watermark: Timestamp,
        alerts: &mut Vec<Alert>,
    ) {
        if let Some(instant) = self.unsettled.filter(|i| *i < watermark) {
            self.unsettled = None;
            self.evaluate(env, pattern, Span::Time(size), instant, None, None, alerts);
        }
        while let Some(leave) = self.entries.front().map(|e| e.event.time.plus(size)) {
            if leave > watermark {
                break;
            }
            while self
                .entries
                .front()
                .is_some_and(|e| e.event.time.plus(size) <= leave)
            {
                if let Some(entry) = self.entries.pop_front() {
                    self.forget(&entry);
                }
            }
            if leave == watermark {
                self.unsettled = Some(leave);
                break;
            }
            self.evaluate(env, pattern, Span::Time(size), leave, None, None, alerts);
        }
        if self.entries.is_empty() {
            self.last = None;
        }
    }

    /// A JSON view of the window.
    pub fn view(&self) -> Value {
        let (sum, min, max) = fold_numbers(self.entries.iter().map(|e| &e.sample));
        json!({
            "kind": "sliding",
            "count": self.entries.len(),
            "sum": sum, "min": min, "max": max,
            "distinct": self.distinct.len(),
            "holding": self.holding,
            "firing": self.fired,
            "oldest": self.entries.front().map(|e| e.event.time),
            "newest": self.entries.back().map(|e| e.event.time),
        })
    }

    fn insert(
        &mut self,
        entry: Entry,
        full: Option<&Arc<Event>>,
        cap: usize,
        dropped: &mut DropCounters,
    ) {
        if let Sample::Text(t) = &entry.sample {
            *self.distinct.entry(t.clone()).or_insert(0) += 1;
        }
        if let Some(e) = full {
            self.last = Some(Arc::clone(e));
        }
        let key = (entry.event.time, entry.event.ordinal);
        let at = self
            .entries
            .iter()
            .rposition(|e| (e.event.time, e.event.ordinal) <= key)
            .map_or(0, |i| i + 1);
        self.entries.insert(at, entry);
        while self.entries.len() > cap {
            // NB: the oldest entries go first, so the window keeps describing
            // the most recent activity; every one dropped is counted.
            if let Some(old) = self.entries.pop_front() {
                self.forget(&old);
                dropped.window_entries += 1;
            }
        }
    }

    fn forget(&mut self, entry: &Entry) {
        if let Sample::Text(t) = &entry.sample {
            if let Some(n) = self.distinct.get_mut(t) {
                *n -= 1;
                if *n == 0 {
                    self.distinct.remove(t);
                }
            }
        }
    }

    /// The value of aggregate `i` over the entries.
    fn value(&self, pattern: &ThresholdPattern, i: usize) -> Option<f64> {
        let aggregate = &pattern.aggregates.get(i)?.aggregate;
        let count = self.entries.len() as u64;
        if i == 0 {
            let (sum, min, max) = fold_numbers(self.entries.iter().map(|e| &e.sample));
            return value_of(aggregate, count, sum, min, max, self.distinct.len());
        }
        let samples = self.entries.iter().filter_map(|e| e.more.get(i - 1));
        let (sum, min, max) = fold_numbers(samples.clone());
        let distinct = match aggregate {
            Aggregate::Distinct(_) => samples
                .filter_map(|s| match s {
                    Sample::Text(t) => Some(t),
                    _ => None,
                })
                .collect::<BTreeSet<_>>()
                .len(),
            _ => 0,
        };
        value_of(aggregate, count, sum, min, max, distinct)
    }

    /// Evaluates the condition at time `at`; fires on a false → true edge.
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &mut self,
        env: &RuleEnv<'_>,
        pattern: &ThresholdPattern,
        span: Span,
        at: Timestamp,
        ordinal: Option<u64>,
        event: Option<&Arc<Event>>,
        alerts: &mut Vec<Alert>,
    ) {
        let holds = condition_holds(env, pattern, |i| self.value(pattern, i));
        if holds && !self.holding {
            // Explanations list events in event-time order, ties in
            // acceptance order (see `Alert::events`).
            let mut listed: Vec<&EventRef> = self.entries.iter().map(|e| &e.event).collect();
            listed.sort_by_key(|e| (e.time, e.ordinal));
            let mut explanation = Explanation::default();
            for e in listed {
                explanation.push(e.clone(), env.config.max_explained_events);
            }
            let (kind, window_start) = match span {
                Span::Time(size) => ("sliding", at.minus(size)),
                Span::Count => ("count", self.entries.front().map_or(at, |e| e.event.time)),
            };
            let mut id = env.alert_id(kind);
            id.add_i64(at.millis()).add_u64(ordinal.unwrap_or(0));
            let fired = threshold_alert(
                env,
                pattern,
                id,
                ThresholdFacts {
                    time: at,
                    window_start,
                    window_end: at,
                    values: (0..pattern.aggregates.len())
                        .map(|i| self.value(pattern, i))
                        .collect(),
                    count: self.entries.len() as u64,
                    explanation,
                    last: self.last.as_deref(),
                    event: event.map(|e| &**e),
                },
            );
            self.fired = Some(fired.id.clone());
            alerts.push(fired);
        } else if !holds && self.holding {
            // The aggregate fell back across its bound: the alert's
            // pattern has ended.
            if let Some(firing) = self.fired.take() {
                let by = event.zip(ordinal).map(|(e, n)| env.reference(e, n));
                // The aggregates as they are now, named as in the alert.
                let mut values = Map::new();
                match &pattern.condition {
                    Condition::Compare(_) => {
                        values.insert("value".into(), json!(self.value(pattern, 0)));
                    }
                    Condition::Expr(_) => {
                        for (i, named) in pattern.aggregates.iter().enumerate() {
                            values.insert(named.name.to_string(), json!(self.value(pattern, i)));
                        }
                    }
                }
                alerts.push(env.resolution(&firing, at, by, values));
            }
        }
        self.holding = holds;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sliding window as format 2 wrote it (one sample per entry).
    #[derive(Serialize)]
    struct SlidingWindowV2 {
        entries: VecDeque<EntryV2>,
        distinct: BTreeMap<String, u32>,
        holding: bool,
        last: Option<Arc<Event>>,
        unsettled: Option<Timestamp>,
    }

    #[derive(Serialize)]
    struct EntryV2 {
        event: EventRef,
        sample: Sample,
    }

    #[test]
    fn a_format_2_sliding_window_reads_with_no_other_aggregates() {
        let event = Event {
            id: None,
            key: "k".into(),
            event_type: "x".into(),
            time: Timestamp(5),
            data: Default::default(),
        };
        let old = SlidingWindowV2 {
            entries: VecDeque::from([EntryV2 {
                event: EventRef::of(&event, 1),
                sample: Sample::Number(4.0),
            }]),
            distinct: BTreeMap::new(),
            holding: true,
            last: None,
            unsettled: None,
        };
        let bytes = rmp_serde::to_vec(&old).expect("serializes");
        let window: SlidingWindow = rmp_serde::from_slice(&bytes).expect("format 2 reads");
        assert_eq!(window.entries.len(), 1);
        assert_eq!(window.entries[0].sample, Sample::Number(4.0));
        assert!(window.entries[0].more.is_empty());
        assert!(window.holding);
    }
}
