//! Sequences: ordered steps with quantifiers, negation, contiguity, `within`
//! and skip strategies; and `any_order` conjunctions.
//!
//! # Semantics (DESIGN §3, made exact)
//!
//! A *run* is one partial match. Every event the rule sees (after `when`) is
//! offered to every run, oldest run first, then may start a new run.
//!
//! For an ordered sequence, a run sits at its *current* step `c` (the last
//! positive step that took an event) having taken `n` events there. An event:
//! 1. is taken by `c` again if `n < max(c)` and it matches `c` (quantifiers
//!    are greedy: staying wins over moving on);
//! 2. else, if `n >= min(c)`, is taken by the first later positive step it
//!    matches, passing over negated steps and over optional steps (min 0)
//!    that it does not match;
//! 3. else, if `n >= min(c)` and it matches a negated step that directly
//!    follows `c`, ends the run (a negated step guards the gap between its
//!    neighbours); if it matches a negated step that only optional steps
//!    separate from `c`, it closes the paths that skip those optional steps:
//!    until the run takes another event, no step past that negated step may
//!    be taken (the optional steps before it still may, and a take starts a
//!    new gap);
//! 4. else ends the run under `strict` contiguity, and is ignored under
//!    `relaxed` and `any`.
//!
//! With `within`, a run can take an event only if the span of its event
//! times stays strictly below `within`, and a negated event ends a run only
//! if it comes before `first + within`. A run whose `first + within` the
//! watermark reaches is over: dropped, or — if it already reached a trailing
//! negated step — completed at that deadline (the alert's time). Without
//! `within`, a run lives `max_match_age` (the rule's, else the engine's,
//! 24 h by default) from its first event: when the watermark reaches that,
//! it is dropped and counted (`expired_matches`), so state stays bounded.
//!
//! Under `any` contiguity every take also leaves the untaken run in place
//! (Flink `followedByAny`), so one run branches into several.
//!
//! A run completes when its current step has reached its minimum and every
//! positive step after it is optional: when its last positive step reaches
//! its minimum, or earlier if that step is optional (allowed only before a
//! trailing negated step). A trailing quantifier completes at its minimum;
//! alerts are never held back to see if more would come. If the sequence
//! ends with a negated step the run instead becomes *pending*: it still
//! takes more events for its current and later steps (rules 1 and 2), is
//! ended by an event matching any negated step after its current one (it
//! completes by skipping every step in between) before `first + within`,
//! and completes
//! at `first + within`; while pending, unrelated events are ignored whatever
//! the contiguity.
//!
//! After a match, `past_last_event` emits the earliest-started completed run
//! only (among branches with the same start, the one whose events come
//! first, event by event: the match `relaxed` would find) and discards every other run (all started at or before the match's
//! last event; for a timer-completed match, the deadline counts as its end),
//! and the completing event starts no new run. A completed run is a match,
//! not a partial match: `max_partial_matches` never refuses it. `all` emits every completed
//! run and keeps the others.
//!
//! An event starts a new run if it matches the first positive step — or a
//! later one when every positive step before it is optional. Runs beyond
//! `max_partial_matches` are not started and are counted as dropped.
//!
//! A *group* is consecutive steps, each taking one event, repeated as a
//! whole `min` to `max` times (`(A, B){2,}`). A run at a group's last step
//! has completed a repetition (`iteration` counts them): the current step
//! counts as having its minimum only once the group has `min` repetitions
//! (rules 2, 3 and completion above), and while below `max` — and not
//! pending — an event the group's first step matches starts another
//! repetition: before rule 2 for a greedy group, after it for a reluctant
//! one (and before it for either while below `min`). A negated step right
//! after a group that may still repeat does not end the run; its event
//! closes only the way past it, as behind optional steps (rule 3). A
//! group's binding slot follows the steps': its count is the repetitions
//! completed, its first and last events those of its steps.
//!
//! `any_order` sequences are conjunctions: a run has a count per step; an
//! event goes to the first step (in declaration order) still below its
//! minimum that it matches, else the first below its maximum; the run
//! completes when every step reaches its minimum.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::engine::alert::{Alert, Explanation, MatchFingerprint};
use crate::engine::counters::DropCounters;
use crate::engine::env::{Fired, RuleEnv};
use crate::engine::EngineConfig;
use crate::event::{Event, EventRef};
use crate::rules::expr::Binding;
use crate::rules::template::Template;
use crate::rules::{Contiguity, Group, SequencePattern, Skip};
use crate::time::{Duration, Timestamp};

/// What the engine precomputes about a sequence rule.
#[derive(Debug)]
pub(crate) struct SequencePlan {
    /// Per step: its predicate reads bindings, so it is evaluated per run.
    uses_bindings: Vec<bool>,
    /// Per step: some predicate or the message reads this step's events,
    /// so runs keep them (otherwise runs keep only references).
    keep_events: Vec<bool>,
    /// Runs branch (`any` contiguity), so branches with the same start can
    /// complete together: runs keep the ordinals they took to tell them apart.
    keep_ordinals: bool,
    /// The sequence ends with a negated step (a timer).
    trailing_negation: bool,
    /// The skip strategy resumes at a step's event: runs keep where each
    /// step's events stand.
    keep_marks: bool,
    /// Number of steps: a group's binding slot is this plus its index.
    steps: usize,
    /// Per step, the (first, last) steps of its group, if any.
    group_of: Vec<Option<(usize, usize, usize)>>,
}

impl SequencePlan {
    pub fn new(pattern: &SequencePattern, message: Option<&Template>) -> SequencePlan {
        let n = pattern.steps.len();
        let slots = pattern.slots();
        let uses_bindings: Vec<bool> = pattern
            .steps
            .iter()
            .map(|s| !s.predicate.binding_slots().is_empty())
            .collect();
        let mut keep_events = vec![false; slots];
        for step in &pattern.steps {
            for &slot in step.predicate.binding_slots() {
                if slot < slots {
                    keep_events[slot] = true;
                }
            }
        }
        for slot in message.map(Template::binding_slots).unwrap_or_default() {
            if slot < slots {
                keep_events[slot] = true;
            }
        }
        let last_positive = pattern.steps.iter().rposition(|s| !s.negated).unwrap_or(0);
        SequencePlan {
            uses_bindings,
            keep_events,
            keep_ordinals: pattern.contiguity == Contiguity::Any,
            trailing_negation: last_positive + 1 < n,
            keep_marks: matches!(pattern.skip, Skip::ToFirst(_) | Skip::ToLast(_)),
            steps: n,
            group_of: pattern
                .steps
                .iter()
                .map(|s| {
                    s.group
                        .map(|g| (g, pattern.groups[g].first, pattern.groups[g].last))
                })
                .collect(),
        }
    }
}

/// Partial matches of one sequence rule for one key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SequenceState {
    runs: Vec<Run>,
}

/// One partial match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Run {
    /// The current step (ordered sequences).
    step: u32,
    /// What each step has taken.
    steps: Vec<StepMatch>,
    /// Earliest and latest event time taken.
    min_time: Timestamp,
    max_time: Timestamp,
    /// Ordinal of the run's first event.
    first_ordinal: u64,
    /// Fingerprint of every event taken, for the alert id.
    fingerprint: MatchFingerprint,
    /// The events taken, bounded.
    explanation: Explanation,
    /// Reached the trailing negated step: waits for its deadline.
    #[serde(default)]
    pending: bool,
    /// Ordinal of every event taken, in order, under `any` contiguity only
    /// (one number per event; the explanation is bounded and cannot order
    /// branches).
    #[serde(default)]
    ordinals: Vec<u64>,
    /// The earliest negated step that an event matched since the run's last
    /// take, when optional steps stand between it and the current step: the
    /// run may still take those optional steps, but no step past it.
    #[serde(default)]
    barrier: Option<u32>,
    /// Per step, where its events stand, under `skip: {to_first | to_last}`
    /// only (empty otherwise).
    #[serde(default)]
    marks: Vec<StepMarks>,
    /// The current step's loop was ended by its `until`: it takes no more.
    #[serde(default)]
    closed: bool,
    /// In a group: which repetition of it the run is in (1 for the first).
    /// State format 3.
    #[serde(default)]
    iteration: u32,
}

/// What one step of a run has taken.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct StepMatch {
    count: u32,
    #[serde(default)]
    first: Option<Arc<Event>>,
    #[serde(default)]
    last: Option<Arc<Event>>,
}

/// Where one step's first and last events stand in evaluation order
/// (time, ordinal), kept for `skip: {to_first | to_last: ...}` only.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
struct StepMarks {
    first: Option<(Timestamp, u64)>,
    last: Option<(Timestamp, u64)>,
}

/// What a run does with an event.
enum Decision {
    Take(usize),
    Ignore,
    End,
    /// An event matched negated step `j`, which optional steps separate
    /// from the current one: paths that skip them are closed (and, when it
    /// also matched the current step's `until`, its loop is over).
    Bar(usize, bool),
    /// The event matched the current step's `until`: its loop is over (the
    /// run stays, waiting for a later step).
    Close,
}

/// Predicate results that do not depend on the run, computed once per event.
struct PredicateCache {
    known: u64,
    value: u64,
}

impl PredicateCache {
    fn new() -> Self {
        PredicateCache { known: 0, value: 0 }
    }
}

/// Everything needed to evaluate step predicates against one event.
struct Probe<'a> {
    env: &'a RuleEnv<'a>,
    pattern: &'a SequencePattern,
    plan: &'a SequencePlan,
    event: &'a Arc<Event>,
    cache: PredicateCache,
}

impl Probe<'_> {
    /// Whether the event matches step `j`'s `until`: a step never takes an
    /// event that ends its loop.
    fn ends_loop(&self, j: usize, run: Option<&Run>) -> bool {
        let Some(until) = &self.pattern.steps[j].until else {
            return false;
        };
        let bindings: Vec<Binding<'_>> = match run {
            Some(run) => run.bindings(),
            None => vec![Binding::default(); self.pattern.slots()],
        };
        until.matches(&self.env.ctx(Some(self.event), &bindings))
    }

    /// Whether step `j`'s predicate accepts the event in the context of `run`
    /// (`None`: a run that has bound nothing yet).
    fn matches(&mut self, j: usize, run: Option<&Run>) -> bool {
        let predicate = &self.pattern.steps[j].predicate;
        if !self.plan.uses_bindings[j] {
            if j < 64 {
                let bit = 1u64 << j;
                if self.cache.known & bit == 0 {
                    let ctx = self.env.ctx(Some(self.event), &[]);
                    if predicate.matches(&ctx) {
                        self.cache.value |= bit;
                    }
                    self.cache.known |= bit;
                }
                return self.cache.value & bit != 0;
            }
            return predicate.matches(&self.env.ctx(Some(self.event), &[]));
        }
        let bindings: Vec<Binding<'_>> = match run {
            Some(run) => run.bindings(),
            None => vec![Binding::default(); self.pattern.slots()],
        };
        predicate.matches(&self.env.ctx(Some(self.event), &bindings))
    }
}

impl Run {
    /// Where the run starts in evaluation order.
    fn started(&self) -> RunStart {
        (self.min_time, self.first_ordinal)
    }

    fn bindings(&self) -> Vec<Binding<'_>> {
        self.steps
            .iter()
            .map(|s| Binding {
                count: u64::from(s.count),
                first: s.first.as_deref(),
                last: s.last.as_deref(),
            })
            .collect()
    }

    /// Span of event times if the run also took an event at `time`.
    fn span_with(&self, time: Timestamp) -> i64 {
        self.max_time
            .max(time)
            .0
            .saturating_sub(self.min_time.min(time).0)
    }

    fn take(
        &mut self,
        j: usize,
        event: &Arc<Event>,
        reference: &EventRef,
        plan: &SequencePlan,
        explain_limit: usize,
    ) {
        let ordinal = reference.ordinal;
        if plan.keep_marks {
            if self.marks.is_empty() {
                self.marks = vec![StepMarks::default(); self.steps.len()];
            }
            let at = (event.time, ordinal);
            self.marks[j].first.get_or_insert(at);
            self.marks[j].last = Some(at);
        }
        if let Some((g, first, last)) = plan.group_of[j] {
            if j == first {
                // Back from the group's last step: another repetition.
                let again = self.step as usize == last && self.steps[last].count > 0;
                self.iteration = if again { self.iteration + 1 } else { 1 };
            }
            let group = &mut self.steps[plan.steps + g];
            if j == last {
                group.count += 1;
            }
            if plan.keep_events[plan.steps + g] {
                group.first.get_or_insert_with(|| Arc::clone(event));
                group.last = Some(Arc::clone(event));
            }
        }
        let step = &mut self.steps[j];
        step.count += 1;
        if plan.keep_events[j] {
            if step.first.is_none() {
                step.first = Some(Arc::clone(event));
            }
            step.last = Some(Arc::clone(event));
        }
        if self.step != j as u32 {
            self.closed = false;
        }
        self.step = j as u32;
        // A take starts a new gap: earlier negated events guarded the old one.
        self.barrier = None;
        self.min_time = self.min_time.min(event.time);
        self.max_time = self.max_time.max(event.time);
        self.fingerprint = self.fingerprint.with(ordinal);
        self.explanation.push(reference.clone(), explain_limit);
        if plan.keep_ordinals {
            self.ordinals.push(ordinal);
        }
    }

    fn start(steps: usize, event: &Event, ordinal: u64) -> Run {
        Run {
            step: 0,
            steps: vec![StepMatch::default(); steps],
            min_time: event.time,
            max_time: event.time,
            first_ordinal: ordinal,
            fingerprint: MatchFingerprint::default(),
            explanation: Explanation::default(),
            pending: false,
            ordinals: Vec::new(),
            barrier: None,
            marks: Vec::new(),
            closed: false,
            iteration: 0,
        }
    }
}

impl SequenceState {
    /// True when no partial match is held.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Number of partial matches held.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// The watermark at which the oldest run's window ends (or, without
    /// `within`, its lifetime).
    pub fn next_deadline(
        &self,
        pattern: &SequencePattern,
        config: &EngineConfig,
    ) -> Option<Timestamp> {
        let lifetime = lifetime(pattern, config);
        self.runs.iter().map(|r| r.min_time.plus(lifetime)).min()
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_event(
        &mut self,
        env: &RuleEnv<'_>,
        pattern: &SequencePattern,
        plan: &SequencePlan,
        event: &Arc<Event>,
        ordinal: u64,
        alerts: &mut Vec<Alert>,
        dropped: &mut DropCounters,
    ) {
        let mut probe = Probe {
            env,
            pattern,
            plan,
            event,
            cache: PredicateCache::new(),
        };
        // The common case, an event no run waits for and that starts none,
        // costs only the first step's predicate.
        if self.runs.is_empty() && start_step(&mut probe).is_none() {
            return;
        }
        let reference = env.reference(event, ordinal);
        let cap = env.config.max_partial_matches.max(1);
        let explain = env.config.max_explained_events;
        let mut completed: Vec<Run> = Vec::new();
        let mut kept: Vec<Run> = Vec::with_capacity(self.runs.len() + 1);

        let runs = std::mem::take(&mut self.runs);
        let total = runs.len();
        for (i, mut run) in runs.into_iter().enumerate() {
            // NB: runs not visited yet will each be kept too, so they count
            // against the cap before a branch may be added.
            let unvisited = total - i - 1;
            let decision = if pattern.any_order {
                decide_any_order(&mut probe, &run)
            } else {
                decide_ordered(&mut probe, &run)
            };
            match decision {
                Decision::Ignore => kept.push(run),
                Decision::End => {}
                Decision::Bar(j, closing) => {
                    run.barrier = Some(j as u32);
                    run.closed |= closing;
                    kept.push(run);
                }
                Decision::Close => {
                    run.closed = true;
                    kept.push(run);
                }
                Decision::Take(j) => {
                    if pattern.contiguity == Contiguity::Any {
                        // The untaken run stays; the taken one is a new branch.
                        let mut branch = run.clone();
                        kept.push(run);
                        branch.take(j, event, &reference, plan, explain);
                        // NB: a branch that completes is a match, not a
                        // partial match: the cap never refuses it.
                        if !completes(&branch, pattern, plan) && kept.len() + unvisited >= cap {
                            dropped.partial_matches += 1;
                            continue;
                        }
                        settle(branch, pattern, plan, &mut kept, &mut completed);
                    } else {
                        run.take(j, event, &reference, plan, explain);
                        settle(run, pattern, plan, &mut kept, &mut completed);
                    }
                }
            }
        }

        let past_last = pattern.skip == Skip::PastLastEvent;
        if !completed.is_empty() {
            emit(
                env,
                pattern,
                completed,
                &mut kept,
                Some(event),
                event.time,
                alerts,
            );
            if past_last {
                // Every other run started at or before this event, which
                // starts none.
                self.runs = kept;
                return;
            }
        }

        if let Some(j) = start_step(&mut probe) {
            let mut run = Run::start(pattern.slots(), event, ordinal);
            run.take(j, event, &reference, plan, explain);
            if !completes(&run, pattern, plan) && kept.len() >= cap {
                dropped.partial_matches += 1;
            } else {
                let mut done = Vec::new();
                settle(run, pattern, plan, &mut kept, &mut done);
                if let Some(run) = done.first() {
                    alerts.push(self_alert(env, pattern, run, Some(event), event.time));
                    if past_last {
                        kept.clear();
                    }
                }
            }
        }
        self.runs = kept;
    }

    /// Expires runs and completes pending ones as the watermark reaches
    /// `first + within`, deadline by deadline. Without `within`, runs expire
    /// at `first + max_match_age`, counted.
    pub(crate) fn advance(
        &mut self,
        env: &RuleEnv<'_>,
        pattern: &SequencePattern,
        watermark: Timestamp,
        alerts: &mut Vec<Alert>,
        dropped: &mut DropCounters,
    ) {
        let lifetime = lifetime(pattern, env.config);
        while let Some(deadline) = self
            .next_deadline(pattern, env.config)
            .filter(|d| *d <= watermark)
        {
            let mut completed = Vec::new();
            let before = self.runs.len();
            self.runs.retain(|run| {
                if run.min_time.plus(lifetime) != deadline {
                    return true;
                }
                if run.pending {
                    completed.push(run.clone());
                }
                false
            });
            if pattern.within.is_none() {
                dropped.expired_matches += (before - self.runs.len()) as u64;
            }
            if completed.is_empty() {
                continue;
            }
            if pattern.skip == Skip::PastLastEvent {
                alerts.push(self_alert(
                    env,
                    pattern,
                    preferred(&completed),
                    None,
                    deadline,
                ));
                // The deadline is the match's end.
                self.runs.retain(|run| run.min_time > deadline);
            } else {
                emit(
                    env,
                    pattern,
                    completed,
                    &mut self.runs,
                    None,
                    deadline,
                    alerts,
                );
            }
        }
    }

    /// A JSON view of the partial matches.
    pub fn view(&self) -> Value {
        json!({
            "kind": "sequence",
            "partial_matches": self.runs.iter().map(|r| json!({
                "started": r.min_time,
                "latest": r.max_time,
                "step": r.step,
                "counts": r.steps.iter().map(|s| s.count).collect::<Vec<_>>(),
                "pending_negation": r.pending,
                "group_repetition": r.iteration,
                "events": r.explanation.events,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Whether a run that just took an event is complete: its current step
/// reached its minimum and every positive step after it may be skipped (an
/// optional last positive step, allowed before a trailing negation, need
/// not be taken); for `any_order`, every step reached its minimum.
fn is_complete(run: &Run, pattern: &SequencePattern) -> bool {
    if pattern.any_order {
        pattern
            .steps
            .iter()
            .zip(&run.steps)
            .all(|(s, m)| m.count >= s.min)
    } else {
        let j = run.step as usize;
        run.steps[j].count >= pattern.steps[j].min
            && group_end(pattern, j).is_none_or(|g| run.iteration >= g.min)
            && pattern.steps[j + 1..]
                .iter()
                .all(|s| s.negated || s.min == 0)
    }
}

/// The group whose last step is `j`, if any.
fn group_end(pattern: &SequencePattern, j: usize) -> Option<&Group> {
    let group = &pattern.groups[pattern.steps[j].group?];
    (group.last == j).then_some(group)
}

/// Whether a run that just took an event completes a match now (not
/// pending behind a trailing negation).
fn completes(run: &Run, pattern: &SequencePattern, plan: &SequencePlan) -> bool {
    !plan.trailing_negation && is_complete(run, pattern)
}

/// How long a run may live: `within`, or, for a sequence without it, the
/// rule's `max_match_age` (else the engine's), so state stays bounded.
pub(crate) fn lifetime(pattern: &SequencePattern, config: &EngineConfig) -> Duration {
    pattern
        .within
        .or(pattern.max_match_age)
        .unwrap_or(config.max_match_age)
}

/// Files a run that just took an event: completed, pending or still open.
fn settle(
    mut run: Run,
    pattern: &SequencePattern,
    plan: &SequencePlan,
    kept: &mut Vec<Run>,
    done: &mut Vec<Run>,
) {
    if !is_complete(&run, pattern) {
        kept.push(run);
    } else if plan.trailing_negation {
        run.pending = true;
        kept.push(run);
    } else {
        done.push(run);
    }
}

/// Emits the matches among `completed` (completed together, by `event` or at
/// a deadline `time`) and discards the runs the skip strategy skips:
///
/// - `past_last_event`: the preferred match (see [`preferred`]); every other
///   run is discarded.
/// - `all`: every match; nothing is discarded.
/// - `to_next`, `to_first`, `to_last`: matches in order of preference; after
///   each, the runs (partial, or completed and not yet emitted) that started
///   from its first event up to, not including, its resume point are
///   discarded: for `to_next` those that started with its first event; for
///   `to_first: S` / `to_last: S` those that started before the first / last
///   event step S took (at least those that started with its first event).
///   Runs that started before the match are kept (Flink's
///   `AfterMatchSkipStrategy`).
fn emit(
    env: &RuleEnv<'_>,
    pattern: &SequencePattern,
    mut completed: Vec<Run>,
    kept: &mut Vec<Run>,
    event: Option<&Arc<Event>>,
    time: Timestamp,
    alerts: &mut Vec<Alert>,
) {
    match pattern.skip {
        Skip::PastLastEvent => {
            alerts.push(self_alert(env, pattern, preferred(&completed), event, time));
            kept.clear();
        }
        Skip::All => {
            for run in &completed {
                alerts.push(self_alert(env, pattern, run, event, time));
            }
        }
        Skip::ToNext | Skip::ToFirst(_) | Skip::ToLast(_) => {
            completed.sort_by(|a, b| {
                a.first_ordinal
                    .cmp(&b.first_ordinal)
                    .then_with(|| a.ordinals.cmp(&b.ordinals))
            });
            let mut candidates = completed.into_iter();
            let mut skipped: Vec<(RunStart, Option<RunStart>)> = Vec::new();
            for run in candidates.by_ref() {
                let start = run.started();
                if skipped.iter().any(|s| in_skip(start, *s)) {
                    continue;
                }
                alerts.push(self_alert(env, pattern, &run, event, time));
                let resume = match pattern.skip {
                    Skip::ToFirst(j) => run.marks.get(j).and_then(|m| m.first),
                    Skip::ToLast(j) => run.marks.get(j).and_then(|m| m.last),
                    _ => None,
                };
                let skip = (start, resume.filter(|r| *r > start));
                kept.retain(|r| !in_skip(r.started(), skip));
                skipped.push(skip);
            }
        }
    }
}

/// Where a run starts in evaluation order: its first event's time, then
/// its ordinal.
type RunStart = (Timestamp, u64);

/// Whether a run starting at `start` falls in the skipped range that starts
/// at a match's first event and ends before its resume point (or is that
/// first event alone).
fn in_skip(start: RunStart, (from, resume): (RunStart, Option<RunStart>)) -> bool {
    start == from || (start >= from && resume.is_some_and(|r| start < r))
}

/// The match `past_last_event` emits among runs completed by the same event
/// or deadline: the earliest-started; among runs with the same start (the
/// branches of `any` contiguity), the one whose events come first, compared
/// event by event — the match `relaxed` contiguity would have found.
///
/// NB: only branches share a start, and only they keep `ordinals`; the
/// explanation cannot stand in, because once bounded it hides the events in
/// the middle that tell branches apart.
fn preferred(completed: &[Run]) -> &Run {
    completed
        .iter()
        .min_by(|a, b| {
            a.first_ordinal
                .cmp(&b.first_ordinal)
                .then_with(|| a.ordinals.cmp(&b.ordinals))
        })
        .expect("called with at least one completed run")
}

// NB: steps are visited by index because the index is also the binding
// slot and the run's step number.
#[allow(clippy::needless_range_loop)]
fn decide_ordered(probe: &mut Probe<'_>, run: &Run) -> Decision {
    let pattern = probe.pattern;
    let steps = &pattern.steps;
    let event_time = probe.event.time;
    let c = run.step as usize;
    let taken = run.steps[c].count;
    let in_window = pattern
        .within
        .is_none_or(|w| run.span_with(event_time) < w.millis());
    // At a group's last step a repetition is complete: the run may leave
    // the group once it has its minimum, and repeat it below its maximum
    // (not while waiting on a trailing negation: it completed already).
    let end_of_group = group_end(pattern, c);
    let can_leave = taken >= steps[c].min && end_of_group.is_none_or(|g| run.iteration >= g.min);
    let repeat = end_of_group
        .filter(|g| !run.pending && g.max.is_none_or(|max| run.iteration < max))
        .filter(|g| probe.matches(g.first, Some(run)));
    // No step past a negated step that an event already matched in this gap.
    let reachable = run.barrier.map_or(steps.len(), |b| b as usize);
    // `until` ends the current step's loop at the first event matching it,
    // which the step does not take.
    let closing = !run.closed && probe.ends_loop(c, Some(run));
    let looping = !run.closed && !closing && steps[c].max.is_none_or(|max| taken < max);

    if in_window {
        // Greedy: staying wins over moving on; reluctant (`greedy: false`):
        // moving on wins once the step has its minimum.
        let stays = looping && probe.matches(c, Some(run));
        if stays && (steps[c].greedy || !can_leave) {
            return Decision::Take(c);
        }
        // A greedy group repeats before the step after it may take the event.
        if let Some(g) = repeat.filter(|g| g.greedy || !can_leave) {
            return Decision::Take(g.first);
        }
        if can_leave {
            for j in c + 1..reachable {
                if steps[j].negated {
                    continue;
                }
                if probe.matches(j, Some(run)) && !probe.ends_loop(j, Some(run)) {
                    return Decision::Take(j);
                }
                if steps[j].min > 0 {
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
    if can_leave {
        let before_deadline = pattern
            .within
            .is_none_or(|w| event_time < run.min_time.plus(w));
        // The negated steps the run could reach next, passing optional
        // steps: one right after the current step guards every path on, so
        // its event ends the run; one behind optional steps closes only the
        // paths that skip them. A pending run ends at any of them: it
        // completes by skipping every step after its current one.
        let mut j = c + 1;
        while before_deadline && j < reachable {
            if steps[j].negated {
                if probe.matches(j, Some(run)) {
                    // NB: after a group that may still repeat, the event
                    // closes only the way out (a repetition starts a new gap).
                    let may_repeat =
                        end_of_group.is_some_and(|g| g.max.is_none_or(|max| run.iteration < max));
                    if (j == c + 1 && !may_repeat) || run.pending {
                        return Decision::End;
                    }
                    if pattern.contiguity == Contiguity::Strict {
                        return Decision::End;
                    }
                    return Decision::Bar(j, closing);
                }
            } else if steps[j].min > 0 {
                break;
            }
            j += 1;
        }
    }
    if run.pending || pattern.contiguity != Contiguity::Strict {
        if closing {
            Decision::Close
        } else {
            Decision::Ignore
        }
    } else {
        Decision::End
    }
}

fn decide_any_order(probe: &mut Probe<'_>, run: &Run) -> Decision {
    let pattern = probe.pattern;
    if pattern
        .within
        .is_some_and(|w| run.span_with(probe.event.time) >= w.millis())
    {
        return Decision::Ignore;
    }
    let mut open = None;
    for (j, step) in pattern.steps.iter().enumerate() {
        let count = run.steps[j].count;
        if step.max.is_some_and(|max| count >= max) || !probe.matches(j, Some(run)) {
            continue;
        }
        if count < step.min {
            return Decision::Take(j);
        }
        open.get_or_insert(j);
    }
    open.map_or(Decision::Ignore, Decision::Take)
}

/// The step a new run would start at, if the event can start one.
#[allow(clippy::needless_range_loop)]
fn start_step(probe: &mut Probe<'_>) -> Option<usize> {
    let steps = &probe.pattern.steps;
    if probe.pattern.any_order {
        let j = (0..steps.len()).find(|&j| probe.matches(j, None))?;
        // Prefer a step that needs the event over one already satisfied
        // (every step of a fresh run is at zero, so the first match wins).
        return Some(j);
    }
    for j in 0..steps.len() {
        if steps[j].negated {
            continue;
        }
        if probe.matches(j, None) && !probe.ends_loop(j, None) {
            return Some(j);
        }
        if steps[j].min > 0 {
            return None;
        }
    }
    None
}

fn self_alert(
    env: &RuleEnv<'_>,
    pattern: &SequencePattern,
    run: &Run,
    event: Option<&Arc<Event>>,
    time: Timestamp,
) -> Alert {
    let mut values = Map::new();
    for (step, taken) in pattern.steps.iter().zip(&run.steps) {
        if !step.negated {
            values.insert(format!("{}.count", step.name), json!(taken.count));
        }
    }
    // A group's count is its repetitions completed.
    for (group, taken) in pattern.groups.iter().zip(&run.steps[pattern.steps.len()..]) {
        values.insert(format!("{}.count", group.name), json!(taken.count));
    }
    if run.explanation.omitted > 0 {
        values.insert("events_omitted".into(), json!(run.explanation.omitted));
    }
    let mut id = env.alert_id(if event.is_some() {
        "sequence"
    } else {
        "sequence-deadline"
    });
    id.add_u64(run.first_ordinal)
        .add_u64(run.fingerprint.0)
        .add_u64(run.fingerprint.1);
    let bindings = run.bindings();
    let variables = env.common_variables();
    env.alert(Fired {
        id,
        time,
        events: run.explanation.events.clone(),
        values,
        bindings: &bindings,
        variables: &variables,
        event: event.map(|e| &**e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run as format 1 wrote it (before `barrier`).
    #[derive(Serialize)]
    struct RunV1 {
        step: u32,
        steps: Vec<StepMatch>,
        min_time: Timestamp,
        max_time: Timestamp,
        first_ordinal: u64,
        fingerprint: MatchFingerprint,
        explanation: Explanation,
        pending: bool,
        ordinals: Vec<u64>,
    }

    #[test]
    fn a_format_1_run_reads_with_no_barrier() {
        let old = SequenceStateV1 {
            runs: vec![RunV1 {
                step: 1,
                steps: vec![StepMatch::default(); 2],
                min_time: Timestamp(5),
                max_time: Timestamp(9),
                first_ordinal: 3,
                fingerprint: MatchFingerprint(1, 2),
                explanation: Explanation::default(),
                pending: true,
                ordinals: vec![3, 4],
            }],
        };
        let bytes = rmp_serde::to_vec(&old).expect("serializes");
        let state: SequenceState = rmp_serde::from_slice(&bytes).expect("format 1 reads");
        assert_eq!(state.runs.len(), 1);
        assert_eq!(state.runs[0].barrier, None);
        // Format 3 added the group repetition: none before.
        assert_eq!(state.runs[0].iteration, 0);
        assert_eq!(state.runs[0].ordinals, vec![3, 4]);
        assert!(state.runs[0].pending);
    }

    #[derive(Serialize)]
    struct SequenceStateV1 {
        runs: Vec<RunV1>,
    }
}
