//! The semantics promised in the module documentation, one test per promise.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::*;
use crate::time::Timestamp;

fn event(event_type: &str, data: Value) -> Event {
    Event {
        id: Some(format!("id-{event_type}")),
        key: "acct-42".into(),
        event_type: event_type.into(),
        time: Timestamp(1_767_225_600_000), // 2026-01-01T00:00:00Z
        data: data.as_object().cloned().unwrap_or_default(),
    }
}

fn at(mut e: Event, millis: i64) -> Event {
    e.time = Timestamp(e.time.0 + millis);
    e
}

fn scope() -> Scope {
    Scope {
        bindings: vec![Arc::from("failures"), Arc::from("success")],
        variables: vec![Arc::from("threshold")],
    }
}

fn expr(source: &str) -> Expr {
    match compile(source, &scope(), &ExprLimits::default()) {
        Ok(e) => e,
        Err(errors) => panic!("`{source}` does not compile: {errors:?}"),
    }
}

fn errors(source: &str) -> Vec<ExprError> {
    match compile(source, &scope(), &ExprLimits::default()) {
        Ok(_) => panic!("`{source}` compiles"),
        Err(errors) => errors,
    }
}

/// A fixture: an event, two bound steps, an entity and one variable.
struct World {
    current: Event,
    failure1: Event,
    failure2: Event,
    entity: Map<String, Value>,
    variables: Vec<Value>,
}

impl World {
    fn new(current: Event) -> World {
        World {
            current,
            failure1: event("login_failed", json!({"ip": "10.0.0.1", "attempt": 1})),
            failure2: at(
                event("login_failed", json!({"ip": "10.0.0.2", "attempt": 2})),
                60_000,
            ),
            entity: json!({"tier": "gold", "limits": {"daily": 5000}})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            variables: vec![json!(1000)],
        }
    }

    fn bindings(&self) -> [Binding<'_>; 2] {
        [
            Binding {
                count: 2,
                first: Some(&self.failure1),
                last: Some(&self.failure2),
            },
            Binding {
                count: 0,
                first: None,
                last: None,
            },
        ]
    }

    fn with<R>(&self, f: impl FnOnce(&EvalContext<'_>) -> R) -> R {
        let bindings = self.bindings();
        let ctx = EvalContext {
            key: "acct-42",
            event: Some(&self.current),
            entity: &self.entity,
            bindings: &bindings,
            variables: &self.variables,
        };
        f(&ctx)
    }

    fn matches(&self, source: &str) -> bool {
        let e = expr(source);
        self.with(|ctx| e.matches(ctx))
    }

    fn json(&self, source: &str) -> Option<Value> {
        let e = expr(source);
        self.with(|ctx| e.json(ctx))
    }

    fn text(&self, source: &str) -> Option<String> {
        let e = expr(source);
        self.with(|ctx| e.text(ctx))
    }

    fn error(&self, source: &str) -> Option<EvalError> {
        let e = expr(source);
        self.with(|ctx| e.try_json(ctx).err())
    }
}

fn transfer() -> World {
    World::new(event(
        "transfer",
        json!({
            "amount": 1500, "currency": "EUR", "ratio": 0.5, "big": 18_446_744_073_709_551_615u64,
            "ip": "10.0.0.9", "tags": ["a", "b", "c"], "nested": {"level": {"deep": true}},
            "nothing": null, "items": [{"sku": "x", "qty": 2}, {"sku": "y", "qty": 5}],
        }),
    ))
}

fn set(types: &[&str]) -> Option<BTreeSet<String>> {
    Some(types.iter().map(|t| t.to_string()).collect())
}

#[test]
fn expr_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_send_sync::<Expr>();
    let e = expr("type == 'a'");
    assert_eq!(e.clone().source(), "type == 'a'");
    assert_eq!(format!("{e:?}"), "Expr(\"type == 'a'\")");
}

#[test]
fn the_typical_predicate() {
    let w = transfer();
    assert!(w.matches(r#"type == "transfer" && data.amount > 1000 && data.currency == "EUR""#));
    assert!(!w.matches(r#"type == "transfer" && data.amount > 2000 && data.currency == "EUR""#));
    assert!(!w.matches(r#"type == "login" && data.amount > 1000"#));
}

#[test]
fn event_attributes_and_key() {
    let w = transfer();
    assert_eq!(w.text("type").as_deref(), Some("transfer"));
    assert_eq!(w.text("key").as_deref(), Some("acct-42"));
    assert_eq!(w.text("id").as_deref(), Some("id-transfer"));
    assert_eq!(w.text("time").as_deref(), Some("2026-01-01T00:00:00.000Z"));
    assert!(w.matches("time == timestamp('2026-01-01T00:00:00Z')"));
    let mut anonymous = transfer();
    anonymous.current.id = None;
    assert!(anonymous.matches("id == null"));
    assert_eq!(anonymous.json("id"), Some(Value::Null));
}

#[test]
fn without_an_event_only_key_and_entity_are_readable() {
    let w = transfer();
    let bindings = w.bindings();
    let ctx = EvalContext {
        key: "acct-42",
        event: None,
        entity: &w.entity,
        bindings: &bindings,
        variables: &w.variables,
    };
    assert_eq!(expr("key").text(&ctx).as_deref(), Some("acct-42"));
    assert_eq!(expr("entity.tier").text(&ctx).as_deref(), Some("gold"));
    assert_eq!(expr("failures.count").number(&ctx), Some(2.0));
    for source in ["type", "time", "id", "data", "data.amount"] {
        assert_eq!(
            expr(source).try_json(&ctx),
            Err(EvalError::NoEvent),
            "{source}"
        );
    }
    assert!(!expr("type == 'transfer'").matches(&ctx));
}

#[test]
fn numbers_compare_across_int_uint_and_double() {
    let w = transfer();
    assert!(w.matches("data.amount == 1500.0"));
    assert!(w.matches("data.amount > 1499.5"));
    assert!(w.matches("data.amount < 1500.01"));
    assert!(w.matches("data.amount == 1500u"));
    assert!(w.matches("data.ratio < 1"));
    assert!(w.matches("data.big > 9223372036854775807"));
    assert!(w.matches("data.big == 18446744073709551615u"));
    assert!(w.matches("1000 < data.amount"));
    assert!(w.matches("data.amount != 'x'"));
    assert!(!w.matches("data.amount < 'x'"));
}

#[test]
fn a_missing_key_is_false_and_has_tests_presence() {
    let w = transfer();
    assert!(!w.matches("data.missing > 100"));
    assert!(!w.matches("data.missing == null"));
    assert!(!w.matches("!(data.missing > 100)"));
    assert_eq!(w.error("data.missing"), Some(EvalError::NoSuchKey));
    assert_eq!(w.error("data.amount.x"), Some(EvalError::NoSuchKey));
    assert!(w.matches("has(data.amount)"));
    assert!(!w.matches("has(data.missing)"));
    assert!(w.matches("has(data.nothing) && data.nothing == null"));
    assert!(w.matches("has(data.nested.level.deep)"));
    assert!(!w.matches("has(data.nested.level.shallow)"));
    assert!(w.matches("has(entity.tier) && !has(entity.region)"));
    assert!(w.matches("has({'a': 1}.a)"));
    // The parent must exist.
    assert_eq!(w.error("has(data.missing.x)"), Some(EvalError::NoSuchKey));
    assert!(w.matches("data['currency'] == 'EUR' && data.nested['level'].deep"));
}

#[test]
fn and_or_absorb_errors_in_either_order() {
    let w = transfer();
    assert!(!w.matches("false && data.missing > 1"));
    assert!(!w.matches("data.missing > 1 && false"));
    assert!(w.matches("true || data.missing > 1"));
    assert!(w.matches("data.missing > 1 || true"));
    assert_eq!(w.json("data.missing > 1 || false"), None);
    assert_eq!(
        w.error("true && data.missing > 1"),
        Some(EvalError::NoSuchKey)
    );
    assert_eq!(w.json("false && data.missing > 1"), Some(json!(false)));
    assert_eq!(w.json("data.missing > 1 || true"), Some(json!(true)));
    // Non-bool operands are errors, absorbed the same way.
    assert_eq!(w.error("data.amount && true"), Some(EvalError::NotBool));
    assert!(!w.matches("data.amount && false"));
}

#[test]
fn ternary_and_not() {
    let w = transfer();
    assert_eq!(
        w.text("data.amount > 1000 ? 'big' : 'small'").as_deref(),
        Some("big")
    );
    assert_eq!(
        w.text("!(data.amount > 1000) ? 'big' : 'small'").as_deref(),
        Some("small")
    );
    assert_eq!(w.error("data.amount ? 1 : 2"), Some(EvalError::NotBool));
}

#[test]
fn bindings_count_first_last_and_shortcuts() {
    let w = transfer();
    assert_eq!(w.json("failures.count"), Some(json!(2)));
    assert_eq!(
        w.text("failures.first.data.ip").as_deref(),
        Some("10.0.0.1")
    );
    assert_eq!(w.text("failures.last.data.ip").as_deref(), Some("10.0.0.2"));
    assert_eq!(w.text("failures.data.ip").as_deref(), Some("10.0.0.2"));
    assert_eq!(w.text("failures.type").as_deref(), Some("login_failed"));
    assert_eq!(w.text("failures.id").as_deref(), Some("id-login_failed"));
    assert_eq!(w.text("failures.key").as_deref(), Some("acct-42"));
    assert_eq!(
        w.text("failures.last.time - failures.first.time")
            .as_deref(),
        Some("1m")
    );
    assert!(w.matches("failures.last.time - failures.first.time < duration('5m')"));
    assert!(w.matches("data.ip != failures.last.data.ip"));
    assert_eq!(
        w.json("failures.first"),
        Some(
            json!({"id": "id-login_failed", "key": "acct-42", "type": "login_failed",
                    "time": "2026-01-01T00:00:00.000Z", "data": {"ip": "10.0.0.1", "attempt": 1}})
        )
    );
    assert!(w.matches(
        "has(failures.first) && has(failures.data) && has(failures.id) && has(failures.count)"
    ));
}

#[test]
fn an_unbound_step_has_no_events() {
    let w = transfer();
    assert_eq!(w.json("success.count"), Some(json!(0)));
    assert!(!w.matches("has(success.last)"));
    assert!(!w.matches("has(success.data)"));
    assert_eq!(w.error("success.last"), Some(EvalError::UnboundStep));
    assert_eq!(w.error("success.data.ip"), Some(EvalError::UnboundStep));
    assert!(!w.matches("success.type == 'login_success'"));
}

#[test]
fn variables_and_entity() {
    let w = transfer();
    assert!(w.matches("data.amount > threshold"));
    assert_eq!(w.json("threshold * 2"), Some(json!(2000)));
    assert!(w.matches("entity.tier in ['gold', 'vip']"));
    assert!(w.matches("data.amount < entity.limits.daily"));
    assert_eq!(
        w.json("entity"),
        Some(json!({"tier": "gold", "limits": {"daily": 5000}}))
    );
}

#[test]
fn missing_slots_are_errors_not_panics() {
    let w = transfer();
    let ctx = EvalContext {
        key: "k",
        event: Some(&w.current),
        entity: &w.entity,
        bindings: &[],
        variables: &[],
    };
    assert_eq!(
        expr("failures.count").try_json(&ctx),
        Err(EvalError::MissingSlot)
    );
    assert_eq!(
        expr("threshold").try_json(&ctx),
        Err(EvalError::MissingSlot)
    );
}

#[test]
fn timestamps_and_durations() {
    let w = transfer();
    assert_eq!(
        w.text("time + duration('1h30m')").as_deref(),
        Some("2026-01-01T01:30:00.000Z")
    );
    assert_eq!(
        w.text("time - duration('1d')").as_deref(),
        Some("2025-12-31T00:00:00.000Z")
    );
    assert_eq!(
        w.text("duration('1m') + duration('30s')").as_deref(),
        Some("1m30s")
    );
    assert_eq!(
        w.text("duration('1m') - duration('2m')").as_deref(),
        Some("-1m")
    );
    assert_eq!(w.text("-duration('250ms')").as_deref(), Some("-250ms"));
    assert_eq!(
        w.text("timestamp('2026-01-01T00:00:10Z') - time")
            .as_deref(),
        Some("10s")
    );
    assert!(w.matches("time > timestamp('2025-12-31T23:59:59.999Z')"));
    assert!(w.matches("duration('90s') > duration('1m')"));
    assert_eq!(w.json("duration('90s')"), Some(json!("1m30s")));
    assert_eq!(w.json("time"), Some(json!("2026-01-01T00:00:00.000Z")));
    assert_eq!(w.json("int(time)"), Some(json!(1_767_225_600)));
    assert_eq!(
        w.text("timestamp(0)").as_deref(),
        Some("1970-01-01T00:00:00.000Z")
    );
    assert_eq!(w.error("time + time"), Some(EvalError::WrongTypes("+")));
    assert_eq!(
        w.error("time < duration('1m')"),
        Some(EvalError::WrongTypes("<"))
    );
    // Non-literal arguments are converted when evaluated.
    assert_eq!(
        w.text("timestamp(string(time))").as_deref(),
        Some("2026-01-01T00:00:00.000Z")
    );
    assert_eq!(
        w.error("duration(data.currency)"),
        Some(EvalError::BadConversion("duration"))
    );
}

#[test]
fn arithmetic() {
    let w = transfer();
    assert_eq!(w.json("data.amount + 1"), Some(json!(1501)));
    assert_eq!(w.json("data.amount * data.ratio"), Some(json!(750.0)));
    assert_eq!(w.json("data.amount / 7"), Some(json!(214)));
    assert_eq!(w.json("data.amount % 7"), Some(json!(2)));
    assert_eq!(w.json("data.amount / 0.0"), None); // infinity has no JSON form
    assert_eq!(w.error("data.amount / 0"), Some(EvalError::DivisionByZero));
    assert_eq!(
        w.error("data.amount * 9223372036854775807"),
        Some(EvalError::Overflow)
    );
    assert_eq!(w.json("-data.amount"), Some(json!(-1500)));
    assert_eq!(w.json("'a' + data.currency"), Some(json!("aEUR")));
    assert_eq!(
        w.json("data.tags + ['d']"),
        Some(json!(["a", "b", "c", "d"]))
    );
}

#[test]
fn membership() {
    let w = transfer();
    assert!(w.matches("'b' in data.tags"));
    assert!(!w.matches("'z' in data.tags"));
    assert!(w.matches("'level' in data.nested"));
    assert!(w.matches("data.currency in ['USD', 'EUR']"));
    assert!(w.matches("data.amount in [1, 1500.0]"));
    assert!(w.matches("type in ['payment', 'transfer']"));
    assert!(w.matches("'x' in [data.currency, 'x']"));
    assert!(!w.matches("data.currency in data.amount"));
}

#[test]
fn string_functions_and_size() {
    let w = transfer();
    assert!(w.matches("data.ip.startsWith('10.')"));
    assert!(w.matches("data.ip.endsWith('.9')"));
    assert!(w.matches("data.currency.contains('U')"));
    assert!(w.matches("data.currency.lowerAscii() == 'eur'"));
    assert!(w.matches("'eur'.upperAscii() == data.currency"));
    assert_eq!(w.json("size(data.tags)"), Some(json!(3)));
    assert_eq!(w.json("data.tags.size()"), Some(json!(3)));
    assert_eq!(w.json("size(data.nested)"), Some(json!(1)));
    assert_eq!(w.json("size('héllo')"), Some(json!(5)));
    assert_eq!(
        w.json("int('42') + uint(3) + double('0.5')"),
        Some(json!(45.5))
    );
    assert_eq!(
        w.json("string(data.amount) + string(data.ratio)"),
        Some(json!("15000.5"))
    );
    assert!(w.matches("bool('true')"));
    assert_eq!(
        w.error("data.amount.startsWith('1')"),
        Some(EvalError::WrongTypes("startsWith"))
    );
}

#[test]
fn regular_expressions() {
    let w = transfer();
    assert!(w.matches(r#"data.ip.matches("^10\\.0\\.0\\.[0-9]+$")"#));
    assert!(w.matches("matches(data.currency, 'UR')"));
    assert!(!w.matches("data.currency.matches('^UR')"));
    assert!(!w.matches("data.amount.matches('1')"));
}

#[test]
fn macros_over_lists_and_maps() {
    let w = transfer();
    assert!(w.matches("data.items.exists(i, i.qty > 4)"));
    assert!(!w.matches("data.items.all(i, i.qty > 4)"));
    assert!(w.matches("data.items.all(i, i.qty > 1)"));
    assert!(w.matches("data.items.exists_one(i, i.sku == 'y')"));
    assert!(!w.matches("data.tags.exists_one(t, t != 'a')"));
    assert_eq!(
        w.json("data.items.map(i, i.qty * 10)"),
        Some(json!([20, 50]))
    );
    assert_eq!(
        w.json("data.items.map(i, i.qty > 2, i.sku)"),
        Some(json!(["y"]))
    );
    assert_eq!(
        w.json("data.tags.filter(t, t != 'b')"),
        Some(json!(["a", "c"]))
    );
    assert_eq!(
        w.json("data.nested.map(k, k + '!')"),
        Some(json!(["level!"]))
    );
    assert!(w.matches("{'a': 1, 'b': 2}.all(k, k.size() == 1)"));
    assert!(w.matches("[1, 2, 3].exists(x, [x, x + 1].all(y, y > 2))"));
    assert!(w.matches("data.items.map(i, i.qty).filter(q, q > 3).size() == 1"));
    assert!(w.matches("[failures.first, failures.last].all(e, e.type == 'login_failed')"));
    assert!(w.matches("[failures.first].exists(e, has(e.id) && has(e.data))"));
    // exists: a true element wins over an error elsewhere; all: a false one does.
    assert!(w.matches("[{'a': 1}, {}].exists(m, m.a == 1)"));
    assert!(w.matches("[{}, {'a': 1}].exists(m, m.a == 1)"));
    assert_eq!(
        w.json("[{'a': 2}, {}].all(m, m.a == 1)"),
        Some(json!(false))
    );
    assert_eq!(
        w.error("[{}, {'a': 2}].exists(m, m.a == 1)"),
        Some(EvalError::NoSuchKey)
    );
    assert_eq!(
        w.error("data.amount.exists(x, true)"),
        Some(EvalError::WrongTypes("exists"))
    );
}

#[test]
fn macro_iterations_are_bounded() {
    let w = transfer();
    let e = expr("[0,1,2,3,4,5,6,7,8,9].all(a, [0,1,2,3,4,5,6,7,8,9].all(b, [0,1,2,3,4,5,6,7,8,9].all(c, [0,1,2,3,4,5,6,7,8,9].all(d, true))))");
    assert_eq!(
        w.with(|ctx| e.try_json(ctx)),
        Err(EvalError::TooManyIterations(MAX_ITERATIONS))
    );
    let e = expr("[0,1,2,3,4,5,6,7,8,9].all(a, [0,1,2,3,4,5,6,7,8,9].all(b, [0,1,2,3,4,5,6,7,8,9].all(c, true)))");
    assert_eq!(w.with(|ctx| e.try_json(ctx)), Ok(json!(true)));
}

#[test]
fn text_formats_numbers_canonically() {
    let w = transfer();
    assert_eq!(w.text("data.amount").as_deref(), Some("1500"));
    assert_eq!(w.text("data.amount * 1.0").as_deref(), Some("1500"));
    assert_eq!(w.text("data.ratio").as_deref(), Some("0.5"));
    assert_eq!(w.text("data.big").as_deref(), Some("18446744073709551615"));
    assert_eq!(w.text("-0.0").as_deref(), Some("0"));
    assert_eq!(w.text("0.1 + 0.2").as_deref(), Some("0.30000000000000004"));
    assert_eq!(w.text("1e21").as_deref(), Some("1000000000000000000000"));
    assert_eq!(w.text("data.amount > 1").as_deref(), Some("true"));
    assert_eq!(w.text("data.currency").as_deref(), Some("EUR"));
    assert_eq!(w.text("data.nothing"), None);
    assert_eq!(w.text("data.tags"), None);
    assert_eq!(w.text("data.nested"), None);
    assert_eq!(w.text("data.missing"), None);
}

#[test]
fn number_and_json_accessors() {
    let w = transfer();
    let e = expr("data.amount");
    assert_eq!(w.with(|ctx| e.number(ctx)), Some(1500.0));
    let e = expr("data.currency");
    assert_eq!(w.with(|ctx| e.number(ctx)), None);
    let e = expr("data.big");
    assert_eq!(
        w.with(|ctx| e.number(ctx)),
        Some(18_446_744_073_709_551_615.0)
    );
    assert_eq!(w.json("data.items[1]"), Some(json!({"sku": "y", "qty": 5})));
    assert_eq!(w.json("data.tags[0]"), Some(json!("a")));
    assert_eq!(w.error("data.tags[3]"), Some(EvalError::IndexOutOfRange));
    assert_eq!(
        w.json("{'n': data.amount, 1: [true, null]}"),
        Some(json!({"n": 1500, "1": [true, null]}))
    );
}

#[test]
fn matches_is_false_for_non_bools() {
    let w = transfer();
    assert!(!w.matches("data.amount"));
    assert!(!w.matches("'true'"));
    assert!(w.matches("true"));
}

#[test]
fn accepted_types_from_type_tests() {
    let types = |source: &str| expr(source).accepted_types();
    assert_eq!(types("type == 'a' && data.x > 1"), set(&["a"]));
    assert_eq!(types("'a' == type"), set(&["a"]));
    assert_eq!(types("type == 'a' || type == 'b'"), set(&["a", "b"]));
    assert_eq!(types("type in ['a', 'b'] && data.x > 1"), set(&["a", "b"]));
    assert_eq!(
        types("type in ['a', 'b'] && type in ['b', 'c']"),
        set(&["b"])
    );
    assert_eq!(types("type == 'a' && type == 'b'"), set(&[]));
    assert_eq!(
        types("(type == 'a' || type == 'b') && data.x > 1 || type == 'c'"),
        set(&["a", "b", "c"])
    );
    assert_eq!(types("type == 'a' || data.x > 1"), None);
    assert_eq!(types("type != 'a'"), None);
    assert_eq!(types("!(type == 'a')"), None);
    assert_eq!(types("data.x > 1"), None);
    assert_eq!(types("false"), set(&[]));
    assert_eq!(types("failures.type == 'a'"), None);
}

#[test]
fn binding_slots_are_sorted_and_unique() {
    assert_eq!(expr("type == 'a'").binding_slots(), &[] as &[usize]);
    assert_eq!(
        expr("success.data.ip != failures.last.data.ip").binding_slots(),
        &[0, 1]
    );
    assert_eq!(
        expr("failures.count > 2 && failures.first.time < time").binding_slots(),
        &[0]
    );
    assert_eq!(
        expr("has(success.last) || [1].exists(x, success.count > x)").binding_slots(),
        &[1]
    );
    assert_eq!(
        expr("threshold > 1 && entity.tier == 'x'").binding_slots(),
        &[] as &[usize]
    );
}

#[test]
fn unknown_names_are_listed_with_their_columns() {
    let e = errors("type == 'a' && nope > 1 && other.x");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].message.contains("unknown name `nope`"),
        "{}",
        e[0].message
    );
    assert!(
        e[0].message
            .contains("type, key, time, id, data, entity, failures, success, threshold"),
        "{}",
        e[0].message
    );
    assert_eq!(e[0].column, Some(16));
    assert!(
        e[1].message.contains("unknown name `other`"),
        "{}",
        e[1].message
    );
    assert_eq!(e[1].column, Some(28));
}

#[test]
fn unsupported_functions_are_named_with_the_supported_ones() {
    let e = errors("data.x.frobnicate() && type(data.x) == int");
    assert!(e.len() >= 2, "{e:?}");
    assert!(
        e[0].message.contains("unknown function `frobnicate`"),
        "{}",
        e[0].message
    );
    assert!(
        e[0].message.contains("size, startsWith"),
        "{}",
        e[0].message
    );
    assert!(e[0].message.contains("exists_one"), "{}", e[0].message);
    assert_eq!(e[0].column, Some(8));
    assert!(
        e[1].message.contains("unknown function `type`"),
        "{}",
        e[1].message
    );
    let e = errors("startsWith(data.x, 'a')");
    assert!(e[0].message.contains("is a method"), "{}", e[0].message);
    let e = errors("data.x.int()");
    assert!(e[0].message.contains("is not a method"), "{}", e[0].message);
    let e = errors("size(data.x, 1)");
    assert!(
        e[0].message.contains("wrong number of arguments"),
        "{}",
        e[0].message
    );
    let e = errors("data.l.exists(x)");
    assert!(
        e[0].message.contains("list.exists(x, predicate)"),
        "{}",
        e[0].message
    );
    let e = errors("Account{id: 1}.id == 1");
    assert!(
        e[0].message.contains("message literals"),
        "{}",
        e[0].message
    );
    let e = errors("b'abc' == data.x");
    assert!(e[0].message.contains("bytes literals"), "{}", e[0].message);
}

#[test]
fn matches_needs_a_valid_literal_pattern() {
    let e = errors("data.x.matches(data.pattern)");
    assert!(e[0].message.contains("string literal"), "{}", e[0].message);
    assert_eq!(e[0].column, Some(16));
    let e = errors("data.x.matches('(unclosed')");
    assert!(
        e[0].message.contains("invalid regular expression"),
        "{}",
        e[0].message
    );
    assert_eq!(e[0].column, Some(16));
    let e = errors("data.x.matches('a{1000}{1000}')");
    assert!(
        e[0].message.contains("invalid regular expression"),
        "{}",
        e[0].message
    );
}

#[test]
fn time_literals_are_checked_at_compile_time() {
    let e = errors("time > timestamp('yesterday') && duration('5 min') > duration('1m')");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].message.contains("RFC 3339"), "{}", e[0].message);
    assert_eq!(e[0].column, Some(8));
    assert_eq!(e[1].column, Some(34));
    assert!(
        e[1].message.contains("is not a duration"),
        "{}",
        e[1].message
    );
}

#[test]
fn constant_failures_are_compile_errors() {
    let e = errors("data.x > 1 / 0");
    assert!(
        e[0].message.contains("always fails: division by zero"),
        "{}",
        e[0].message
    );
    let e = errors("{'a': 1, 'a': 2}.size() == 2");
    assert!(e[0].message.contains("always fails"), "{}", e[0].message);
}

#[test]
fn steps_must_be_read_through_their_fields() {
    let e = errors("failures > 1");
    assert!(e[0].message.contains("failures.count"), "{}", e[0].message);
    let e = errors("failures.ip == '1'");
    assert!(
        e[0].message.contains("`ip` is not one of them"),
        "{}",
        e[0].message
    );
    let e = errors("failures.last.ip == '1'");
    assert!(
        e[0].message.contains("an event has the fields"),
        "{}",
        e[0].message
    );
}

#[test]
fn scope_names_may_not_shadow_built_ins() {
    let scope = Scope {
        bindings: vec![Arc::from("data"), Arc::from("x")],
        variables: vec![Arc::from("x")],
    };
    let e = compile("true", &scope, &ExprLimits::default()).unwrap_err();
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].message.contains("`data` is a built-in name"),
        "{}",
        e[0].message
    );
    assert!(e[1].message.contains("more than one"), "{}", e[1].message);
    let e = errors("[1].exists(type, type > 0)");
    assert!(e[0].message.contains("would hide"), "{}", e[0].message);
    let e = errors("[1].exists(failures, failures > 0)");
    assert!(e[0].message.contains("would hide"), "{}", e[0].message);
}

#[test]
fn parse_errors_have_columns() {
    let e = errors("type == 'a' &&");
    assert!(e[0].message.starts_with("syntax error"), "{}", e[0].message);
    assert_eq!(e[0].column, Some(15));
    let e = errors("data.x ==== 1");
    assert_eq!(e[0].column, Some(10));
}

#[test]
fn hostile_input_is_an_error_not_a_crash() {
    let nested = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    let big = ExprLimits {
        max_length: 1 << 20,
        max_depth: 32,
    };
    for limits in [ExprLimits::default(), big.clone()] {
        assert!(compile(&nested, &scope(), &limits).is_err());
        assert!(compile(
            &format!("data.x == '{}'", "x".repeat(1 << 20)),
            &scope(),
            &limits
        )
        .is_err());
        assert!(compile(&format!("a{}", ".a".repeat(5_000)), &scope(), &limits).is_err());
        assert!(compile(&format!("{}true", "!".repeat(5_000)), &scope(), &limits).is_err());
    }
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    let e = compile(&deep, &scope(), &ExprLimits::default()).unwrap_err();
    assert!(
        e[0].message.contains("deeper than 32 levels"),
        "{}",
        e[0].message
    );
    let e = errors(&format!("data{}", ".a".repeat(40)));
    assert!(
        e[0].message.contains("deeper than 32 levels"),
        "{}",
        e[0].message
    );
}
