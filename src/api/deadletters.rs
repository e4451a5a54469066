//! `GET /v1/deadletters`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::error::{ApiError, ErrorBody};
use crate::api::AppState;
use crate::store::deadletters::DeadLetter;

/// Routes of this resource.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/deadletters", web::get().to(list_deadletters));
}

/// Paging of dead letters.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Only dead letters with `seq` greater than this.
    pub after: Option<u64>,
    /// Most to return (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// A page of dead letters.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterPage {
    /// Oldest first.
    pub deadletters: Vec<DeadLetter>,
    /// Pass as `after` to continue.
    pub next: u64,
}

/// Rejected and late events, with their reasons.
///
/// Invalid events (reason `invalid`) are kept as received; late events
/// (reason `late`, older than their entity's watermark; `window_closed`,
/// late for a rule whose windows it belongs to have closed) as accepted.
#[utoipa::path(
    get, path = "/v1/deadletters", tag = "events",
    params(DeadLetterQuery),
    responses(
        (status = 200, description = "A page of dead letters", body = DeadLetterPage),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn list_deadletters(
    state: web::Data<AppState>,
    query: web::Query<DeadLetterQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > state.limits.max_page {
        return Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and {}",
            state.limits.max_page
        )));
    }
    let after = query.after.unwrap_or(0);
    let deadletters = state.runtime.store.deadletters().list(after, limit)?;
    let next = deadletters.last().map_or(after, |d| d.seq);
    Ok(HttpResponse::Ok().json(DeadLetterPage { deadletters, next }))
}
