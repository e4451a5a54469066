//! Small helpers shared by the `engine_*` tests, so that each test reads like
//! the statement it checks: rules are YAML, times are seconds after `T0`,
//! and a [`World`] feeds events to per-key states the way the service does.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use cepheus::engine::{Alert, Engine, EngineConfig, EventOutcome, KeyState, RuleSet};
use cepheus::event::Event;
use cepheus::rules::{self, Format, Rule, RuleLimits};
use cepheus::time::{Duration, Timestamp};
use serde_json::{json, Map, Value};

/// 2026-01-01T00:00:00Z: a whole number of days (so of hours and minutes)
/// since the Unix epoch, so windows aligned to the epoch start here.
pub const T0: i64 = 1_767_225_600_000;

/// The key most tests use.
pub const KEY: &str = "k";

/// `secs` seconds after `T0` (millisecond precision).
pub fn at(secs: f64) -> Timestamp {
    Timestamp(T0 + (secs * 1000.0).round() as i64)
}

/// Seconds after `T0`.
pub fn secs(t: Timestamp) -> f64 {
    (t.millis() - T0) as f64 / 1000.0
}

/// The rule in `yaml`, compiled at version 1.
pub fn rule(yaml: &str) -> Arc<Rule> {
    rule_version(yaml, 1)
}

/// The rule in `yaml`, compiled at `version`.
pub fn rule_version(yaml: &str, version: u64) -> Arc<Rule> {
    match rules::load(yaml, Format::Yaml, version, &RuleLimits::default()) {
        Ok(rule) => Arc::new(rule),
        Err(problems) => panic!("the test rule does not compile:\n{yaml}\n{problems:#?}"),
    }
}

/// An event of `key` with `event_type` at `secs` after `T0`.
pub fn event(key: &str, event_type: &str, secs: f64, data: Value) -> Arc<Event> {
    let data: Map<String, Value> = match data {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        other => panic!("event data must be an object, not {other}"),
    };
    Arc::new(Event {
        id: None,
        key: key.to_owned(),
        event_type: event_type.to_owned(),
        time: at(secs),
        data,
    })
}

/// Some entities and the engine that evaluates their events: the engine
/// alone, fed the way an entity actor feeds it.
///
/// What it returns are the *firing* alerts; resolutions (`Alert::resolves`)
/// are set aside in `resolutions`, where the tests of resolved
/// notifications read them.
pub struct World {
    pub engine: Engine,
    pub states: BTreeMap<String, KeyState>,
    pub resolutions: Vec<Alert>,
}

impl World {
    /// Rules from YAML (version 1), default settings.
    pub fn new(rules: &[&str]) -> World {
        World::with_config(rules, EngineConfig::default())
    }

    /// Rules from YAML (version 1) with `config`.
    pub fn with_config(rules: &[&str], config: EngineConfig) -> World {
        World::of(rules.iter().map(|r| rule(r)).collect(), config)
    }

    /// Compiled rules with `config`.
    pub fn of(rules: Vec<Arc<Rule>>, config: EngineConfig) -> World {
        World {
            engine: Engine::new(Arc::new(RuleSet::new(rules)), config),
            states: BTreeMap::new(),
            resolutions: Vec::new(),
        }
    }

    /// Rules from YAML, with `allowed_lateness` seconds.
    pub fn with_lateness(rules: &[&str], lateness_secs: i64) -> World {
        World::with_config(
            rules,
            EngineConfig {
                allowed_lateness: Duration::from_secs(lateness_secs),
                ..EngineConfig::default()
            },
        )
    }

    /// Replaces the rule set, keeping every entity's state (as the service
    /// does when a rule is created, replaced or deleted).
    pub fn replace_rules(&mut self, rules: Vec<Arc<Rule>>) {
        let config = self.engine.config().clone();
        self.engine = Engine::new(Arc::new(RuleSet::new(rules)), config);
    }

    /// The state of `key`, created empty on first use.
    pub fn state(&mut self, key: &str) -> &mut KeyState {
        self.states
            .entry(key.to_owned())
            .or_insert_with(|| KeyState::new(key))
    }

    /// Evaluates `event` in the state of `key` only.
    pub fn deliver(&mut self, key: &str, event: &Arc<Event>) -> EventOutcome {
        let state = self
            .states
            .entry(key.to_owned())
            .or_insert_with(|| KeyState::new(key));
        let mut outcome = self.engine.on_event(state, event);
        outcome.alerts = self.set_aside_resolutions(outcome.alerts);
        outcome
    }

    /// Moves the resolutions of `alerts` to `self.resolutions`.
    fn set_aside_resolutions(&mut self, alerts: Vec<Alert>) -> Vec<Alert> {
        let (resolutions, firing): (Vec<Alert>, Vec<Alert>) =
            alerts.into_iter().partition(|a| a.is_resolution());
        self.resolutions.extend(resolutions);
        firing
    }

    /// Sends an event of `KEY` with no data; returns its alerts.
    pub fn send(&mut self, event_type: &str, secs: f64) -> Vec<Alert> {
        self.send_data(event_type, secs, Value::Null)
    }

    /// Sends an event of `KEY` with `data`; returns its alerts.
    pub fn send_data(&mut self, event_type: &str, secs: f64, data: Value) -> Vec<Alert> {
        self.outcome(KEY, event_type, secs, data).alerts
    }

    /// Sends an event of `key` to its own entity; returns the whole outcome.
    pub fn outcome(&mut self, key: &str, event_type: &str, secs: f64, data: Value) -> EventOutcome {
        let e = event(key, event_type, secs, data);
        self.deliver(key, &e)
    }

    /// Sends `event` to every entity `Engine::routes` names (its own key and
    /// its `partition_by` keys); returns all alerts.
    pub fn route(&mut self, event: &Arc<Event>) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for key in self.engine.routes(event) {
            alerts.extend(self.deliver(&key, event).alerts);
        }
        alerts
    }

    /// Advances `KEY`'s clock to `secs`; returns the alerts its timers fire.
    pub fn advance(&mut self, secs: f64) -> Vec<Alert> {
        self.advance_key(KEY, secs)
    }

    /// Advances `key`'s clock to `secs`.
    pub fn advance_key(&mut self, key: &str, secs: f64) -> Vec<Alert> {
        let state = self
            .states
            .entry(key.to_owned())
            .or_insert_with(|| KeyState::new(key));
        let alerts = self.engine.advance_to(state, at(secs));
        self.set_aside_resolutions(alerts)
    }
}

/// The alerts' times, in seconds after `T0`.
pub fn times(alerts: &[Alert]) -> Vec<f64> {
    alerts.iter().map(|a| secs(a.time)).collect()
}

/// The times (seconds after `T0`) of the events an alert lists.
pub fn event_times(alert: &Alert) -> Vec<f64> {
    alert.events.iter().map(|e| secs(e.time)).collect()
}

/// One value of an alert, e.g. `failures.count`.
pub fn value<'a>(alert: &'a Alert, name: &str) -> &'a Value {
    alert
        .values
        .get(name)
        .unwrap_or_else(|| panic!("the alert has no value `{name}`: {:#?}", alert.values))
}

/// The only alert of `alerts`.
pub fn only(alerts: Vec<Alert>) -> Alert {
    match <[Alert; 1]>::try_from(alerts) {
        Ok([alert]) => alert,
        Err(alerts) => panic!(
            "expected exactly one alert, got {}: {alerts:#?}",
            alerts.len()
        ),
    }
}

/// `{"v": n}`: the numeric payload threshold tests aggregate.
pub fn v(n: f64) -> Value {
    json!({ "v": n })
}
