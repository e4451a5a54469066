//! One problem found in a rule, with where it is.
//!
//! Reading and checking a rule never stops at the first mistake: every step
//! collects [`Problem`]s, and the caller gets the whole list (an HTTP 400
//! body, the lines of `cepheus check`).

use std::fmt;

use serde::Serialize;
use utoipa::ToSchema;

/// A mistake in a rule document: where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(example = json!({
    "path": "sequence.within",
    "line": 5,
    "column": 11,
    "message": "`within` must be a duration such as 30s, 5m or 1h30m, not `5 minutes`"
}))]
pub struct Problem {
    /// The field the problem is about, e.g. `sequence.steps[1].match`; empty
    /// for the document as a whole.
    pub path: String,
    /// 1-based line in the text, when the rule came from text with locations.
    pub line: Option<u32>,
    /// 1-based column (in characters) in the text, with `line`.
    pub column: Option<u32>,
    /// A sentence a person can act on.
    pub message: String,
}

impl Problem {
    /// A problem at `path` with no known location.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// The same problem at `position` (unchanged when `None`).
    pub fn at(mut self, position: Option<Position>) -> Problem {
        if let Some(p) = position {
            self.line = Some(p.line);
            self.column = Some(p.column);
        }
        self
    }

    /// The location, when known.
    pub fn position(&self) -> Option<Position> {
        match (self.line, self.column) {
            (Some(line), Some(column)) => Some(Position { line, column }),
            _ => None,
        }
    }

    /// Orders problems the way a person reads a file: by location, then the
    /// ones without a location, each group in the order found.
    pub fn sort(problems: &mut [Problem]) {
        problems.sort_by_key(|p| match p.position() {
            Some(pos) => (0, pos.line, pos.column),
            None => (1, 0, 0),
        });
    }
}

impl fmt::Display for Problem {
    /// `sequence.steps[1].times (line 9, column 14): message`; the location
    /// is left out when unknown, the path when it is the whole document.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.position()) {
            (false, Some(p)) => {
                write!(f, "{} (line {}, column {}): ", self.path, p.line, p.column)?
            }
            (false, None) => write!(f, "{}: ", self.path)?,
            (true, Some(p)) => write!(f, "line {}, column {}: ", p.line, p.column)?,
            (true, None) => {}
        }
        f.write_str(&self.message)
    }
}

/// A 1-based line and column (in characters) in a rule's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_path_and_location() {
        let p = Problem::new("sequence.steps[1].times", "`times` must be at least 1").at(Some(
            Position {
                line: 9,
                column: 14,
            },
        ));
        assert_eq!(
            p.to_string(),
            "sequence.steps[1].times (line 9, column 14): `times` must be at least 1"
        );
        let p = Problem::new("id", "`id` is required");
        assert_eq!(p.to_string(), "id: `id` is required");
        let p = Problem::new("", "the document is empty").at(Some(Position { line: 1, column: 1 }));
        assert_eq!(p.to_string(), "line 1, column 1: the document is empty");
    }

    #[test]
    fn serializes_for_http_bodies() {
        let p = Problem::new("id", "bad").at(Some(Position { line: 1, column: 5 }));
        let json = serde_json::to_value(&p).expect("a problem always serializes");
        assert_eq!(
            json,
            serde_json::json!({"path": "id", "line": 1, "column": 5, "message": "bad"})
        );
    }

    #[test]
    fn sort_puts_located_problems_first_in_reading_order() {
        let mut ps = vec![
            Problem::new("a", "no location"),
            Problem::new("b", "late").at(Some(Position { line: 9, column: 1 })),
            Problem::new("c", "early").at(Some(Position { line: 2, column: 3 })),
        ];
        Problem::sort(&mut ps);
        let paths: Vec<_> = ps.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["c", "b", "a"]);
    }
}
