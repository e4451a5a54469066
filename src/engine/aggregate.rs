//! Aggregates over a window's events, kept as bounded summaries.
//!
//! Count, sum, min, max and avg are O(1) per window; `distinct` keeps the
//! set of values (bounded by `max_window_entries`, extra values counted as
//! dropped). Sums add in the order events were accepted, so two runs over
//! the same stream give bit-identical results.
//!
//! A threshold has one aggregate or several (`aggregates:`); an event
//! enters a window only when every one of them has a value for it, so they
//! all summarize the same events and `count` is the window's. The first
//! aggregate keeps the layout of the single form; the others follow
//! (`Samples::more`, `Accumulator::more`), so states written before there
//! were several read unchanged.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::engine::alert::Explanation;
use crate::event::{Event, EventRef};
use crate::rules::expr::EvalContext;
use crate::rules::{Aggregate, NamedAggregate};

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

/// What one event contributes to every aggregate of its threshold.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Samples {
    /// The first aggregate's.
    pub first: Sample,
    /// The others', in order (empty in the single form).
    pub more: Vec<Sample>,
}

impl Samples {
    /// The event's contribution to each aggregate, or `None` when one of
    /// them has no value for it: the event then stays out of the window.
    pub fn of(aggregates: &[NamedAggregate], ctx: &EvalContext<'_>) -> Option<Samples> {
        let (first, rest) = aggregates.split_first()?;
        let first = Sample::of(&first.aggregate, ctx)?;
        let mut more = Vec::with_capacity(rest.len());
        for a in rest {
            more.push(Sample::of(&a.aggregate, ctx)?);
        }
        Some(Samples { first, more })
    }
}

/// Sum, min, max and distinct values of one aggregate after the first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub sum: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub distinct: BTreeSet<String>,
}

/// Adds one sample to a summary's parts; false when a distinct value had
/// to be left out because the set holds `max_distinct`.
fn fold_in(
    sample: &Sample,
    (sum, min, max, distinct): (
        &mut f64,
        &mut Option<f64>,
        &mut Option<f64>,
        &mut BTreeSet<String>,
    ),
    max_distinct: usize,
) -> bool {
    match sample {
        Sample::Unit => true,
        Sample::Number(n) => {
            *sum += n;
            *min = Some(min.map_or(*n, |m| m.min(*n)));
            *max = Some(max.map_or(*n, |m| m.max(*n)));
            true
        }
        Sample::Text(t) => {
            if distinct.contains(t) {
                true
            } else if distinct.len() >= max_distinct {
                false
            } else {
                distinct.insert(t.clone());
                true
            }
        }
    }
}

/// Folds one summary's parts into another's (sessions that merge).
fn merge_into(
    (sum, min, max, distinct): (
        &mut f64,
        &mut Option<f64>,
        &mut Option<f64>,
        &mut BTreeSet<String>,
    ),
    other: Summary,
    max_distinct: usize,
) -> bool {
    *sum += other.sum;
    *min = match (*min, other.min) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    *max = match (*max, other.max) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let mut kept = true;
    for value in other.distinct {
        if distinct.len() >= max_distinct && !distinct.contains(&value) {
            kept = false;
        } else {
            distinct.insert(value);
        }
    }
    kept
}

/// A summary of the events of one window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub(crate) struct Accumulator {
    pub count: u64,
    /// The first aggregate's parts.
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
    /// The parts of every aggregate after the first (state format 3).
    #[serde(default)]
    pub more: Vec<Summary>,
}

impl Accumulator {
    /// Adds one event. Returns false if a distinct value had to be dropped
    /// because the set is full (the event still counts).
    pub fn add(
        &mut self,
        samples: &Samples,
        event: EventRef,
        full: Option<&Arc<Event>>,
        limits: (usize, usize),
    ) -> bool {
        let (max_distinct, max_explained) = limits;
        self.count += 1;
        let first = (
            &mut self.sum,
            &mut self.min,
            &mut self.max,
            &mut self.distinct,
        );
        let mut kept = fold_in(&samples.first, first, max_distinct);
        if self.more.len() < samples.more.len() {
            self.more.resize(samples.more.len(), Summary::default());
        }
        for (sample, summary) in samples.more.iter().zip(&mut self.more) {
            let parts = (
                &mut summary.sum,
                &mut summary.min,
                &mut summary.max,
                &mut summary.distinct,
            );
            kept &= fold_in(sample, parts, max_distinct);
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
        let theirs = Summary {
            sum: other.sum,
            min: other.min,
            max: other.max,
            distinct: other.distinct,
        };
        let first = (
            &mut self.sum,
            &mut self.min,
            &mut self.max,
            &mut self.distinct,
        );
        let mut kept = merge_into(first, theirs, max_distinct);
        if self.more.len() < other.more.len() {
            self.more.resize(other.more.len(), Summary::default());
        }
        for (summary, theirs) in self.more.iter_mut().zip(other.more) {
            let parts = (
                &mut summary.sum,
                &mut summary.min,
                &mut summary.max,
                &mut summary.distinct,
            );
            kept &= merge_into(parts, theirs, max_distinct);
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

    /// The value of aggregate `i` of `aggregates`, or `None` when it has
    /// none (avg, min or max of no numbers).
    pub fn value(&self, aggregates: &[NamedAggregate], i: usize) -> Option<f64> {
        let aggregate = &aggregates.get(i)?.aggregate;
        if i == 0 {
            return value_of(
                aggregate,
                self.count,
                self.sum,
                self.min,
                self.max,
                self.distinct.len(),
            );
        }
        let empty = Summary::default();
        let s = self.more.get(i - 1).unwrap_or(&empty);
        value_of(aggregate, self.count, s.sum, s.min, s.max, s.distinct.len())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A window summary as format 2 wrote it (one aggregate).
    #[derive(Serialize)]
    struct AccumulatorV2 {
        count: u64,
        sum: f64,
        min: Option<f64>,
        max: Option<f64>,
        distinct: BTreeSet<String>,
        last: Option<Arc<Event>>,
        explanation: Explanation,
    }

    #[test]
    fn a_format_2_window_summary_reads_with_no_other_aggregates() {
        let old = AccumulatorV2 {
            count: 3,
            sum: 12.5,
            min: Some(1.0),
            max: Some(9.0),
            distinct: BTreeSet::new(),
            last: None,
            explanation: Explanation::default(),
        };
        // Positional, as entity snapshots are stored.
        let bytes = rmp_serde::to_vec(&old).expect("serializes");
        let acc: Accumulator = rmp_serde::from_slice(&bytes).expect("format 2 reads");
        assert_eq!(acc.count, 3);
        assert_eq!(acc.sum, 12.5);
        assert_eq!(acc.max, Some(9.0));
        assert!(acc.more.is_empty());
    }
}
