//! A small in-memory history of what the service did: events accepted and
//! alerts published per rule, in 10-second steps over the last hour, for the
//! live page's charts (no external service).
//!
//! Bounded: 360 steps, each holding one counter per rule that alerted in
//! it. Lost at a restart, as a chart's recent past may be.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use utoipa::ToSchema;

use crate::time::Timestamp;

/// Seconds per step.
pub const STEP_SECONDS: i64 = 10;
/// Steps kept (an hour).
pub const STEPS: usize = 360;

/// One step of the history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Step {
    /// Start of the step.
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
    /// Events accepted during it.
    pub events: u64,
    /// Alerts published during it, by rule.
    pub alerts: BTreeMap<String, u64>,
}

/// The last hour, step by step.
#[derive(Default)]
pub struct History {
    steps: Mutex<VecDeque<Step>>,
}

impl History {
    fn with_step<T>(&self, now: Timestamp, f: impl FnOnce(&mut Step) -> T) -> T {
        let start = Timestamp(now.millis().div_euclid(STEP_SECONDS * 1000) * STEP_SECONDS * 1000);
        let mut steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        if steps.back().is_none_or(|s| s.start < start) {
            steps.push_back(Step {
                start,
                ..Step::default()
            });
            while steps.len() > STEPS {
                steps.pop_front();
            }
        }
        // NB: a wall clock that went back lands in the newest step.
        let step = steps.back_mut().expect("a step was just pushed");
        f(step)
    }

    /// Counts events accepted at `now`.
    pub fn events(&self, now: Timestamp, n: usize) {
        if n > 0 {
            self.with_step(now, |s| s.events += n as u64);
        }
    }

    /// Counts an alert of `rule` published at `now`.
    pub fn alert(&self, now: Timestamp, rule: &str) {
        self.with_step(now, |s| match s.alerts.get_mut(rule) {
            Some(n) => *n += 1,
            None => {
                s.alerts.insert(rule.to_owned(), 1);
            }
        });
    }

    /// The steps of the last `minutes` before `now`, oldest first, with the
    /// steps in which nothing happened filled in as zeros.
    pub fn last(&self, now: Timestamp, minutes: u32) -> Vec<Step> {
        let step_ms = STEP_SECONDS * 1000;
        let count = (i64::from(minutes.min(60)) * 60 / STEP_SECONDS).max(1);
        let newest = now.millis().div_euclid(step_ms) * step_ms;
        let first = newest - (count - 1) * step_ms;
        let steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        (0..count)
            .map(|i| {
                let start = Timestamp(first + i * step_ms);
                steps
                    .iter()
                    .find(|s| s.start == start)
                    .cloned()
                    .unwrap_or(Step {
                        start,
                        ..Step::default()
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_step_and_quiet_steps_are_zeros() {
        let history = History::default();
        history.events(Timestamp(1_000), 5);
        history.events(Timestamp(9_999), 1);
        history.alert(Timestamp(9_000), "r");
        history.events(Timestamp(30_000), 2);
        history.alert(Timestamp(31_000), "r");
        history.alert(Timestamp(32_000), "s");
        let steps = history.last(Timestamp(35_000), 1);
        assert_eq!(steps.len(), 6);
        assert_eq!(steps[0].start, Timestamp(-20_000));
        let events: Vec<u64> = steps.iter().map(|s| s.events).collect();
        assert_eq!(events, [0, 0, 6, 0, 0, 2]);
        assert_eq!(steps[2].alerts["r"], 1);
        assert_eq!(steps[5].alerts.len(), 2);
    }

    #[test]
    fn an_hour_is_kept_and_no_more() {
        let history = History::default();
        for i in 0..(STEPS as i64 + 50) {
            history.events(Timestamp(i * STEP_SECONDS * 1000), 1);
        }
        assert_eq!(history.steps.lock().unwrap().len(), STEPS);
    }
}
