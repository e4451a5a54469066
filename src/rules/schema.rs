//! The rule document: what users write, in YAML or JSON (one schema).
//!
//! These types describe the document only; they hold text, not compiled
//! expressions. `parse.rs` reads them (collecting every problem with its
//! path and line), `compile.rs` turns them into a [`crate::rules::Rule`].
//! `docs/rules.md` is the user-facing reference of every field here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::rules::vocabulary::{Contiguity, LatePolicy, Mode, Severity, SkipStrategy};

/// A rule as written by its author.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "id": "brute-force-login",
    "description": "Three or more failed logins, then a success, within 5 minutes",
    "severity": "high",
    "sequence": {"within": "5m", "steps": [
        {"name": "failures", "match": "type == \"login_failed\"", "times": {"min": 3}},
        {"name": "success", "match": "type == \"login_success\""}
    ]},
    "alert": {"message": "{{key}}: {{failures.count}} failed logins, then a success from {{success.data.ip}}"}
}))]
pub struct RuleDocument {
    /// Unique id: 1 to 128 lowercase letters, digits, `.`, `_` and `-`.
    pub id: String,
    /// What the rule detects, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Severity of its alerts (default `medium`).
    #[serde(default)]
    pub severity: Severity,
    /// A disabled rule keeps no state and fires nothing (default `true`).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// `live` (default) or `shadow`: shadow alerts are stored but sent only to
    /// subscribers that ask for them.
    #[serde(default, skip_serializing_if = "is_live")]
    pub mode: Mode,
    /// CEL filter applied before the pattern: events it rejects are invisible
    /// to the rule (they do not break `strict` contiguity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// CEL expression giving the key the rule runs under instead of the
    /// event's own key, e.g. `data.merchant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_by: Option<String>,
    /// An ordered (or any-order) list of steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<SequenceDoc>,
    /// An expected event that fails to arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absence: Option<AbsenceDoc>,
    /// An aggregate over a window crossing a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<ThresholdDoc>,
    /// How alerts read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertDoc>,
    /// This rule's lateness policy (default: the service's allowed lateness,
    /// late events dead-lettered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lateness: Option<LatenessDoc>,
}

/// `lateness:` — how late an event may be for this rule, and what happens
/// to later ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LatenessDoc {
    /// How far behind the entity's clock an event is still on time, e.g.
    /// `10s` (default: the service's `allowed_lateness`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<String>,
    /// `dead_letter` (default): late events are not evaluated and are kept as
    /// dead letters; `evaluate`: they are evaluated anyway. Counted either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late: Option<LatePolicy>,
}

/// `sequence:` — steps in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SequenceDoc {
    /// Strict bound on the time from the first to the last event of a match,
    /// e.g. `5m`: a match needs last.time − first.time < within. Required
    /// when the last step is negated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
    /// `relaxed` (default), `strict` or `any`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub contiguity: Contiguity,
    /// All steps in any order within the window (a conjunction). Its steps
    /// are all required and not negated, and contiguity stays `relaxed`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub any_order: bool,
    /// `past_last_event` (default) or `all`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub skip: SkipStrategy,
    /// Only without `within`: how long a partial match lives, in event time
    /// from its first event, e.g. `2h` (default: the service's
    /// `engine.max_match_age`, 24 h). Expired partial matches are counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_match_age: Option<String>,
    /// The steps, in order: at least one, at most `max_steps` (default 32).
    /// At least one step is not negated, and the first one never is.
    pub steps: Vec<StepDoc>,
}

/// One step of a sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDoc {
    /// Name used by later steps and the message (default `step1`, `step2`,
    /// ...: `step` and the 1-based position). An identifier
    /// (`[A-Za-z_][A-Za-z0-9_]*`), unique in the sequence, and neither a CEL
    /// keyword nor one of `type`, `key`, `time`, `id`, `data`, `entity`,
    /// `rule`, `severity`, `trigger`, `last`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// CEL predicate selecting the step's events. It may refer to the steps
    /// before it by name (e.g. `failures.count`), except negated ones; in an
    /// `any_order` sequence, to none. Required, except on a group.
    #[serde(rename = "match", default, skip_serializing_if = "String::is_empty")]
    pub match_: String,
    /// How many events: a number n ≥ 1 (exactly n), or `{min, max}` (min
    /// defaults to 1, max omitted is unbounded; max ≥ 1 and min ≤ max). No
    /// number may exceed `max_quantifier` (default 10,000). Default: exactly
    /// one. Not allowed on a negated step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<TimesDoc>,
    /// The step may be skipped (its minimum becomes 0). Not allowed on a
    /// negated step, nor on the last step unless a negated step follows it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub optional: bool,
    /// A negated step: no such event between its neighbours. Not the first
    /// step, never two in a row, and as the last step ("and then no such
    /// event") it needs `within`.
    #[serde(default, rename = "not", skip_serializing_if = "is_false")]
    pub negated: bool,
    /// On a step that may take several events: `true` (default) takes as
    /// many as it can before the next step may take one (greedy, `*`);
    /// `false` lets the next step take an event as soon as this one has its
    /// minimum (reluctant, `*?`, Flink's default without `greedy()`).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub greedy: bool,
    /// On a step that may take several events: a CEL predicate that ends its
    /// loop (Flink's `until`): the first event that matches it is not taken
    /// by this step, which takes no more; the next step may take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// A group: instead of `match`, a sequence of steps (each with `name`
    /// and `match` only) that this step repeats as a whole, `times` times
    /// (default once; `greedy: false` makes the repetition reluctant), e.g.
    /// a failed login then a password reset, twice or more. Later steps see
    /// its steps by name and the group's name (count: repetitions
    /// completed; first and last: its first and last events). Not in an
    /// `any_order` sequence, not negated, not optional, not nested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub group: Option<Vec<StepDoc>>,
}

/// A quantifier: exactly `n`, or a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TimesDoc {
    /// Exactly this many.
    Exactly(u32),
    /// Between `min` and `max` (inclusive).
    Range {
        /// Fewest (default 1; 0 makes the step optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<u32>,
        /// Most (default unbounded; at least 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u32>,
    },
}

/// `absence:` — an expected event that does not come.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AbsenceDoc {
    /// CEL predicate of the trigger event; omitted for heartbeat loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// CEL predicate of the expected event.
    pub expect: String,
    /// How long to wait, e.g. `30s`: after each trigger, or (without `after`)
    /// after the last expected event.
    pub within: String,
}

/// `threshold:` — an aggregate over a window against a limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdDoc {
    /// CEL predicate of the events that feed the aggregate (default: all the
    /// rule sees).
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub match_: Option<String>,
    /// The window.
    pub window: WindowDoc,
    /// `count`, `sum(expr)`, `avg(expr)`, `min(expr)`, `max(expr)` or
    /// `distinct(expr)` (default `count`); `expr` is a CEL expression over
    /// each matching event, e.g. `sum(data.amount)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<String>,
    /// Fires when the aggregate is strictly greater. A threshold has exactly
    /// one of `above`, `at_least`, `below`, `at_most`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Fires when the aggregate is greater or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<f64>,
    /// Fires when the aggregate is strictly smaller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// Fires when the aggregate is smaller or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_most: Option<f64>,
    /// Several aggregates by name, e.g. `{n: count, total: sum(data.amount)}`
    /// (instead of `aggregate` and a comparison; needs `condition`). Names
    /// are identifiers, neither CEL keywords nor names the alert uses
    /// (`value`, `count`, `limit`, `window_start`, `window_end`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregates: Option<BTreeMap<String, String>>,
    /// With `aggregates`: the CEL condition over them that fires, e.g.
    /// `n > 5 && total > 10000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// Exactly one window kind. Every length is positive and at most
/// `max_duration` (default 90 days).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowDoc {
    /// `(t - size, t]` at every moment; fires when the condition becomes true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding: Option<String>,
    /// Back-to-back epoch-aligned windows; fires at window close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tumbling: Option<String>,
    /// Overlapping windows of `size` every `advance`; fires at window close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hopping: Option<HoppingDoc>,
    /// Runs of events at most `gap` apart; fires when the session closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionDoc>,
    /// The last N matching events (1 to `max_count_window`, default
    /// 10,000); fires when the condition becomes true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

/// `hopping: {size, advance}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoppingDoc {
    /// Window length.
    pub size: String,
    /// Distance between window starts: at most `size`, and `size` a whole
    /// multiple of it. `size / advance` windows are open at once per key, at
    /// most `max_open_windows` (default 1,000).
    pub advance: String,
}

/// `session: {gap}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionDoc {
    /// Largest gap between events of one session (inclusive).
    pub gap: String,
}

/// `alert:` — how alerts read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertDoc {
    /// Message template, at most `max_template_bytes` (default 4 KiB);
    /// `{{ expr }}` placeholders are CEL expressions over the match (see
    /// `docs/rules.md`). Omitted: a generated description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn is_live(m: &Mode) -> bool {
    *m == Mode::Live
}
fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}
