//! Rules: from the text a user writes to the compiled rule the engine runs.
//!
//! `schema` is the document (serde), `parse` reads YAML/JSON with locations,
//! `compile` checks and compiles a document, `model` is the compiled form,
//! `expr` the CEL predicates, `template` the alert messages.

pub mod expr;
pub mod model;
pub mod schema;
pub mod template;

pub use model::{
    Aggregate, AbsencePattern, CompareOp, Comparison, Contiguity, Mode, Pattern, Rule, SequencePattern, Severity,
    SkipStrategy, Step, ThresholdPattern, WindowSpec,
};
pub use schema::RuleDocument;
