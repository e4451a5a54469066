//! A naive reference model of the pattern engine (STYLE habit 6).
//!
//! Written from the specification — DESIGN §3–§4 and the module docs of
//! `src/engine/` — not from the engine's code. Every query re-scans the
//! key's whole history from the beginning and recomputes every alert that
//! should have fired so far, so there is no incremental state to get wrong:
//!
//! - time: the clock, watermark, lateness and ordinals are replayed from the
//!   raw operations;
//! - sequences: runs are simulated literally as `sequence.rs` describes them,
//!   a run being nothing but the list of (step, event) pairs it took; every
//!   count, time span and binding is recomputed from that list — a group's
//!   repetitions too (the takes of its last step), from `docs/rules.md`'s
//!   description of groups;
//! - thresholds with several aggregates: every aggregate is recomputed from
//!   the window's events and the condition (all / any of some comparisons)
//!   read the way CEL reads `&&` and `||` over values that may be null;
//! - absence: each trigger is checked against the expected events accepted
//!   after it; heartbeats follow the latest expected event;
//! - thresholds: every window (tumbling, hopping, session) is recomputed from
//!   the raw event list; the sliding window is re-evaluated at every entry
//!   and at every instant an entry leaves.
//!
//! Rules are described by [`RuleSpec`], which both renders the rule's YAML
//! (for the engine) and drives the model, so the two always run the same rule.
//!
//! The model predicts each alert's rule, key, time, explanation (event
//! references, bounded as `alert.rs` says), `values` and id. Ids follow the
//! frozen encoding of `AlertIdBuilder` with the parts each kind identifies a
//! match by (the only thing taken from the engine: it is an encoding, not a
//! semantics). Messages are not predicted; the engine-only properties
//! compare them between runs.
//!
//! Not modelled: per-key limits and drops (tests run with limits no stream
//! reaches), `partition_by`, `entity.*` attributes, and rule-set changes.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;

use cepheus::engine::alert::{AlertIdBuilder, MatchFingerprint};
use cepheus::engine::{Alert, DropCounters, Engine, EngineConfig, KeyState, RuleSet};
use cepheus::event::{Event, EventRef};
use cepheus::rules::{load, Format, Pattern, Rule, RuleLimits};
use cepheus::time::{Duration, Timestamp};
use serde_json::{json, Map, Value};

// --- events and operations ---------------------------------------------------

/// A test event: small integer times (milliseconds) and one optional number
/// (`data.v`: an integer, or a double with an exact binary fraction, so sums
/// never depend on the order of addition).
#[derive(Debug, Clone, PartialEq)]
pub struct Ev {
    pub id: usize,
    pub key: &'static str,
    pub ty: &'static str,
    pub time: i64,
    pub v: Option<f64>,
}

impl Ev {
    pub fn event(&self) -> Arc<Event> {
        let mut data = Map::new();
        if let Some(v) = self.v {
            // Integral values as JSON integers, others as doubles.
            data.insert("v".into(), num(v));
        }
        Arc::new(Event {
            id: Some(format!("e{}", self.id)),
            key: self.key.to_owned(),
            event_type: self.ty.to_owned(),
            time: Timestamp(self.time),
            data,
        })
    }

    fn reference(&self, ordinal: u64) -> EventRef {
        EventRef::of(&self.event(), ordinal)
    }
}

/// One input: an event for its key, or a clock advance for every key.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Event(Ev),
    Advance(i64),
}

// --- predicates ----------------------------------------------------------------

/// A predicate with both a CEL spelling (for the rule) and a Rust meaning
/// (for the model). A missing `data.v` makes a comparison an evaluation
/// error, which as a predicate is false.
#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    True,
    Type(&'static str),
    TypeIn(Vec<&'static str>),
    TypeNot(&'static str),
    /// `type == t && data.v >= k`
    TypeVAtLeast(&'static str, i64),
    /// `data.v >= k`
    VAtLeast(i64),
    /// `!has(data.v) || data.v != k`
    VMissingOrNot(i64),
    /// `type == t && data.v >= s<step+1>.last.data.v` (or `.first`)
    Bound {
        ty: &'static str,
        step: usize,
        first: bool,
    },
}

/// What a sequence step has bound so far, as predicates see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bind<'a> {
    pub count: usize,
    pub first: Option<&'a Ev>,
    pub last: Option<&'a Ev>,
}

impl Pred {
    pub fn cel(&self) -> String {
        match self {
            Pred::True => "true".into(),
            Pred::Type(t) => format!("type == '{t}'"),
            Pred::TypeIn(ts) => {
                let list: Vec<String> = ts.iter().map(|t| format!("'{t}'")).collect();
                format!("type in [{}]", list.join(", "))
            }
            Pred::TypeNot(t) => format!("type != '{t}'"),
            Pred::TypeVAtLeast(t, k) => format!("type == '{t}' && data.v >= {k}"),
            Pred::VAtLeast(k) => format!("data.v >= {k}"),
            Pred::VMissingOrNot(k) => format!("!has(data.v) || data.v != {k}"),
            Pred::Bound { ty, step, first } => format!(
                "type == '{ty}' && data.v >= s{}.{}.data.v",
                step + 1,
                if *first { "first" } else { "last" }
            ),
        }
    }

    pub fn eval(&self, e: &Ev, bindings: &[Bind<'_>]) -> bool {
        match self {
            Pred::True => true,
            Pred::Type(t) => e.ty == *t,
            Pred::TypeIn(ts) => ts.contains(&e.ty),
            Pred::TypeNot(t) => e.ty != *t,
            Pred::TypeVAtLeast(t, k) => e.ty == *t && e.v.is_some_and(|v| v >= *k as f64),
            Pred::VAtLeast(k) => e.v.is_some_and(|v| v >= *k as f64),
            Pred::VMissingOrNot(k) => e.v != Some(*k as f64),
            Pred::Bound { ty, step, first } => {
                let bound = bindings
                    .get(*step)
                    .and_then(|b| if *first { b.first } else { b.last });
                e.ty == *ty
                    && matches!((e.v, bound.and_then(|b| b.v)), (Some(v), Some(w)) if v >= w)
            }
        }
    }

    /// The step this predicate reads, if any.
    pub fn reads_step(&self) -> Option<usize> {
        match self {
            Pred::Bound { step, .. } => Some(*step),
            _ => None,
        }
    }
}

// --- rules -----------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contig {
    Relaxed,
    Strict,
    Any,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepSpec {
    pub pred: Pred,
    pub min: u32,
    pub max: Option<u32>,
    pub negated: bool,
    /// How the quantifier is written (several spellings give one meaning).
    pub times: Times,
    /// `greedy: false` (only on a step whose count may vary).
    pub reluctant: bool,
    /// `until` (only on a step that may take several events).
    pub until: Option<Pred>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Times {
    One,
    Exactly(u32),
    Range(Option<u32>, Option<u32>),
    Optional,
    Negated,
}

impl StepSpec {
    pub fn new(pred: Pred, times: Times) -> StepSpec {
        let (min, max, negated) = match &times {
            Times::One => (1, Some(1), false),
            Times::Exactly(n) => (*n, Some(*n), false),
            Times::Range(min, max) => (min.unwrap_or(1), *max, false),
            Times::Optional => (0, Some(1), false),
            Times::Negated => (0, Some(0), true),
        };
        StepSpec {
            pred,
            min,
            max,
            negated,
            times,
            reluctant: false,
            until: None,
        }
    }
}

/// After a match (SQL `AFTER MATCH SKIP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipSpec {
    PastLastEvent,
    All,
    ToNext,
    /// The step (index) whose first event matching resumes at.
    ToFirst(usize),
    ToLast(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeqSpec {
    pub steps: Vec<StepSpec>,
    pub within: Option<i64>,
    pub contiguity: Contig,
    pub any_order: bool,
    pub skip: SkipSpec,
    /// Groups of consecutive steps (each taking one event) repeated as a
    /// whole; not overlapping, in order.
    pub groups: Vec<GroupSpec>,
}

/// `steps[first..=last]` repeated as a whole: `(A, B){min, max}`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    pub first: usize,
    pub last: usize,
    /// `Times::One`, `Exactly` or `Range` with a minimum of at least 1.
    pub times: Times,
    pub min: u32,
    pub max: Option<u32>,
    /// `greedy: false` (only when the count may vary).
    pub reluctant: bool,
}

impl GroupSpec {
    pub fn new(first: usize, last: usize, times: Times, reluctant: bool) -> GroupSpec {
        let (min, max) = match &times {
            Times::Exactly(n) => (*n, Some(*n)),
            Times::Range(min, max) => (min.unwrap_or(1), *max),
            _ => (1, Some(1)),
        };
        GroupSpec {
            first,
            last,
            times,
            min,
            max,
            reluctant: reluctant && max != Some(min),
        }
    }
}

/// A quantifier as YAML (`times: ...` or `optional: true`), indented.
fn times_yaml(times: &Times, indent: &str) -> String {
    match times {
        Times::One => String::new(),
        Times::Exactly(n) => format!("{indent}times: {n}\n"),
        Times::Range(min, max) => {
            let mut parts = Vec::new();
            if let Some(m) = min {
                parts.push(format!("min: {m}"));
            }
            if let Some(m) = max {
                parts.push(format!("max: {m}"));
            }
            format!("{indent}times: {{{}}}\n", parts.join(", "))
        }
        Times::Optional => format!("{indent}optional: true\n"),
        Times::Negated => format!("{indent}not: true\n"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Win {
    Sliding(i64),
    Tumbling(i64),
    Hopping(i64, i64),
    Session(i64),
    /// The last n matching events.
    Count(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    Distinct,
}

impl Agg {
    pub fn name(self) -> &'static str {
        match self {
            Agg::Count => "count",
            Agg::Sum => "sum",
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Distinct => "distinct",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Above,
    AtLeast,
    Below,
    AtMost,
}

impl Cmp {
    pub fn name(self) -> &'static str {
        match self {
            Cmp::Above => "above",
            Cmp::AtLeast => "at_least",
            Cmp::Below => "below",
            Cmp::AtMost => "at_most",
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Above => ">",
            Cmp::AtLeast => ">=",
            Cmp::Below => "<",
            Cmp::AtMost => "<=",
        }
    }

    pub fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Cmp::Above => value > limit,
            Cmp::AtLeast => value >= limit,
            Cmp::Below => value < limit,
            Cmp::AtMost => value <= limit,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Sequence(SeqSpec),
    Absence {
        after: Option<Pred>,
        expect: Pred,
        within: i64,
    },
    Threshold {
        pred: Option<Pred>,
        window: Win,
        /// One aggregate (the single form) or several (named a1, a2, ...).
        aggs: Vec<Agg>,
        cond: Cond,
    },
}

/// When a threshold fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `aggregate` with a comparison (one aggregate).
    Single(Cmp, f64),
    /// `condition`: every comparison holds (`&&`).
    All(Vec<(usize, Cmp, f64)>),
    /// `condition`: some comparison holds (`||`).
    Any(Vec<(usize, Cmp, f64)>),
}

impl Cond {
    /// The CEL text of a `condition` over aggregates named a1, a2, ...
    fn cel(&self) -> String {
        let (parts, join) = match self {
            Cond::Single(..) => unreachable!("the single form has no condition"),
            Cond::All(parts) => (parts, " && "),
            Cond::Any(parts) => (parts, " || "),
        };
        parts
            .iter()
            .map(|(i, cmp, limit)| format!("a{} {} {limit}", i + 1, cmp.symbol()))
            .collect::<Vec<_>>()
            .join(join)
    }

    /// CEL's reading: a comparison with an aggregate that has no value is
    /// an error, which `&&` and `||` forgive only when the other side
    /// decides; as a condition, an error is false.
    fn holds(&self, values: &[Option<f64>]) -> bool {
        let one =
            |(i, cmp, limit): &(usize, Cmp, f64)| values[*i].is_some_and(|v| cmp.holds(v, *limit));
        match self {
            Cond::Single(cmp, limit) => values[0].is_some_and(|v| cmp.holds(v, *limit)),
            Cond::All(parts) => parts.iter().all(one),
            Cond::Any(parts) => parts.iter().any(one),
        }
    }
}

/// One rule, as the generator builds it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    pub id: String,
    pub when: Option<Pred>,
    pub kind: Kind,
    /// Whether the rule has a message template (which makes the engine keep
    /// bound events; the model does not render messages).
    pub message: bool,
}

pub const VERSION: u64 = 3;

impl RuleSpec {
    /// The rule as YAML text.
    pub fn yaml(&self) -> String {
        let mut y = format!("id: {}\n", self.id);
        if let Some(w) = &self.when {
            y += &format!("when: \"{}\"\n", w.cel());
        }
        let message: String;
        match &self.kind {
            Kind::Sequence(s) => {
                y += "sequence:\n";
                if let Some(w) = s.within {
                    y += &format!("  within: {w}ms\n");
                }
                y += &format!(
                    "  contiguity: {}\n",
                    match s.contiguity {
                        Contig::Relaxed => "relaxed",
                        Contig::Strict => "strict",
                        Contig::Any => "any",
                    }
                );
                if s.any_order {
                    y += "  any_order: true\n";
                }
                match s.skip {
                    SkipSpec::PastLastEvent => {}
                    SkipSpec::All => y += "  skip: all\n",
                    SkipSpec::ToNext => y += "  skip: to_next\n",
                    SkipSpec::ToFirst(j) => y += &format!("  skip: {{to_first: s{}}}\n", j + 1),
                    SkipSpec::ToLast(j) => y += &format!("  skip: {{to_last: s{}}}\n", j + 1),
                }
                y += "  steps:\n";
                for (i, step) in s.steps.iter().enumerate() {
                    let group = s
                        .groups
                        .iter()
                        .position(|g| (g.first..=g.last).contains(&i));
                    let indent = if group.is_some() { "    " } else { "" };
                    if let Some(g) = group.filter(|&g| s.groups[g].first == i) {
                        y += &format!("    - name: g{}\n      group:\n", g + 1);
                    }
                    y += &format!(
                        "{indent}    - name: s{}\n{indent}      match: \"{}\"\n",
                        i + 1,
                        step.pred.cel()
                    );
                    y += &times_yaml(&step.times, &format!("{indent}      "));
                    if step.reluctant {
                        y += &format!("{indent}      greedy: false\n");
                    }
                    if let Some(until) = &step.until {
                        y += &format!("{indent}      until: \"{}\"\n", until.cel());
                    }
                    if let Some(g) = group.filter(|&g| s.groups[g].last == i) {
                        y += &times_yaml(&s.groups[g].times, "      ");
                        if s.groups[g].reluctant {
                            y += "      greedy: false\n";
                        }
                    }
                }
                let first = &"s1";
                message = format!(
                    "{{{{{first}.count}}}} {{{{{first}.last.data.v}}}} {{{{type}}}} {{{{rule}}}}"
                );
            }
            Kind::Absence {
                after,
                expect,
                within,
            } => {
                y += "absence:\n";
                if let Some(a) = after {
                    y += &format!("  after: \"{}\"\n", a.cel());
                    message = "{{trigger.data.v}} {{deadline}} {{within}}".into();
                } else {
                    message = "{{last.data.v}} {{last.time}} {{deadline}}".into();
                }
                y += &format!("  expect: \"{}\"\n  within: {within}ms\n", expect.cel());
            }
            Kind::Threshold {
                pred,
                window,
                aggs,
                cond,
            } => {
                y += "threshold:\n";
                if let Some(p) = pred {
                    y += &format!("  match: \"{}\"\n", p.cel());
                }
                y += &match window {
                    Win::Sliding(s) => format!("  window: {{sliding: {s}ms}}\n"),
                    Win::Tumbling(s) => format!("  window: {{tumbling: {s}ms}}\n"),
                    Win::Hopping(s, a) => {
                        format!("  window: {{hopping: {{size: {s}ms, advance: {a}ms}}}}\n")
                    }
                    Win::Session(g) => format!("  window: {{session: {{gap: {g}ms}}}}\n"),
                    Win::Count(n) => format!("  window: {{count: {n}}}\n"),
                };
                let written = |agg: &Agg| match agg {
                    Agg::Count => "count".to_owned(),
                    other => format!("{}(data.v)", other.name()),
                };
                match cond {
                    Cond::Single(cmp, limit) => {
                        y += &format!("  aggregate: {}\n", written(&aggs[0]));
                        y += &format!("  {}: {limit}\n", cmp.name());
                        message = "{{value}} {{count}} {{last.data.v}} {{window_start}}".into();
                    }
                    several => {
                        y += "  aggregates:\n";
                        for (i, agg) in aggs.iter().enumerate() {
                            y += &format!("    a{}: {}\n", i + 1, written(agg));
                        }
                        y += &format!("  condition: \"{}\"\n", several.cel());
                        message = "{{a1}} {{count}} {{last.data.v}} {{window_start}}".into();
                    }
                }
            }
        }
        if self.message {
            y += &format!("alert:\n  message: \"{message}\"\n");
        }
        y
    }

    /// The compiled rule.
    pub fn compile(&self) -> Arc<Rule> {
        let yaml = self.yaml();
        let rule = match load(&yaml, Format::Yaml, VERSION, &RuleLimits::default()) {
            Ok(rule) => rule,
            Err(problems) => panic!("the generator wrote an invalid rule:\n{yaml}\n{problems:#?}"),
        };
        // The model reads quantifiers from the spec: they must be what the
        // compiler made of the text.
        if let (Kind::Sequence(spec), Pattern::Sequence(compiled)) = (&self.kind, &rule.pattern) {
            let ours: Vec<_> = spec
                .steps
                .iter()
                .map(|s| (s.min, s.max, s.negated))
                .collect();
            let theirs: Vec<_> = compiled
                .steps
                .iter()
                .map(|s| (s.min, s.max, s.negated))
                .collect();
            assert_eq!(ours, theirs, "quantifiers of\n{yaml}");
            let ours: Vec<_> = spec
                .groups
                .iter()
                .map(|g| (g.first, g.last, g.min, g.max, !g.reluctant))
                .collect();
            let theirs: Vec<_> = compiled
                .groups
                .iter()
                .map(|g| (g.first, g.last, g.min, g.max, g.greedy))
                .collect();
            assert_eq!(ours, theirs, "groups of\n{yaml}");
        }
        Arc::new(rule)
    }
}

// --- alerts as compared ------------------------------------------------------------

/// The parts of an alert the model predicts.
#[derive(Debug, Clone, PartialEq)]
pub struct MAlert {
    pub rule: String,
    pub key: String,
    pub time: i64,
    pub events: Vec<EventRef>,
    pub values: Map<String, Value>,
    pub id: String,
}

impl MAlert {
    pub fn of(alert: &Alert) -> MAlert {
        MAlert {
            rule: alert.rule.to_string(),
            key: alert.key.clone(),
            time: alert.time.millis(),
            events: alert.events.clone(),
            values: alert.values.clone(),
            id: alert.id.clone(),
        }
    }

    /// A sort key for alerts that fire in the same call, whose relative
    /// order among equal times the contract leaves open.
    pub fn order_key(&self) -> (i64, String, Vec<u64>, String) {
        (
            self.time,
            self.rule.clone(),
            self.events.iter().map(|e| e.ordinal).collect(),
            self.id.clone(),
        )
    }
}

/// What one operation produced for one key.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOut {
    /// The operation was an event of this key that was late.
    pub late: bool,
    /// The ordinal of this key's event, when accepted.
    pub ordinal: Option<u64>,
    /// Alerts, sorted by [`MAlert::order_key`].
    pub alerts: Vec<MAlert>,
}

// --- the model ----------------------------------------------------------------------

/// The engine settings the model follows.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub lateness: i64,
    pub explain: usize,
    /// Per-key limits small enough to be hit (partial matches, window
    /// entries); `None` for limits far above anything a test stream
    /// reaches, so nothing is dropped (the model does not model drops).
    pub tight: Option<usize>,
    /// How long a partial match of a sequence without `within` lives (ms).
    pub max_match_age: i64,
}

impl Settings {
    pub fn engine_config(&self) -> EngineConfig {
        let limit = self.tight.unwrap_or(1 << 30);
        EngineConfig {
            allowed_lateness: Duration(self.lateness),
            max_partial_matches: limit,
            max_window_entries: limit,
            max_explained_events: self.explain,
            max_match_age: Duration(self.max_match_age),
            max_buffered_events: limit,
        }
    }
}

/// One moment of the key's evaluation: an operation, or one event the
/// operation released from the reorder buffer.
struct Tick<'a> {
    /// The operation this moment belongs to (its alerts are that
    /// operation's).
    op: usize,
    /// The watermark at this moment (None before the clock was set): the
    /// released event's own time, or the operation's watermark.
    wm: Option<i64>,
    /// The event evaluated at this moment, with its ordinal.
    event: Option<(&'a Ev, u64)>,
}

/// Every alert `rules` should have produced for `key` after `ops` (this
/// key's events and every advance), per operation.
pub fn run(rules: &[RuleSpec], settings: Settings, key: &str, ops: &[Op]) -> Vec<StepOut> {
    assert!(settings.tight.is_none(), "the model does not model drops");
    let (ticks, mut out) = timeline(settings, key, ops);
    for rule in rules {
        let cx = Cx {
            rule,
            key,
            settings,
            ticks: &ticks,
        };
        let fired = match &rule.kind {
            Kind::Sequence(s) => sequence(&cx, s),
            Kind::Absence {
                after: Some(after),
                expect,
                within,
            } => absence(&cx, after, expect, *within),
            Kind::Absence {
                after: None,
                expect,
                within,
            } => heartbeat(&cx, expect, *within),
            Kind::Threshold {
                pred,
                window,
                aggs,
                cond,
            } => {
                let t = Threshold {
                    pred: pred.as_ref(),
                    aggs,
                    cond,
                };
                match *window {
                    Win::Sliding(size) => sliding(&cx, &t, size),
                    Win::Tumbling(size) => aligned(&cx, &t, size, size),
                    Win::Hopping(size, advance) => aligned(&cx, &t, size, advance),
                    Win::Session(gap) => sessions(&cx, &t, gap),
                    Win::Count(n) => last_n(&cx, &t, n),
                }
            }
        };
        for (tick, alert) in fired {
            out[ticks[tick].op].alerts.push(alert);
        }
    }
    for step in &mut out {
        step.alerts.sort_by_key(MAlert::order_key);
    }
    out
}

/// DESIGN §4: the clock is the greatest accepted event time or a later
/// advance; the watermark is the clock minus the lateness; an event older
/// than the watermark is late; the n-th accepted event has ordinal n.
/// Accepted events are evaluated in event-time order (ties in acceptance
/// order), each once the watermark reaches its time: with lateness 0 at
/// once, else when a later event or an advance moves the clock far enough.
fn timeline<'a>(settings: Settings, key: &str, ops: &'a [Op]) -> (Vec<Tick<'a>>, Vec<StepOut>) {
    let mut clock: Option<i64> = None;
    let mut seen = 0u64;
    let mut waiting: Vec<(&'a Ev, u64)> = Vec::new();
    let mut ticks = Vec::new();
    let mut out = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let mut step = StepOut {
            late: false,
            ordinal: None,
            alerts: Vec::new(),
        };
        match op {
            Op::Event(e) => {
                assert_eq!(e.key, key, "the caller passes this key's events only");
                if clock.is_some_and(|c| e.time < c - settings.lateness) {
                    step.late = true;
                } else {
                    clock = Some(clock.map_or(e.time, |c| c.max(e.time)));
                    seen += 1;
                    step.ordinal = Some(seen);
                    waiting.push((e, seen));
                }
            }
            Op::Advance(t) => clock = Some(clock.map_or(*t, |c| c.max(*t))),
        }
        out.push(step);
        let wm = clock.map(|c| c - settings.lateness);
        waiting.sort_by_key(|(e, o)| (e.time, *o));
        while let Some(&(e, o)) = waiting
            .first()
            .filter(|(e, _)| wm.is_some_and(|w| e.time <= w))
        {
            waiting.remove(0);
            ticks.push(Tick {
                op: i,
                wm: Some(e.time),
                event: Some((e, o)),
            });
        }
        ticks.push(Tick {
            op: i,
            wm,
            event: None,
        });
    }
    (ticks, out)
}

/// One rule running for one key over one history.
struct Cx<'a> {
    rule: &'a RuleSpec,
    key: &'a str,
    settings: Settings,
    ticks: &'a [Tick<'a>],
}

impl<'a> Cx<'a> {
    /// The events this rule sees: accepted and passing `when`, with the
    /// step at which each was accepted.
    fn visible(&self) -> Vec<(usize, &'a Ev, u64)> {
        self.ticks
            .iter()
            .enumerate()
            .filter_map(|(k, t)| t.event.map(|(e, o)| (k, e, o)))
            .filter(|(_, e, _)| self.rule.when.as_ref().is_none_or(|w| w.eval(e, &[])))
            .collect()
    }

    /// The first step at or after `from` whose watermark reaches `deadline`.
    fn reached(&self, from: usize, deadline: i64) -> Option<usize> {
        (from..self.ticks.len()).find(|&k| self.ticks[k].wm.is_some_and(|w| w >= deadline))
    }

    fn id(&self, kind: &str) -> AlertIdBuilder {
        AlertIdBuilder::new(&self.rule.id, VERSION, self.key, kind)
    }

    fn alert(
        &self,
        id: &AlertIdBuilder,
        time: i64,
        events: Vec<EventRef>,
        mut values: Map<String, Value>,
    ) -> MAlert {
        let (events, omitted) = explain(events, self.settings.explain);
        if omitted > 0 {
            values.insert("events_omitted".into(), json!(omitted));
        }
        MAlert {
            rule: self.rule.id.clone(),
            key: self.key.to_owned(),
            time,
            events,
            values,
            id: id.finish(),
        }
    }
}

/// `alert.rs`: an explanation keeps the first `limit - 1` events and, in the
/// last slot, the most recent one; the rest are counted as omitted.
fn explain(events: Vec<EventRef>, limit: usize) -> (Vec<EventRef>, u64) {
    let limit = limit.max(1);
    if events.len() <= limit {
        return (events, 0);
    }
    let omitted = (events.len() - limit) as u64;
    let mut kept: Vec<EventRef> = events[..limit - 1].to_vec();
    kept.push(events[events.len() - 1].clone());
    (kept, omitted)
}

fn ts(t: i64) -> Value {
    serde_json::to_value(Timestamp(t)).expect("timestamps serialize")
}

/// Integral numbers as JSON integers, others as doubles.
fn num(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        json!(n as i64)
    } else {
        json!(n)
    }
}

// --- absence ---------------------------------------------------------------------------

/// With a trigger: each trigger at t fires at t + within unless an expected
/// event at u, t < u < t + within, was evaluated after it and before the
/// deadline fired.
fn absence(cx: &Cx<'_>, after: &Pred, expect: &Pred, within: i64) -> Vec<(usize, MAlert)> {
    let seen = cx.visible();
    let mut fired = Vec::new();
    for &(kt, trigger, ordinal) in seen.iter().filter(|(_, e, _)| after.eval(e, &[])) {
        let deadline = trigger.time + within;
        let Some(fire) = cx.reached(kt + 1, deadline) else {
            continue;
        };
        let cancelled = seen.iter().any(|&(kx, x, _)| {
            kx > kt
                && kx < fire
                && expect.eval(x, &[])
                && trigger.time < x.time
                && x.time < deadline
        });
        if cancelled {
            continue;
        }
        let mut id = cx.id("absence");
        id.add_u64(ordinal).add_i64(deadline);
        let mut values = Map::new();
        values.insert("deadline".into(), ts(deadline));
        values.insert("within_ms".into(), json!(within));
        values.insert("trigger_time".into(), ts(trigger.time));
        fired.push((
            fire,
            cx.alert(&id, deadline, vec![trigger.reference(ordinal)], values),
        ));
    }
    fired
}

/// Without a trigger: the latest expected event at u arms u + within; when
/// the watermark reaches it one alert fires and nothing is armed until the
/// next expected event. An expected event older than the armed one changes
/// nothing.
fn heartbeat(cx: &Cx<'_>, expect: &Pred, within: i64) -> Vec<(usize, MAlert)> {
    let seen = cx.visible();
    let mut fired = Vec::new();
    let mut armed: Option<(&Ev, u64)> = None;
    for (k, tick) in cx.ticks.iter().enumerate() {
        if let (Some((e, ordinal)), Some(wm)) = (armed, tick.wm) {
            let deadline = e.time + within;
            if deadline <= wm {
                let mut id = cx.id("heartbeat");
                id.add_u64(ordinal).add_i64(deadline);
                let mut values = Map::new();
                values.insert("deadline".into(), ts(deadline));
                values.insert("within_ms".into(), json!(within));
                values.insert("last_seen".into(), ts(e.time));
                fired.push((
                    k,
                    cx.alert(&id, deadline, vec![e.reference(ordinal)], values),
                ));
                armed = None;
            }
        }
        if let Some(&(_, e, ordinal)) = seen.iter().find(|(kx, _, _)| *kx == k) {
            if expect.eval(e, &[]) && armed.is_none_or(|(a, _)| e.time >= a.time) {
                armed = Some((e, ordinal));
            }
        }
    }
    fired
}

// --- thresholds ---------------------------------------------------------------------------

struct Threshold<'a> {
    pred: Option<&'a Pred>,
    aggs: &'a [Agg],
    cond: &'a Cond,
}

/// An event in a window: step accepted, event, ordinal.
type Entry<'a> = (usize, &'a Ev, u64);

impl Threshold<'_> {
    /// The events that enter windows: matching, and with a value for
    /// every aggregate that reads one.
    fn entries<'a>(&self, cx: &Cx<'a>) -> Vec<Entry<'a>> {
        cx.visible()
            .into_iter()
            .filter(|(_, e, _)| self.pred.is_none_or(|p| p.eval(e, &[])))
            .filter(|(_, e, _)| self.aggs.iter().all(|a| *a == Agg::Count) || e.v.is_some())
            .collect()
    }

    /// Every aggregate over `window` (None: avg, min, max of nothing).
    fn values(&self, window: &[Entry<'_>]) -> Vec<Option<f64>> {
        let values: Vec<f64> = window.iter().filter_map(|(_, e, _)| e.v).collect();
        self.aggs
            .iter()
            .map(|agg| match agg {
                Agg::Count => Some(window.len() as f64),
                Agg::Sum => Some(values.iter().sum()),
                Agg::Avg => {
                    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
                }
                Agg::Min => values.iter().copied().reduce(f64::min),
                Agg::Max => values.iter().copied().reduce(f64::max),
                // No generated double is integral, so distinct numbers are
                // distinct texts.
                Agg::Distinct => Some(
                    values
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<BTreeSet<_>>()
                        .len() as f64,
                ),
            })
            .collect()
    }

    /// The aggregates over `window` when the condition holds for them.
    fn firing(&self, window: &[Entry<'_>]) -> Option<Vec<Option<f64>>> {
        let values = self.values(window);
        self.cond.holds(&values).then_some(values)
    }

    #[allow(clippy::too_many_arguments)]
    fn alert(
        &self,
        cx: &Cx<'_>,
        id: &AlertIdBuilder,
        time: i64,
        aggregates: &[Option<f64>],
        window: &[Entry<'_>],
        start: i64,
        end: i64,
    ) -> MAlert {
        let mut values = Map::new();
        match self.cond {
            Cond::Single(_, limit) => {
                values.insert("aggregate".into(), json!(self.aggs[0].name()));
                values.insert("value".into(), num(aggregates[0].expect("it holds")));
                values.insert("limit".into(), num(*limit));
            }
            several => {
                for (i, value) in aggregates.iter().enumerate() {
                    values.insert(format!("a{}", i + 1), value.map_or(Value::Null, num));
                }
                values.insert("condition".into(), json!(several.cel()));
            }
        }
        values.insert("count".into(), json!(window.len()));
        values.insert("window_start".into(), ts(start));
        values.insert("window_end".into(), ts(end));
        // Explanations list events oldest first: by time, ties in the
        // order the entity accepted them.
        let mut listed: Vec<Entry<'_>> = window.to_vec();
        listed.sort_by_key(|(_, e, o)| (e.time, *o));
        let events = listed.iter().map(|(_, e, o)| e.reference(*o)).collect();
        cx.alert(id, time, events, values)
    }
}

/// Sliding: an entry leaves when the watermark reaches time + size; the
/// condition is evaluated after every entry enters and at every instant
/// entries leave — an instant once all of it is known: with the event
/// entering at it, or else once the watermark has passed it — and fires on
/// each false → true edge.
fn sliding(cx: &Cx<'_>, t: &Threshold<'_>, size: i64) -> Vec<(usize, MAlert)> {
    let all = t.entries(cx);
    let mut fired = Vec::new();
    let mut holding = false;
    let mut evaluate =
        |k: usize, at: i64, ordinal: Option<u64>, window: Vec<Entry<'_>>, fired: &mut Vec<_>| {
            let firing = t.firing(&window);
            if let (Some(values), false) = (&firing, holding) {
                let mut id = cx.id("sliding");
                id.add_i64(at).add_u64(ordinal.unwrap_or(0));
                fired.push((k, t.alert(cx, &id, at, values, &window, at - size, at)));
            }
            holding = firing.is_some();
        };
    // Instants at which entries left and the window was looked at.
    let mut settled: BTreeSet<i64> = BTreeSet::new();
    for (k, tick) in cx.ticks.iter().enumerate() {
        if let Some(wm) = tick.wm {
            let entering = all.iter().find(|(ke, _, _)| *ke == k).copied();
            let leaves: BTreeSet<i64> = all
                .iter()
                .filter(|(ke, _, _)| *ke < k)
                .map(|(_, e, _)| e.time + size)
                .filter(|l| *l <= wm && !settled.contains(l))
                .collect();
            for leave in leaves {
                if leave == wm {
                    // An instant is looked at once all of it is in: folded
                    // into the evaluation of an event entering at it, else
                    // looked at once the watermark passes it.
                    if entering.is_some() {
                        settled.insert(leave);
                    }
                    continue;
                }
                settled.insert(leave);
                let window = all
                    .iter()
                    .filter(|(ke, e, _)| *ke < k && e.time + size > leave)
                    .copied()
                    .collect();
                evaluate(k, leave, None, window, &mut fired);
            }
            if let Some((_, e, ordinal)) = entering {
                let window = all
                    .iter()
                    .filter(|(ke, x, _)| *ke <= k && x.time + size > wm)
                    .copied()
                    .collect();
                evaluate(k, e.time, Some(ordinal), window, &mut fired);
            }
        }
    }
    fired
}

/// Count windows: after each entering event, the last `n` entries (by time,
/// ties in acceptance order) are aggregated; fires on each false → true
/// edge, at the entering event's time. Nothing leaves with time.
fn last_n(cx: &Cx<'_>, t: &Threshold<'_>, n: u32) -> Vec<(usize, MAlert)> {
    let all = t.entries(cx);
    let mut fired = Vec::new();
    let mut holding = false;
    for (i, &(k, e, ordinal)) in all.iter().enumerate() {
        let mut window: Vec<Entry<'_>> = all[..=i].to_vec();
        window.sort_by_key(|(_, x, o)| (x.time, *o));
        let window: Vec<Entry<'_>> = window[window.len().saturating_sub(n as usize)..].to_vec();
        let firing = t.firing(&window);
        if let (Some(values), false) = (&firing, holding) {
            let mut id = cx.id("count");
            id.add_i64(e.time).add_u64(ordinal);
            let start = window[0].1.time;
            fired.push((k, t.alert(cx, &id, e.time, values, &window, start, e.time)));
        }
        holding = firing.is_some();
    }
    fired
}

/// Tumbling and hopping: the windows `[s, s + size)`, `s` a multiple of
/// `advance`, that hold some event; each fires once, when the watermark
/// reaches its end, if its aggregate satisfies the condition.
fn aligned(cx: &Cx<'_>, t: &Threshold<'_>, size: i64, advance: i64) -> Vec<(usize, MAlert)> {
    let all = t.entries(cx);
    let mut starts = BTreeSet::new();
    for (_, e, _) in &all {
        let mut s = (e.time - size).div_euclid(advance) * advance;
        while s <= e.time {
            if s + size > e.time {
                starts.insert(s);
            }
            s += advance;
        }
    }
    let mut fired = Vec::new();
    for start in starts {
        let end = start + size;
        let window: Vec<Entry<'_>> = all
            .iter()
            .filter(|(_, e, _)| start <= e.time && e.time < end)
            .copied()
            .collect();
        let entered = window
            .iter()
            .map(|(k, _, _)| *k)
            .max()
            .expect("windows hold events");
        let Some(close) = cx.reached(entered, end) else {
            continue;
        };
        assert!(
            close > entered,
            "a window cannot close before its events are accepted"
        );
        if let Some(values) = t.firing(&window) {
            let mut id = cx.id("window");
            id.add_i64(start).add_i64(end);
            fired.push((close, t.alert(cx, &id, end, &values, &window, start, end)));
        }
    }
    fired
}

/// Sessions: events at most `gap` apart belong together; a session closes
/// when the watermark passes its last event + gap and fires once if its
/// aggregate satisfies the condition, at time last + gap.
fn sessions(cx: &Cx<'_>, t: &Threshold<'_>, gap: i64) -> Vec<(usize, MAlert)> {
    let mut all = t.entries(cx);
    all.sort_by_key(|(_, e, o)| (e.time, *o));
    let mut groups: Vec<Vec<Entry<'_>>> = Vec::new();
    for entry in all {
        match groups.last_mut() {
            Some(group) if entry.1.time - group.last().expect("non-empty").1.time <= gap => {
                group.push(entry)
            }
            _ => groups.push(vec![entry]),
        }
    }
    let mut fired = Vec::new();
    for group in groups {
        let start = group[0].1.time;
        let last = group[group.len() - 1].1.time;
        let entered = group.iter().map(|(k, _, _)| *k).max().expect("non-empty");
        let Some(close) = cx.reached(entered, last + gap + 1) else {
            continue;
        };
        assert!(
            close > entered,
            "a session cannot close before its events are accepted"
        );
        if let Some(values) = t.firing(&group) {
            let mut id = cx.id("session");
            id.add_i64(start).add_i64(last + gap);
            fired.push((
                close,
                t.alert(cx, &id, last + gap, &values, &group, start, last + gap),
            ));
        }
    }
    fired
}

// --- sequences ------------------------------------------------------------------------------

/// A run is nothing but the (step, event) pairs it took, in order, and the
/// events it let pass since its last take (the gap a negated step guards).
#[derive(Debug, Clone)]
struct Run<'a> {
    taken: Vec<(usize, &'a Ev, u64)>,
    /// Events seen since the last take, while the current step could be
    /// left and before `first + within`: what a negated step between the
    /// current step and the next one taken must not match.
    gap: Vec<&'a Ev>,
    /// The current step's loop was ended by an event matching its `until`.
    closed: bool,
}

enum Decision {
    Take(usize),
    Ignore,
    /// Ignored, and the current step's loop is over.
    Close,
    End,
}

impl<'a> Run<'a> {
    fn count(&self, step: usize) -> usize {
        self.taken.iter().filter(|(j, _, _)| *j == step).count()
    }

    fn bindings(&self, steps: usize) -> Vec<Bind<'a>> {
        (0..steps)
            .map(|j| {
                let mine: Vec<&Ev> = self
                    .taken
                    .iter()
                    .filter(|(s, _, _)| *s == j)
                    .map(|(_, e, _)| *e)
                    .collect();
                Bind {
                    count: mine.len(),
                    first: mine.first().copied(),
                    last: mine.last().copied(),
                }
            })
            .collect()
    }

    fn first_time(&self) -> i64 {
        self.taken
            .iter()
            .map(|(_, e, _)| e.time)
            .min()
            .expect("runs take an event")
    }

    fn span_with(&self, time: i64) -> i64 {
        let times = self.taken.iter().map(|(_, e, _)| e.time).chain([time]);
        times.clone().max().expect("non-empty") - times.min().expect("non-empty")
    }

    fn current(&self) -> usize {
        self.taken.last().expect("runs take an event").0
    }
}

/// Sequences, simulated literally from `sequence.rs`'s description and
/// replayed from the start of history.
fn sequence(cx: &Cx<'_>, spec: &SeqSpec) -> Vec<(usize, MAlert)> {
    let seen = cx.visible();
    let steps = &spec.steps;
    let trailing = steps.last().expect("steps").negated;
    let matches = |j: usize, e: &Ev, run: Option<&Run<'_>>| {
        let bindings = run.map(|r| r.bindings(steps.len())).unwrap_or_default();
        steps[j].pred.eval(e, &bindings)
    };
    // Complete: every positive step so far reached its minimum and every
    // positive step after the current one may be skipped (min 0); for any
    // order, every step reached its minimum.
    // Groups: a repetition takes one event for each of the group's steps in
    // order; the run leaves the group once it has the group's minimum of
    // repetitions, and may start another below its maximum.
    let group_ending = |j: usize| spec.groups.iter().find(|g| g.last == j);
    let in_group = |j: usize| spec.groups.iter().any(|g| (g.first..=g.last).contains(&j));
    // Repetitions completed: each ends with a take of the group's last step.
    let done = |run: &Run<'_>, g: &GroupSpec| run.count(g.last);
    // The current step may be left: it has its minimum, or (the last step
    // of a group) the group has its minimum of repetitions.
    let satisfied = |run: &Run<'_>| {
        let c = run.current();
        match group_ending(c) {
            Some(g) => done(run, g) >= g.min as usize,
            None => run.count(c) >= steps[c].min as usize,
        }
    };
    let may_repeat = |run: &Run<'_>| {
        group_ending(run.current()).is_some_and(|g| g.max.is_none_or(|m| done(run, g) < m as usize))
    };
    let complete = |run: &Run<'_>| {
        if spec.any_order {
            return (0..steps.len()).all(|j| run.count(j) >= steps[j].min as usize);
        }
        let c = run.current();
        satisfied(run) && steps[c + 1..].iter().all(|s| s.negated || s.min == 0)
    };
    let pending = |run: &Run<'_>| trailing && complete(run);
    // An event matching a step's `until` ends that step's loop: the step
    // never takes it.
    let ends = |j: usize, e: &Ev, run: Option<&Run<'_>>| {
        let bindings = run.map(|r| r.bindings(steps.len())).unwrap_or_default();
        steps[j]
            .until
            .as_ref()
            .is_some_and(|u| u.eval(e, &bindings))
    };
    let below_max =
        |run: &Run<'_>, j: usize| steps[j].max.is_none_or(|m| (run.count(j) as u32) < m);

    let decide = |run: &Run<'_>, e: &Ev| -> Decision {
        let in_window = spec.within.is_none_or(|w| run.span_with(e.time) < w);
        if spec.any_order {
            if !in_window {
                return Decision::Ignore;
            }
            let open = |j: usize| below_max(run, j) && matches(j, e, Some(run));
            if let Some(j) =
                (0..steps.len()).find(|&j| run.count(j) < steps[j].min as usize && open(j))
            {
                return Decision::Take(j);
            }
            return (0..steps.len())
                .find(|&j| open(j))
                .map_or(Decision::Ignore, Decision::Take);
        }
        let c = run.current();
        let can_leave = satisfied(run);
        // A negated step some event in the gap matched: no step after it
        // can be the next one taken (the event would lie between them).
        let guarded =
            |k: usize| steps[k].negated && run.gap.iter().any(|x| matches(k, x, Some(run)));
        // `until`: the first event matching it ends the current step's loop
        // and is not taken by it.
        let closing = !run.closed && ends(c, e, Some(run));
        // A group's step takes one event per repetition: it never stays.
        let stays = !in_group(c)
            && !run.closed
            && !closing
            && below_max(run, c)
            && matches(c, e, Some(run));
        // Another repetition of the group the current step ends (not for a
        // run that waits on a trailing negation: it completed already).
        let repeat = group_ending(c)
            .filter(|_| may_repeat(run) && !pending(run))
            .filter(|g| matches(g.first, e, Some(run)));
        if in_window {
            // 1. Greedy: stay on the current step; a reluctant step stays
            //    only while it is below its minimum, or when no later step
            //    takes the event (2. before 1.).
            if stays && (!steps[c].reluctant || !can_leave) {
                return Decision::Take(c);
            }
            // 1b. A greedy group repeats before a later step may take the
            //     event; any group repeats while below its minimum.
            if let Some(g) = repeat.filter(|g| !g.reluctant || !can_leave) {
                return Decision::Take(g.first);
            }
            // 2. Move on to the first later positive step it matches,
            //    passing negated steps and optional steps it does not match,
            //    but no negated step an event of the gap matched.
            if can_leave {
                for (j, step) in steps.iter().enumerate().skip(c + 1) {
                    if guarded(j) {
                        break;
                    }
                    if step.negated {
                        continue;
                    }
                    if matches(j, e, Some(run)) && !ends(j, e, Some(run)) {
                        return Decision::Take(j);
                    }
                    if step.min > 0 {
                        break;
                    }
                }
            }
            if let Some(g) = repeat {
                return Decision::Take(g.first);
            }
            if stays {
                return Decision::Take(c);
            }
        }
        // 3. A negated step right after the current one ends the run (every
        //    way on passes it), and so does, for a pending run, any negated
        //    step after its current one (it completes by skipping them all),
        //    before first + within.
        let before_deadline = spec.within.is_none_or(|w| e.time < run.first_time() + w);
        if can_leave && before_deadline {
            // After a group that may still repeat, the event only joins the
            // gap: it bars the way past the negated step, not a repetition.
            if c + 1 < steps.len()
                && steps[c + 1].negated
                && matches(c + 1, e, Some(run))
                && !may_repeat(run)
            {
                return Decision::End;
            }
            if pending(run)
                && (c + 1..steps.len()).any(|k| steps[k].negated && matches(k, e, Some(run)))
            {
                return Decision::End;
            }
        }
        // 4. Anything else (ending the loop, for an `until` event).
        if pending(run) || spec.contiguity != Contig::Strict {
            if closing {
                Decision::Close
            } else {
                Decision::Ignore
            }
        } else {
            Decision::End
        }
    };

    let start_step = |e: &Ev| -> Option<usize> {
        if spec.any_order {
            return (0..steps.len()).find(|&j| matches(j, e, None));
        }
        for (j, step) in steps.iter().enumerate() {
            if step.negated {
                continue;
            }
            if matches(j, e, None) && !ends(j, e, None) {
                return Some(j);
            }
            if step.min > 0 {
                return None;
            }
        }
        None
    };

    let mut fired = Vec::new();
    let mut runs: Vec<Run<'_>> = Vec::new();
    let emit = |run: &Run<'_>, time: i64, kind: &str| -> MAlert {
        let mut fp = MatchFingerprint::default();
        for (_, _, o) in &run.taken {
            fp = fp.with(*o);
        }
        let mut id = cx.id(kind);
        id.add_u64(run.taken[0].2).add_u64(fp.0).add_u64(fp.1);
        let mut values = Map::new();
        for (j, step) in steps.iter().enumerate() {
            if !step.negated {
                values.insert(format!("s{}.count", j + 1), json!(run.count(j)));
            }
        }
        for (g, group) in spec.groups.iter().enumerate() {
            values.insert(format!("g{}.count", g + 1), json!(done(run, group)));
        }
        let events = run.taken.iter().map(|(_, e, o)| e.reference(*o)).collect();
        cx.alert(&id, time, events, values)
    };

    // Every run has a lifetime: `within`, else `max_match_age`.
    let lifetime = spec.within.unwrap_or(cx.settings.max_match_age);
    for (k, tick) in cx.ticks.iter().enumerate() {
        // Timers: deadline by deadline, up to the watermark.
        if let (within, Some(wm)) = (lifetime, tick.wm) {
            while let Some(deadline) = runs
                .iter()
                .map(|r| r.first_time() + within)
                .min()
                .filter(|d| *d <= wm)
            {
                let (over, rest): (Vec<Run<'_>>, Vec<Run<'_>>) = runs
                    .into_iter()
                    .partition(|r| r.first_time() + within == deadline);
                runs = rest;
                let completed: Vec<Run<'_>> = over.into_iter().filter(|r| pending(r)).collect();
                if completed.is_empty() {
                    continue;
                }
                match spec.skip {
                    SkipSpec::All => {
                        for run in &completed {
                            fired.push((k, emit(run, deadline, "sequence-deadline")));
                        }
                    }
                    SkipSpec::PastLastEvent => {
                        fired.push((
                            k,
                            emit(preferred(&completed), deadline, "sequence-deadline"),
                        ));
                        runs.retain(|r| r.first_time() > deadline);
                    }
                    _ => {
                        for run in resume(spec.skip, completed, &mut runs) {
                            fired.push((k, emit(&run, deadline, "sequence-deadline")));
                        }
                    }
                }
            }
        }
        let Some(&(_, e, ordinal)) = seen.iter().find(|(kx, _, _)| *kx == k) else {
            continue;
        };
        // Offer the event to every run, oldest first.
        let mut kept = Vec::new();
        let mut completed = Vec::new();
        for run in runs {
            let decision = decide(&run, e);
            match decision {
                Decision::Ignore | Decision::Close => {
                    let mut run = run;
                    run.closed |= matches!(decision, Decision::Close);
                    let open = !spec.any_order && satisfied(&run);
                    if open && spec.within.is_none_or(|w| e.time < run.first_time() + w) {
                        run.gap.push(e);
                    }
                    kept.push(run);
                }
                Decision::End => {}
                Decision::Take(j) => {
                    let mut next = run.clone();
                    if next.current() != j {
                        next.closed = false;
                    }
                    next.taken.push((j, e, ordinal));
                    next.gap.clear();
                    let done = complete(&next) && !trailing;
                    if spec.contiguity == Contig::Any {
                        // The untaken run stays; the branch is another run.
                        kept.push(run);
                    }
                    if done {
                        completed.push(next);
                    } else {
                        kept.push(next);
                    }
                }
            }
        }
        runs = kept;
        if !completed.is_empty() {
            match spec.skip {
                SkipSpec::All => {
                    for run in &completed {
                        fired.push((k, emit(run, e.time, "sequence")));
                    }
                }
                SkipSpec::PastLastEvent => {
                    fired.push((k, emit(preferred(&completed), e.time, "sequence")));
                    runs.clear();
                    continue;
                }
                _ => {
                    for run in resume(spec.skip, completed, &mut runs) {
                        fired.push((k, emit(&run, e.time, "sequence")));
                    }
                }
            }
        }
        if let Some(j) = start_step(e) {
            let run = Run {
                taken: vec![(j, e, ordinal)],
                gap: Vec::new(),
                closed: false,
            };
            if complete(&run) && !trailing {
                fired.push((k, emit(&run, e.time, "sequence")));
                if spec.skip == SkipSpec::PastLastEvent {
                    runs.clear();
                }
            } else {
                runs.push(run);
            }
        }
    }
    fired
}

/// SQL's `AFTER MATCH SKIP TO NEXT ROW / TO FIRST v / TO LAST v`, as Flink
/// runs it: the matches completed together are taken in order of
/// preference; each is emitted unless an earlier one skipped it, and then
/// every run (partial, or completed and not yet emitted) that starts at its
/// first event, or after it and before the event matching resumes at (the
/// first or last event the named step took), is skipped.
fn resume<'a>(
    skip: SkipSpec,
    mut completed: Vec<Run<'a>>,
    runs: &mut Vec<Run<'a>>,
) -> Vec<Run<'a>> {
    let ordinals = |r: &Run<'_>| r.taken.iter().map(|(_, _, o)| *o).collect::<Vec<u64>>();
    completed.sort_by_key(|r| ordinals(r));
    // Where a run starts, in evaluation order: its first event's (time, ordinal).
    let start = |r: &Run<'_>| (r.taken[0].1.time, r.taken[0].2);
    let mut emitted: Vec<Run<'a>> = Vec::new();
    // A skipped range: from a match's first event, until its resume point.
    type Range = ((i64, u64), Option<(i64, u64)>);
    let mut skipped: Vec<Range> = Vec::new();
    let hit = |s: (i64, u64), (from, until): Range| {
        s == from || (s > from && until.is_some_and(|u| s < u))
    };
    for m in completed {
        if skipped.iter().any(|range| hit(start(&m), *range)) {
            continue;
        }
        let of_step = |j: usize| -> Vec<(i64, u64)> {
            m.taken
                .iter()
                .filter(|(s, _, _)| *s == j)
                .map(|(_, e, o)| (e.time, *o))
                .collect()
        };
        let until = match skip {
            SkipSpec::ToFirst(j) => of_step(j).first().copied(),
            SkipSpec::ToLast(j) => of_step(j).last().copied(),
            _ => None,
        };
        let range = (start(&m), until);
        runs.retain(|r| !hit(start(r), range));
        skipped.push(range);
        emitted.push(m);
    }
    emitted
}

/// The one match `past_last_event` emits among runs completed together:
/// the earliest-started (first event accepted first) and, among branches
/// with the same start, the one whose events come first, event by event —
/// the match `relaxed` contiguity would find.
fn preferred<'r, 'a>(completed: &'r [Run<'a>]) -> &'r Run<'a> {
    let ordinals = |r: &Run<'_>| r.taken.iter().map(|(_, _, o)| *o).collect::<Vec<u64>>();
    completed
        .iter()
        .min_by_key(|r| ordinals(r))
        .expect("at least one completed run")
}

// --- driving the engine ------------------------------------------------------------------------

/// The engine's answer to one operation for one key.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineStep {
    pub late: bool,
    pub ordinal: Option<u64>,
    pub alerts: Vec<Alert>,
}

/// Runs `ops` through the engine, one `KeyState` per key (events go to
/// their own key, advances to every key in `keys`).
pub struct Harness {
    pub engine: Engine,
    pub states: Vec<KeyState>,
    rules: Vec<RuleSpec>,
    settings: Settings,
}

impl Harness {
    pub fn new(rules: &[RuleSpec], settings: Settings, keys: &[&str]) -> Harness {
        Harness {
            engine: engine(rules, settings),
            states: keys.iter().map(|k| KeyState::new(*k)).collect(),
            rules: rules.to_vec(),
            settings,
        }
    }

    /// A new engine, from the rules' text compiled again (as after a
    /// restart of the service); the key states are kept.
    pub fn restart(&mut self) {
        self.engine = engine(&self.rules, self.settings);
    }

    fn slot(&self, key: &str) -> usize {
        self.states
            .iter()
            .position(|s| s.key == key)
            .expect("a known key")
    }

    /// Applies one operation; returns, per key, what it produced (`None`
    /// for keys the operation did not concern).
    pub fn apply(&mut self, op: &Op) -> Vec<Option<EngineStep>> {
        let mut out = vec![None; self.states.len()];
        match op {
            Op::Event(e) => {
                let i = self.slot(e.key);
                let outcome = self.engine.on_event(&mut self.states[i], &e.event());
                if self.settings.tight.is_none() {
                    // NB: expired matches are the lifetime the model applies,
                    // not a limit it does not model.
                    let dropped = DropCounters {
                        expired_matches: 0,
                        ..outcome.dropped
                    };
                    assert!(dropped.is_empty(), "nothing is dropped under loose limits");
                }
                out[i] = Some(EngineStep {
                    late: outcome.late,
                    ordinal: outcome.ordinal,
                    alerts: outcome.alerts,
                });
            }
            Op::Advance(t) => {
                for (i, state) in self.states.iter_mut().enumerate() {
                    let alerts = self.engine.advance_to(state, Timestamp(*t));
                    out[i] = Some(EngineStep {
                        late: false,
                        ordinal: None,
                        alerts,
                    });
                }
            }
        }
        out
    }
}

/// An engine for `rules` (compiled from their text) with `settings`.
pub fn engine(rules: &[RuleSpec], settings: Settings) -> Engine {
    let set = RuleSet::new(rules.iter().map(RuleSpec::compile));
    Engine::new(Arc::new(set), settings.engine_config())
}

/// The operations that concern `key`: its events and every advance.
pub fn ops_for(ops: &[Op], key: &str) -> Vec<Op> {
    ops.iter()
        .filter(|op| match op {
            Op::Event(e) => e.key == key,
            Op::Advance(_) => true,
        })
        .cloned()
        .collect()
}
