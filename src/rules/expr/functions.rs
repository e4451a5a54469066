//! The built-in functions: their names, how they are called, and what they
//! compute. Macros (`has`, `exists`, ...) and `matches` are compiled
//! specially and only listed here so that error messages can name them.

use std::borrow::Cow;

use super::error::EvalError;
use super::value::{format_double, Val};
use crate::time::{Duration, Timestamp};

/// A built-in function with a fixed number of arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    /// `size(x)` / `x.size()`: characters of a string, elements of a list or map.
    Size,
    /// `s.startsWith(prefix)`
    StartsWith,
    /// `s.endsWith(suffix)`
    EndsWith,
    /// `s.contains(part)`
    Contains,
    /// `s.lowerAscii()`
    LowerAscii,
    /// `s.upperAscii()`
    UpperAscii,
    /// `int(x)`
    Int,
    /// `uint(x)`
    Uint,
    /// `double(x)`
    Double,
    /// `string(x)`
    String,
    /// `bool(x)`
    Bool,
    /// `timestamp(x)`
    Timestamp,
    /// `duration(x)`
    Duration,
}

/// How a function is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// `f(x, ...)` only.
    Global,
    /// `x.f(...)` only.
    Method,
    /// Either form.
    Both,
}

/// One entry of the function table.
pub(crate) struct Signature {
    /// The name as written.
    pub name: &'static str,
    /// The function.
    pub func: Func,
    /// Allowed call forms.
    pub form: Form,
    /// Number of arguments, counting the receiver of a method call.
    pub arity: usize,
    /// How to write a call, for error messages.
    pub usage: &'static str,
}

/// Every built-in function.
pub(crate) const FUNCTIONS: &[Signature] = &[
    sig("size", Func::Size, Form::Both, 1, "size(x) or x.size()"),
    sig(
        "startsWith",
        Func::StartsWith,
        Form::Method,
        2,
        "text.startsWith(\"prefix\")",
    ),
    sig(
        "endsWith",
        Func::EndsWith,
        Form::Method,
        2,
        "text.endsWith(\"suffix\")",
    ),
    sig(
        "contains",
        Func::Contains,
        Form::Method,
        2,
        "text.contains(\"part\")",
    ),
    sig(
        "lowerAscii",
        Func::LowerAscii,
        Form::Method,
        1,
        "text.lowerAscii()",
    ),
    sig(
        "upperAscii",
        Func::UpperAscii,
        Form::Method,
        1,
        "text.upperAscii()",
    ),
    sig("int", Func::Int, Form::Global, 1, "int(x)"),
    sig("uint", Func::Uint, Form::Global, 1, "uint(x)"),
    sig("double", Func::Double, Form::Global, 1, "double(x)"),
    sig("string", Func::String, Form::Global, 1, "string(x)"),
    sig("bool", Func::Bool, Form::Global, 1, "bool(x)"),
    sig(
        "timestamp",
        Func::Timestamp,
        Form::Global,
        1,
        "timestamp(\"2026-01-01T00:00:00Z\")",
    ),
    sig(
        "duration",
        Func::Duration,
        Form::Global,
        1,
        "duration(\"5m\")",
    ),
];

/// Names compiled specially, with how to write them.
pub(crate) const SPECIAL_FORMS: &[(&str, &str)] = &[
    ("matches", "text.matches(\"regex\")"),
    ("has", "has(x.field)"),
    ("exists", "list.exists(x, predicate)"),
    ("all", "list.all(x, predicate)"),
    ("exists_one", "list.exists_one(x, predicate)"),
    (
        "map",
        "list.map(x, expression) or list.map(x, predicate, expression)",
    ),
    ("filter", "list.filter(x, predicate)"),
];

const fn sig(
    name: &'static str,
    func: Func,
    form: Form,
    arity: usize,
    usage: &'static str,
) -> Signature {
    Signature {
        name,
        func,
        form,
        arity,
        usage,
    }
}

/// The signature named `name`.
pub(crate) fn lookup(name: &str) -> Option<&'static Signature> {
    FUNCTIONS.iter().find(|s| s.name == name)
}

/// Every supported function and macro name, for "unknown function" messages.
pub(crate) fn supported_names() -> String {
    let names: Vec<&str> = FUNCTIONS
        .iter()
        .map(|s| s.name)
        .chain(SPECIAL_FORMS.iter().map(|(name, _)| *name))
        .collect();
    names.join(", ")
}

impl Func {
    /// The function's name as written.
    pub(crate) fn name(self) -> &'static str {
        FUNCTIONS
            .iter()
            .find(|s| s.func == self)
            .map_or("?", |s| s.name)
    }

    /// Applies the function to its one or two arguments (the receiver first).
    pub(crate) fn apply<'a>(
        self,
        first: Val<'a>,
        second: Option<Val<'a>>,
    ) -> Result<Val<'a>, EvalError> {
        let wrong = EvalError::WrongTypes(self.name());
        match (self, first, second) {
            (Func::Size, v, None) => size(&v).ok_or(wrong),
            (Func::StartsWith, Val::Str(s), Some(Val::Str(p))) => {
                Ok(Val::Bool(s.starts_with(p.as_ref())))
            }
            (Func::EndsWith, Val::Str(s), Some(Val::Str(p))) => {
                Ok(Val::Bool(s.ends_with(p.as_ref())))
            }
            (Func::Contains, Val::Str(s), Some(Val::Str(p))) => {
                Ok(Val::Bool(s.contains(p.as_ref())))
            }
            (Func::LowerAscii, Val::Str(s), None) => {
                Ok(Val::Str(Cow::Owned(s.to_ascii_lowercase())))
            }
            (Func::UpperAscii, Val::Str(s), None) => {
                Ok(Val::Str(Cow::Owned(s.to_ascii_uppercase())))
            }
            (Func::Int, v, None) => to_int(v),
            (Func::Uint, v, None) => to_uint(v),
            (Func::Double, v, None) => to_double(v),
            (Func::String, v, None) => to_string(v),
            (Func::Bool, v, None) => to_bool(v),
            (Func::Timestamp, v, None) => to_timestamp(v),
            (Func::Duration, v, None) => to_duration(v),
            _ => Err(wrong),
        }
    }
}

fn size(v: &Val<'_>) -> Option<Val<'static>> {
    let n = match v {
        // NB: CEL counts code points, not bytes.
        Val::Str(s) => s.chars().count(),
        Val::List(list) => list.len(),
        Val::Map(map) => map.len(),
        _ => return None,
    };
    i64::try_from(n).ok().map(Val::Int)
}

fn to_int(v: Val<'_>) -> Result<Val<'_>, EvalError> {
    let bad = EvalError::BadConversion("int");
    match v {
        Val::Int(i) => Ok(Val::Int(i)),
        Val::Uint(u) => i64::try_from(u).map(Val::Int).map_err(|_| bad),
        // NB: truncates toward zero; the upper bound 2^63 is exclusive because
        // it does not fit, the lower bound -2^63 is i64::MIN.
        Val::Double(d)
            if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&d) =>
        {
            Ok(Val::Int(d as i64))
        }
        Val::Str(s) => s.trim().parse().map(Val::Int).map_err(|_| bad),
        // CEL: seconds since the epoch.
        Val::Timestamp(t) => Ok(Val::Int(t.0.div_euclid(1000))),
        _ => Err(bad),
    }
}

fn to_uint(v: Val<'_>) -> Result<Val<'_>, EvalError> {
    let bad = EvalError::BadConversion("uint");
    match v {
        Val::Uint(u) => Ok(Val::Uint(u)),
        Val::Int(i) => u64::try_from(i).map(Val::Uint).map_err(|_| bad),
        Val::Double(d) if d.is_finite() && d > -1.0 && d < 18_446_744_073_709_551_616.0 => {
            Ok(Val::Uint(d as u64))
        }
        Val::Str(s) => s.trim().parse().map(Val::Uint).map_err(|_| bad),
        _ => Err(bad),
    }
}

fn to_double(v: Val<'_>) -> Result<Val<'_>, EvalError> {
    match v {
        Val::Double(d) => Ok(Val::Double(d)),
        Val::Int(i) => Ok(Val::Double(i as f64)),
        Val::Uint(u) => Ok(Val::Double(u as f64)),
        Val::Str(s) => s
            .trim()
            .parse()
            .map(Val::Double)
            .map_err(|_| EvalError::BadConversion("double")),
        _ => Err(EvalError::BadConversion("double")),
    }
}

fn to_string(v: Val<'_>) -> Result<Val<'_>, EvalError> {
    match v {
        Val::Str(s) => Ok(Val::Str(s)),
        Val::Double(d) => format_double(d)
            .map(|s| Val::Str(Cow::Owned(s)))
            .ok_or(EvalError::BadConversion("string")),
        other => other
            .to_text()
            .map(|s| Val::Str(Cow::Owned(s)))
            .ok_or(EvalError::BadConversion("string")),
    }
}

fn to_bool(v: Val<'_>) -> Result<Val<'_>, EvalError> {
    match v {
        Val::Bool(b) => Ok(Val::Bool(b)),
        Val::Str(s) if s == "true" => Ok(Val::Bool(true)),
        Val::Str(s) if s == "false" => Ok(Val::Bool(false)),
        _ => Err(EvalError::BadConversion("bool")),
    }
}

fn to_timestamp(v: Val<'_>) -> Result<Val<'_>, EvalError> {
    let bad = EvalError::BadConversion("timestamp");
    match v {
        Val::Timestamp(t) => Ok(Val::Timestamp(t)),
        Val::Str(s) => Timestamp::parse_rfc3339(&s)
            .map(Val::Timestamp)
            .map_err(|_| bad),
        // CEL: seconds since the epoch.
        Val::Int(secs) => secs
            .checked_mul(1000)
            .map(|ms| Val::Timestamp(Timestamp(ms)))
            .ok_or(bad),
        _ => Err(bad),
    }
}

fn to_duration(v: Val<'_>) -> Result<Val<'_>, EvalError> {
    match v {
        Val::Duration(d) => Ok(Val::Duration(d)),
        Val::Str(s) => Duration::parse(&s)
            .map(Val::Duration)
            .map_err(|_| EvalError::BadConversion("duration")),
        _ => Err(EvalError::BadConversion("duration")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Val<'_> {
        Val::Str(Cow::Borrowed(text))
    }

    fn text(v: Result<Val<'_>, EvalError>) -> Option<String> {
        v.ok().and_then(|v| v.to_text())
    }

    #[test]
    fn every_function_has_a_unique_name() {
        for (i, f) in FUNCTIONS.iter().enumerate() {
            assert!(
                FUNCTIONS[..i].iter().all(|g| g.name != f.name),
                "{}",
                f.name
            );
            assert_eq!(f.func.name(), f.name);
        }
    }

    #[test]
    fn size_counts_characters() {
        assert_eq!(
            text(Func::Size.apply(s("héllo"), None)).as_deref(),
            Some("5")
        );
        assert!(Func::Size.apply(Val::Int(1), None).is_err());
    }

    #[test]
    fn conversions() {
        assert_eq!(
            text(Func::Int.apply(Val::Double(-2.9), None)).as_deref(),
            Some("-2")
        );
        assert_eq!(
            text(Func::Int.apply(s(" 42 "), None)).as_deref(),
            Some("42")
        );
        assert!(Func::Int.apply(Val::Double(1e19), None).is_err());
        assert!(Func::Int.apply(Val::Uint(u64::MAX), None).is_err());
        assert_eq!(
            text(Func::Int.apply(Val::Timestamp(Timestamp(-1)), None)).as_deref(),
            Some("-1")
        );
        assert!(Func::Uint.apply(Val::Int(-1), None).is_err());
        assert_eq!(
            text(Func::Uint.apply(Val::Double(3.7), None)).as_deref(),
            Some("3")
        );
        assert_eq!(
            text(Func::Double.apply(s("2.5"), None)).as_deref(),
            Some("2.5")
        );
        assert_eq!(
            text(Func::String.apply(Val::Double(2.0), None)).as_deref(),
            Some("2")
        );
        assert_eq!(
            text(Func::String.apply(Val::Bool(true), None)).as_deref(),
            Some("true")
        );
        assert!(Func::String.apply(Val::Null, None).is_err());
        assert_eq!(
            text(Func::Bool.apply(s("false"), None)).as_deref(),
            Some("false")
        );
        assert!(Func::Bool.apply(s("yes"), None).is_err());
        assert_eq!(
            text(Func::Timestamp.apply(Val::Int(1), None)).as_deref(),
            Some("1970-01-01T00:00:01.000Z")
        );
        assert_eq!(
            text(Func::Duration.apply(s("1h30m"), None)).as_deref(),
            Some("1h30m")
        );
        assert!(Func::Duration.apply(s("soon"), None).is_err());
    }

    #[test]
    fn string_predicates() {
        assert_eq!(
            text(Func::StartsWith.apply(s("abc"), Some(s("ab")))).as_deref(),
            Some("true")
        );
        assert_eq!(
            text(Func::EndsWith.apply(s("abc"), Some(s("ab")))).as_deref(),
            Some("false")
        );
        assert_eq!(
            text(Func::Contains.apply(s("abc"), Some(s("b")))).as_deref(),
            Some("true")
        );
        assert_eq!(
            text(Func::UpperAscii.apply(s("aé"), None)).as_deref(),
            Some("Aé")
        );
        assert!(Func::Contains.apply(s("abc"), Some(Val::Int(1))).is_err());
    }
}
