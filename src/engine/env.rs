//! What a pattern needs to know about the rule and entity it runs for, and
//! the one place alerts are assembled.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::engine::alert::{Alert, AlertIdBuilder};
use crate::engine::EngineConfig;
use crate::event::{Event, EventRef};
use crate::rules::expr::{Binding, EvalContext};
use crate::rules::Rule;
use crate::time::Timestamp;

/// One rule running for one key.
pub(crate) struct RuleEnv<'a> {
    pub rule: &'a Rule,
    pub key: &'a str,
    pub entity: &'a Map<String, Value>,
    pub config: &'a EngineConfig,
    /// The current event's type, shared (see `RuleSet::type_name`).
    pub event_type: Option<&'a Arc<str>>,
}

/// The parts of an alert a pattern decides.
pub(crate) struct Fired<'a> {
    /// Identifies the match; see `AlertIdBuilder`.
    pub id: AlertIdBuilder,
    pub time: Timestamp,
    pub events: Vec<EventRef>,
    pub values: Map<String, Value>,
    /// Bindings and variables for the message template, in the slot order
    /// of `rules::model::template_scope`.
    pub bindings: &'a [Binding<'a>],
    pub variables: &'a [Value],
    /// The match's last event, if an event (not a timer) completed it.
    pub event: Option<&'a Event>,
}

impl<'a> RuleEnv<'a> {
    pub fn new(
        rule: &'a Rule,
        key: &'a str,
        entity: &'a Map<String, Value>,
        config: &'a EngineConfig,
    ) -> Self {
        RuleEnv {
            rule,
            key,
            entity,
            config,
            event_type: None,
        }
    }

    /// A reference to `event`, the `ordinal`-th of the entity, sharing the
    /// type name when the engine knows it.
    pub fn reference(&self, event: &Event, ordinal: u64) -> EventRef {
        match self.event_type {
            Some(name) => EventRef::named(event, ordinal, name),
            None => EventRef::of(event, ordinal),
        }
    }

    /// An evaluation context for `event` with `bindings`.
    pub fn ctx<'b>(
        &'b self,
        event: Option<&'b Event>,
        bindings: &'b [Binding<'b>],
    ) -> EvalContext<'b> {
        EvalContext {
            key: self.key,
            event,
            entity: self.entity,
            bindings,
            variables: &[],
        }
    }

    /// Starts an alert id for a match of `kind` of this rule under this key.
    pub fn alert_id(&self, kind: &str) -> AlertIdBuilder {
        AlertIdBuilder::new(&self.rule.id, self.rule.version, self.key, kind)
    }

    /// The values every template may use first: rule id and severity.
    pub fn common_variables(&self) -> [Value; 2] {
        [
            Value::String(self.rule.id.to_string()),
            Value::String(self.rule.severity.as_str().to_owned()),
        ]
    }

    /// Assembles the alert, rendering the message.
    pub fn alert(&self, fired: Fired<'_>) -> Alert {
        let message = match &self.rule.message {
            Some(template) => template.render(&EvalContext {
                key: self.key,
                event: fired.event,
                entity: self.entity,
                bindings: fired.bindings,
                variables: fired.variables,
            }),
            None => match &self.rule.document.description {
                Some(description) => format!("{}: {description} ({})", self.rule.id, self.key),
                None => format!("{} fired for {}", self.rule.id, self.key),
            },
        };
        Alert {
            id: fired.id.finish(),
            rule: Arc::clone(&self.rule.id),
            rule_version: self.rule.version,
            key: self.key.to_owned(),
            severity: self.rule.severity,
            mode: self.rule.mode,
            time: fired.time,
            message,
            events: fired.events,
            values: fired.values,
            resolves: None,
        }
    }

    /// The resolution of the alert `firing` of this rule and key, at `time`,
    /// by `event` (none when time alone ended it: a window's entries left).
    /// Its id derives from the firing alert's, so a replay yields it again.
    pub fn resolution(
        &self,
        firing: &str,
        time: Timestamp,
        event: Option<EventRef>,
        mut values: Map<String, Value>,
    ) -> Alert {
        let mut id = self.alert_id("resolved");
        id.add_str(firing);
        let message = match &event {
            Some(e) => format!(
                "resolved: {} for {} ({} at {})",
                self.rule.id, self.key, e.event_type, e.time
            ),
            None => format!("resolved: {} for {} at {time}", self.rule.id, self.key),
        };
        values.insert("resolves".into(), Value::String(firing.to_owned()));
        Alert {
            id: id.finish(),
            rule: Arc::clone(&self.rule.id),
            rule_version: self.rule.version,
            key: self.key.to_owned(),
            severity: self.rule.severity,
            mode: self.rule.mode,
            time,
            message,
            events: event.into_iter().collect(),
            values,
            resolves: Some(firing.to_owned()),
        }
    }
}
