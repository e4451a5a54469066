//! Alert message templates: text with `{{ expr }}` placeholders.
//! (Interface skeleton: the implementation lands with the expression work.)

use crate::rules::expr::{EvalContext, ExprError, ExprLimits, Scope};

/// A compiled message template.
#[derive(Debug, Clone)]
pub struct Template {
    source: String,
}

impl Template {
    /// Compiles every placeholder of `text` against `scope`.
    pub fn compile(text: &str, _scope: &Scope, _limits: &ExprLimits) -> Result<Template, Vec<ExprError>> {
        Ok(Template { source: text.to_owned() })
    }
    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }
    /// Renders the template; a placeholder that cannot be evaluated renders as `<no value>`.
    pub fn render(&self, _ctx: &EvalContext<'_>) -> String {
        self.source.clone()
    }
}
