//! The checked, compiled rule: what the engine runs.
//!
//! Kept apart from the document users write (`schema.rs`): a [`Rule`] is only
//! ever built by `compile`, so every value in it has been validated — windows
//! are positive, quantifier bounds ordered, expressions compiled with their
//! names resolved.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::rules::expr::Expr;
use crate::rules::schema::RuleDocument;
use crate::rules::template::Template;
pub use crate::rules::vocabulary::{Contiguity, LatePolicy, Mode, Severity, SkipStrategy};

/// The compiled skip strategy: [`SkipStrategy`] with step names resolved to
/// step indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Skip {
    /// Discard every other partial match; the completing event starts none.
    #[default]
    PastLastEvent,
    /// Emit every match, discard nothing.
    All,
    /// Discard the partial matches that started with the match's first event.
    ToNext,
    /// Discard those that started from the match's first event up to the
    /// first event of this step.
    ToFirst(usize),
    /// Discard those that started from the match's first event up to the
    /// last event of this step.
    ToLast(usize),
}
use crate::time::Duration;

/// A compiled rule, ready to evaluate.
#[derive(Debug)]
pub struct Rule {
    /// Unique id, `[a-z0-9._-]+`.
    pub id: Arc<str>,
    /// 1 for a new rule, +1 on each replacement.
    pub version: u64,
    /// The oldest version whose per-key state this version continues: its
    /// own version, unless it replaced an earlier one with the `keep` state
    /// policy (see `shape.rs`). Entity state of versions from `state_since`
    /// to `version` is kept when the rule set changes; older state is dropped.
    pub state_since: u64,
    /// Severity copied into every alert.
    pub severity: Severity,
    /// Disabled rules keep no state and fire nothing.
    pub enabled: bool,
    /// Live or shadow.
    pub mode: Mode,
    /// The filter applied before the pattern; events it rejects are invisible
    /// to the rule (they do not break `strict` contiguity).
    pub when: Option<Expr>,
    /// When set, the rule runs per value of this expression instead of per
    /// event key: an event feeds the entity named by the value.
    pub partition_by: Option<Expr>,
    /// The pattern to detect.
    pub pattern: Pattern,
    /// The alert message; `None` uses a generated description.
    pub message: Option<Template>,
    /// The rule's own lateness policy; `None` uses the service's
    /// `allowed_lateness` and dead-letters late events.
    pub lateness: Option<Lateness>,
    /// Event types this rule can accept at all (from static analysis of
    /// `when` and the pattern's predicates); `None` when any type may match.
    /// The engine skips the rule for other types without evaluating anything.
    pub event_types: Option<BTreeSet<String>>,
    /// What is valid but worth telling the author (e.g. a sequence without
    /// `within`), with where it is.
    pub warnings: Vec<crate::rules::problem::Problem>,
    /// The document the rule was compiled from, as the user wrote it.
    pub document: RuleDocument,
}

/// A rule's lateness policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lateness {
    /// How far behind the entity's clock an event is still on time for this
    /// rule; `None` keeps the service's `allowed_lateness`.
    pub allowed: Option<Duration>,
    /// What happens to events late for this rule.
    pub late: LatePolicy,
}

/// Exactly one pattern kind per rule (DESIGN §3).
#[derive(Debug)]
pub enum Pattern {
    /// Ordered (or any-order) steps.
    Sequence(SequencePattern),
    /// An expected event that fails to arrive.
    Absence(AbsencePattern),
    /// An aggregate over a window crossing a limit.
    Threshold(ThresholdPattern),
}

/// An ordered list of steps.
#[derive(Debug)]
pub struct SequencePattern {
    /// The steps, in order. At least one is positive; the first is positive.
    pub steps: Vec<Step>,
    /// Strict bound on `last.time - first.time` of a match.
    pub within: Option<Duration>,
    /// Treatment of events between steps.
    pub contiguity: Contiguity,
    /// All steps, in any order (a conjunction); no negated steps.
    pub any_order: bool,
    /// Treatment of other partial matches after a match.
    pub skip: Skip,
    /// Without `within`: how long a partial match lives from its first
    /// event (the rule's own; `None` uses the engine's `max_match_age`).
    pub max_match_age: Option<Duration>,
    /// Groups of consecutive steps repeated as a whole. A group's binding
    /// slot (for predicates and the message) is `steps.len()` + its index.
    pub groups: Vec<Group>,
}

impl SequencePattern {
    /// Binding slots: one per step, then one per group.
    pub fn slots(&self) -> usize {
        self.steps.len() + self.groups.len()
    }
}

/// Consecutive steps (`steps[first..=last]`) repeated as a whole, `min` to
/// `max` times: `(A, B){2,}`. Its steps are positive and take exactly one
/// event each per repetition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its name: later steps and the message see the repetitions completed
    /// as `<name>.count`, and its first and last events.
    pub name: Arc<str>,
    /// Its first step's index.
    pub first: usize,
    /// Its last step's index.
    pub last: usize,
    /// Fewest repetitions (at least 1).
    pub min: u32,
    /// Most repetitions; `None` is unbounded.
    pub max: Option<u32>,
    /// Another repetition wins over the step after the group (false:
    /// reluctant, the step after the group first once `min` is reached).
    pub greedy: bool,
}

/// One step of a sequence.
#[derive(Debug)]
pub struct Step {
    /// Name by which later predicates and the message refer to the events
    /// this step bound.
    pub name: Arc<str>,
    /// Which events this step takes.
    pub predicate: Expr,
    /// Fewest events the step takes (0 for an optional step).
    pub min: u32,
    /// Most events the step takes; `None` is unbounded.
    pub max: Option<u32>,
    /// A negated step: no event matching it may occur between its neighbours.
    /// A trailing negated step turns into a timer at `first.time + within`.
    pub negated: bool,
    /// Takes as many events as it can before a later step may take one
    /// (false: reluctant, the later step first once `min` is reached).
    pub greedy: bool,
    /// Ends the step's loop: the first event matching it is not taken by
    /// this step, which then takes no more.
    pub until: Option<Expr>,
    /// The group (index into `SequencePattern::groups`) this step belongs to.
    pub group: Option<usize>,
}

/// An expected event that does not come.
#[derive(Debug)]
pub struct AbsencePattern {
    /// With a trigger: each trigger event at t expects an event in (t, t + within).
    /// Without: the entity's expected events must keep coming, at most `within` apart.
    pub after: Option<Expr>,
    /// The expected event.
    pub expect: Expr,
    /// How long to wait.
    pub within: Duration,
}

/// Aggregates over a window and the condition on them that fires.
#[derive(Debug)]
pub struct ThresholdPattern {
    /// Which events feed the aggregates.
    pub predicate: Expr,
    /// Which events are aggregated together.
    pub window: WindowSpec,
    /// What is computed over them: one or more, by name. The single form
    /// (`aggregate` and a comparison) has one, named `value`. An event
    /// enters a window only when every aggregate's expression has a value
    /// for it.
    pub aggregates: Vec<NamedAggregate>,
    /// The condition that fires.
    pub condition: Condition,
}

impl ThresholdPattern {
    /// The first aggregate (the only one of the single form).
    pub fn aggregate(&self) -> &Aggregate {
        &self.aggregates[0].aggregate
    }
}

/// One aggregate of a threshold with its name (`aggregates: {name: ...}`).
#[derive(Debug)]
pub struct NamedAggregate {
    /// The name the condition and the message use; `value` in the single form.
    pub name: Arc<str>,
    /// What is computed.
    pub aggregate: Aggregate,
}

/// When a threshold fires.
#[derive(Debug)]
pub enum Condition {
    /// The single form: the one aggregate compared with a limit.
    Compare(Comparison),
    /// `condition:` a CEL expression over the aggregates, each a variable
    /// whose slot is its index in `ThresholdPattern::aggregates` (null when
    /// it has no value, which makes a comparison with it false).
    Expr(Expr),
}

/// Window kinds (DESIGN §3). Tumbling and hopping windows are aligned to the
/// Unix epoch and are `[start, start + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowSpec {
    /// The `size` up to each moment: `(t - size, t]`. Edge-triggered.
    Sliding {
        /// Window length.
        size: Duration,
    },
    /// Back-to-back windows, starting at multiples of `size`.
    Tumbling {
        /// Window length.
        size: Duration,
    },
    /// Overlapping windows of `size`, starting at multiples of `advance`.
    Hopping {
        /// Window length.
        size: Duration,
        /// Distance between window starts.
        advance: Duration,
    },
    /// Runs of events at most `gap` apart.
    Session {
        /// Largest gap inside a session (inclusive).
        gap: Duration,
    },
    /// The last `events` matching events. Edge-triggered.
    Count {
        /// How many.
        events: u32,
    },
}

/// What a threshold computes over the window's events.
#[derive(Debug)]
pub enum Aggregate {
    /// Number of events.
    Count,
    /// Sum of a numeric expression.
    Sum(Expr),
    /// Mean of a numeric expression.
    Avg(Expr),
    /// Smallest value of a numeric expression.
    Min(Expr),
    /// Largest value of a numeric expression.
    Max(Expr),
    /// Number of distinct values of an expression.
    Distinct(Expr),
}

impl Aggregate {
    /// The expression aggregated, if any.
    pub fn expr(&self) -> Option<&Expr> {
        match self {
            Aggregate::Count => None,
            Aggregate::Sum(e)
            | Aggregate::Avg(e)
            | Aggregate::Min(e)
            | Aggregate::Max(e)
            | Aggregate::Distinct(e) => Some(e),
        }
    }

    /// The aggregate's name as written in rules: `count`, `sum`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Aggregate::Count => "count",
            Aggregate::Sum(_) => "sum",
            Aggregate::Avg(_) => "avg",
            Aggregate::Min(_) => "min",
            Aggregate::Max(_) => "max",
            Aggregate::Distinct(_) => "distinct",
        }
    }
}

/// The comparison of a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Which comparison.
    pub op: CompareOp,
    /// The limit.
    pub limit: f64,
}

/// `above` and `below` are strict, `at_least` and `at_most` inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareOp {
    /// value > limit
    Above,
    /// value >= limit
    AtLeast,
    /// value < limit
    Below,
    /// value <= limit
    AtMost,
}

impl Comparison {
    /// Whether `value` satisfies the comparison.
    pub fn holds(&self, value: f64) -> bool {
        match self.op {
            CompareOp::Above => value > self.limit,
            CompareOp::AtLeast => value >= self.limit,
            CompareOp::Below => value < self.limit,
            CompareOp::AtMost => value <= self.limit,
        }
    }
}

/// The names a message template can use, per pattern kind, besides `key`,
/// `entity.*` and the current event (`type`, `time`, `id`, `data`: the
/// match's last event, absent for alerts fired by a timer).
///
/// The index of a name is its slot in `EvalContext::bindings` or
/// `EvalContext::variables`; the engine fills the slots in this order.
pub mod template_scope {
    /// Variables every template can use: the rule id and the severity.
    pub const COMMON_VARIABLES: [&str; 2] = ["rule", "severity"];
    /// Absence bindings: `trigger` (the `after` event; empty without `after`)
    /// and `last` (the last expected event seen; empty with `after`).
    pub const ABSENCE_BINDINGS: [&str; 2] = ["trigger", "last"];
    /// Absence variables: the common ones, then `deadline` (RFC 3339) and
    /// `within` (as written, e.g. `30s`).
    pub const ABSENCE_VARIABLES: [&str; 4] = ["rule", "severity", "deadline", "within"];
    /// Threshold bindings: `last`, the window's most recent matching event.
    pub const THRESHOLD_BINDINGS: [&str; 1] = ["last"];
    /// Threshold variables: the common ones, then the aggregate `value`, the
    /// event `count`, the window bounds (RFC 3339) and the `limit`. With
    /// `aggregates` and `condition`, `value` and `limit` do not exist (their
    /// slots hold null under unusable names) and each aggregate follows, by
    /// name, in the order of `ThresholdPattern::aggregates`.
    pub const THRESHOLD_VARIABLES: [&str; 7] = [
        "rule",
        "severity",
        "value",
        "count",
        "window_start",
        "window_end",
        "limit",
    ];
    // Sequence templates bind every step by its name (slot = step index) and
    // use COMMON_VARIABLES.
}
