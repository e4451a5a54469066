//! Backtests: run a rule over stored events, on event time, with fresh
//! state, and report the alerts it would have produced — or, for two
//! versions, the difference.
//!
//! A backtest reads the retained event log in acceptance order (the order
//! live entities saw it), keeps the events whose time is in `[from, to)`,
//! and at the end advances every entity's clock to `to`, as `POST
//! /v1/clock` would. It is bounded: at most `max_entities` entities and
//! `max_alerts` alerts are kept (more alerts are counted, not kept), and it
//! stops at a deadline, reporting how far it got.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use utoipa::ToSchema;

use crate::engine::{Alert, Engine, EngineConfig, KeyState, RuleSet};
use crate::event::Event;
use crate::rules::Rule;
use crate::time::Timestamp;

/// Bounds of one backtest.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Most entities kept in memory; beyond, the backtest fails.
    pub max_entities: usize,
    /// Most alerts kept per rule; beyond, they are only counted.
    pub max_alerts: usize,
    /// Wall-clock budget; beyond, the backtest stops with what it has.
    pub max_seconds: f64,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_entities: 1_000_000,
            max_alerts: 10_000,
            max_seconds: 300.0,
        }
    }
}

/// Progress of a running backtest, readable while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Log records read.
    pub records: AtomicU64,
    /// Events evaluated (in the time range).
    pub events: AtomicU64,
    /// Set to stop early.
    pub cancel: AtomicBool,
}

/// Alerts one rule produced in a backtest.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleRun {
    /// The rule's id.
    pub rule: String,
    /// The version run.
    pub version: u64,
    /// Alerts produced in all.
    pub alerts_total: u64,
    /// The alerts, up to the bound, in the order they fired.
    #[schema(value_type = Vec<Object>)]
    pub alerts: Vec<Alert>,
}

/// The outcome of a backtest.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Outcome {
    /// Events evaluated.
    pub events: u64,
    /// Entities that saw events.
    pub entities: usize,
    /// Events that were late for their entity (and not evaluated).
    pub late: u64,
    /// True when it stopped at its time budget before reading everything.
    pub truncated: bool,
    /// One run per rule given.
    pub runs: Vec<RuleRun>,
    /// With two rules: the alerts only the first produced, and only the
    /// second (matched by key, time and the events that explain them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub difference: Option<Difference>,
}

/// Alerts that differ between two versions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Difference {
    /// Alerts only the first rule produced.
    #[schema(value_type = Vec<Object>)]
    pub only_in_a: Vec<Alert>,
    /// Alerts only the second rule produced.
    #[schema(value_type = Vec<Object>)]
    pub only_in_b: Vec<Alert>,
    /// Alerts both produced.
    pub in_both: u64,
}

/// Why a backtest failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BacktestError {
    /// More entities than the bound.
    #[error("the backtest needs more than {0} entities in memory; narrow the time range")]
    TooManyEntities(usize),
    /// Reading the log failed.
    #[error("cannot read the event log: {0}")]
    Store(String),
}

/// Runs `rules` (each alone, with fresh state) over `events` (in acceptance
/// order), keeping the events with time in `[from, to)`.
pub fn run(
    rules: &[Arc<Rule>],
    events: impl Iterator<Item = Result<Vec<Event>, String>>,
    from: Timestamp,
    to: Timestamp,
    config: &EngineConfig,
    bounds: &Bounds,
    progress: &Progress,
) -> Result<Outcome, BacktestError> {
    let started = Instant::now();
    let engines: Vec<Engine> = rules
        .iter()
        .map(|rule| Engine::new(Arc::new(RuleSet::new([Arc::clone(rule)])), config.clone()))
        .collect();
    let mut entities: Vec<HashMap<String, KeyState>> = vec![HashMap::new(); engines.len()];
    let mut runs: Vec<RuleRun> = rules
        .iter()
        .map(|r| RuleRun {
            rule: r.id.to_string(),
            version: r.version,
            alerts_total: 0,
            alerts: Vec::new(),
        })
        .collect();
    let mut late = 0;
    let mut truncated = false;
    'records: for batch in events {
        let batch = batch.map_err(BacktestError::Store)?;
        progress.records.fetch_add(1, Ordering::Relaxed);
        if started.elapsed().as_secs_f64() > bounds.max_seconds
            || progress.cancel.load(Ordering::Relaxed)
        {
            truncated = true;
            break 'records;
        }
        for event in batch {
            if event.time < from || event.time >= to {
                continue;
            }
            progress.events.fetch_add(1, Ordering::Relaxed);
            let event = Arc::new(event);
            for ((engine, states), run) in engines.iter().zip(&mut entities).zip(&mut runs) {
                for key in engine.routes(&event) {
                    if !states.contains_key(&key) && states.len() >= bounds.max_entities {
                        return Err(BacktestError::TooManyEntities(bounds.max_entities));
                    }
                    let state = states
                        .entry(key.clone())
                        .or_insert_with(|| KeyState::new(key));
                    let outcome = engine.on_event(state, &event);
                    late += u64::from(outcome.late);
                    keep(run, outcome.alerts, bounds.max_alerts);
                }
            }
        }
    }
    // The end of the range is the end of input: every clock moves to `to`.
    for ((engine, states), run) in engines.iter().zip(&mut entities).zip(&mut runs) {
        let mut keys: Vec<String> = states.keys().cloned().collect();
        keys.sort();
        for key in keys {
            if let Some(state) = states.get_mut(&key) {
                keep(run, engine.advance_to(state, to), bounds.max_alerts);
            }
        }
    }
    let difference = match runs.as_slice() {
        [a, b] => Some(difference(&a.alerts, &b.alerts)),
        _ => None,
    };
    Ok(Outcome {
        events: progress.events.load(Ordering::Relaxed),
        entities: entities.iter().map(HashMap::len).max().unwrap_or(0),
        late,
        truncated,
        runs,
        difference,
    })
}

fn keep(run: &mut RuleRun, alerts: Vec<Alert>, max: usize) {
    run.alerts_total += alerts.len() as u64;
    let room = max.saturating_sub(run.alerts.len());
    run.alerts.extend(alerts.into_iter().take(room));
}

/// What makes two alerts of different versions "the same detection".
fn signature(alert: &Alert) -> (String, Timestamp, Vec<u64>) {
    (
        alert.key.clone(),
        alert.time,
        alert.events.iter().map(|e| e.ordinal).collect(),
    )
}

fn difference(a: &[Alert], b: &[Alert]) -> Difference {
    let mut in_b: BTreeMap<_, usize> = BTreeMap::new();
    for alert in b {
        *in_b.entry(signature(alert)).or_default() += 1;
    }
    let mut only_in_a = Vec::new();
    let mut in_both = 0;
    for alert in a {
        match in_b.get_mut(&signature(alert)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                in_both += 1;
            }
            _ => only_in_a.push(alert.clone()),
        }
    }
    let mut in_a: BTreeMap<_, usize> = BTreeMap::new();
    for alert in a {
        *in_a.entry(signature(alert)).or_default() += 1;
    }
    let only_in_b = b
        .iter()
        .filter(|alert| match in_a.get_mut(&signature(alert)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .cloned()
        .collect();
    Difference {
        only_in_a,
        only_in_b,
        in_both,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{load, Format, RuleLimits};

    fn rule(yaml: &str, version: u64) -> Arc<Rule> {
        Arc::new(load(yaml, Format::Yaml, version, &RuleLimits::default()).unwrap())
    }

    fn event(key: &str, kind: &str, t: i64, amount: i64) -> Event {
        Event {
            id: None,
            key: key.into(),
            event_type: kind.into(),
            time: Timestamp(t),
            data: serde_json::json!({"amount": amount})
                .as_object()
                .cloned()
                .unwrap(),
        }
    }

    #[test]
    fn two_versions_give_their_alerts_and_the_difference() {
        let v1 = rule(
            "id: big\nsequence:\n  steps:\n    - match: data.amount > 100\n",
            1,
        );
        let v2 = rule(
            "id: big\nsequence:\n  steps:\n    - match: data.amount > 500\n",
            2,
        );
        let log = vec![
            Ok(vec![
                event("a", "t", 1_000, 200),
                event("b", "t", 2_000, 800),
            ]),
            Ok(vec![
                event("a", "t", 3_000, 900),
                event("a", "t", 9_000, 950),
            ]),
        ];
        let outcome = run(
            &[v1, v2],
            log.into_iter(),
            Timestamp(0),
            Timestamp(5_000),
            &EngineConfig::default(),
            &Bounds::default(),
            &Progress::default(),
        )
        .unwrap();
        assert_eq!(outcome.events, 3, "the event at 9 s is outside [0 s, 5 s)");
        assert_eq!(outcome.runs[0].alerts_total, 3);
        assert_eq!(outcome.runs[1].alerts_total, 2);
        let diff = outcome.difference.unwrap();
        assert_eq!(diff.in_both, 2);
        assert_eq!(diff.only_in_a.len(), 1);
        assert_eq!(diff.only_in_a[0].time, Timestamp(1_000));
        assert!(diff.only_in_b.is_empty());
    }

    #[test]
    fn the_end_of_the_range_fires_due_timers_and_bounds_hold() {
        let absent = rule(
            "id: quiet\nabsence:\n  expect: type == \"hb\"\n  within: 10s\n",
            1,
        );
        let log = vec![Ok(vec![event("a", "hb", 0, 0), event("b", "hb", 0, 0)])];
        let outcome = run(
            std::slice::from_ref(&absent),
            log.clone().into_iter(),
            Timestamp(0),
            Timestamp(60_000),
            &EngineConfig::default(),
            &Bounds::default(),
            &Progress::default(),
        )
        .unwrap();
        assert_eq!(outcome.runs[0].alerts_total, 2);
        let tight = Bounds {
            max_entities: 1,
            ..Bounds::default()
        };
        assert!(matches!(
            run(
                &[absent],
                log.into_iter(),
                Timestamp(0),
                Timestamp(60_000),
                &EngineConfig::default(),
                &tight,
                &Progress::default()
            ),
            Err(BacktestError::TooManyEntities(1))
        ));
    }
}
