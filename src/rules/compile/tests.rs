//! Tests of the helpers; the checks themselves are tested through
//! `rules::load` in `tests/rules_compile.rs`.

use super::*;

fn set(types: &[&str]) -> Option<BTreeSet<String>> {
    Some(types.iter().map(|t| t.to_string()).collect())
}

#[test]
fn union_of_type_sets_is_any_when_one_is_any() {
    assert_eq!(union_all([set(&["a"]), set(&["b"])]), set(&["a", "b"]));
    assert_eq!(union_all([set(&["a"]), None]), None);
    assert_eq!(union_all([]), set(&[]));
}

#[test]
fn intersection_of_type_sets_treats_any_as_neutral() {
    assert_eq!(intersect(None, None), None);
    assert_eq!(intersect(set(&["a", "b"]), None), set(&["a", "b"]));
    assert_eq!(intersect(None, set(&["c"])), set(&["c"]));
    assert_eq!(intersect(set(&["a", "b"]), set(&["b", "c"])), set(&["b"]));
}

#[test]
fn id_suggestions_are_valid_ids() {
    assert_eq!(
        suggest_id("Brute Force Login"),
        Some("brute-force-login".to_owned())
    );
    assert_eq!(suggest_id("  a//b "), Some("a-b".to_owned()));
    assert_eq!(suggest_id("!!!"), None);
}

#[test]
fn duration_hints_name_the_short_unit() {
    assert_eq!(duration_hint("5 minutes"), Some("write `5m`".to_owned()));
    assert_eq!(duration_hint("30sec"), Some("write `30s`".to_owned()));
    assert_eq!(duration_hint("2 days"), Some("write `2d`".to_owned()));
    assert_eq!(
        duration_hint("30"),
        Some("add a unit: `30s`, `30m`, `30h`".to_owned())
    );
    assert_eq!(duration_hint("soon"), None);
    assert_eq!(duration_hint("5 fortnights"), None);
}

#[test]
fn step_names_must_be_identifiers_and_not_reserved() {
    assert_eq!(step_name_problem("failures"), None);
    assert_eq!(step_name_problem("_x9"), None);
    for bad in ["1st", "a-b", "a b", "", "é"] {
        assert!(
            step_name_problem(bad).is_some_and(|m| m.contains("not an identifier")),
            "{bad}"
        );
    }
    for reserved in RESERVED_STEP_NAMES {
        assert!(
            step_name_problem(reserved).is_some_and(|m| m.contains("reserved")),
            "{reserved}"
        );
    }
    assert!(step_name_problem("in").is_some_and(|m| m.contains("CEL keyword")));
}

#[test]
fn field_names_come_from_the_last_segment() {
    assert_eq!(field_name("sequence.steps[1].match"), "match");
    assert_eq!(field_name("sequence.steps[1]"), "steps");
    assert_eq!(field_name("id"), "id");
}
