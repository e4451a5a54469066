//! CEL predicates and expressions, compiled once per rule into cepheus's own
//! evaluator over the event. (Interface skeleton: the implementation lands
//! with the expression work; see the issue.)

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::event::Event;

/// Limits on one expression, checked at compile time.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExprLimits {
    /// Longest expression source, in bytes.
    pub max_length: usize,
    /// Deepest nesting of the expression tree.
    pub max_depth: usize,
}

impl Default for ExprLimits {
    fn default() -> Self {
        ExprLimits { max_length: 4096, max_depth: 32 }
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

/// One problem found while compiling an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// A sentence a person can act on.
    pub message: String,
    /// 1-based column (in characters) inside the expression, when known.
    pub column: Option<usize>,
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

/// A compiled expression.
#[derive(Debug, Clone)]
pub struct Expr {
    source: Arc<str>,
}

/// Compiles `source` against `scope`.
pub fn compile(source: &str, _scope: &Scope, _limits: &ExprLimits) -> Result<Expr, Vec<ExprError>> {
    Err(vec![ExprError { message: format!("cannot compile `{source}` yet"), column: None }])
}

impl Expr {
    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }
    /// True when the expression evaluates to `true`; any error is `false`.
    pub fn matches(&self, _ctx: &EvalContext<'_>) -> bool {
        false
    }
    /// The result as a number.
    pub fn number(&self, _ctx: &EvalContext<'_>) -> Option<f64> {
        None
    }
    /// The result as text (for keys and distinct values).
    pub fn text(&self, _ctx: &EvalContext<'_>) -> Option<String> {
        None
    }
    /// The result as JSON.
    pub fn json(&self, _ctx: &EvalContext<'_>) -> Option<Value> {
        None
    }
    /// Event types for which the expression can be true; `None` when any.
    pub fn accepted_types(&self) -> Option<BTreeSet<String>> {
        None
    }
    /// Binding slots the expression reads, ascending.
    pub fn binding_slots(&self) -> &[usize] {
        &[]
    }
}
