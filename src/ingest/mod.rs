//! The ingest path: decoded events in, durable acknowledgement out.
//!
//! HTTP is one front end ([`decode`]); a Kafka consumer could be another:
//! both hand [`Decoded`] events to [`ingest`], which gives them to the
//! journal (`crate::journal`): it deduplicates, sequences and routes them,
//! and answers once the frame holding them is durable (group commit).
//! Invalid events go into the same frame, as dead letters.

pub mod decode;

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::actors::{wall_now, Routing, Runtime};
use crate::journal::{JournalError, LetterEntry, LetterReason, Submission};
use crate::telemetry;

pub use decode::{decode, BodyFormat, DecodeError, DecodeLimits, Decoded, Rejection};

/// The answer to an accepted request (DESIGN §2).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(example = json!({"accepted": 2, "duplicates": 1, "rejected": [{"index": 3, "error": "`key` is required and must be a non-empty string"}]}))]
pub struct IngestSummary {
    /// Events accepted (durable now).
    pub accepted: usize,
    /// Events whose id was already accepted for their key: acknowledged, ignored.
    pub duplicates: usize,
    /// Invalid events, each with its index in the request and the reason.
    pub rejected: Vec<RejectedEvent>,
}

/// One rejected event in an [`IngestSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RejectedEvent {
    /// Position in the request.
    pub index: usize,
    /// Why it was rejected.
    pub error: String,
}

/// Why a request was not accepted at all.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// Too many events are waiting to be evaluated; retry later.
    #[error("cepheus is at capacity ({inflight} events waiting to be evaluated); retry after {retry_after_secs} s")]
    Overloaded {
        /// Events waiting.
        inflight: usize,
        /// Suggested wait.
        retry_after_secs: u64,
    },
    /// As many entities are live as `max_live_entities` allows; retry once
    /// idle ones are passivated.
    #[error("cepheus holds {live} entities in memory, its limit; retry after {retry_after_secs} s, when idle ones have been passivated")]
    TooManyEntities {
        /// Live entities.
        live: usize,
        /// Suggested wait.
        retry_after_secs: u64,
    },
    /// Recovery has not finished.
    #[error("cepheus is starting up (replaying its log); retry shortly")]
    NotReady,
    /// The journal failed; nothing acknowledged.
    #[error("the events could not be made durable: {0}")]
    Journal(#[from] JournalError),
}

/// Refuses a request before its body is read when the events waiting for
/// evaluation already fill `max_inflight_events`: no event could be
/// accepted, so reading (and buffering) the body would be wasted memory.
pub fn check_capacity(runtime: &Runtime) -> Result<(), IngestError> {
    let inflight = runtime.router.inflight_events();
    if inflight >= runtime.config.max_inflight_events {
        telemetry::overloaded();
        return Err(IngestError::Overloaded {
            inflight,
            retry_after_secs: 1,
        });
    }
    check_live_entities(runtime)
}

/// Refuses new work while the live entities fill `max_live_entities`.
///
/// NB: checked per request, not per new key: a request whose keys are all
/// live would fit, but telling them apart costs a lookup per event, and
/// the limit is a guard against memory running out, which passivation
/// relieves within `passivate_after`.
fn check_live_entities(runtime: &Runtime) -> Result<(), IngestError> {
    let live = runtime.router.live_count();
    if live >= runtime.config.max_live_entities {
        telemetry::overloaded();
        let wait = (runtime.config.passivate_after.as_secs() / 2).clamp(1, 60);
        return Err(IngestError::TooManyEntities {
            live,
            retry_after_secs: wait,
        });
    }
    Ok(())
}

/// Accepts `decoded`: drops duplicates, journals and routes the valid
/// events and dead-letters the rejected ones, and returns once they are
/// durable.
pub async fn ingest(
    runtime: &Arc<Runtime>,
    decoded: Decoded,
) -> Result<IngestSummary, IngestError> {
    if !runtime.is_ready() {
        return Err(IngestError::NotReady);
    }
    let inflight = runtime.router.inflight_events();
    if inflight + decoded.events.len() > runtime.config.max_inflight_events
        && !decoded.events.is_empty()
    {
        telemetry::overloaded();
        return Err(IngestError::Overloaded {
            inflight,
            retry_after_secs: 1,
        });
    }
    if !decoded.events.is_empty() {
        check_live_entities(runtime)?;
    }
    let now = wall_now();
    let letters: Vec<LetterEntry> = decoded
        .rejected
        .iter()
        .map(|r| LetterEntry {
            identity: None,
            reason: LetterReason::Invalid,
            error: r.error.clone(),
            key: r.raw.get("key").and_then(Value::as_str).map(str::to_owned),
            received_at: now,
            event: r.raw.to_string(),
        })
        .collect();
    let rejected: Vec<RejectedEvent> = decoded
        .rejected
        .iter()
        .map(|r| RejectedEvent {
            index: r.index,
            error: r.error.clone(),
        })
        .collect();
    let mut accepted = 0;
    let mut duplicates = 0;
    if !decoded.events.is_empty() || !letters.is_empty() {
        let has_letters = !letters.is_empty();
        let submission = Submission {
            events: decoded.events.into_iter().map(|(_, e)| e).collect(),
            untimed: decoded.untimed,
            letters,
        };
        let appended = runtime
            .journal
            .append(submission, &Routing::new(runtime))
            .await?;
        accepted = appended.accepted;
        duplicates = appended.duplicates;
        if has_letters {
            // Read-your-writes: the rejected events are listed when answered.
            runtime.alerts.wait_stored(appended.lsn).await;
        }
    }
    telemetry::ingested(accepted, rejected.len(), duplicates);
    runtime.history.events(now, accepted);
    Ok(IngestSummary {
        accepted,
        duplicates,
        rejected,
    })
}
