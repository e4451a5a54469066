//! Request bodies to events: one JSON object, a JSON array, NDJSON, or
//! CloudEvents 1.0 in structured mode (single or batch), DESIGN §2.
//!
//! A body that cannot be read at all is an error for the whole request.
//! Otherwise each event is checked on its own: the invalid ones are
//! rejected with their index and reason, the valid ones go on.

use serde_json::{Map, Value};

use crate::event::{Event, EventError, EventLimits};
use crate::time::Timestamp;

/// The body formats `POST /v1/events` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`: one event object or an array of them.
    Json,
    /// `application/x-ndjson`: one event object per line.
    NdJson,
    /// `application/cloudevents+json`: one CloudEvent.
    CloudEvent,
    /// `application/cloudevents-batch+json`: an array of CloudEvents.
    CloudEventBatch,
}

impl BodyFormat {
    /// The format for a `Content-Type` (parameters such as charset ignored);
    /// `None` for a type cepheus does not accept.
    pub fn from_content_type(content_type: Option<&str>) -> Option<BodyFormat> {
        let essence = content_type
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        match essence.as_str() {
            "" | "application/json" | "text/json" => Some(BodyFormat::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                Some(BodyFormat::NdJson)
            }
            "application/cloudevents+json" => Some(BodyFormat::CloudEvent),
            "application/cloudevents-batch+json" => Some(BodyFormat::CloudEventBatch),
            _ => None,
        }
    }
}

/// One rejected event.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Position in the request (array index, or line number − 1 for NDJSON).
    pub index: usize,
    /// Why, as a sentence.
    pub error: String,
    /// The event as received, for the dead-letter log.
    pub raw: Value,
}

/// A decoded body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded {
    /// Valid events with their position in the request, in order.
    pub events: Vec<(usize, Event)>,
    /// Invalid events.
    pub rejected: Vec<Rejection>,
    /// Positions in `events` of the events sent without `time`: they carry
    /// `received_at` for now, and ingest gives them their acceptance time.
    pub untimed: Vec<usize>,
}

/// Why a whole body was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not readable as the declared format.
    #[error("{0}")]
    Unparseable(String),
    /// More events than allowed per request.
    #[error("the request holds {count} events; at most {limit} are accepted per request")]
    TooManyEvents {
        /// Events in the body.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

/// Limits applied while decoding.
#[derive(Debug, Clone)]
pub struct DecodeLimits {
    /// Most events per request.
    pub max_events: usize,
    /// Per-event limits.
    pub event: EventLimits,
}

/// Decodes `body` in `format`. Events without `time` get `received_at`.
pub fn decode(
    body: &[u8],
    format: BodyFormat,
    limits: &DecodeLimits,
    received_at: Timestamp,
) -> Result<Decoded, DecodeError> {
    // Each item with its index in the request.
    let items: Vec<(usize, Item)> = match format {
        BodyFormat::NdJson => split_lines(body)?,
        BodyFormat::Json | BodyFormat::CloudEvent | BodyFormat::CloudEventBatch => {
            let value: Value = serde_json::from_slice(body).map_err(|e| {
                DecodeError::Unparseable(format!("the body is not valid JSON: {e}"))
            })?;
            match (value, format) {
                (Value::Array(items), BodyFormat::Json | BodyFormat::CloudEventBatch) => {
                    items.into_iter().map(Ok).enumerate().collect()
                }
                (Value::Object(o), BodyFormat::Json | BodyFormat::CloudEvent) => {
                    vec![(0, Ok(Value::Object(o)))]
                }
                (_, BodyFormat::CloudEventBatch) => {
                    return Err(DecodeError::Unparseable(
                        "a CloudEvents batch must be a JSON array of events".into(),
                    ))
                }
                _ => {
                    return Err(DecodeError::Unparseable(
                        "the body must be an event object or an array of event objects".into(),
                    ))
                }
            }
        }
    };
    if items.len() > limits.max_events {
        return Err(DecodeError::TooManyEvents {
            count: items.len(),
            limit: limits.max_events,
        });
    }
    let cloud = matches!(format, BodyFormat::CloudEvent | BodyFormat::CloudEventBatch);
    let mut decoded = Decoded::default();
    for (index, item) in items {
        let value = match item {
            Ok(value) => value,
            Err((error, raw)) => {
                decoded.rejected.push(Rejection { index, error, raw });
                continue;
            }
        };
        let event = if cloud {
            from_cloud_event(&value, received_at)
        } else {
            from_plain(&value, received_at)
        };
        let mut event = match event {
            Ok(event) => event,
            Err(error) => {
                decoded.rejected.push(Rejection {
                    index,
                    error,
                    raw: value,
                });
                continue;
            }
        };
        let untimed = has_no_time(&value);
        // NB: the payload is moved, not copied, out of the parsed value.
        if let Value::Object(mut object) = value {
            if let Some(Value::Object(data)) = object.remove("data") {
                event.data = data;
            }
        }
        match event.check(&limits.event, None) {
            Ok(()) => {
                if untimed {
                    decoded.untimed.push(decoded.events.len());
                }
                decoded.events.push((index, event))
            }
            Err(error) => decoded.rejected.push(Rejection {
                index,
                error: error.to_string(),
                raw: serde_json::to_value(&event).unwrap_or(Value::Null),
            }),
        }
    }
    Ok(decoded)
}

/// One event from a log record's value (the scale-out mode's events
/// topic): a cepheus event object, or a structured-mode CloudEvent (told
/// apart by `specversion`). No framing: one record, one event. Without
/// `time`, the event gets `received_at` (the record's timestamp, the same
/// on every instance that reads it).
pub fn decode_record(
    value: &[u8],
    limits: &DecodeLimits,
    received_at: Timestamp,
) -> Result<Event, String> {
    let parsed: Value = serde_json::from_slice(value)
        .map_err(|e| format!("the record's value is not valid JSON: {e}"))?;
    let format = if parsed.get("specversion").is_some() {
        BodyFormat::CloudEvent
    } else {
        BodyFormat::Json
    };
    if !parsed.is_object() {
        return Err("the record's value must be one event object".into());
    }
    let limits = DecodeLimits {
        max_events: 1,
        event: limits.event.clone(),
    };
    let mut decoded = decode(value, format, &limits, received_at).map_err(|e| e.to_string())?;
    match (decoded.events.pop(), decoded.rejected.pop()) {
        (Some((_, event)), _) => Ok(event),
        (None, Some(rejection)) => Err(rejection.error),
        (None, None) => Err("the record holds no event".into()),
    }
}

/// Whether `value` (an event that decoded) has no `time` of its own.
fn has_no_time(value: &Value) -> bool {
    matches!(value.get("time"), None | Some(Value::Null))
}

/// One element of a body: a JSON value, or why it is not one (with the raw text).
type Item = Result<Value, (String, Value)>;

/// NDJSON: one JSON value per non-blank line, indexed by line number − 1
/// (blank lines count, so a client can find the line). A body where no
/// line parses cannot be read at all.
fn split_lines(body: &[u8]) -> Result<Vec<(usize, Item)>, DecodeError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| DecodeError::Unparseable(format!("the body is not UTF-8: {e}")))?;
    let items: Vec<(usize, Item)> = text
        .split('\n')
        .map(|line| line.trim_end_matches('\r'))
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let item = serde_json::from_str::<Value>(line).map_err(|e| {
                (
                    format!("the line is not valid JSON: {e}"),
                    Value::String(line.to_owned()),
                )
            });
            (index, item)
        })
        .collect();
    if !items.is_empty() && items.iter().all(|(_, item)| item.is_err()) {
        return Err(DecodeError::Unparseable(
            "no line of the NDJSON body is valid JSON".into(),
        ));
    }
    Ok(items)
}

const EVENT_FIELDS: [&str; 5] = ["id", "key", "type", "time", "data"];

fn from_plain(value: &Value, received_at: Timestamp) -> Result<Event, String> {
    let object = value.as_object().ok_or("an event must be a JSON object")?;
    if let Some(unknown) = object.keys().find(|k| !EVENT_FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field `{unknown}`; an event has `id`, `key`, `type`, `time` and `data` (put payload fields inside `data`)"
        ));
    }
    build(
        object,
        ("key", "key"),
        received_at,
        object.get("data").unwrap_or(&Value::Null),
    )
}

/// CloudEvents 1.0 structured mode: `subject` is the key; `id`, `type`,
/// `time` and `data` map to themselves; other attributes (source,
/// extensions) are accepted and not kept.
fn from_cloud_event(value: &Value, received_at: Timestamp) -> Result<Event, String> {
    let object = value
        .as_object()
        .ok_or("a CloudEvent must be a JSON object")?;
    match object.get("specversion").and_then(Value::as_str) {
        Some("1.0") => {}
        Some(other) => {
            return Err(format!(
                "CloudEvents `specversion` {other} is not supported; use 1.0"
            ))
        }
        None => return Err("a CloudEvent needs `specversion`: \"1.0\"".into()),
    }
    if object.contains_key("data_base64") {
        return Err(
            "binary CloudEvent data (`data_base64`) is not supported; send `data` as a JSON object"
                .into(),
        );
    }
    build(
        object,
        ("subject", "subject"),
        received_at,
        object.get("data").unwrap_or(&Value::Null),
    )
}

fn build(
    object: &Map<String, Value>,
    (key_field, key_name): (&str, &str),
    received_at: Timestamp,
    data: &Value,
) -> Result<Event, String> {
    let text = |field: &str| -> Result<Option<String>, String> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("`{field}` must be a string, not {}", kind(other))),
        }
    };
    let key = text(key_field)?.ok_or_else(|| {
        if key_name == "subject" {
            "a CloudEvent needs `subject`, which cepheus uses as the entity key".to_string()
        } else {
            EventError::MissingKey.to_string()
        }
    })?;
    let event_type = text("type")?.ok_or_else(|| EventError::MissingType.to_string())?;
    let time = match text("time")? {
        Some(t) => Timestamp::parse_rfc3339(&t).map_err(|e| format!("`time`: {e}"))?,
        None => received_at,
    };
    // The payload itself is moved in by the caller once the event is valid.
    match data {
        Value::Null | Value::Object(_) => {}
        other => return Err(format!("`data` must be a JSON object, not {}", kind(other))),
    }
    let data = Map::new();
    Ok(Event {
        id: text("id")?,
        key,
        event_type,
        time,
        data,
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_record_is_a_plain_event_or_a_cloud_event() {
        let at = Timestamp(1_000);
        let plain =
            decode_record(br#"{"key":"a","type":"t","data":{"x":1}}"#, &limits(), at).unwrap();
        assert_eq!((plain.key.as_str(), plain.time), ("a", at));
        assert_eq!(plain.data.get("x"), Some(&json!(1)));
        let cloud = decode_record(
            br#"{"specversion":"1.0","id":"c1","source":"s","subject":"b","type":"t","time":"2026-01-01T00:00:00Z"}"#,
            &limits(),
            at,
        )
        .unwrap();
        assert_eq!((cloud.key.as_str(), cloud.id.as_deref()), ("b", Some("c1")));
        assert!(decode_record(b"[1]", &limits(), at).is_err());
        assert!(decode_record(br#"{"type":"t"}"#, &limits(), at)
            .unwrap_err()
            .contains("key"));
    }

    fn limits() -> DecodeLimits {
        DecodeLimits {
            max_events: 3,
            event: EventLimits::default(),
        }
    }

    fn run(body: &str, format: BodyFormat) -> Result<Decoded, DecodeError> {
        decode(body.as_bytes(), format, &limits(), Timestamp(42))
    }

    #[test]
    fn one_object_an_array_and_ndjson_decode_alike() {
        let one = r#"{"key":"a","type":"t","time":"2026-01-01T00:00:00Z","data":{"x":1}}"#;
        let d = run(one, BodyFormat::Json).unwrap();
        assert_eq!(d.events.len(), 1);
        assert_eq!(d.events[0].1.data["x"], json!(1));
        let arr = format!("[{one},{one}]");
        assert_eq!(run(&arr, BodyFormat::Json).unwrap().events.len(), 2);
        let nd = format!("{one}\n\n{one}\r\n");
        assert_eq!(run(&nd, BodyFormat::NdJson).unwrap().events.len(), 2);
    }

    #[test]
    fn missing_time_is_the_receive_time_and_missing_data_is_empty() {
        let d = run(r#"{"key":"a","type":"t"}"#, BodyFormat::Json).unwrap();
        assert_eq!(d.events[0].1.time, Timestamp(42));
        assert!(d.events[0].1.data.is_empty());
    }

    #[test]
    fn events_without_time_are_listed_as_untimed() {
        let body = r#"[{"key":"a","type":"t"},{"key":"a","type":"t","time":"2026-01-01T00:00:00Z"},
                       {"key":"a","type":"t","time":null}]"#;
        let d = run(body, BodyFormat::Json).unwrap();
        assert_eq!(d.untimed, vec![0, 2]);
        let d = run(
            "{\"type\":\"t\"}\n{\"key\":\"a\",\"type\":\"t\"}",
            BodyFormat::NdJson,
        )
        .unwrap();
        assert_eq!(d.untimed, vec![0], "positions in `events`, not in the body");
    }

    #[test]
    fn bad_events_are_rejected_one_by_one() {
        let body = r#"[{"key":"a","type":"t"},{"type":"t"},{"key":"a","type":"t","amount":3}]"#;
        let d = run(body, BodyFormat::Json).unwrap();
        assert_eq!(d.events.len(), 1);
        assert_eq!(d.rejected.len(), 2);
        assert_eq!(d.rejected[0].index, 1);
        assert!(
            d.rejected[0].error.contains("`key`"),
            "{}",
            d.rejected[0].error
        );
        assert_eq!(d.rejected[0].raw, json!({"type": "t"}));
        assert!(d.rejected[1].error.contains("unknown field `amount`"));
    }

    #[test]
    fn unreadable_bodies_and_too_many_events_refuse_the_request() {
        assert!(matches!(
            run("{nope", BodyFormat::Json),
            Err(DecodeError::Unparseable(_))
        ));
        assert!(matches!(
            run("42", BodyFormat::Json),
            Err(DecodeError::Unparseable(_))
        ));
        assert!(matches!(
            run("nope\nnope", BodyFormat::NdJson),
            Err(DecodeError::Unparseable(_))
        ));
        let four = r#"[{"key":"a","type":"t"},{"key":"a","type":"t"},{"key":"a","type":"t"},{"key":"a","type":"t"}]"#;
        assert_eq!(
            run(four, BodyFormat::Json),
            Err(DecodeError::TooManyEvents { count: 4, limit: 3 })
        );
    }

    #[test]
    fn ndjson_indexes_are_line_numbers_blank_lines_included() {
        let d = run(
            "\n{\"key\":\"a\",\"type\":\"t\"}\r\n\n{\"type\":\"t\"}\n",
            BodyFormat::NdJson,
        )
        .unwrap();
        assert_eq!(d.events[0].0, 1);
        assert_eq!(d.rejected[0].index, 3);
    }

    #[test]
    fn a_broken_ndjson_line_is_one_rejection() {
        let d = run(
            "{\"key\":\"a\",\"type\":\"t\"}\n{oops\n",
            BodyFormat::NdJson,
        )
        .unwrap();
        assert_eq!(d.events.len(), 1);
        assert_eq!(d.rejected[0].index, 1);
        assert!(d.rejected[0].error.contains("not valid JSON"));
    }

    #[test]
    fn cloudevents_map_subject_to_key() {
        let ce = r#"{"specversion":"1.0","id":"c1","source":"/bank","type":"login","subject":"acct-1",
                     "time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","data":{"ip":"1.2.3.4"},"traceparent":"x"}"#;
        let d = run(ce, BodyFormat::CloudEvent).unwrap();
        let e = &d.events[0].1;
        assert_eq!(
            (e.key.as_str(), e.event_type.as_str(), e.id.as_deref()),
            ("acct-1", "login", Some("c1"))
        );
        let batch = format!("[{ce}, {{\"specversion\":\"0.3\",\"type\":\"t\",\"subject\":\"k\"}}]");
        let d = run(&batch, BodyFormat::CloudEventBatch).unwrap();
        assert_eq!(d.events.len(), 1);
        assert!(d.rejected[0].error.contains("specversion"));
        assert!(matches!(
            run(ce, BodyFormat::CloudEventBatch),
            Err(DecodeError::Unparseable(_))
        ));
    }

    #[test]
    fn content_types_map_to_formats() {
        assert_eq!(
            BodyFormat::from_content_type(Some("application/json; charset=utf-8")),
            Some(BodyFormat::Json)
        );
        assert_eq!(
            BodyFormat::from_content_type(Some("application/x-ndjson")),
            Some(BodyFormat::NdJson)
        );
        assert_eq!(BodyFormat::from_content_type(None), Some(BodyFormat::Json));
        assert_eq!(BodyFormat::from_content_type(Some("text/plain")), None);
    }
}
