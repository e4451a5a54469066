//! Regressions for the bugs a review of the engine found (issue 12 §1), one
//! test per bug, each failing on the engine before its fix. The reference
//! model (`tests/reference/`) learned the same semantics, so the property
//! tests of `tests/engine_props.rs` cover them on random streams too.

mod engine_support;

use cepheus::engine::{EngineConfig, LateReason, LateTreatment};
use cepheus::time::Duration;
use engine_support::*;
use serde_json::json;

// --- negation after a skipped optional step -----------------------------------------

const GUARDED_TRANSFER: &str = r#"
id: guarded
sequence:
  steps:
    - name: login
      match: type == "login"
    - name: mfa
      match: type == "mfa"
      optional: true
    - name: reset
      match: type == "password_reset"
      not: true
    - name: transfer
      match: type == "transfer"
"#;

#[test]
fn a_negated_step_after_a_skipped_optional_step_guards_the_gap() {
    // Before the fix only a negated step right after the current one was
    // checked: `login, reset, transfer` matched.
    let mut w = World::new(&[GUARDED_TRANSFER]);
    w.send("login", 0.0);
    w.send("password_reset", 1.0);
    assert!(
        w.send("transfer", 2.0).is_empty(),
        "the reset falls between login and transfer (mfa skipped)"
    );
}

#[test]
fn a_negated_event_before_the_optional_step_is_outside_the_guarded_gap() {
    // The optional step taken after the negated event starts the gap the
    // negated step guards: login, reset, mfa, transfer matches.
    let mut w = World::new(&[GUARDED_TRANSFER]);
    w.send("login", 0.0);
    w.send("password_reset", 1.0);
    w.send("mfa", 2.0);
    let alert = only(w.send("transfer", 3.0));
    assert_eq!(event_times(&alert), vec![0.0, 2.0, 3.0]);
}

#[test]
fn without_a_negated_event_the_optional_step_may_be_skipped() {
    let mut w = World::new(&[GUARDED_TRANSFER]);
    w.send("login", 0.0);
    w.send("other", 1.0);
    assert_eq!(times(&w.send("transfer", 2.0)), vec![2.0]);
}

// --- `late: evaluate` and closed windows ---------------------------------------------

const QUIET_MINUTE: &str = r#"
id: quiet-minute
lateness: {allowed: 10m, late: evaluate}
threshold:
  match: type == "sale"
  window: {tumbling: 1m}
  below: 5
"#;

#[test]
fn an_event_for_a_closed_window_is_dead_lettered_as_window_closed_and_fires_nothing() {
    // Before the fix each late event re-created the closed window from
    // nothing and fired it again, with the same alert id.
    let mut w = World::new(&[QUIET_MINUTE]);
    w.send("sale", 0.0);
    // Watermark 100 s: the window [0, 60) closes.
    let first = only(w.send("sale", 700.0));
    assert_eq!(secs(first.time), 60.0);
    for t in [10.0, 20.0, 30.0] {
        let outcome = w.outcome(KEY, "sale", t, json!({}));
        assert!(outcome.late, "kept as a dead letter");
        assert_eq!(outcome.late_reason, LateReason::WindowClosed);
        assert_eq!(
            outcome.late_for,
            vec![("quiet-minute".into(), LateTreatment::WindowClosed)]
        );
        assert!(outcome.alerts.is_empty());
    }
    let later = w.advance(2000.0);
    assert_eq!(
        times(&later),
        vec![720.0],
        "only the window of the 700 s sale"
    );
    assert!(
        later.iter().all(|a| a.id != first.id),
        "a closed window never fires twice"
    );
}

#[test]
fn a_late_event_for_a_window_still_open_is_evaluated() {
    let mut w = World::new(&[QUIET_MINUTE]);
    w.send("sale", 0.0);
    w.send("sale", 605.0); // watermark 5 s: [0, 60) is open
    let outcome = w.outcome(KEY, "sale", 2.0, json!({}));
    assert!(!outcome.late);
    assert_eq!(
        outcome.late_for,
        vec![("quiet-minute".into(), LateTreatment::Evaluate)]
    );
    let alert = only(w.advance(700.0).into_iter().take(1).collect());
    assert_eq!(value(&alert, "count"), &json!(2));
}

// --- the partial-match cap and completions ----------------------------------------------

#[test]
fn the_partial_match_cap_never_blocks_a_completion_under_any_contiguity() {
    // Before the fix, completed branches counted against the cap and the
    // check ran before the branch that would complete: no alert at all.
    let rule = "id: pair\nsequence:\n  contiguity: any\n  steps:\n    - match: type == \"a\"\n    - match: type == \"b\"\n";
    let config = EngineConfig {
        max_partial_matches: 2,
        ..EngineConfig::default()
    };
    let mut w = World::with_config(&[rule], config);
    w.send("a", 0.0);
    w.send("a", 1.0);
    let outcome = w.outcome(KEY, "b", 2.0, json!({}));
    assert_eq!(times(&outcome.alerts), vec![2.0]);
    assert!(outcome.dropped.is_empty(), "{:?}", outcome.dropped);
}

#[test]
fn a_run_that_completes_at_once_is_never_refused_by_the_cap() {
    let rule = "id: one\nsequence:\n  steps:\n    - match: type == \"a\"\n      optional: true\n    - match: type == \"b\"\n";
    let config = EngineConfig {
        max_partial_matches: 1,
        ..EngineConfig::default()
    };
    let mut w = World::with_config(&[rule], config);
    w.send("a", 0.0);
    assert_eq!(times(&w.send("b", 1.0)), vec![1.0]);
    assert_eq!(times(&w.send("b", 2.0)), vec![2.0]);
}

// --- partial matches without `within` expire ---------------------------------------------

const NO_WITHIN: &str =
    "id: open\nsequence:\n  steps:\n    - match: type == \"a\"\n    - match: type == \"b\"\n";

#[test]
fn a_sequence_without_within_drops_partial_matches_older_than_max_match_age() {
    let config = EngineConfig {
        max_match_age: Duration::from_secs(3600),
        ..EngineConfig::default()
    };
    let mut w = World::with_config(&[NO_WITHIN], config);
    w.send("a", 0.0);
    assert!(
        w.state(KEY).next_deadline().is_some(),
        "every run has a lifetime"
    );
    assert!(w.advance(3600.0).is_empty());
    assert_eq!(w.state(KEY).dropped.expired_matches, 1);
    assert!(w.send("b", 3601.0).is_empty(), "the run expired");
    // A run younger than the age still completes.
    w.send("a", 4000.0);
    assert_eq!(times(&w.send("b", 7599.999)), vec![7599.999]);
}

#[test]
fn the_default_max_match_age_is_a_day_and_a_rule_may_set_its_own() {
    assert_eq!(
        EngineConfig::default().max_match_age,
        Duration::from_secs(24 * 3600)
    );
    let own = "id: open\nsequence:\n  max_match_age: 10m\n  steps:\n    - match: type == \"a\"\n    - match: type == \"b\"\n";
    let mut w = World::new(&[own]);
    w.send("a", 0.0);
    assert!(w.send("b", 600.0).is_empty(), "expired at 10 minutes");
    assert_eq!(w.state(KEY).dropped.expired_matches, 1);
}

#[test]
fn one_key_is_never_blind_to_a_rule_without_within() {
    // At the cap, new runs were refused forever when runs never ended.
    let config = EngineConfig {
        max_partial_matches: 2,
        max_match_age: Duration::from_secs(60),
        ..EngineConfig::default()
    };
    let mut w = World::with_config(&[NO_WITHIN], config);
    w.send("a", 0.0);
    w.send("a", 1.0);
    w.send("a", 2.0); // refused: the cap is full
    w.send("a", 100.0);
    assert_eq!(times(&w.send("b", 101.0)), vec![101.0]);
}

#[test]
fn a_sequence_without_within_is_warned_about() {
    let open = rule(NO_WITHIN);
    assert_eq!(open.warnings.len(), 1, "{:#?}", open.warnings);
    assert_eq!(open.warnings[0].path, "sequence");
    assert!(open.warnings[0].message.contains("max_match_age"));
    let bounded = rule("id: b\nsequence:\n  within: 5m\n  steps:\n    - match: type == \"a\"\n");
    assert!(bounded.warnings.is_empty());
    let own = rule("id: b\nsequence:\n  max_match_age: 1h\n  steps:\n    - match: type == \"a\"\n");
    assert!(own.warnings.is_empty());
}

// --- a due timer does not wait for the clock to move ---------------------------------------

#[test]
fn a_timer_already_due_fires_on_the_next_advance_even_at_the_same_clock() {
    // A late trigger evaluated under `late: evaluate` opens a deadline the
    // watermark has already passed. Before the fix `advance_to` returned
    // early while the clock had not moved, so it waited for the next event.
    let rule = "id: ack\nlateness: {late: evaluate}\nabsence:\n  after: type == \"alarm\"\n  expect: type == \"ack\"\n  within: 10s\n";
    let mut w = World::new(&[rule]);
    w.send("other", 100.0);
    w.send("alarm", 50.0);
    let due = w.state(KEY).next_deadline().expect("a deadline");
    assert_eq!(secs(due), 60.0);
    assert_eq!(times(&w.advance(100.0)), vec![60.0]);
}

// --- late events are attributed only to rules that would have seen them ---------------------

#[test]
fn a_late_event_is_late_only_for_rules_whose_when_accepts_it() {
    let picky = "id: picky\nwhen: data.v == 1\nsequence:\n  steps:\n    - match: type == \"x\"\n";
    let all = "id: all\nsequence:\n  steps:\n    - match: type == \"x\"\n";
    let mut w = World::new(&[picky, all]);
    w.send("x", 10.0);
    let outcome = w.outcome(KEY, "x", 5.0, json!({"v": 2}));
    assert!(outcome.late);
    let rules: Vec<&str> = outcome.late_for.iter().map(|(r, _)| &**r).collect();
    assert_eq!(rules, ["all"], "`picky` would not have seen it");
}
