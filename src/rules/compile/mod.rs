//! [`RuleDocument`] → [`Rule`]: every semantic check, every problem at once.
//!
//! Each check reports at the field's path; the line and column come from the
//! [`Locations`] of the parse pass (empty for a document that did not come
//! from text, such as a stored one). The checks of each pattern kind live in
//! their own file; this one holds the rule-level checks and the helpers they
//! share (expressions, durations).

mod absence;
mod sequence;
mod threshold;

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::rules::expr::{self, Expr, Scope};
use crate::rules::limits::RuleLimits;
use crate::rules::locations::Locations;
use crate::rules::model::{template_scope, Lateness, Pattern, Rule};
use crate::rules::problem::Problem;
use crate::rules::schema::{LatenessDoc, RuleDocument};
use crate::rules::template::Template;
use crate::time::Duration;

/// Longest rule id, in characters.
pub const MAX_ID_CHARS: usize = 128;

/// Names a sequence step may not take, because expressions already use them
/// for the event, the entity and the alert.
pub const RESERVED_STEP_NAMES: [&str; 10] = [
    "type", "key", "time", "id", "data", "entity", "rule", "severity", "trigger", "last",
];

/// CEL's keywords and reserved words: not usable as identifiers either.
const CEL_RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// Checks `document` and compiles it into a [`Rule`] at `version`, or
/// returns every problem found, each with its path and (when `locations`
/// knows it) line and column.
pub fn compile(
    document: &RuleDocument,
    version: u64,
    limits: &RuleLimits,
    locations: &Locations,
) -> Result<Rule, Vec<Problem>> {
    let mut c = Checker {
        limits,
        locations,
        problems: Vec::new(),
    };
    c.id(&document.id);
    let when = document
        .when
        .as_deref()
        .and_then(|w| c.expression("when", w, &Scope::default()));
    let partition_by = document
        .partition_by
        .as_deref()
        .and_then(|p| c.expression("partition_by", p, &Scope::default()));
    let (pattern, template_scope) = c.pattern(document);
    // NB: the message is checked even when the pattern has problems, as
    // long as the pattern kind (and so the names the message sees) is known.
    let message = template_scope.and_then(|scope| c.message(document, &scope));
    let lateness = document.lateness.as_ref().map(|l| c.lateness(l));
    let mut problems = c.problems;
    if !problems.is_empty() {
        Problem::sort(&mut problems);
        return Err(problems);
    }
    let Some(pattern) = pattern else {
        // NB: `pattern` returns None only after reporting a problem.
        return Err(vec![Problem::new("", "the rule has no usable pattern")]);
    };
    let event_types = event_types(when.as_ref(), &pattern);
    Ok(Rule {
        id: Arc::from(document.id.as_str()),
        version,
        state_since: version,
        severity: document.severity,
        enabled: document.enabled,
        mode: document.mode,
        when,
        partition_by,
        pattern,
        message,
        lateness,
        event_types,
        warnings: warnings(document, locations),
        document: document.clone(),
    })
}

/// What is valid in `document` but worth telling its author, each at its
/// path (with line and column when `locations` knows them): shown by
/// `cepheus check` and in the rule's `GET`.
pub fn warnings(document: &RuleDocument, locations: &Locations) -> Vec<Problem> {
    let mut found = Vec::new();
    if let Some(sequence) = &document.sequence {
        found.extend(sequence::sequence_warnings(sequence));
    }
    found
        .into_iter()
        .map(|(path, message)| {
            let at = locations.of(&path);
            Problem::new(path, message).at(at)
        })
        .collect()
}

/// Collects the problems of one document.
pub(crate) struct Checker<'a> {
    limits: &'a RuleLimits,
    locations: &'a Locations,
    problems: Vec<Problem>,
}

/// The last field name of a path: `sequence.steps[1].match` → `match`.
fn field_name(path: &str) -> &str {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.split('[').next().unwrap_or(last)
}

impl Checker<'_> {
    fn report(&mut self, path: &str, message: impl Into<String>) {
        let at = self.locations.of(path);
        self.problems.push(Problem::new(path, message).at(at));
    }

    fn id(&mut self, id: &str) {
        let count = id.chars().count();
        if id.is_empty() {
            self.report(
                "id",
                "`id` is required: a unique name of lowercase letters, digits, `.`, `_` and `-`",
            );
        } else if count > MAX_ID_CHARS {
            self.report(
                "id",
                format!("`id` is {count} characters long; the limit is {MAX_ID_CHARS}"),
            );
        } else if !id.chars().all(is_id_char) {
            let mut wrong: Vec<String> = Vec::new();
            for c in id.chars().filter(|c| !is_id_char(*c)) {
                let kind = if c.is_uppercase() {
                    "uppercase letters".to_owned()
                } else if c.is_whitespace() {
                    "spaces".to_owned()
                } else {
                    format!("`{c}`")
                };
                if !wrong.contains(&kind) {
                    wrong.push(kind);
                }
            }
            let suggestion = suggest_id(id)
                .map(|s| format!(": try `{s}`"))
                .unwrap_or_default();
            self.report(
                "id",
                format!(
                    "`id` may use only lowercase letters, digits, `.`, `_` and `-`, but `{}` has {}{suggestion}",
                    crate::rules::located::shorten(id),
                    and_list(&wrong)
                ),
            );
        }
    }

    /// Compiles the rule's pattern (`None` when it has problems); also
    /// returns the scope its message template sees (`None` when the pattern
    /// kind is not known).
    fn pattern(&mut self, document: &RuleDocument) -> (Option<Pattern>, Option<Scope>) {
        let kinds: Vec<&str> = [
            ("sequence", document.sequence.is_some()),
            ("absence", document.absence.is_some()),
            ("threshold", document.threshold.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        if kinds.is_empty() {
            self.report(
                "",
                "the rule has no pattern: add one of `sequence` (events in order), `absence` (an expected \
                 event that does not come) or `threshold` (an aggregate over a window)",
            );
            return (None, None);
        }
        if kinds.len() > 1 {
            for extra in &kinds[1..] {
                // NB: about the document as a whole (path ``), pointing at
                // the extra kind; at the extra kind's own path it would be
                // taken for a repeat of a problem inside that kind.
                let message = format!(
                    "a rule has exactly one pattern kind, but this one has {}: keep one and make the others \
                     separate rules",
                    kinds.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" and ")
                );
                let at = self.locations.of(extra);
                self.problems.push(Problem::new("", message).at(at));
            }
        }
        if let Some(s) = &document.sequence {
            let (pattern, names) = self.sequence(s);
            let scope = Scope {
                bindings: names,
                variables: arcs(&template_scope::COMMON_VARIABLES),
            };
            (pattern.map(Pattern::Sequence), Some(scope))
        } else if let Some(a) = &document.absence {
            let scope = Scope {
                bindings: arcs(&template_scope::ABSENCE_BINDINGS),
                variables: arcs(&template_scope::ABSENCE_VARIABLES),
            };
            (self.absence(a).map(Pattern::Absence), Some(scope))
        } else if let Some(t) = &document.threshold {
            let mut variables = arcs(&template_scope::THRESHOLD_VARIABLES);
            if let Some(aggregates) = &t.aggregates {
                // NB: `value` and `limit` belong to the single form; their
                // slots stay, under names no expression can spell.
                for v in variables.iter_mut() {
                    if matches!(&**v, "value" | "limit") {
                        *v = Arc::from(format!("__single_form_{v}"));
                    }
                }
                variables.extend(aggregates.keys().map(|n| Arc::from(n.as_str())));
            }
            let scope = Scope {
                bindings: arcs(&template_scope::THRESHOLD_BINDINGS),
                variables,
            };
            (self.threshold(t).map(Pattern::Threshold), Some(scope))
        } else {
            (None, None)
        }
    }

    fn message(&mut self, document: &RuleDocument, scope: &Scope) -> Option<Template> {
        let text = document.alert.as_ref()?.message.as_deref()?;
        let path = "alert.message";
        if text.trim().is_empty() {
            self.report(path, "`message` is empty: write the alert text, or leave `message` out for a generated one");
            return None;
        }
        if text.len() > self.limits.max_template_bytes {
            self.report(
                path,
                format!(
                    "`message` is {} bytes long; the limit (`max_template_bytes`) is {} bytes",
                    text.len(),
                    self.limits.max_template_bytes
                ),
            );
            return None;
        }
        match Template::compile(text, scope, &self.limits.expr) {
            Ok(template) => Some(template),
            Err(errors) => {
                self.expression_errors(path, text, 0, errors);
                None
            }
        }
    }

    /// Compiles the CEL expression that is the whole value at `path`.
    fn expression(&mut self, path: &str, source: &str, scope: &Scope) -> Option<Expr> {
        if source.trim().is_empty() {
            let name = field_name(path);
            self.report(
                path,
                format!(
                    "`{name}` is empty: write a CEL expression such as type == \"login_failed\""
                ),
            );
            return None;
        }
        self.expression_in(path, source, 0, source, scope)
    }

    /// Compiles `source`, which starts at character `offset` of the value
    /// `value` written at `path` (e.g. the `data.amount` of `sum(data.amount)`).
    fn expression_in(
        &mut self,
        path: &str,
        value: &str,
        offset: usize,
        source: &str,
        scope: &Scope,
    ) -> Option<Expr> {
        let max = self.limits.expr.max_length;
        if source.len() > max {
            let message = format!(
                "the expression is {} bytes long; the limit (`expr.max_length`) is {max} bytes",
                source.len()
            );
            self.report(path, message);
            return None;
        }
        match expr::compile(source, scope, &self.limits.expr) {
            Ok(e) => Some(e),
            Err(errors) => {
                self.expression_errors(path, value, offset, errors);
                None
            }
        }
    }

    /// Reports expression errors at `path`, each at its line and column in
    /// the file when the error knows its column.
    fn expression_errors(
        &mut self,
        path: &str,
        value: &str,
        offset: usize,
        errors: Vec<expr::ExprError>,
    ) {
        if errors.is_empty() {
            // NB: an error list should never be empty; say something rather than nothing.
            self.report(path, "this expression cannot be compiled");
        }
        for error in errors {
            let at = error
                .column
                .and_then(|c| {
                    self.locations
                        .of_char(path, value, offset + c.saturating_sub(1))
                })
                .or_else(|| self.locations.of(path));
            self.problems.push(Problem::new(path, error.message).at(at));
        }
    }

    /// The rule's lateness policy. The allowance may be 0 (on time means
    /// exactly at or after the clock).
    fn lateness(&mut self, doc: &LatenessDoc) -> Lateness {
        let allowed = doc.allowed.as_deref().and_then(|text| {
            if Duration::parse(text) == Ok(Duration::ZERO) {
                Some(Duration::ZERO)
            } else {
                self.duration("lateness.allowed", text)
            }
        });
        Lateness {
            allowed,
            late: doc.late.unwrap_or_default(),
        }
    }

    /// A positive duration no longer than the limit.
    fn duration(&mut self, path: &str, text: &str) -> Option<Duration> {
        let name = field_name(path);
        if text.trim().is_empty() {
            self.report(
                path,
                format!("`{name}` is required: give a duration such as 30s, 5m or 1h30m"),
            );
            return None;
        }
        let d = match Duration::parse(text) {
            Ok(d) => d,
            Err(_) => {
                let hint = duration_hint(text)
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                self.report(
                    path,
                    format!(
                        "`{name}` must be a duration such as 30s, 5m or 1h30m, not `{}`{hint}",
                        crate::rules::located::shorten(text)
                    ),
                );
                return None;
            }
        };
        if d <= Duration::ZERO {
            self.report(path, format!("`{name}` must be longer than 0"));
            return None;
        }
        if d > self.limits.max_duration {
            self.report(
                path,
                format!(
                    "`{name}` is {d}; the limit (`max_duration`) is {}",
                    self.limits.max_duration
                ),
            );
            return None;
        }
        Some(d)
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn arcs(names: &[&str]) -> Vec<Arc<str>> {
    names.iter().map(|n| Arc::from(*n)).collect()
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
}

/// A valid id close to `id`: lowercased, other characters turned into `-`.
fn suggest_id(id: &str) -> Option<String> {
    let mut out = String::new();
    for c in id.trim().chars().flat_map(char::to_lowercase) {
        if is_id_char(c) {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_owned();
    (!out.is_empty() && out.chars().count() <= MAX_ID_CHARS).then_some(out)
}

/// "write `5m`" for `5 minutes`, "add a unit" for `30`, when the intent is clear.
fn duration_hint(text: &str) -> Option<String> {
    let text = text.trim();
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    let unit = text[digits.len()..].trim().to_ascii_lowercase();
    let short = match unit.as_str() {
        "" => return Some(format!("add a unit: `{digits}s`, `{digits}m`, `{digits}h`")),
        "msec" | "msecs" | "millisecond" | "milliseconds" => "ms",
        "sec" | "secs" | "second" | "seconds" => "s",
        "min" | "mins" | "minute" | "minutes" => "m",
        "hr" | "hrs" | "hour" | "hours" => "h",
        "day" | "days" => "d",
        "ms" | "s" | "m" | "h" | "d" => unit.as_str(),
        _ => return None,
    };
    Some(format!("write `{digits}{short}`"))
}

/// Whether `name` can name a step: an identifier, not reserved.
fn step_name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !starts_well || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Some(format!(
            "step name `{}` is not an identifier: use letters, digits and `_`, starting with a letter or `_` \
             (expressions refer to steps by name, as in failures.count)",
            crate::rules::located::shorten(name)
        ));
    }
    if RESERVED_STEP_NAMES.contains(&name) {
        return Some(format!(
            "step name `{name}` is reserved (expressions use {} for the event, the entity and the alert): \
             choose another",
            RESERVED_STEP_NAMES.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        ));
    }
    if CEL_RESERVED.contains(&name) {
        return Some(format!(
            "step name `{name}` is a CEL keyword: choose another"
        ));
    }
    None
}

/// The event types a rule can act on: those `when` accepts, among those the
/// pattern's predicates can match (`None` is "any type").
///
/// NB: with `strict` contiguity every event that passes `when` matters, even
/// one no step matches (it breaks the run), so only `when` restricts.
fn event_types(when: Option<&Expr>, pattern: &Pattern) -> Option<BTreeSet<String>> {
    let filter = when.and_then(Expr::accepted_types);
    let seen = match pattern {
        Pattern::Sequence(s) if s.contiguity == crate::rules::model::Contiguity::Strict => None,
        // NB: an event matching only an `until` still matters: it ends a loop.
        Pattern::Sequence(s) => union_all(
            s.steps
                .iter()
                .flat_map(|step| std::iter::once(&step.predicate).chain(&step.until))
                .map(Expr::accepted_types),
        ),
        Pattern::Absence(a) => {
            union_all(a.after.iter().chain([&a.expect]).map(Expr::accepted_types))
        }
        Pattern::Threshold(t) => t.predicate.accepted_types(),
    };
    intersect(filter, seen)
}

/// The union of type sets, where `None` (any type) absorbs everything.
fn union_all(sets: impl IntoIterator<Item = Option<BTreeSet<String>>>) -> Option<BTreeSet<String>> {
    let mut all = BTreeSet::new();
    for set in sets {
        all.extend(set?);
    }
    Some(all)
}

/// The intersection of two type sets, where `None` (any type) is neutral.
fn intersect(a: Option<BTreeSet<String>>, b: Option<BTreeSet<String>>) -> Option<BTreeSet<String>> {
    match (a, b) {
        (None, other) | (other, None) => other,
        (Some(a), Some(b)) => Some(a.intersection(&b).cloned().collect()),
    }
}

#[cfg(test)]
mod tests;
