//! Aggregates over a window's events, kept as bounded summaries.
//!
//! Count, sum, min, max and avg are O(1) per window; `distinct` keeps the
//! set of values (bounded by `max_window_entries`, extra values counted as
//! dropped). Sums add in the order events were accepted, so two runs over
//! the same stream give bit-identical results.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::engine::alert::Explanation;
use crate::event::{Event, EventRef};
use crate::rules::expr::EvalContext;
use crate::rules::Aggregate;

/// What one event contributes to an aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Sample {
    /// `count`: the event itself.
    Unit,
    /// `sum`, `avg`, `min`, `max`: a number.
    Number(f64),
    /// `distinct`: a value's canonical text.
    Text(String),
}

impl Sample {
    /// The event's contribution, or `None` when the aggregate's expression is
    /// not a number (or not a value, for `distinct`): such events are left
    /// out of the window entirely.
    pub fn of(aggregate: &Aggregate, ctx: &EvalContext<'_>) -> Option<Sample> {
        match aggregate {
            Aggregate::Count => Some(Sample::Unit),
            Aggregate::Sum(e) | Aggregate::Avg(e) | Aggregate::Min(e) | Aggregate::Max(e) => {
                e.number(ctx).filter(|n| n.is_finite()).map(Sample::Number)
            }
            Aggregate::Distinct(e) => e.text(ctx).map(Sample::Text),
        }
    }

    fn number(&self) -> f64 {
        match self {
            Sample::Number(n) => *n,
            _ => 0.0,
        }
    }
}

/// A summary of the events of one window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct Accumulator {
    pub count: u64,
    pub sum: f64,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub distinct: BTreeSet<String>,
    /// The window's most recent event, kept for the message template.
    #[serde(default)]
    pub last: Option<Arc<Event>>,
    /// The events that explain the window, bounded.
    pub explanation: Explanation,
}

impl Accumulator {
    /// Adds one event. Returns false if a distinct value had to be dropped
    /// because the set is full (the event still counts).
    pub fn add(
        &mut self,
        sample: &Sample,
        event: EventRef,
        full: Option<&Arc<Event>>,
        limits: (usize, usize),
    ) -> bool {
        let (max_distinct, max_explained) = limits;
        self.count += 1;
        let mut kept = true;
        match sample {
            Sample::Unit => {}
            Sample::Number(n) => {
                self.sum += n;
                self.min = Some(self.min.map_or(*n, |m| m.min(*n)));
                self.max = Some(self.max.map_or(*n, |m| m.max(*n)));
            }
            Sample::Text(t) => {
                if !self.distinct.contains(t) {
                    if self.distinct.len() >= max_distinct {
                        kept = false;
                    } else {
                        self.distinct.insert(t.clone());
                    }
                }
            }
        }
        if let Some(e) = full {
            self.last = Some(Arc::clone(e));
        }
        self.explanation.push(event, max_explained);
        kept
    }

    /// Folds `other` (a later-accepted part of the same session) into `self`.
    pub fn merge(&mut self, other: Accumulator, limits: (usize, usize)) -> bool {
        let (max_distinct, max_explained) = limits;
        self.count += other.count;
        self.sum += other.sum;
        self.min = match (self.min, other.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let mut kept = true;
        for value in other.distinct {
            if self.distinct.len() >= max_distinct && !self.distinct.contains(&value) {
                kept = false;
            } else {
                self.distinct.insert(value);
            }
        }
        let newer_last = match (&self.last, &other.last) {
            (Some(_), Some(_)) => {
                other.explanation.events.last().map(|e| e.ordinal)
                    > self.explanation.events.last().map(|e| e.ordinal)
            }
            _ => true,
        };
        if newer_last && other.last.is_some() {
            self.last = other.last;
        }
        let mut events: Vec<EventRef> = std::mem::take(&mut self.explanation.events);
        events.extend(other.explanation.events);
        events.sort_by_key(|e| (e.time, e.ordinal));
        let omitted = self.explanation.omitted + other.explanation.omitted;
        let mut merged = Explanation::default();
        for e in events {
            merged.push(e, max_explained);
        }
        merged.omitted += omitted;
        self.explanation = merged;
        kept
    }

    /// The aggregate's value, or `None` when it has none (avg, min or max of
    /// no numbers).
    pub fn value(&self, aggregate: &Aggregate) -> Option<f64> {
        value_of(
            aggregate,
            self.count,
            self.sum,
            self.min,
            self.max,
            self.distinct.len(),
        )
    }
}

/// The aggregate from its parts; shared by windows and the sliding window.
pub(crate) fn value_of(
    aggregate: &Aggregate,
    count: u64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
    distinct: usize,
) -> Option<f64> {
    match aggregate {
        Aggregate::Count => Some(count as f64),
        Aggregate::Sum(_) => Some(sum),
        Aggregate::Avg(_) => (count > 0).then(|| sum / count as f64),
        Aggregate::Min(_) => min,
        Aggregate::Max(_) => max,
        Aggregate::Distinct(_) => Some(distinct as f64),
    }
}

/// The sum, min and max of samples in order (the sliding window recomputes
/// these from its entries so they never drift).
pub(crate) fn fold_numbers<'a>(
    samples: impl Iterator<Item = &'a Sample>,
) -> (f64, Option<f64>, Option<f64>) {
    let mut sum = 0.0;
    let (mut min, mut max): (Option<f64>, Option<f64>) = (None, None);
    for s in samples {
        if let Sample::Number(_) = s {
            let n = s.number();
            sum += n;
            min = Some(min.map_or(n, |m| m.min(n)));
            max = Some(max.map_or(n, |m| m.max(n)));
        }
    }
    (sum, min, max)
}
