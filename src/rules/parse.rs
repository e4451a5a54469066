//! Rule text (YAML or JSON) → [`RuleDocument`], with every problem and the
//! location of every field.
//!
//! The text is first read into a located node tree (`located.rs`); this
//! module then walks that tree by hand, field by field, so that one pass
//! reports every unknown field, wrong type and missing value, each with its
//! path and line. Where a value is unusable a placeholder stands in for it,
//! so the document can still be checked further (`compile.rs`); the checks
//! that follow leave alone what was already reported here (see
//! [`crate::rules::load_text`]).

use std::collections::BTreeMap;
use std::path::Path;

use crate::rules::limits::RuleLimits;
use crate::rules::located::{self, Node, Value};
use crate::rules::locations::Locations;
use crate::rules::model::{Contiguity, LatePolicy, Mode, Severity, SkipStrategy};
use crate::rules::problem::{Position, Problem};
use crate::rules::schema::{
    AbsenceDoc, AlertDoc, HoppingDoc, LatenessDoc, RuleDocument, SequenceDoc, SessionDoc, StepDoc,
    ThresholdDoc, TimesDoc, WindowDoc,
};
use crate::rules::suggest;

/// The text formats a rule can be written in (one schema for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// YAML 1.2 (one document per text).
    Yaml,
    /// JSON.
    Json,
}

impl Format {
    /// The format a file name implies: `.yaml`/`.yml` or `.json` (any case);
    /// `None` for other names.
    pub fn from_path(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    /// The format an HTTP `Content-Type` names: `application/json` (and any
    /// `+json` type) or `application/yaml` (also `application/x-yaml`,
    /// `text/yaml`, `text/x-yaml`); parameters such as `charset` are ignored.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" | "text/json" => Some(Format::Json),
            "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
                Some(Format::Yaml)
            }
            other if other.starts_with("application/") && other.ends_with("+json") => {
                Some(Format::Json)
            }
            other if other.starts_with("application/") && other.ends_with("+yaml") => {
                Some(Format::Yaml)
            }
            _ => None,
        }
    }
}

/// What reading a rule's text gave.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The document, with placeholders where a value was unusable; `None`
    /// when the text could not be read at all (too large, not YAML/JSON,
    /// empty, not a mapping).
    pub document: Option<RuleDocument>,
    /// Where each field was written.
    pub locations: Locations,
    /// Every problem found while reading, in reading order.
    pub problems: Vec<Problem>,
}

/// Reads `text` as a rule document, collecting every problem.
///
/// Text longer than [`RuleLimits::max_rule_bytes`] is refused before it is
/// parsed.
pub fn parse(text: &str, format: Format, limits: &RuleLimits) -> Parsed {
    let failed = |problem: Problem| Parsed {
        document: None,
        locations: Locations::default(),
        problems: vec![problem],
    };
    if text.len() > limits.max_rule_bytes {
        return failed(Problem::new(
            "",
            format!(
                "the rule is {} bytes long; the limit (`max_rule_bytes`) is {} bytes",
                text.len(),
                limits.max_rule_bytes
            ),
        ));
    }
    let root = match format {
        Format::Yaml => located::read_yaml(text),
        Format::Json => located::read_json(text),
    };
    let root = match root {
        Ok(root) => root,
        Err(problem) => return failed(problem),
    };
    let mut walker = Walker {
        text,
        locations: Locations::default(),
        problems: Vec::new(),
    };
    let document = walker.rule(&root);
    Parsed {
        document,
        locations: walker.locations,
        problems: walker.problems,
    }
}

// The fields of each mapping, in the order the reference documents them.
const RULE_FIELDS: &[&str] = &[
    "id",
    "description",
    "severity",
    "enabled",
    "mode",
    "when",
    "partition_by",
    "sequence",
    "absence",
    "threshold",
    "alert",
    "lateness",
];
const SEQUENCE_FIELDS: &[&str] = &[
    "within",
    "contiguity",
    "any_order",
    "skip",
    "max_match_age",
    "steps",
];
const STEP_FIELDS: &[&str] = &[
    "name", "match", "times", "optional", "not", "greedy", "until", "group",
];
const TIMES_FIELDS: &[&str] = &["min", "max"];
const ABSENCE_FIELDS: &[&str] = &["after", "expect", "within"];
const THRESHOLD_FIELDS: &[&str] = &[
    "match",
    "window",
    "aggregate",
    "above",
    "at_least",
    "below",
    "at_most",
    "aggregates",
    "condition",
];
const WINDOW_FIELDS: &[&str] = &["sliding", "tumbling", "hopping", "session", "count"];
const HOPPING_FIELDS: &[&str] = &["size", "advance"];
const SESSION_FIELDS: &[&str] = &["gap"];
const ALERT_FIELDS: &[&str] = &["message"];
const LATENESS_FIELDS: &[&str] = &["allowed", "late"];

/// Where each field name is valid, to tell a user who put one at the wrong
/// level where it belongs.
const SECTIONS: &[(&str, &[&str])] = &[
    ("the top level of the rule", RULE_FIELDS),
    ("`sequence`", SEQUENCE_FIELDS),
    ("each step of `sequence.steps`", STEP_FIELDS),
    ("`absence`", ABSENCE_FIELDS),
    ("`threshold`", THRESHOLD_FIELDS),
    ("`threshold.window`", WINDOW_FIELDS),
    ("`alert`", ALERT_FIELDS),
    ("`lateness`", LATENESS_FIELDS),
    ("`sequence.skip`", SKIP_FIELDS),
];

const SEVERITIES: &[&str] = &["info", "low", "medium", "high", "critical"];
const MODES: &[&str] = &["live", "shadow"];
const LATE_POLICIES: &[&str] = &["dead_letter", "evaluate"];
const CONTIGUITIES: &[&str] = &["relaxed", "strict", "any"];
const SKIPS: &[&str] = &["past_last_event", "all", "to_next"];
const SKIP_FIELDS: &[&str] = &["to_first", "to_last"];

/// The walk over the node tree; collects problems and locations.
struct Walker<'t> {
    text: &'t str,
    locations: Locations,
    problems: Vec<Problem>,
}

/// The fields of one mapping, once checked for unknown and repeated keys.
struct Fields<'n> {
    path: String,
    /// (name, key node, value node), first occurrence of each known name.
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<(&'n Node, &'n Node)> {
        self.entries
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, k, v)| (*k, *v))
    }
    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

fn join(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

fn position(node: &Node) -> Option<Position> {
    node.span.as_ref().map(|s| s.position)
}

fn list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Walker<'_> {
    fn report(&mut self, path: &str, message: String) {
        let at = self.locations.of(path);
        self.problems.push(Problem::new(path, message).at(at));
    }

    fn report_at(&mut self, path: &str, at: Option<Position>, message: String) {
        self.problems.push(Problem::new(path, message).at(at));
    }

    /// Notes where the field at `path` was written.
    fn record(&mut self, path: &str, key: Option<&Node>, value: &Node) {
        let Some(span) = &value.span else { return };
        let key = key.and_then(position);
        match &value.value {
            Value::Seq(_) | Value::Map(_) => {
                self.locations.insert_collection(path, key, span.position)
            }
            _ => {
                let raw = span
                    .bytes
                    .clone()
                    .and_then(|b| self.text.get(b))
                    .map(str::to_owned);
                self.locations.insert(path, key, span.position, raw);
            }
        }
    }

    /// Checks that `node` is a mapping of `known` fields, reporting every
    /// other key, every repeated key and any other kind of value.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        subject: &str,
        known: &[&str],
    ) -> Option<Fields<'n>> {
        let Value::Map(pairs) = &node.value else {
            self.report(
                path,
                format!(
                    "{subject} must be a mapping with the fields {}, not {}",
                    list(known),
                    node.value.describe()
                ),
            );
            return None;
        };
        let mut entries: Vec<(&'n str, &'n Node, &'n Node)> = Vec::new();
        for (key, value) in pairs {
            let Value::Str(name) = &key.value else {
                let message = format!("field names must be text, not {}", key.value.describe());
                self.report_at(path, position(key), message);
                continue;
            };
            let field_path = join(path, name);
            if !known.contains(&name.as_str()) {
                let message = unknown_field(name, subject, known);
                self.report_at(&field_path, position(key), message);
                continue;
            }
            if let Some((_, first, _)) = entries.iter().find(|(n, _, _)| *n == name.as_str()) {
                let first_line = position(first)
                    .map(|p| format!(" (first on line {})", p.line))
                    .unwrap_or_default();
                let message = format!("`{name}` is given more than once{first_line}: keep one");
                self.report_at(&field_path, position(key), message);
                continue;
            }
            self.record(&field_path, Some(key), value);
            entries.push((name.as_str(), key, value));
        }
        Some(Fields {
            path: path.to_owned(),
            entries,
        })
    }

    fn rule(&mut self, root: &Node) -> Option<RuleDocument> {
        self.record("", None, root);
        let Value::Map(_) = root.value else {
            self.report(
                "",
                format!(
                    "a rule must be a mapping with an `id` and one of `sequence`, `absence` or `threshold`, not {}",
                    root.value.describe()
                ),
            );
            return None;
        };
        let f = self.fields(root, "", "the rule", RULE_FIELDS)?;
        let id = self.required_text(
            &f,
            "id",
            "give the rule a unique id of lowercase letters, digits, `.`, `_` and `-`, e.g. brute-force-login",
        );
        let document = RuleDocument {
            id,
            description: self.text(&f, "description"),
            severity: self
                .choice(&f, "severity", SEVERITIES)
                .map(severity)
                .unwrap_or_default(),
            enabled: self.boolean(&f, "enabled").unwrap_or(true),
            mode: self.choice(&f, "mode", MODES).map(mode).unwrap_or_default(),
            when: self.text(&f, "when"),
            partition_by: self.text(&f, "partition_by"),
            sequence: self.section(&f, "sequence", Walker::sequence, SequenceDoc::placeholder),
            absence: self.section(&f, "absence", Walker::absence, AbsenceDoc::placeholder),
            threshold: self.section(
                &f,
                "threshold",
                Walker::threshold,
                ThresholdDoc::placeholder,
            ),
            alert: self.section(&f, "alert", Walker::alert, || AlertDoc { message: None }),
            lateness: self.section(&f, "lateness", Walker::lateness, || LatenessDoc {
                allowed: None,
                late: None,
            }),
        };
        Some(document)
    }

    /// An optional mapping-valued field. When it is present but unusable,
    /// the placeholder stands in, so later checks still see that the user
    /// chose, say, a `sequence` (and do not also report "no pattern").
    fn section<T>(
        &mut self,
        f: &Fields<'_>,
        name: &str,
        read: fn(&mut Self, &Node, &str) -> Option<T>,
        placeholder: fn() -> T,
    ) -> Option<T> {
        let (_, value) = f.get(name)?;
        let path = join(&f.path, name);
        Some(read(self, value, &path).unwrap_or_else(placeholder))
    }

    fn sequence(&mut self, node: &Node, path: &str) -> Option<SequenceDoc> {
        let f = self.fields(node, path, "`sequence`", SEQUENCE_FIELDS)?;
        let steps = match f.get("steps") {
            None => {
                self.report(
                    &join(path, "steps"),
                    "`steps` is required: list the steps in order, each with a `match` predicate"
                        .to_owned(),
                );
                Vec::new()
            }
            Some((_, steps)) => self.steps(steps, &join(path, "steps")),
        };
        Some(SequenceDoc {
            within: self.text(&f, "within"),
            contiguity: self
                .choice(&f, "contiguity", CONTIGUITIES)
                .map(contiguity)
                .unwrap_or_default(),
            any_order: self.boolean(&f, "any_order").unwrap_or(false),
            skip: self.skip(&f),
            max_match_age: self.text(&f, "max_match_age"),
            steps,
        })
    }

    /// `skip`: a name (`past_last_event`, `all`, `to_next`) or a mapping
    /// naming a step (`{to_first: STEP}`, `{to_last: STEP}`).
    fn skip(&mut self, f: &Fields<'_>) -> SkipStrategy {
        let Some((_, node)) = f.get("skip") else {
            return SkipStrategy::default();
        };
        if !matches!(node.value, Value::Map(_)) {
            return self.choice(f, "skip", SKIPS).map(skip).unwrap_or_default();
        }
        let path = join(&f.path, "skip");
        let Some(g) = self.fields(node, &path, "`sequence.skip`", SKIP_FIELDS) else {
            return SkipStrategy::default();
        };
        match (self.text(&g, "to_first"), self.text(&g, "to_last")) {
            (Some(step), None) => SkipStrategy::ToFirst(step),
            (None, Some(step)) => SkipStrategy::ToLast(step),
            (Some(_), Some(_)) => {
                self.report(
                    &path,
                    "`skip` takes one of `to_first` and `to_last`, not both".to_owned(),
                );
                SkipStrategy::default()
            }
            (None, None) => {
                self.report(
                    &path,
                    "`skip` as a mapping names a step: {to_first: STEP} or {to_last: STEP}"
                        .to_owned(),
                );
                SkipStrategy::default()
            }
        }
    }

    fn steps(&mut self, node: &Node, path: &str) -> Vec<StepDoc> {
        let Value::Seq(items) = &node.value else {
            let message = format!(
                "`steps` must be a list of steps (each a mapping with `match`), not {}",
                node.value.describe()
            );
            self.report(path, message);
            return Vec::new();
        };
        let mut steps = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{index}]");
            self.record(&item_path, None, item);
            let subject = format!("step {}", index + 1);
            // NB: an unusable step keeps its place (as a placeholder), so the
            // indices and default names of the steps after it stay right.
            let step = self
                .step(item, &item_path, &subject)
                .unwrap_or_else(StepDoc::placeholder);
            steps.push(step);
        }
        steps
    }

    fn step(&mut self, node: &Node, path: &str, subject: &str) -> Option<StepDoc> {
        let f = self.fields(node, path, subject, STEP_FIELDS)?;
        let group = f
            .get("group")
            .map(|(_, node)| self.steps(node, &join(path, "group")));
        // NB: a group's steps carry the predicates; `match` beside `group`
        // is reported when compiling.
        let match_ = if group.is_some() {
            self.text(&f, "match").unwrap_or_default()
        } else {
            self.required_text(
                &f,
                "match",
                "give a CEL predicate such as type == \"login_failed\" (or `group` with steps of its own)",
            )
        };
        Some(StepDoc {
            group,
            name: self.text(&f, "name"),
            match_,
            times: self.times(&f),
            optional: self.boolean(&f, "optional").unwrap_or(false),
            negated: self.boolean(&f, "not").unwrap_or(false),
            greedy: self.boolean(&f, "greedy").unwrap_or(true),
            until: self.text(&f, "until"),
        })
    }

    fn times(&mut self, f: &Fields<'_>) -> Option<TimesDoc> {
        let (_, node) = f.get("times")?;
        let path = join(&f.path, "times");
        match &node.value {
            Value::Null => None,
            Value::Map(_) => {
                let r = self.fields(node, &path, "`times`", TIMES_FIELDS)?;
                Some(TimesDoc::Range {
                    min: self.count(&r, "min"),
                    max: self.count(&r, "max"),
                })
            }
            Value::UInt(_) | Value::Int(_) => {
                let n = self.whole_number(node, &path, "times")?;
                Some(TimesDoc::Exactly(n))
            }
            other => {
                let message = format!(
                    "`times` must be a whole number such as 3, or a range such as {{min: 2, max: 5}}, not {}",
                    other.describe()
                );
                self.report(&path, message);
                None
            }
        }
    }

    fn count(&mut self, f: &Fields<'_>, name: &str) -> Option<u32> {
        let (_, node) = f.get(name)?;
        if matches!(node.value, Value::Null) {
            return None;
        }
        self.whole_number(node, &join(&f.path, name), name)
    }

    fn whole_number(&mut self, node: &Node, path: &str, name: &str) -> Option<u32> {
        let problem = match &node.value {
            Value::UInt(n) => match u32::try_from(*n) {
                Ok(n) => return Some(n),
                Err(_) => format!("`{name}` is {n}, far more than any quantifier may be"),
            },
            Value::Int(n) => format!("`{name}` must be a whole number of 0 or more, not {n}"),
            other => format!(
                "`{name}` must be a whole number such as 3, not {}",
                other.describe()
            ),
        };
        self.report(path, problem);
        None
    }

    fn absence(&mut self, node: &Node, path: &str) -> Option<AbsenceDoc> {
        let f = self.fields(node, path, "`absence`", ABSENCE_FIELDS)?;
        Some(AbsenceDoc {
            after: self.text(&f, "after"),
            expect: self.required_text(
                &f,
                "expect",
                "give a CEL predicate of the event that should arrive, e.g. type == \"payment_settled\"",
            ),
            within: self.required_text(&f, "within", "say how long to wait, e.g. 30s, 5m or 1h30m"),
        })
    }

    fn threshold(&mut self, node: &Node, path: &str) -> Option<ThresholdDoc> {
        let f = self.fields(node, path, "`threshold`", THRESHOLD_FIELDS)?;
        let window = match f.get("window") {
            None => {
                let message = "`window` is required: one of sliding: 1m, tumbling: 1h, \
                               hopping: {size: 10m, advance: 1m} or session: {gap: 30s}";
                self.report(&join(path, "window"), message.to_owned());
                WindowDoc::placeholder()
            }
            Some((_, node)) => self
                .window(node, &join(path, "window"))
                .unwrap_or_else(WindowDoc::placeholder),
        };
        Some(ThresholdDoc {
            match_: self.text(&f, "match"),
            window,
            aggregate: self.text(&f, "aggregate"),
            above: self.number(&f, "above"),
            at_least: self.number(&f, "at_least"),
            below: self.number(&f, "below"),
            at_most: self.number(&f, "at_most"),
            aggregates: self.aggregates(&f),
            condition: self.text(&f, "condition"),
        })
    }

    /// `aggregates`: a mapping of names the author chooses to aggregate
    /// texts (the names are checked when compiling).
    fn aggregates(&mut self, f: &Fields<'_>) -> Option<BTreeMap<String, String>> {
        let (_, node) = f.get("aggregates")?;
        let path = join(&f.path, "aggregates");
        let pairs = match &node.value {
            Value::Null => return None,
            Value::Map(pairs) => pairs,
            other => {
                let message = format!(
                    "`aggregates` must be a mapping of names to aggregates, e.g. {{n: count, total: sum(data.amount)}}, not {}",
                    other.describe()
                );
                self.report(&path, message);
                return Some(BTreeMap::new());
            }
        };
        let mut found = BTreeMap::new();
        for (key, value) in pairs {
            let Value::Str(name) = &key.value else {
                let message = format!("aggregate names must be text, not {}", key.value.describe());
                self.report_at(&path, position(key), message);
                continue;
            };
            let item = join(&path, name);
            if found.contains_key(name) {
                let message = format!("`{name}` is given more than once: keep one");
                self.report_at(&item, position(key), message);
                continue;
            }
            self.record(&item, Some(key), value);
            let text = match &value.value {
                Value::Str(t) => t.clone(),
                Value::Bool(_) | Value::Int(_) | Value::UInt(_) | Value::Float(_) => {
                    self.as_written(value)
                }
                Value::Null => String::new(),
                other => {
                    let message = format!(
                        "aggregate `{name}` must be text such as count or sum(data.amount), not {}",
                        other.describe()
                    );
                    self.report(&item, message);
                    continue;
                }
            };
            found.insert(name.clone(), text);
        }
        Some(found)
    }

    fn window(&mut self, node: &Node, path: &str) -> Option<WindowDoc> {
        let f = self.fields(node, path, "`window`", WINDOW_FIELDS)?;
        Some(WindowDoc {
            sliding: self.text(&f, "sliding"),
            tumbling: self.text(&f, "tumbling"),
            hopping: self.section(&f, "hopping", Walker::hopping, || HoppingDoc {
                size: String::new(),
                advance: String::new(),
            }),
            session: self.section(&f, "session", Walker::session, || SessionDoc {
                gap: String::new(),
            }),
            count: self.count(&f, "count"),
        })
    }

    fn hopping(&mut self, node: &Node, path: &str) -> Option<HoppingDoc> {
        let f = self.fields(node, path, "`hopping`", HOPPING_FIELDS)?;
        Some(HoppingDoc {
            size: self.required_text(&f, "size", "give the window length, e.g. size: 10m"),
            advance: self.required_text(
                &f,
                "advance",
                "give the distance between window starts, e.g. advance: 1m",
            ),
        })
    }

    fn session(&mut self, node: &Node, path: &str) -> Option<SessionDoc> {
        let f = self.fields(node, path, "`session`", SESSION_FIELDS)?;
        Some(SessionDoc {
            gap: self.required_text(
                &f,
                "gap",
                "give the largest gap inside a session, e.g. gap: 30s",
            ),
        })
    }

    fn lateness(&mut self, node: &Node, path: &str) -> Option<LatenessDoc> {
        let f = self.fields(node, path, "`lateness`", LATENESS_FIELDS)?;
        Some(LatenessDoc {
            allowed: self.text(&f, "allowed"),
            late: self.choice(&f, "late", LATE_POLICIES).map(|p| {
                if p == "evaluate" {
                    LatePolicy::Evaluate
                } else {
                    LatePolicy::DeadLetter
                }
            }),
        })
    }

    fn alert(&mut self, node: &Node, path: &str) -> Option<AlertDoc> {
        let f = self.fields(node, path, "`alert`", ALERT_FIELDS)?;
        Some(AlertDoc {
            message: self.text(&f, "message"),
        })
    }

    /// An optional text field; numbers and booleans are taken as written
    /// (`id: 123`, `match: true`), an empty value as absent.
    fn text(&mut self, f: &Fields<'_>, name: &str) -> Option<String> {
        let (_, node) = f.get(name)?;
        let path = join(&f.path, name);
        match &node.value {
            Value::Null => None,
            Value::Str(s) => Some(s.clone()),
            Value::Bool(_) | Value::Int(_) | Value::UInt(_) | Value::Float(_) => {
                Some(self.as_written(node))
            }
            Value::Seq(_) | Value::Map(_) => {
                self.report(
                    &path,
                    format!("`{name}` must be text, not {}", node.value.describe()),
                );
                None
            }
        }
    }

    /// A required text field; reports it when missing or empty and returns
    /// an empty placeholder.
    fn required_text(&mut self, f: &Fields<'_>, name: &str, hint: &str) -> String {
        let present = f.has(name);
        match self.text(f, name) {
            Some(text) => text,
            None => {
                // Present but unusable was already reported by `text`, unless empty.
                let empty = f
                    .get(name)
                    .is_some_and(|(_, v)| matches!(v.value, Value::Null));
                if !present || empty {
                    let state = if present { "is empty" } else { "is required" };
                    self.report(&join(&f.path, name), format!("`{name}` {state}: {hint}"));
                }
                String::new()
            }
        }
    }

    /// The text of a scalar exactly as written (`1.50` stays `1.50`).
    fn as_written(&self, node: &Node) -> String {
        let written = node
            .span
            .as_ref()
            .and_then(|s| s.bytes.clone())
            .and_then(|b| self.text.get(b));
        match (written, &node.value) {
            (Some(w), _) => w.to_owned(),
            (None, Value::Bool(b)) => b.to_string(),
            (None, Value::Int(n)) => n.to_string(),
            (None, Value::UInt(n)) => n.to_string(),
            (None, Value::Float(x)) => x.to_string(),
            (None, _) => String::new(),
        }
    }

    fn boolean(&mut self, f: &Fields<'_>, name: &str) -> Option<bool> {
        let (_, node) = f.get(name)?;
        match &node.value {
            Value::Null => None,
            Value::Bool(b) => Some(*b),
            other => {
                let message = format!("`{name}` must be true or false, not {}", other.describe());
                self.report(&join(&f.path, name), message);
                None
            }
        }
    }

    fn number(&mut self, f: &Fields<'_>, name: &str) -> Option<f64> {
        let (_, node) = f.get(name)?;
        match &node.value {
            Value::Null => None,
            Value::Int(n) => Some(*n as f64),
            Value::UInt(n) => Some(*n as f64),
            Value::Float(x) => Some(*x),
            other => {
                let message = format!(
                    "`{name}` must be a number such as 100 or 0.5, not {}",
                    other.describe()
                );
                self.report(&join(&f.path, name), message);
                None
            }
        }
    }

    /// One of a fixed set of words.
    fn choice(
        &mut self,
        f: &Fields<'_>,
        name: &str,
        choices: &[&'static str],
    ) -> Option<&'static str> {
        let (_, node) = f.get(name)?;
        let path = join(&f.path, name);
        let text = match &node.value {
            Value::Null => return None,
            Value::Str(s) => s.clone(),
            Value::Bool(_) | Value::Int(_) | Value::UInt(_) | Value::Float(_) => {
                self.as_written(node)
            }
            other => {
                self.report(
                    &path,
                    format!(
                        "`{name}` must be one of {}, not {}",
                        list(choices),
                        other.describe()
                    ),
                );
                return None;
            }
        };
        if let Some(found) = choices.iter().find(|c| **c == text) {
            return Some(found);
        }
        let hint = suggest::did_you_mean(&text, choices);
        let message = format!(
            "`{name}` must be one of {}, not `{}`{hint}",
            list(choices),
            located::shorten(&text)
        );
        self.report(&path, message);
        None
    }
}

/// "unknown field `withn` in `sequence` (did you mean `within`?) …".
fn unknown_field(name: &str, subject: &str, known: &[&str]) -> String {
    let shown = located::shorten(name);
    if let Some(close) = suggest::closest(name, known) {
        return format!("unknown field `{shown}` in {subject} (did you mean `{close}`?)");
    }
    let homes: Vec<&str> = SECTIONS
        .iter()
        .filter(|(_, fields)| fields.contains(&name))
        .map(|(section, _)| *section)
        .collect();
    if !homes.is_empty() {
        return format!(
            "`{shown}` is not a field of {subject}; it belongs in {} (the fields here are {})",
            homes.join(" or "),
            list(known)
        );
    }
    format!(
        "unknown field `{shown}` in {subject}; the fields here are {}",
        list(known)
    )
}

fn severity(name: &str) -> Severity {
    match name {
        "info" => Severity::Info,
        "low" => Severity::Low,
        "high" => Severity::High,
        "critical" => Severity::Critical,
        _ => Severity::Medium,
    }
}

fn mode(name: &str) -> Mode {
    if name == "shadow" {
        Mode::Shadow
    } else {
        Mode::Live
    }
}

fn contiguity(name: &str) -> Contiguity {
    match name {
        "strict" => Contiguity::Strict,
        "any" => Contiguity::Any,
        _ => Contiguity::Relaxed,
    }
}

fn skip(name: &str) -> SkipStrategy {
    match name {
        "all" => SkipStrategy::All,
        "to_next" => SkipStrategy::ToNext,
        _ => SkipStrategy::PastLastEvent,
    }
}

// Placeholders for unusable parts: empty values that the checks after
// parsing would report, at paths whose problems are already reported.
impl SequenceDoc {
    fn placeholder() -> SequenceDoc {
        SequenceDoc {
            within: None,
            contiguity: Contiguity::default(),
            any_order: false,
            skip: SkipStrategy::default(),
            max_match_age: None,
            steps: Vec::new(),
        }
    }
}

impl StepDoc {
    fn placeholder() -> StepDoc {
        StepDoc {
            name: None,
            match_: String::new(),
            times: None,
            optional: false,
            negated: false,
            greedy: true,
            until: None,
            group: None,
        }
    }
}

impl AbsenceDoc {
    fn placeholder() -> AbsenceDoc {
        AbsenceDoc {
            after: None,
            expect: String::new(),
            within: String::new(),
        }
    }
}

impl ThresholdDoc {
    fn placeholder() -> ThresholdDoc {
        ThresholdDoc {
            match_: None,
            window: WindowDoc::placeholder(),
            aggregate: None,
            above: None,
            at_least: None,
            below: None,
            at_most: None,
            aggregates: None,
            condition: None,
        }
    }
}

impl WindowDoc {
    fn placeholder() -> WindowDoc {
        WindowDoc {
            sliding: None,
            tumbling: None,
            hopping: None,
            session: None,
            count: None,
        }
    }
}
