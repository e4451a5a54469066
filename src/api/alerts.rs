//! `GET /v1/alerts`, `GET /v1/alerts/{id}`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::error::{ApiError, ErrorBody};
use crate::api::AppState;
use crate::rules::Severity;
use crate::store::alerts::{AlertFilter, StoredAlert};

/// Routes of this resource (the WebSocket is in `ws.rs`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/alerts", web::get().to(list_alerts))
        .route("/v1/alerts/{id}", web::get().to(get_alert));
}

/// Filters of an alert query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// Only alerts of this rule id.
    pub rule: Option<String>,
    /// Only alerts of this entity key.
    pub key: Option<String>,
    /// Only alerts of this severity or higher.
    pub severity: Option<Severity>,
    /// Only alerts with `seq` greater than this (the cursor).
    pub after: Option<u64>,
    /// Most alerts to return (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Include alerts of rules in shadow mode (default false).
    pub shadow: Option<bool>,
    /// Include alerts muted by a silence, marked `silenced` (default false).
    pub silenced: Option<bool>,
}

impl AlertQuery {
    /// The filter part.
    pub fn filter(&self) -> AlertFilter {
        AlertFilter {
            rule: self.rule.clone(),
            key: self.key.clone(),
            severity: self.severity,
            shadow: self.shadow.unwrap_or(false),
            silenced: self.silenced.unwrap_or(false),
        }
    }
}

/// A page of alerts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertPage {
    /// Alerts, oldest first.
    pub alerts: Vec<StoredAlert>,
    /// Pass as `after` to continue.
    pub next: u64,
}

/// Most alerts examined per query, so a rare filter cannot make one request
/// scan the whole log; `next` lets the client continue.
const SCAN_LIMIT: usize = 100_000;

/// Query alerts.
///
/// Alerts are returned oldest first from the durable alert log. `next` is
/// the cursor to pass as `after` for the following page (it advances even
/// when filters skip alerts).
#[utoipa::path(
    get, path = "/v1/alerts", tag = "alerts",
    params(AlertQuery),
    responses(
        (status = 200, description = "A page of alerts", body = AlertPage),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
        (status = 410, description = "`after` is older than what retention keeps; `details.oldest` is the oldest seq held", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn list_alerts(
    state: web::Data<AppState>,
    query: web::Query<AlertQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > state.limits.max_page {
        return Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and {}",
            state.limits.max_page
        )));
    }
    check_cursor(&state, query.after)?;
    let after = query.after.unwrap_or(0);
    let through = state.runtime.alerts.published();
    // `scanned` is the last seq looked at (or `after`): everything up to it
    // was either returned or filtered out, so it is the cursor.
    let (alerts, scanned) = state.runtime.store.alerts().query_marked(
        &query.filter(),
        after,
        through,
        limit,
        SCAN_LIMIT,
        |alert| state.delivery.mark(alert),
    )?;
    Ok(HttpResponse::Ok().json(AlertPage {
        alerts,
        next: scanned,
    }))
}

/// Refuses a cursor older than what retention keeps (DESIGN §5): the
/// alerts after it are partly gone, and skipping them silently would break
/// the cursor's promise.
pub fn check_cursor(state: &AppState, after: Option<u64>) -> Result<(), ApiError> {
    let Some(after) = after else {
        return Ok(());
    };
    let oldest = state.runtime.store.alerts().first_seq()?;
    if after.saturating_add(1) < oldest {
        return Err(ApiError::Gone {
            message: format!(
                "alerts up to seq {} are no longer held (history.alert_retention); the oldest held is seq {oldest}: resume with after={}",
                oldest - 1,
                oldest - 1
            ),
            oldest,
        });
    }
    Ok(())
}

/// One alert by id.
#[utoipa::path(
    get, path = "/v1/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "The alert id")),
    responses(
        (status = 200, description = "The alert", body = StoredAlert),
        (status = 404, description = "No such alert", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn get_alert(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let published = state.runtime.alerts.published();
    match state.runtime.store.alerts().get_by_id(&id)? {
        Some(mut alert) if alert.seq <= published => {
            state.delivery.mark(&mut alert);
            Ok(HttpResponse::Ok().json(alert))
        }
        _ => Err(ApiError::NotFound(format!("no alert with id `{id}`"))),
    }
}
