//! Rules: from the text a user writes to the compiled rule the engine runs.
//!
//! `schema` is the document (serde), `parse` reads YAML/JSON with locations,
//! `compile` checks and compiles a document, `model` is the compiled form,
//! `expr` the CEL predicates, `template` the alert messages.
//!
//! [`load`] does it all for a text and [`check_document`] for a document
//! that is already structured (a stored rule): both return the rule or
//! every [`Problem`] at once.

pub mod compile;
pub mod expr;
pub mod limits;
mod located;
pub mod locations;
pub mod model;
pub mod parse;
pub mod problem;
pub mod schema;
pub mod shape;
mod suggest;
pub mod template;
pub mod vocabulary;

pub use limits::RuleLimits;
pub use locations::Locations;
pub use model::{
    AbsencePattern, Aggregate, CompareOp, Comparison, Condition, Contiguity, Group, LatePolicy,
    Lateness, Mode, NamedAggregate, Pattern, Rule, SequencePattern, Severity, Skip, SkipStrategy,
    Step, ThresholdPattern, WindowSpec,
};
pub use parse::Format;
pub use problem::{Position, Problem};
pub use schema::RuleDocument;

/// What loading one rule text gave, with what a caller needs to explain it.
#[derive(Debug)]
pub struct Loaded {
    /// The compiled rule, or every problem found (sorted by location).
    pub result: Result<Rule, Vec<Problem>>,
    /// The document as read (with placeholders where values were unusable);
    /// `None` when the text could not be read at all.
    pub document: Option<RuleDocument>,
    /// Where each field was written.
    pub locations: Locations,
}

/// Reads, checks and compiles the rule in `text` at `version`, reporting
/// every problem at once.
pub fn load(
    text: &str,
    format: Format,
    version: u64,
    limits: &RuleLimits,
) -> Result<Rule, Vec<Problem>> {
    load_text(text, format, version, limits).result
}

/// Like [`load`], and also returns the document and the field locations
/// (e.g. to point at the `id` of a rule that another file also defines).
pub fn load_text(text: &str, format: Format, version: u64, limits: &RuleLimits) -> Loaded {
    let parsed = parse::parse(text, format, limits);
    let Some(document) = parsed.document else {
        return Loaded {
            result: Err(parsed.problems),
            document: None,
            locations: parsed.locations,
        };
    };
    let checked = compile::compile(&document, version, limits, &parsed.locations);
    let result = match (parsed.problems, checked) {
        (read, Ok(rule)) if read.is_empty() => Ok(rule),
        (read, checked) => {
            // NB: a value that could not be read was replaced by a
            // placeholder, which the checks then find wrong again; keep only
            // the reading problem for it (same path, or a path inside it).
            let later = checked.err().unwrap_or_default();
            let mut problems = read.clone();
            problems.extend(
                later
                    .into_iter()
                    .filter(|p| !read.iter().any(|r| within(&p.path, &r.path))),
            );
            Problem::sort(&mut problems);
            Err(problems)
        }
    };
    Loaded {
        result,
        document: Some(document),
        locations: parsed.locations,
    }
}

/// Checks and compiles a document that did not come from text (e.g. a
/// stored rule, or a JSON body already deserialized): the same checks as
/// [`load`], with no line and column in the problems.
pub fn check_document(
    document: &RuleDocument,
    version: u64,
    limits: &RuleLimits,
) -> Result<Rule, Vec<Problem>> {
    compile::compile(document, version, limits, &Locations::default())
}

/// Whether `path` is `ancestor` or a field inside it. The whole document
/// (``) counts only as itself: a problem with the document as a whole does
/// not mean its fields were replaced.
fn within(path: &str, ancestor: &str) -> bool {
    if ancestor.is_empty() {
        return path.is_empty();
    }
    match path.strip_prefix(ancestor) {
        Some(rest) => rest.is_empty() || rest.starts_with('.') || rest.starts_with('['),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::within;

    #[test]
    fn within_follows_path_structure() {
        assert!(within("sequence.steps[1].match", "sequence.steps[1]"));
        assert!(within("sequence.steps", "sequence.steps"));
        assert!(within("sequence.steps[0]", "sequence.steps"));
        assert!(!within("sequence.steps[10]", "sequence.steps[1]"));
        assert!(!within("sequence.stepsx", "sequence.steps"));
        assert!(within("", ""));
        assert!(!within("id", ""));
    }
}
