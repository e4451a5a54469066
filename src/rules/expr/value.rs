//! The values an expression computes with.
//!
//! A [`Val`] borrows wherever it can: strings, lists and objects from the
//! event's JSON, the entity's attributes or the expression's constants are
//! referenced, not copied, so evaluating a typical predicate allocates
//! nothing. Only computed values (string concatenation, `lowerAscii()`, list
//! literals with computed elements, `map()`) own their contents.

use std::borrow::Cow;

use serde_json::{Map, Number, Value};

use crate::event::Event;
use crate::time::{Duration, Timestamp};

/// One value during evaluation; `'a` is the life of the event, the context
/// and the compiled expression it may borrow from.
#[derive(Debug, Clone)]
pub(crate) enum Val<'a> {
    /// JSON `null`, or a missing optional event `id`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A signed 64-bit integer; JSON integers that fit are ints.
    Int(i64),
    /// An unsigned 64-bit integer; JSON integers above `i64::MAX` are uints.
    Uint(u64),
    /// A 64-bit float; every other JSON number is a double.
    Double(f64),
    /// A string.
    Str(Cow<'a, str>),
    /// A list.
    List(List<'a>),
    /// A map (a JSON object, or a map literal).
    Map(MapVal<'a>),
    /// A point in time, milliseconds since the epoch.
    Timestamp(Timestamp),
    /// A length of time in milliseconds (may be negative after subtraction).
    Duration(Duration),
    /// A whole event (`step.first`, `step.last`).
    Event(&'a Event),
}

/// A list value.
///
/// NB: not a `Cow<[Val]>`: `Cow` is invariant in its parameter, which would
/// make `Val<'a>` invariant and stop constants (`Val<'static>`) from being
/// lent out as `Val<'a>`.
#[derive(Debug, Clone)]
pub(crate) enum List<'a> {
    /// A JSON array from the event or the entity.
    Json(&'a [Value]),
    /// A list held elsewhere (a constant).
    Borrowed(&'a [Val<'a>]),
    /// A computed list.
    Owned(Vec<Val<'a>>),
}

/// A map value.
#[derive(Debug, Clone)]
pub(crate) enum MapVal<'a> {
    /// A JSON object from the event or the entity: string keys only.
    Json(&'a Map<String, Value>),
    /// A map held elsewhere (a constant map literal).
    Borrowed(&'a [(Val<'a>, Val<'a>)]),
    /// A computed map literal; keys are distinct strings, ints, uints or bools.
    Owned(Vec<(Val<'a>, Val<'a>)>),
}

impl<'a> Val<'a> {
    /// The value of a JSON document, borrowed; never allocates.
    pub(crate) fn from_json(value: &'a Value) -> Val<'a> {
        match value {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => number_val(n),
            Value::String(s) => Val::Str(Cow::Borrowed(s)),
            Value::Array(items) => Val::List(List::Json(items)),
            Value::Object(map) => Val::Map(MapVal::Json(map)),
        }
    }

    /// A value that borrows from `self` instead of copying its contents.
    pub(crate) fn borrowed(&self) -> Val<'_> {
        match self {
            Val::Str(s) => Val::Str(Cow::Borrowed(s)),
            Val::List(list) => Val::List(match list {
                List::Json(items) => List::Json(items),
                List::Borrowed(items) => List::Borrowed(items),
                List::Owned(items) => List::Borrowed(items),
            }),
            Val::Map(map) => Val::Map(match map {
                MapVal::Json(m) => MapVal::Json(m),
                MapVal::Borrowed(entries) => MapVal::Borrowed(entries),
                MapVal::Owned(entries) => MapVal::Borrowed(entries),
            }),
            Val::Null => Val::Null,
            Val::Bool(b) => Val::Bool(*b),
            Val::Int(i) => Val::Int(*i),
            Val::Uint(u) => Val::Uint(*u),
            Val::Double(d) => Val::Double(*d),
            Val::Timestamp(t) => Val::Timestamp(*t),
            Val::Duration(d) => Val::Duration(*d),
            Val::Event(e) => Val::Event(e),
        }
    }

    /// A copy that owns all its contents, for keeping as a constant. `None`
    /// for values that only exist while evaluating against an event.
    pub(crate) fn into_static(self) -> Option<Val<'static>> {
        Some(match self {
            Val::Null => Val::Null,
            Val::Bool(b) => Val::Bool(b),
            Val::Int(i) => Val::Int(i),
            Val::Uint(u) => Val::Uint(u),
            Val::Double(d) => Val::Double(d),
            Val::Timestamp(t) => Val::Timestamp(t),
            Val::Duration(d) => Val::Duration(d),
            Val::Str(s) => Val::Str(Cow::Owned(s.into_owned())),
            Val::List(list) => {
                let items: Option<Vec<Val<'static>>> =
                    list.iter().map(|v| v.into_static()).collect();
                Val::List(List::Owned(items?))
            }
            Val::Map(map) => {
                let mut entries = Vec::with_capacity(map.len());
                for (k, v) in map.entries() {
                    entries.push((k.into_static()?, v.into_static()?));
                }
                Val::Map(MapVal::Owned(entries))
            }
            Val::Event(_) => return None,
        })
    }

    /// The value as a float, for ints, uints and doubles.
    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Uint(u) => Some(*u as f64),
            Val::Double(d) => Some(*d),
            _ => None,
        }
    }

    /// The canonical text of a scalar: strings as they are, numbers and
    /// bools as in [`format_double`] / decimal / `true`, timestamps in RFC
    /// 3339 with milliseconds, durations as `1h30m`. `None` for null, lists,
    /// maps, events and non-finite doubles.
    pub(crate) fn to_text(&self) -> Option<String> {
        match self {
            Val::Str(s) => Some(s.to_string()),
            Val::Int(i) => Some(i.to_string()),
            Val::Uint(u) => Some(u.to_string()),
            Val::Double(d) => format_double(*d),
            Val::Bool(b) => Some(b.to_string()),
            Val::Timestamp(t) => Some(t.to_rfc3339()),
            Val::Duration(d) => Some(d.to_string()),
            Val::Null | Val::List(_) | Val::Map(_) | Val::Event(_) => None,
        }
    }

    /// The value as JSON: timestamps as RFC 3339 strings, durations as
    /// `1h30m` strings, events as their JSON form. `None` when a double is
    /// not finite (JSON cannot hold it).
    pub(crate) fn to_json(&self) -> Option<Value> {
        Some(match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Int(i) => Value::from(*i),
            Val::Uint(u) => Value::from(*u),
            Val::Double(d) => Value::Number(Number::from_f64(*d)?),
            Val::Str(s) => Value::String(s.to_string()),
            Val::Timestamp(t) => Value::String(t.to_rfc3339()),
            Val::Duration(d) => Value::String(d.to_string()),
            Val::Event(e) => serde_json::to_value(e).ok()?,
            Val::List(List::Json(items)) => Value::Array(items.to_vec()),
            Val::List(list) => {
                Value::Array(list.iter().map(|v| v.to_json()).collect::<Option<_>>()?)
            }
            Val::Map(MapVal::Json(map)) => Value::Object((*map).clone()),
            Val::Map(map) => {
                let mut object = Map::new();
                for (k, v) in map.entries() {
                    object.insert(k.to_text()?, v.to_json()?);
                }
                Value::Object(object)
            }
        })
    }
}

/// A JSON number as an int when it is an integer that fits, a uint when it
/// is a larger positive integer, a double otherwise.
fn number_val(n: &Number) -> Val<'static> {
    if let Some(i) = n.as_i64() {
        Val::Int(i)
    } else if let Some(u) = n.as_u64() {
        Val::Uint(u)
    } else {
        Val::Double(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// The canonical text of a double: the shortest decimal that reads back as
/// the same value, never in exponent form, and without a fraction when the
/// value is integral (`3.0` is `3`, `-0.0` is `0`), so that numerically
/// equal ints and doubles give the same text. `None` for NaN and infinities.
pub(crate) fn format_double(d: f64) -> Option<String> {
    if !d.is_finite() {
        return None;
    }
    if d == 0.0 {
        // NB: also catches -0.0, which Rust prints as "-0".
        return Some("0".to_owned());
    }
    Some(d.to_string())
}

impl<'a> List<'a> {
    /// Number of elements.
    pub(crate) fn len(&self) -> usize {
        match self {
            List::Json(items) => items.len(),
            List::Borrowed(items) => items.len(),
            List::Owned(items) => items.len(),
        }
    }

    /// The elements, borrowed from the list.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Val<'_>> {
        let (json, vals): (&[Value], &[Val<'_>]) = match self {
            List::Json(items) => (items, &[]),
            List::Borrowed(items) => (&[], items),
            List::Owned(items) => (&[], items),
        };
        json.iter()
            .map(Val::from_json)
            .chain(vals.iter().map(Val::borrowed))
    }

    /// The element at `index`, moved out of the list.
    pub(crate) fn into_item(self, index: usize) -> Option<Val<'a>> {
        match self {
            List::Json(items) => items.get(index).map(Val::from_json),
            List::Borrowed(items) => items.get(index).map(Val::borrowed),
            List::Owned(mut items) => (index < items.len()).then(|| items.swap_remove(index)),
        }
    }

    /// The elements, moved out of the list.
    pub(crate) fn into_items(self) -> Items<'a> {
        match self {
            List::Json(items) => Items::Json(items.iter()),
            List::Borrowed(items) => Items::Borrowed(items.iter()),
            List::Owned(items) => Items::Owned(items.into_iter()),
        }
    }
}

impl<'a> MapVal<'a> {
    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        match self {
            MapVal::Json(map) => map.len(),
            MapVal::Borrowed(entries) => entries.len(),
            MapVal::Owned(entries) => entries.len(),
        }
    }

    /// The entries, borrowed from the map.
    pub(crate) fn entries(&self) -> Box<dyn Iterator<Item = (Val<'_>, Val<'_>)> + '_> {
        // NB: boxed because the three shapes iterate differently; only used
        // off the hot path (equality of whole maps, JSON output, constants).
        match self {
            MapVal::Json(map) => Box::new(
                map.iter()
                    .map(|(k, v)| (Val::Str(Cow::Borrowed(k)), Val::from_json(v))),
            ),
            MapVal::Borrowed(entries) => {
                Box::new(entries.iter().map(|(k, v)| (k.borrowed(), v.borrowed())))
            }
            MapVal::Owned(entries) => {
                Box::new(entries.iter().map(|(k, v)| (k.borrowed(), v.borrowed())))
            }
        }
    }

    /// The value under `key`, borrowed from the map.
    pub(crate) fn get(&self, key: &Val<'_>) -> Option<Val<'_>> {
        match self {
            MapVal::Json(map) => match key {
                Val::Str(k) => map.get(k.as_ref()).map(Val::from_json),
                _ => None,
            },
            MapVal::Borrowed(entries) => find_entry(entries, key).map(Val::borrowed),
            MapVal::Owned(entries) => find_entry(entries, key).map(Val::borrowed),
        }
    }

    /// The value under the string `key`, moved out of the map.
    pub(crate) fn into_field(self, key: &str) -> Option<Val<'a>> {
        let key = Val::Str(Cow::Borrowed(key));
        self.into_value(&key)
    }

    /// The value under `key`, moved out of the map.
    pub(crate) fn into_value(self, key: &Val<'_>) -> Option<Val<'a>> {
        match self {
            MapVal::Json(map) => match key {
                Val::Str(k) => map.get(k.as_ref()).map(Val::from_json),
                _ => None,
            },
            MapVal::Borrowed(entries) => find_entry(entries, key).map(Val::borrowed),
            MapVal::Owned(mut entries) => {
                let at = entries.iter().position(|(k, _)| key_equals(k, key))?;
                Some(entries.swap_remove(at).1)
            }
        }
    }

    /// True when `key` is one of the map's keys.
    pub(crate) fn contains_key(&self, key: &Val<'_>) -> bool {
        match self {
            MapVal::Json(map) => matches!(key, Val::Str(k) if map.contains_key(k.as_ref())),
            MapVal::Borrowed(entries) => find_entry(entries, key).is_some(),
            MapVal::Owned(entries) => find_entry(entries, key).is_some(),
        }
    }

    /// The keys, moved out of the map (what macros iterate over a map).
    pub(crate) fn into_keys(self) -> Items<'a> {
        match self {
            MapVal::Json(map) => Items::JsonKeys(map.keys()),
            MapVal::Borrowed(entries) => Items::Owned(
                entries
                    .iter()
                    .map(|(k, _)| k.borrowed())
                    .collect::<Vec<_>>()
                    .into_iter(),
            ),
            MapVal::Owned(entries) => Items::Owned(
                entries
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect::<Vec<_>>()
                    .into_iter(),
            ),
        }
    }
}

fn find_entry<'e, 'a>(entries: &'e [(Val<'a>, Val<'a>)], key: &Val<'_>) -> Option<&'e Val<'a>> {
    entries
        .iter()
        .find(|(k, _)| key_equals(k, key))
        .map(|(_, v)| v)
}

/// Map keys are equal when they are the same string or bool, or numerically
/// equal integers (an int key and a uint key can match).
pub(crate) fn key_equals(a: &Val<'_>, b: &Val<'_>) -> bool {
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Int(x), Val::Int(y)) => x == y,
        (Val::Uint(x), Val::Uint(y)) => x == y,
        (Val::Int(i), Val::Uint(u)) | (Val::Uint(u), Val::Int(i)) => u64::try_from(*i) == Ok(*u),
        _ => false,
    }
}

/// The elements of a list or the keys of a map, by value, as macros iterate them.
pub(crate) enum Items<'a> {
    /// Elements of a JSON array.
    Json(std::slice::Iter<'a, Value>),
    /// Elements of a constant list.
    Borrowed(std::slice::Iter<'a, Val<'a>>),
    /// Elements of a computed list, or keys of a literal map.
    Owned(std::vec::IntoIter<Val<'a>>),
    /// Keys of a JSON object.
    JsonKeys(serde_json::map::Keys<'a>),
}

impl<'a> Iterator for Items<'a> {
    type Item = Val<'a>;

    fn next(&mut self) -> Option<Val<'a>> {
        match self {
            Items::Json(items) => items.next().map(Val::from_json),
            Items::Borrowed(items) => items.next().map(Val::borrowed),
            Items::Owned(items) => items.next(),
            Items::JsonKeys(keys) => keys.next().map(|k| Val::Str(Cow::Borrowed(k))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_numbers_become_int_uint_or_double() {
        assert!(matches!(Val::from_json(&json!(42)), Val::Int(42)));
        assert!(matches!(Val::from_json(&json!(-42)), Val::Int(-42)));
        assert!(matches!(
            Val::from_json(&json!(u64::MAX)),
            Val::Uint(u64::MAX)
        ));
        assert!(matches!(Val::from_json(&json!(1.5)), Val::Double(d) if d == 1.5));
        assert!(matches!(Val::from_json(&json!(3.0)), Val::Double(d) if d == 3.0));
    }

    #[test]
    fn doubles_print_canonically() {
        assert_eq!(format_double(3.0).as_deref(), Some("3"));
        assert_eq!(format_double(-0.0).as_deref(), Some("0"));
        assert_eq!(format_double(0.1).as_deref(), Some("0.1"));
        assert_eq!(format_double(-2.5).as_deref(), Some("-2.5"));
        assert_eq!(
            format_double(1e21).as_deref(),
            Some("1000000000000000000000")
        );
        assert_eq!(format_double(1e-7).as_deref(), Some("0.0000001"));
        assert_eq!(format_double(f64::NAN), None);
        assert_eq!(format_double(f64::INFINITY), None);
    }

    #[test]
    fn int_and_uint_keys_match_numerically() {
        assert!(key_equals(&Val::Int(1), &Val::Uint(1)));
        assert!(!key_equals(&Val::Int(-1), &Val::Uint(u64::MAX)));
        assert!(!key_equals(&Val::Int(1), &Val::Str("1".into())));
    }

    #[test]
    fn owned_values_round_trip_through_static() {
        let list = Val::List(List::Owned(vec![Val::Str("a".into()), Val::Int(1)]));
        let kept = list.into_static().expect("no event inside");
        assert_eq!(kept.to_json(), Some(json!(["a", 1])));
    }
}
