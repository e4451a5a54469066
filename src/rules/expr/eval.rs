//! The evaluator: walks a compiled [`Node`] tree against an
//! [`EvalContext`].
//!
//! Recursion depth is bounded by the tree's depth, which compile limits
//! ([`ExprLimits::max_depth`](super::ExprLimits::max_depth)). Loops are
//! bounded by [`MAX_ITERATIONS`] per evaluation.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::error::EvalError;
use super::node::{Attr, Loop, LoopKind, Node, Path, Root, Source};
use super::ops;
use super::value::{List, MapVal, Val};
use super::{Binding, EvalContext};
use crate::event::Event;

/// The most list or map elements the macros of one evaluation may visit.
pub const MAX_ITERATIONS: usize = 10_000;

/// One evaluation in progress.
pub(crate) struct Evaluator<'a, 'c> {
    ctx: &'c EvalContext<'a>,
    /// Values of the enclosing macros' loop variables, outermost first.
    locals: Vec<Val<'a>>,
    iterations: usize,
}

impl<'a, 'c> Evaluator<'a, 'c> {
    /// An evaluator reading `ctx`.
    pub(crate) fn new(ctx: &'c EvalContext<'a>) -> Self {
        Evaluator {
            ctx,
            // NB: an empty Vec does not allocate; only macros push to it.
            locals: Vec::new(),
            iterations: 0,
        }
    }

    /// Evaluates `node` as a condition: `Ok` only for a bool.
    pub(crate) fn eval_bool(&mut self, node: &'a Node) -> Result<bool, EvalError> {
        match node {
            Node::TypeIs(expected) => Ok(self.event(Source::Current)?.event_type == **expected),
            Node::TypeIn(expected) => {
                let actual = &self.event(Source::Current)?.event_type;
                Ok(expected.iter().any(|t| **t == **actual))
            }
            Node::CmpConst(c) => {
                let (lhs, op, rhs) = &**c;
                let value = self.eval(lhs)?;
                ops::compare(&value, *op, rhs)
            }
            Node::InConst(c) => {
                let needle = self.eval(&c.0)?;
                Ok(c.1.iter().any(|item| ops::equals(&needle, item)))
            }
            Node::And(items) => {
                // CEL: false wins over an error, in either order.
                let mut failure = None;
                for item in items.iter() {
                    match self.eval_bool(item) {
                        Ok(false) => return Ok(false),
                        Ok(true) => {}
                        Err(e) => failure = failure.or(Some(e)),
                    }
                }
                failure.map_or(Ok(true), Err)
            }
            Node::Or(items) => {
                // CEL: true wins over an error, in either order.
                let mut failure = None;
                for item in items.iter() {
                    match self.eval_bool(item) {
                        Ok(true) => return Ok(true),
                        Ok(false) => {}
                        Err(e) => failure = failure.or(Some(e)),
                    }
                }
                failure.map_or(Ok(false), Err)
            }
            Node::Not(x) => Ok(!self.eval_bool(x)?),
            Node::Cond(x) => {
                let [c, a, b] = &**x;
                if self.eval_bool(c)? {
                    self.eval_bool(a)
                } else {
                    self.eval_bool(b)
                }
            }
            Node::Cmp(op, x) => {
                let a = self.eval(&x[0])?;
                let b = self.eval(&x[1])?;
                ops::compare(&a, *op, &b)
            }
            Node::In(x) => {
                let needle = self.eval(&x[0])?;
                let container = self.eval(&x[1])?;
                ops::contains(&container, &needle)
            }
            Node::Bound(slot) => Ok(self.binding(*slot)?.last.is_some()),
            Node::HasPath(path) => self.has_path(path),
            Node::Has(h) => {
                let (operand, field) = &**h;
                match self.eval(operand)? {
                    Val::Map(map) => Ok(map.contains_key(&Val::Str(Cow::Borrowed(field)))),
                    Val::Event(event) => Ok(event_has(event, field)),
                    _ => Err(EvalError::WrongTypes("has")),
                }
            }
            Node::Matches(m) => match self.eval(&m.0)? {
                Val::Str(text) => Ok(m.1.is_match(&text)),
                _ => Err(EvalError::WrongTypes("matches")),
            },
            other => match self.eval(other)? {
                Val::Bool(b) => Ok(b),
                _ => Err(EvalError::NotBool),
            },
        }
    }

    /// Evaluates `node` to a value.
    pub(crate) fn eval(&mut self, node: &'a Node) -> Result<Val<'a>, EvalError> {
        match node {
            Node::Const(v) => Ok(v.borrowed()),
            Node::Key => Ok(Val::Str(Cow::Borrowed(self.ctx.key))),
            Node::Attr(source, attr) => {
                let event = self.event(*source)?;
                Ok(match attr {
                    Attr::Type => Val::Str(Cow::Borrowed(&event.event_type)),
                    Attr::Time => Val::Timestamp(event.time),
                    Attr::Id => event
                        .id
                        .as_deref()
                        .map_or(Val::Null, |id| Val::Str(Cow::Borrowed(id))),
                    Attr::Key => Val::Str(Cow::Borrowed(&event.key)),
                })
            }
            Node::Count(slot) => {
                let count = self.binding(*slot)?.count;
                Ok(i64::try_from(count).map_or(Val::Uint(count), Val::Int))
            }
            Node::BoundEvent(source) => self.event(*source).map(Val::Event),
            Node::Path(path) => self.path(path),
            Node::Local(index) => self
                .locals
                .get(*index)
                .cloned()
                .ok_or(EvalError::MissingSlot),
            Node::TypeIs(_)
            | Node::TypeIn(_)
            | Node::CmpConst(_)
            | Node::InConst(_)
            | Node::And(_)
            | Node::Or(_)
            | Node::Not(_)
            | Node::Cmp(..)
            | Node::In(_)
            | Node::Bound(_)
            | Node::HasPath(_)
            | Node::Has(_)
            | Node::Matches(_) => self.eval_bool(node).map(Val::Bool),
            Node::Cond(x) => {
                let [c, a, b] = &**x;
                if self.eval_bool(c)? {
                    self.eval(a)
                } else {
                    self.eval(b)
                }
            }
            Node::Arith(op, x) => {
                let a = self.eval(&x[0])?;
                let b = self.eval(&x[1])?;
                ops::arith(*op, a, b)
            }
            Node::Neg(x) => ops::negate(self.eval(x)?),
            Node::Index(x) => {
                let container = self.eval(&x[0])?;
                let index = self.eval(&x[1])?;
                ops::index(container, index)
            }
            Node::Select(s) => {
                let (operand, field) = &**s;
                match self.eval(operand)? {
                    Val::Map(map) => map.into_field(field).ok_or(EvalError::NoSuchKey),
                    Val::Event(event) => event_field(event, field),
                    _ => Err(EvalError::WrongTypes(".")),
                }
            }
            Node::List(items) => {
                let mut values = Vec::with_capacity(items.len());
                for item in items.iter() {
                    values.push(self.eval(item)?);
                }
                Ok(Val::List(List::Owned(values)))
            }
            Node::Map(entries) => {
                let mut values = Vec::with_capacity(entries.len());
                for (k, v) in entries.iter() {
                    values.push((self.eval(k)?, self.eval(v)?));
                }
                ops::check_map_keys(&values)?;
                Ok(Val::Map(MapVal::Owned(values)))
            }
            Node::Call(func, args) => {
                let first = match args.first() {
                    Some(arg) => self.eval(arg)?,
                    None => return Err(EvalError::WrongTypes(func.name())),
                };
                let second = match args.get(1) {
                    Some(arg) => Some(self.eval(arg)?),
                    None => None,
                };
                func.apply(first, second)
            }
            Node::Loop(l) => self.eval_loop(l),
        }
    }

    fn binding(&self, slot: usize) -> Result<&'a Binding<'a>, EvalError> {
        self.ctx.bindings.get(slot).ok_or(EvalError::MissingSlot)
    }

    fn event(&self, source: Source) -> Result<&'a Event, EvalError> {
        match source {
            Source::Current => self.ctx.event.ok_or(EvalError::NoEvent),
            Source::First(slot) => self.binding(slot)?.first.ok_or(EvalError::UnboundStep),
            Source::Last(slot) => self.binding(slot)?.last.ok_or(EvalError::UnboundStep),
        }
    }

    /// Follows `fields` from `root`; a missing key, or a key on a value that
    /// is not an object, is [`EvalError::NoSuchKey`].
    fn walk(&self, root: Root, fields: &'a [Box<str>]) -> Result<Val<'a>, EvalError> {
        let (start, rest): (&'a Value, &'a [Box<str>]) = match root {
            Root::Variable(slot) => (
                self.ctx.variables.get(slot).ok_or(EvalError::MissingSlot)?,
                fields,
            ),
            Root::Data(_) | Root::Entity => {
                let map: &'a Map<String, Value> = match root {
                    Root::Data(source) => &self.event(source)?.data,
                    _ => self.ctx.entity,
                };
                match fields.split_first() {
                    None => return Ok(Val::Map(MapVal::Json(map))),
                    Some((first, rest)) => (map.get(&**first).ok_or(EvalError::NoSuchKey)?, rest),
                }
            }
        };
        lookup(start, rest)
    }

    fn path(&self, path: &'a Path) -> Result<Val<'a>, EvalError> {
        self.walk(path.root, &path.fields)
    }

    fn has_path(&self, path: &'a Path) -> Result<bool, EvalError> {
        let Some((last, parents)) = path.fields.split_last() else {
            return Err(EvalError::WrongTypes("has"));
        };
        match self.walk(path.root, parents)? {
            Val::Map(map) => Ok(map.contains_key(&Val::Str(Cow::Borrowed(last)))),
            _ => Err(EvalError::WrongTypes("has")),
        }
    }

    fn tick(&mut self) -> Result<(), EvalError> {
        self.iterations += 1;
        if self.iterations > MAX_ITERATIONS {
            return Err(EvalError::TooManyIterations(MAX_ITERATIONS));
        }
        Ok(())
    }

    fn eval_loop(&mut self, l: &'a Loop) -> Result<Val<'a>, EvalError> {
        let items = match self.eval(&l.range)? {
            Val::List(list) => list.into_items(),
            Val::Map(map) => map.into_keys(),
            _ => return Err(EvalError::WrongTypes(loop_name(l))),
        };
        let depth = self.locals.len();
        self.locals.push(Val::Null);
        let result = self.run_loop(l, items, depth);
        // NB: on every path, so an error inside leaves the locals as they were.
        self.locals.truncate(depth);
        result
    }

    fn run_loop(
        &mut self,
        l: &'a Loop,
        items: super::value::Items<'a>,
        slot: usize,
    ) -> Result<Val<'a>, EvalError> {
        match l.kind {
            LoopKind::Exists | LoopKind::All => {
                // `exists` stops at the first true, `all` at the first false;
                // an error elsewhere only counts if no element decides.
                let decisive = l.kind == LoopKind::Exists;
                let mut failure = None;
                for item in items {
                    self.tick()?;
                    self.locals[slot] = item;
                    match self.eval_bool(&l.body) {
                        Ok(b) if b == decisive => return Ok(Val::Bool(decisive)),
                        Ok(_) => {}
                        Err(e) => failure = failure.or(Some(e)),
                    }
                }
                failure.map_or(Ok(Val::Bool(!decisive)), Err)
            }
            LoopKind::ExistsOne => {
                let mut found = 0usize;
                for item in items {
                    self.tick()?;
                    self.locals[slot] = item;
                    if self.eval_bool(&l.body)? {
                        found += 1;
                    }
                }
                Ok(Val::Bool(found == 1))
            }
            LoopKind::Map => {
                let mut out = Vec::new();
                for item in items {
                    self.tick()?;
                    self.locals[slot] = item;
                    if let Some(filter) = &l.filter {
                        if !self.eval_bool(filter)? {
                            continue;
                        }
                    }
                    out.push(self.eval(&l.body)?);
                }
                Ok(Val::List(List::Owned(out)))
            }
        }
    }
}

/// Follows `fields` from a JSON value.
fn lookup<'a>(mut value: &'a Value, fields: &[Box<str>]) -> Result<Val<'a>, EvalError> {
    for field in fields {
        value = value
            .as_object()
            .and_then(|o| o.get(&**field))
            .ok_or(EvalError::NoSuchKey)?;
    }
    Ok(Val::from_json(value))
}

/// `event.field` on an event value (a macro's loop variable, say).
fn event_field<'a>(event: &'a Event, field: &str) -> Result<Val<'a>, EvalError> {
    Ok(match field {
        "type" => Val::Str(Cow::Borrowed(&event.event_type)),
        "time" => Val::Timestamp(event.time),
        "id" => event
            .id
            .as_deref()
            .map_or(Val::Null, |id| Val::Str(Cow::Borrowed(id))),
        "key" => Val::Str(Cow::Borrowed(&event.key)),
        "data" => Val::Map(MapVal::Json(&event.data)),
        _ => return Err(EvalError::NoSuchKey),
    })
}

/// `has(event.field)`: every event has a type, time, key and data; `id` is optional.
fn event_has(event: &Event, field: &str) -> bool {
    match field {
        "type" | "time" | "key" | "data" => true,
        "id" => event.id.is_some(),
        _ => false,
    }
}

fn loop_name(l: &Loop) -> &'static str {
    match (l.kind, &l.filter) {
        (LoopKind::Exists, _) => "exists",
        (LoopKind::All, _) => "all",
        (LoopKind::ExistsOne, _) => "exists_one",
        (LoopKind::Map, None) => "map",
        (LoopKind::Map, Some(_)) => "filter",
    }
}
