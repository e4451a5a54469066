//! `GET /healthz`, `GET /readyz`, `GET /metrics`.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::error::ErrorBody;
use crate::api::AppState;
use crate::telemetry;

/// Routes of this resource.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// Health or readiness.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Status {
    /// `ok`.
    pub status: String,
    /// In the scale-out mode (`docs/scale-out.md`): the partitions this
    /// instance owns and those still being read up to their end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<crate::journal::Ownership>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Status)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status {
        status: "ok".into(),
        partitions: None,
    })
}

/// The service can take traffic: recovery finished and the store works.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "Not ready, with the reason", body = ErrorBody),
    ))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let progress = state.runtime.journal.progress();
    let reason = if !state.runtime.is_ready() {
        Some("starting, or the journal could not be replayed (see the server log)".to_owned())
    } else if let Some(failed) = progress.failed {
        Some(format!("the journal stopped: {failed}"))
    } else if let Some(stalled) = progress.stalled {
        Some(format!(
            "the journal cannot flush to disk (retrying): {stalled}"
        ))
    } else {
        state.runtime.store.health().err()
    };
    match reason {
        None => HttpResponse::Ok().json(Status {
            status: "ok".into(),
            partitions: state.runtime.journal.ownership(),
        }),
        Some(message) => HttpResponse::ServiceUnavailable().json(ErrorBody {
            error: "not_ready".into(),
            message,
            details: Default::default(),
        }),
    }
}

/// Metrics in Prometheus text format.
///
/// Events accepted, rejected, duplicate and late; alerts by rule; live,
/// activated and passivated entities; mailbox depth; in-flight events;
/// WebSocket subscribers; request latency histogram; bytes on disk and in
/// the event log.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let runtime = &state.runtime;
    telemetry::gauges(
        runtime.router.live_count(),
        runtime.router.mailbox_depth(),
        runtime.router.inflight_events(),
        runtime.alerts.subscribers(),
    );
    if let Some(ownership) = runtime.journal.ownership() {
        telemetry::kafka_ownership(ownership.assigned.len(), ownership.restoring.len());
    }
    telemetry::store_gauges(
        runtime.store.size_on_disk().unwrap_or(0),
        runtime.journal.bytes(),
    );
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
