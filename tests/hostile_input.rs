//! Hostile input (DESIGN §7): arbitrary bytes and arbitrary JSON given to
//! the event decoder (all four body formats), the rule loader and the CEL
//! compiler never panic, and always give a clear error or a result.
//!
//! Also fuzz targets on the stable toolchain: raise the case count with
//! `PROPTEST_CASES` (see `docs/testing.md`), e.g.
//!
//! ```sh
//! PROPTEST_CASES=200000 cargo test --release --test hostile_input
//! ```

use cepheus::event::EventLimits;
use cepheus::ingest::{decode, BodyFormat, DecodeError, DecodeLimits, Decoded};
use cepheus::rules::expr::{compile, ExprLimits, Scope};
use cepheus::rules::{load, Format, RuleLimits};
use cepheus::time::Timestamp;
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

/// Cases per property: `PROPTEST_CASES`, or `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

const FORMATS: [BodyFormat; 4] = [
    BodyFormat::Json,
    BodyFormat::NdJson,
    BodyFormat::CloudEvent,
    BodyFormat::CloudEventBatch,
];

fn limits() -> DecodeLimits {
    DecodeLimits {
        max_events: 50,
        event: EventLimits {
            max_key_bytes: 16,
            max_type_bytes: 16,
            max_id_bytes: 16,
            max_data_bytes: 256,
            max_data_depth: 4,
        },
    }
}

/// Decodes `body` in every format and checks what came out.
fn decodes_or_explains(body: &[u8]) -> Result<(), TestCaseError> {
    let limits = limits();
    for format in FORMATS {
        match decode(body, format, &limits, Timestamp(1_000)) {
            Ok(decoded) => well_formed(&decoded, &limits)?,
            Err(DecodeError::Unparseable(message)) => {
                prop_assert!(!message.trim().is_empty(), "an empty message for {body:?}")
            }
            Err(e @ DecodeError::TooManyEvents { .. }) => {
                prop_assert!(e.to_string().contains("at most"), "{e}")
            }
        }
    }
    Ok(())
}

/// Every accepted event is within the limits, every rejection says why,
/// and each item of the body is one or the other, once.
fn well_formed(decoded: &Decoded, limits: &DecodeLimits) -> Result<(), TestCaseError> {
    let mut indexes: Vec<usize> = decoded.events.iter().map(|(i, _)| *i).collect();
    for (_, event) in &decoded.events {
        prop_assert!(!event.key.is_empty() && event.key.len() <= limits.event.max_key_bytes);
        prop_assert!(
            !event.event_type.is_empty() && event.event_type.len() <= limits.event.max_type_bytes
        );
        prop_assert!(event
            .id
            .as_ref()
            .is_none_or(|id| id.len() <= limits.event.max_id_bytes));
        let size = serde_json::to_vec(&event.data).unwrap().len();
        prop_assert!(size <= limits.event.max_data_bytes, "data of {size} bytes");
    }
    for rejection in &decoded.rejected {
        prop_assert!(!rejection.error.trim().is_empty());
        indexes.push(rejection.index);
    }
    let count = indexes.len();
    indexes.sort_unstable();
    indexes.dedup();
    prop_assert_eq!(indexes.len(), count, "an item decoded twice");
    prop_assert!(count <= limits.max_events);
    for &i in &decoded.untimed {
        prop_assert!(i < decoded.events.len());
        prop_assert_eq!(decoded.events[i].1.time, Timestamp(1_000));
    }
    Ok(())
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        prop::sample::select(vec![
            "",
            "k",
            "login",
            "1.0",
            "0.3",
            "2026-01-01T00:00:00Z",
            "2026-13-45T99:99:99Z",
            "not a time",
            "+275760-09-13T00:00:00Z",
            "-0001-01-01T00:00:00Z",
        ])
        .prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((field(), inner), 0..7)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Event and CloudEvent field names, so random objects often look like
/// events, plus others.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "id",
            "key",
            "type",
            "time",
            "data",
            "subject",
            "specversion",
            "source",
            "data_base64",
            "datacontenttype",
            "x",
        ])
        .prop_map(String::from),
        "\\PC{0,8}",
    ]
}

/// An object with the event fields holding arbitrary values.
fn arb_event() -> impl Strategy<Value = Value> {
    (
        prop::option::of(arb_json()),
        prop::option::of(arb_json()),
        prop::option::of(arb_json()),
        prop::option::of(arb_json()),
        prop::option::of(arb_json()),
        prop::option::of(prop::sample::select(vec!["1.0", "0.3", ""])),
    )
        .prop_map(|(key, kind, time, data, id, spec)| {
            let mut event = Map::new();
            for (name, value) in [
                ("key", key.clone()),
                ("subject", key),
                ("type", kind),
                ("time", time),
                ("data", data),
                ("id", id),
            ] {
                if let Some(value) = value {
                    event.insert(name.into(), value);
                }
            }
            if let Some(spec) = spec {
                event.insert("specversion".into(), spec.into());
            }
            Value::Object(event)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(512)))]

    #[test]
    fn arbitrary_bytes_decode_or_explain(body in prop::collection::vec(any::<u8>(), 0..512)) {
        decodes_or_explains(&body)?;
    }

    #[test]
    fn arbitrary_text_decodes_or_explains(body in "[\\[\\]{}\":,\\n0-9a-z .\\\\-]{0,300}") {
        decodes_or_explains(body.as_bytes())?;
    }

    #[test]
    fn arbitrary_json_decodes_or_explains(value in arb_json()) {
        decodes_or_explains(value.to_string().as_bytes())?;
    }

    #[test]
    fn event_like_objects_decode_or_explain(events in prop::collection::vec(arb_event(), 0..8)) {
        let array = Value::Array(events.clone()).to_string();
        decodes_or_explains(array.as_bytes())?;
        let lines: String = events.iter().map(|e| format!("{e}\n")).collect();
        decodes_or_explains(lines.as_bytes())?;
        if let Some(first) = events.first() {
            decodes_or_explains(first.to_string().as_bytes())?;
        }
    }

    #[test]
    fn arbitrary_bytes_load_as_a_rule_or_explain(body in prop::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&body);
        for format in [Format::Yaml, Format::Json] {
            if let Err(problems) = load(&text, format, 1, &RuleLimits::default()) {
                prop_assert!(!problems.is_empty());
                prop_assert!(problems.iter().all(|p| !p.message.trim().is_empty()));
            }
        }
    }

    #[test]
    fn arbitrary_json_loads_as_a_rule_or_explains(value in arb_json()) {
        if let Err(problems) = load(&value.to_string(), Format::Json, 1, &RuleLimits::default()) {
            prop_assert!(!problems.is_empty());
            prop_assert!(problems.iter().all(|p| !p.message.trim().is_empty()));
        }
    }

    #[test]
    fn arbitrary_bytes_compile_as_cel_or_explain(body in prop::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&body);
        let scope = Scope { bindings: vec![], variables: vec![] };
        if let Err(errors) = compile(&text, &scope, &ExprLimits::default()) {
            prop_assert!(!errors.is_empty());
            prop_assert!(errors.iter().all(|e| !e.to_string().trim().is_empty()));
        }
    }
}
