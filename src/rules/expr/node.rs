//! The compiled form of an expression: a tree of nodes in which every name is
//! already resolved to a place in the [`EvalContext`](super::EvalContext).
//!
//! Besides one node per operator, there are specialised nodes for what
//! predicates do most — `type == "x"`, `data.a.b` lookups, comparisons and
//! `in` against constants — so that the common predicate is a handful of
//! direct field reads and comparisons.

use super::functions::Func;
use super::ops::{Arith, Cmp};
use super::value::Val;

/// Which event a node reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The event being evaluated (`ctx.event`).
    Current,
    /// The first event bound by the sequence step in this binding slot.
    First(usize),
    /// The last event bound by the sequence step in this binding slot.
    Last(usize),
}

impl Source {
    /// The binding slot this source reads, if any.
    pub(crate) fn slot(self) -> Option<usize> {
        match self {
            Source::Current => None,
            Source::First(slot) | Source::Last(slot) => Some(slot),
        }
    }
}

/// A scalar attribute of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attr {
    /// `type`: a string.
    Type,
    /// `time`: a timestamp.
    Time,
    /// `id`: a string, or null when the producer gave none.
    Id,
    /// `key`: the event's own key (the top-level `key` is [`Node::Key`]).
    Key,
}

/// Where a JSON path starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Root {
    /// An event's `data` object.
    Data(Source),
    /// The entity's static attributes.
    Entity,
    /// A template variable, by slot.
    Variable(usize),
}

/// A lookup of fixed keys into JSON: `data.a.b`, `entity.tier`, `data["x-y"]`.
#[derive(Debug, Clone)]
pub(crate) struct Path {
    /// Where the lookup starts.
    pub root: Root,
    /// The keys, outermost first; empty for the root itself.
    pub fields: Vec<Box<str>>,
}

/// What a comprehension macro computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoopKind {
    /// `exists(x, p)`: some element satisfies `p`.
    Exists,
    /// `all(x, p)`: every element satisfies `p`.
    All,
    /// `exists_one(x, p)`: exactly one element satisfies `p`.
    ExistsOne,
    /// `map(x, f)`, `map(x, p, f)` and `filter(x, p)` (which is `map(x, p, x)`).
    Map,
}

/// A comprehension macro over a list (or the keys of a map).
#[derive(Debug, Clone)]
pub(crate) struct Loop {
    /// What it computes.
    pub kind: LoopKind,
    /// The list or map iterated.
    pub range: Node,
    /// The predicate, or the transform of `map`.
    pub body: Node,
    /// The filter predicate of `map(x, p, f)` / `filter(x, p)`.
    pub filter: Option<Node>,
}

/// One node of a compiled expression.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// A constant, folded at compile time.
    Const(Val<'static>),
    /// The top-level `key`: the entity key the rule runs under.
    Key,
    /// A scalar attribute of an event.
    Attr(Source, Attr),
    /// `step.count`.
    Count(usize),
    /// `step.first` / `step.last` as a whole event (`Source` is never `Current`).
    BoundEvent(Source),
    /// `has(step.first)` and the like: the step has bound an event.
    Bound(usize),
    /// A JSON lookup.
    Path(Box<Path>),
    /// `has(...)` on a path: the last field is present.
    HasPath(Box<Path>),
    /// A macro's loop variable: the index in the evaluator's locals.
    Local(usize),
    /// `type == "x"`.
    TypeIs(Box<str>),
    /// `type in ["a", "b"]`.
    TypeIn(Box<[Box<str>]>),
    /// A comparison against a constant, the constant on the right.
    CmpConst(Box<(Node, Cmp, Val<'static>)>),
    /// `x in [constants]`.
    InConst(Box<(Node, Box<[Val<'static>]>)>),
    /// `&&` of two or more operands, with CEL's error absorption.
    And(Box<[Node]>),
    /// `||` of two or more operands, with CEL's error absorption.
    Or(Box<[Node]>),
    /// `!x`.
    Not(Box<Node>),
    /// `c ? a : b`.
    Cond(Box<[Node; 3]>),
    /// A comparison of two computed values.
    Cmp(Cmp, Box<[Node; 2]>),
    /// Arithmetic.
    Arith(Arith, Box<[Node; 2]>),
    /// Unary minus.
    Neg(Box<Node>),
    /// `x in container`.
    In(Box<[Node; 2]>),
    /// `container[index]`.
    Index(Box<[Node; 2]>),
    /// `value.field` on a computed value (a map or an event).
    Select(Box<(Node, Box<str>)>),
    /// `has(value.field)` on a computed value.
    Has(Box<(Node, Box<str>)>),
    /// A list literal with computed elements.
    List(Box<[Node]>),
    /// A map literal with computed keys or values.
    Map(Box<[(Node, Node)]>),
    /// A built-in function; a method's receiver is the first argument.
    Call(Func, Box<[Node]>),
    /// `text.matches(pattern)` with the pattern compiled once.
    Matches(Box<(Node, regex::Regex)>),
    /// A comprehension macro.
    Loop(Box<Loop>),
}

impl Node {
    /// The constant this node is, if it is one.
    pub(crate) fn as_const(&self) -> Option<&Val<'static>> {
        match self {
            Node::Const(v) => Some(v),
            _ => None,
        }
    }

    /// Calls `visit` on each direct child.
    pub(crate) fn for_each_child(&self, visit: &mut impl FnMut(&Node)) {
        match self {
            Node::Const(_)
            | Node::Key
            | Node::Attr(..)
            | Node::Count(_)
            | Node::BoundEvent(_)
            | Node::Bound(_)
            | Node::Path(_)
            | Node::HasPath(_)
            | Node::Local(_)
            | Node::TypeIs(_)
            | Node::TypeIn(_) => {}
            Node::CmpConst(c) => visit(&c.0),
            Node::InConst(c) => visit(&c.0),
            Node::And(items) | Node::Or(items) | Node::List(items) | Node::Call(_, items) => {
                items.iter().for_each(visit)
            }
            Node::Not(x) | Node::Neg(x) => visit(x),
            Node::Cond(x) => x.iter().for_each(visit),
            Node::Cmp(_, x) | Node::Arith(_, x) | Node::In(x) | Node::Index(x) => {
                x.iter().for_each(visit)
            }
            Node::Select(s) | Node::Has(s) => visit(&s.0),
            Node::Map(entries) => entries.iter().for_each(|(k, v)| {
                visit(k);
                visit(v);
            }),
            Node::Matches(m) => visit(&m.0),
            Node::Loop(l) => {
                visit(&l.range);
                visit(&l.body);
                if let Some(filter) = &l.filter {
                    visit(filter);
                }
            }
        }
    }

    /// True when the node reads nothing from the context, so its value can
    /// be computed once at compile time: its children are all constants.
    pub(crate) fn is_foldable(&self) -> bool {
        let foldable_kind = matches!(
            self,
            Node::CmpConst(_)
                | Node::InConst(_)
                | Node::And(_)
                | Node::Or(_)
                | Node::Not(_)
                | Node::Cond(_)
                | Node::Cmp(..)
                | Node::Arith(..)
                | Node::Neg(_)
                | Node::In(_)
                | Node::Index(_)
                | Node::Select(_)
                | Node::List(_)
                | Node::Map(_)
                | Node::Call(..)
                | Node::Matches(_)
        );
        let mut all_const = true;
        self.for_each_child(&mut |child| all_const &= child.as_const().is_some());
        foldable_kind && all_const
    }
}
