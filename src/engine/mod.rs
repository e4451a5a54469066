//! The pattern engine: pure, deterministic, per-key matching.
//!
//! The engine is fed one key's events and time, and returns alerts. It never
//! reads a clock, touches a disk or knows about actors:
//!
//! ```text
//! Engine::on_event(&mut KeyState, &Arc<Event>)   -> EventOutcome (alerts, late?)
//! Engine::advance_to(&mut KeyState, clock)       -> alerts fired by timers
//! KeyState::next_deadline()                      -> when to call advance_to next
//! ```
//!
//! # Time (DESIGN §4)
//! Each entity has its own clock: the greatest event time it accepted, or a
//! later time the service advanced it to. Its watermark is the clock minus
//! `allowed_lateness`. An event older than the watermark is late: reported,
//! not evaluated. Before an event is evaluated the clock moves to its time,
//! so every timer due at or before that watermark fires first; a deadline
//! `d` fires when the watermark reaches `d`.
//!
//! Accepted events are evaluated in event-time order, as Flink CEP does:
//! with allowed lateness `L > 0` an event waits in the entity's reorder
//! buffer (`reorder.rs`) until the watermark of each rule that sees it
//! (clock − that rule's lateness) reaches its time, then runs, ties in
//! acceptance order, after every timer due by then. A rule with lateness L
//! so evaluates an event at `t` when the clock reaches `t + L`; its alerts
//! come L later than with no lateness. With `L = 0` nothing waits. An
//! event's ordinal is its position in acceptance order.
//!
//! The semantics of each pattern kind live in one file: `sequence.rs`,
//! `absence.rs`, and `threshold/` with one file per window kind (and
//! `aggregate.rs`). Each kind is paired with its state in one place
//! (`RuleEntry::bind`, `threshold::bind`), so a new kind does not compile
//! until every use handles it.

mod absence;
mod aggregate;
pub mod alert;
mod counters;
mod env;
pub mod reorder;
mod sequence;
pub mod state;
mod threshold;

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::Event;
use crate::rules::expr::{EvalContext, Expr};
use crate::rules::{LatePolicy, Pattern, Rule};
use crate::time::{Duration, Timestamp};

pub use alert::Alert;
pub use counters::DropCounters;
use state::Due;
pub use state::{KeyState, PatternState, RuleState, STATE_FORMAT};

use crate::rules::{AbsencePattern, SequencePattern, ThresholdPattern};
use absence::AbsenceState;
use env::RuleEnv;
use reorder::Waiting;
use sequence::{SequencePlan, SequenceState};
use threshold::Admission;
use threshold::ThresholdState;

/// Engine settings. Every limit here is per rule per key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// How far behind its clock an entity still accepts events (default 0 s).
    pub allowed_lateness: Duration,
    /// Most partial matches (sequence runs, pending absence deadlines) one
    /// rule keeps for one key (default 1,000). More are dropped and counted.
    pub max_partial_matches: usize,
    /// Most sliding-window entries, open windows, sessions or distinct values
    /// one rule keeps for one key (default 10,000). More are dropped and counted.
    pub max_window_entries: usize,
    /// Most events an alert lists in its explanation (default 20).
    pub max_explained_events: usize,
    /// How long a partial match of a sequence without `within` lives, in
    /// event time from its first event (default 24 h; a rule may set its own
    /// `sequence.max_match_age`). Expired matches are counted.
    pub max_match_age: Duration,
    /// Most events one entity holds in its reorder buffer while they wait
    /// for their watermark (default 10,000; only with allowed lateness above
    /// 0). Past it the oldest are evaluated at once, out of time order, and
    /// counted.
    pub max_buffered_events: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            allowed_lateness: Duration::ZERO,
            max_partial_matches: 1_000,
            max_window_entries: 10_000,
            max_explained_events: 20,
            max_match_age: Duration::from_secs(24 * 3600),
            max_buffered_events: 10_000,
        }
    }
}

/// What evaluating one event produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventOutcome {
    /// Alerts, in the order they fired: timers due before the event first.
    pub alerts: Vec<Alert>,
    /// The event is late and must be kept as a dead letter: a rule that
    /// would have seen it found it late and does not evaluate late events,
    /// or it is older than the entity's watermark and no rule saw it.
    pub late: bool,
    /// Why the event is a dead letter, when `late` is set.
    pub late_reason: LateReason,
    /// Rules the event was late for, with what each did about it.
    pub late_for: Vec<(Arc<str>, LateTreatment)>,
    /// The event's position in its entity's stream (absent when no rule
    /// evaluated a late event).
    pub ordinal: Option<u64>,
    /// Drops caused by this call (also added to `KeyState::dropped`).
    pub dropped: DropCounters,
}

/// Why an event is kept as a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LateReason {
    /// Older than the watermark of every rule that would have seen it, or
    /// of a rule that dead-letters late events.
    #[default]
    Late,
    /// Late for a rule that evaluates late events, but every window of that
    /// rule it belongs to has already closed (a closed window never fires
    /// twice).
    WindowClosed,
}

/// What one rule did with an event that was late for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateTreatment {
    /// Not evaluated: the rule dead-letters late events.
    DeadLetter,
    /// Evaluated anyway (`late: evaluate`).
    Evaluate,
    /// Not evaluated: its windows have closed.
    WindowClosed,
}

impl LateTreatment {
    /// The name used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LateTreatment::DeadLetter => "dead_letter",
            LateTreatment::Evaluate => "evaluate",
            LateTreatment::WindowClosed => "window_closed",
        }
    }
}

/// A compiled rule plus what the engine precomputes about it.
struct RuleEntry {
    rule: Arc<Rule>,
    sequence_plan: Option<SequencePlan>,
}

/// The rules an event type may concern, and the type's shared name.
struct Dispatch {
    name: Arc<str>,
    rules: Vec<u32>,
}

/// The enabled rules, indexed for fast dispatch by event type.
pub struct RuleSet {
    entries: Vec<RuleEntry>,
    /// For each event type some rule names, every rule that may act on it
    /// (typed rules for that type plus untyped rules), ascending.
    by_type: HashMap<String, Dispatch>,
    /// Rules that may act on any event type, ascending.
    any_type: Vec<u32>,
    /// Rules with `partition_by`, ascending.
    partitioned: Vec<u32>,
    by_id: HashMap<Arc<str>, u32>,
    fingerprint: u64,
    /// Some rule has its own lateness policy.
    any_own_lateness: bool,
}

impl RuleSet {
    /// Indexes `rules`; disabled rules are left out (they keep no state).
    pub fn new(rules: impl IntoIterator<Item = Arc<Rule>>) -> RuleSet {
        let entries: Vec<RuleEntry> = rules
            .into_iter()
            .filter(|r| r.enabled)
            .map(|rule| RuleEntry {
                // NB: exhaustive, so a new kind is a compile error here too.
                sequence_plan: match &rule.pattern {
                    Pattern::Sequence(p) => Some(SequencePlan::new(p, rule.message.as_ref())),
                    Pattern::Absence(_) | Pattern::Threshold(_) => None,
                },
                rule,
            })
            .collect();
        let mut any_type = Vec::new();
        let mut typed: HashMap<String, Vec<u32>> = HashMap::default();
        let mut partitioned = Vec::new();
        let mut by_id = HashMap::default();
        let mut fingerprint = xxhash_rust::xxh3::Xxh3::new();
        for (i, entry) in entries.iter().enumerate() {
            let i = i as u32;
            match &entry.rule.event_types {
                None => any_type.push(i),
                Some(types) => {
                    for t in types {
                        typed.entry(t.clone()).or_default().push(i);
                    }
                }
            }
            if entry.rule.partition_by.is_some() {
                partitioned.push(i);
            }
            by_id.insert(entry.rule.id.clone(), i);
            fingerprint.update(&(entry.rule.id.len() as u64).to_le_bytes());
            fingerprint.update(entry.rule.id.as_bytes());
            fingerprint.update(&entry.rule.version.to_le_bytes());
        }
        let by_type = typed
            .into_iter()
            .map(|(t, mut rules)| {
                rules.extend_from_slice(&any_type);
                rules.sort_unstable();
                rules.dedup();
                let name = Arc::from(t.as_str());
                (t, Dispatch { name, rules })
            })
            .collect();
        RuleSet {
            any_own_lateness: entries.iter().any(|e| e.rule.lateness.is_some()),
            entries,
            by_type,
            any_type,
            partitioned,
            by_id,
            // NB: never 0, which a fresh KeyState carries, so a fresh state
            // is always aligned before use.
            fingerprint: fingerprint.digest() | 1,
        }
    }

    /// An empty rule set.
    pub fn empty() -> RuleSet {
        RuleSet::new(Vec::new())
    }

    /// The rules, in index order.
    pub fn rules(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.entries.iter().map(|e| &e.rule)
    }

    /// The rule with `id`, if enabled.
    pub fn get(&self, id: &str) -> Option<&Arc<Rule>> {
        self.by_id.get(id).map(|&i| &self.entries[i as usize].rule)
    }

    /// Number of enabled rules.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no rule is enabled.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Identifies the set of (rule id, version) pairs.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    fn candidates(&self, event_type: &str) -> &[u32] {
        self.dispatch(event_type).0
    }

    /// The candidate rules of `event_type`, and its shared name when some
    /// rule names the type.
    fn dispatch(&self, event_type: &str) -> (&[u32], Option<&Arc<str>>) {
        match self.by_type.get(event_type) {
            Some(d) => (&d.rules, Some(&d.name)),
            None => (&self.any_type, None),
        }
    }
}

/// The pattern engine for one rule set.
pub struct Engine {
    rules: Arc<RuleSet>,
    config: EngineConfig,
    /// Each rule's allowed lateness, by index.
    lateness: Vec<Duration>,
    /// The largest and smallest of them (0 with no rule): with 0 the
    /// reorder buffer is never used.
    max_lateness: Duration,
    min_lateness: Duration,
}

impl Engine {
    /// An engine evaluating `rules` with `config`.
    pub fn new(rules: Arc<RuleSet>, config: EngineConfig) -> Engine {
        let lateness: Vec<Duration> = rules
            .entries
            .iter()
            .map(|e| {
                e.rule
                    .lateness
                    .and_then(|l| l.allowed)
                    .unwrap_or(config.allowed_lateness)
            })
            .collect();
        Engine {
            max_lateness: lateness.iter().copied().max().unwrap_or(Duration::ZERO),
            min_lateness: lateness.iter().copied().min().unwrap_or(Duration::ZERO),
            lateness,
            rules,
            config,
        }
    }

    /// The rule set.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The keys whose entities must see `event`: its own key first, then the
    /// distinct keys that `partition_by` rules give it. `partition_by` sees
    /// the event only (`entity.*` is empty there): routing happens before
    /// any entity is consulted.
    pub fn routes(&self, event: &Event) -> Vec<String> {
        let mut keys = vec![event.key.clone()];
        keys.extend(self.partition_routes(event));
        keys
    }

    /// The keys other than its own that `partition_by` rules give `event`,
    /// distinct; empty (and free) when no rule partitions.
    pub fn partition_routes(&self, event: &Event) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        if self.rules.partitioned.is_empty() {
            return keys;
        }
        let candidates = self.rules.candidates(&event.event_type);
        for &i in &self.rules.partitioned {
            if candidates.binary_search(&i).is_err() {
                continue;
            }
            if let Some(k) = partition_key(&self.rules.entries[i as usize].rule, event) {
                if k != event.key && !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        keys
    }

    /// Evaluates one event of the entity `state` belongs to (or of another
    /// entity, for rules whose `partition_by` names this one).
    ///
    /// With allowed lateness above 0 (service-wide or for some rule) the
    /// event waits in the entity's reorder buffer until each rule's
    /// watermark passes it, and the alerts of this call are those of the
    /// events and timers its clock move released.
    pub fn on_event(&self, state: &mut KeyState, event: &Arc<Event>) -> EventOutcome {
        self.align(state);
        let mut outcome = EventOutcome::default();
        let previous = state.clock;
        let late_for = |allowed: Duration| previous.is_some_and(|c| event.time < c.minus(allowed));
        let entity_late = late_for(self.config.allowed_lateness);
        if entity_late && !self.rules.any_own_lateness {
            // Every rule keeps the service's lateness: late for all of them.
            self.late_everywhere(state, event, &mut outcome);
            return outcome;
        }
        let clock = previous.map_or(event.time, |c| c.max(event.time));
        let before = state.dropped;
        // NB: with no lateness anywhere nothing waits: events are evaluated
        // as they come, the timers due before them first (the common case,
        // which must cost nothing more).
        let buffering = self.max_lateness > Duration::ZERO;
        // NB: `next_due` changes only when a timer or an evaluation touched
        // some rule's state; an event no rule looks at leaves it as it is.
        let mut touched = false;
        if !buffering {
            touched = self.fire_timers(state, clock, &mut outcome.alerts);
        }

        let (candidates, known_name) = self.rules.dispatch(&event.event_type);
        // NB: a type no rule names reaches only rules that accept any type;
        // one copy of it serves all their references (none when no rule
        // looks at it at all).
        let unknown_name: Option<Arc<str>> = (known_name.is_none() && !candidates.is_empty())
            .then(|| Arc::from(event.event_type.as_str()));
        let type_name = known_name.or(unknown_name.as_ref());
        let mut considered = false;
        let mut waiting_for: Vec<Arc<str>> = Vec::new();
        // NB: decided once per event, and only for an event some rule may
        // take (the entity's key is one more cold cache line).
        let mut own_key: Option<bool> = None;
        for &i in candidates {
            let rule = &self.rules.entries[i as usize].rule;
            let own = *own_key.get_or_insert_with(|| event.key == state.key);
            if !sees_as(rule, event, &state.key, &state.attributes, own) {
                continue;
            }
            considered = true;
            let allowed = self.lateness[i as usize];
            let late = late_for(allowed);
            if late {
                let policy = rule.lateness.map(|l| l.late).unwrap_or_default();
                if policy == LatePolicy::DeadLetter {
                    outcome
                        .late_for
                        .push((Arc::clone(&rule.id), LateTreatment::DeadLetter));
                    outcome.late = true;
                    continue;
                }
            }
            let ordinal = *outcome.ordinal.get_or_insert_with(|| {
                state.events_seen += 1;
                state.events_seen
            });
            if buffering && !late {
                // Evaluated once this rule's watermark passes the event.
                waiting_for.push(Arc::clone(&rule.id));
                continue;
            }
            // NB: a late event (under `late: evaluate`) is evaluated at once,
            // against the rule's current watermark.
            touched = true;
            let watermark = clock.minus(allowed);
            let admission = self.evaluate(
                state,
                i,
                event,
                ordinal,
                watermark,
                type_name,
                &mut outcome.alerts,
            );
            if late {
                let treatment = if admission == Admission::WindowClosed {
                    outcome.late = true;
                    outcome.late_reason = LateReason::WindowClosed;
                    LateTreatment::WindowClosed
                } else {
                    LateTreatment::Evaluate
                };
                outcome.late_for.push((Arc::clone(&rule.id), treatment));
            }
        }
        if entity_late && !considered {
            outcome.late = true;
        }
        if !entity_late && outcome.ordinal.is_none() {
            // An on-time event counts in its entity's stream even when no
            // rule looked at it, so ordinals do not depend on the rules.
            state.events_seen += 1;
            outcome.ordinal = Some(state.events_seen);
        }
        if buffering {
            if let (false, Some(ordinal)) = (waiting_for.is_empty(), outcome.ordinal) {
                state.buffer.insert(Waiting {
                    event: Arc::clone(event),
                    ordinal,
                    rules: waiting_for,
                });
            }
            self.release(state, clock, &mut outcome.alerts);
            self.bound_buffer(state, &mut outcome.alerts);
            touched = true;
        }
        outcome.dropped = state.dropped.since(before);
        if touched {
            self.update_next_due(state);
        }
        outcome
    }

    /// Evaluates `event` for rule `i` (which sees it), at the rule's
    /// `watermark`; drops the rule's state when nothing is left in it.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn evaluate(
        &self,
        state: &mut KeyState,
        i: u32,
        event: &Arc<Event>,
        ordinal: u64,
        watermark: Timestamp,
        type_name: Option<&Arc<str>>,
        alerts: &mut Vec<Alert>,
    ) -> Admission {
        let entry = &self.rules.entries[i as usize];
        let rule = &entry.rule;
        let KeyState {
            key,
            attributes,
            rules: states,
            dropped,
            ..
        } = state;
        let mut env = RuleEnv::new(rule, key, attributes, &self.config);
        env.event_type = type_name;
        let mut run = |pattern: &mut PatternState| match entry.bind(pattern) {
            Bound::Sequence(p, plan, s) => {
                s.on_event(&env, p, plan, event, ordinal, alerts, dropped);
                Admission::Entered
            }
            Bound::Absence(p, s) => {
                s.on_event(&env, p, event, ordinal, alerts, dropped);
                Admission::Entered
            }
            Bound::Threshold(p, s) => {
                s.on_event(&env, p, event, ordinal, watermark, alerts, dropped)
            }
        };
        match states.binary_search_by_key(&i, |s| s.index) {
            Ok(slot) => {
                let admission = run(&mut states[slot].pattern);
                if states[slot].pattern.is_empty() {
                    states.remove(slot);
                } else {
                    states[slot].due = Due::Unknown;
                    let due = self.deadline(&mut states[slot]);
                    states[slot].due = Due::Known(due);
                }
                admission
            }
            Err(slot) => {
                // NB: an event that leaves no state behind (most events a
                // rule looks at and ignores) costs no allocation: the state
                // is kept only when something is left in it.
                let mut pattern = entry.new_state();
                let admission = run(&mut pattern);
                if !pattern.is_empty() {
                    let mut fresh = RuleState {
                        rule: entry.rule.id.clone(),
                        version: entry.rule.version,
                        index: i,
                        pattern,
                        due: Due::Unknown,
                    };
                    fresh.due = Due::Known(self.deadline(&mut fresh));
                    states.insert(slot, fresh);
                }
                admission
            }
        }
    }

    /// Moves the clock to `clock`, evaluating every waiting event whose
    /// rules' watermarks it passes, in clock order: a rule with lateness L
    /// evaluates an event at `t` when the clock reaches `t + L`, after every
    /// timer due by then. Events of one instant go in time order, ties in
    /// acceptance order, then rule order; then the timers due by `clock` fire.
    fn release(&self, state: &mut KeyState, clock: Timestamp, alerts: &mut Vec<Alert>) {
        while let Some((instant, at, rule)) = self.next_release(state, clock) {
            let _ = self.fire_timers(state, instant, alerts);
            let waiting = &mut state.buffer.events[at];
            let event = Arc::clone(&waiting.event);
            let ordinal = waiting.ordinal;
            let id = waiting.rules.remove(rule);
            if waiting.rules.is_empty() {
                state.buffer.events.remove(at);
            }
            if let Some(&i) = self.rules.by_id.get(&id) {
                let watermark = instant.minus(self.lateness[i as usize]);
                let (_, known) = self.rules.dispatch(&event.event_type);
                let name = known.cloned();
                self.evaluate(state, i, &event, ordinal, watermark, name.as_ref(), alerts);
            }
            self.update_next_due(state);
        }
        let _ = self.fire_timers(state, clock, alerts);
    }

    /// The next (instant, buffer position, position in its `rules`) to
    /// release by `clock`: the earliest instant, then time, acceptance and
    /// rule order.
    fn next_release(
        &self,
        state: &KeyState,
        clock: Timestamp,
    ) -> Option<(Timestamp, usize, usize)> {
        // (instant, time, ordinal, rule index), buffer position, rule position.
        type Candidate = ((Timestamp, Timestamp, u64, u32), usize, usize);
        let mut best: Option<Candidate> = None;
        for (at, waiting) in state.buffer.events.iter().enumerate() {
            // NB: sorted by time, so no later event can be released earlier
            // than this one by the least lateness.
            if best.is_some_and(|(b, _, _)| waiting.event.time.plus(self.min_lateness) > b.0) {
                break;
            }
            for (r, id) in waiting.rules.iter().enumerate() {
                let i = self.rules.by_id.get(id).copied().unwrap_or(u32::MAX);
                let lateness = self.lateness.get(i as usize).copied().unwrap_or_default();
                let instant = waiting.event.time.plus(lateness);
                let order = (instant, waiting.event.time, waiting.ordinal, i);
                if instant <= clock && best.is_none_or(|(b, _, _)| order < b) {
                    best = Some((order, at, r));
                }
            }
        }
        best.map(|((instant, ..), at, r)| (instant, at, r))
    }

    /// Keeps the buffer within `max_buffered_events`: the oldest events are
    /// evaluated at once by the rules still waiting for them, out of time
    /// order, and counted.
    fn bound_buffer(&self, state: &mut KeyState, alerts: &mut Vec<Alert>) {
        let cap = self.config.max_buffered_events.max(1);
        while state.buffer.events.len() > cap {
            let waiting = state.buffer.events.remove(0);
            state.dropped.released_early += 1;
            let clock = state.clock.unwrap_or(waiting.event.time);
            let (_, known) = self.rules.dispatch(&waiting.event.event_type);
            let name = known.cloned();
            for id in &waiting.rules {
                if let Some(&i) = self.rules.by_id.get(id) {
                    let watermark = clock.minus(self.lateness[i as usize]);
                    self.evaluate(
                        state,
                        i,
                        &waiting.event,
                        waiting.ordinal,
                        watermark,
                        name.as_ref(),
                        alerts,
                    );
                }
            }
        }
    }

    /// A late event when every rule keeps the service's lateness: reported
    /// for every rule that would have seen it, evaluated by none.
    fn late_everywhere(&self, state: &KeyState, event: &Arc<Event>, outcome: &mut EventOutcome) {
        outcome.late = true;
        for &i in self.rules.candidates(&event.event_type) {
            let rule = &self.rules.entries[i as usize].rule;
            if sees(rule, event, &state.key, &state.attributes) {
                outcome
                    .late_for
                    .push((Arc::clone(&rule.id), LateTreatment::DeadLetter));
            }
        }
    }

    /// Moves the entity's clock to at least `clock`, firing every timer whose
    /// deadline the watermark reaches, in time order.
    pub fn advance_to(&self, state: &mut KeyState, clock: Timestamp) -> Vec<Alert> {
        self.align(state);
        let mut alerts = Vec::new();
        // NB: a timer may be due at the clock already (a late event that was
        // evaluated, a rule set change): it fires now, not when the clock
        // next moves.
        if state
            .clock
            .is_some_and(|c| c >= clock && state.next_due.is_none_or(|due| due > c))
        {
            return alerts;
        }
        if self.max_lateness > Duration::ZERO {
            let clock = state.clock.map_or(clock, |c| c.max(clock));
            self.release(state, clock, &mut alerts);
            self.bound_buffer(state, &mut alerts);
        } else {
            let _ = self.fire_timers(state, clock, &mut alerts);
        }
        self.update_next_due(state);
        alerts
    }

    /// Sets the clock to `clock` (not earlier than it is) and fires what the
    /// new watermark makes due, one watermark instant at a time (the earliest
    /// deadline of any rule, in turn), each instant's alerts ordered by time
    /// (ties keep rule order). So one big advance fires exactly what many
    /// small ones would, in the same order, whatever the distance between an
    /// alert's time and the instant it fires at (a session's alert time is
    /// 1 ms before it closes).
    ///
    /// Returns whether any rule state was visited (else `next_due` still
    /// holds).
    fn fire_timers(&self, state: &mut KeyState, clock: Timestamp, alerts: &mut Vec<Alert>) -> bool {
        let clock = state.clock.map_or(clock, |c| c.max(clock));
        state.clock = Some(clock);
        // NB: `next_due` is kept current after every call (and alignment),
        // so when it is not reached nothing can fire: the common case.
        if state.rules.is_empty() || state.next_due.is_none_or(|due| due > clock) {
            return false;
        }
        let KeyState {
            key,
            attributes,
            rules: states,
            dropped,
            ..
        } = state;
        let mut done: Option<Timestamp> = None;
        loop {
            // Instants are clock times; each rule sees its own watermark
            // (the instant minus its allowed lateness). Every advance
            // processes all it has due up to its watermark, so instants
            // strictly increase; the final pass at `clock` only guards
            // against a deadline that would not move.
            let instant = match states.iter_mut().filter_map(|s| self.due(s)).min() {
                Some(d) if d <= clock && done.is_none_or(|p| d > p) => d,
                Some(d) if d <= clock => clock,
                _ => break,
            };
            let first = alerts.len();
            for rule_state in states.iter_mut() {
                let entry = &self.rules.entries[rule_state.index as usize];
                let rule = &entry.rule;
                let wm = instant.minus(self.lateness[rule_state.index as usize]);
                // NB: a state acts exactly at its deadline (the property
                // tests hold `next_deadline` to that), so one not due by
                // this watermark is not visited.
                if self.deadline(rule_state).is_none_or(|d| d > wm) {
                    continue;
                }
                let env = RuleEnv::new(rule, key, attributes, &self.config);
                match entry.bind(&mut rule_state.pattern) {
                    Bound::Sequence(p, _, s) => s.advance(&env, p, wm, alerts, dropped),
                    Bound::Absence(p, s) => s.advance(&env, p, wm, alerts),
                    Bound::Threshold(p, s) => s.advance(&env, p, wm, alerts),
                }
                rule_state.due = Due::Unknown;
            }
            alerts[first..].sort_by_key(|a| a.time);
            if instant == clock {
                break;
            }
            done = Some(instant);
        }
        states.retain(|s| !s.pattern.is_empty());
        true
    }

    /// The clock time at which one rule's timers next act: its deadline (a
    /// watermark) plus the rule's allowed lateness.
    #[inline]
    fn due(&self, s: &mut RuleState) -> Option<Timestamp> {
        let lateness = self.lateness[s.index as usize];
        self.deadline(s).map(|d| d.plus(lateness))
    }

    /// The watermark at which one rule's timers next act (kept in the
    /// rule state until the engine changes it).
    fn deadline(&self, s: &mut RuleState) -> Option<Timestamp> {
        if let Due::Known(due) = s.due {
            return due;
        }
        let due = match self.rules.entries[s.index as usize].bind(&mut s.pattern) {
            Bound::Sequence(p, _, s) => s.next_deadline(p, &self.config),
            Bound::Absence(_, s) => s.next_deadline(),
            Bound::Threshold(p, s) => s.next_deadline(p),
        };
        s.due = Due::Known(due);
        due
    }

    /// Keeps `next_due` current: the next timer, or the next release of a
    /// waiting event, whichever comes first.
    fn update_next_due(&self, state: &mut KeyState) {
        let timers = state.rules.iter_mut().filter_map(|s| self.due(s)).min();
        let release = if state.buffer.is_empty() {
            None
        } else {
            self.next_release(state, Timestamp(i64::MAX))
                .map(|(instant, ..)| instant)
        };
        state.next_due = match (timers, release) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Re-aligns `state` to this rule set: keeps the state of rules present
    /// with the same version (or a version the new one continues), drops the
    /// rest (a replaced rule starts empty unless replaced with `keep`).
    fn align(&self, state: &mut KeyState) {
        if state.format < STATE_FORMAT {
            state.migrate();
        }
        if state.ruleset == self.rules.fingerprint {
            return;
        }
        state
            .buffer
            .retain_rules(|id| self.rules.by_id.contains_key(id));
        state
            .rules
            .retain_mut(|s| match self.rules.by_id.get(&s.rule) {
                // The same version, or an older one whose state this version
                // continues (a replacement with the `keep` state policy).
                Some(&i)
                    if (self.rules.entries[i as usize].rule.state_since
                        ..=self.rules.entries[i as usize].rule.version)
                        .contains(&s.version) =>
                {
                    s.index = i;
                    s.version = self.rules.entries[i as usize].rule.version;
                    // NB: a version that continues an older one's state may
                    // have another `within`: its deadline is computed anew.
                    s.due = Due::Unknown;
                    true
                }
                _ => false,
            });
        state.rules.sort_by_key(|s| s.index);
        state.ruleset = self.rules.fingerprint;
        self.update_next_due(state);
    }

    /// A JSON view of the entity's live state per rule (partial matches,
    /// window aggregates, pending deadlines), for the entities API.
    pub fn describe(&self, state: &KeyState) -> EntityView {
        let aligned = state.ruleset == self.rules.fingerprint;
        let rules = state
            .rules
            .iter()
            .filter(|s| {
                // A state from another rule set is shown only if its rule is
                // still here in the same version (it would survive alignment).
                aligned
                    || self
                        .rules
                        .get(&s.rule)
                        .is_some_and(|r| (r.state_since..=r.version).contains(&s.version))
            })
            .map(|s| RuleView {
                rule: s.rule.to_string(),
                version: s.version,
                state: match &s.pattern {
                    PatternState::Sequence(x) => x.view(),
                    PatternState::Absence(x) => x.view(),
                    PatternState::Threshold(x) => x.view(),
                },
            })
            .collect();
        EntityView {
            key: state.key.clone(),
            attributes: state.attributes.clone(),
            clock: state.clock,
            watermark: state.clock.map(|c| c.minus(self.config.allowed_lateness)),
            events_seen: state.events_seen,
            next_deadline: state.next_due,
            rules,
            dropped: state.dropped,
            waiting: state.buffer.view(),
        }
    }
}

/// What the entities API shows of one entity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityView {
    /// The key.
    pub key: String,
    /// Static attributes (`entity.*`).
    pub attributes: Map<String, Value>,
    /// The entity's clock.
    pub clock: Option<Timestamp>,
    /// Clock minus allowed lateness: older events are late.
    pub watermark: Option<Timestamp>,
    /// Events evaluated so far.
    pub events_seen: u64,
    /// When the entity's next timer is due (clock time).
    pub next_deadline: Option<Timestamp>,
    /// Live state per rule.
    pub rules: Vec<RuleView>,
    /// Work dropped because of per-key limits.
    pub dropped: DropCounters,
    /// Events in the reorder buffer, waiting for their watermark, each with
    /// the rules still to evaluate it.
    pub waiting: Value,
}

/// One rule's live state for one entity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleView {
    /// Rule id.
    pub rule: String,
    /// Rule version.
    pub version: u64,
    /// Kind-specific details: partial matches, windows, deadlines.
    pub state: Value,
}

/// Whether `rule` sees `event` under `key`: it runs under that key for the
/// event and its `when` accepts it (events it rejects are invisible to it).
fn sees(rule: &Rule, event: &Event, key: &str, attributes: &Map<String, Value>) -> bool {
    sees_as(rule, event, key, attributes, event.key == key)
}

/// [`sees`], with whether `key` is the event's own already known (one
/// string comparison per event, not per rule).
#[inline]
fn sees_as(
    rule: &Rule,
    event: &Event,
    key: &str,
    attributes: &Map<String, Value>,
    own_key: bool,
) -> bool {
    let runs_here = match &rule.partition_by {
        None => own_key,
        Some(_) => partition_key(rule, event).is_some_and(|k| k == key),
    };
    if !runs_here {
        return false;
    }
    rule.when.as_ref().is_none_or(|when| {
        when.matches(&EvalContext {
            key,
            event: Some(event),
            entity: attributes,
            bindings: &[],
            variables: &[],
        })
    })
}

fn partition_key(rule: &Rule, event: &Event) -> Option<String> {
    let expr: &Expr = rule.partition_by.as_ref()?;
    let empty = Map::new();
    let ctx = EvalContext {
        key: &event.key,
        event: Some(event),
        entity: &empty,
        bindings: &[],
        variables: &[],
    };
    expr.text(&ctx).filter(|k| !k.is_empty())
}

/// A rule's compiled pattern with its state for one key. `RuleEntry::bind`
/// is the one place the two are paired; every use matches this enum, so a
/// new pattern kind is a compile error until each handles it.
enum Bound<'a> {
    Sequence(&'a SequencePattern, &'a SequencePlan, &'a mut SequenceState),
    Absence(&'a AbsencePattern, &'a mut AbsenceState),
    Threshold(&'a ThresholdPattern, &'a mut ThresholdState),
}

impl RuleEntry {
    /// An empty state of this rule's kind.
    fn new_state(&self) -> PatternState {
        match &self.rule.pattern {
            Pattern::Sequence(_) => PatternState::Sequence(SequenceState::default()),
            Pattern::Absence(_) => PatternState::Absence(AbsenceState::default()),
            Pattern::Threshold(p) => PatternState::Threshold(ThresholdState::for_window(&p.window)),
        }
    }

    /// This rule's pattern with `state`. NB: states are created by
    /// `new_state` and dropped when their rule changes (`Engine::align`),
    /// so the kinds always agree; were they ever not to, the state would
    /// start afresh rather than be misread.
    #[inline]
    fn bind<'a>(&'a self, state: &'a mut PatternState) -> Bound<'a> {
        if !state.is_kind_of(&self.rule.pattern) {
            *state = self.new_state();
        }
        match (&self.rule.pattern, state) {
            (Pattern::Sequence(p), PatternState::Sequence(s)) => Bound::Sequence(
                p,
                self.sequence_plan
                    .as_ref()
                    .expect("sequence rules have a plan"),
                s,
            ),
            (Pattern::Absence(p), PatternState::Absence(s)) => Bound::Absence(p, s),
            (Pattern::Threshold(p), PatternState::Threshold(s)) => Bound::Threshold(p, s),
            (Pattern::Sequence(_) | Pattern::Absence(_) | Pattern::Threshold(_), _) => {
                unreachable!("the state was just made of the rule's kind")
            }
        }
    }
}
