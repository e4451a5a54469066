//! `cepheus check FILE|DIR…`: validate rule files, like `promtool check rules`.
//!
//! Prints `FILE: OK (rule <id>)` for each valid file, one line per problem
//! (`FILE:LINE:COLUMN: PATH: MESSAGE`, the location left out when unknown),
//! then a summary. A rule id defined by more than one file is a problem of
//! every file after the first.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::rules::{self, Format, Problem, RuleLimits};

/// Checks every rule file named by `paths` (a directory stands for the
/// `*.yaml`, `*.yml` and `*.json` files directly in it) and writes the
/// report to `out`. Returns true when every file holds a valid rule.
pub fn run(paths: &[PathBuf], limits: &RuleLimits, out: &mut impl Write) -> bool {
    let mut reports: Vec<FileReport> = Vec::new();
    for path in paths {
        match rule_files(path) {
            Ok(files) if files.is_empty() => reports.push(FileReport::failed(
                path,
                "no rule files (*.yaml, *.yml, *.json) in this directory".to_owned(),
            )),
            Ok(files) => reports.extend(files.iter().map(|file| check_file(file, limits))),
            Err(e) => reports.push(FileReport::failed(path, format!("cannot read: {e}"))),
        }
    }
    flag_duplicate_ids(&mut reports);

    let mut problems = 0;
    let mut valid = 0;
    for report in &reports {
        problems += report.problems.len();
        if report.problems.is_empty() {
            valid += 1;
        }
        print(out, report);
    }
    let files = reports.len();
    let plural = |n: usize, word: &str| {
        if n == 1 {
            format!("{n} {word}")
        } else {
            format!("{n} {word}s")
        }
    };
    // NB: a failed write (closed pipe) must not turn into a panic; the exit
    // status still tells the outcome.
    let _ = writeln!(
        out,
        "{} checked: {valid} valid, {} with problems ({} in all)",
        plural(files, "file"),
        files - valid,
        plural(problems, "problem")
    );
    problems == 0
}

/// What checking one file (or an unreadable path) found.
struct FileReport {
    path: PathBuf,
    /// The rule id, with where it is written, when the file has one.
    id: Option<(String, Option<rules::Position>)>,
    /// Problems, sorted by location.
    problems: Vec<Problem>,
    /// Warnings of a valid rule: printed, but the file still passes.
    warnings: Vec<Problem>,
}

impl FileReport {
    fn failed(path: &Path, message: String) -> FileReport {
        FileReport {
            path: path.to_owned(),
            id: None,
            problems: vec![Problem::new("", message)],
            warnings: Vec::new(),
        }
    }
}

/// The rule files `path` names: itself when it is a file, else the
/// `*.yaml`, `*.yml`, `*.json` files directly in it, sorted by name.
pub fn rule_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !fs::metadata(path)?.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        let file = entry.path();
        // NB: not recursive: subdirectories (such as `patterns/cases/`) hold
        // test data, not rules.
        let is_file = fs::metadata(&file).is_ok_and(|m| m.is_file());
        if is_file && Format::from_path(&file).is_some() {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

fn check_file(path: &Path, limits: &RuleLimits) -> FileReport {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return FileReport::failed(path, format!("cannot read: {e}")),
    };
    // A file named on the command line without a known extension is read as
    // YAML, which also reads most JSON.
    let format = Format::from_path(path).unwrap_or(Format::Yaml);
    let loaded = rules::load_text(&text, format, 1, limits);
    let id = loaded
        .document
        .as_ref()
        .filter(|d| !d.id.is_empty())
        .map(|d| (d.id.clone(), loaded.locations.of("id")));
    let (problems, warnings) = match loaded.result {
        Ok(rule) => (Vec::new(), rule.warnings),
        Err(problems) => (problems, Vec::new()),
    };
    FileReport {
        path: path.to_owned(),
        id,
        problems,
        warnings,
    }
}

/// Adds a problem to every file whose rule id an earlier file already uses.
fn flag_duplicate_ids(reports: &mut [FileReport]) {
    let mut first: HashMap<String, PathBuf> = HashMap::new();
    for report in reports.iter_mut() {
        let Some((id, at)) = &report.id else { continue };
        match first.get(id) {
            Some(earlier) => {
                let message = format!(
                    "rule id `{id}` is already used by {}: rule ids must be unique",
                    earlier.display()
                );
                report.problems.push(Problem::new("id", message).at(*at));
                Problem::sort(&mut report.problems);
            }
            None => {
                first.insert(id.clone(), report.path.clone());
            }
        }
    }
}

fn print(out: &mut impl Write, report: &FileReport) {
    let file = report.path.display();
    if report.problems.is_empty() {
        let id = report.id.as_ref().map_or("", |(id, _)| id.as_str());
        let _ = writeln!(out, "{file}: OK (rule {id})");
        for warning in &report.warnings {
            let _ = writeln!(out, "{}", line(&file.to_string(), warning, "warning: "));
        }
        return;
    }
    for problem in &report.problems {
        let _ = writeln!(out, "{}", line(&file.to_string(), problem, ""));
    }
}

/// One problem or warning, one line: `FILE:LINE:COLUMN: PATH: [warning: ]MESSAGE`.
fn line(file: &str, problem: &Problem, label: &str) -> String {
    let at = problem
        .position()
        .map(|p| format!("{}:{}:", p.line, p.column))
        .unwrap_or_default();
    let field = if problem.path.is_empty() {
        String::new()
    } else {
        format!(" {}:", problem.path)
    };
    // One problem, one line: a message that quotes a multi-line
    // expression is folded.
    let message: String = problem
        .message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("{file}:{at}{field} {label}{message}")
}
