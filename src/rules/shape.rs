//! Whether a new version of a rule can keep the per-key state of the old
//! one (the `keep` state policy of a replacement).
//!
//! State can be kept when it means the same thing under the new version:
//! the pattern kind is the same and so is everything the state's layout
//! depends on — for a sequence, its steps (count, names, which are negated),
//! its groups (names and steps) and `any_order`; for an absence, whether it has a trigger; for a
//! threshold, the window and the aggregate (with its expression). Limits,
//! predicates, quantifier bounds, `within`, the comparison, the message,
//! severity, mode and description may all change.

use crate::rules::{Pattern, Rule};

/// Why the state of `old` cannot be kept by `new`, if it cannot.
pub fn incompatibility(old: &Rule, new: &Rule) -> Option<String> {
    if old.partition_by.as_ref().map(|e| e.source())
        != new.partition_by.as_ref().map(|e| e.source())
    {
        return Some("`partition_by` changed, so the state belongs to other keys".into());
    }
    match (&old.pattern, &new.pattern) {
        (Pattern::Sequence(a), Pattern::Sequence(b)) => {
            if a.any_order != b.any_order {
                return Some("`any_order` changed".into());
            }
            if a.steps.len() != b.steps.len() {
                return Some(format!(
                    "the sequence has {} steps instead of {}",
                    b.steps.len(),
                    a.steps.len()
                ));
            }
            for (i, (x, y)) in a.steps.iter().zip(&b.steps).enumerate() {
                if x.name != y.name || x.negated != y.negated {
                    return Some(format!("step {} changed its name or negation", i + 1));
                }
            }
            let shape = |p: &crate::rules::SequencePattern| {
                p.groups
                    .iter()
                    .map(|g| (g.name.clone(), g.first, g.last))
                    .collect::<Vec<_>>()
            };
            (shape(a) != shape(b)).then(|| "the groups changed".into())
        }
        (Pattern::Absence(a), Pattern::Absence(b)) => (a.after.is_some() != b.after.is_some())
            .then(|| "the absence gained or lost its `after` trigger".into()),
        (Pattern::Threshold(a), Pattern::Threshold(b)) => {
            if a.window != b.window {
                return Some("the window changed".into());
            }
            let same = |x: &crate::rules::NamedAggregate, y: &crate::rules::NamedAggregate| {
                x.name == y.name
                    && x.aggregate.name() == y.aggregate.name()
                    && x.aggregate.expr().map(|e| e.source())
                        == y.aggregate.expr().map(|e| e.source())
            };
            let same_aggregates = a.aggregates.len() == b.aggregates.len()
                && a.aggregates
                    .iter()
                    .zip(&b.aggregates)
                    .all(|(x, y)| same(x, y));
            (!same_aggregates).then(|| "the aggregates changed".into())
        }
        // NB: every kind named, so a new kind is a compile error here.
        (Pattern::Sequence(_) | Pattern::Absence(_) | Pattern::Threshold(_), _) => {
            Some("the pattern kind changed".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{load, Format, RuleLimits};

    fn rule(yaml: &str) -> Rule {
        load(yaml, Format::Yaml, 1, &RuleLimits::default()).unwrap()
    }

    #[test]
    fn a_new_limit_or_message_keeps_state_a_new_window_does_not() {
        let base =
            "id: r\nthreshold:\n  match: type == \"t\"\n  window: {sliding: 1m}\n  above: 5\n";
        let raised = "id: r\nthreshold:\n  match: type == \"t\"\n  window: {sliding: 1m}\n  above: 9\nalert:\n  message: hi\n";
        let longer =
            "id: r\nthreshold:\n  match: type == \"t\"\n  window: {sliding: 5m}\n  above: 5\n";
        assert_eq!(incompatibility(&rule(base), &rule(raised)), None);
        assert!(incompatibility(&rule(base), &rule(longer)).is_some());
    }

    #[test]
    fn sequences_keep_state_while_their_steps_keep_their_shape() {
        let a = "id: r\nsequence:\n  steps:\n    - name: f\n      match: type == \"f\"\n      times: {min: 3}\n    - name: s\n      match: type == \"s\"\n";
        let b = "id: r\nsequence:\n  within: 5m\n  steps:\n    - name: f\n      match: type == \"f\"\n      times: {min: 5}\n    - name: s\n      match: type == \"s\" && data.ok\n";
        let c = "id: r\nsequence:\n  steps:\n    - name: f\n      match: type == \"f\"\n";
        assert_eq!(incompatibility(&rule(a), &rule(b)), None);
        assert!(incompatibility(&rule(a), &rule(c))
            .unwrap()
            .contains("steps"));
        let absence = "id: r\nabsence:\n  expect: type == \"h\"\n  within: 1m\n";
        assert!(incompatibility(&rule(a), &rule(absence))
            .unwrap()
            .contains("kind"));
    }
}
