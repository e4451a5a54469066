//! What holds for every pattern kind: time and lateness (DESIGN §4 and the
//! module docs of `src/engine/mod.rs`), `when` and `partition_by` (§3),
//! per-key limits (§7), and alerts — ids, explanations, messages (§5).
//! Times are seconds after `T0`.

mod engine_support;

use cepheus::engine::EngineConfig;
use engine_support::*;
use serde_json::json;

const A_THEN_B: &str = r#"
id: a-then-b
sequence:
  within: 5m
  steps:
    - {name: a, match: type == "a"}
    - {name: b, match: type == "b"}
"#;

const A_THEN_B_STRICT: &str = r#"
id: a-then-b-strict
sequence:
  contiguity: strict
  steps:
    - {name: a, match: type == "a"}
    - {name: b, match: type == "b"}
"#;

const PAYMENT_AFTER_ORDER: &str = r#"
id: unpaid-order
absence:
  after: type == "order"
  expect: type == "payment"
  within: 60s
"#;

const BRUTE_FORCE: &str = r#"
id: brute-force-login
severity: high
description: Three or more failed logins, then a success, within 5 minutes
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

// --- late events ------------------------------------------------------------------

#[test]
fn an_event_older_than_the_watermark_is_late_reported_and_not_evaluated() {
    let mut w = World::new(&[A_THEN_B]);
    w.send("noise", 100.0);
    let before = w.state(KEY).clone();
    let late = w.outcome(KEY, "a", 99.999, json!({}));
    assert!(late.late);
    assert_eq!(
        late.ordinal, None,
        "a late event gets no position in the stream"
    );
    assert!(late.alerts.is_empty());
    assert_eq!(w.state(KEY), &before, "nothing about the entity changed");
    assert!(
        w.send("b", 101.0).is_empty(),
        "the late a was not evaluated"
    );
}

#[test]
fn an_event_at_exactly_the_watermark_is_not_late() {
    let mut w = World::new(&[A_THEN_B]);
    w.send("noise", 100.0);
    let outcome = w.outcome(KEY, "a", 100.0, json!({}));
    assert!(!outcome.late);
    assert_eq!(outcome.ordinal, Some(2));
    assert_eq!(w.send("b", 101.0).len(), 1);
}

#[test]
fn the_watermark_is_the_clock_minus_allowed_lateness() {
    let mut w = World::with_lateness(&[A_THEN_B], 10);
    w.send("noise", 100.0);
    assert!(
        !w.outcome(KEY, "a", 90.0, json!({})).late,
        "10 s behind the clock is accepted"
    );
    assert!(w.outcome(KEY, "a", 89.999, json!({})).late);
    let view = w.engine.describe(w.states.get(KEY).expect("state"));
    assert_eq!(view.clock, Some(at(100.0)));
    assert_eq!(view.watermark, Some(at(90.0)));
}

#[test]
fn each_entity_has_its_own_clock_so_one_fast_entity_makes_no_other_event_late() {
    let mut w = World::new(&[A_THEN_B]);
    w.outcome("fast", "noise", 10_000.0, json!({}));
    assert!(!w.outcome("slow", "a", 0.0, json!({})).late);
    assert_eq!(w.outcome("slow", "b", 1.0, json!({})).alerts.len(), 1);
}

// --- timers -----------------------------------------------------------------------

#[test]
fn timers_due_at_an_events_time_fire_before_the_event_is_evaluated() {
    let mut w = World::new(&[PAYMENT_AFTER_ORDER, A_THEN_B]);
    w.send("order", 0.0);
    w.send("a", 50.0);
    let alerts = w.send("b", 60.0);
    let rules: Vec<&str> = alerts.iter().map(|a| &*a.rule).collect();
    assert_eq!(
        rules,
        vec!["unpaid-order", "a-then-b"],
        "the timer's alert comes first"
    );
}

#[test]
fn timers_due_before_an_event_fire_when_it_arrives_with_their_own_time() {
    let mut w = World::new(&[PAYMENT_AFTER_ORDER]);
    w.send("order", 0.0);
    let alert = only(w.send("noise", 500.0));
    assert_eq!(secs(alert.time), 60.0);
}

#[test]
fn a_deadline_fires_when_the_watermark_not_the_clock_reaches_it() {
    let mut w = World::with_lateness(&[PAYMENT_AFTER_ORDER], 30);
    w.send("order", 0.0);
    assert_eq!(
        w.state(KEY).next_deadline(),
        Some(at(30.0)),
        "the order waits for the watermark to pass it"
    );
    assert!(w.advance(30.0).is_empty());
    assert_eq!(
        w.state(KEY).next_deadline(),
        Some(at(90.0)),
        "the clock must run the lateness further"
    );
    assert!(w.advance(89.999).is_empty());
    assert_eq!(times(&w.advance(90.0)), vec![60.0]);
}

#[test]
fn advance_to_never_moves_the_clock_back() {
    let mut w = World::new(&[PAYMENT_AFTER_ORDER]);
    w.send("order", 0.0);
    w.advance(30.0);
    assert!(w.advance(10.0).is_empty());
    assert_eq!(w.state(KEY).clock, Some(at(30.0)));
    assert!(w.outcome(KEY, "payment", 20.0, json!({})).late);
}

#[test]
fn one_big_advance_gives_the_same_alerts_as_many_small_ones() {
    let rules = [PAYMENT_AFTER_ORDER, A_THEN_B];
    let feed = |w: &mut World| {
        w.send("order", 0.0);
        w.send("order", 100.0);
        w.send("a", 120.0);
        w.send("order", 130.0);
    };
    let mut big = World::new(&rules);
    feed(&mut big);
    let at_once = big.advance(1000.0);

    let mut small = World::new(&rules);
    feed(&mut small);
    let mut stepwise = Vec::new();
    for t in (131..=1000).step_by(7) {
        stepwise.extend(small.advance(t as f64));
    }
    stepwise.extend(small.advance(1000.0));
    assert_eq!(times(&at_once), vec![160.0, 190.0]);
    assert_eq!(at_once, stepwise);
}

#[test]
fn alerts_fired_by_one_advance_are_in_time_order_across_rules() {
    let heartbeat = r#"
id: heartbeat
absence: {expect: type == "order", within: 75s}
"#;
    let mut w = World::new(&[PAYMENT_AFTER_ORDER, heartbeat]);
    w.send("order", 0.0);
    w.send("order", 10.0);
    let alerts = w.advance(1000.0);
    let fired: Vec<(&str, f64)> = alerts.iter().map(|a| (&*a.rule, secs(a.time))).collect();
    assert_eq!(
        fired,
        vec![
            ("unpaid-order", 60.0),
            ("unpaid-order", 70.0),
            ("heartbeat", 85.0)
        ]
    );
}

// --- when -------------------------------------------------------------------------

#[test]
fn when_filters_events_before_the_pattern() {
    let rule = r#"
id: big-a-then-b
when: data.amount > 100
sequence:
  steps:
    - {name: a, match: type == "a"}
    - {name: b, match: type == "b"}
"#;
    let mut w = World::new(&[rule]);
    w.send_data("a", 0.0, json!({"amount": 5}));
    assert!(w.send_data("b", 1.0, json!({"amount": 500})).is_empty());
    w.send_data("a", 2.0, json!({"amount": 500}));
    assert_eq!(w.send_data("b", 3.0, json!({"amount": 500})).len(), 1);
}

#[test]
fn events_rejected_by_when_do_not_break_strict_contiguity() {
    let with_when = A_THEN_B_STRICT.replace("sequence:", "when: type != \"noise\"\nsequence:");
    let mut w = World::new(&[&with_when]);
    w.send("a", 0.0);
    w.send("noise", 1.0);
    assert_eq!(
        w.send("b", 2.0).len(),
        1,
        "the noise is invisible to the rule"
    );

    let mut w = World::new(&[A_THEN_B_STRICT]);
    w.send("a", 0.0);
    w.send("noise", 1.0);
    assert!(
        w.send("b", 2.0).is_empty(),
        "without `when` the noise breaks the run"
    );
}

#[test]
fn when_can_read_the_entitys_static_attributes() {
    let rule = r#"
id: vip-transfer
when: entity.tier == "vip"
threshold:
  match: type == "transfer"
  window: {sliding: 1h}
  at_least: 1
"#;
    let mut w = World::new(&[rule]);
    w.state("gold-1")
        .attributes
        .insert("tier".into(), json!("gold"));
    w.state("vip-1")
        .attributes
        .insert("tier".into(), json!("vip"));
    assert!(w
        .outcome("gold-1", "transfer", 0.0, json!({}))
        .alerts
        .is_empty());
    assert_eq!(
        w.outcome("vip-1", "transfer", 0.0, json!({})).alerts.len(),
        1
    );
}

// --- partition_by -----------------------------------------------------------------

const MERCHANT_DECLINES: &str = r#"
id: merchant-declines
partition_by: data.merchant
threshold:
  match: type == "declined"
  window: {sliding: 10m}
  at_least: 2
"#;

const ACCOUNT_DECLINES: &str = r#"
id: account-declines
threshold:
  match: type == "declined"
  window: {sliding: 10m}
  at_least: 2
"#;

#[test]
fn routes_name_the_events_own_key_then_its_partition_keys() {
    let w = World::new(&[MERCHANT_DECLINES, ACCOUNT_DECLINES]);
    let e = event("acct-1", "declined", 0.0, json!({"merchant": "m-9"}));
    assert_eq!(
        w.engine.routes(&e),
        vec!["acct-1".to_owned(), "m-9".to_owned()]
    );
    let same = event("m-9", "declined", 0.0, json!({"merchant": "m-9"}));
    assert_eq!(
        w.engine.routes(&same),
        vec!["m-9".to_owned()],
        "each key once"
    );
    let unrelated = event("acct-1", "login", 0.0, json!({"merchant": "m-9"}));
    assert_eq!(w.engine.routes(&unrelated), vec!["acct-1".to_owned()]);
    let no_merchant = event("acct-1", "declined", 0.0, json!({}));
    assert_eq!(w.engine.routes(&no_merchant), vec!["acct-1".to_owned()]);
}

#[test]
fn partition_by_sees_the_event_only_not_the_entitys_attributes() {
    let rule = r#"
id: per-region
partition_by: entity.region
threshold:
  match: type == "declined"
  window: {sliding: 10m}
  at_least: 1
"#;
    let mut w = World::new(&[rule]);
    w.state("acct-1")
        .attributes
        .insert("region".into(), json!("eu"));
    let e = event("acct-1", "declined", 0.0, json!({}));
    assert_eq!(w.engine.routes(&e), vec!["acct-1".to_owned()]);
    assert!(w.route(&e).is_empty());
}

#[test]
fn one_event_feeds_its_own_key_and_the_partition_key() {
    let mut w = World::new(&[MERCHANT_DECLINES, ACCOUNT_DECLINES]);
    let mut alerts = Vec::new();
    alerts.extend(w.route(&event(
        "acct-1",
        "declined",
        0.0,
        json!({"merchant": "m-9"}),
    )));
    alerts.extend(w.route(&event(
        "acct-2",
        "declined",
        1.0,
        json!({"merchant": "m-9"}),
    )));
    let fired: Vec<(&str, &str)> = alerts.iter().map(|a| (&*a.rule, a.key.as_str())).collect();
    assert_eq!(
        fired,
        vec![("merchant-declines", "m-9")],
        "two accounts, one merchant"
    );

    let alerts = w.route(&event(
        "acct-1",
        "declined",
        2.0,
        json!({"merchant": "m-7"}),
    ));
    let fired: Vec<(&str, &str)> = alerts.iter().map(|a| (&*a.rule, a.key.as_str())).collect();
    assert_eq!(
        fired,
        vec![("account-declines", "acct-1")],
        "two merchants, one account"
    );
}

#[test]
fn a_partitioned_rule_runs_only_under_its_partition_key() {
    let mut w = World::new(&[MERCHANT_DECLINES]);
    w.outcome("acct-1", "declined", 0.0, json!({"merchant": "m-9"}));
    let outcome = w.outcome("acct-1", "declined", 1.0, json!({"merchant": "m-9"}));
    assert!(outcome.alerts.is_empty(), "not under the account's own key");
    assert!(w.state("acct-1").rules.is_empty());
}

// --- limits -----------------------------------------------------------------------

#[test]
fn runs_beyond_the_partial_match_cap_are_not_started_and_are_counted() {
    let config = EngineConfig {
        max_partial_matches: 2,
        ..EngineConfig::default()
    };
    let mut w = World::with_config(&[A_THEN_B], config);
    assert_eq!(
        w.outcome(KEY, "a", 0.0, json!({})).dropped.partial_matches,
        0
    );
    assert_eq!(
        w.outcome(KEY, "a", 1.0, json!({})).dropped.partial_matches,
        0
    );
    assert_eq!(
        w.outcome(KEY, "a", 2.0, json!({})).dropped.partial_matches,
        1
    );
    assert_eq!(
        w.outcome(KEY, "a", 3.0, json!({})).dropped.partial_matches,
        1
    );
    assert_eq!(w.state(KEY).dropped.partial_matches, 2);
    assert_eq!(w.state(KEY).live_items(), 2);
    let alert = only(w.send("b", 4.0));
    assert_eq!(
        event_times(&alert),
        vec![0.0, 4.0],
        "the runs kept are the oldest"
    );
}

#[test]
fn branches_beyond_the_partial_match_cap_are_not_taken_and_are_counted_under_any_contiguity() {
    let rule = A_THEN_B.replace("within: 5m", "within: 5m\n  contiguity: any\n  skip: all");
    let rule = rule.replace(
        "name: b, match: type == \"b\"",
        "name: b, match: type == \"b\", times: {min: 2}",
    );
    let config = EngineConfig {
        max_partial_matches: 2,
        ..EngineConfig::default()
    };
    let mut w = World::with_config(&[&rule], config);
    w.send("a", 0.0);
    assert_eq!(
        w.outcome(KEY, "b", 1.0, json!({})).dropped.partial_matches,
        0
    );
    // The branch of the first run that completes is a match, never refused
    // by the cap (issue 12); the new partial branch is.
    let outcome = w.outcome(KEY, "b", 2.0, json!({}));
    assert_eq!(outcome.dropped.partial_matches, 1);
    assert_eq!(times(&outcome.alerts), vec![2.0]);
    assert_eq!(w.state(KEY).live_items(), 2, "never more runs than the cap");
}

#[test]
fn an_alert_lists_at_most_max_explained_events_keeping_the_start_and_the_last() {
    let config = EngineConfig {
        max_explained_events: 3,
        ..EngineConfig::default()
    };
    let mut w = World::with_config(&[BRUTE_FORCE], config);
    for t in 0..6 {
        w.send("login_failed", t as f64);
    }
    let alert = only(w.send("login_success", 6.0));
    assert_eq!(event_times(&alert), vec![0.0, 1.0, 6.0]);
    assert_eq!(value(&alert, "events_omitted"), &json!(4));
    assert_eq!(value(&alert, "failures.count"), &json!(6));
}

// --- alerts: ids, explanation, message ------------------------------------------

fn brute_force_alert(version: u64, key: &str) -> cepheus::engine::Alert {
    let mut w = World::of(
        vec![rule_version(BRUTE_FORCE, version)],
        EngineConfig::default(),
    );
    for t in [0.0, 1.0, 2.0, 3.0] {
        w.outcome(key, "login_failed", t, json!({"ip": "10.0.0.7"}));
    }
    only(
        w.outcome(key, "login_success", 4.0, json!({"ip": "10.0.0.8"}))
            .alerts,
    )
}

#[test]
fn alert_ids_are_deterministic() {
    let first = brute_force_alert(1, "acct-42");
    let again = brute_force_alert(1, "acct-42");
    assert_eq!(first.id, again.id);
    assert_eq!(
        first, again,
        "the whole alert is a function of rule and stream"
    );
    assert_eq!(first.id.len(), 32);
}

#[test]
fn alert_ids_differ_across_rule_versions_and_keys() {
    let v1 = brute_force_alert(1, "acct-42");
    let v2 = brute_force_alert(2, "acct-42");
    let other_key = brute_force_alert(1, "acct-43");
    assert_eq!(v2.rule_version, 2);
    assert_ne!(v1.id, v2.id);
    assert_ne!(v1.id, other_key.id);
}

#[test]
fn alert_ids_differ_between_matches_of_one_key() {
    let mut w = World::new(&[A_THEN_B]);
    let first = only({
        w.send("a", 0.0);
        w.send("b", 1.0)
    });
    let second = only({
        w.send("a", 2.0);
        w.send("b", 3.0)
    });
    assert_ne!(first.id, second.id);
}

#[test]
fn an_alert_explains_the_match_with_its_events_and_values() {
    let alert = brute_force_alert(1, "acct-42");
    assert_eq!(&*alert.rule, "brute-force-login");
    assert_eq!(alert.key, "acct-42");
    assert_eq!(alert.severity.as_str(), "high");
    assert_eq!(secs(alert.time), 4.0);
    let events: Vec<(&str, u64)> = alert
        .events
        .iter()
        .map(|e| (&*e.event_type, e.ordinal))
        .collect();
    assert_eq!(
        events,
        vec![
            ("login_failed", 1),
            ("login_failed", 2),
            ("login_failed", 3),
            ("login_failed", 4),
            ("login_success", 5)
        ]
    );
    assert_eq!(
        alert.values,
        json!({"failures.count": 4, "success.count": 1})
            .as_object()
            .cloned()
            .expect("object")
    );
}

#[test]
fn a_message_template_renders_with_the_bindings() {
    let alert = brute_force_alert(1, "acct-42");
    assert_eq!(
        alert.message,
        "acct-42: 4 failed logins, then a success from 10.0.0.8"
    );
}

#[test]
fn a_template_placeholder_that_cannot_be_evaluated_renders_no_value() {
    let rule = BRUTE_FORCE.replace("{{success.data.ip}}", "{{success.data.port}}");
    let mut w = World::new(&[&rule]);
    for t in 0..3 {
        w.send("login_failed", t as f64);
    }
    let alert = only(w.send("login_success", 3.0));
    assert_eq!(
        alert.message,
        "k: 3 failed logins, then a success from <no value>"
    );
}

#[test]
fn without_a_template_the_message_is_generated_from_the_description() {
    let rule = BRUTE_FORCE.replace(
        "alert:\n  message: \"{{key}}: {{failures.count}} failed logins, then a success from {{success.data.ip}}\"\n",
        "",
    );
    let mut w = World::new(&[&rule]);
    for t in 0..3 {
        w.send("login_failed", t as f64);
    }
    let alert = only(w.send("login_success", 3.0));
    assert_eq!(
        alert.message,
        "brute-force-login: Three or more failed logins, then a success, within 5 minutes (k)"
    );
}

// --- rule set changes -------------------------------------------------------------

#[test]
fn a_replaced_rule_starts_with_empty_per_key_state() {
    let mut w = World::of(vec![rule_version(A_THEN_B, 1)], EngineConfig::default());
    w.send("a", 0.0);
    w.replace_rules(vec![rule_version(A_THEN_B, 2)]);
    assert!(w.send("b", 1.0).is_empty(), "the v1 partial match is gone");
    w.send("a", 2.0);
    assert_eq!(only(w.send("b", 3.0)).rule_version, 2);
}

#[test]
fn an_unchanged_rule_keeps_its_state_when_other_rules_change() {
    let mut w = World::new(&[A_THEN_B]);
    w.send("a", 0.0);
    w.replace_rules(vec![rule(PAYMENT_AFTER_ORDER), rule(A_THEN_B)]);
    assert_eq!(w.send("b", 1.0).len(), 1);
}

#[test]
fn a_disabled_rule_keeps_no_state_and_fires_nothing() {
    let disabled = A_THEN_B.replace("sequence:", "enabled: false\nsequence:");
    let mut w = World::new(&[&disabled]);
    w.send("a", 0.0);
    assert!(w.send("b", 1.0).is_empty());
    assert!(w.state(KEY).rules.is_empty());
}

#[test]
fn describe_shows_partial_matches_and_pending_deadlines() {
    let mut w = World::new(&[A_THEN_B, PAYMENT_AFTER_ORDER]);
    w.send("a", 0.0);
    w.send("order", 1.0);
    let view = w.engine.describe(w.states.get(KEY).expect("state"));
    assert_eq!(view.events_seen, 2);
    assert_eq!(view.next_deadline, Some(at(61.0)));
    let rules: Vec<&str> = view.rules.iter().map(|r| r.rule.as_str()).collect();
    assert_eq!(rules, vec!["a-then-b", "unpaid-order"]);
    assert_eq!(
        view.rules[0].state["partial_matches"][0]["counts"],
        json!([1, 0])
    );
    assert_eq!(
        view.rules[1].state["pending"][0]["deadline"],
        json!("2026-01-01T00:01:01.000Z")
    );
}

#[test]
fn state_survives_a_snapshot_and_restore_without_changing_the_alerts() {
    let mut live = World::new(&[BRUTE_FORCE, PAYMENT_AFTER_ORDER]);
    live.send("login_failed", 0.0);
    live.send("login_failed", 1.0);
    live.send("order", 2.0);
    let snapshot = serde_json::to_string(live.state(KEY)).expect("serializable");
    let mut restored = World::new(&[BRUTE_FORCE, PAYMENT_AFTER_ORDER]);
    restored.states.insert(
        KEY.to_owned(),
        serde_json::from_str(&snapshot).expect("deserializable"),
    );
    for w in [&mut live, &mut restored] {
        w.send("login_failed", 3.0);
    }
    let a = live.send_data("login_success", 4.0, json!({"ip": "1.2.3.4"}));
    let b = restored.send_data("login_success", 4.0, json!({"ip": "1.2.3.4"}));
    assert_eq!(a, b);
    assert_eq!(live.advance(100.0), restored.advance(100.0));
}

// ---- per-rule lateness (`lateness: {allowed, late}`) ------------------------

#[test]
fn a_rule_with_more_allowed_lateness_evaluates_events_the_others_find_late() {
    let strict = "id: strict\nsequence:\n  steps:\n    - match: type == \"x\"\n";
    let patient =
        "id: patient\nlateness: {allowed: 10s}\nsequence:\n  steps:\n    - match: type == \"x\"\n";
    let mut world = World::new(&[strict, patient]);
    let fired = world.send("x", 100.0);
    assert_eq!(fired.len(), 1, "`patient` waits for its watermark");
    assert_eq!(&*fired[0].rule, "strict");
    let outcome = world.outcome("k", "x", 95.0, json!({}));
    assert!(outcome.late, "late for `strict`, which dead-letters it");
    assert!(outcome.alerts.is_empty());
    let late_for: Vec<&str> = outcome.late_for.iter().map(|(r, _)| &**r).collect();
    assert_eq!(late_for, ["strict"]);
    // 11 s behind is late for both.
    let outcome = world.outcome("k", "x", 89.0, json!({}));
    assert!(outcome.late && outcome.alerts.is_empty());
    // `patient` evaluates both of its events, in time order.
    let fired = world.advance(110.0);
    assert_eq!(times(&fired), vec![95.0, 100.0]);
    assert!(fired.iter().all(|a| &*a.rule == "patient"));
}

#[test]
fn a_rule_that_evaluates_late_events_still_counts_them() {
    let eager =
        "id: eager\nlateness: {late: evaluate}\nsequence:\n  steps:\n    - match: type == \"x\"\n";
    let mut world = World::new(&[eager]);
    world.send("x", 100.0);
    let outcome = world.outcome("k", "x", 50.0, json!({}));
    assert!(!outcome.late, "evaluated, so not a dead letter");
    assert_eq!(outcome.alerts.len(), 1);
    assert_eq!(outcome.late_for.len(), 1);
    assert_eq!(
        outcome.late_for[0].1,
        cepheus::engine::LateTreatment::Evaluate
    );
}

#[test]
fn a_rules_timers_wait_for_its_own_watermark() {
    // Heartbeat loss within 30 s; the patient rule allows 10 s of lateness,
    // so its watermark (clock − 10 s) reaches the deadline 10 s later.
    let quick = "id: quick\nabsence:\n  expect: type == \"hb\"\n  within: 30s\n";
    let patient = "id: patient\nlateness: {allowed: 10s}\nabsence:\n  expect: type == \"hb\"\n  within: 30s\n";
    let mut world = World::new(&[quick, patient]);
    world.send("hb", 0.0);
    let at_30: Vec<String> = world
        .advance(30.0)
        .iter()
        .map(|a| a.rule.to_string())
        .collect();
    assert_eq!(at_30, ["quick"]);
    assert!(world.advance(39.999).is_empty());
    let at_40 = only(world.advance(40.0));
    assert_eq!(&*at_40.rule, "patient");
    assert_eq!(
        secs(at_40.time),
        30.0,
        "the alert's time is still the deadline"
    );
}
