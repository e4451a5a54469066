//! `/v1/silences`: mute alerts for a time (`docs/delivery.md`).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::actors::wall_now;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::receivers::delivery_error;
use crate::api::AppState;
use crate::delivery::silence::{Silence, SilenceSpec, SilenceState};

/// Routes of this resource.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/silences", web::get().to(list_silences))
        .route("/v1/silences", web::post().to(create_silence))
        .route("/v1/silences/{id}", web::get().to(get_silence))
        .route("/v1/silences/{id}", web::delete().to(expire_silence));
}

/// A silence and whether it applies now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SilenceBody {
    /// The silence.
    #[serde(flatten)]
    pub silence: Silence,
    /// Pending, active or expired, now.
    pub state: SilenceState,
}

impl SilenceBody {
    fn new(silence: Silence) -> SilenceBody {
        let state = silence.state(wall_now());
        SilenceBody { silence, state }
    }
}

/// Silences.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SilenceList {
    /// Oldest first.
    pub silences: Vec<SilenceBody>,
}

/// Filter of the silence list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SilenceQuery {
    /// Only silences in this state.
    pub state: Option<SilenceState>,
}

/// List silences (expired ones too: they explain alerts marked `silenced`).
#[utoipa::path(
    get, path = "/v1/silences", tag = "delivery",
    params(SilenceQuery),
    responses(
        (status = 200, description = "Silences, oldest first", body = SilenceList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
        (status = 400, description = "A malformed path, query or body", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn list_silences(
    state: web::Data<AppState>,
    query: web::Query<SilenceQuery>,
) -> HttpResponse {
    let mut silences: Vec<SilenceBody> = state
        .delivery
        .silences()
        .iter()
        .cloned()
        .map(SilenceBody::new)
        .filter(|s| query.state.is_none_or(|wanted| s.state == wanted))
        .collect();
    silences.sort_by_key(|s| s.silence.created_at);
    HttpResponse::Ok().json(SilenceList { silences })
}

/// Create a silence.
///
/// From `starts_at` (default now) to `ends_at` (or for `duration`),
/// matching alerts are stored marked `silenced` and not delivered to
/// receivers nor to subscribers that do not ask for them; matching alerts
/// detected earlier and still waiting to be delivered are held back too.
#[utoipa::path(
    post, path = "/v1/silences", tag = "delivery",
    request_body = SilenceSpec,
    responses(
        (status = 201, description = "Created", body = SilenceBody),
        (status = 400, description = "Invalid silence; `problems` lists every problem", body = ErrorBody),
        (status = 409, description = "`delivery.max_silences` is reached", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` scope", body = ErrorBody),
        (status = 415, description = "Unsupported content type (send application/json)", body = ErrorBody),
    ),
    security(("token" = ["admin"]), ())
)]
pub async fn create_silence(
    state: web::Data<AppState>,
    spec: web::Json<SilenceSpec>,
) -> Result<HttpResponse, ApiError> {
    let silence = state
        .delivery
        .create_silence(spec.into_inner())
        .map_err(|e| delivery_error(e, "invalid_silence"))?;
    state.runtime.store.sync().await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/silences/{}", silence.id)))
        .json(SilenceBody::new(silence)))
}

/// One silence.
#[utoipa::path(
    get, path = "/v1/silences/{id}", tag = "delivery",
    params(("id" = String, Path, description = "The silence's id")),
    responses(
        (status = 200, description = "The silence", body = SilenceBody),
        (status = 404, description = "No such silence", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
        (status = 400, description = "A malformed path, query or body", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn get_silence(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match state.delivery.silences().iter().find(|s| s.id == *id) {
        Some(s) => Ok(HttpResponse::Ok().json(SilenceBody::new(s.clone()))),
        None => Err(ApiError::NotFound(format!("no silence with id `{id}`"))),
    }
}

/// Expire a silence now. It stays listed (expired), so the alerts it
/// muted stay marked.
#[utoipa::path(
    delete, path = "/v1/silences/{id}", tag = "delivery",
    params(("id" = String, Path, description = "The silence's id")),
    responses(
        (status = 200, description = "Expired", body = SilenceBody),
        (status = 404, description = "No such silence", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` scope", body = ErrorBody),
        (status = 400, description = "A malformed path, query or body", body = ErrorBody),
    ),
    security(("token" = ["admin"]), ())
)]
pub async fn expire_silence(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let silence = state
        .delivery
        .expire_silence(&id)
        .map_err(|e| delivery_error(e, "invalid_silence"))?;
    state.runtime.store.sync().await?;
    Ok(HttpResponse::Ok().json(SilenceBody::new(silence)))
}
