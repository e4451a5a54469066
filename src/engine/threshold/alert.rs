//! How a threshold's alert reads, whatever its window: the one place
//! values, template variables and ids of threshold alerts are assembled.

use serde_json::{json, Map, Value};

use crate::engine::aggregate::Accumulator;
use crate::engine::alert::{Alert, AlertIdBuilder, Explanation};
use crate::engine::env::{Fired, RuleEnv};
use crate::event::Event;
use crate::rules::expr::Binding;
use crate::rules::{Condition, ThresholdPattern};

use super::condition_holds;
use crate::time::Timestamp;

/// What a threshold alert reports.
pub(super) struct ThresholdFacts<'a> {
    pub time: Timestamp,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    /// Every aggregate's value, in order (`None`: it has none).
    pub values: Vec<Option<f64>>,
    pub count: u64,
    pub explanation: Explanation,
    pub last: Option<&'a Event>,
    pub event: Option<&'a Event>,
}

pub(super) fn closed_window_alert(
    env: &RuleEnv<'_>,
    pattern: &ThresholdPattern,
    kind: &str,
    start: Timestamp,
    end: Timestamp,
    acc: &Accumulator,
) -> Option<Alert> {
    let value = |i: usize| acc.value(&pattern.aggregates, i);
    if !condition_holds(env, pattern, value) {
        return None;
    }
    let mut id = env.alert_id(kind);
    id.add_i64(start.millis()).add_i64(end.millis());
    Some(threshold_alert(
        env,
        pattern,
        id,
        ThresholdFacts {
            time: end,
            window_start: start,
            window_end: end,
            values: (0..pattern.aggregates.len()).map(value).collect(),
            count: acc.count,
            explanation: acc.explanation.clone(),
            last: acc.last.as_deref(),
            event: None,
        },
    ))
}

pub(super) fn threshold_alert(
    env: &RuleEnv<'_>,
    pattern: &ThresholdPattern,
    id: AlertIdBuilder,
    facts: ThresholdFacts<'_>,
) -> Alert {
    let mut values = Map::new();
    let value_of = |v: Option<f64>| v.map_or(Value::Null, number);
    // NB: the variables are for the message template only.
    let templated = env.rule.message.is_some();
    let text = |t: Timestamp| {
        if templated {
            Value::String(t.to_rfc3339())
        } else {
            Value::Null
        }
    };
    // Slots of template_scope::THRESHOLD_VARIABLES, then (with `condition`)
    // each aggregate by name.
    let [rule, severity] = env.common_variables();
    let mut variables = vec![rule, severity];
    match &pattern.condition {
        Condition::Compare(comparison) => {
            let value = facts.values.first().copied().flatten().unwrap_or_default();
            values.insert("aggregate".into(), json!(pattern.aggregate().name()));
            values.insert("value".into(), number(value));
            values.insert("limit".into(), number(comparison.limit));
            variables.extend([
                number(value),
                json!(facts.count),
                text(facts.window_start),
                text(facts.window_end),
                number(comparison.limit),
            ]);
        }
        Condition::Expr(condition) => {
            for (named, value) in pattern.aggregates.iter().zip(&facts.values) {
                values.insert(named.name.to_string(), value_of(*value));
            }
            values.insert("condition".into(), json!(condition.source()));
            variables.extend([
                Value::Null,
                json!(facts.count),
                text(facts.window_start),
                text(facts.window_end),
                Value::Null,
            ]);
            variables.extend(facts.values.iter().map(|v| value_of(*v)));
        }
    }
    values.insert("count".into(), json!(facts.count));
    values.insert("window_start".into(), json!(facts.window_start));
    values.insert("window_end".into(), json!(facts.window_end));
    if facts.explanation.omitted > 0 {
        values.insert("events_omitted".into(), json!(facts.explanation.omitted));
    }
    let bindings = [Binding {
        count: u64::from(facts.last.is_some()),
        first: facts.last,
        last: facts.last,
    }];
    env.alert(Fired {
        id,
        time: facts.time,
        events: facts.explanation.events,
        values,
        bindings: &bindings,
        variables: &variables,
        event: facts.event,
    })
}

/// A number as JSON: integral values as integers (`5`, not `5.0`).
pub(super) fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        json!(n as i64)
    } else {
        json!(n)
    }
}

/// One window's summary, for the entity view.
pub(super) fn window_json(start: Timestamp, acc: &Accumulator) -> Value {
    json!({
        "start": start,
        "count": acc.count,
        "sum": acc.sum, "min": acc.min, "max": acc.max,
        "distinct": acc.distinct.len(),
    })
}
