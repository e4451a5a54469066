//! Thresholds: an aggregate over a window compared with a limit.
//!
//! # Semantics (DESIGN §3, made exact)
//!
//! Only events matching the threshold's `match` (and, for `sum`, `avg`,
//! `min`, `max`, `distinct`, whose expression yields a number or value) enter
//! a window.
//!
//! **Sliding** (`size`): an entry leaves the window when the watermark
//! reaches `time + size`, so right after an event at `t` (with no allowed
//! lateness) the window is `(t - size, t]`. The condition is evaluated after
//! every entry enters and at every instant entries leave, once every event
//! of that instant is in: when an event at that instant arrives, or else
//! when the watermark passes the instant (the alert's time is the instant).
//! So an entry leaving at the very instant another enters is one change,
//! and a steady stream at the limit's rate fires once, not at every event.
//! It fires when it becomes true (edge-triggered) and re-arms when it
//! becomes false. On an
//! empty window `count` and `distinct` are 0, `sum` is 0, and `avg`, `min`,
//! `max` have no value (the condition is false).
//!
//! **Tumbling / hopping**: each event enters every window containing it
//! (see `window.rs`); a window closes when the watermark reaches its end,
//! and fires once if its aggregate satisfies the condition. Windows with no
//! events do not exist and never fire.
//!
//! **Session** (`gap`): an event joins every session whose events it comes
//! within `gap` of (inclusive), merging them; a session closes when the
//! watermark passes `last + gap` and fires once if its aggregate satisfies
//! the condition; the alert's time is `last + gap`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::engine::aggregate::{fold_numbers, value_of, Accumulator, Sample};
use crate::engine::alert::{Alert, Explanation};
use crate::engine::counters::DropCounters;
use crate::engine::env::{Fired, RuleEnv};
use crate::engine::window::starts_containing;
use crate::event::{Event, EventRef};
use crate::rules::expr::Binding;
use crate::rules::{ThresholdPattern, WindowSpec};
use crate::time::{Duration, Timestamp};

/// What a threshold did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// It entered its windows.
    Entered,
    /// It does not feed the aggregate (`match` or the expression refused it).
    Ignored,
    /// Every window it belongs to has already closed.
    WindowClosed,
}

/// Window state of one threshold rule for one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdState {
    /// A sliding window.
    Sliding(SlidingWindow),
    /// Open tumbling or hopping windows.
    Aligned(AlignedWindows),
    /// Open sessions.
    Sessions(Sessions),
}

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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    event: EventRef,
    sample: Sample,
}

/// Open epoch-aligned windows, by start.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AlignedWindows {
    windows: BTreeMap<i64, Accumulator>,
}

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

impl ThresholdState {
    /// Empty state for a window kind.
    pub fn for_window(window: &WindowSpec) -> ThresholdState {
        match window {
            WindowSpec::Sliding { .. } => ThresholdState::Sliding(SlidingWindow::default()),
            WindowSpec::Tumbling { .. } | WindowSpec::Hopping { .. } => {
                ThresholdState::Aligned(AlignedWindows::default())
            }
            WindowSpec::Session { .. } => ThresholdState::Sessions(Sessions::default()),
        }
    }

    /// True when nothing needs remembering.
    pub fn is_empty(&self) -> bool {
        match self {
            ThresholdState::Sliding(s) => {
                s.entries.is_empty() && !s.holding && s.unsettled.is_none()
            }
            ThresholdState::Aligned(a) => a.windows.is_empty(),
            ThresholdState::Sessions(s) => s.sessions.is_empty(),
        }
    }

    /// Entries, windows or sessions held.
    pub fn len(&self) -> usize {
        match self {
            ThresholdState::Sliding(s) => s.entries.len(),
            ThresholdState::Aligned(a) => a.windows.len(),
            ThresholdState::Sessions(s) => s.sessions.len(),
        }
    }

    /// The watermark at which something next leaves or closes.
    pub fn next_deadline(&self, pattern: &ThresholdPattern) -> Option<Timestamp> {
        match (self, pattern.window) {
            (ThresholdState::Sliding(s), WindowSpec::Sliding { size }) => match s.unsettled {
                // NB: the watermark must pass the instant, not just reach it.
                Some(instant) => Some(instant.plus(Duration(1))),
                None => s.entries.front().map(|e| e.event.time.plus(size)),
            },
            (
                ThresholdState::Aligned(a),
                WindowSpec::Tumbling { size } | WindowSpec::Hopping { size, .. },
            ) => a
                .windows
                .keys()
                .next()
                .map(|start| Timestamp(*start).plus(size)),
            (ThresholdState::Sessions(s), WindowSpec::Session { gap }) => {
                s.sessions.iter().map(|x| close_at(x.last, gap)).min()
            }
            _ => None,
        }
    }

    /// Adds the event to the windows it belongs to. `watermark` is the
    /// rule's: an event older than it (evaluated under `late: evaluate`)
    /// enters only windows still open, and is refused when none is.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_event(
        &mut self,
        env: &RuleEnv<'_>,
        pattern: &ThresholdPattern,
        event: &Arc<Event>,
        ordinal: u64,
        watermark: Timestamp,
        alerts: &mut Vec<Alert>,
        dropped: &mut DropCounters,
    ) -> Admission {
        let ctx = env.ctx(Some(event), &[]);
        if !pattern.predicate.matches(&ctx) {
            return Admission::Ignored;
        }
        let Some(sample) = Sample::of(&pattern.aggregate, &ctx) else {
            return Admission::Ignored;
        };
        if self.closed_for(pattern, event.time, watermark) {
            return Admission::WindowClosed;
        }
        let full = env.rule.message.is_some().then_some(event);
        let reference = env.reference(event, ordinal);
        let limits = (
            env.config.max_window_entries.max(1),
            env.config.max_explained_events,
        );
        match (self, pattern.window) {
            (ThresholdState::Sliding(s), WindowSpec::Sliding { size }) => {
                s.insert(
                    Entry {
                        event: reference,
                        sample,
                    },
                    full,
                    limits.0,
                    dropped,
                );
                // This evaluation also covers entries that left at this instant.
                s.unsettled = None;
                s.evaluate(
                    env,
                    pattern,
                    size,
                    event.time,
                    Some(ordinal),
                    Some(event),
                    alerts,
                );
            }
            (ThresholdState::Aligned(a), WindowSpec::Tumbling { size }) => {
                a.add(
                    event.time, size, size, watermark, &sample, reference, full, limits, dropped,
                );
            }
            (ThresholdState::Aligned(a), WindowSpec::Hopping { size, advance }) => {
                a.add(
                    event.time, size, advance, watermark, &sample, reference, full, limits, dropped,
                );
            }
            (ThresholdState::Sessions(s), WindowSpec::Session { gap }) => {
                s.add(event.time, gap, &sample, reference, full, limits, dropped);
            }
            _ => unreachable!("threshold state is created for its rule's window kind"),
        }
        Admission::Entered
    }

    /// Whether every window an event at `time` belongs to has closed by
    /// `watermark` (only ever for an event older than the watermark):
    /// its sliding entry would already have left; its tumbling or hopping
    /// windows have all ended; it joins no open session (sessions are not
    /// remembered once closed, so a late event that opens a session of its
    /// own is refused rather than risk re-opening one).
    fn closed_for(
        &self,
        pattern: &ThresholdPattern,
        time: Timestamp,
        watermark: Timestamp,
    ) -> bool {
        if time >= watermark {
            return false;
        }
        match (self, pattern.window) {
            (ThresholdState::Sliding(_), WindowSpec::Sliding { size }) => {
                time.plus(size) <= watermark
            }
            (ThresholdState::Aligned(_), WindowSpec::Tumbling { size }) => {
                starts_containing(time, size, size).all(|s| Timestamp(s).plus(size) <= watermark)
            }
            (ThresholdState::Aligned(_), WindowSpec::Hopping { size, advance }) => {
                starts_containing(time, size, advance).all(|s| Timestamp(s).plus(size) <= watermark)
            }
            (ThresholdState::Sessions(s), WindowSpec::Session { gap }) => !s
                .sessions
                .iter()
                .any(|x| time >= x.start.minus(gap) && time <= x.last.plus(gap)),
            _ => false,
        }
    }

    /// Expires sliding entries, closes windows and sessions the watermark
    /// reached, in time order.
    pub(crate) fn advance(
        &mut self,
        env: &RuleEnv<'_>,
        pattern: &ThresholdPattern,
        watermark: Timestamp,
        alerts: &mut Vec<Alert>,
    ) {
        match (self, pattern.window) {
            (ThresholdState::Sliding(s), WindowSpec::Sliding { size }) => {
                if let Some(instant) = s.unsettled.filter(|i| *i < watermark) {
                    s.unsettled = None;
                    s.evaluate(env, pattern, size, instant, None, None, alerts);
                }
                while let Some(leave) = s.entries.front().map(|e| e.event.time.plus(size)) {
                    if leave > watermark {
                        break;
                    }
                    while s
                        .entries
                        .front()
                        .is_some_and(|e| e.event.time.plus(size) <= leave)
                    {
                        if let Some(entry) = s.entries.pop_front() {
                            s.forget(&entry);
                        }
                    }
                    if leave == watermark {
                        s.unsettled = Some(leave);
                        break;
                    }
                    s.evaluate(env, pattern, size, leave, None, None, alerts);
                }
                if s.entries.is_empty() {
                    s.last = None;
                }
            }
            (
                ThresholdState::Aligned(a),
                WindowSpec::Tumbling { size } | WindowSpec::Hopping { size, .. },
            ) => {
                while let Some(entry) = a.windows.first_entry() {
                    let start = Timestamp(*entry.key());
                    let end = start.plus(size);
                    if end > watermark {
                        break;
                    }
                    let acc = entry.remove();
                    if let Some(alert) =
                        closed_window_alert(env, pattern, "window", start, end, &acc)
                    {
                        alerts.push(alert);
                    }
                }
            }
            (ThresholdState::Sessions(s), WindowSpec::Session { gap }) => loop {
                let due = s
                    .sessions
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| close_at(x.last, gap) <= watermark)
                    .min_by_key(|(_, x)| (close_at(x.last, gap), x.start))
                    .map(|(i, _)| i);
                let Some(i) = due else { break };
                let session = s.sessions.remove(i);
                let end = session.last.plus(gap);
                if let Some(alert) =
                    closed_window_alert(env, pattern, "session", session.start, end, &session.acc)
                {
                    alerts.push(alert);
                }
            },
            _ => {}
        }
    }

    /// A JSON view of the windows.
    pub fn view(&self) -> Value {
        match self {
            ThresholdState::Sliding(s) => {
                let (sum, min, max) = fold_numbers(s.entries.iter().map(|e| &e.sample));
                json!({
                    "kind": "sliding",
                    "count": s.entries.len(),
                    "sum": sum, "min": min, "max": max,
                    "distinct": s.distinct.len(),
                    "holding": s.holding,
                    "oldest": s.entries.front().map(|e| e.event.time),
                    "newest": s.entries.back().map(|e| e.event.time),
                })
            }
            ThresholdState::Aligned(a) => json!({
                "kind": "windows",
                "windows": a.windows.iter().map(|(start, acc)| window_json(Timestamp(*start), acc)).collect::<Vec<_>>(),
            }),
            ThresholdState::Sessions(s) => json!({
                "kind": "sessions",
                "sessions": s.sessions.iter().map(|x| {
                    let mut v = window_json(x.start, &x.acc);
                    v["last"] = json!(x.last);
                    v
                }).collect::<Vec<_>>(),
            }),
        }
    }
}

/// The watermark at which a session whose last event is at `last` closes:
/// it must pass `last + gap`, because an event at exactly `last + gap` joins.
fn close_at(last: Timestamp, gap: Duration) -> Timestamp {
    last.plus(gap).plus(Duration(1))
}

fn window_json(start: Timestamp, acc: &Accumulator) -> Value {
    json!({
        "start": start,
        "count": acc.count,
        "sum": acc.sum, "min": acc.min, "max": acc.max,
        "distinct": acc.distinct.len(),
    })
}

impl SlidingWindow {
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

    fn value(&self, pattern: &ThresholdPattern) -> Option<f64> {
        let (sum, min, max) = fold_numbers(self.entries.iter().map(|e| &e.sample));
        value_of(
            &pattern.aggregate,
            self.entries.len() as u64,
            sum,
            min,
            max,
            self.distinct.len(),
        )
    }

    /// Evaluates the condition at time `at`; fires on a false → true edge.
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &mut self,
        env: &RuleEnv<'_>,
        pattern: &ThresholdPattern,
        size: Duration,
        at: Timestamp,
        ordinal: Option<u64>,
        event: Option<&Arc<Event>>,
        alerts: &mut Vec<Alert>,
    ) {
        let value = self.value(pattern);
        let holds = value.is_some_and(|v| pattern.comparison.holds(v));
        if holds && !self.holding {
            // Explanations list events in event-time order, ties in
            // acceptance order (see `Alert::events`).
            let mut listed: Vec<&EventRef> = self.entries.iter().map(|e| &e.event).collect();
            listed.sort_by_key(|e| (e.time, e.ordinal));
            let mut explanation = Explanation::default();
            for e in listed {
                explanation.push(e.clone(), env.config.max_explained_events);
            }
            let mut id = env.alert_id("sliding");
            id.add_i64(at.millis()).add_u64(ordinal.unwrap_or(0));
            alerts.push(threshold_alert(
                env,
                pattern,
                id,
                ThresholdFacts {
                    time: at,
                    window_start: at.minus(size),
                    window_end: at,
                    value: value.unwrap_or_default(),
                    count: self.entries.len() as u64,
                    explanation,
                    last: self.last.as_deref(),
                    event: event.map(|e| &**e),
                },
            ));
        }
        self.holding = holds;
    }
}

impl AlignedWindows {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        time: Timestamp,
        size: Duration,
        advance: Duration,
        watermark: Timestamp,
        sample: &Sample,
        reference: EventRef,
        full: Option<&Arc<Event>>,
        limits: (usize, usize),
        dropped: &mut DropCounters,
    ) {
        for start in starts_containing(time, size, advance) {
            if Timestamp(start).plus(size) <= watermark {
                // Closed already: a window fires once.
                continue;
            }
            if !self.windows.contains_key(&start) && self.windows.len() >= limits.0 {
                dropped.window_entries += 1;
                continue;
            }
            let acc = self.windows.entry(start).or_default();
            if !acc.add(sample, reference.clone(), full, limits) {
                dropped.window_entries += 1;
            }
        }
    }
}

impl Sessions {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        time: Timestamp,
        gap: Duration,
        sample: &Sample,
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

/// What a threshold alert reports.
struct ThresholdFacts<'a> {
    time: Timestamp,
    window_start: Timestamp,
    window_end: Timestamp,
    value: f64,
    count: u64,
    explanation: Explanation,
    last: Option<&'a Event>,
    event: Option<&'a Event>,
}

fn closed_window_alert(
    env: &RuleEnv<'_>,
    pattern: &ThresholdPattern,
    kind: &str,
    start: Timestamp,
    end: Timestamp,
    acc: &Accumulator,
) -> Option<Alert> {
    let value = acc.value(&pattern.aggregate)?;
    if !pattern.comparison.holds(value) {
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
            value,
            count: acc.count,
            explanation: acc.explanation.clone(),
            last: acc.last.as_deref(),
            event: None,
        },
    ))
}

fn threshold_alert(
    env: &RuleEnv<'_>,
    pattern: &ThresholdPattern,
    id: crate::engine::alert::AlertIdBuilder,
    facts: ThresholdFacts<'_>,
) -> Alert {
    let mut values = Map::new();
    values.insert("aggregate".into(), json!(pattern.aggregate.name()));
    values.insert("value".into(), number(facts.value));
    values.insert("limit".into(), number(pattern.comparison.limit));
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
    let [rule, severity] = env.common_variables();
    // Slots of template_scope::THRESHOLD_VARIABLES.
    let variables = [
        rule,
        severity,
        number(facts.value),
        json!(facts.count),
        Value::String(facts.window_start.to_rfc3339()),
        Value::String(facts.window_end.to_rfc3339()),
        number(pattern.comparison.limit),
    ];
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
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        json!(n as i64)
    } else {
        json!(n)
    }
}
