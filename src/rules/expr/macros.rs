//! Recognises the standard CEL macros in the parser's output.
//!
//! The `cel` parser expands `list.exists(x, p)` and friends into a generic
//! comprehension (an accumulator `@result`, a loop condition, a step and a
//! result). Rather than interpret that general form — which would build
//! `map`/`filter` results by repeated list concatenation — cepheus matches
//! the exact shape each standard macro expands to and compiles it to a
//! direct loop. Any other comprehension is unsupported.

use cel::common::ast::{operators, CallExpr, ComprehensionExpr, Expr, IdedExpr, LiteralValue};

use super::node::LoopKind;

/// The accumulator the parser's macro expansions use; not a valid CEL
/// identifier, so a user cannot write it.
const ACCUMULATOR: &str = "@result";

/// A recognised macro: what it computes and the user's sub-expressions.
pub(crate) struct MacroShape<'e> {
    /// What the macro computes.
    pub kind: LoopKind,
    /// The predicate, or `map`'s transform.
    pub body: &'e IdedExpr,
    /// The filter of `filter(x, p)` and `map(x, p, f)`.
    pub filter: Option<&'e IdedExpr>,
}

/// The macro `c` was expanded from, or `None` if it is not one of the
/// standard single-variable macros.
pub(crate) fn recognise(c: &ComprehensionExpr) -> Option<MacroShape<'_>> {
    if c.accu_var != ACCUMULATOR || c.iter_var2.is_some() {
        return None;
    }
    let step = call(&c.loop_step)?;
    match &c.accu_init.expr {
        Expr::Literal(LiteralValue::Boolean(b)) => {
            let (kind, op) = if *b.inner() {
                (LoopKind::All, operators::LOGICAL_AND)
            } else {
                (LoopKind::Exists, operators::LOGICAL_OR)
            };
            match (step.func_name.as_str(), step.args.as_slice()) {
                (name, [accu, body]) if name == op && is_accumulator(accu) => Some(MacroShape {
                    kind,
                    body,
                    filter: None,
                }),
                _ => None,
            }
        }
        Expr::Literal(LiteralValue::Int(_)) => {
            match (step.func_name.as_str(), step.args.as_slice()) {
                (operators::CONDITIONAL, [body, increment, accu])
                    if is_accumulator(accu) && is_increment(increment) =>
                {
                    Some(MacroShape {
                        kind: LoopKind::ExistsOne,
                        body,
                        filter: None,
                    })
                }
                _ => None,
            }
        }
        Expr::List(init) if init.elements.is_empty() => {
            match (step.func_name.as_str(), step.args.as_slice()) {
                (operators::ADD, _) => Some(MacroShape {
                    kind: LoopKind::Map,
                    body: appended(step)?,
                    filter: None,
                }),
                (operators::CONDITIONAL, [filter, append, accu]) if is_accumulator(accu) => {
                    Some(MacroShape {
                        kind: LoopKind::Map,
                        body: appended(call(append)?)?,
                        filter: Some(filter),
                    })
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn call(e: &IdedExpr) -> Option<&CallExpr> {
    match &e.expr {
        Expr::Call(c) if c.target.is_none() => Some(c),
        _ => None,
    }
}

fn is_accumulator(e: &IdedExpr) -> bool {
    matches!(&e.expr, Expr::Ident(name) if name == ACCUMULATOR)
}

/// `@result + 1` (exists_one's count).
fn is_increment(e: &IdedExpr) -> bool {
    call(e).is_some_and(|c| {
        c.func_name == operators::ADD && matches!(c.args.as_slice(), [accu, one] if is_accumulator(accu) && matches!(one.expr, Expr::Literal(LiteralValue::Int(_))))
    })
}

/// `f` in `@result + [f]` (map's step).
fn appended(step: &CallExpr) -> Option<&IdedExpr> {
    if step.func_name != operators::ADD {
        return None;
    }
    match step.args.as_slice() {
        [accu, list] if is_accumulator(accu) => match &list.expr {
            Expr::List(l) if l.elements.len() == 1 && l.optional_indices.is_empty() => {
                l.elements.first()
            }
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(source: &str) -> Option<(LoopKind, bool)> {
        let parsed = cel::parser::Parser::new().parse(source).expect("parses");
        match &parsed.expr {
            Expr::Comprehension(c) => recognise(c).map(|m| (m.kind, m.filter.is_some())),
            _ => None,
        }
    }

    #[test]
    fn every_standard_macro_is_recognised() {
        assert_eq!(shape("l.exists(x, x > 1)"), Some((LoopKind::Exists, false)));
        assert_eq!(shape("l.all(x, x > 1)"), Some((LoopKind::All, false)));
        assert_eq!(
            shape("l.exists_one(x, x > 1)"),
            Some((LoopKind::ExistsOne, false))
        );
        assert_eq!(shape("l.map(x, x + 1)"), Some((LoopKind::Map, false)));
        assert_eq!(shape("l.map(x, x > 1, x + 1)"), Some((LoopKind::Map, true)));
        assert_eq!(shape("l.filter(x, x > 1)"), Some((LoopKind::Map, true)));
    }
}
