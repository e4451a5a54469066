//! From the `cel` syntax tree to cepheus's [`Node`] tree: every name is
//! resolved to a place in the context, constant parts are computed once,
//! and hot shapes get specialised nodes. Every problem found is collected;
//! the walk goes on past an error so that one compile reports them all.

use std::borrow::Cow;

use cel::common::ast::{
    operators, CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, ListExpr, LiteralValue,
    MapExpr, SelectExpr,
};
use serde_json::Map;

use super::error::ExprError;
use super::eval::Evaluator;
use super::functions::{self, Form, Func};
use super::macros;
use super::node::{Attr, Loop, Node, Path, Root, Source};
use super::ops::{Arith, Cmp};
use super::parse::{children, column_of_node, Parsed};
use super::value::{List, Val};
use super::{EvalContext, Scope, BUILTIN_NAMES};
use crate::time::{Duration, Timestamp};

/// The largest compiled program a `matches()` pattern may become, in bytes.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a parsed expression against `scope`.
pub(crate) fn compile_tree(
    source: &str,
    parsed: &Parsed,
    scope: &Scope,
) -> Result<Node, Vec<ExprError>> {
    let mut compiler = Compiler {
        source,
        parsed,
        scope,
        locals: Vec::new(),
        errors: Vec::new(),
    };
    let node = compiler.expr(&parsed.expr);
    if compiler.errors.is_empty() {
        Ok(node)
    } else {
        Err(compiler.errors)
    }
}

struct Compiler<'s> {
    source: &'s str,
    parsed: &'s Parsed,
    scope: &'s Scope,
    /// Loop variables of the enclosing macros, outermost first; a
    /// variable's index here is its index among the evaluator's locals.
    locals: Vec<&'s str>,
    errors: Vec<ExprError>,
}

/// What a node compiles to when it is in error: compilation goes on, and
/// the result is discarded.
///
/// NB: not a constant, so that the operators around it are not folded and
/// do not report a second, consequential error. Reading the key cannot fail.
fn placeholder() -> Node {
    Node::Key
}

impl<'s> Compiler<'s> {
    /// Records an error located at the start of `at`'s text.
    fn error(&mut self, at: &IdedExpr, message: impl Into<String>) -> Node {
        let column = self.start_column(at);
        self.error_at(column, message)
    }

    /// Records an error about the function `name` called by `at`, located
    /// at the function's name.
    fn call_error(&mut self, at: &IdedExpr, name: &str, message: impl Into<String>) -> Node {
        let column = self.name_column(at, name);
        self.error_at(column, message)
    }

    fn error_at(&mut self, column: Option<usize>, message: impl Into<String>) -> Node {
        let error = ExprError::new(message, column);
        if !self.errors.contains(&error) {
            self.errors.push(error);
        }
        placeholder()
    }

    /// The column where the text of `e` starts: the leftmost position of
    /// any node in it (the parser places an operator at its symbol, a
    /// call at its parenthesis).
    fn start_column(&self, e: &IdedExpr) -> Option<usize> {
        let mut stack = vec![e];
        let mut leftmost: Option<usize> = None;
        while let Some(node) = stack.pop() {
            let column = match &node.expr {
                Expr::Call(call) => self.name_column(node, &call.func_name),
                _ => column_of_node(self.source, &self.parsed.info, node.id),
            };
            leftmost = match (leftmost, column) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            stack.extend(children(node));
        }
        leftmost
    }

    /// The column of the function name of the call `at`: the parser places
    /// a call at its opening parenthesis, so the name is just before it
    /// (unless spaces separate them; then the parenthesis is used).
    fn name_column(&self, at: &IdedExpr, name: &str) -> Option<usize> {
        let paren = column_of_node(self.source, &self.parsed.info, at.id)?;
        let (start, _) = self.parsed.info.offset_for(at.id)?;
        let start = usize::try_from(start).ok()?;
        let before = self.source.get(..start)?;
        if before.ends_with(name) {
            Some(paren - name.chars().count())
        } else {
            Some(paren)
        }
    }

    fn expr(&mut self, e: &'s IdedExpr) -> Node {
        match &e.expr {
            Expr::Literal(literal) => self.literal(e, literal),
            Expr::Ident(name) => self.ident(e, name),
            Expr::Select(select) => self.select(e, select),
            Expr::Call(call) => self.call(e, call),
            Expr::List(list) => self.list(e, list),
            Expr::Map(map) => self.map(e, map),
            Expr::Comprehension(c) => self.comprehension(e, c),
            Expr::Struct(s) => self.error(
                e,
                format!(
                    "message literals such as `{}{{...}}` are not supported; write a map literal such as {{\"field\": value}}",
                    s.type_name
                ),
            ),
            Expr::Unspecified => self.error(e, "this part of the expression is incomplete"),
        }
    }

    fn literal(&mut self, at: &'s IdedExpr, literal: &LiteralValue) -> Node {
        Node::Const(match literal {
            LiteralValue::Boolean(b) => Val::Bool(*b.inner()),
            LiteralValue::Int(i) => Val::Int(*i.inner()),
            LiteralValue::UInt(u) => Val::Uint(*u.inner()),
            LiteralValue::Double(d) => Val::Double(*d.inner()),
            LiteralValue::String(s) => Val::Str(Cow::Owned(s.inner().to_owned())),
            LiteralValue::Null => Val::Null,
            LiteralValue::Bytes(_) => {
                return self.error(
                    at,
                    "bytes literals (b\"...\") are not supported; use a string",
                )
            }
        })
    }

    fn local(&self, name: &str) -> Option<usize> {
        self.locals.iter().rposition(|l| *l == name)
    }

    fn binding_slot(&self, name: &str) -> Option<usize> {
        if self.local(name).is_some() {
            return None;
        }
        self.scope.bindings.iter().position(|b| **b == *name)
    }

    fn ident(&mut self, at: &'s IdedExpr, name: &str) -> Node {
        if let Some(index) = self.local(name) {
            return Node::Local(index);
        }
        match name {
            "type" => return Node::Attr(Source::Current, Attr::Type),
            "time" => return Node::Attr(Source::Current, Attr::Time),
            "id" => return Node::Attr(Source::Current, Attr::Id),
            "key" => return Node::Key,
            "data" => return path(Root::Data(Source::Current)),
            "entity" => return path(Root::Entity),
            _ => {}
        }
        if self.binding_slot(name).is_some() {
            return self.error(
                at,
                format!(
                    "`{name}` is a sequence step, not a value: write {name}.count, {name}.first or {name}.last \
                     (or {name}.data, {name}.type, {name}.time, {name}.id for its last event)"
                ),
            );
        }
        if let Some(slot) = self.scope.variables.iter().position(|v| **v == *name) {
            return path(Root::Variable(slot));
        }
        let available = self.available_names();
        self.error(
            at,
            format!("unknown name `{name}`; available names: {available}"),
        )
    }

    fn available_names(&self) -> String {
        let names: Vec<&str> = BUILTIN_NAMES
            .iter()
            .copied()
            .chain(self.scope.bindings.iter().map(|b| &**b))
            .chain(self.scope.variables.iter().map(|v| &**v))
            .chain(self.locals.iter().copied())
            .collect();
        names.join(", ")
    }

    fn select(&mut self, at: &'s IdedExpr, select: &'s SelectExpr) -> Node {
        if let Expr::Ident(name) = &select.operand.expr {
            if let Some(slot) = self.binding_slot(name) {
                return self.binding_field(at, name, slot, &select.field, select.test);
            }
        }
        let operand = self.expr(&select.operand);
        if select.test {
            self.has(at, operand, &select.field)
        } else {
            self.field(at, operand, &select.field)
        }
    }

    /// `step.field` and `has(step.field)`.
    fn binding_field(
        &mut self,
        at: &'s IdedExpr,
        step: &str,
        slot: usize,
        field: &str,
        test: bool,
    ) -> Node {
        match (field, test) {
            ("count", false) => Node::Count(slot),
            // A step always has a count.
            ("count", true) => Node::Const(Val::Bool(true)),
            ("first" | "last", true) => Node::Bound(slot),
            ("first", false) => Node::BoundEvent(Source::First(slot)),
            ("last", false) => Node::BoundEvent(Source::Last(slot)),
            ("type" | "time" | "id" | "key" | "data", false) => {
                self.event_field(at, Source::Last(slot), field)
            }
            ("type" | "time" | "id" | "key" | "data", true) => {
                self.has(at, Node::BoundEvent(Source::Last(slot)), field)
            }
            _ => self.error(
                at,
                format!(
                    "`{step}` is a sequence step: it has count, first and last, and the shortcuts \
                     data, type, time, id and key for its last event; `{field}` is not one of them"
                ),
            ),
        }
    }

    /// A field of an event (the current one, or a bound one).
    fn event_field(&mut self, at: &'s IdedExpr, source: Source, field: &str) -> Node {
        match field {
            "type" => Node::Attr(source, Attr::Type),
            "time" => Node::Attr(source, Attr::Time),
            "id" => Node::Attr(source, Attr::Id),
            "key" => Node::Attr(source, Attr::Key),
            "data" => path(Root::Data(source)),
            _ => self.error(
                at,
                format!("an event has the fields type, time, id, key and data; `{field}` is not one of them"),
            ),
        }
    }

    fn field(&mut self, at: &'s IdedExpr, operand: Node, field: &str) -> Node {
        match operand {
            Node::Path(mut p) => {
                p.fields.push(field.into());
                Node::Path(p)
            }
            Node::BoundEvent(source) => self.event_field(at, source, field),
            other => self.fold(at, Node::Select(Box::new((other, field.into())))),
        }
    }

    fn has(&mut self, at: &'s IdedExpr, operand: Node, field: &str) -> Node {
        match operand {
            Node::Path(mut p) => {
                p.fields.push(field.into());
                Node::HasPath(p)
            }
            Node::BoundEvent(source) => match (field, source.slot()) {
                ("type" | "time" | "key" | "data", Some(slot)) => Node::Bound(slot),
                ("id", _) => Node::Has(Box::new((Node::BoundEvent(source), field.into()))),
                _ => self.event_field(at, source, field),
            },
            other => self.fold(at, Node::Has(Box::new((other, field.into())))),
        }
    }

    fn call(&mut self, at: &'s IdedExpr, call: &'s CallExpr) -> Node {
        let name = call.func_name.as_str();
        if call.target.is_none() {
            match (name, call.args.as_slice()) {
                (operators::LOGICAL_AND | operators::LOGICAL_OR, [_, _]) => {
                    return self.logic(at, name, call)
                }
                (operators::LOGICAL_NOT, [a]) => {
                    let a = self.expr(a);
                    return self.fold(at, Node::Not(Box::new(a)));
                }
                (operators::NEGATE, [a]) => {
                    let a = self.expr(a);
                    return self.fold(at, Node::Neg(Box::new(a)));
                }
                (operators::CONDITIONAL, [c, a, b]) => {
                    let parts = [self.expr(c), self.expr(a), self.expr(b)];
                    return self.fold(at, Node::Cond(Box::new(parts)));
                }
                (operators::INDEX, [a, b]) => return self.index(at, a, b),
                (operators::IN, [a, b]) => return self.member(at, a, b),
                (_, [a, b]) => {
                    if let Some(op) = comparison(name) {
                        return self.compare(at, op, a, b);
                    }
                    if let Some(op) = arithmetic(name) {
                        let parts = [self.expr(a), self.expr(b)];
                        return self.fold(at, Node::Arith(op, Box::new(parts)));
                    }
                }
                _ => {}
            }
        }
        if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return self.error(at, format!("the operator `{name}` is not supported"));
        }
        self.function(at, name, call)
    }

    /// `&&` / `||` chains, flattened into one n-ary node.
    fn logic(&mut self, at: &'s IdedExpr, op: &str, call: &'s CallExpr) -> Node {
        let mut operands = Vec::new();
        collect_operands(op, &call.args, &mut operands);
        let nodes: Box<[Node]> = operands.into_iter().map(|e| self.expr(e)).collect();
        let node = if op == operators::LOGICAL_AND {
            Node::And(nodes)
        } else {
            Node::Or(nodes)
        };
        self.fold(at, node)
    }

    fn compare(&mut self, at: &'s IdedExpr, op: Cmp, a: &'s IdedExpr, b: &'s IdedExpr) -> Node {
        let a = self.expr(a);
        let b = self.expr(b);
        if op == Cmp::Eq {
            if let Some(expected) = type_literal(&a, &b).or_else(|| type_literal(&b, &a)) {
                return Node::TypeIs(expected.into());
            }
        }
        match (a, b) {
            (a, Node::Const(k)) if a.as_const().is_none() => Node::CmpConst(Box::new((a, op, k))),
            (Node::Const(k), b) if b.as_const().is_none() => {
                Node::CmpConst(Box::new((b, op.swapped(), k)))
            }
            (a, b) => self.fold(at, Node::Cmp(op, Box::new([a, b]))),
        }
    }

    fn member(&mut self, at: &'s IdedExpr, needle: &'s IdedExpr, container: &'s IdedExpr) -> Node {
        let needle = self.expr(needle);
        let container = self.expr(container);
        if needle.as_const().is_none() {
            if let Node::Const(Val::List(list)) = &container {
                let items: Vec<Val<'static>> = match list {
                    List::Owned(items) => items.clone(),
                    // NB: constants are always owned lists; kept total for safety.
                    other => other.iter().filter_map(|v| v.into_static()).collect(),
                };
                if matches!(needle, Node::Attr(Source::Current, Attr::Type)) {
                    let names: Option<Box<[Box<str>]>> = items
                        .iter()
                        .map(|v| match v {
                            Val::Str(s) => Some(Box::from(s.as_ref())),
                            _ => None,
                        })
                        .collect();
                    if let Some(names) = names {
                        return Node::TypeIn(names);
                    }
                }
                return Node::InConst(Box::new((needle, items.into_boxed_slice())));
            }
        }
        self.fold(at, Node::In(Box::new([needle, container])))
    }

    fn index(&mut self, at: &'s IdedExpr, container: &'s IdedExpr, index: &'s IdedExpr) -> Node {
        let container = self.expr(container);
        let index = self.expr(index);
        match (container, index) {
            (Node::Path(mut p), Node::Const(Val::Str(key))) => {
                p.fields.push(key.as_ref().into());
                Node::Path(p)
            }
            (container, index) => self.fold(at, Node::Index(Box::new([container, index]))),
        }
    }

    fn function(&mut self, at: &'s IdedExpr, name: &str, call: &'s CallExpr) -> Node {
        if name == "matches" {
            return self.matches(at, call);
        }
        if let Some((_, usage)) = functions::SPECIAL_FORMS.iter().find(|(n, _)| *n == name) {
            return self.call_error(at, name, format!("`{name}` is written {usage}"));
        }
        let Some(signature) = functions::lookup(name) else {
            let supported = functions::supported_names();
            return self.call_error(
                at,
                name,
                format!("unknown function `{name}`; supported functions: {supported}"),
            );
        };
        let usage = signature.usage;
        match (signature.form, call.target.is_some()) {
            (Form::Global, true) => {
                return self.call_error(
                    at,
                    name,
                    format!("`{name}` is not a method; write {usage}"),
                )
            }
            (Form::Method, false) => {
                return self.call_error(at, name, format!("`{name}` is a method; write {usage}"))
            }
            _ => {}
        }
        if call.args.len() + usize::from(call.target.is_some()) != signature.arity {
            return self.call_error(
                at,
                name,
                format!("wrong number of arguments to `{name}`; write {usage}"),
            );
        }
        let args: Box<[Node]> = call
            .target
            .iter()
            .map(|t| &**t)
            .chain(call.args.iter())
            .map(|a| self.expr(a))
            .collect();
        if let (Func::Timestamp | Func::Duration, [Node::Const(Val::Str(text))]) =
            (signature.func, &*args)
        {
            // Literal times are checked here, with the time module's own message.
            let checked = match signature.func {
                Func::Timestamp => Timestamp::parse_rfc3339(text).map(Val::Timestamp),
                _ => Duration::parse(text).map(Val::Duration),
            };
            return match checked {
                Ok(v) => Node::Const(v),
                Err(e) => self.call_error(at, name, e.to_string()),
            };
        }
        self.fold(at, Node::Call(signature.func, args))
    }

    fn matches(&mut self, at: &'s IdedExpr, call: &'s CallExpr) -> Node {
        let (subject, pattern) = match (call.target.as_deref(), call.args.as_slice()) {
            (Some(subject), [pattern]) | (None, [subject, pattern]) => (subject, pattern),
            _ => {
                return self.call_error(
                    at,
                    "matches",
                    "`matches` is written text.matches(\"regex\")",
                )
            }
        };
        let subject = self.expr(subject);
        let pattern_node = self.expr(pattern);
        let Node::Const(Val::Str(pattern_text)) = &pattern_node else {
            return self.error(
                pattern,
                "the pattern of `matches` must be a string literal, so that it is compiled once with the rule",
            );
        };
        let regex = regex::RegexBuilder::new(pattern_text)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build();
        match regex {
            Ok(regex) => self.fold(at, Node::Matches(Box::new((subject, regex)))),
            Err(e) => self.error(
                pattern,
                format!("invalid regular expression in `matches`: {e}"),
            ),
        }
    }

    fn list(&mut self, at: &'s IdedExpr, list: &'s ListExpr) -> Node {
        if !list.optional_indices.is_empty() {
            return self.error(at, "optional list elements are not supported");
        }
        let items: Box<[Node]> = list.elements.iter().map(|e| self.expr(e)).collect();
        self.fold(at, Node::List(items))
    }

    fn map(&mut self, at: &'s IdedExpr, map: &'s MapExpr) -> Node {
        let mut entries = Vec::with_capacity(map.entries.len());
        for entry in &map.entries {
            match &entry.expr {
                EntryExpr::MapEntry(e) if !e.optional => {
                    entries.push((self.expr(&e.key), self.expr(&e.value)))
                }
                EntryExpr::MapEntry(_) => {
                    return self.error(at, "optional map entries are not supported")
                }
                EntryExpr::StructField(_) => {
                    return self.error(at, "message fields are not supported")
                }
            }
        }
        self.fold(at, Node::Map(entries.into_boxed_slice()))
    }

    fn comprehension(&mut self, at: &'s IdedExpr, c: &'s ComprehensionExpr) -> Node {
        let Some(shape) = macros::recognise(c) else {
            return self.error(at, "this kind of comprehension is not supported; use exists, all, exists_one, map or filter");
        };
        let range = self.expr(&c.iter_range);
        let variable = c.iter_var.as_str();
        if BUILTIN_NAMES.contains(&variable)
            || self.scope.bindings.iter().any(|b| **b == *variable)
            || self.scope.variables.iter().any(|v| **v == *variable)
        {
            return self.error(
                at,
                format!("the loop variable `{variable}` would hide the name `{variable}`; choose another name"),
            );
        }
        self.locals.push(variable);
        let filter = shape.filter.map(|f| self.expr(f));
        let body = self.expr(shape.body);
        self.locals.pop();
        Node::Loop(Box::new(Loop {
            kind: shape.kind,
            range,
            body,
            filter,
        }))
    }

    /// Computes a node whose operands are all constants, once, now. A
    /// constant part that always fails is reported: it is a mistake.
    fn fold(&mut self, at: &'s IdedExpr, node: Node) -> Node {
        if !node.is_foldable() {
            return node;
        }
        let entity = Map::new();
        let nothing = EvalContext {
            key: "",
            event: None,
            entity: &entity,
            bindings: &[],
            variables: &[],
        };
        let folded = Evaluator::new(&nothing).eval(&node).map(Val::into_static);
        match folded {
            Ok(Some(value)) => Node::Const(value),
            Ok(None) => node,
            Err(e) => self.error(at, format!("this part of the expression always fails: {e}")),
        }
    }
}

fn path(root: Root) -> Node {
    Node::Path(Box::new(Path {
        root,
        fields: Vec::new(),
    }))
}

/// The string `type` is compared with, when `a` is `type` and `b` a string constant.
fn type_literal<'n>(a: &Node, b: &'n Node) -> Option<&'n str> {
    match (a, b) {
        (Node::Attr(Source::Current, Attr::Type), Node::Const(Val::Str(s))) => Some(s),
        _ => None,
    }
}

/// The operands of a chain of one logical operator: `a && (b && c)` gives a, b, c.
fn collect_operands<'e>(op: &str, args: &'e [IdedExpr], out: &mut Vec<&'e IdedExpr>) {
    for arg in args {
        match &arg.expr {
            Expr::Call(c) if c.func_name == op && c.target.is_none() && c.args.len() == 2 => {
                collect_operands(op, &c.args, out)
            }
            _ => out.push(arg),
        }
    }
}

fn comparison(name: &str) -> Option<Cmp> {
    Some(match name {
        operators::EQUALS => Cmp::Eq,
        operators::NOT_EQUALS => Cmp::Ne,
        operators::LESS => Cmp::Lt,
        operators::LESS_EQUALS => Cmp::Le,
        operators::GREATER => Cmp::Gt,
        operators::GREATER_EQUALS => Cmp::Ge,
        _ => return None,
    })
}

fn arithmetic(name: &str) -> Option<Arith> {
    Some(match name {
        operators::ADD => Arith::Add,
        operators::SUBSTRACT => Arith::Sub,
        operators::MULTIPLY => Arith::Mul,
        operators::DIVIDE => Arith::Div,
        operators::MODULO => Arith::Rem,
        _ => return None,
    })
}
