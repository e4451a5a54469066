//! The HTTP API: every route in one table, the OpenAPI document, and the
//! glue (state, error handlers, request metrics).
//!
//! | route | handler |
//! |---|---|
//! | `POST /v1/events` | [`events::post_events`] |
//! | `GET /v1/deadletters` | [`deadletters::list_deadletters`] |
//! | `GET /v1/rules`, `POST /v1/rules` | [`rules::list_rules`], [`rules::create_rule`] |
//! | `POST /v1/rules/validate` | [`rules::validate_rule`] |
//! | `GET /v1/rules/{id}`, `PUT /v1/rules/{id}`, `DELETE /v1/rules/{id}` | [`rules::get_rule`], [`rules::replace_rule`], [`rules::delete_rule`] |
//! | `POST /v1/rules/{id}/enable`, `POST /v1/rules/{id}/disable` | [`rules::enable_rule`], [`rules::disable_rule`] |
//! | `GET /v1/rules/{id}/versions`, `GET /v1/rules/{id}/versions/{n}` | [`rules::list_versions`], [`rules::get_version`] |
//! | `POST /v1/rules/backtest`, `GET /v1/rules/backtest/{job}` | [`backtests::start_backtest`], [`backtests::get_backtest`] |
//! | `GET /v1/alerts`, `GET /v1/alerts/{id}` | [`alerts::list_alerts`], [`alerts::get_alert`] |
//! | `GET /v1/alerts/ws` | [`ws::alerts_ws`] |
//! | `GET /v1/entities/{key}`, `PUT /v1/entities/{key}` | [`entities::get_entity`], [`entities::put_entity`] |
//! | `POST /v1/clock` | [`clock::advance_clock`] |
//! | `GET /v1/instances` | [`instances::list_instances`] |
//! | `GET /v1/receivers`, `POST /v1/receivers` | [`receivers::list_receivers`], [`receivers::create_receiver`] |
//! | `GET /v1/receivers/{name}`, `PUT …`, `DELETE …` | [`receivers::get_receiver`], [`receivers::replace_receiver`], [`receivers::delete_receiver`] |
//! | `GET /v1/receivers/{name}/failures`, `POST …/failures/{id}/resend`, `DELETE …/failures/{id}` | [`receivers::list_failures`], [`receivers::resend_failure`], [`receivers::discard_failure`] |
//! | `GET /v1/receivers/{name}/lost`, `GET /v1/receivers/{name}/versions` | [`receivers::list_lost`], [`receivers::list_versions`] |
//! | `GET /v1/routes`, `PUT /v1/routes`, `GET /v1/routes/versions/{n}` | [`receivers::get_routes`], [`receivers::put_routes`], [`receivers::get_route_version`] |
//! | `GET /v1/silences`, `POST /v1/silences`, `GET /v1/silences/{id}`, `DELETE /v1/silences/{id}` | [`silences`] |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | [`health`] |
//! | `GET /openapi.json`, `GET /docs/` | [`docs`] |
//! | `GET /` | [`page`]: the live page |

pub mod alerts;
pub mod auth;
pub mod backtests;
pub mod clock;
pub mod deadletters;
pub mod docs;
pub mod entities;
pub mod error;
pub mod events;
pub mod forward;
pub mod health;
pub mod instances;
pub mod page;
pub mod receivers;
pub mod rules;
pub mod silences;
pub mod stats;
pub mod ws;

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::actors::Runtime;
use crate::catalog::Catalog;
use crate::ingest::DecodeLimits;
use crate::telemetry;

pub use error::{ApiError, ErrorBody};

/// Request limits of the API.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Events per request and per-event limits.
    pub decode: DecodeLimits,
    /// Most items one page of alerts or dead letters returns.
    pub max_page: usize,
    /// Most WebSocket subscribers at once.
    pub max_subscribers: usize,
    /// Largest rule document, in bytes.
    pub max_rule_bytes: usize,
}

/// What every handler shares.
pub struct AppState {
    /// The actor runtime.
    pub runtime: Arc<Runtime>,
    /// Rules.
    pub catalog: Arc<Catalog>,
    /// Limits.
    pub limits: ApiLimits,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Backtest jobs.
    pub backtests: backtests::Jobs,
    /// Receivers, routes and silences.
    pub delivery: Arc<crate::delivery::Delivery>,
    /// This instance and, in the scale-out mode, the others.
    pub instances: Arc<crate::cluster::instances::Instances>,
}

/// Registers every route, the error handlers and the docs.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(|e, _| error::extractor_error(e)))
        .app_data(web::PathConfig::default().error_handler(|e, _| error::extractor_error(e)))
        .app_data(
            web::JsonConfig::default()
                .limit(1 << 20)
                .error_handler(|e, _| json_error(e)),
        )
        .configure(events::configure)
        .configure(deadletters::configure)
        // NB: before `rules`, so `/v1/rules/backtest` is not taken for an id.
        .configure(backtests::configure)
        .configure(rules::configure)
        // NB: before `alerts`, so `/v1/alerts/ws` is not taken for an id.
        .configure(ws::configure)
        .configure(alerts::configure)
        .configure(entities::configure)
        .configure(clock::configure)
        .configure(instances::configure)
        .configure(receivers::configure)
        .configure(silences::configure)
        .configure(stats::configure)
        .configure(health::configure)
        .configure(docs::configure)
        .configure(page::configure);
}

fn json_error(e: actix_web::error::JsonPayloadError) -> actix_web::Error {
    use actix_web::error::JsonPayloadError;
    match e {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::TooLarge(e.to_string()).into()
        }
        JsonPayloadError::ContentType => {
            ApiError::UnsupportedMediaType("send the body as application/json".into()).into()
        }
        other => ApiError::bad_request(format!("the JSON body is invalid: {other}")).into(),
    }
}

/// The answer for routes that do not exist.
pub async fn not_found(request: actix_web::HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::NotFound(format!(
        "no route {} {}",
        request.method(),
        request.path()
    )))
}

/// Middleware recording every request's latency by route pattern.
pub async fn record_latency(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let response = next.call(request).await?;
    telemetry::http_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    Ok(response)
}
