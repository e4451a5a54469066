//! The ingest path: decoded events in, durable acknowledgement out.
//!
//! HTTP is one front end ([`decode`]); a Kafka consumer could be another:
//! both hand [`Decoded`] events to [`ingest`], the one interface of the
//! path (DESIGN §1).
//!
//! Under the sequencer lock, a batch is deduplicated, appended to the log as
//! one record, and routed to the entity actors, so the log's order is every
//! key's order; concurrent requests are appended together ([`append`]).
//! The acknowledgement waits for a flush that covers the record; concurrent
//! requests share flushes (group commit).

pub mod append;
pub mod decode;
pub mod dedup;

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::actors::{wall_now, Runtime};
use crate::event::Event;
use crate::store::deadletters::{DeadLetter, DeadLetterReason};
use crate::store::StoreError;
use crate::telemetry;
use crate::time::Duration;

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
    /// The store failed; nothing acknowledged.
    #[error("the events could not be made durable: {0}")]
    Store(#[from] StoreError),
}

/// Ingest settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// How long an event id is remembered per key.
    pub dedup_horizon: Duration,
}

/// About the size of `event` in the log (its data as JSON plus its strings).
pub(crate) fn encoded_size(event: &Event) -> usize {
    let mut counter = ByteCounter(0);
    let _ = serde_json::to_writer(&mut counter, &event.data);
    counter.0
        + event.key.len()
        + event.event_type.len()
        + event.id.as_ref().map_or(0, String::len)
        + 32
}

/// A writer that only counts.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

/// Accepts `decoded`: dead-letters the rejected events, drops duplicates,
/// logs and routes the rest, and returns once they are durable.
pub async fn ingest(
    runtime: &Arc<Runtime>,
    decoded: Decoded,
    config: &IngestConfig,
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
    if !decoded.rejected.is_empty() {
        let letters: Vec<DeadLetter> = decoded
            .rejected
            .iter()
            .map(|r| DeadLetter {
                seq: 0,
                reason: DeadLetterReason::Invalid,
                error: r.error.clone(),
                key: r.raw.get("key").and_then(Value::as_str).map(str::to_owned),
                received_at: now,
                event: r.raw.clone(),
            })
            .collect();
        runtime.store.deadletters().append(&letters)?;
    }
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
    if !decoded.events.is_empty() {
        let appended = runtime
            .appender
            .append(
                runtime,
                decoded.events,
                decoded.untimed,
                config.dedup_horizon,
            )
            .await?;
        accepted = appended.accepted;
        duplicates = appended.duplicates;
    }
    runtime.store.sync().await?;
    telemetry::ingested(accepted, rejected.len(), duplicates);
    Ok(IngestSummary {
        accepted,
        duplicates,
        rejected,
    })
}
