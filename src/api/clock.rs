//! `POST /v1/clock`: the end-of-input mark.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use utoipa::ToSchema;

use crate::actors::{checkpoint, EntityMsg};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::AppState;
use crate::time::Timestamp;

/// Routes of this resource.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/clock", web::post().to(advance_clock));
}

/// The body of `POST /v1/clock`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"advance_to": "2026-01-02T00:00:00Z"}))]
pub struct ClockAdvance {
    /// Every entity's clock moves to at least this time.
    #[schema(value_type = String, format = DateTime)]
    pub advance_to: Timestamp,
}

/// The answer of `POST /v1/clock`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClockAdvanced {
    /// The time every entity's clock now is at least at.
    #[schema(value_type = String, format = DateTime)]
    pub advanced_to: Timestamp,
    /// Entities advanced now (live ones and passivated ones with timers);
    /// the others move when they next wake.
    pub entities: usize,
    /// The last alert seq once every alert this fired is published.
    pub alert_seq: u64,
}

/// Advance every entity's clock.
///
/// Moves every entity's event-time clock to at least `advance_to` and fires
/// the timers that makes due (absence deadlines, window ends, session gaps):
/// the end-of-input mark after loading a historical file, like a final
/// watermark. Answers once the alerts it fired are durable and published.
#[utoipa::path(
    post, path = "/v1/clock", tag = "clock",
    request_body = ClockAdvance,
    responses(
        (status = 200, description = "Clocks advanced", body = ClockAdvanced),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` scope", body = ErrorBody),
        (status = 413, description = "The body is over 1 MiB", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 503, description = "The store failed, or the event log is still being replayed after a start", body = ErrorBody),
    ),
    security(("token" = ["admin"]), ())
)]
pub async fn advance_clock(
    state: web::Data<AppState>,
    body: web::Json<ClockAdvance>,
) -> Result<HttpResponse, ApiError> {
    let runtime = &state.runtime;
    if runtime.is_replaying() {
        // Advanced before their replayed events, entities could fire
        // alerts those events cancel.
        return Err(ApiError::Unavailable(
            "the event log is still being replayed after a start; retry in a moment".into(),
        ));
    }
    let to = body.advance_to;
    runtime.clock.raise(to);
    let mut keys = runtime.router.live_keys();
    let mut cursor = Vec::new();
    loop {
        let (due, next) =
            runtime
                .store
                .entities()
                .due_timers(&cursor, Timestamp(i64::MAX), 10_000)?;
        keys.extend(due.into_iter().map(|(_, key)| key));
        if next == cursor {
            break;
        }
        cursor = next;
    }
    keys.sort_unstable();
    keys.dedup();
    // NB: in the scale-out mode the store also holds (stale) entities of
    // partitions other instances evaluate now: not this instance's to wake.
    let entities = runtime.store.entities();
    keys.retain(|key| runtime.journal.evaluates(entities.partition_of(key)));
    let mut replies = Vec::with_capacity(keys.len());
    for key in &keys {
        let (tx, rx) = oneshot::channel();
        runtime
            .router
            .deliver(runtime, key, EntityMsg::AdvanceClock(to, tx), 0);
        replies.push(rx);
    }
    for reply in replies {
        let _ = reply.await;
    }
    // The advanced clocks survive a crash only in entity snapshots (the log
    // replay would set them back): checkpoint, then record the floor.
    checkpoint::checkpoint(runtime).await?;
    runtime.clock.persist(&runtime.store)?;
    runtime.store.sync().await?;
    // Every alert the advance fired is journalled by now: wait until it is
    // published.
    let target = runtime.alerts.last_recorded();
    if runtime.journal.ownership().is_some() {
        // NB: the scale-out mode numbers alerts as they come back from the
        // alerts topic, so wait for this instance's to be published, by id.
        while runtime.alerts.has_unpublished() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    } else {
        while runtime.alerts.published() < target {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    Ok(HttpResponse::Ok().json(ClockAdvanced {
        advanced_to: to,
        entities: keys.len(),
        alert_seq: target,
    }))
}
