//! A generic tree of YAML/JSON nodes that remember where they were written.
//!
//! Deserializing straight into [`crate::rules::RuleDocument`] would stop at the
//! first mistake, so reading is done in two passes: this module turns the text
//! into a [`Node`] tree (the only step that can fail as a whole, on a syntax
//! error), and `parse.rs` walks the tree by hand, collecting every problem.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{
    DuplicateKeyPolicy, MessageFormatter, NonFiniteFloatPolicy, Spanned, UserMessageFormatter,
};

use crate::rules::problem::{Position, Problem};

/// One value of the document with its location.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// The value.
    pub value: Value,
    /// Where it starts, when known.
    pub span: Option<Span>,
}

/// Where a node was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span {
    /// Line and column of its first character (for a quoted scalar, the quote;
    /// for a block scalar, the first character of its content).
    pub position: Position,
    /// Its bytes in the text, when the parser knows them (scalars).
    pub bytes: Option<Range<usize>>,
}

/// The value of a [`Node`].
#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` or `false` (YAML 1.2 spellings only: `yes` stays text).
    Bool(bool),
    /// A negative whole number.
    Int(i64),
    /// A non-negative whole number.
    UInt(u64),
    /// Any other number.
    Float(f64),
    /// Text.
    Str(String),
    /// A list.
    Seq(Vec<Node>),
    /// A mapping, in document order, repeated keys included (so they can be
    /// reported rather than silently dropped).
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// What kind of value this is, for messages: "a list", "text `5 minutes`".
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "empty".to_owned(),
            Value::Bool(b) => format!("`{b}`"),
            Value::Int(n) => format!("the number {n}"),
            Value::UInt(n) => format!("the number {n}"),
            Value::Float(x) => format!("the number {x}"),
            Value::Str(s) => format!("`{}`", shorten(s)),
            Value::Seq(_) => "a list".to_owned(),
            Value::Map(_) => "a mapping".to_owned(),
        }
    }
}

/// `text` cut to a length that reads well inside a message.
pub(crate) fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    let one_line = text.trim().replace('\n', " ");
    if one_line.chars().count() <= MAX {
        one_line
    } else {
        let cut: String = one_line.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// Reads YAML text (exactly one document) into a node tree.
pub(crate) fn read_yaml(text: &str) -> Result<Node, Problem> {
    let options = serde_saphyr::options! {
        // NB: `yes`/`no`/`on`/`off` stay text, so `optional: yes` gets a clear
        // "must be true or false" instead of a YAML 1.1 surprise.
        strict_booleans: true,
        // Repeated keys reach the walker, which reports every one of them.
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        // `.nan`/`.inf` become text and then "must be a number", not a
        // syntax error that hides every other problem.
        non_finite_float_policy: NonFiniteFloatPolicy::AsString,
        emit_comments: false,
        // A rule is a few levels deep and a few hundred nodes; these bounds
        // keep hostile input (alias bombs, deep nesting) cheap.
        budget: serde_saphyr::budget! { max_depth: 32, max_nodes: 50_000 },
        alias_limits: serde_saphyr::alias_limits! { max_total_replayed_events: 10_000 },
    };
    let documents: Vec<YamlNode> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(yaml_problem)?;
    let mut documents = documents.into_iter().map(|d| d.0);
    let Some(first) = documents.next() else {
        return Err(Problem::new("", EMPTY));
    };
    if let Some(second) = documents.next() {
        return Err(Problem::new(
            "",
            "one rule per file: this text holds more than one YAML document (separated by `---`); \
             put each rule in its own file or request",
        )
        .at(second.span.map(|s| s.position)));
    }
    if matches!(first.value, Value::Null) {
        return Err(Problem::new("", EMPTY).at(first.span.map(|s| s.position)));
    }
    Ok(first)
}

/// Reads JSON text into a node tree.
///
/// JSON is read by serde_json (strict JSON, exact syntax errors). Locations
/// come from reading the same text as YAML (JSON is YAML 1.2) when that gives
/// the same tree; in the rare case it does not, the
/// tree is kept without locations rather than trusting a differing reading.
/// (YAML refuses some characters JSON allows in strings, such as DEL.)
pub(crate) fn read_json(text: &str) -> Result<Node, Problem> {
    let plain: Node = match serde_json::from_str::<JsonNode>(text) {
        Ok(node) => node.0,
        Err(e) => return Err(json_problem(&e)),
    };
    if matches!(plain.value, Value::Null) {
        return Err(Problem::new("", EMPTY));
    }
    match read_yaml(text) {
        Ok(located) if same_tree(&plain, &located) => Ok(located),
        _ => Ok(plain),
    }
}

const EMPTY: &str =
    "the document is empty: a rule needs an `id` and one of `sequence`, `absence` or `threshold`";

fn yaml_problem(error: serde_saphyr::Error) -> Problem {
    let error = error.without_snippet();
    let position = error
        .location()
        .and_then(|l| position(l.line(), l.column()));
    // NB: the formatter gives the message without its "at line …" suffix;
    // control characters are replaced because the text may echo user input.
    let message: String = UserMessageFormatter
        .format_message(error)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Problem::new("", format!("this is not valid YAML: {message}")).at(position)
}

fn json_problem(error: &serde_json::Error) -> Problem {
    let full = error.to_string();
    // serde_json appends " at line L column C"; the location goes in its own fields.
    let message = match full.rfind(" at line ") {
        Some(i) => &full[..i],
        None => full.as_str(),
    };
    let position = position(error.line() as u64, error.column() as u64);
    Problem::new("", format!("this is not valid JSON: {message}")).at(position)
}

fn position(line: u64, column: u64) -> Option<Position> {
    // saphyr uses line 0 for "unknown".
    if line == 0 {
        return None;
    }
    Some(Position {
        line: u32::try_from(line).ok()?,
        column: u32::try_from(column.max(1)).ok()?,
    })
}

/// Whether two trees hold the same values (locations aside).
fn same_tree(a: &Node, b: &Node) -> bool {
    match (&a.value, &b.value) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::UInt(x), Value::UInt(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Seq(x), Value::Seq(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_tree(a, b))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| same_tree(ka, kb) && same_tree(va, vb))
        }
        _ => false,
    }
}

/// A node read through saphyr's `Spanned`, which carries the location.
struct YamlNode(Node);

impl<'de> Deserialize<'de> for YamlNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<ValueOf<YamlNode>>::deserialize(deserializer)?;
        let location = spanned.referenced;
        let span = position(location.line(), location.column()).map(|position| {
            let span = location.span();
            let bytes = match (span.byte_offset(), span.byte_len()) {
                (Some(start), Some(len)) => usize::try_from(start)
                    .ok()
                    .zip(usize::try_from(len).ok())
                    .and_then(|(start, len)| Some(start..start.checked_add(len)?)),
                _ => None,
            };
            Span { position, bytes }
        });
        Ok(YamlNode(Node {
            value: spanned.value.0,
            span,
        }))
    }
}

/// A node read by serde_json, which has no per-value locations.
struct JsonNode(Node);

impl<'de> Deserialize<'de> for JsonNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = ValueOf::<JsonNode>::deserialize(deserializer)?;
        Ok(JsonNode(Node {
            value: value.0,
            span: None,
        }))
    }
}

impl From<YamlNode> for Node {
    fn from(n: YamlNode) -> Node {
        n.0
    }
}

impl From<JsonNode> for Node {
    fn from(n: JsonNode) -> Node {
        n.0
    }
}

/// A [`Value`] whose children are read as `N` (YAML or JSON nodes).
struct ValueOf<N>(Value, std::marker::PhantomData<N>);

impl<'de, N: Deserialize<'de> + Into<Node>> Deserialize<'de> for ValueOf<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor::<N>(std::marker::PhantomData))
    }
}

struct ValueVisitor<N>(std::marker::PhantomData<N>);

impl<N> ValueVisitor<N> {
    fn done<E>(value: Value) -> Result<ValueOf<N>, E> {
        Ok(ValueOf(value, std::marker::PhantomData))
    }
}

impl<'de, N: Deserialize<'de> + Into<Node>> Visitor<'de> for ValueVisitor<N> {
    type Value = ValueOf<N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("text, a number, true/false, a list or a mapping")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Self::done(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Self::done(if v < 0 {
            Value::Int(v)
        } else {
            Value::UInt(v.unsigned_abs())
        })
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Self::done(Value::UInt(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
        // Out of range for any field; kept as a number so the message says so.
        Self::done(Value::Float(v as f64))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
        Self::done(Value::Float(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Self::done(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Self::done(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Self::done(Value::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        // `!!binary` scalars: no field takes bytes; keep them as text so the
        // walker reports the field, not the whole document.
        Self::done(Value::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Self::done(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Self::done(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        ValueOf::<N>::deserialize(deserializer)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        ValueOf::<N>::deserialize(deserializer)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<N>()? {
            items.push(item.into());
        }
        Self::done(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<N, N>()? {
            entries.push((key.into(), value.into()));
        }
        Self::done(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(node: &Node) -> (u32, u32) {
        let p = node.span.as_ref().expect("located").position;
        (p.line, p.column)
    }

    fn entries(node: &Node) -> &[(Node, Node)] {
        match &node.value {
            Value::Map(entries) => entries,
            other => panic!("not a mapping: {other:?}"),
        }
    }

    #[test]
    fn yaml_nodes_carry_line_column_and_bytes() {
        let text = "id: x\nsequence:\n  within: 5m\n  steps: [{match: 'a'}]\n";
        let root = read_yaml(text).expect("valid");
        let top = entries(&root);
        assert_eq!(pos(&top[0].0), (1, 1));
        assert_eq!(pos(&top[0].1), (1, 5));
        let seq = entries(&top[1].1);
        assert_eq!(pos(&seq[0].1), (3, 11));
        let steps = &seq[1].1;
        let Value::Seq(items) = &steps.value else {
            panic!("steps is a list")
        };
        let step = entries(&items[0]);
        let quoted = &step[0].1;
        assert_eq!(pos(quoted), (4, 19));
        let bytes = quoted
            .span
            .as_ref()
            .and_then(|s| s.bytes.clone())
            .expect("scalars have bytes");
        assert_eq!(&text[bytes], "'a'");
    }

    #[test]
    fn yaml_keeps_repeated_keys_and_yes_as_text() {
        let root = read_yaml("a: yes\na: 2\n").expect("valid");
        let top = entries(&root);
        assert_eq!(top.len(), 2);
        assert!(matches!(&top[0].1.value, Value::Str(s) if s == "yes"));
        assert!(matches!(top[1].1.value, Value::UInt(2)));
    }

    #[test]
    fn yaml_syntax_errors_have_a_location() {
        let p = read_yaml("id: [x\nfoo: 1\n").expect_err("invalid");
        assert!(p.message.starts_with("this is not valid YAML: "), "{p}");
        assert!(!p.message.contains("at line"), "{p}");
        assert_eq!(p.line, Some(2));
    }

    #[test]
    fn yaml_empty_and_multi_document_texts_are_refused() {
        assert!(read_yaml("").expect_err("empty").message.contains("empty"));
        assert!(read_yaml("# just a comment\n")
            .expect_err("empty")
            .message
            .contains("empty"));
        let p = read_yaml("id: a\n---\nid: b\n").expect_err("two documents");
        assert!(p.message.starts_with("one rule per file"), "{p}");
        assert_eq!(p.line, Some(3));
    }

    #[test]
    fn json_is_strict_and_located() {
        let p = read_json("{\"id\": \"x\",}").expect_err("trailing comma");
        assert!(p.message.starts_with("this is not valid JSON: "), "{p}");
        assert_eq!((p.line, p.column), (Some(1), Some(12)));
        let root = read_json("{\"id\": \"x\",\n \"n\": -2}").expect("valid");
        let top = entries(&root);
        assert_eq!(pos(&top[1].0), (2, 2));
        assert!(matches!(top[1].1.value, Value::Int(-2)));
    }

    #[test]
    fn json_that_yaml_reads_differently_is_kept_without_locations() {
        // A raw DEL character is allowed in a JSON string, not in YAML.
        let root = read_json("{\"id\": \"a\u{7f}b\"}").expect("valid JSON");
        assert!(root.span.is_none());
        assert!(matches!(&entries(&root)[0].1.value, Value::Str(s) if s == "a\u{7f}b"));
    }
}
