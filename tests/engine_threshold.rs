//! Thresholds and windows, one test per semantic statement of DESIGN §3 and
//! of the module docs of `src/engine/threshold.rs`, `window.rs` and
//! `aggregate.rs`. Times are seconds after `T0` (itself a multiple of every
//! window size used here since the Unix epoch).

mod engine_support;

use cepheus::engine::EngineConfig;
use engine_support::*;
use serde_json::json;

/// A threshold over events of type `x`: `window` and `condition` are flow
/// mappings' bodies, `aggregate` as written in a rule.
fn threshold(window: &str, aggregate: &str, condition: &str) -> String {
    format!(
        "id: t
threshold:
  match: type == \"x\"
  window: {{{window}}}
  aggregate: {aggregate}
  {condition}
alert:
  message: \"{{{{value}}}} over [{{{{window_start}}}}, {{{{window_end}}}}), {{{{count}}}} events, last v={{{{last.data.v}}}}\"
"
    )
}

fn sliding_count_at_least_3() -> String {
    threshold("sliding: 1m", "count", "at_least: 3")
}

// --- sliding windows ------------------------------------------------------------

#[test]
fn a_sliding_window_fires_when_the_condition_becomes_true() {
    let mut w = World::new(&[&sliding_count_at_least_3()]);
    assert!(w.send("x", 0.0).is_empty());
    assert!(w.send("x", 10.0).is_empty());
    let alert = only(w.send_data("x", 20.0, v(7.0)));
    assert_eq!(secs(alert.time), 20.0, "at the event that made it true");
    assert_eq!(value(&alert, "value"), &json!(3));
    assert_eq!(event_times(&alert), vec![0.0, 10.0, 20.0]);
    assert_eq!(
        alert.message,
        "3 over [2025-12-31T23:59:20.000Z, 2026-01-01T00:00:20.000Z), 3 events, last v=7"
    );
}

#[test]
fn a_sliding_window_is_edge_triggered_it_does_not_fire_again_while_the_condition_holds() {
    let mut w = World::new(&[&sliding_count_at_least_3()]);
    let mut alerts = Vec::new();
    for t in 0..10 {
        alerts.extend(w.send("x", t as f64));
    }
    assert_eq!(times(&alerts), vec![2.0]);
}

#[test]
fn a_sliding_window_re_arms_when_the_condition_becomes_false() {
    let mut w = World::new(&[&sliding_count_at_least_3()]);
    let mut alerts = Vec::new();
    for t in [0.0, 1.0, 2.0] {
        alerts.extend(w.send("x", t));
    }
    // By 100 every entry has left: false again, and re-armed.
    assert!(w.advance(100.0).is_empty());
    for t in [100.0, 101.0, 102.0] {
        alerts.extend(w.send("x", t));
    }
    assert_eq!(times(&alerts), vec![2.0, 102.0]);
}

#[test]
fn a_sliding_entry_leaves_when_the_watermark_reaches_its_time_plus_size() {
    let rule = threshold("sliding: 1m", "count", "at_least: 2");
    let mut w = World::new(&[&rule]);
    w.send("x", 0.0);
    assert!(
        w.send("x", 60.0).is_empty(),
        "the window after 60 is (0, 60]"
    );

    let mut w = World::new(&[&rule]);
    w.send("x", 0.0);
    assert_eq!(w.send("x", 59.999).len(), 1);
}

#[test]
fn a_sliding_window_is_evaluated_also_when_entries_leave_once_the_watermark_passes_the_instant() {
    let rule = threshold("sliding: 1m", "avg(data.v)", "above: 50");
    let mut w = World::new(&[&rule]);
    assert!(w.send_data("x", 0.0, v(10.0)).is_empty());
    assert!(w.send_data("x", 30.0, v(80.0)).is_empty(), "avg 45");
    assert_eq!(w.state(KEY).next_deadline(), Some(at(60.0)));
    assert!(
        w.advance(60.0).is_empty(),
        "another event at 60 may still come"
    );
    assert_eq!(w.state(KEY).next_deadline(), Some(at(60.001)));
    let alert = only(w.advance(60.001));
    assert_eq!(
        secs(alert.time),
        60.0,
        "when the 10 left, the average became 80"
    );
    assert_eq!(value(&alert, "value"), &json!(80));
    assert_eq!(event_times(&alert), vec![30.0]);
}

#[test]
fn an_entry_leaving_at_the_instant_another_enters_is_one_change_so_a_steady_stream_fires_once() {
    // One event every 10 s: every window (t - 1m, t] from 50 s on holds 6.
    let rule = threshold("sliding: 1m", "count", "at_least: 6");
    let mut w = World::new(&[&rule]);
    let mut alerts = Vec::new();
    for i in 0..=30 {
        alerts.extend(w.send("x", 10.0 * i as f64));
    }
    assert_eq!(times(&alerts), vec![50.0]);

    // The same in the other direction: `below` does not fire as each entry
    // leaves and the next enters.
    let rule = threshold("sliding: 1m", "count", "below: 6");
    let mut w = World::new(&[&rule]);
    let mut alerts = Vec::new();
    for i in 0..=30 {
        alerts.extend(w.send("x", 10.0 * i as f64));
    }
    assert_eq!(
        times(&alerts),
        vec![0.0],
        "count 1 at 0 is below 6; from 50 s on it is 6"
    );
}

#[test]
fn an_event_at_an_instant_the_watermark_has_only_reached_is_part_of_it() {
    let rule = threshold("sliding: 1m", "count", "at_least: 2");
    let mut w = World::new(&[&rule]);
    w.send("x", 0.0);
    assert_eq!(w.send("x", 30.0).len(), 1);
    assert!(w.advance(60.0).is_empty());
    assert!(
        w.send("x", 60.0).is_empty(),
        "(0, 60] holds 30 and 60: the condition never stopped holding"
    );
}

#[test]
fn on_an_empty_sliding_window_avg_min_and_max_have_no_value() {
    let rule = threshold("sliding: 1m", "max(data.v)", "below: 5");
    let mut w = World::new(&[&rule]);
    assert!(w.send_data("x", 0.0, v(10.0)).is_empty());
    assert!(
        w.advance(600.0).is_empty(),
        "the empty window's max is not below 5"
    );
    assert_eq!(w.send_data("x", 700.0, v(1.0)).len(), 1);
}

#[test]
fn on_an_empty_sliding_window_count_is_zero_so_below_fires_when_the_last_entry_leaves() {
    let rule = threshold("sliding: 1m", "count", "below: 1");
    let mut w = World::new(&[&rule]);
    assert!(w.send("x", 0.0).is_empty());
    assert!(w.send("x", 30.0).is_empty());
    assert!(w.advance(90.0).is_empty());
    let alert = only(w.advance(90.001));
    assert_eq!(secs(alert.time), 90.0);
    assert_eq!(value(&alert, "value"), &json!(0));
    assert!(w.advance(3600.0).is_empty(), "edge-triggered: once");
}

#[test]
fn sliding_entries_beyond_the_limit_are_dropped_oldest_first_and_counted() {
    let config = EngineConfig {
        max_window_entries: 3,
        ..EngineConfig::default()
    };
    let rule = threshold("sliding: 1h", "count", "above: 3");
    let mut w = World::with_config(&[&rule], config);
    let mut alerts = Vec::new();
    for t in 0..5 {
        let outcome = w.outcome(KEY, "x", t as f64, v(1.0));
        assert_eq!(outcome.dropped.window_entries, u64::from(t >= 3));
        alerts.extend(outcome.alerts);
    }
    assert!(alerts.is_empty(), "the window never holds more than 3");
    assert_eq!(w.state(KEY).dropped.window_entries, 2);
}

// --- tumbling and hopping windows -----------------------------------------------

#[test]
fn a_tumbling_window_fires_once_at_close_when_its_aggregate_qualifies() {
    let rule = threshold("tumbling: 1m", "count", "at_least: 2");
    let mut w = World::new(&[&rule]);
    let mut alerts = Vec::new();
    for t in [5.0, 10.0, 20.0] {
        alerts.extend(w.send_data("x", t, v(t)));
    }
    assert!(alerts.is_empty(), "not before the window closes");
    assert_eq!(w.state(KEY).next_deadline(), Some(at(60.0)));
    assert!(w.advance(59.999).is_empty());
    let alert = only(w.advance(60.0));
    assert_eq!(
        secs(alert.time),
        60.0,
        "the alert's time is the window's end"
    );
    assert_eq!(value(&alert, "value"), &json!(3));
    assert_eq!(
        value(&alert, "window_start"),
        &json!("2026-01-01T00:00:00.000Z")
    );
    assert_eq!(
        value(&alert, "window_end"),
        &json!("2026-01-01T00:01:00.000Z")
    );
    assert_eq!(
        alert.message,
        "3 over [2026-01-01T00:00:00.000Z, 2026-01-01T00:01:00.000Z), 3 events, last v=20"
    );
    assert!(w.advance(3600.0).is_empty());
}

#[test]
fn tumbling_windows_are_aligned_to_the_epoch_not_to_the_first_event() {
    let rule = threshold("tumbling: 1m", "count", "at_least: 2");
    let mut w = World::new(&[&rule]);
    w.send("x", 50.0);
    w.send("x", 70.0);
    assert!(
        w.advance(3600.0).is_empty(),
        "[0, 60) and [60, 120) each hold one"
    );
}

#[test]
fn a_window_includes_its_start_and_an_event_at_exactly_start_plus_size_belongs_to_the_next() {
    let rule = threshold("tumbling: 1m", "count", "at_least: 2");
    let mut w = World::new(&[&rule]);
    let mut alerts = Vec::new();
    for t in [0.0, 59.999, 60.0, 119.999] {
        alerts.extend(w.send("x", t));
    }
    assert_eq!(
        times(&alerts),
        vec![60.0],
        "the event at 60 closes [0, 60) first"
    );
    alerts.extend(w.advance(3600.0));
    assert_eq!(times(&alerts), vec![60.0, 120.0]);
    assert_eq!(event_times(&alerts[0]), vec![0.0, 59.999]);
    assert_eq!(event_times(&alerts[1]), vec![60.0, 119.999]);
}

#[test]
fn each_qualifying_window_fires_once_and_the_others_never() {
    let rule = threshold("tumbling: 1m", "sum(data.v)", "above: 10");
    let mut w = World::new(&[&rule]);
    let mut alerts = w.send_data("x", 1.0, v(11.0));
    alerts.extend(w.send_data("x", 61.0, v(2.0)));
    alerts.extend(w.send_data("x", 121.0, v(20.0)));
    alerts.extend(w.advance(3600.0));
    assert_eq!(times(&alerts), vec![60.0, 180.0]);
}

#[test]
fn windows_with_no_events_do_not_exist_and_never_fire() {
    let rule = threshold("tumbling: 1m", "count", "below: 1");
    let mut w = World::new(&[&rule]);
    w.send("other", 0.0);
    assert!(w.advance(3600.0).is_empty());
}

#[test]
fn a_hopping_event_enters_every_window_containing_it_aligned_to_multiples_of_the_advance() {
    let rule = threshold("hopping: {size: 10m, advance: 5m}", "count", "at_least: 1");
    let mut w = World::new(&[&rule]);
    w.send("x", 420.0); // 7 min: in [0, 10m) and [5m, 15m)
    let alerts = w.advance(3600.0);
    assert_eq!(times(&alerts), vec![600.0, 900.0]);
    assert_eq!(
        value(&alerts[0], "window_start"),
        &json!("2026-01-01T00:00:00.000Z")
    );
    assert_eq!(
        value(&alerts[1], "window_start"),
        &json!("2026-01-01T00:05:00.000Z")
    );
    assert_ne!(alerts[0].id, alerts[1].id);
}

#[test]
fn hopping_windows_fire_once_per_qualifying_window() {
    let rule = threshold("hopping: {size: 10m, advance: 5m}", "count", "at_least: 2");
    let mut w = World::new(&[&rule]);
    w.send("x", 240.0); // [-5m, 5m) and [0, 10m)
    w.send("x", 360.0); // [0, 10m) and [5m, 15m)
    let alert = only(w.advance(3600.0));
    assert_eq!(secs(alert.time), 600.0);
    assert_eq!(
        value(&alert, "window_start"),
        &json!("2026-01-01T00:00:00.000Z")
    );
}

// --- session windows ------------------------------------------------------------

fn session_count_at_least_2() -> String {
    threshold("session: {gap: 30s}", "count", "at_least: 2")
}

#[test]
fn an_event_exactly_gap_after_the_previous_joins_its_session() {
    let mut w = World::new(&[&session_count_at_least_2()]);
    w.send("x", 0.0);
    w.send("x", 30.0);
    let alert = only(w.advance(3600.0));
    assert_eq!(value(&alert, "count"), &json!(2));
    assert_eq!(secs(alert.time), 60.0, "the alert's time is last + gap");
}

#[test]
fn an_event_a_bit_more_than_gap_after_the_previous_starts_a_new_session() {
    let mut w = World::new(&[&session_count_at_least_2()]);
    w.send("x", 0.0);
    w.send("x", 30.001);
    assert!(w.advance(3600.0).is_empty());
}

#[test]
fn a_session_closes_when_the_watermark_passes_last_plus_gap() {
    let mut w = World::new(&[&session_count_at_least_2()]);
    w.send("x", 0.0);
    w.send("x", 10.0);
    assert!(
        w.advance(40.0).is_empty(),
        "at last + gap an event could still join"
    );
    assert_eq!(times(&w.advance(40.001)), vec![40.0]);
}

#[test]
fn a_session_does_not_close_while_events_keep_coming_within_the_gap() {
    let mut w = World::new(&[&session_count_at_least_2()]);
    let mut alerts = Vec::new();
    for i in 0..10 {
        alerts.extend(w.send("x", 25.0 * i as f64));
    }
    assert!(alerts.is_empty());
    let alert = only(w.advance(3600.0));
    assert_eq!(value(&alert, "count"), &json!(10));
    assert_eq!(
        value(&alert, "window_start"),
        &json!("2026-01-01T00:00:00.000Z")
    );
    assert_eq!(secs(alert.time), 225.0 + 30.0);
}

#[test]
fn an_event_within_gap_of_two_sessions_merges_them() {
    let mut w = World::with_lateness(&[&session_count_at_least_2()], 120);
    w.send("x", 0.0);
    w.send("x", 60.0);
    w.send("x", 30.0); // 30 s from both
    let alert = only(w.advance(3600.0));
    assert_eq!(value(&alert, "count"), &json!(3));
    assert_eq!(
        event_times(&alert),
        vec![0.0, 30.0, 60.0],
        "in event-time order"
    );
}

// --- comparisons ----------------------------------------------------------------

/// Whether a one-minute tumbling window with `n` events fires `condition`.
fn count_fires(n: usize, condition: &str) -> bool {
    let rule = threshold("tumbling: 1m", "count", condition);
    let mut w = World::new(&[&rule]);
    for i in 0..n {
        w.send("x", i as f64);
    }
    !w.advance(3600.0).is_empty()
}

#[test]
fn above_is_strict() {
    assert!(!count_fires(3, "above: 3"));
    assert!(count_fires(4, "above: 3"));
}

#[test]
fn at_least_is_inclusive() {
    assert!(!count_fires(2, "at_least: 3"));
    assert!(count_fires(3, "at_least: 3"));
}

#[test]
fn below_is_strict() {
    assert!(!count_fires(3, "below: 3"));
    assert!(count_fires(2, "below: 3"));
}

#[test]
fn at_most_is_inclusive() {
    assert!(!count_fires(4, "at_most: 3"));
    assert!(count_fires(3, "at_most: 3"));
}

// --- aggregates -------------------------------------------------------------------

/// The value a one-minute tumbling window reports for `aggregate` over
/// events with `data.v` = each of `values` (`None`: no `v` at all).
fn aggregate_of(aggregate: &str, values: &[Option<f64>]) -> serde_json::Value {
    let rule = threshold("tumbling: 1m", aggregate, "at_least: -1000000");
    let mut w = World::new(&[&rule]);
    for (i, x) in values.iter().enumerate() {
        let data = match x {
            Some(x) => v(*x),
            None => json!({"other": 1}),
        };
        w.send_data("x", i as f64, data);
    }
    value(&only(w.advance(3600.0)), "value").clone()
}

#[test]
fn count_counts_the_matching_events() {
    assert_eq!(
        aggregate_of("count", &[Some(1.0), None, Some(3.0)]),
        json!(3)
    );
}

#[test]
fn sum_adds_the_expression() {
    assert_eq!(
        aggregate_of("sum(data.v)", &[Some(1.5), Some(2.0), Some(-0.5)]),
        json!(3)
    );
}

#[test]
fn avg_is_the_mean_of_the_expression() {
    assert_eq!(
        aggregate_of("avg(data.v)", &[Some(1.0), Some(2.0), Some(6.0)]),
        json!(3)
    );
    assert_eq!(
        aggregate_of("avg(data.v)", &[Some(1.0), Some(2.0)]),
        json!(1.5)
    );
}

#[test]
fn min_is_the_smallest_value_of_the_expression() {
    assert_eq!(
        aggregate_of("min(data.v)", &[Some(4.0), Some(-2.0), Some(6.0)]),
        json!(-2)
    );
}

#[test]
fn max_is_the_largest_value_of_the_expression() {
    assert_eq!(
        aggregate_of("max(data.v)", &[Some(4.0), Some(-2.0), Some(6.5)]),
        json!(6.5)
    );
}

#[test]
fn distinct_counts_the_different_values_of_the_expression() {
    assert_eq!(
        aggregate_of(
            "distinct(data.v)",
            &[Some(1.0), Some(2.0), Some(1.0), Some(3.0), Some(2.0)]
        ),
        json!(3)
    );
}

#[test]
fn events_whose_expression_is_not_a_number_are_left_out_of_the_window() {
    assert_eq!(
        aggregate_of("avg(data.v)", &[Some(2.0), None, Some(4.0)]),
        json!(3),
        "the event without `v` does not count as 0"
    );
    let rule = threshold("tumbling: 1m", "sum(data.v)", "at_least: 0");
    let mut w = World::new(&[&rule]);
    w.send_data("x", 0.0, json!({"v": "twelve"}));
    assert!(w.advance(3600.0).is_empty(), "no window was opened");
}

#[test]
fn only_events_matching_the_threshold_predicate_enter_the_window() {
    let rule = threshold("tumbling: 1m", "count", "at_least: 2");
    let mut w = World::new(&[&rule]);
    w.send("x", 0.0);
    w.send("y", 1.0);
    assert!(w.advance(3600.0).is_empty());
}

// --- several aggregates and one condition ------------------------------------------

/// Transfers of type `x` with an amount `data.v`: `n` counts them, `total`
/// sums them, and the rule fires when both are large.
fn several(window: &str) -> String {
    format!(
        "id: t
threshold:
  match: type == \"x\"
  window: {{{window}}}
  aggregates:
    n: count
    total: sum(data.v)
    top: max(data.v)
  condition: n >= 3 && total > 100
alert:
  message: \"{{{{n}}}} transfers, {{{{total}}}} in all (largest {{{{top}}}}), {{{{count}}}} events\"
"
    )
}

#[test]
fn several_aggregates_fire_when_the_condition_over_all_of_them_holds() {
    let mut w = World::new(&[&several("sliding: 1m")]);
    assert!(w.send_data("x", 0.0, v(10.0)).is_empty());
    assert!(w.send_data("x", 1.0, v(20.0)).is_empty());
    // n = 3 but total = 40: not yet.
    assert!(w.send_data("x", 2.0, v(10.0)).is_empty());
    let alert = only(w.send_data("x", 3.0, v(90.0)));
    assert_eq!(secs(alert.time), 3.0);
    assert_eq!(value(&alert, "n"), &json!(4));
    assert_eq!(value(&alert, "total"), &json!(130));
    assert_eq!(value(&alert, "top"), &json!(90));
    assert_eq!(value(&alert, "count"), &json!(4));
    assert_eq!(value(&alert, "condition"), &json!("n >= 3 && total > 100"));
    assert!(alert.values.get("value").is_none(), "{:?}", alert.values);
    assert!(alert.values.get("limit").is_none(), "{:?}", alert.values);
    assert_eq!(
        alert.message,
        "4 transfers, 130 in all (largest 90), 4 events"
    );
}

#[test]
fn several_aggregates_are_edge_triggered_like_one() {
    let mut w = World::new(&[&several("sliding: 1m")]);
    let mut alerts = Vec::new();
    for t in 0..6 {
        alerts.extend(w.send_data("x", t as f64, v(50.0)));
    }
    assert_eq!(times(&alerts), vec![2.0]);
}

#[test]
fn an_event_without_a_value_for_some_aggregate_stays_out_of_the_window() {
    let mut w = World::new(&[&several("sliding: 1m")]);
    w.send_data("x", 0.0, v(60.0));
    w.send_data("x", 1.0, v(60.0));
    // No amount: `n` does not count it either, so n stays 2.
    assert!(w.send("x", 2.0).is_empty());
    let alert = only(w.send_data("x", 3.0, v(1.0)));
    assert_eq!(value(&alert, "n"), &json!(3));
}

#[test]
fn several_aggregates_work_for_every_window_kind() {
    let events = [(0.0, 50.0), (10.0, 40.0), (20.0, 30.0)];
    for (window, fires_at) in [
        ("tumbling: 1m", 60.0),
        ("hopping: {size: 1m, advance: 30s}", 30.0),
        ("session: {gap: 30s}", 50.0),
        ("count: 3", 20.0),
        ("sliding: 1m", 20.0),
    ] {
        let mut w = World::new(&[&several(window)]);
        let mut alerts = Vec::new();
        for (t, amount) in events {
            alerts.extend(w.send_data("x", t, v(amount)));
        }
        alerts.extend(w.advance(600.0));
        let first = alerts
            .first()
            .unwrap_or_else(|| panic!("{window}: no alert"));
        assert_eq!(secs(first.time), fires_at, "{window}");
        assert_eq!(value(first, "n"), &json!(3), "{window}");
        assert_eq!(value(first, "total"), &json!(120), "{window}");
        assert_eq!(value(first, "top"), &json!(50), "{window}");
    }
}

#[test]
fn a_condition_over_an_aggregate_without_a_value_is_false() {
    let rule = "id: t
threshold:
  match: type == \"x\"
  window: {tumbling: 1m}
  aggregates:
    n: count
    low: min(data.v)
  condition: n >= 1 && low < 5
";
    let mut w = World::new(&[rule]);
    // `min` of events with no number has no value: never fires.
    w.send("y", 0.0);
    assert!(w.advance(600.0).is_empty());
    w.send_data("x", 601.0, v(2.0));
    let alert = only(w.advance(1200.0));
    assert_eq!(value(&alert, "low"), &json!(2));
}
