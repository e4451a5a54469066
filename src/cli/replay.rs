//! `cepheus replay --rules DIR EVENTS.ndjson`: runs rules over a file of
//! events offline, on event time, and prints the alerts as NDJSON.
//!
//! The same engine as the service, with no store and no clock: events are
//! evaluated in file order per key, then every entity's clock is advanced
//! to the end of the input (the latest event time, or `--advance-to`), the
//! way `POST /v1/clock` ends a historical load. The output depends only on
//! the input: the same files give byte-identical output.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use crate::engine::{Alert, Engine, EngineConfig, KeyState, RuleSet};
use crate::event::EventLimits;
use crate::ingest::{decode, BodyFormat, DecodeLimits};
use crate::rules::{self, Format, RuleLimits};
use crate::time::{Duration, Timestamp};

/// Flags of `cepheus replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Folder of rule files (or one rule file).
    #[arg(long, value_name = "DIR")]
    pub rules: PathBuf,
    /// NDJSON events, one per line, each with a `time`; `-` reads standard input.
    #[arg(value_name = "EVENTS.ndjson")]
    pub events: PathBuf,
    /// Advance every entity's clock to this time at the end of the input
    /// (default: the latest event time in the file).
    #[arg(long, value_name = "RFC3339")]
    pub advance_to: Option<String>,
    /// How far behind its clock an entity still accepts events.
    #[arg(long, default_value = "0s")]
    pub allowed_lateness: String,
    /// Write the alerts here instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// What a replay saw, for the summary.
#[derive(Debug, Default)]
pub struct Summary {
    /// Lines read.
    pub lines: u64,
    /// Events evaluated.
    pub events: u64,
    /// Lines that were not valid events, with their line numbers and reasons.
    pub rejected: Vec<(u64, String)>,
    /// Events older than their entity's watermark.
    pub late: u64,
    /// Alerts per rule.
    pub alerts: BTreeMap<String, u64>,
    /// Entities seen.
    pub entities: usize,
}

/// Runs the replay; returns false when some input lines were rejected.
pub fn run(args: &ReplayArgs) -> anyhow::Result<bool> {
    let rule_set = load_rules(&args.rules)?;
    let lateness = Duration::parse(&args.allowed_lateness)
        .map_err(|e| anyhow::anyhow!("--allowed-lateness: {e}"))?;
    let advance_to = args
        .advance_to
        .as_deref()
        .map(Timestamp::parse_rfc3339)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--advance-to: {e}"))?;
    let engine = Engine::new(
        Arc::new(rule_set),
        EngineConfig {
            allowed_lateness: lateness,
            ..EngineConfig::default()
        },
    );
    let (input, size): (Box<dyn Read>, Option<u64>) = if args.events.as_os_str() == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let file = std::fs::File::open(&args.events)
            .with_context(|| format!("cannot open {}", args.events.display()))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let mut output: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let progress = Progress::new(size);
    let summary = replay(
        &engine,
        BufReader::new(input),
        advance_to,
        &mut output,
        &progress,
    )?;
    output.flush()?;
    progress.finish();
    print_summary(&summary);
    Ok(summary.rejected.is_empty())
}

fn load_rules(path: &std::path::Path) -> anyhow::Result<RuleSet> {
    let files = crate::cli::check::rule_files(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let limits = RuleLimits::default();
    let mut compiled = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        match rules::load(
            &text,
            Format::from_path(&file).unwrap_or(Format::Yaml),
            1,
            &limits,
        ) {
            Ok(rule) => compiled.push(Arc::new(rule)),
            Err(found) => problems.extend(found.iter().map(|p| format!("{}: {p}", file.display()))),
        }
    }
    if !problems.is_empty() {
        anyhow::bail!("the rules are invalid:\n  {}", problems.join("\n  "));
    }
    if compiled.is_empty() {
        anyhow::bail!("no rule files in {}", path.display());
    }
    Ok(RuleSet::new(compiled))
}

/// The replay itself: reads NDJSON from `input`, writes alerts to `output`.
pub fn replay(
    engine: &Engine,
    input: impl BufRead,
    advance_to: Option<Timestamp>,
    output: &mut impl Write,
    progress: &Progress,
) -> anyhow::Result<Summary> {
    let limits = DecodeLimits {
        max_events: 1,
        event: EventLimits::default(),
    };
    let mut entities: HashMap<String, KeyState> = HashMap::new();
    let mut summary = Summary::default();
    let mut latest: Option<Timestamp> = None;
    for line in input.lines() {
        let line = line.context("cannot read the events")?;
        summary.lines += 1;
        progress.advance(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        let event = match parse_line(&line, &limits) {
            Ok(event) => Arc::new(event),
            Err(reason) => {
                summary.rejected.push((summary.lines, reason));
                continue;
            }
        };
        latest = latest.max(Some(event.time));
        for key in engine.routes(&event) {
            let state = entities
                .entry(key.clone())
                .or_insert_with(|| KeyState::new(key));
            let outcome = engine.on_event(state, &event);
            summary.late += u64::from(outcome.late);
            write_alerts(&outcome.alerts, output, &mut summary)?;
        }
        summary.events += 1;
    }
    if let Some(end) = advance_to.or(latest) {
        let mut keys: Vec<&String> = entities.keys().collect();
        keys.sort();
        let keys: Vec<String> = keys.into_iter().cloned().collect();
        for key in keys {
            if let Some(state) = entities.get_mut(&key) {
                let alerts = engine.advance_to(state, end);
                write_alerts(&alerts, output, &mut summary)?;
            }
        }
    }
    summary.entities = entities.len();
    Ok(summary)
}

fn parse_line(line: &str, limits: &DecodeLimits) -> Result<crate::event::Event, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    if value.get("time").is_none_or(serde_json::Value::is_null) {
        return Err("offline replay needs a `time` on every event".into());
    }
    let decoded = decode(line.as_bytes(), BodyFormat::Json, limits, Timestamp(0))
        .map_err(|e| e.to_string())?;
    match (
        decoded.events.into_iter().next(),
        decoded.rejected.into_iter().next(),
    ) {
        (Some((_, event)), _) => Ok(event),
        (None, Some(rejection)) => Err(rejection.error),
        (None, None) => Err("no event on the line".into()),
    }
}

fn write_alerts(
    alerts: &[Alert],
    output: &mut impl Write,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    for alert in alerts {
        serde_json::to_writer(&mut *output, alert)?;
        output.write_all(b"\n")?;
        *summary.alerts.entry(alert.rule.to_string()).or_default() += 1;
    }
    Ok(())
}

fn print_summary(summary: &Summary) {
    let total: u64 = summary.alerts.values().sum();
    eprintln!(
        "replayed {} events ({} lines, {} entities): {} alerts, {} late, {} rejected",
        summary.events,
        summary.lines,
        summary.entities,
        total,
        summary.late,
        summary.rejected.len()
    );
    for (rule, n) in &summary.alerts {
        eprintln!("  {rule}: {n}");
    }
    for (line, reason) in summary.rejected.iter().take(20) {
        eprintln!("  line {line}: {reason}");
    }
    if summary.rejected.len() > 20 {
        eprintln!(
            "  ... and {} more rejected lines",
            summary.rejected.len() - 20
        );
    }
}

/// A progress bar on standard error, shown only on a terminal.
pub struct Progress {
    total: Option<u64>,
    done: std::cell::Cell<u64>,
    shown: std::cell::Cell<u64>,
    visible: bool,
}

impl Progress {
    /// A bar for `total` bytes (unknown for standard input).
    pub fn new(total: Option<u64>) -> Progress {
        Progress {
            total,
            done: std::cell::Cell::new(0),
            shown: std::cell::Cell::new(0),
            visible: std::io::stderr().is_terminal() && total.is_some(),
        }
    }

    /// A bar that never shows (tests).
    pub fn hidden() -> Progress {
        Progress {
            total: None,
            done: std::cell::Cell::new(0),
            shown: std::cell::Cell::new(0),
            visible: false,
        }
    }

    fn advance(&self, bytes: u64) {
        self.done.set(self.done.get() + bytes);
        let (Some(total), true) = (self.total, self.visible) else {
            return;
        };
        let percent = (self.done.get() * 100 / total.max(1)).min(100);
        if percent != self.shown.get() {
            self.shown.set(percent);
            let filled = (percent / 2) as usize;
            eprint!(
                "\r[{}{}] {percent:>3}%",
                "#".repeat(filled),
                " ".repeat(50 - filled)
            );
        }
    }

    fn finish(&self) {
        if self.visible {
            eprintln!();
        }
    }
}
