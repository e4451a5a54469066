//! `/v1/receivers` and `/v1/routes`: where alerts go (`docs/delivery.md`).
//!
//! Secrets (`hmac_secret`, `secret_headers`) are write-only: answers show
//! `"set"` in their place, and writing needs the `admin` scope like every
//! change here.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map};
use utoipa::ToSchema;

use crate::api::error::{ApiError, ErrorBody};
use crate::api::AppState;
use crate::delivery::config::{PayloadFormat, RateLimit, ReceiverSpec, RouteSpec};
use crate::delivery::{DeliveryError, ReceiverStatus};
use crate::store::delivery::{FailedDelivery, LostAlerts, StoredReceiver, StoredRoutes};
use crate::time::Timestamp;

/// Routes of these resources.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/receivers", web::get().to(list_receivers))
        .route("/v1/receivers", web::post().to(create_receiver))
        .route("/v1/receivers/{name}", web::get().to(get_receiver))
        .route("/v1/receivers/{name}", web::put().to(replace_receiver))
        .route("/v1/receivers/{name}", web::delete().to(delete_receiver))
        .route(
            "/v1/receivers/{name}/failures",
            web::get().to(list_failures),
        )
        .route(
            "/v1/receivers/{name}/failures/{id}/resend",
            web::post().to(resend_failure),
        )
        .route(
            "/v1/receivers/{name}/failures/{id}",
            web::delete().to(discard_failure),
        )
        .route("/v1/receivers/{name}/lost", web::get().to(list_lost))
        .route(
            "/v1/receivers/{name}/versions",
            web::get().to(list_versions),
        )
        .route("/v1/routes", web::get().to(get_routes))
        .route("/v1/routes", web::put().to(put_routes))
        .route(
            "/v1/routes/versions/{version}",
            web::get().to(get_route_version),
        );
}

/// The word shown in place of a secret.
const SET: &str = "set";

/// A receiver as served: its settings with secrets hidden, its version and
/// what its task is doing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReceiverBody {
    /// Its name.
    pub name: String,
    /// Where notifications are POSTed.
    pub url: String,
    /// Body format.
    pub format: PayloadFormat,
    /// Headers sent with every notification.
    pub headers: BTreeMap<String, String>,
    /// Secret headers: their names, each with `"set"`.
    pub secret_headers: BTreeMap<String, String>,
    /// `"set"` when notifications are signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac_secret: Option<String>,
    /// Timeout of one attempt, if set here.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub timeout: Option<crate::time::Duration>,
    /// The rate limit, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Attempts before parking, if set here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Whether resolved notifications are wanted.
    pub send_resolved: bool,
    /// 1 when created, +1 per replacement.
    pub version: u64,
    /// When version 1 was created.
    pub created_at: Timestamp,
    /// When this version was stored.
    pub updated_at: Timestamp,
    /// What its delivery task is doing (the current version only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ReceiverStatus>,
}

impl ReceiverBody {
    fn new(stored: StoredReceiver, status: Option<ReceiverStatus>) -> ReceiverBody {
        let spec = stored.spec;
        ReceiverBody {
            name: spec.name,
            url: spec.url,
            format: spec.format,
            headers: spec.headers,
            secret_headers: spec
                .secret_headers
                .into_keys()
                .map(|k| (k, SET.to_owned()))
                .collect(),
            hmac_secret: spec.hmac_secret.map(|_| SET.to_owned()),
            timeout: spec.timeout,
            rate_limit: spec.rate_limit,
            max_attempts: spec.max_attempts,
            send_resolved: spec.send_resolved,
            version: stored.version,
            created_at: stored.created_at,
            updated_at: stored.updated_at,
            status,
        }
    }
}

/// Every stored version of a receiver.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReceiverVersions {
    /// Oldest first; secrets show as `set`.
    pub versions: Vec<ReceiverBody>,
}

/// Every receiver.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReceiverList {
    /// By name.
    pub receivers: Vec<ReceiverBody>,
}

/// The route list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoutesBody {
    /// The routes, in order: the first that matches wins unless it says
    /// `continue`.
    pub routes: Vec<RouteSpec>,
    /// 0 before routes were stored, +1 per replacement (ignored when
    /// written).
    #[serde(default)]
    pub version: u64,
    /// When this version was stored (ignored when written).
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
}

impl From<StoredRoutes> for RoutesBody {
    fn from(s: StoredRoutes) -> Self {
        RoutesBody {
            routes: s.routes,
            version: s.version,
            updated_at: (s.version > 0).then_some(s.updated_at),
        }
    }
}

/// A receiver's parked notifications.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FailureList {
    /// Oldest first.
    pub failures: Vec<FailedDelivery>,
}

/// A receiver's alerts lost to retention.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LostList {
    /// Ranges of seqs, oldest first.
    pub lost: Vec<LostAlerts>,
    /// Alerts lost in all.
    pub total: u64,
}

/// The answer of a successful re-send.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Resent {
    /// Always true (a failure is an error answer).
    pub delivered: bool,
}

/// Turns a delivery error into an answer; `code` names what was invalid.
pub fn delivery_error(e: DeliveryError, code: &'static str) -> ApiError {
    match e {
        DeliveryError::Invalid(problems) => {
            let mut details = Map::new();
            details.insert("problems".into(), json!(problems));
            ApiError::BadRequest {
                code,
                message: problems.join("; "),
                details,
            }
        }
        DeliveryError::NotFound(m) => ApiError::NotFound(m),
        DeliveryError::Conflict(m) | DeliveryError::Limit(m) => ApiError::Conflict(m),
        DeliveryError::Gone(m) => ApiError::Gone {
            message: m,
            oldest: 0,
        },
        DeliveryError::Failed(m) => ApiError::BadGateway(m),
        DeliveryError::Store(e) => ApiError::from(e),
    }
}

/// Checks the URL policy off the async threads (it resolves names).
async fn check_url(state: &web::Data<AppState>, url: String) -> Result<(), ApiError> {
    let delivery = std::sync::Arc::clone(&state.delivery);
    web::block(move || delivery.check_url(&url))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| delivery_error(e, "invalid_receiver"))
}

fn body(state: &AppState, stored: StoredReceiver) -> ReceiverBody {
    let status = state.delivery.status(&stored.spec.name);
    ReceiverBody::new(stored, Some(status))
}

/// List receivers.
#[utoipa::path(
    get, path = "/v1/receivers", tag = "delivery",
    responses(
        (status = 200, description = "Every receiver; secrets show as `set`", body = ReceiverList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
        (status = 400, description = "A malformed path, query or body", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn list_receivers(state: web::Data<AppState>) -> HttpResponse {
    let receivers = state
        .delivery
        .directory()
        .receivers
        .values()
        .cloned()
        .map(|r| body(&state, r))
        .collect();
    HttpResponse::Ok().json(ReceiverList { receivers })
}

/// Create a receiver.
///
/// A webhook: notifications are POSTed to `url` in `format`, with the
/// alert id as `Idempotency-Key` (a hash of the ids for several alerts).
/// The receiver gets the alerts published after it was created that the
/// routes send it. A URL pointing at a loopback, link-local or private
/// address is refused unless `delivery.allow_private_urls` is set.
#[utoipa::path(
    post, path = "/v1/receivers", tag = "delivery",
    request_body = ReceiverSpec,
    responses(
        (status = 201, description = "Created", body = ReceiverBody),
        (status = 400, description = "Invalid receiver or refused URL; `problems` lists every problem", body = ErrorBody),
        (status = 409, description = "A receiver with this name exists, or `delivery.max_receivers` is reached", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` scope", body = ErrorBody),
        (status = 415, description = "Unsupported content type (send application/json)", body = ErrorBody),
    ),
    security(("token" = ["admin"]), ())
)]
pub async fn create_receiver(
    state: web::Data<AppState>,
    spec: web::Json<ReceiverSpec>,
) -> Result<HttpResponse, ApiError> {
    let spec = spec.into_inner();
    check_url(&state, spec.url.clone()).await?;
    let stored = state
        .delivery
        .put_receiver(spec, true)
        .map_err(|e| delivery_error(e, "invalid_receiver"))?;
    state.runtime.store.sync().await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/receivers/{}", stored.spec.name)))
        .json(body(&state, stored)))
}

/// One receiver, with what its task is doing.
#[utoipa::path(
    get, path = "/v1/receivers/{name}", tag = "delivery",
    params(("name" = String, Path, description = "The receiver's name")),
    responses(
        (status = 200, description = "The receiver; secrets show as `set`", body = ReceiverBody),
        (status = 404, description = "No such receiver", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
        (status = 400, description = "A malformed path, query or body", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn get_receiver(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match state.delivery.directory().receivers.get(name.as_str()) {
        Some(stored) => Ok(HttpResponse::Ok().json(body(&state, stored.clone()))),
        None => Err(ApiError::NotFound(format!("no receiver named `{name}`"))),
    }
}

/// Replace a receiver (version + 1).
///
/// Secrets left out keep their stored value (they cannot be read back);
/// a secret given as `""` is removed. The receiver keeps its cursor.
#[utoipa::path(
    put, path = "/v1/receivers/{name}", tag = "delivery",
    params(("name" = String, Path, description = "The receiver's name")),
    request_body = ReceiverSpec,
    responses(
        (status = 200, description = "Replaced", body = ReceiverBody),
        (status = 400, description = "Invalid receiver or refused URL", body = ErrorBody),
        (status = 404, description = "No such receiver", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` scope", body = ErrorBody),
        (status = 415, description = "Unsupported content type (send application/json)", body = ErrorBody),
    ),
    security(("token" = ["admin"]), ())
)]
pub async fn replace_receiver(
    state: web::Data<AppState>,
    name: web::Path<String>,
    spec: web::Json<ReceiverSpec>,
) -> Result<HttpResponse, ApiError> {
    let spec = spec.into_inner();
    if spec.name != *name {
        return Err(ApiError::bad_request(format!(
            "the body names receiver `{}` but the path `{name}`",
            spec.name
        )));
    }
    check_url(&state, spec.url.clone()).await?;
    let stored = state
        .delivery
        .put_receiver(spec, false)
        .map_err(|e| delivery_error(e, "invalid_receiver"))?;
    state.runtime.store.sync().await?;
    Ok(HttpResponse::Ok().json(body(&state, stored)))
}

/// Delete a receiver, with its cursor and failed deliveries.
#[utoipa::path(
    delete, path = "/v1/receivers/{name}", tag = "delivery",
    params(("name" = String, Path, description = "The receiver's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such receiver", body = ErrorBody),
        (status = 409, description = "A route sends alerts to it", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` scope", body = ErrorBody),
        (status = 400, description = "A malformed path, query or body", body = ErrorBody),
    ),
    security(("token" = ["admin"]), ())
)]
pub async fn delete_receiver(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state
        .delivery
        .delete_receiver(&name)
        .map_err(|e| delivery_error(e, "invalid_receiver"))?;
    state.runtime.store.sync().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A receiver's failed deliveries: notifications parked after their last
/// attempt.
#[utoipa::path(
    get, path = "/v1/receivers/{name}/failures", tag = "delivery",
    params(("name" = String, Path, description = "The receiver's name")),
    responses(
        (status = 200, description = "Oldest first", body = FailureList),
        (status = 404, description = "No such receiver", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
        (status = 400, description = "A malformed path, query or body", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn list_failures(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    exists(&state, &name)?;
    let failures = state.runtime.store.delivery().failures(&name)?;
    Ok(HttpResponse::Ok().json(FailureList { failures }))
}

/// Send a failed delivery again, once, now.
///
/// Removed from the list when the receiver accepts it; otherwise it stays,
/// with the new error, and the answer is 502. Out of order by nature: the
/// receiver has had later alerts since.
#[utoipa::path(
    post, path = "/v1/receivers/{name}/failures/{id}/resend", tag = "delivery",
    params(
        ("name" = String, Path, description = "The receiver's name"),
        ("id" = u64, Path, description = "The failed delivery's id"),
    ),
    responses(
        (status = 200, description = "Delivered", body = Resent),
        (status = 404, description = "No such receiver or failed delivery", body = ErrorBody),
        (status = 410, description = "Its alerts are no longer in the alert log", body = ErrorBody),
        (status = 502, description = "The receiver failed again", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` scope", body = ErrorBody),
        (status = 400, description = "A malformed path, query or body", body = ErrorBody),
    ),
    security(("token" = ["admin"]), ())
)]
pub async fn resend_failure(
    state: web::Data<AppState>,
    path: web::Path<(String, u64)>,
) -> Result<HttpResponse, ApiError> {
    let (name, id) = path.into_inner();
    let result = state.delivery.resend(&name, id).await;
    state.runtime.store.sync().await?;
    result.map_err(|e| delivery_error(e, "bad_request"))?;
    Ok(HttpResponse::Ok().json(Resent { delivered: true }))
}

/// Forget a failed delivery without sending it.
#[utoipa::path(
    delete, path = "/v1/receivers/{name}/failures/{id}", tag = "delivery",
    params(
        ("name" = String, Path, description = "The receiver's name"),
        ("id" = u64, Path, description = "The failed delivery's id"),
    ),
    responses(
        (status = 204, description = "Forgotten"),
        (status = 404, description = "No such receiver or failed delivery", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` scope", body = ErrorBody),
        (status = 400, description = "A malformed path, query or body", body = ErrorBody),
    ),
    security(("token" = ["admin"]), ())
)]
pub async fn discard_failure(
    state: web::Data<AppState>,
    path: web::Path<(String, u64)>,
) -> Result<HttpResponse, ApiError> {
    let (name, id) = path.into_inner();
    exists(&state, &name)?;
    if !state.runtime.store.delivery().remove_failure(&name, id)? {
        return Err(ApiError::NotFound(format!(
            "receiver `{name}` has no failed delivery {id}"
        )));
    }
    state.runtime.store.sync().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Alerts a receiver lost: removed by retention (`history.alert_retention`)
/// before its cursor reached them.
#[utoipa::path(
    get, path = "/v1/receivers/{name}/lost", tag = "delivery",
    params(("name" = String, Path, description = "The receiver's name")),
    responses(
        (status = 200, description = "Ranges of lost seqs, oldest first", body = LostList),
        (status = 404, description = "No such receiver", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
        (status = 400, description = "A malformed path, query or body", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn list_lost(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    exists(&state, &name)?;
    let lost = state.runtime.store.delivery().lost(&name)?;
    let total = lost.iter().map(|l| l.last_seq - l.first_seq + 1).sum();
    Ok(HttpResponse::Ok().json(LostList { lost, total }))
}

/// Every stored version of a receiver (kept after it is deleted, so a
/// re-created receiver continues their numbers).
#[utoipa::path(
    get, path = "/v1/receivers/{name}/versions", tag = "delivery",
    params(("name" = String, Path, description = "The receiver's name")),
    responses(
        (status = 200, description = "Oldest first; secrets show as `set`", body = ReceiverVersions),
        (status = 404, description = "No version of such a receiver", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
        (status = 400, description = "A malformed path, query or body", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn list_versions(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let versions: Vec<ReceiverBody> = state
        .runtime
        .store
        .delivery()
        .receiver_versions(&name)?
        .into_iter()
        .map(|v| ReceiverBody::new(v, None))
        .collect();
    if versions.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no receiver named `{name}` was ever stored"
        )));
    }
    Ok(HttpResponse::Ok().json(ReceiverVersions { versions }))
}

fn exists(state: &AppState, name: &str) -> Result<(), ApiError> {
    if state.delivery.directory().receivers.contains_key(name) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("no receiver named `{name}`")))
    }
}

/// The routes.
#[utoipa::path(
    get, path = "/v1/routes", tag = "delivery",
    responses(
        (status = 200, description = "The route list and its version", body = RoutesBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
        (status = 400, description = "A malformed path, query or body", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn get_routes(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(RoutesBody::from(state.delivery.directory().routes.clone()))
}

/// Replace the routes (version + 1).
///
/// An ordered list: an alert goes to the receiver of the first route that
/// matches it, and also to later ones while the matching routes say
/// `continue`. Every receiver named must exist.
#[utoipa::path(
    put, path = "/v1/routes", tag = "delivery",
    request_body = RoutesBody,
    responses(
        (status = 200, description = "Stored", body = RoutesBody),
        (status = 400, description = "Invalid routes; `problems` lists every problem", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` scope", body = ErrorBody),
        (status = 415, description = "Unsupported content type (send application/json)", body = ErrorBody),
    ),
    security(("token" = ["admin"]), ())
)]
pub async fn put_routes(
    state: web::Data<AppState>,
    routes: web::Json<RoutesBody>,
) -> Result<HttpResponse, ApiError> {
    let stored = state
        .delivery
        .put_routes(routes.into_inner().routes)
        .map_err(|e| delivery_error(e, "invalid_routes"))?;
    state.runtime.store.sync().await?;
    Ok(HttpResponse::Ok().json(RoutesBody::from(stored)))
}

/// One stored version of the routes.
#[utoipa::path(
    get, path = "/v1/routes/versions/{version}", tag = "delivery",
    params(("version" = u64, Path, description = "The version")),
    responses(
        (status = 200, description = "That version", body = RoutesBody),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
        (status = 400, description = "A malformed path, query or body", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn get_route_version(
    state: web::Data<AppState>,
    version: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    match state.runtime.store.delivery().route_version(*version)? {
        Some(stored) => Ok(HttpResponse::Ok().json(RoutesBody::from(stored))),
        None => Err(ApiError::NotFound(format!("no routes version {version}"))),
    }
}
