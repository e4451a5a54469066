//! Predicate evaluation cost: cepheus's compiled evaluator against the `cel`
//! crate's interpreter, on a typical three-clause predicate and a realistic
//! event, plus a predicate that reads a sequence step's bound event.
//!
//! Run with `cargo bench --bench expr`.

use std::hint::black_box;
use std::sync::Arc;

use cepheus::event::Event;
use cepheus::rules::expr::{compile, Binding, EvalContext, ExprLimits, Scope};
use cepheus::time::Timestamp;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Map, Value};

const PREDICATE: &str = r#"type == "transfer" && data.amount > 1000 && data.currency == "EUR""#;
const WITH_BINDING: &str =
    r#"type == "transfer" && data.amount > 1000 && data.ip != login.data.ip"#;

fn event(event_type: &str, data: Value) -> Event {
    Event {
        id: Some("e-1001".into()),
        key: "acct-42".into(),
        event_type: event_type.into(),
        time: Timestamp(1_767_225_600_000),
        data: data.as_object().cloned().unwrap_or_default(),
    }
}

/// A transfer with eight data fields, as a payments producer might send.
fn transfer() -> Event {
    event(
        "transfer",
        json!({
            "amount": 2500,
            "currency": "EUR",
            "account": "DE89370400440532013000",
            "counterparty": "FR1420041010050500013M02606",
            "channel": "mobile",
            "country": "DE",
            "ip": "10.0.0.7",
            "reference": "invoice 2026-001",
        }),
    )
}

fn cepheus_evaluator(c: &mut Criterion) {
    let scope = Scope {
        bindings: vec![Arc::from("login")],
        variables: Vec::new(),
    };
    let limits = ExprLimits::default();
    let predicate = compile(PREDICATE, &scope, &limits).expect("the predicate compiles");
    let with_binding = compile(WITH_BINDING, &scope, &limits).expect("the predicate compiles");
    let current = transfer();
    let login = event(
        "login_success",
        json!({"ip": "192.168.1.20", "device": "phone"}),
    );
    let entity = Map::new();
    let bindings = [Binding {
        count: 1,
        first: Some(&login),
        last: Some(&login),
    }];
    let ctx = EvalContext {
        key: "acct-42",
        event: Some(&current),
        entity: &entity,
        bindings: &bindings,
        variables: &[],
    };
    assert!(predicate.matches(&ctx));
    assert!(with_binding.matches(&ctx));

    let mut group = c.benchmark_group("predicate");
    group.bench_function("cepheus", |b| {
        b.iter(|| black_box(&predicate).matches(black_box(&ctx)))
    });
    group.bench_function("cepheus_binding", |b| {
        b.iter(|| black_box(&with_binding).matches(black_box(&ctx)))
    });
    group.finish();
}

fn cel_interpreter(c: &mut Criterion) {
    let env = Arc::new(cel::Env::stdlib());
    let program = env.compile(PREDICATE).expect("the predicate compiles");
    let with_binding = env.compile(WITH_BINDING).expect("the predicate compiles");
    let current = transfer();
    let login = event(
        "login_success",
        json!({"ip": "192.168.1.20", "device": "phone"}),
    );

    // What a cel-based engine does per event: bind the event's fields (the
    // data object converted through serde) into a fresh context.
    let context_for = |e: &Event| {
        let mut context = cel::Context::with_env(Arc::clone(&env));
        context
            .add_variable("type", e.event_type.as_str())
            .expect("a string converts");
        context
            .add_variable("data", &e.data)
            .expect("JSON converts");
        context
    };
    let prebuilt = context_for(&current);
    assert_eq!(program.execute(&prebuilt), Ok(cel::Value::Bool(true)));

    let mut group = c.benchmark_group("predicate");
    group.bench_function("cel_prebuilt_context", |b| {
        b.iter(|| black_box(&program).execute(black_box(&prebuilt)))
    });
    group.bench_function("cel_context_per_event", |b| {
        b.iter(|| {
            let context = context_for(black_box(&current));
            black_box(&program).execute(&context)
        })
    });
    let mut with_login = context_for(&current);
    with_login
        .add_variable(
            "login",
            json!({"data": login.data, "type": login.event_type}),
        )
        .expect("JSON converts");
    assert_eq!(
        with_binding.execute(&with_login),
        Ok(cel::Value::Bool(true))
    );
    group.bench_function("cel_binding_prebuilt_context", |b| {
        b.iter(|| black_box(&with_binding).execute(black_box(&with_login)))
    });
    group.finish();
}

criterion_group!(benches, cepheus_evaluator, cel_interpreter);
criterion_main!(benches);
