//! `POST /v1/rules/backtest`, `GET /v1/rules/backtest/{job}`: run a rule
//! (or compare two versions) over the retained event log.
//!
//! A backtest is a job on its own thread: the POST answers 202 with the job
//! (or, with `wait=true`, waits up to a minute for it), and the job's
//! progress and result are read with GET. The last 32 jobs are kept.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::actors::wall_now;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::AppState;
use crate::backtest::{self, Bounds, Outcome, Progress};
use crate::catalog::CatalogError;
use crate::rules::{Format, Rule, RuleDocument};
use crate::time::Timestamp;

/// Routes of this resource (registered before `/v1/rules/{id}`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/rules/backtest", web::post().to(start_backtest))
        .route("/v1/rules/backtest/{job}", web::get().to(get_backtest));
}

/// Which rule a backtest runs: exactly one of a document, YAML text, or a
/// stored rule id (with a version; the current one when omitted).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleRef {
    /// A rule document (not stored).
    pub document: Option<RuleDocument>,
    /// A rule in YAML (not stored).
    pub yaml: Option<String>,
    /// A stored rule's id.
    pub id: Option<String>,
    /// With `id`: the version (default: the current one).
    pub version: Option<u64>,
}

/// The body of `POST /v1/rules/backtest`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"rule": {"id": "card-velocity", "version": 2}, "compare": {"id": "card-velocity", "version": 3},
                          "from": "2026-11-20T00:00:00Z", "to": "2026-11-27T00:00:00Z"}))]
pub struct BacktestRequest {
    /// The rule to run.
    pub rule: RuleRef,
    /// A second rule (e.g. the next version) to compare with: the result
    /// then lists the alerts only one of them produces.
    pub compare: Option<RuleRef>,
    /// Start of the event-time range (inclusive).
    #[schema(value_type = String, format = DateTime)]
    pub from: Timestamp,
    /// End of the event-time range (exclusive); every entity's clock is
    /// advanced to it at the end, as `POST /v1/clock` would.
    #[schema(value_type = String, format = DateTime)]
    pub to: Timestamp,
    /// Most alerts returned per rule (default 1,000, at most 100,000); more
    /// are counted in `alerts_total`.
    pub max_alerts: Option<usize>,
}

/// Options of `POST /v1/rules/backtest`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StartQuery {
    /// Wait (up to a minute) for the job to finish before answering.
    pub wait: Option<bool>,
}

/// A backtest job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Job {
    /// The job's id.
    pub id: String,
    /// `running`, `done` or `failed`.
    pub status: JobStatus,
    /// Log records read so far.
    pub records_read: u64,
    /// Log records to read in all (retained at the start).
    pub records_total: u64,
    /// Events evaluated so far (those in the time range).
    pub events: u64,
    /// When the job started.
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    /// The result, once done.
    pub result: Option<Outcome>,
    /// Why it failed.
    pub error: Option<String>,
}

/// State of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Still reading the log.
    Running,
    /// Finished; `result` holds the alerts.
    Done,
    /// Failed; `error` says why.
    Failed,
}

struct JobState {
    job: Job,
    progress: Arc<Progress>,
}

impl JobState {
    fn snapshot(&self) -> Job {
        let mut job = self.job.clone();
        job.records_read = self.progress.records.load(Ordering::Relaxed);
        job.events = self.progress.events.load(Ordering::Relaxed);
        job
    }
}

/// The backtest jobs of this process, newest last.
#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<VecDeque<Arc<Mutex<JobState>>>>,
    next: std::sync::atomic::AtomicU64,
}

/// Jobs kept for reading.
const KEPT_JOBS: usize = 32;

impl Jobs {
    fn add(&self, state: JobState) -> Arc<Mutex<JobState>> {
        let state = Arc::new(Mutex::new(state));
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.push_back(Arc::clone(&state));
        while jobs.len() > KEPT_JOBS {
            // Cancel what falls off the end, so nothing runs unobserved.
            if let Some(old) = jobs.pop_front() {
                old.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .progress
                    .cancel
                    .store(true, Ordering::Relaxed);
            }
        }
        state
    }

    fn get(&self, id: &str) -> Option<Job> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.iter()
            .map(|j| j.lock().unwrap_or_else(|p| p.into_inner()).snapshot())
            .find(|j| j.id == id)
    }
}

fn resolve(state: &AppState, reference: &RuleRef) -> Result<Rule, ApiError> {
    let forms = [
        reference.document.is_some(),
        reference.yaml.is_some(),
        reference.id.is_some(),
    ];
    if forms.iter().filter(|f| **f).count() != 1 {
        return Err(ApiError::bad_request(
            "a rule reference needs exactly one of `document`, `yaml` or `id` (with an optional `version`)",
        ));
    }
    let rule = if let Some(document) = &reference.document {
        let text =
            serde_json::to_string(document).map_err(|e| ApiError::Internal(e.to_string()))?;
        state.catalog.compile_text(&text, Format::Json)?
    } else if let Some(yaml) = &reference.yaml {
        state.catalog.compile_text(yaml, Format::Yaml)?
    } else {
        let id = reference.id.as_deref().unwrap_or_default();
        let stored = match reference.version {
            Some(version) => state.catalog.version(id, version)?,
            None => state
                .catalog
                .get(id)
                .ok_or_else(|| CatalogError::NotFound(id.to_owned()))?,
        };
        state.catalog.compile_version(&stored)?
    };
    Ok(rule)
}

/// Start a backtest.
///
/// Replays the retained event log (see `[history]` in the configuration)
/// through the rule on event time, with fresh state, keeping events whose
/// time is in `[from, to)`, and returns the alerts it would have produced.
/// With `compare`, both rules run and the result also lists the alerts
/// only one of them produces (matched by key, time and events). Bounded:
/// at most 1,000,000 entities in memory and 5 minutes; a job over its time
/// budget stops with `truncated: true`.
#[utoipa::path(
    post, path = "/v1/rules/backtest", tag = "rules",
    params(StartQuery),
    request_body = BacktestRequest,
    responses(
        (status = 200, description = "Finished (with `wait=true`)", body = Job),
        (status = 202, description = "Started; read it at the Location", body = Job),
        (status = 400, description = "Invalid rule or request", body = ErrorBody),
        (status = 404, description = "No such rule or version", body = ErrorBody),
        (status = 413, description = "Body over the 1 MiB limit", body = ErrorBody),
        (status = 415, description = "The body is not application/json", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn start_backtest(
    state: web::Data<AppState>,
    query: web::Query<StartQuery>,
    body: web::Json<BacktestRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.into_inner();
    if request.to <= request.from {
        return Err(ApiError::bad_request("`to` must be after `from`"));
    }
    let max_alerts = request.max_alerts.unwrap_or(1_000);
    if max_alerts == 0 || max_alerts > 100_000 {
        return Err(ApiError::bad_request(
            "`max_alerts` must be between 1 and 100000",
        ));
    }
    let mut rules = vec![Arc::new(resolve(&state, &request.rule)?)];
    if let Some(other) = &request.compare {
        rules.push(Arc::new(resolve(&state, other)?));
    }
    let journal: Arc<dyn crate::journal::Journal> = Arc::clone(&state.runtime.journal);
    let first = journal.first_lsn();
    let through = journal.durable_lsn();
    let progress = Arc::new(Progress::default());
    let id = format!(
        "bt-{}",
        state.backtests.next.fetch_add(1, Ordering::Relaxed) + 1
    );
    let job = state.backtests.add(JobState {
        job: Job {
            id: id.clone(),
            status: JobStatus::Running,
            records_read: 0,
            records_total: (through + 1).saturating_sub(first),
            events: 0,
            started_at: wall_now(),
            result: None,
            error: None,
        },
        progress: Arc::clone(&progress),
    });
    let config = state.runtime.engine().config().clone();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let (from, to) = (request.from, request.to);
    std::thread::spawn(move || {
        let events_only = crate::journal::records::Wanted {
            events: true,
            alerts: false,
            letters: false,
        };
        let records = journal.read(first, through, events_only).map(|frame| {
            frame
                .map(|(_, _, payload)| payload.events)
                .map_err(|e| e.to_string())
        });
        let bounds = Bounds {
            max_alerts,
            ..Bounds::default()
        };
        let outcome = backtest::run(&rules, records, from, to, &config, &bounds, &progress);
        let mut job = job.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(result) => {
                job.job.status = JobStatus::Done;
                job.job.result = Some(result);
            }
            Err(e) => {
                job.job.status = JobStatus::Failed;
                job.job.error = Some(e.to_string());
            }
        }
        let _ = done_tx.send(());
    });
    if query.wait.unwrap_or(false) {
        let _ = tokio::time::timeout(Duration::from_secs(60), done_rx).await;
    }
    let job = state
        .backtests
        .get(&id)
        .ok_or_else(|| ApiError::Internal("the job vanished".into()))?;
    let mut response = if job.status == JobStatus::Running {
        HttpResponse::Accepted()
    } else {
        HttpResponse::Ok()
    };
    Ok(response
        .insert_header(("Location", format!("/v1/rules/backtest/{id}")))
        .json(job))
}

/// A backtest job: its progress, and its result once done.
#[utoipa::path(
    get, path = "/v1/rules/backtest/{job}", tag = "rules",
    params(("job" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "No such job (only the last 32 are kept)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn get_backtest(
    state: web::Data<AppState>,
    job: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state
        .backtests
        .get(&job)
        .map(|job| HttpResponse::Ok().json(job))
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no backtest job `{job}` (only the last {KEPT_JOBS} are kept)"
            ))
        })
}
