//! Sequences, one test per semantic statement of DESIGN §3 and of the module
//! docs of `src/engine/sequence.rs`. Times are seconds after `T0`.

mod engine_support;

use engine_support::*;
use serde_json::json;

/// `a` then `b`, nothing else: the shape most tests vary.
fn a_then_b(fields: &str) -> String {
    format!(
        "id: a-then-b
sequence:
{fields}
  steps:
    - {{name: a, match: type == \"a\"}}
    - {{name: b, match: type == \"b\"}}
"
    )
}

/// The rule of DESIGN §3: three or more failures, then a success, within 5 m.
const BRUTE_FORCE: &str = r#"
id: brute-force-login
severity: high
sequence:
  within: 5m
  steps:
    - name: failures
      match: type == "login_failed"
      times: {min: 3}
    - name: success
      match: type == "login_success"
alert:
  message: "{{key}}: {{failures.count}} failed logins, then a success from {{success.data.ip}}"
"#;

// --- order and steps ------------------------------------------------------

#[test]
fn steps_match_in_order_only() {
    let rule = a_then_b("  within: 1h");
    let mut w = World::new(&[&rule]);
    assert!(w.send("b", 0.0).is_empty());
    assert!(w.send("a", 1.0).is_empty(), "b before a is not a match");
    let alert = only(w.send("b", 2.0));
    assert_eq!(event_times(&alert), vec![1.0, 2.0]);
    assert_eq!(secs(alert.time), 2.0, "a match's time is its last event's");
}

#[test]
fn a_sequence_without_within_is_bounded_only_by_max_match_age() {
    let rule = a_then_b("  contiguity: relaxed");
    let mut w = World::new(&[&rule]);
    w.send("a", 0.0);
    assert_eq!(w.send("b", 86_400.0 - 0.001).len(), 1, "within a day");
    w.send("a", 100_000.0);
    assert!(
        w.send("b", 100_000.0 + 86_400.0).is_empty(),
        "a partial match lives 24 h of event time by default"
    );
}

// --- within -----------------------------------------------------------------

#[test]
fn within_is_strict_299_999_s_matches_a_5_m_window() {
    let mut w = World::new(&[&a_then_b("  within: 5m")]);
    w.send("a", 0.0);
    assert_eq!(w.send("b", 299.999).len(), 1);
}

#[test]
fn within_is_strict_300_000_s_does_not_match_a_5_m_window() {
    let mut w = World::new(&[&a_then_b("  within: 5m")]);
    w.send("a", 0.0);
    assert!(w.send("b", 300.0).is_empty());
}

#[test]
fn within_bounds_last_minus_first_not_the_gap_between_steps() {
    let rule = r#"
id: abc
sequence:
  within: 5m
  steps:
    - {name: a, match: type == "a"}
    - {name: b, match: type == "b"}
    - {name: c, match: type == "c"}
"#;
    let mut w = World::new(&[rule]);
    w.send("a", 0.0);
    w.send("b", 200.0);
    assert!(
        w.send("c", 350.0).is_empty(),
        "each gap is under 5 m, but c is 350 s after a"
    );
}

#[test]
fn a_run_is_dropped_when_the_watermark_reaches_first_plus_within() {
    let mut w = World::new(&[&a_then_b("  within: 5m")]);
    w.send("a", 0.0);
    assert_eq!(w.state(KEY).next_deadline(), Some(at(300.0)));
    assert!(
        w.advance(300.0).is_empty(),
        "an incomplete run expires silently"
    );
    assert!(w.state(KEY).rules.is_empty(), "and leaves no state behind");
    assert_eq!(w.state(KEY).next_deadline(), None);
}

// --- greedy quantifiers and the earliest start ------------------------------

#[test]
fn greedy_earliest_start_failures_at_0_100_200_290_and_success_at_310_give_one_match_from_100_with_3_failures(
) {
    let mut w = World::new(&[BRUTE_FORCE]);
    for t in [0.0, 100.0, 200.0, 290.0] {
        assert!(w.send("login_failed", t).is_empty());
    }
    let alert = only(w.send_data("login_success", 310.0, json!({"ip": "10.0.0.7"})));
    assert_eq!(event_times(&alert), vec![100.0, 200.0, 290.0, 310.0]);
    assert_eq!(value(&alert, "failures.count"), &json!(3));
    assert_eq!(secs(alert.time), 310.0);
}

#[test]
fn a_quantified_step_is_greedy_staying_wins_over_moving_on() {
    let rule = r#"
id: xs-then-x
sequence:
  steps:
    - {name: xs, match: type == "x", times: {min: 1, max: 3}}
    - {name: next, match: type == "x" || type == "y"}
"#;
    let mut w = World::new(&[rule]);
    assert!(w.send("x", 0.0).is_empty());
    assert!(w.send("x", 1.0).is_empty());
    assert!(
        w.send("x", 2.0).is_empty(),
        "the third x stays in `xs` (max 3)"
    );
    let alert = only(w.send("x", 3.0));
    assert_eq!(value(&alert, "xs.count"), &json!(3));
    assert_eq!(value(&alert, "next.count"), &json!(1));
}

#[test]
fn f_f_f_s_s_is_one_match() {
    let mut w = World::new(&[BRUTE_FORCE]);
    let mut alerts = Vec::new();
    for (ty, t) in [
        ("login_failed", 0.0),
        ("login_failed", 1.0),
        ("login_failed", 2.0),
        ("login_success", 3.0),
        ("login_success", 4.0),
    ] {
        alerts.extend(w.send(ty, t));
    }
    assert_eq!(times(&alerts), vec![3.0]);
}

#[test]
fn f_f_f_s_f_f_f_s_is_two_matches() {
    let mut w = World::new(&[BRUTE_FORCE]);
    let mut alerts = Vec::new();
    for (i, ty) in ["F", "F", "F", "S", "F", "F", "F", "S"].iter().enumerate() {
        let ty = if *ty == "F" {
            "login_failed"
        } else {
            "login_success"
        };
        alerts.extend(w.send(ty, i as f64));
    }
    assert_eq!(times(&alerts), vec![3.0, 7.0]);
    assert_eq!(event_times(&alerts[1]), vec![4.0, 5.0, 6.0, 7.0]);
}

#[test]
fn times_n_takes_exactly_n_events() {
    let rule = r#"
id: two-a-then-b
sequence:
  contiguity: strict
  steps:
    - {name: a, match: type == "a", times: 2}
    - {name: b, match: type == "b"}
"#;
    let mut w = World::new(&[rule]);
    w.send("a", 0.0);
    assert!(w.send("b", 1.0).is_empty(), "one a is too few");
    w.send("a", 2.0);
    w.send("a", 3.0);
    let alert = only(w.send("b", 4.0));
    assert_eq!(value(&alert, "a.count"), &json!(2));
    assert_eq!(event_times(&alert), vec![2.0, 3.0, 4.0]);

    // Three a's in a row under strict contiguity: the run from the first a
    // cannot take a third (max 2) and ends; the run from the second matches.
    w.send("a", 10.0);
    w.send("a", 11.0);
    w.send("a", 12.0);
    let alert = only(w.send("b", 13.0));
    assert_eq!(event_times(&alert), vec![11.0, 12.0, 13.0]);
}

#[test]
fn times_min_max_needs_min_and_takes_at_most_max() {
    let rule = r#"
id: a-range-then-b
sequence:
  steps:
    - {name: a, match: type == "a", times: {min: 2, max: 3}}
    - {name: b, match: type == "b"}
"#;
    let mut w = World::new(&[rule]);
    w.send("a", 0.0);
    assert!(w.send("b", 1.0).is_empty(), "below min");

    let mut w = World::new(&[rule]);
    for t in [0.0, 1.0, 2.0, 3.0] {
        w.send("a", t);
    }
    let alert = only(w.send("b", 4.0));
    assert_eq!(
        value(&alert, "a.count"),
        &json!(3),
        "max 3: the fourth a is not taken"
    );
    assert_eq!(event_times(&alert), vec![0.0, 1.0, 2.0, 4.0]);
}

#[test]
fn a_trailing_quantifier_completes_at_its_minimum() {
    let rule = r#"
id: a-then-bs
sequence:
  steps:
    - {name: a, match: type == "a"}
    - {name: bs, match: type == "b", times: {min: 2}}
"#;
    let mut w = World::new(&[rule]);
    w.send("a", 0.0);
    assert!(w.send("b", 1.0).is_empty());
    let alert = only(w.send("b", 2.0));
    assert_eq!(
        value(&alert, "bs.count"),
        &json!(2),
        "alerts are not held back for more"
    );
    assert!(w.send("b", 3.0).is_empty());
}

#[test]
fn an_optional_step_may_be_skipped_or_taken() {
    let rule = r#"
id: a-maybe-b-then-c
sequence:
  steps:
    - {name: a, match: type == "a"}
    - {name: b, match: type == "b", optional: true}
    - {name: c, match: type == "c"}
"#;
    let mut w = World::new(&[rule]);
    w.send("a", 0.0);
    let skipped = only(w.send("c", 1.0));
    assert_eq!(value(&skipped, "b.count"), &json!(0));

    w.send("a", 2.0);
    w.send("b", 3.0);
    let taken = only(w.send("c", 4.0));
    assert_eq!(value(&taken, "b.count"), &json!(1));
    assert_eq!(event_times(&taken), vec![2.0, 3.0, 4.0]);
}

#[test]
fn an_event_starts_a_run_at_a_later_step_when_every_step_before_it_is_optional() {
    let rule = r#"
id: maybe-a-then-b
sequence:
  steps:
    - {name: a, match: type == "a", optional: true}
    - {name: b, match: type == "b"}
"#;
    let mut w = World::new(&[rule]);
    let alert = only(w.send("b", 0.0));
    assert_eq!(value(&alert, "a.count"), &json!(0));
    assert_eq!(event_times(&alert), vec![0.0]);
}

// --- contiguity -------------------------------------------------------------

#[test]
fn relaxed_contiguity_skips_unrelated_events_in_between() {
    let mut w = World::new(&[&a_then_b("  contiguity: relaxed")]);
    w.send("a", 0.0);
    w.send("noise", 1.0);
    w.send("noise", 2.0);
    let alert = only(w.send("b", 3.0));
    assert_eq!(event_times(&alert), vec![0.0, 3.0]);
}

#[test]
fn relaxed_is_the_default_contiguity() {
    let mut w = World::new(&[&a_then_b("  within: 1h")]);
    w.send("a", 0.0);
    w.send("noise", 1.0);
    assert_eq!(w.send("b", 2.0).len(), 1);
}

#[test]
fn strict_contiguity_ends_a_run_on_any_other_event_the_rule_sees() {
    let mut w = World::new(&[&a_then_b("  contiguity: strict")]);
    w.send("a", 0.0);
    w.send("noise", 1.0);
    assert!(w.send("b", 2.0).is_empty(), "like Flink `next`");
    w.send("a", 3.0);
    assert_eq!(w.send("b", 4.0).len(), 1, "back to back still matches");
}

#[test]
fn strict_contiguity_also_applies_inside_a_quantified_step() {
    let rule = r#"
id: two-a-strict
sequence:
  contiguity: strict
  steps:
    - {name: a, match: type == "a", times: {min: 2}}
    - {name: b, match: type == "b"}
"#;
    let mut w = World::new(&[rule]);
    w.send("a", 0.0);
    w.send("noise", 1.0);
    w.send("a", 2.0);
    assert!(w.send("b", 3.0).is_empty());
}

#[test]
fn relaxed_contiguity_takes_the_first_event_matching_the_next_step() {
    let rule = r#"
id: abc-relaxed
sequence:
  skip: all
  steps:
    - {name: a, match: type == "a"}
    - {name: b, match: type == "b"}
    - {name: c, match: type == "c"}
"#;
    let mut w = World::new(&[rule]);
    w.send("a", 0.0);
    w.send("b", 1.0);
    w.send("b", 2.0);
    let alert = only(w.send("c", 3.0));
    assert_eq!(
        event_times(&alert),
        vec![0.0, 1.0, 3.0],
        "Flink `followedBy`"
    );
}

#[test]
fn any_contiguity_branches_on_every_matching_event() {
    let rule = r#"
id: abc-any
sequence:
  contiguity: any
  skip: all
  steps:
    - {name: a, match: type == "a"}
    - {name: b, match: type == "b"}
    - {name: c, match: type == "c"}
"#;
    let mut w = World::new(&[rule]);
    w.send("a", 0.0);
    w.send("b", 1.0);
    w.send("b", 2.0);
    let alerts = w.send("c", 3.0);
    let mut matches: Vec<Vec<f64>> = alerts.iter().map(event_times).collect();
    matches.sort_by(|x, y| x.partial_cmp(y).expect("no NaN"));
    assert_eq!(
        matches,
        vec![vec![0.0, 1.0, 3.0], vec![0.0, 2.0, 3.0]],
        "Flink `followedByAny`"
    );
    assert_ne!(
        alerts[0].id, alerts[1].id,
        "matches that differ in between have different ids"
    );
}

#[test]
fn any_contiguity_with_past_last_event_emits_the_earliest_match_only() {
    let rule = r#"
id: abc-any-skip
sequence:
  contiguity: any
  steps:
    - {name: a, match: type == "a"}
    - {name: b, match: type == "b"}
    - {name: c, match: type == "c"}
"#;
    let mut w = World::new(&[rule]);
    w.send("a", 0.0);
    w.send("b", 1.0);
    w.send("b", 2.0);
    let alert = only(w.send("c", 3.0));
    assert_eq!(event_times(&alert), vec![0.0, 1.0, 3.0]);
    assert!(
        w.state(KEY).rules.is_empty(),
        "every other branch is discarded"
    );
}

#[test]
fn any_contiguity_with_past_last_event_emits_the_earliest_started_match_whatever_the_branch_order()
{
    // Two runs, from a(1) at 0 and a(2) at 1; each b only continues the run
    // of its own a, and the later-started run branches first. One c then
    // completes both: the match that started first is emitted.
    let rule = r#"
id: abc-any-bound
sequence:
  contiguity: any
  steps:
    - {name: a, match: type == "a"}
    - {name: b, match: type == "b" && data.n == a.data.n}
    - {name: c, match: type == "c"}
"#;
    let mut w = World::new(&[rule]);
    w.send_data("a", 0.0, json!({"n": 1}));
    w.send_data("a", 1.0, json!({"n": 2}));
    w.send_data("b", 2.0, json!({"n": 2}));
    w.send_data("b", 3.0, json!({"n": 1}));
    let alert = only(w.send("c", 4.0));
    assert_eq!(event_times(&alert), vec![0.0, 3.0, 4.0]);
}

// --- negated steps ------------------------------------------------------------

const A_NOT_X_B: &str = r#"
id: a-no-x-b
sequence:
  within: 10m
  steps:
    - {name: a, match: type == "a"}
    - {name: x, match: type == "x", not: true}
    - {name: b, match: type == "b"}
"#;

#[test]
fn a_negated_middle_step_means_no_such_event_between_its_neighbours() {
    let mut w = World::new(&[A_NOT_X_B]);
    w.send("a", 0.0);
    w.send("x", 1.0);
    assert!(w.send("b", 2.0).is_empty());

    w.send("a", 10.0);
    let alert = only(w.send("b", 11.0));
    assert_eq!(
        event_times(&alert),
        vec![10.0, 11.0],
        "a negated step binds no event"
    );
    assert!(
        w.send("x", 12.0).is_empty(),
        "an x after the match changes nothing"
    );
}

#[test]
fn a_negated_event_inside_a_quantified_step_does_not_end_the_run_before_its_minimum() {
    let rule = r#"
id: two-a-no-x-b
sequence:
  steps:
    - {name: a, match: type == "a", times: {min: 2}}
    - {name: x, match: type == "x", not: true}
    - {name: b, match: type == "b"}
"#;
    let mut w = World::new(&[rule]);
    w.send("a", 0.0);
    w.send("x", 1.0);
    w.send("a", 2.0);
    assert_eq!(
        w.send("b", 3.0).len(),
        1,
        "x came between the two a's, not between the a's and b"
    );
    w.send("a", 10.0);
    w.send("a", 11.0);
    w.send("x", 12.0);
    assert!(w.send("b", 13.0).is_empty());
}

const A_THEN_NO_X: &str = r#"
id: a-then-no-x
sequence:
  within: 10m
  steps:
    - {name: a, match: type == "a"}
    - {name: x, match: type == "x", not: true}
alert:
  message: "no x after a at {{a.time}}"
"#;

#[test]
fn a_trailing_negation_fires_at_first_plus_within() {
    let mut w = World::new(&[A_THEN_NO_X]);
    assert!(w.send("a", 0.0).is_empty(), "not before its deadline");
    assert_eq!(w.state(KEY).next_deadline(), Some(at(600.0)));
    assert!(w.advance(599.999).is_empty());
    let alert = only(w.advance(600.0));
    assert_eq!(secs(alert.time), 600.0, "the alert's time is the deadline");
    assert_eq!(event_times(&alert), vec![0.0]);
    assert_eq!(alert.message, "no x after a at 2026-01-01T00:00:00.000Z");
}

#[test]
fn a_trailing_negation_is_cancelled_by_a_negated_event_before_the_deadline() {
    let mut w = World::new(&[A_THEN_NO_X]);
    w.send("a", 0.0);
    assert!(w.send("x", 599.999).is_empty());
    assert!(w.advance(3600.0).is_empty());
}

#[test]
fn a_trailing_negation_is_not_cancelled_by_a_negated_event_at_the_deadline() {
    let mut w = World::new(&[A_THEN_NO_X]);
    w.send("a", 0.0);
    let alert = only(w.send("x", 600.0));
    assert_eq!(
        secs(alert.time),
        600.0,
        "the timer fires before x is evaluated"
    );
}

#[test]
fn a_negated_event_at_the_deadline_does_not_cancel_even_when_it_arrives_before_the_timer_fires() {
    // With 60 s of allowed lateness the watermark trails the clock, so x at
    // 600 is evaluated while the deadline (600) has not fired yet.
    let mut w = World::with_lateness(&[A_THEN_NO_X], 60);
    w.send("a", 0.0);
    w.send("noise", 610.0);
    assert!(w.send("x", 600.0).is_empty());
    assert_eq!(times(&w.advance(660.0)), vec![600.0]);

    let mut w = World::with_lateness(&[A_THEN_NO_X], 60);
    w.send("a", 0.0);
    w.send("noise", 610.0);
    w.send("x", 599.999);
    assert!(
        w.advance(660.0).is_empty(),
        "x before the deadline cancels, however late it arrives"
    );
}

#[test]
fn a_pending_trailing_negation_still_takes_events_for_its_last_positive_step() {
    let rule = r#"
id: as-then-no-x
sequence:
  within: 10m
  steps:
    - {name: a, match: type == "a", times: {min: 1}}
    - {name: x, match: type == "x", not: true}
"#;
    let mut w = World::new(&[rule]);
    w.send("a", 0.0);
    w.send("a", 100.0);
    let alert = only(w.advance(600.0));
    assert_eq!(value(&alert, "a.count"), &json!(2));
    assert_eq!(event_times(&alert), vec![0.0, 100.0]);
    assert!(
        w.advance(3600.0).is_empty(),
        "the run from 100 started before the match ended"
    );
}

#[test]
fn a_pending_trailing_negation_ignores_unrelated_events_even_under_strict_contiguity() {
    let rule = r#"
id: a-then-no-x-strict
sequence:
  contiguity: strict
  within: 10m
  steps:
    - {name: a, match: type == "a"}
    - {name: x, match: type == "x", not: true}
"#;
    let mut w = World::new(&[rule]);
    w.send("a", 0.0);
    w.send("noise", 1.0);
    assert_eq!(w.advance(600.0).len(), 1);
}

#[test]
fn a_timer_completed_match_with_past_last_event_discards_runs_started_before_its_deadline() {
    let mut w = World::new(&[A_THEN_NO_X]);
    w.send("a", 0.0);
    w.send("a", 300.0);
    assert_eq!(times(&w.advance(3600.0)), vec![600.0]);
}

#[test]
fn a_timer_completed_match_with_skip_all_keeps_the_other_runs() {
    let rule = A_THEN_NO_X.replace("within: 10m", "within: 10m\n  skip: all");
    let mut w = World::new(&[&rule]);
    w.send("a", 0.0);
    w.send("a", 300.0);
    assert_eq!(times(&w.advance(3600.0)), vec![600.0, 900.0]);
}

// --- any_order --------------------------------------------------------------

const HR_AND_SPO2: &str = r#"
id: hr-and-spo2
sequence:
  any_order: true
  within: 10m
  steps:
    - {name: hr, match: type == "vital" && data.heart_rate > 120}
    - {name: spo2, match: type == "vital" && data.spo2 < 90}
"#;

#[test]
fn any_order_matches_all_steps_in_either_order() {
    let mut w = World::new(&[HR_AND_SPO2]);
    w.send_data("vital", 0.0, json!({"heart_rate": 130}));
    assert_eq!(w.send_data("vital", 60.0, json!({"spo2": 85})).len(), 1);

    let mut w = World::new(&[HR_AND_SPO2]);
    w.send_data("vital", 0.0, json!({"spo2": 85}));
    let alert = only(w.send_data("vital", 60.0, json!({"heart_rate": 130})));
    assert_eq!(value(&alert, "hr.count"), &json!(1));
    assert_eq!(value(&alert, "spo2.count"), &json!(1));
}

#[test]
fn any_order_is_bounded_by_within() {
    let mut w = World::new(&[HR_AND_SPO2]);
    w.send_data("vital", 0.0, json!({"spo2": 85}));
    assert!(w
        .send_data("vital", 600.0, json!({"heart_rate": 130}))
        .is_empty());

    let mut w = World::new(&[HR_AND_SPO2]);
    w.send_data("vital", 0.0, json!({"spo2": 85}));
    assert_eq!(
        w.send_data("vital", 599.999, json!({"heart_rate": 130}))
            .len(),
        1
    );
}

#[test]
fn any_order_gives_an_event_to_the_first_step_still_below_its_minimum() {
    let rule = r#"
id: two-any-order
sequence:
  any_order: true
  steps:
    - {name: anything, match: type != "", times: {min: 1, max: 5}}
    - {name: bs, match: type == "b", times: 2}
"#;
    let mut w = World::new(&[rule]);
    w.send("a", 0.0);
    w.send("a", 1.0);
    assert!(
        w.send("b", 2.0).is_empty(),
        "b goes to `bs` (below min), not to `anything`"
    );
    let alert = only(w.send("b", 3.0));
    assert_eq!(value(&alert, "anything.count"), &json!(2));
    assert_eq!(value(&alert, "bs.count"), &json!(2));
}

#[test]
fn a_step_matching_both_sides_completes_an_any_order_run_only_with_another_event() {
    let mut w = World::new(&[HR_AND_SPO2]);
    assert!(
        w.send_data("vital", 0.0, json!({"heart_rate": 130, "spo2": 85}))
            .is_empty(),
        "one event is taken by one step"
    );
    assert_eq!(w.send_data("vital", 1.0, json!({"spo2": 80})).len(), 1);
}

// --- skip strategies ----------------------------------------------------------

#[test]
fn skip_past_last_event_emits_one_match_and_discards_runs_started_before_its_end() {
    let mut w = World::new(&[&a_then_b("  within: 1h")]);
    w.send("a", 0.0);
    w.send("a", 1.0);
    let alert = only(w.send("b", 2.0));
    assert_eq!(
        event_times(&alert),
        vec![0.0, 2.0],
        "the earliest start wins"
    );
    assert!(
        w.send("b", 3.0).is_empty(),
        "the run from a at 1 was discarded"
    );
}

#[test]
fn skip_all_emits_every_match() {
    let mut w = World::new(&[&a_then_b("  within: 1h\n  skip: all")]);
    w.send("a", 0.0);
    w.send("a", 1.0);
    let alerts = w.send("b", 2.0);
    let matches: Vec<Vec<f64>> = alerts.iter().map(event_times).collect();
    assert_eq!(matches, vec![vec![0.0, 2.0], vec![1.0, 2.0]]);
}

#[test]
fn the_completing_event_starts_no_new_run_under_past_last_event() {
    let rule = r#"
id: x-x
sequence:
  steps:
    - {name: first, match: type == "x"}
    - {name: second, match: type == "x"}
"#;
    let mut w = World::new(&[rule]);
    let mut alerts = Vec::new();
    for t in 0..4 {
        alerts.extend(w.send("x", t as f64));
    }
    let matches: Vec<Vec<f64>> = alerts.iter().map(event_times).collect();
    assert_eq!(matches, vec![vec![0.0, 1.0], vec![2.0, 3.0]]);
}

// --- bindings ---------------------------------------------------------------

#[test]
fn a_later_step_can_refer_to_the_events_of_earlier_steps() {
    let rule = r#"
id: same-ip
sequence:
  steps:
    - {name: login, match: type == "login"}
    - {name: transfer, match: type == "transfer" && data.ip != login.data.ip}
"#;
    let mut w = World::new(&[rule]);
    w.send_data("login", 0.0, json!({"ip": "10.0.0.1"}));
    assert!(w
        .send_data("transfer", 1.0, json!({"ip": "10.0.0.1"}))
        .is_empty());
    let alert = only(w.send_data("transfer", 2.0, json!({"ip": "192.168.0.9"})));
    assert_eq!(event_times(&alert), vec![0.0, 2.0]);
}

// --- after-match skip strategies (issue 12 §3), Flink's table for `b+ c` ----

fn b_plus_c(skip: &str) -> String {
    format!(
        "id: r\nsequence:\n  skip: {skip}\n  steps:\n    - name: b\n      match: type == \"b\"\n      times: {{min: 1}}\n    - name: c\n      match: type == \"c\"\n"
    )
}

/// Each alert of `b b b c` as the times of its events.
fn b1_b2_b3_c(skip: &str) -> Vec<Vec<f64>> {
    let mut w = World::new(&[&b_plus_c(skip)]);
    for t in [1.0, 2.0, 3.0] {
        assert!(w.send("b", t).is_empty());
    }
    w.send("c", 4.0).iter().map(event_times).collect()
}

#[test]
fn skip_to_next_discards_only_the_runs_that_started_with_the_match() {
    assert_eq!(
        b1_b2_b3_c("to_next"),
        vec![
            vec![1.0, 2.0, 3.0, 4.0],
            vec![2.0, 3.0, 4.0],
            vec![3.0, 4.0]
        ]
    );
}

#[test]
fn skip_to_first_resumes_at_the_first_event_of_the_step() {
    // b's first event is the match's own first: as `to_next`.
    assert_eq!(
        b1_b2_b3_c("{to_first: b}"),
        vec![
            vec![1.0, 2.0, 3.0, 4.0],
            vec![2.0, 3.0, 4.0],
            vec![3.0, 4.0]
        ]
    );
}

#[test]
fn skip_to_last_resumes_at_the_last_event_of_the_step() {
    assert_eq!(
        b1_b2_b3_c("{to_last: b}"),
        vec![vec![1.0, 2.0, 3.0, 4.0], vec![3.0, 4.0]]
    );
}

#[test]
fn skip_past_last_event_and_all_on_the_same_stream() {
    assert_eq!(
        b1_b2_b3_c("past_last_event"),
        vec![vec![1.0, 2.0, 3.0, 4.0]]
    );
    assert_eq!(b1_b2_b3_c("all").len(), 3);
}

#[test]
fn skip_to_a_step_that_is_not_there_is_a_problem_at_its_path() {
    let problems = cepheus::rules::load(
        &b_plus_c("{to_last: d}"),
        cepheus::rules::Format::Yaml,
        1,
        &cepheus::rules::RuleLimits::default(),
    )
    .expect_err("an unknown step");
    assert_eq!(problems[0].path, "sequence.skip.to_last");
    assert_eq!(problems[0].line, Some(3));
    assert!(problems[0].message.contains("`b`, `c`"), "{problems:#?}");
}

// --- reluctant quantifiers and `until` (issue 12 §3) ----------------------------

const BURST_THEN_PAYOUT: &str = "id: r\nsequence:\n  steps:\n    - name: bets\n      match: type == \"bet\"\n      times: {min: 1}\n      GREEDY\n    - name: payout\n      match: type == \"bet\" || type == \"payout\"\n";

#[test]
fn a_greedy_step_takes_what_the_next_step_could_have_taken() {
    let rule = BURST_THEN_PAYOUT.replace("GREEDY", "greedy: true");
    let mut w = World::new(&[&rule]);
    for t in [1.0, 2.0, 3.0] {
        assert!(w.send("bet", t).is_empty(), "every bet is taken by `bets`");
    }
    let alert = only(w.send("payout", 4.0));
    assert_eq!(value(&alert, "bets.count"), &json!(3));
}

#[test]
fn a_reluctant_step_lets_the_next_step_take_an_event_once_it_has_its_minimum() {
    // Like Flink's oneOrMore() without greedy(): the shortest match.
    let rule = BURST_THEN_PAYOUT.replace("GREEDY", "greedy: false");
    let mut w = World::new(&[&rule]);
    assert!(w.send("bet", 1.0).is_empty());
    let alert = only(w.send("bet", 2.0));
    assert_eq!(value(&alert, "bets.count"), &json!(1));
    assert_eq!(event_times(&alert), vec![1.0, 2.0]);
}

#[test]
fn until_ends_a_loop_at_the_first_event_matching_it_which_the_loop_does_not_take() {
    let rule = "id: r\nsequence:\n  steps:\n    - name: readings\n      match: type == \"reading\"\n      times: {min: 2}\n      until: data.reset == true\n    - name: alarm\n      match: type == \"alarm\"\n";
    let mut w = World::new(&[rule]);
    w.send_data("reading", 1.0, json!({"reset": false}));
    w.send_data("reading", 2.0, json!({"reset": false}));
    w.send_data("reading", 3.0, json!({"reset": true}));
    w.send_data("reading", 4.0, json!({"reset": false}));
    let alert = only(w.send("alarm", 5.0));
    assert_eq!(
        event_times(&alert),
        vec![1.0, 2.0, 5.0],
        "the loop ended at the reset reading; the later reading started a run of its own"
    );
}

#[test]
fn greedy_and_until_belong_on_loops() {
    let load = |yaml: &str| {
        cepheus::rules::load(
            yaml,
            cepheus::rules::Format::Yaml,
            1,
            &cepheus::rules::RuleLimits::default(),
        )
    };
    let fixed = "id: r\nsequence:\n  steps:\n    - match: type == \"a\"\n      times: 2\n      greedy: false\n    - match: type == \"b\"\n";
    let problems = load(fixed).expect_err("a fixed count");
    assert_eq!(problems[0].path, "sequence.steps[0].greedy");
    assert_eq!(problems[0].line, Some(6));
    let single = "id: r\nsequence:\n  steps:\n    - match: type == \"a\"\n      until: type == \"x\"\n    - match: type == \"b\"\n";
    let problems = load(single).expect_err("one event");
    assert_eq!(problems[0].path, "sequence.steps[0].until");
    let bad = "id: r\nsequence:\n  steps:\n    - match: type == \"a\"\n      times: {min: 1}\n      until: tpye == \"x\"\n    - match: type == \"b\"\n";
    let problems = load(bad).expect_err("a typo");
    assert_eq!(problems[0].path, "sequence.steps[0].until");
    assert!(problems[0].message.contains("tpye"), "{problems:#?}");
}

// --- groups -------------------------------------------------------------------

/// The issue's example: a failed login then a password reset, twice or
/// more, then a transfer.
fn takeover(group_fields: &str, after: &str) -> String {
    format!(
        "id: takeover
sequence:
  within: 1h
  steps:
    - name: probe
      group:
        - name: failed
          match: type == \"f\"
        - name: reset
          match: type == \"r\"
{group_fields}{after}    - name: transfer
      match: type == \"t\"
alert:
  message: \"{{{{probe.count}}}} rounds, {{{{failed.count}}}} failures, first at {{{{probe.first.time}}}}, last reset {{{{reset.last.time}}}}\"
"
    )
}

#[test]
fn a_group_repeats_its_steps_as_a_whole() {
    let mut w = World::new(&[&takeover("      times: {min: 2}\n", "")]);
    assert!(w.send("f", 0.0).is_empty());
    assert!(w.send("r", 1.0).is_empty());
    // One round is not enough.
    assert!(w.send("t", 2.0).is_empty());
    w.send("f", 3.0);
    w.send("r", 4.0);
    w.send("f", 5.0);
    w.send("r", 6.0);
    let alert = only(w.send("t", 7.0));
    // Greedy: the third round is taken too; the run started at 0 wins.
    assert_eq!(event_times(&alert), vec![0.0, 1.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    assert_eq!(value(&alert, "probe.count"), &json!(3));
    assert_eq!(value(&alert, "failed.count"), &json!(3));
    assert_eq!(value(&alert, "reset.count"), &json!(3));
    assert_eq!(
        alert.message,
        "3 rounds, 3 failures, first at 2026-01-01T00:00:00.000Z, last reset 2026-01-01T00:00:06.000Z"
    );
}

#[test]
fn a_group_is_taken_in_order_and_a_broken_round_does_not_count() {
    let mut w = World::new(&[&takeover("      times: {min: 2}\n", "")]);
    // f f r: the second f is unrelated (relaxed), the round is f r.
    w.send("f", 0.0);
    w.send("f", 1.0);
    w.send("r", 2.0);
    // r before f: unrelated for the run at its round's end.
    w.send("r", 3.0);
    assert!(w.send("t", 4.0).is_empty(), "one round only");
    w.send("f", 5.0);
    w.send("r", 6.0);
    let alert = only(w.send("t", 7.0));
    assert_eq!(value(&alert, "probe.count"), &json!(2));
}

#[test]
fn a_group_with_a_maximum_stops_repeating() {
    let mut w = World::new(&[&takeover("      times: {min: 1, max: 1}\n", "")]);
    w.send("f", 0.0);
    w.send("r", 1.0);
    w.send("f", 2.0);
    w.send("r", 3.0);
    let alert = only(w.send("t", 4.0));
    assert_eq!(event_times(&alert), vec![0.0, 1.0, 4.0]);
}

#[test]
fn a_reluctant_group_lets_the_next_step_take_an_event_once_it_has_its_minimum() {
    // The step after the group also matches a failed login.
    let rule = "id: reluctant
sequence:
  steps:
    - name: probe
      group:
        - {name: failed, match: type == \"f\"}
        - {name: reset, match: type == \"r\"}
      times: {min: 1}
      greedy: false
    - name: again
      match: type == \"f\"
";
    let mut w = World::new(&[rule]);
    w.send("f", 0.0);
    w.send("r", 1.0);
    let alert = only(w.send("f", 2.0));
    assert_eq!(event_times(&alert), vec![0.0, 1.0, 2.0]);
    // Greedy, at most two rounds: the second f starts another round.
    let greedy = rule
        .replace("      greedy: false\n", "")
        .replace("{min: 1}", "{min: 1, max: 2}");
    let mut w = World::new(&[&greedy]);
    w.send("f", 0.0);
    w.send("r", 1.0);
    assert!(w.send("f", 2.0).is_empty(), "greedy: another round starts");
    w.send("r", 3.0);
    let alert = only(w.send("f", 4.0));
    assert_eq!(event_times(&alert), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn a_negated_step_after_a_group_guards_only_the_way_out() {
    let rule = takeover(
        "      times: {min: 1}\n",
        "    - match: type == \"n\"\n      not: true\n",
    );
    let mut w = World::new(&[&rule]);
    // f r n t: the notice is between the rounds and the transfer.
    w.send("f", 0.0);
    w.send("r", 1.0);
    w.send("n", 2.0);
    assert!(w.send("t", 3.0).is_empty());
    // f r n f r t: the notice falls between two rounds: the last gap is clean.
    let mut w = World::new(&[&rule]);
    for (ty, t) in [("f", 0.0), ("r", 1.0), ("n", 2.0), ("f", 3.0), ("r", 4.0)] {
        w.send(ty, t);
    }
    let alert = only(w.send("t", 5.0));
    assert_eq!(value(&alert, "probe.count"), &json!(2));
}

#[test]
fn a_group_can_be_named_in_skip_only_through_its_steps() {
    let rule = takeover("      times: {min: 1}\n", "").replace(
        "  within: 1h\n",
        "  within: 1h\n  skip: {to_last: failed}\n",
    );
    let mut w = World::new(&[&rule]);
    for (ty, t) in [("f", 0.0), ("r", 1.0), ("f", 2.0), ("r", 3.0)] {
        w.send(ty, t);
    }
    // to_last: failed resumes at the last failure: the run started at 2
    // matches too.
    let alerts = w.send("t", 4.0);
    let starts: Vec<f64> = alerts.iter().map(|a| event_times(a)[0]).collect();
    assert_eq!(starts, vec![0.0, 2.0]);
}
