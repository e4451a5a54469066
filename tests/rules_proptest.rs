//! Whatever the text, `load` neither panics nor answers with an empty list:
//! it returns a rule or at least one problem.

use cepheus::rules::{load, Format, RuleLimits};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Field names of every level of the schema, so that random documents often
/// reach the deeper checks, plus a few that are not fields.
const KEYS: &[&str] = &[
    "id",
    "description",
    "severity",
    "enabled",
    "mode",
    "when",
    "partition_by",
    "sequence",
    "absence",
    "threshold",
    "alert",
    "within",
    "contiguity",
    "any_order",
    "skip",
    "steps",
    "name",
    "match",
    "times",
    "optional",
    "not",
    "min",
    "max",
    "after",
    "expect",
    "window",
    "aggregate",
    "above",
    "at_least",
    "below",
    "at_most",
    "sliding",
    "tumbling",
    "hopping",
    "session",
    "size",
    "advance",
    "gap",
    "message",
    "colour",
    "<<",
];

/// Scalars a rule might hold, right or wrong.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        prop::sample::select(vec![
            "5m",
            "0s",
            "1h30m",
            "5 minutes",
            "type == 'a'",
            "true",
            "count",
            "sum(data.x)",
            "relaxed",
            "strict",
            "any",
            "all",
            "high",
            "shadow",
            "step1",
            "",
            "{{key}}",
            "99999999999999999999d",
            "x",
            "@",
        ])
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

/// Nested mappings and lists of scalars, keyed mostly by schema field names.
fn document() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|entries| {
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn loads_or_explains(text: &str, format: Format) -> Result<(), TestCaseError> {
    match load(text, format, 1, &RuleLimits::default()) {
        Ok(_) => Ok(()),
        Err(problems) => {
            prop_assert!(!problems.is_empty(), "an Err with no problem for {text:?}");
            for p in &problems {
                prop_assert!(!p.message.is_empty(), "an empty message for {text:?}");
                prop_assert_eq!(p.line.is_some(), p.column.is_some());
            }
            Ok(())
        }
    }
}

proptest! {
    #[test]
    fn any_string_loads_or_explains(text in "\\PC{0,200}") {
        loads_or_explains(&text, Format::Yaml)?;
        loads_or_explains(&text, Format::Json)?;
    }

    #[test]
    fn yaml_looking_text_loads_or_explains(text in "[a-z_ :\\-\\[\\]{}'\",\n#&*!|>0-9.]{0,200}") {
        loads_or_explains(&text, Format::Yaml)?;
    }

    #[test]
    fn structured_documents_load_or_explain(doc in document()) {
        let json = serde_json::to_string_pretty(&doc).expect("a JSON value serializes");
        loads_or_explains(&json, Format::Json)?;
        let yaml = serde_saphyr::to_string(&doc).expect("a JSON value serializes as YAML");
        loads_or_explains(&yaml, Format::Yaml)?;
    }
}
