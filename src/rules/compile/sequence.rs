//! Checks and compiles `sequence:`.

use std::collections::HashMap;
use std::sync::Arc;

use super::{step_name_problem, Checker};
use crate::rules::expr::{Expr, Scope};
use crate::rules::model::{Contiguity, SequencePattern, Skip, SkipStrategy, Step};
use crate::rules::schema::{SequenceDoc, StepDoc, TimesDoc};

const PATH: &str = "sequence";
const STEPS: &str = "sequence.steps";

fn step_path(index: usize) -> String {
    format!("{STEPS}[{index}]")
}

/// Warnings about a sequence that is valid but may not do what its author
/// expects: without `within` or `max_match_age`, partial matches live for
/// the service's `engine.max_match_age`.
pub(super) fn sequence_warnings(doc: &SequenceDoc) -> Vec<(String, String)> {
    let mut warnings = Vec::new();
    if doc.within.is_none() && doc.max_match_age.is_none() {
        warnings.push((
            PATH.to_owned(),
            "the sequence has no `within`: a partial match is dropped (and counted) once it is older than \
             the service's `engine.max_match_age` (24 h of event time by default); set `within`, or \
             `max_match_age` for this rule"
                .to_owned(),
        ));
    }
    warnings
}

impl Checker<'_> {
    /// The compiled sequence (`None` when it has problems) and the names of
    /// its steps (slot = index), which the message may use either way.
    pub(super) fn sequence(
        &mut self,
        doc: &SequenceDoc,
    ) -> (Option<SequencePattern>, Vec<Arc<str>>) {
        let steps = &doc.steps;
        let within = doc
            .within
            .as_deref()
            .and_then(|w| self.duration(&format!("{PATH}.within"), w));
        let max_match_age = doc.max_match_age.as_deref().and_then(|age| {
            let path = format!("{PATH}.max_match_age");
            let age = self.duration(&path, age)?;
            if doc.within.is_some() {
                self.report(
                    &path,
                    "`max_match_age` is for sequences without `within`: with `within`, a partial match \
                     already ends when its window does; keep one of the two",
                );
                return None;
            }
            Some(age)
        });
        if steps.is_empty() {
            self.report(
                STEPS,
                "`steps` needs at least one step, each with a `match` predicate",
            );
            return (None, Vec::new());
        }
        if steps.len() > self.limits.max_steps {
            let message = format!(
                "the sequence has {} steps; the limit (`max_steps`) is {}",
                steps.len(),
                self.limits.max_steps
            );
            self.report(STEPS, message);
            return (None, Vec::new());
        }
        let (names, in_scope) = self.step_names(steps);
        let quantifiers: Vec<(u32, Option<u32>)> = steps
            .iter()
            .enumerate()
            .map(|(i, step)| self.quantifier(i, step))
            .collect();
        self.negations(doc);
        self.required_steps(doc);
        if doc.any_order {
            self.any_order(doc);
        }

        let mut compiled = Vec::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            let path = format!("{}.match", step_path(i));
            // Slot = step index: step i sees the steps before it, unless the
            // order is free (then no step is "before" another).
            let visible = if doc.any_order { 0 } else { i };
            let scope = Scope {
                bindings: in_scope[..visible].to_vec(),
                variables: Vec::new(),
            };
            let Some(predicate) = self.expression(&path, &step.match_, &scope) else {
                continue;
            };
            for &slot in predicate.binding_slots() {
                if steps.get(slot).is_some_and(|s| s.negated) {
                    self.report(
                        &path,
                        format!("step `{}` is negated and binds no events: no predicate can refer to it", names[slot]),
                    );
                }
            }
            let (min, max) = if step.negated {
                (0, Some(0))
            } else {
                quantifiers[i]
            };
            let until = self.loop_end(i, step, (min, max), &scope);
            compiled.push(Step {
                name: names[i].clone(),
                predicate,
                min,
                max,
                negated: step.negated,
                greedy: step.greedy,
                until,
            });
        }
        let skip = self.skip(doc, &names);
        let Some(skip) = skip.filter(|_| compiled.len() == steps.len()) else {
            return (None, in_scope);
        };
        let pattern = SequencePattern {
            steps: compiled,
            within,
            contiguity: doc.contiguity,
            any_order: doc.any_order,
            skip,
            max_match_age,
        };
        (Some(pattern), in_scope)
    }

    /// Every step's name (`step1`, `step2`… when not given), checked and
    /// unique; and the names to put in expression scopes, where a name
    /// already reported as wrong is replaced by a stand-in, so the
    /// expressions that follow are not refused again for it.
    fn step_names(&mut self, steps: &[StepDoc]) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        let mut names: Vec<Arc<str>> = Vec::with_capacity(steps.len());
        let mut in_scope: Vec<Arc<str>> = Vec::with_capacity(steps.len());
        let mut first_use: HashMap<Arc<str>, usize> = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            let stand_in = || Arc::from(format!("__unusable_step{}", i + 1));
            let mut usable = true;
            let name: Arc<str> = match &step.name {
                Some(n) => {
                    if let Some(problem) = step_name_problem(n) {
                        self.report(&format!("{}.name", step_path(i)), problem);
                        usable = false;
                    }
                    Arc::from(n.as_str())
                }
                None => Arc::from(format!("step{}", i + 1)),
            };
            if first_use.contains_key(&name) {
                usable = false;
            }
            match first_use.get(&name) {
                Some(&j) if step.name.is_some() => self.report(
                    &format!("{}.name", step_path(i)),
                    format!("step {} is also named `{name}`: step names must be unique", j + 1),
                ),
                Some(&j) => self.report(
                    &step_path(i),
                    format!(
                        "step {} has no `name`, so it is called `{name}`, but step {} is named that too: \
                         give one of them another name",
                        i + 1,
                        j + 1
                    ),
                ),
                None => {
                    first_use.insert(name.clone(), i);
                }
            }
            in_scope.push(if usable { name.clone() } else { stand_in() });
            names.push(name);
        }
        (names, in_scope)
    }

    /// The step's (min, max) from `times` and `optional`.
    fn quantifier(&mut self, i: usize, step: &StepDoc) -> (u32, Option<u32>) {
        let path = format!("{}.times", step_path(i));
        let limit = self.limits.max_quantifier;
        let (min, max) = match &step.times {
            None => (1, Some(1)),
            Some(TimesDoc::Exactly(n)) => {
                if *n == 0 {
                    self.report(&path, "`times` must be at least 1 (for a step that may not occur, use `optional: true`)");
                } else if *n > limit {
                    self.report(
                        &path,
                        format!("`times` is {n}; the limit (`max_quantifier`) is {limit}"),
                    );
                }
                (*n, Some(*n))
            }
            Some(TimesDoc::Range { min, max }) => {
                if min.is_none() && max.is_none() {
                    self.report(
                        &path,
                        "`times` needs `min`, `max` or both, e.g. {min: 3} or {min: 2, max: 5}",
                    );
                }
                let low = min.unwrap_or(1);
                if low > limit {
                    self.report(
                        &format!("{path}.min"),
                        format!("`min` is {low}; the limit (`max_quantifier`) is {limit}"),
                    );
                }
                if let Some(high) = *max {
                    if high == 0 {
                        self.report(&format!("{path}.max"), "`max` must be at least 1");
                    } else if high > limit {
                        self.report(
                            &format!("{path}.max"),
                            format!("`max` is {high}; the limit (`max_quantifier`) is {limit}"),
                        );
                    } else if low > high {
                        let shown = if min.is_some() {
                            format!("`min` ({low})")
                        } else {
                            format!("the default `min` ({low})")
                        };
                        self.report(&path, format!("{shown} is larger than `max` ({high})"));
                    }
                }
                (low, *max)
            }
        };
        (if step.optional { 0 } else { min }, max)
    }

    /// The skip strategy, with its step resolved to an index: a positive
    /// step of the sequence.
    fn skip(&mut self, doc: &SequenceDoc, names: &[Arc<str>]) -> Option<Skip> {
        let (step, to_first) = match &doc.skip {
            SkipStrategy::PastLastEvent => return Some(Skip::PastLastEvent),
            SkipStrategy::All => return Some(Skip::All),
            SkipStrategy::ToNext => return Some(Skip::ToNext),
            SkipStrategy::ToFirst(step) => (step, true),
            SkipStrategy::ToLast(step) => (step, false),
        };
        let path = format!(
            "{PATH}.skip.{}",
            if to_first { "to_first" } else { "to_last" }
        );
        let Some(index) = names.iter().position(|n| **n == **step) else {
            let known: Vec<&str> = names.iter().map(|n| &**n).collect();
            let hint = crate::rules::suggest::did_you_mean(step, &known);
            self.report(
                &path,
                format!(
                    "`{}` is not a step of this sequence; name one of {}{hint}",
                    crate::rules::located::shorten(step),
                    known
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return None;
        };
        if doc.steps[index].negated {
            self.report(
                &path,
                format!("step `{step}` is negated and takes no events: skip to a step that does"),
            );
            return None;
        }
        Some(if to_first {
            Skip::ToFirst(index)
        } else {
            Skip::ToLast(index)
        })
    }

    /// `greedy: false` and `until` belong on a step that may take more than
    /// one event (a loop); `until` is compiled in the step's scope.
    fn loop_end(
        &mut self,
        i: usize,
        step: &StepDoc,
        (min, max): (u32, Option<u32>),
        scope: &Scope,
    ) -> Option<Expr> {
        let loops = !step.negated && max.is_none_or(|m| m > 1);
        let varies = loops && max != Some(min);
        if !step.greedy && !varies {
            self.report(
                &format!("{}.greedy", step_path(i)),
                "`greedy: false` is for a step that may take a varying number of events (`times: {min: 1}` \
                 or a range): a step with a fixed count has nothing to give up",
            );
        }
        let source = step.until.as_deref()?;
        let path = format!("{}.until", step_path(i));
        if !loops {
            self.report(
                &path,
                "`until` ends a loop: it is for a step that may take more than one event (`times: {min: 1}` \
                 or a range)",
            );
            return None;
        }
        self.expression(&path, source, scope)
    }

    /// Where negated steps may stand, and what they may carry.
    fn negations(&mut self, doc: &SequenceDoc) {
        let steps = &doc.steps;
        let last = steps.len() - 1;
        for (i, step) in steps.iter().enumerate().filter(|(_, s)| s.negated) {
            let not = format!("{}.not", step_path(i));
            if i == 0 {
                self.report(
                    &not,
                    "the first step cannot be negated: a negated step forbids events between the steps around it \
                     (for an event that never comes, use an `absence` rule)",
                );
            } else if steps[i - 1].negated {
                self.report(
                    &not,
                    format!(
                        "steps {} and {} are both negated: two negated steps cannot follow each other; \
                         join them into one with `||`",
                        i,
                        i + 1
                    ),
                );
            }
            if i == last && i > 0 && doc.within.is_none() {
                self.report(
                    &not,
                    "a negated last step needs `sequence.within`: \"no such event afterwards\" can only be \
                     decided when the window ends",
                );
            }
            if step.times.is_some() {
                self.report(
                    &format!("{}.times", step_path(i)),
                    "a negated step (`not: true`) takes no `times`: it forbids every matching event",
                );
            }
            if step.optional {
                self.report(
                    &format!("{}.optional", step_path(i)),
                    "a negated step (`not: true`) cannot be `optional`",
                );
            }
        }
    }

    /// At least one positive step, at least one required, and a last
    /// positive step that says when a match is complete.
    fn required_steps(&mut self, doc: &SequenceDoc) {
        let steps = &doc.steps;
        let positive: Vec<usize> = (0..steps.len()).filter(|&i| !steps[i].negated).collect();
        let Some(&last_positive) = positive.last() else {
            self.report(
                STEPS,
                "every step is negated: a sequence needs at least one step that is not",
            );
            return;
        };
        let optional = |i: usize| may_be_skipped(&steps[i]);
        let what_makes_optional = |i: usize| {
            if steps[i].optional {
                format!("{}.optional", step_path(i))
            } else {
                format!("{}.times", step_path(i))
            }
        };
        if doc.any_order {
            // Every step of a conjunction is required (see `any_order`).
            return;
        }
        if last_positive == steps.len() - 1 && optional(last_positive) {
            self.report(
                &what_makes_optional(last_positive),
                "the last step cannot be optional (min 0): a match would never know whether to wait for it; \
                 make it required, or end the sequence with a negated step and `within`",
            );
        } else if positive.iter().all(|&i| optional(i)) {
            self.report(
                STEPS,
                "every step is optional, so the sequence could match no event at all: make at least one step required",
            );
        }
    }

    /// `any_order: true` is a conjunction: relaxed, no negation, all required.
    fn any_order(&mut self, doc: &SequenceDoc) {
        if doc.contiguity != Contiguity::Relaxed {
            self.report(
                &format!("{PATH}.contiguity"),
                "`any_order: true` works only with `contiguity: relaxed` (the default): events in any order \
                 cannot also be next to each other in a fixed order",
            );
        }
        for (i, step) in doc.steps.iter().enumerate() {
            if step.negated {
                self.report(
                    &format!("{}.not", step_path(i)),
                    "an `any_order` sequence cannot have negated steps: \"between its neighbours\" has no meaning \
                     when the order is free",
                );
            }
            if step.until.is_some() || !step.greedy {
                let field = if step.until.is_some() {
                    "until"
                } else {
                    "greedy"
                };
                self.report(
                    &format!("{}.{field}", step_path(i)),
                    "an `any_order` step takes its events in any order, so it has no loop to end or give up \
                     early: leave out `until` and `greedy`",
                );
            }
            if may_be_skipped(step) && !step.negated {
                let field = if step.optional { "optional" } else { "times" };
                self.report(
                    &format!("{}.{field}", step_path(i)),
                    "every step of an `any_order` sequence is required (min 1): the conjunction is complete \
                     when all of them have matched",
                );
            }
        }
    }
}

/// Whether the step's minimum is 0 (`optional: true` or `times: {min: 0}`).
/// `times: 0` is not counted: it is reported as a mistake of its own.
fn may_be_skipped(step: &StepDoc) -> bool {
    step.optional || matches!(step.times, Some(TimesDoc::Range { min: Some(0), .. }))
}
