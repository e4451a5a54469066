//! `POST /v1/clock`: the end-of-input mark.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use utoipa::ToSchema;

use crate::actors::{checkpoint, EntityMsg, Runtime};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::{forward, AppState};
use crate::cluster::instances::InstanceEntry;
use crate::time::{wall_now, Timestamp};

/// Longest wait, after the other instances answered, for the alerts they
/// fired to be published here too.
const OTHERS_ALERTS_WAIT: Duration = Duration::from_secs(10);

/// Routes of this resource.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/clock", web::post().to(advance_clock));
}

/// The body of `POST /v1/clock`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    /// Entities advanced now (live ones and passivated ones with timers),
    /// on every instance reached; the others move when they next wake.
    pub entities: usize,
    /// The last alert seq once every alert this fired is published.
    pub alert_seq: u64,
    /// The instances the advance reached: this one, and in the scale-out
    /// mode every other live instance of the directory.
    pub instances: ClockReach,
}

/// Which instances a clock advance reached.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClockReach {
    /// Instances whose entities were advanced, this one included.
    pub reached: usize,
    /// Live instances of the directory the advance could not reach; their
    /// entities were not advanced (repeat the request: an advance is
    /// idempotent).
    pub failed: Vec<UnreachedInstance>,
}

/// An instance a clock advance did not reach.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnreachedInstance {
    /// Its id.
    pub id: String,
    /// Its advertised URL.
    pub url: String,
    /// What went wrong.
    pub error: String,
}

/// What another instance's `POST /v1/clock` answered (the fields read).
#[derive(Debug, Deserialize)]
struct RemoteAdvance {
    entities: usize,
    alert_seq: u64,
}

/// Advance every entity's clock.
///
/// Moves every entity's event-time clock to at least `advance_to` and fires
/// the timers that makes due (absence deadlines, window ends, session gaps):
/// the end-of-input mark after loading a historical file, like a final
/// watermark. Answers once the alerts it fired are durable and published.
///
/// In the scale-out mode the advance is applied here and forwarded to every
/// other live instance of the directory (`instances` says which it reached);
/// the answer comes once their alerts are published on this instance too.
#[utoipa::path(
    post, path = "/v1/clock", tag = "clock",
    request_body = ClockAdvance,
    responses(
        (status = 200, description = "Clocks advanced (in the scale-out mode, `instances.failed` lists the instances it could not reach)", body = ClockAdvanced),
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
    request: HttpRequest,
    body: web::Json<ClockAdvance>,
) -> Result<HttpResponse, ApiError> {
    let to = body.advance_to;
    let (entities, alert_seq) = advance_here(&state.runtime, to).await?;
    let mut answer = ClockAdvanced {
        advanced_to: to,
        entities,
        alert_seq,
        instances: ClockReach {
            reached: 1,
            failed: Vec::new(),
        },
    };
    // NB: a forwarded advance stops here (no loop).
    if state.runtime.journal.ownership().is_some() && forward::forwarded_by(&request).is_none() {
        advance_others(&state, &request, &body, &mut answer).await;
    }
    Ok(HttpResponse::Ok().json(answer))
}

/// Sends the advance to every other live instance, adding what they
/// answered to `answer`, then waits until their alerts are published here.
async fn advance_others(
    state: &AppState,
    request: &HttpRequest,
    advance: &ClockAdvance,
    answer: &mut ClockAdvanced,
) {
    let peers = state.instances.peers(wall_now());
    if peers.is_empty() {
        return;
    }
    let body = match serde_json::to_vec(advance) {
        Ok(body) => web::Bytes::from(body),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a clock advance for the other instances");
            return;
        }
    };
    let sends = peers
        .iter()
        .map(|peer| forward::send(state, request, peer, body.clone()));
    let results = futures_util::future::join_all(sends).await;
    for (peer, result) in peers.iter().zip(results) {
        match result.and_then(|answer| read_remote(peer, &answer)) {
            Ok(remote) => {
                answer.instances.reached += 1;
                answer.entities += remote.entities;
                answer.alert_seq = answer.alert_seq.max(remote.alert_seq);
            }
            Err(error) => {
                tracing::warn!(instance = %peer.id, url = %peer.url, error = %error, "a clock advance did not reach another instance");
                answer.instances.failed.push(UnreachedInstance {
                    id: peer.id.clone(),
                    url: peer.url.clone(),
                    error,
                });
            }
        }
    }
    // NB: seqs are the same on every instance (the alerts topic), so the
    // others' last seq is reached here once their alerts are read back.
    let target = answer.alert_seq;
    let mut published = state.runtime.alerts.watch_published();
    if tokio::time::timeout(OTHERS_ALERTS_WAIT, published.wait_for(|seq| *seq >= target))
        .await
        .is_err()
    {
        tracing::warn!(
            alert_seq = target,
            "the alerts another instance's clock advance fired are not published here yet"
        );
    }
}

fn read_remote(peer: &InstanceEntry, answer: &forward::Answer) -> Result<RemoteAdvance, String> {
    if !answer.status.is_success() {
        let body = String::from_utf8_lossy(&answer.body);
        let excerpt: String = body.chars().take(300).collect();
        return Err(format!("{} answered {}: {excerpt}", peer.id, answer.status));
    }
    serde_json::from_slice(&answer.body).map_err(|e| {
        format!(
            "{} answered with a body this version cannot read: {e}",
            peer.id
        )
    })
}

/// Advances this instance's entities to `to`; returns how many, and the
/// last alert seq once the alerts that fired are published.
async fn advance_here(runtime: &Arc<Runtime>, to: Timestamp) -> Result<(usize, u64), ApiError> {
    if runtime.is_replaying() {
        // Advanced before their replayed events, entities could fire
        // alerts those events cancel.
        return Err(ApiError::Unavailable(
            "the event log is still being replayed after a start; retry in a moment".into(),
        ));
    }
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
    if runtime.journal.ownership().is_some() {
        // NB: the scale-out mode numbers alerts as they come back from the
        // alerts topic (the seq given at `record` is provisional), so wait
        // for this instance's to be published, by id, and answer the seq
        // published by then.
        while runtime.alerts.has_unpublished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok((keys.len(), runtime.alerts.published()))
    } else {
        let target = runtime.alerts.last_recorded();
        while runtime.alerts.published() < target {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok((keys.len(), target))
    }
}
