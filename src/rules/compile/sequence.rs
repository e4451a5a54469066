//! Checks and compiles `sequence:`.

use std::collections::HashMap;
use std::sync::Arc;

use super::{step_name_problem, Checker};
use crate::rules::expr::{Expr, Scope};
use crate::rules::model::{Contiguity, Group, SequencePattern, Skip, SkipStrategy, Step};
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
        let (flat, groups) = self.flatten(doc);
        if flat.len() > self.limits.max_steps {
            let counting = if groups.is_empty() {
                ""
            } else {
                " (counting the steps of its groups)"
            };
            let message = format!(
                "the sequence has {} steps{counting}; the limit (`max_steps`) is {}",
                flat.len(),
                self.limits.max_steps
            );
            self.report(STEPS, message);
            return (None, Vec::new());
        }
        if flat.is_empty() {
            return (None, Vec::new());
        }
        let (names, in_scope) = self.step_names(&flat, &groups);
        let quantifiers: Vec<(u32, Option<u32>)> = flat
            .iter()
            .map(|f| self.quantifier(&f.path, f.doc))
            .collect();
        let group_quantifiers: Vec<(u32, Option<u32>)> =
            groups.iter().map(|g| self.group_quantifier(g)).collect();
        self.negations(doc, &flat);
        self.required_steps(doc, &flat);
        if doc.any_order {
            self.any_order(doc, &flat);
        }

        let n = flat.len();
        let mut compiled = Vec::with_capacity(n);
        for (i, step) in flat.iter().enumerate() {
            let path = format!("{}.match", step.path);
            // Slot = step index (then groups): step i sees the steps before
            // it and the groups that end before it, unless the order is free
            // (then no step is "before" another).
            let scope = Scope {
                bindings: (0..n + groups.len())
                    .map(|slot| {
                        let visible = !doc.any_order
                            && if slot < n {
                                slot < i
                            } else {
                                groups[slot - n].last < i
                            };
                        if visible {
                            in_scope[slot].clone()
                        } else {
                            Arc::from(format!("__invisible_step{}", slot + 1))
                        }
                    })
                    .collect(),
                variables: Vec::new(),
            };
            let Some(predicate) = self.expression(&path, &step.doc.match_, &scope) else {
                continue;
            };
            for &slot in predicate.binding_slots() {
                if flat.get(slot).is_some_and(|s| s.doc.negated) {
                    self.report(
                        &path,
                        format!("step `{}` is negated and binds no events: no predicate can refer to it", names[slot]),
                    );
                }
            }
            let (min, max) = if step.doc.negated {
                (0, Some(0))
            } else {
                quantifiers[i]
            };
            let until = self.loop_end(step, (min, max), &scope);
            compiled.push(Step {
                name: names[i].clone(),
                predicate,
                min,
                max,
                negated: step.doc.negated,
                greedy: step.doc.greedy,
                until,
                group: step.group,
            });
        }
        let skip = self.skip(doc, &flat, &names, &groups);
        let Some(skip) = skip.filter(|_| compiled.len() == n) else {
            return (None, in_scope);
        };
        let groups = groups
            .iter()
            .zip(group_quantifiers)
            .enumerate()
            .map(|(g, (group, (min, max)))| Group {
                name: names[n + g].clone(),
                first: group.first,
                last: group.last,
                min,
                max,
                greedy: group.doc.greedy,
            })
            .collect();
        let pattern = SequencePattern {
            steps: compiled,
            within,
            contiguity: doc.contiguity,
            any_order: doc.any_order,
            skip,
            max_match_age,
            groups,
        };
        (Some(pattern), in_scope)
    }

    /// The steps in order with the steps of each group in its place, and
    /// the groups; reports what a group may not have.
    fn flatten<'d>(&mut self, doc: &'d SequenceDoc) -> (Vec<Flat<'d>>, Vec<GroupDoc<'d>>) {
        let mut flat: Vec<Flat<'d>> = Vec::new();
        let mut groups: Vec<GroupDoc<'d>> = Vec::new();
        for (i, step) in doc.steps.iter().enumerate() {
            let path = step_path(i);
            let Some(inner) = &step.group else {
                flat.push(Flat {
                    path,
                    doc: step,
                    group: None,
                    default_name: format!("step{}", i + 1),
                    label: format!("step {}", i + 1),
                });
                continue;
            };
            let field = |f: &str| format!("{path}.{f}");
            if !step.match_.trim().is_empty() {
                self.report(
                    &field("match"),
                    "a group takes no `match`: its steps have their own (or drop `group` to make this a plain step)",
                );
            }
            if step.negated {
                self.report(
                    &field("not"),
                    "a group cannot be negated: negate one step (`not: true` on a plain step)",
                );
            }
            if step.until.is_some() {
                self.report(
                    &field("until"),
                    "`until` is for a step that repeats one event; a group repeats as a whole (set `times` on it)",
                );
            }
            if doc.any_order {
                self.report(
                    &field("group"),
                    "an `any_order` sequence cannot have groups: a group is steps in a fixed order",
                );
            }
            if inner.is_empty() {
                self.report(
                    &field("group"),
                    "`group` needs at least one step, each with a `name` and a `match` predicate",
                );
                continue;
            }
            let first = flat.len();
            for (k, s) in inner.iter().enumerate() {
                let inner_path = format!("{path}.group[{k}]");
                let one_event =
                    "a step of a group takes exactly one event each time the group repeats: put \
                                 `times` on the group, or the step outside it";
                let refusals: [(bool, &str, &str); 6] = [
                    (s.group.is_some(), "group", "groups cannot be nested: list the steps of the inner group in the outer one"),
                    (s.times.is_some(), "times", one_event),
                    (s.optional, "optional", one_event),
                    (s.negated, "not", "a step of a group cannot be negated: put the negated step after the group"),
                    (s.until.is_some(), "until", one_event),
                    (!s.greedy, "greedy", one_event),
                ];
                for (wrong, f, message) in refusals {
                    if wrong {
                        self.report(&format!("{inner_path}.{f}"), message);
                    }
                }
                flat.push(Flat {
                    path: inner_path,
                    doc: s,
                    group: Some(groups.len()),
                    default_name: format!("step{}_{}", i + 1, k + 1),
                    label: format!("step {}.{}", i + 1, k + 1),
                });
            }
            groups.push(GroupDoc {
                path,
                doc: step,
                first,
                last: flat.len() - 1,
                default_name: format!("step{}", i + 1),
                label: format!("step {}", i + 1),
            });
        }
        (flat, groups)
    }

    /// A group's (min, max) repetitions: `times` as on a step; a group is
    /// never optional.
    fn group_quantifier(&mut self, group: &GroupDoc<'_>) -> (u32, Option<u32>) {
        let (min, max) = self.quantifier(&group.path, group.doc);
        if min == 0 {
            let field = if group.doc.optional {
                "optional"
            } else {
                "times"
            };
            self.report(
                &format!("{}.{field}", group.path),
                "a group repeats at least once: it cannot be optional (min 0)",
            );
        }
        if !group.doc.greedy && max == Some(min) {
            self.report(
                &format!("{}.greedy", group.path),
                "`greedy: false` is for a group that may repeat a varying number of times (`times: {min: 1}` or \
                 a range): a fixed count has nothing to give up",
            );
        }
        (min, max)
    }

    /// Every step's name, then every group's (`step1`, `step2`… when not
    /// given; `step2_1` for the first step of a group that is step 2),
    /// checked and unique; and the names to put in expression scopes, where
    /// a name already reported as wrong is replaced by a stand-in, so the
    /// expressions that follow are not refused again for it.
    fn step_names(
        &mut self,
        flat: &[Flat<'_>],
        groups: &[GroupDoc<'_>],
    ) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        let all: Vec<(&str, &StepDoc, &str, &str)> = flat
            .iter()
            .map(|f| {
                (
                    f.path.as_str(),
                    f.doc,
                    f.default_name.as_str(),
                    f.label.as_str(),
                )
            })
            .chain(groups.iter().map(|g| {
                let label = g.label.as_str();
                (g.path.as_str(), g.doc, g.default_name.as_str(), label)
            }))
            .collect();
        let mut names: Vec<Arc<str>> = Vec::with_capacity(all.len());
        let mut in_scope: Vec<Arc<str>> = Vec::with_capacity(all.len());
        let mut first_use: HashMap<Arc<str>, String> = HashMap::new();
        for (i, (path, step, default, label)) in all.into_iter().enumerate() {
            let stand_in = || Arc::from(format!("__unusable_step{}", i + 1));
            let mut usable = true;
            let name: Arc<str> = match &step.name {
                Some(n) => {
                    if let Some(problem) = step_name_problem(n) {
                        self.report(&format!("{path}.name"), problem);
                        usable = false;
                    }
                    Arc::from(n.as_str())
                }
                None => Arc::from(default),
            };
            if first_use.contains_key(&name) {
                usable = false;
            }
            match first_use.get(&name) {
                Some(other) if step.name.is_some() => self.report(
                    &format!("{path}.name"),
                    format!("{other} is also named `{name}`: step names must be unique"),
                ),
                Some(other) => self.report(
                    path,
                    format!(
                        "{label} has no `name`, so it is called `{name}`, but {other} is named that too: \
                         give one of them another name"
                    ),
                ),
                None => {
                    first_use.insert(name.clone(), label.to_owned());
                }
            }
            in_scope.push(if usable { name.clone() } else { stand_in() });
            names.push(name);
        }
        (names, in_scope)
    }

    /// The step's (min, max) from `times` and `optional`.
    fn quantifier(&mut self, step_path: &str, step: &StepDoc) -> (u32, Option<u32>) {
        let path = format!("{step_path}.times");
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
    fn skip(
        &mut self,
        doc: &SequenceDoc,
        flat: &[Flat<'_>],
        names: &[Arc<str>],
        groups: &[GroupDoc<'_>],
    ) -> Option<Skip> {
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
        let steps = &names[..flat.len()];
        if let Some(g) = names[flat.len()..].iter().position(|n| **n == **step) {
            let first = &names[groups[g].first];
            self.report(
                &path,
                format!(
                    "`{step}` is a group: name one of its steps (e.g. `{first}`, where its repetitions start)"
                ),
            );
            return None;
        }
        let Some(index) = steps.iter().position(|n| **n == **step) else {
            let known: Vec<&str> = steps.iter().map(|n| &**n).collect();
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
        if flat[index].doc.negated {
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
        flat: &Flat<'_>,
        (min, max): (u32, Option<u32>),
        scope: &Scope,
    ) -> Option<Expr> {
        if flat.group.is_some() {
            // A group's steps take one event each: `flatten` refused these.
            return None;
        }
        let (step, step_path) = (flat.doc, flat.path.as_str());
        let loops = !step.negated && max.is_none_or(|m| m > 1);
        let varies = loops && max != Some(min);
        if !step.greedy && !varies {
            self.report(
                &format!("{step_path}.greedy"),
                "`greedy: false` is for a step that may take a varying number of events (`times: {min: 1}` \
                 or a range): a step with a fixed count has nothing to give up",
            );
        }
        let source = step.until.as_deref()?;
        let path = format!("{step_path}.until");
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
    fn negations(&mut self, doc: &SequenceDoc, flat: &[Flat<'_>]) {
        let last = flat.len() - 1;
        for (i, f) in flat.iter().enumerate() {
            // A group's steps: `flatten` refused their negation.
            if !f.doc.negated || f.group.is_some() {
                continue;
            }
            let (step, path) = (f.doc, &f.path);
            let not = format!("{path}.not");
            if i == 0 {
                self.report(
                    &not,
                    "the first step cannot be negated: a negated step forbids events between the steps around it \
                     (for an event that never comes, use an `absence` rule)",
                );
            } else if flat[i - 1].doc.negated {
                self.report(
                    &not,
                    format!(
                        "steps {} and {} are both negated: two negated steps cannot follow each other; \
                         join them into one with `||`",
                        flat[i - 1].label.trim_start_matches("step "),
                        f.label.trim_start_matches("step ")
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
                    &format!("{path}.times"),
                    "a negated step (`not: true`) takes no `times`: it forbids every matching event",
                );
            }
            if step.optional {
                self.report(
                    &format!("{path}.optional"),
                    "a negated step (`not: true`) cannot be `optional`",
                );
            }
        }
    }

    /// At least one positive step, at least one required, and a last
    /// positive step that says when a match is complete.
    fn required_steps(&mut self, doc: &SequenceDoc, flat: &[Flat<'_>]) {
        let positive: Vec<usize> = (0..flat.len()).filter(|&i| !flat[i].doc.negated).collect();
        let Some(&last_positive) = positive.last() else {
            self.report(
                STEPS,
                "every step is negated: a sequence needs at least one step that is not",
            );
            return;
        };
        // A group's steps are required (`flatten` refuses the rest).
        let optional = |i: usize| flat[i].group.is_none() && may_be_skipped(flat[i].doc);
        let what_makes_optional = |i: usize| {
            if flat[i].doc.optional {
                format!("{}.optional", flat[i].path)
            } else {
                format!("{}.times", flat[i].path)
            }
        };
        if doc.any_order {
            // Every step of a conjunction is required (see `any_order`).
            return;
        }
        if last_positive == flat.len() - 1 && optional(last_positive) {
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
    fn any_order(&mut self, doc: &SequenceDoc, flat: &[Flat<'_>]) {
        if doc.contiguity != Contiguity::Relaxed {
            self.report(
                &format!("{PATH}.contiguity"),
                "`any_order: true` works only with `contiguity: relaxed` (the default): events in any order \
                 cannot also be next to each other in a fixed order",
            );
        }
        for f in flat {
            let (step, path) = (f.doc, &f.path);
            if step.negated {
                self.report(
                    &format!("{path}.not"),
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
                    &format!("{path}.{field}"),
                    "an `any_order` step takes its events in any order, so it has no loop to end or give up \
                     early: leave out `until` and `greedy`",
                );
            }
            if may_be_skipped(step) && !step.negated {
                let field = if step.optional { "optional" } else { "times" };
                self.report(
                    &format!("{path}.{field}"),
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

/// One step in flat order (a group's steps in its place), with where it is
/// written.
struct Flat<'d> {
    path: String,
    doc: &'d StepDoc,
    /// The group it belongs to (index into the groups).
    group: Option<usize>,
    default_name: String,
    /// How messages name it: `step 3`, or `step 2.1` in a group.
    label: String,
}

/// A group as written: the step that holds it and its steps' flat range.
struct GroupDoc<'d> {
    path: String,
    doc: &'d StepDoc,
    first: usize,
    last: usize,
    default_name: String,
    label: String,
}
