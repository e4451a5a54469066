//! From text to a syntax tree that is safe to compile: the `cel` crate's
//! parser, fenced by cepheus's limits, with its errors turned into
//! [`ExprError`]s that carry a 1-based character column.
//!
//! Hostile input must give an error, never a panic or a stack overflow. The
//! fences, in order:
//! 1. the length limit, checked before anything reads the text;
//! 2. a cap of [`MAX_OPERATORS`] punctuation characters: the parser (and the
//!    tree it builds) recurses once per link of a chain such as `1+1+1+...`
//!    or `a.b.c...`, which the parser's own depth limit does not count, and
//!    every link needs at least one punctuation character;
//! 3. the parser's recursion limit (brackets and calls), set to the depth limit;
//! 4. the measured depth of the tree, walked without recursion, before the
//!    recursive compiler sees it.

use std::panic::{self, AssertUnwindSafe};

use cel::common::ast::{EntryExpr, Expr, IdedExpr, SourceInfo};
use cel::parser::{ParseErrors, Parser};

use super::error::ExprError;
use super::macros;
use super::ExprLimits;

/// The most punctuation characters (operators, dots, brackets, commas; those
/// inside string literals included) one expression may contain, whatever
/// its length limit. Far above what a predicate needs; low enough that
/// parsing the worst chain fits in a 2 MiB thread stack with room to spare.
pub const MAX_OPERATORS: usize = 2048;

/// A parsed expression and the byte offsets of its nodes.
pub(crate) struct Parsed {
    /// The syntax tree.
    pub expr: IdedExpr,
    /// Where each node's token is.
    pub info: SourceInfo,
}

/// Parses `source` within `limits`.
pub(crate) fn parse(source: &str, limits: &ExprLimits) -> Result<Parsed, Vec<ExprError>> {
    if source.len() > limits.max_length {
        return Err(vec![ExprError::new(
            format!(
                "the expression is {} bytes long; the limit is {} bytes",
                source.len(),
                limits.max_length
            ),
            None,
        )]);
    }
    if source.trim().is_empty() {
        return Err(vec![ExprError::new("the expression is empty", None)]);
    }
    let operators = source
        .chars()
        .filter(|c| c.is_ascii_punctuation() && !matches!(c, '"' | '\'' | '_'))
        .count();
    if operators > MAX_OPERATORS {
        return Err(vec![ExprError::new(
            format!(
                "the expression has {operators} operators, dots, brackets and other punctuation; \
                 the limit is {MAX_OPERATORS}: split it into simpler expressions"
            ),
            None,
        )]);
    }
    // NB: the parser counts the depth of brackets and calls; its own limit
    // is one more than what it is given.
    let depth = u16::try_from(limits.max_depth)
        .unwrap_or(u16::MAX - 1)
        .min(u16::MAX - 1);
    let parser = Parser::new().max_recursion_depth(depth);
    // NB: the parser is third-party code facing user input; a panic inside it
    // becomes a compile error rather than taking the caller down.
    let parsed = panic::catch_unwind(AssertUnwindSafe(|| parser.parse_with_source_info(source)));
    let (expr, info) = match parsed {
        Ok(Ok(parsed)) => parsed,
        Ok(Err(errors)) => return Err(parse_errors(source, errors, limits)),
        Err(_) => {
            return Err(vec![ExprError::new(
                "the expression could not be parsed; check its syntax",
                None,
            )])
        }
    };
    if let Some(id) = too_deep(&expr, limits.max_depth) {
        return Err(vec![depth_error(limits, column_of_node(source, &info, id))]);
    }
    Ok(Parsed { expr, info })
}

fn depth_error(limits: &ExprLimits, column: Option<usize>) -> ExprError {
    ExprError::new(
        format!(
            "the expression nests deeper than {} levels; simplify it or split it",
            limits.max_depth
        ),
        column,
    )
}

/// Turns the parser's errors into ours: sentences with character columns,
/// without duplicates, and only the depth error when the parser gave up
/// because of depth (its other errors then are consequences).
fn parse_errors(source: &str, errors: ParseErrors, limits: &ExprLimits) -> Vec<ExprError> {
    let mut out: Vec<ExprError> = Vec::new();
    for e in errors.errors {
        let column = column_of_position(source, e.pos.0, e.pos.1);
        if e.msg.contains("Recursion limit") {
            return vec![depth_error(limits, column)];
        }
        let error = ExprError::new(polish(&e.msg), column);
        if !out.contains(&error) {
            out.push(error);
        }
    }
    if out.is_empty() {
        out.push(ExprError::new(
            "the expression could not be parsed; check its syntax",
            None,
        ));
    }
    out
}

fn polish(message: &str) -> String {
    let message = message.strip_prefix("Syntax error: ").unwrap_or(message);
    format!(
        "syntax error: {}",
        message.replace("'<EOF>'", "the end of the expression")
    )
}

/// The 1-based character column, counted over the whole text, of a parser
/// position (1-based line, 1-based character column within the line).
fn column_of_position(source: &str, line: isize, column: isize) -> Option<usize> {
    let line = usize::try_from(line).ok().filter(|l| *l >= 1)?;
    let column = usize::try_from(column).ok().filter(|c| *c >= 1)?;
    let before: usize = source
        .split_inclusive('\n')
        .take(line - 1)
        .map(|l| l.chars().count())
        .sum();
    Some(before + column)
}

/// The 1-based character column where the node `id` starts. The parser
/// records byte offsets for nodes (unlike its error positions, which count
/// characters).
pub(crate) fn column_of_node(source: &str, info: &SourceInfo, id: u64) -> Option<usize> {
    let (start, _) = info.offset_for(id)?;
    let start = usize::try_from(start).ok()?;
    let prefix = source.get(..start.min(source.len()))?;
    Some(prefix.chars().count() + 1)
}

/// The first node found deeper than `max_depth`, if any. Depth counts the
/// nodes a user wrote: a macro such as `list.exists(x, p)` is one level
/// above its list and predicate, whatever the parser expanded it to.
fn too_deep(root: &IdedExpr, max_depth: usize) -> Option<u64> {
    let mut stack: Vec<(&IdedExpr, usize)> = vec![(root, 1)];
    while let Some((node, depth)) = stack.pop() {
        if depth > max_depth {
            return Some(node.id);
        }
        stack.extend(children(node).into_iter().map(|child| (child, depth + 1)));
    }
    None
}

fn entry_parts(entry: &EntryExpr) -> Vec<&IdedExpr> {
    match entry {
        EntryExpr::MapEntry(e) => vec![&e.key, &e.value],
        EntryExpr::StructField(f) => vec![&f.value],
    }
}

/// The sub-expressions a user wrote under `node`.
pub(crate) fn children(node: &IdedExpr) -> Vec<&IdedExpr> {
    match &node.expr {
        Expr::Call(call) => call
            .target
            .iter()
            .map(|t| &**t)
            .chain(call.args.iter())
            .collect(),
        Expr::Select(select) => vec![&select.operand],
        Expr::List(list) => list.elements.iter().collect(),
        Expr::Map(map) => map
            .entries
            .iter()
            .flat_map(|e| entry_parts(&e.expr))
            .collect(),
        Expr::Struct(s) => s
            .entries
            .iter()
            .flat_map(|e| entry_parts(&e.expr))
            .collect(),
        Expr::Comprehension(c) => match macros::recognise(c) {
            Some(shape) => [Some(&c.iter_range), Some(shape.body), shape.filter]
                .into_iter()
                .flatten()
                .collect(),
            None => vec![
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ],
        },
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_depth: usize) -> ExprLimits {
        ExprLimits {
            max_depth,
            ..ExprLimits::default()
        }
    }

    fn errors(source: &str, limits: &ExprLimits) -> Vec<ExprError> {
        match parse(source, limits) {
            Ok(_) => Vec::new(),
            Err(e) => e,
        }
    }

    #[test]
    fn parser_positions_become_whole_text_columns() {
        assert_eq!(column_of_position("abc", 1, 2), Some(2));
        assert_eq!(column_of_position("ab\ncd", 2, 1), Some(4));
        assert_eq!(column_of_position("é\nx", 2, 1), Some(3));
        assert_eq!(column_of_position("abc", 0, 0), None);
    }

    #[test]
    fn node_offsets_are_bytes_but_columns_are_characters() {
        let source = "\"é\" == x";
        let parsed = parse(source, &ExprLimits::default()).expect("parses");
        let Expr::Call(call) = &parsed.expr.expr else {
            panic!("a call")
        };
        assert_eq!(
            column_of_node(source, &parsed.info, call.args[1].id),
            Some(8)
        );
    }

    #[test]
    fn syntax_errors_carry_their_column() {
        let e = errors("data.x +", &ExprLimits::default());
        assert_eq!(e[0].column, Some(9));
        assert!(
            e[0].message.starts_with("syntax error:"),
            "{}",
            e[0].message
        );
        assert!(
            e[0].message.contains("the end of the expression"),
            "{}",
            e[0].message
        );
        let e = errors("é == 1", &ExprLimits::default());
        assert_eq!(e[0].column, Some(1));
    }

    #[test]
    fn length_and_emptiness_are_checked_first() {
        let e = errors(&"a".repeat(5000), &ExprLimits::default());
        assert_eq!(e.len(), 1);
        assert!(
            e[0].message.contains("limit is 4096 bytes"),
            "{}",
            e[0].message
        );
        assert_eq!(
            errors("  ", &ExprLimits::default())[0].message,
            "the expression is empty"
        );
    }

    #[test]
    fn bracket_depth_is_limited_by_the_parser() {
        let e = errors("((((((1))))))", &limits(4));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].message.contains("deeper than 4 levels"),
            "{}",
            e[0].message
        );
        assert!(e[0].column.is_some());
        assert!(errors("((((1))))", &limits(4)).is_empty());
    }

    #[test]
    fn chain_depth_is_measured_on_the_tree() {
        let e = errors("a.b.c.d.e", &limits(4));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].message.contains("deeper than 4 levels"),
            "{}",
            e[0].message
        );
        assert_eq!(e[0].column, Some(1));
        assert!(errors("a.b.c.d", &limits(4)).is_empty());
        // A macro is one level above its operands.
        assert!(errors("l.exists(x, x > 1)", &limits(3)).is_empty());
        assert!(!errors("l.exists(x, x > 1)", &limits(2)).is_empty());
    }

    #[test]
    fn long_chains_are_refused_before_parsing() {
        let source = format!("1{}", "+1".repeat(3000));
        let limits = ExprLimits {
            max_length: 1 << 20,
            max_depth: 32,
        };
        let e = errors(&source, &limits);
        assert!(
            e[0].message.contains("the limit is 2048"),
            "{}",
            e[0].message
        );
    }
}
