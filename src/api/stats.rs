//! `GET /v1/stats/history`: events accepted and alerts published per rule
//! over the last hour, in 10-second steps (the live page's charts).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::actors::history::{Step, STEP_SECONDS};
use crate::actors::wall_now;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::AppState;

/// Routes of this resource.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/stats/history", web::get().to(history));
}

/// How much history.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Minutes back from now, 1 to 60 (default 60).
    pub minutes: Option<u32>,
}

/// The recent history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryBody {
    /// Seconds per step.
    pub step_seconds: i64,
    /// Steps, oldest first; steps with nothing in them are zeros.
    pub steps: Vec<Step>,
}

/// Events accepted and alerts published per rule, step by step.
///
/// Kept in memory by the server for the last hour (lost at a restart).
#[utoipa::path(
    get, path = "/v1/stats/history", tag = "operations",
    params(HistoryQuery),
    responses(
        (status = 200, description = "The history", body = HistoryBody),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn history(
    state: web::Data<AppState>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let minutes = query.minutes.unwrap_or(60);
    if !(1..=60).contains(&minutes) {
        return Err(ApiError::bad_request("`minutes` must be between 1 and 60"));
    }
    Ok(HttpResponse::Ok().json(HistoryBody {
        step_seconds: STEP_SECONDS,
        steps: state.runtime.history.last(wall_now(), minutes),
    }))
}
