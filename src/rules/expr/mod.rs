//! CEL predicates and expressions, compiled once per rule into cepheus's own
//! evaluator over the event.
//!
//! Rules use [Common Expression Language](https://cel.dev) syntax:
//! `type == "login_failed" && data.amount > 1000 && entity.tier in ["gold", "vip"]`.
//! The text is parsed by the `cel` crate's parser; the syntax tree is then
//! compiled into cepheus's own tree of nodes ([`compile`]), in which every
//! name is resolved up front, so evaluating a typical predicate is a few
//! field reads and comparisons and allocates nothing.
//!
//! # Names
//!
//! | name | value |
//! |---|---|
//! | `type` | the event's type (string) |
//! | `key` | the entity key the rule runs under (string); always available |
//! | `time` | the event's time (timestamp) |
//! | `id` | the event's id (string), or `null` when the producer sent none |
//! | `data` | the event's `data` object (map) |
//! | `entity` | the entity's static attributes (map), e.g. `entity.tier` |
//! | *step* | a sequence step named earlier in the rule (see below) |
//! | *variable* | a value the caller provides (message templates) |
//!
//! `type`, `time`, `id` and `data` need a current event; where there is none
//! (an absence alert's message, say) reading them is an evaluation error.
//!
//! A sequence step named `failures` is read as `failures.count` (int: how
//! many events it bound), `failures.first` and `failures.last` (events, with
//! the fields `type`, `time`, `id`, `key` and `data`). `failures.data`,
//! `failures.type`, `failures.time`, `failures.id` and `failures.key` are
//! shortcuts for the same fields of `failures.last`. A step that has bound
//! no event has no first or last event: reading them, or their fields, is an
//! evaluation error (and `has(failures.last)` is false).
//!
//! Any other name is a compile error that lists the available names. A step
//! or variable may not be named like a built-in name (`type`, `key`, `time`,
//! `id`, `data`, `entity`; see [`BUILTIN_NAMES`]), and a macro's loop
//! variable may not hide any name.
//!
//! # Values
//!
//! null, bool, int (64-bit signed), uint (64-bit unsigned), double, string,
//! list, map, timestamp (millisecond precision), duration (milliseconds),
//! and events. JSON numbers become ints when they are integers that fit,
//! uints when they are larger positive integers, doubles otherwise (`3.0` in
//! JSON is a double). Literals: `1`, `1u`, `1.5`, `"text"`, `'text'`,
//! `true`, `null`, `[1, 2]`, `{"k": v}`; bytes literals and message literals
//! are not supported.
//!
//! # Operators
//!
//! - `==`, `!=`: values of different types are unequal, except numbers:
//!   ints, uints and doubles compare by exact numeric value (`3 == 3.0`).
//!   Lists compare element-wise, maps by keys and values.
//! - `<`, `<=`, `>`, `>=`: numbers (across kinds, exactly), strings (by
//!   bytes), bools, timestamps, durations; other types are an error. A
//!   comparison involving NaN is false.
//! - `+ - * / %`: on ints and uints, checked (overflow and division by zero
//!   are errors; division truncates). Leniently, a double mixed with an int
//!   or uint makes the operation a double one (`1 + 0.5 == 1.5`), and an int
//!   mixed with a uint is computed exactly, giving an int if the result fits
//!   (a uint if only that fits). `%` is for integers only. `+` also joins
//!   strings and lists. `timestamp - timestamp` is a duration; `timestamp ±
//!   duration` a timestamp; `duration ± duration` a duration; `-x` negates
//!   ints, doubles and durations.
//! - `x in list` (an element equal to `x`), `x in map` (a key).
//! - `c ? a : b`; `!b`.
//! - `&&` and `||` absorb errors as CEL does: `false && <error>` is false
//!   and `true || <error>` is true, in either order; otherwise an error in
//!   an operand is the result.
//! - `a.f` and `a["f"]` read a map key or an event field; a missing key is an
//!   error ("no such key"). So `data.amount > 100` on an event without
//!   `amount` is an error, which as a predicate means false; `has(data.amount)`
//!   tests presence (the parent, `data` here, must exist). `list[i]` reads an
//!   element; out of range is an error.
//!
//! # Functions and macros
//!
//! `size(x)` / `x.size()` (characters of a string, elements of a list or
//! map), `s.startsWith(p)`, `s.endsWith(p)`, `s.contains(p)`,
//! `s.matches("regex")` (unanchored search, Rust `regex` syntax; the pattern
//! must be a string literal and is compiled with the rule, at most
//! [`REGEX_SIZE_LIMIT`] bytes compiled), `s.lowerAscii()`,
//! `s.upperAscii()`, `int(x)` (from uint, double truncating, string, or
//! timestamp as seconds since the epoch), `uint(x)`, `double(x)`,
//! `string(x)` (numbers formatted as [`Expr::text`] does), `bool("true")`,
//! `timestamp("2026-01-01T00:00:00Z")` (RFC 3339, or an int of epoch
//! seconds), `duration("1h30m")` (cepheus's duration syntax: a number and a
//! unit `ms`, `s`, `m`, `h`, `d`, combinable). Time literals are checked and
//! computed when the rule is compiled.
//!
//! Macros over a list, or over the keys of a map: `l.exists(x, p)`,
//! `l.all(x, p)`, `l.exists_one(x, p)`, `l.map(x, f)`, `l.map(x, p, f)`,
//! `l.filter(x, p)`. `exists` is true if some element satisfies `p` (an error
//! on another element does not matter then), `all` false if one fails it.
//! One evaluation may visit at most [`MAX_ITERATIONS`] elements in all; more
//! is an error. `has(a.f)` tests whether the map (or event) `a` has `f`.
//!
//! Anything else (other functions, message literals, optional syntax) is a
//! compile error naming it and listing what is supported.
//!
//! # Results
//!
//! Evaluation either produces a value or fails with an [`EvalError`]; the
//! accessors fold failures into their answer:
//! [`Expr::matches`] is true only for the bool `true`; [`Expr::number`]
//! gives ints, uints and doubles; [`Expr::text`] gives strings as they are,
//! and formats ints, uints, bools, doubles, timestamps and durations
//! canonically (see [`Expr::text`]); [`Expr::json`] gives any value as JSON.
//!
//! # Limits
//!
//! [`ExprLimits`] bounds the text (`max_length` bytes) and the nesting
//! (`max_depth` levels of the tree as written: an operator, call, field
//! access, list or macro is one level above its operands). Independently
//! of the configured length, an expression may hold at most
//! [`MAX_OPERATORS`] punctuation characters, so that hostile input cannot
//! exhaust the stack while being parsed. Errors carry a 1-based column,
//! counted in characters from the start of the expression.

mod analysis;
mod compile;
mod error;
mod eval;
mod functions;
mod macros;
mod node;
mod ops;
mod parse;
mod value;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::event::Event;

pub use compile::REGEX_SIZE_LIMIT;
pub use error::{EvalError, ExprError};
pub use eval::MAX_ITERATIONS;
pub use parse::MAX_OPERATORS;

/// The names every expression can use; steps and variables may not reuse them.
pub const BUILTIN_NAMES: [&str; 6] = ["type", "key", "time", "id", "data", "entity"];

/// Limits on one expression, checked at compile time.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExprLimits {
    /// Longest expression source, in bytes.
    pub max_length: usize,
    /// Deepest nesting of the expression tree.
    pub max_depth: usize,
}

impl Default for ExprLimits {
    fn default() -> Self {
        ExprLimits {
            max_length: 4096,
            max_depth: 32,
        }
    }
}

/// The names an expression may use besides the event and the entity.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Sequence steps visible to the expression; the index is the slot in
    /// [`EvalContext::bindings`].
    pub bindings: Vec<Arc<str>>,
    /// Extra variables (used by message templates); the index is the slot in
    /// [`EvalContext::variables`].
    pub variables: Vec<Arc<str>>,
}

/// The events a sequence step has bound so far in one partial match.
#[derive(Debug, Clone, Copy, Default)]
pub struct Binding<'a> {
    /// How many events the step took.
    pub count: u64,
    /// Its first event.
    pub first: Option<&'a Event>,
    /// Its last event.
    pub last: Option<&'a Event>,
}

/// Everything an expression can read.
#[derive(Clone, Copy)]
pub struct EvalContext<'a> {
    /// The entity key the rule runs under.
    pub key: &'a str,
    /// The event being evaluated, if any.
    pub event: Option<&'a Event>,
    /// The entity's static attributes (`entity.*`).
    pub entity: &'a Map<String, Value>,
    /// Bound steps, by slot.
    pub bindings: &'a [Binding<'a>],
    /// Extra variables, by slot.
    pub variables: &'a [Value],
}

/// A compiled expression. Cheap to clone (the compiled tree is shared).
///
/// # Invariants
/// Evaluation reads only the [`EvalContext`] and never panics.
/// [`Expr::matches`] allocates nothing for predicates made of field reads,
/// comparisons, `&&`, `||`, `!`, `?:`, `has()`, `size()`, `startsWith()` and
/// the like, and `in` against a constant list or a list or map from the
/// event; `matches()` joins them once its regex has built its per-thread
/// cache. A test in `tests/expr_props.rs` checks this. Computed values do
/// allocate: strings built with `+`, `lowerAscii()` or `upperAscii()`, list
/// literals that are not constant, and the results of `map()` and
/// `filter()`.
#[derive(Clone)]
pub struct Expr {
    inner: Arc<Compiled>,
}

struct Compiled {
    source: Box<str>,
    root: node::Node,
    slots: Box<[usize]>,
    accepted: Option<BTreeSet<String>>,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source()).finish()
    }
}

/// Compiles `source` against `scope`.
///
/// Every problem found is returned: parse errors (with their columns), each
/// unknown name, each unsupported function, a non-literal or invalid
/// `matches` pattern, an invalid time literal, a constant part that always
/// fails, and problems with `scope` itself (a step or variable named like a
/// built-in name, or two with the same name).
pub fn compile(source: &str, scope: &Scope, limits: &ExprLimits) -> Result<Expr, Vec<ExprError>> {
    let mut errors = check_scope(scope);
    let root = parse::parse(source, limits)
        .and_then(|parsed| compile::compile_tree(source, &parsed, scope));
    let root = match root {
        Ok(root) if errors.is_empty() => root,
        Ok(_) => return Err(errors),
        Err(more) => {
            errors.extend(more);
            return Err(errors);
        }
    };
    let mut slots = BTreeSet::new();
    analysis::binding_slots(&root, &mut slots);
    let accepted = analysis::accepted_types(&root);
    Ok(Expr {
        inner: Arc::new(Compiled {
            source: source.into(),
            root,
            slots: slots.into_iter().collect(),
            accepted,
        }),
    })
}

fn check_scope(scope: &Scope) -> Vec<ExprError> {
    let mut errors = Vec::new();
    let names: Vec<&str> = scope
        .bindings
        .iter()
        .chain(scope.variables.iter())
        .map(|n| &**n)
        .collect();
    for (i, name) in names.iter().enumerate() {
        if BUILTIN_NAMES.contains(name) {
            errors.push(ExprError::new(
                format!(
                    "`{name}` is a built-in name ({}); a sequence step or variable cannot be called `{name}`",
                    BUILTIN_NAMES.join(", ")
                ),
                None,
            ));
        } else if names[..i].contains(name) {
            errors.push(ExprError::new(
                format!("the name `{name}` is given to more than one step or variable"),
                None,
            ));
        }
    }
    errors
}

impl Expr {
    /// The source text.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// True when the expression evaluates to `true`; any error, and any
    /// other value, is `false`.
    pub fn matches(&self, ctx: &EvalContext<'_>) -> bool {
        eval::Evaluator::new(ctx)
            .eval_bool(&self.inner.root)
            .unwrap_or(false)
    }

    /// The result as a number: ints, uints and doubles; `None` for anything
    /// else and on error.
    pub fn number(&self, ctx: &EvalContext<'_>) -> Option<f64> {
        eval::Evaluator::new(ctx)
            .eval(&self.inner.root)
            .ok()?
            .as_f64()
    }

    /// The result as text, for partition keys and distinct values.
    ///
    /// Strings are returned as they are. Ints and uints print in decimal,
    /// bools as `true` / `false`, timestamps in RFC 3339 with milliseconds
    /// (`2026-01-01T00:00:00.000Z`), durations as `1h30m`. A double prints
    /// as the shortest decimal that reads back to the same value, never in
    /// exponent form, and without a fraction when it is integral: `2.5` is
    /// `2.5`, `3.0` is `3` (so numerically equal values give equal text, as
    /// `3 == 3.0`), `-0.0` is `0`. `None` for null, lists, maps, events, NaN
    /// and infinities, and on error.
    pub fn text(&self, ctx: &EvalContext<'_>) -> Option<String> {
        eval::Evaluator::new(ctx)
            .eval(&self.inner.root)
            .ok()?
            .to_text()
    }

    /// The result as JSON: timestamps as RFC 3339 strings with milliseconds,
    /// durations as strings such as `1h30m`, events as their JSON form.
    /// `None` on error and for NaN or infinite doubles.
    pub fn json(&self, ctx: &EvalContext<'_>) -> Option<Value> {
        self.try_json(ctx).ok()
    }

    /// Like [`Expr::json`], but says why there is no value; for diagnostics.
    /// A NaN or infinite double is reported as
    /// [`EvalError::BadConversion`]`("json")`.
    pub fn try_json(&self, ctx: &EvalContext<'_>) -> Result<Value, EvalError> {
        let value = eval::Evaluator::new(ctx).eval(&self.inner.root)?;
        value.to_json().ok_or(EvalError::BadConversion("json"))
    }

    /// The result as message text: [`Expr::text`] where that gives a value,
    /// compact JSON for lists, maps and events; `None` for null and on error.
    pub(crate) fn render(&self, ctx: &EvalContext<'_>) -> Option<String> {
        let value = eval::Evaluator::new(ctx).eval(&self.inner.root).ok()?;
        match value {
            value::Val::List(_) | value::Val::Map(_) | value::Val::Event(_) => {
                serde_json::to_string(&value.to_json()?).ok()
            }
            other => other.to_text(),
        }
    }

    /// Event types for which the expression can be true; `None` when any.
    ///
    /// Derived from `type == "x"`, `"x" == type` and `type in ["a", "b"]`
    /// combined by `&&` (intersection) and `||` (union): `type == "a" &&
    /// data.x > 1` gives {a}; `type == "a" || type == "b"` gives {a, b};
    /// `type == "a" || data.x > 1` and `type != "a"` give `None`.
    pub fn accepted_types(&self) -> Option<BTreeSet<String>> {
        self.inner.accepted.clone()
    }

    /// Binding slots the expression reads, ascending, without duplicates.
    pub fn binding_slots(&self) -> &[usize] {
        &self.inner.slots
    }
}

#[cfg(test)]
mod tests;
