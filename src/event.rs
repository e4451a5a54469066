//! The event: what producers send about one keyed entity.
//!
//! This module holds the checked, normalized form every other part of
//! cepheus works with. Decoding request bodies (JSON, NDJSON, CloudEvents)
//! into it lives in `crate::ingest`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::Timestamp;

/// One accepted event about one entity.
///
/// # Invariants
/// `key` and `type` are non-empty and within [`EventLimits`]; `data` is a
/// JSON object (empty when the producer sent none).
///
/// Serialized (by hand, see [`Serialize`] below) without `id` when it has
/// none in JSON, with every field in positional binary formats.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Event {
    /// Producer-chosen id, used to drop retried duplicates per key.
    #[serde(default)]
    pub id: Option<String>,
    /// The entity the event belongs to (an account, a device, a patient).
    pub key: String,
    /// What happened, e.g. `login_failed`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Event time; the acceptance time when the producer sent none.
    pub time: Timestamp,
    /// The payload: any JSON object.
    #[serde(default)]
    pub data: Map<String, Value>,
}

/// A short reference to an event, as alerts list the events that explain them.
// NB: serialized like `Event` (by hand, below): `id` left out in JSON when
// absent, every field present in binary formats.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct EventRef {
    /// The producer's id, if it gave one.
    #[serde(default)]
    pub id: Option<String>,
    /// The event's type (shared: many references name the same few types).
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub event_type: Arc<str>,
    /// The event's time.
    pub time: Timestamp,
    /// Position of the event in its entity's stream (1 for the first event
    /// the entity accepted). Stable across restarts; used to build
    /// deterministic alert ids.
    pub ordinal: u64,
}

impl EventRef {
    /// A reference to `event`, the `ordinal`-th event of its entity.
    pub fn of(event: &Event, ordinal: u64) -> EventRef {
        EventRef::named(event, ordinal, &Arc::from(event.event_type.as_str()))
    }

    /// As [`EventRef::of`], with the event's type already shared as `name`
    /// (the engine keeps one copy of each type its rules name).
    pub fn named(event: &Event, ordinal: u64, name: &Arc<str>) -> EventRef {
        EventRef {
            id: event.id.clone(),
            event_type: Arc::clone(name),
            time: event.time,
            ordinal,
        }
    }
}

// NB: `skip_serializing_if` cannot tell JSON from MessagePack, and a field
// left out of a positional record (entity snapshots are stored as arrays,
// `crate::store::codec`) shifts every field after it. So `id` is left out
// only where the format is human-readable (JSON: the wire and dead letters).
impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let omit_id = self.id.is_none() && serializer.is_human_readable();
        let mut s = serializer.serialize_struct("Event", if omit_id { 4 } else { 5 })?;
        if omit_id {
            s.skip_field("id")?;
        } else {
            s.serialize_field("id", &self.id)?;
        }
        s.serialize_field("key", &self.key)?;
        s.serialize_field("type", &self.event_type)?;
        s.serialize_field("time", &self.time)?;
        s.serialize_field("data", &self.data)?;
        s.end()
    }
}

impl Serialize for EventRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let omit_id = self.id.is_none() && serializer.is_human_readable();
        let mut s = serializer.serialize_struct("EventRef", if omit_id { 3 } else { 4 })?;
        if omit_id {
            s.skip_field("id")?;
        } else {
            s.serialize_field("id", &self.id)?;
        }
        s.serialize_field("type", &self.event_type)?;
        s.serialize_field("time", &self.time)?;
        s.serialize_field("ordinal", &self.ordinal)?;
        s.end()
    }
}

/// Limits on a single event. Each is named in `docs/limits.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventLimits {
    /// Longest `key`, in bytes.
    pub max_key_bytes: usize,
    /// Longest `type`, in bytes.
    pub max_type_bytes: usize,
    /// Longest `id`, in bytes.
    pub max_id_bytes: usize,
    /// Largest `data` object, serialized, in bytes.
    pub max_data_bytes: usize,
    /// Deepest nesting of objects and arrays inside `data`.
    pub max_data_depth: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits {
            max_key_bytes: 256,
            max_type_bytes: 128,
            max_id_bytes: 256,
            max_data_bytes: 64 * 1024,
            max_data_depth: 32,
        }
    }
}

/// Why an event was rejected. Each message is a sentence the producer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// `key` missing or empty.
    #[error("`key` is required and must be a non-empty string")]
    MissingKey,
    /// `type` missing or empty.
    #[error("`type` is required and must be a non-empty string")]
    MissingType,
    /// A string field is longer than its limit.
    #[error("`{field}` is {actual} bytes long; the limit is {limit}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        actual: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// `data` is larger than its limit.
    #[error("`data` is {actual} bytes serialized; the limit is {limit}")]
    DataTooLarge {
        /// Serialized size in bytes.
        actual: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// `data` nests deeper than its limit.
    #[error("`data` nests deeper than {limit} levels")]
    DataTooDeep {
        /// The limit in levels.
        limit: usize,
    },
    /// Anything else wrong with the shape of the event.
    #[error("{0}")]
    Invalid(String),
}

impl Event {
    /// Checks `self` against `limits`. `data_bytes` is the serialized size of
    /// `data` when the caller already knows it (from the request body), to
    /// avoid serializing it again.
    pub fn check(&self, limits: &EventLimits, data_bytes: Option<usize>) -> Result<(), EventError> {
        if self.key.is_empty() {
            return Err(EventError::MissingKey);
        }
        if self.event_type.is_empty() {
            return Err(EventError::MissingType);
        }
        check_len("key", &self.key, limits.max_key_bytes)?;
        check_len("type", &self.event_type, limits.max_type_bytes)?;
        if let Some(id) = &self.id {
            check_len("id", id, limits.max_id_bytes)?;
        }
        if depth_exceeds(&self.data, limits.max_data_depth) {
            return Err(EventError::DataTooDeep {
                limit: limits.max_data_depth,
            });
        }
        let size = match data_bytes {
            Some(n) => n,
            // NB: serializing to measure is costly; a cheap upper bound
            // settles the common case of a payload far below the limit.
            None if json_size_bound(&self.data) <= limits.max_data_bytes => 0,
            None => serde_json::to_vec(&self.data).map_or(usize::MAX, |v| v.len()),
        };
        if size > limits.max_data_bytes {
            return Err(EventError::DataTooLarge {
                actual: size,
                limit: limits.max_data_bytes,
            });
        }
        Ok(())
    }
}

fn check_len(field: &'static str, value: &str, limit: usize) -> Result<(), EventError> {
    if value.len() > limit {
        return Err(EventError::TooLong {
            field,
            actual: value.len(),
            limit,
        });
    }
    Ok(())
}

/// True when `data` (itself level 1) nests objects and arrays deeper than
/// `limit` levels. Iterative, so hostile nesting cannot exhaust the stack.
fn depth_exceeds(data: &Map<String, Value>, limit: usize) -> bool {
    if limit == 0 {
        return true;
    }
    let mut stack: Vec<(&Value, usize)> = data.values().map(|v| (v, 2)).collect();
    while let Some((value, level)) = stack.pop() {
        match value {
            Value::Object(map) => {
                if level > limit {
                    return true;
                }
                stack.extend(map.values().map(|c| (c, level + 1)));
            }
            Value::Array(items) => {
                if level > limit {
                    return true;
                }
                stack.extend(items.iter().map(|c| (c, level + 1)));
            }
            _ => {}
        }
    }
    false
}

/// An upper bound of the serialized size of `data`, without serializing:
/// every string counted as if each byte needed a 6-byte escape, every
/// number at its longest.
fn json_size_bound(data: &Map<String, Value>) -> usize {
    fn bound(value: &Value) -> usize {
        match value {
            Value::Null | Value::Bool(_) => 5,
            Value::Number(_) => 24,
            Value::String(s) => 2 + 6 * s.len(),
            Value::Array(items) => 2 + items.iter().map(|v| bound(v) + 1).sum::<usize>(),
            Value::Object(map) => {
                2 + map
                    .iter()
                    .map(|(k, v)| 4 + 6 * k.len() + bound(v))
                    .sum::<usize>()
            }
        }
    }
    2 + data
        .iter()
        .map(|(k, v)| 4 + 6 * k.len() + bound(v))
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(data: Value) -> Event {
        Event {
            id: None,
            key: "acct-1".into(),
            event_type: "login".into(),
            time: Timestamp(0),
            data: data.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn depth_counts_data_itself_as_level_one() {
        let limits = EventLimits {
            max_data_depth: 2,
            ..EventLimits::default()
        };
        assert!(event(json!({"a": {"b": 1}})).check(&limits, None).is_ok());
        assert_eq!(
            event(json!({"a": {"b": {"c": 1}}})).check(&limits, None),
            Err(EventError::DataTooDeep { limit: 2 })
        );
    }

    #[test]
    fn empty_key_and_long_type_are_rejected() {
        let limits = EventLimits::default();
        let mut e = event(json!({}));
        e.key.clear();
        assert_eq!(e.check(&limits, None), Err(EventError::MissingKey));
        let mut e = event(json!({}));
        e.event_type = "x".repeat(129);
        assert!(matches!(
            e.check(&limits, None),
            Err(EventError::TooLong { field: "type", .. })
        ));
    }
}

#[cfg(test)]
mod size_bound_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_size_bound_is_never_below_the_serialized_size() {
        for value in [
            json!({}),
            json!({"a": 1, "b": -1.5e300, "c": null, "d": true}),
            json!({"quote\"s": "\"\\\n\u{1}é", "nested": {"list": [1, "x", [], {}]}}),
            json!({"s": "\u{0}".repeat(50)}),
        ] {
            let map = value.as_object().unwrap();
            let actual = serde_json::to_vec(map).unwrap().len();
            assert!(json_size_bound(map) >= actual, "{value}");
        }
    }
}
