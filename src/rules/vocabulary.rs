//! The words a rule document and the compiled rule share: severities,
//! modes, the late policy, contiguity and skip strategies. Kept apart so
//! that `schema` (what users write) and `model` (what runs) both depend on
//! them and not on each other.

use serde::{Deserialize, Serialize};

/// How urgent an alert is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    Default,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For the record.
    Info,
    /// Worth a look.
    Low,
    /// The default.
    #[default]
    Medium,
    /// Act soon.
    High,
    /// Act now.
    Critical,
}

impl Severity {
    /// The lowercase name used in documents and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// Whether a rule's alerts page people or are only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Alerts are stored and sent to subscribers.
    #[default]
    Live,
    /// Alerts are stored (marked `shadow`) but sent only to subscribers that ask.
    Shadow,
}

/// What happens to an event that is late for a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    /// Not evaluated by the rule; kept as a dead letter with reason `late`.
    #[default]
    DeadLetter,
    /// Evaluated anyway (counted as late).
    Evaluate,
}

impl LatePolicy {
    /// The name used in documents and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LatePolicy::DeadLetter => "dead_letter",
            LatePolicy::Evaluate => "evaluate",
        }
    }
}

/// How events between steps are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Contiguity {
    /// Unrelated events in between are skipped; a run takes the first event
    /// that matches its next step (Flink `followedBy`).
    #[default]
    Relaxed,
    /// Every event seen by the rule must continue the run, or the run ends
    /// (Flink `next`).
    Strict,
    /// Like relaxed, but every matching event also branches a new run that
    /// skips it (Flink `followedByAny`).
    Any,
}

/// What happens to other partial matches after a match (SQL `AFTER MATCH
/// SKIP`, Flink's `AfterMatchSkipStrategy`), as written: `past_last_event`,
/// `all`, `to_next`, `{to_first: STEP}` or `{to_last: STEP}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SkipStrategy {
    /// Discard every partial match that started at or before the match's last
    /// event (SQL `AFTER MATCH SKIP PAST LAST ROW`).
    #[default]
    PastLastEvent,
    /// Keep every other partial match: every match is emitted.
    All,
    /// Resume at the event after the match's first: discard the partial
    /// matches that started with the match's first event (SQL `SKIP TO NEXT
    /// ROW`).
    ToNext,
    /// Resume at the first event the named step took: discard the partial
    /// matches that started from the match's first event up to it (SQL `SKIP
    /// TO FIRST var`).
    ToFirst(String),
    /// Resume at the last event the named step took (SQL `SKIP TO LAST var`).
    ToLast(String),
}
