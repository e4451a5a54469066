//! What can go wrong with an expression: at compile time ([`ExprError`], shown
//! to the rule's author) and at evaluation time ([`EvalError`], which the
//! result accessors turn into `false` / `None`).

/// One problem found while compiling an expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// A sentence a person can act on.
    pub message: String,
    /// 1-based column (in characters) inside the expression, when known.
    ///
    /// For an expression written over several lines, the column counts
    /// characters from the start of the whole expression, each line break
    /// counting as one character.
    pub column: Option<usize>,
}

impl ExprError {
    /// An error at `column` (1-based, in characters), if known.
    pub(crate) fn new(message: impl Into<String>, column: Option<usize>) -> ExprError {
        ExprError {
            message: message.into(),
            column,
        }
    }
}

/// Why one evaluation of an expression produced no value.
///
/// Evaluation errors are ordinary: `data.amount > 100` on an event without
/// `amount` fails with [`EvalError::NoSuchKey`], which
/// [`Expr::matches`](super::Expr::matches) reports as `false`. The variants
/// carry no allocated data so that failing stays as cheap as succeeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// `type`, `time`, `id` or `data` was read without a current event.
    #[error("there is no current event to read `type`, `time`, `id` or `data` from")]
    NoEvent,
    /// `step.first`, `step.last` (or a shortcut) of a step that has bound no event.
    #[error("the sequence step has not bound an event yet")]
    UnboundStep,
    /// The context has fewer bindings or variables than the scope the
    /// expression was compiled against.
    #[error("the evaluation context lacks a step or variable the expression was compiled for")]
    MissingSlot,
    /// A map or object has no such key, or a value has no such field.
    #[error("no such key")]
    NoSuchKey,
    /// An operator or function was applied to values of the wrong types.
    #[error("`{0}` cannot be applied to values of these types")]
    WrongTypes(&'static str),
    /// A condition (`&&`, `||`, `!`, `?:`, a macro predicate) was not a bool.
    #[error("a condition did not evaluate to true or false")]
    NotBool,
    /// Integer arithmetic, a duration or a timestamp went out of range.
    #[error("arithmetic overflow")]
    Overflow,
    /// Integer division or remainder by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// A list index outside the list.
    #[error("list index out of range")]
    IndexOutOfRange,
    /// A conversion function could not convert its argument.
    #[error("cannot convert the value with `{0}()`")]
    BadConversion(&'static str),
    /// A map literal repeats a key or uses a key of an unsupported type.
    #[error("map keys must be distinct strings, integers or bools")]
    BadMapKey,
    /// Macros (`exists`, `all`, `map`, ...) visited more elements than one
    /// evaluation may.
    #[error("the expression visited more than {0} list or map elements")]
    TooManyIterations(usize),
}
