//! Absence: an expected event that does not come.
//!
//! # Semantics (DESIGN §3–§4, made exact)
//!
//! **With a trigger** (`after`): every trigger event at `t` opens a deadline
//! `t + within`. An expected event at `u` with `t < u < t + within` cancels
//! it; the alert fires when the watermark reaches `t + within` (the alert's
//! time). Expected events are checked before triggers, so an event matching
//! both cancels earlier deadlines and then opens its own. Each trigger is
//! independent; more than `max_partial_matches` open deadlines are dropped
//! (newest first) and counted.
//!
//! **Without a trigger** (heartbeat loss): the entity's latest expected
//! event at `u` sets the deadline `u + within`. When the watermark reaches
//! it, one alert fires and the rule falls silent until the next expected
//! event re-arms it. An expected event older than the latest one changes
//! nothing. An entity that never sent an expected event is never alerted on.
//!
//! **Resolution**: an absence alert stays unresolved until an expected event
//! arrives after the event the deadline waited after (its trigger, or the
//! last heartbeat); that event resolves it (`Alert::resolves`). At most
//! `max_partial_matches` alerts wait for their resolution per rule and key;
//! past that the oldest is forgotten unresolved (counted as a dropped
//! deadline), so the state stays bounded.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::engine::alert::Alert;
use crate::engine::counters::DropCounters;
use crate::engine::env::{Fired, RuleEnv};
use crate::event::{Event, EventRef};
use crate::rules::expr::Binding;
use crate::rules::AbsencePattern;
use crate::time::Timestamp;

/// Open deadlines of one absence rule for one key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AbsenceState {
    /// With a trigger: one per trigger still waiting, in trigger order.
    #[serde(default)]
    pending: Vec<Pending>,
    /// Without a trigger: the latest expected event, while armed.
    #[serde(default)]
    heartbeat: Option<Pending>,
    /// Alerts fired and not yet resolved, oldest first.
    #[serde(default)]
    unresolved: Vec<Unresolved>,
}

/// A fired alert waiting for the expected event that resolves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Unresolved {
    /// The alert's id.
    alert: String,
    /// The time of the event its deadline waited after: an expected event
    /// after it resolves the alert.
    after: Timestamp,
}

/// One deadline and the event it waits after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    /// The trigger (or latest expected) event.
    event: EventRef,
    /// The event itself, kept for the message template.
    #[serde(default)]
    full: Option<Arc<Event>>,
    /// When the alert fires unless cancelled.
    deadline: Timestamp,
}

impl AbsenceState {
    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.heartbeat.is_none() && self.unresolved.is_empty()
    }

    /// Number of open deadlines.
    pub fn len(&self) -> usize {
        self.pending.len() + usize::from(self.heartbeat.is_some())
    }

    /// The earliest open deadline.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let triggered = self.pending.iter().map(|p| p.deadline).min();
        let heartbeat = self.heartbeat.as_ref().map(|p| p.deadline);
        triggered.into_iter().chain(heartbeat).min()
    }

    pub(crate) fn on_event(
        &mut self,
        env: &RuleEnv<'_>,
        pattern: &AbsencePattern,
        event: &Arc<Event>,
        ordinal: u64,
        alerts: &mut Vec<Alert>,
        dropped: &mut DropCounters,
    ) {
        let ctx = env.ctx(Some(event), &[]);
        let expected = pattern.expect.matches(&ctx);
        if expected && !self.unresolved.is_empty() {
            let t = event.time;
            self.unresolved.retain(|u| {
                if u.after < t {
                    alerts.push(env.resolution(
                        &u.alert,
                        t,
                        Some(env.reference(event, ordinal)),
                        Map::new(),
                    ));
                    false
                } else {
                    true
                }
            });
        }
        let keep_full = env.rule.message.is_some();
        let pending = |e: &Arc<Event>| Pending {
            event: env.reference(e, ordinal),
            full: keep_full.then(|| Arc::clone(e)),
            deadline: e.time.plus(pattern.within),
        };
        match &pattern.after {
            Some(after) => {
                if expected {
                    let t = event.time;
                    self.pending
                        .retain(|p| !(p.event.time < t && t < p.deadline));
                }
                if after.matches(&ctx) {
                    if self.pending.len() >= env.config.max_partial_matches.max(1) {
                        dropped.pending_deadlines += 1;
                    } else {
                        self.pending.push(pending(event));
                    }
                }
            }
            None => {
                let newer = self
                    .heartbeat
                    .as_ref()
                    .is_none_or(|h| event.time >= h.event.time);
                // NB: after an alert `heartbeat` is None, so any expected
                // event (not late, hence at or after the watermark) re-arms.
                if expected && newer {
                    self.heartbeat = Some(pending(event));
                }
            }
        }
    }

    /// Fires every deadline the watermark reached, in deadline order.
    pub(crate) fn advance(
        &mut self,
        env: &RuleEnv<'_>,
        pattern: &AbsencePattern,
        watermark: Timestamp,
        alerts: &mut Vec<Alert>,
    ) {
        if self
            .heartbeat
            .as_ref()
            .is_some_and(|h| h.deadline <= watermark)
        {
            if let Some(h) = self.heartbeat.take() {
                let fired = alert(env, pattern, &h, false);
                self.remember(env, &fired, h.event.time);
                alerts.push(fired);
            }
        }
        if self.pending.iter().any(|p| p.deadline <= watermark) {
            let mut due: Vec<Pending> = Vec::new();
            self.pending.retain(|p| {
                if p.deadline <= watermark {
                    due.push(p.clone());
                    false
                } else {
                    true
                }
            });
            // Stable: equal deadlines keep trigger order.
            due.sort_by_key(|p| p.deadline);
            for p in &due {
                let fired = alert(env, pattern, p, true);
                self.remember(env, &fired, p.event.time);
                alerts.push(fired);
            }
        }
    }

    /// Keeps `fired` until an expected event after `after` resolves it.
    fn remember(&mut self, env: &RuleEnv<'_>, fired: &Alert, after: Timestamp) {
        if self.unresolved.len() >= env.config.max_partial_matches.max(1) {
            self.unresolved.remove(0);
        }
        self.unresolved.push(Unresolved {
            alert: fired.id.clone(),
            after,
        });
    }

    /// A JSON view of the open deadlines.
    pub fn view(&self) -> Value {
        json!({
            "kind": "absence",
            "pending": self.pending.iter().chain(&self.heartbeat).map(|p| json!({
                "after": p.event,
                "deadline": p.deadline,
            })).collect::<Vec<_>>(),
            "unresolved": self.unresolved.iter().map(|u| json!({
                "alert": u.alert,
                "after": u.after,
            })).collect::<Vec<_>>(),
        })
    }
}

fn alert(env: &RuleEnv<'_>, pattern: &AbsencePattern, p: &Pending, triggered: bool) -> Alert {
    let within = pattern.within;
    let mut values = Map::new();
    values.insert("deadline".into(), json!(p.deadline));
    values.insert("within_ms".into(), json!(within.millis()));
    values.insert(
        if triggered {
            "trigger_time"
        } else {
            "last_seen"
        }
        .into(),
        json!(p.event.time),
    );
    let mut id = env.alert_id(if triggered { "absence" } else { "heartbeat" });
    id.add_u64(p.event.ordinal).add_i64(p.deadline.millis());
    let bound = Binding {
        count: 1,
        first: p.full.as_deref(),
        last: p.full.as_deref(),
    };
    // Template slots: `trigger`, then `last` (template_scope::ABSENCE_BINDINGS).
    let bindings = if triggered {
        [bound, Binding::default()]
    } else {
        [Binding::default(), bound]
    };
    let [rule, severity] = env.common_variables();
    let variables = [
        rule,
        severity,
        Value::String(p.deadline.to_rfc3339()),
        Value::String(within.to_string()),
    ];
    env.alert(Fired {
        id,
        time: p.deadline,
        events: vec![p.event.clone()],
        values,
        bindings: &bindings,
        variables: &variables,
        event: None,
    })
}
