//! Where each field of a rule was written: field path → line and column.
//!
//! Filled while reading text (`parse.rs`) and consulted by `compile.rs`, so a
//! problem found long after parsing still points at the line to fix. A
//! document that did not come from text (stored JSON) has empty locations,
//! and its problems simply carry none.

use std::collections::HashMap;

use crate::rules::problem::Position;

/// Field paths (`sequence.steps[1].match`) and where they were written.
#[derive(Debug, Clone, Default)]
pub struct Locations {
    entries: HashMap<String, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Where the field's name was written (none for list items and the root).
    key: Option<Position>,
    /// Where its value starts.
    value: Position,
    /// Whether the value is a mapping or a list (it then starts on the
    /// line after its name, in block style: the name is the better place
    /// to point at).
    collection: bool,
    /// The value's text exactly as written (quotes, escapes, indentation),
    /// for scalars; used to place a column inside an expression.
    raw: Option<String>,
}

impl Locations {
    /// Records where the field at `path` was written.
    pub(crate) fn insert(
        &mut self,
        path: &str,
        key: Option<Position>,
        value: Position,
        raw: Option<String>,
    ) {
        self.insert_entry(
            path,
            Entry {
                key,
                value,
                collection: false,
                raw,
            },
        );
    }

    /// Records where the mapping or list at `path` was written.
    pub(crate) fn insert_collection(&mut self, path: &str, key: Option<Position>, value: Position) {
        self.insert_entry(
            path,
            Entry {
                key,
                value,
                collection: true,
                raw: None,
            },
        );
    }

    fn insert_entry(&mut self, path: &str, entry: Entry) {
        // The first occurrence wins: a repeated key is reported, not used.
        self.entries.entry(path.to_owned()).or_insert(entry);
    }

    /// Where the problem about `path` should point: the value at `path` (the
    /// name, for a mapping or list), or, for a field that is missing, where
    /// its closest written parent is.
    pub fn of(&self, path: &str) -> Option<Position> {
        if let Some(entry) = self.entries.get(path) {
            return Some(if entry.collection {
                entry.key.unwrap_or(entry.value)
            } else {
                entry.value
            });
        }
        let mut current = path;
        while !current.is_empty() {
            current = parent(current);
            if let Some(entry) = self.entries.get(current) {
                return Some(entry.key.unwrap_or(entry.value));
            }
        }
        None
    }

    /// Where the character at `char_index` (0-based) of the scalar at `path`
    /// was written, given the scalar's value `value`; used to turn a column
    /// inside an expression into a column of the file.
    ///
    /// Exact for plain and quoted scalars, and for block scalars (`|`, `>`)
    /// line by line; when the written text cannot be lined up with the value
    /// (unusual escapes) it falls back to the start of the scalar.
    pub fn of_char(&self, path: &str, value: &str, char_index: usize) -> Option<Position> {
        let entry = self.entries.get(path)?;
        let found = entry
            .raw
            .as_deref()
            .and_then(|raw| locate_char(raw, entry.value, value, char_index));
        Some(found.unwrap_or(entry.value))
    }
}

/// The path of the field holding `path`: `a.b[2]` → `a.b` → `a` → ``.
fn parent(path: &str) -> &str {
    let cut = if path.ends_with(']') {
        path.rfind('[')
    } else {
        path.rfind('.')
    };
    cut.map_or("", |i| &path[..i])
}

/// Lines the decoded `value` up with the `raw` text it was written as
/// (starting at `start`) and returns the position of `value`'s character
/// `target`.
///
/// NB: a greedy walk: every non-blank character of the value is found in the
/// raw text at or after the previous one; whatever the raw text has in
/// between (opening quote, escape backslashes, a doubled `''`, indentation of
/// block lines) is skipped. Blank characters of the value match a blank in
/// the raw text when there is one (a folded line break is a space).
fn locate_char(raw: &str, start: Position, value: &str, target: usize) -> Option<Position> {
    let mut raw = raw.chars().peekable();
    let mut at = start;
    let step = |c: char, at: &mut Position| {
        if c == '\n' {
            at.line += 1;
            at.column = 1;
        } else {
            at.column += 1;
        }
    };
    if matches!(raw.peek(), Some('"' | '\'')) {
        // A plain scalar cannot start with a quote: this one is quoted.
        let quote = raw.next()?;
        step(quote, &mut at);
    }
    for (index, wanted) in value.chars().enumerate() {
        if wanted.is_whitespace() {
            if index == target {
                return Some(at);
            }
            if raw.peek().is_some_and(|c| c.is_whitespace()) {
                let c = raw.next()?;
                step(c, &mut at);
            }
            continue;
        }
        loop {
            let c = *raw.peek()?;
            if c == wanted {
                break;
            }
            raw.next();
            step(c, &mut at);
        }
        if index == target {
            return Some(at);
        }
        let c = raw.next()?;
        step(c, &mut at);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: u32, column: u32) -> Position {
        Position { line, column }
    }

    #[test]
    fn missing_fields_point_at_their_parent() {
        let mut l = Locations::default();
        l.insert("", None, p(1, 1), None);
        l.insert_collection("absence", Some(p(4, 1)), p(5, 3));
        l.insert_collection("sequence.steps[1]", None, p(9, 7));
        l.insert("id", Some(p(2, 1)), p(2, 5), None);
        assert_eq!(l.of("id"), Some(p(2, 5)));
        assert_eq!(l.of("absence"), Some(p(4, 1)));
        assert_eq!(l.of("absence.expect"), Some(p(4, 1)));
        assert_eq!(l.of("sequence.steps[1].times"), Some(p(9, 7)));
        assert_eq!(l.of("threshold.window"), Some(p(1, 1)));
        assert_eq!(Locations::default().of("id"), None);
    }

    #[test]
    fn columns_inside_plain_and_quoted_scalars() {
        // match: type == "a" && nope     (value at column 8)
        assert_eq!(
            locate_char(
                "type == \"a\" && nope",
                p(3, 8),
                "type == \"a\" && nope",
                15
            ),
            Some(p(3, 23))
        );
        // match: "type == \"a\" && nope"
        let raw = "\"type == \\\"a\\\" && nope\"";
        assert_eq!(
            locate_char(raw, p(3, 8), "type == \"a\" && nope", 15),
            Some(p(3, 26))
        );
        // match: 'it''s' + x
        assert_eq!(
            locate_char("'it''s' + x", p(2, 10), "it's + x", 7),
            Some(p(2, 20))
        );
    }

    #[test]
    fn columns_inside_block_scalars() {
        // match: |
        //   type == "a"
        //   && nope
        let raw = "type == \"a\"\n  && nope\n";
        assert_eq!(
            locate_char(raw, p(2, 3), "type == \"a\"\n&& nope\n", 15),
            Some(p(3, 6))
        );
        // match: >
        //   type == "a"
        //   && nope      (folded: the line break reads as a space)
        assert_eq!(
            locate_char(raw, p(2, 3), "type == \"a\" && nope\n", 15),
            Some(p(3, 6))
        );
    }

    #[test]
    fn unmatched_text_falls_back_to_the_scalar_start() {
        let mut l = Locations::default();
        l.insert("m", None, p(1, 4), Some("\"\\u0041\"".to_owned()));
        assert_eq!(l.of_char("m", "A", 0), Some(p(1, 4)));
        assert_eq!(l.of_char("n", "A", 0), None);
    }
}
