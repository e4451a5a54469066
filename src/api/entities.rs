//! `GET /v1/entities/{key}`, `PUT /v1/entities/{key}`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::oneshot;
use utoipa::ToSchema;

use crate::actors::checkpoint;
use crate::actors::EntityMsg;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::forward::{self, Route};
use crate::api::AppState;
use crate::engine::EntityView;

/// Routes of this resource.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/entities/{key}", web::get().to(get_entity))
        .route("/v1/entities/{key}", web::put().to(put_entity));
}

/// An entity's live state and static attributes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EntityBody {
    /// The key.
    pub key: String,
    /// Whether the entity's actor is in memory (else it is passivated).
    pub live: bool,
    /// Static attributes, visible to predicates as `entity.*`.
    pub attributes: Map<String, Value>,
    /// The entity's event-time clock.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub clock: Option<crate::time::Timestamp>,
    /// Clock minus allowed lateness: older events are late.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub watermark: Option<crate::time::Timestamp>,
    /// Events this entity has evaluated.
    pub events_seen: u64,
    /// When its next timer is due, in its clock's time.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_deadline: Option<crate::time::Timestamp>,
    /// Live state per rule: partial matches, window aggregates, pending deadlines.
    #[schema(value_type = Vec<Object>)]
    pub rules: Vec<crate::engine::RuleView>,
    /// Work dropped at per-key limits.
    #[schema(value_type = Object)]
    pub dropped: crate::engine::DropCounters,
    /// Events waiting in the reorder buffer for their watermark (allowed
    /// lateness above 0), oldest first, each with the rules still to
    /// evaluate it.
    #[schema(value_type = Vec<Object>)]
    pub waiting: Value,
}

impl EntityBody {
    fn new(view: EntityView, live: bool) -> Self {
        EntityBody {
            key: view.key,
            live,
            attributes: view.attributes,
            clock: view.clock,
            watermark: view.watermark,
            events_seen: view.events_seen,
            next_deadline: view.next_deadline,
            rules: view.rules,
            dropped: view.dropped,
            waiting: view.waiting,
        }
    }
}

/// The body of `PUT /v1/entities/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"attributes": {"tier": "gold", "country": "NL"}}))]
pub struct EntityAttributes {
    /// Static attributes, replacing the previous ones; predicates read them
    /// as `entity.<name>`.
    pub attributes: Map<String, Value>,
}

/// An entity's live state.
///
/// Per rule: partial matches of sequences, open windows of thresholds,
/// pending deadlines of absences; plus the entity's clock, next timer and
/// static attributes. Reading a passivated entity does not wake it.
///
/// In the scale-out mode an instance that does not own the key's partition
/// forwards the request to the one that does (instances directory) and
/// answers what it answered, naming it in `cepheus-answered-by`.
#[utoipa::path(
    get, path = "/v1/entities/{key}", tag = "entities",
    params(("key" = String, Path, description = "The entity key")),
    responses(
        (status = 200, description = "The entity", body = EntityBody),
        (status = 404, description = "No such entity", body = ErrorBody),
        (status = 502, description = "Scale-out mode: the instance that owns the entity's partition did not answer", body = ErrorBody),
        (status = 503, description = "Scale-out mode: no instance owns the entity's partition right now (`no_owner`, with `partition`); retry after `Retry-After`", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn get_entity(
    state: web::Data<AppState>,
    request: HttpRequest,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if let Route::Owner(owner) = forward::route_entity(&state, &request, &key)? {
        return forward::relay(&state, &request, &owner, Default::default()).await;
    }
    let runtime = &state.runtime;
    let (tx, rx) = oneshot::channel();
    if runtime
        .router
        .deliver_if_live(&key, EntityMsg::Describe(tx))
    {
        if let Ok(view) = rx.await {
            return Ok(HttpResponse::Ok().json(EntityBody::new(view, true)));
        }
    }
    match runtime.store.entities().get(&key)? {
        Some(snapshot) => {
            let view = runtime.engine().describe(&snapshot.state);
            Ok(HttpResponse::Ok().json(EntityBody::new(view, false)))
        }
        None => Err(ApiError::NotFound(format!("no entity with key `{key}`"))),
    }
}

/// Set an entity's static attributes.
///
/// Replaces the attributes (for stream-table joins: predicates read them as
/// `entity.<name>`). Durable when answered. Creates the entity if needed.
///
/// In the scale-out mode the request is forwarded to the instance that
/// owns the key's partition, as `GET` is.
#[utoipa::path(
    put, path = "/v1/entities/{key}", tag = "entities",
    params(("key" = String, Path, description = "The entity key")),
    request_body = EntityAttributes,
    responses(
        (status = 200, description = "The entity with its new attributes", body = EntityBody),
        (status = 400, description = "Bad body", body = ErrorBody),
        (status = 413, description = "Attributes over the size limit", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 502, description = "Scale-out mode: the instance that owns the entity's partition did not answer", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` scope", body = ErrorBody),
        (status = 503, description = "The store failed; or, in the scale-out mode, no instance owns the entity's partition right now (`no_owner`, with `partition`); retry after `Retry-After`", body = ErrorBody),
    ),
    security(("token" = ["admin"]), ())
)]
pub async fn put_entity(
    state: web::Data<AppState>,
    request: HttpRequest,
    key: web::Path<String>,
    body: web::Json<EntityAttributes>,
) -> Result<HttpResponse, ApiError> {
    let limits = &state.limits.decode.event;
    if key.is_empty() || key.len() > limits.max_key_bytes {
        return Err(ApiError::bad_request(format!(
            "the key must be 1 to {} bytes long",
            limits.max_key_bytes
        )));
    }
    let size = serde_json::to_vec(&body.attributes).map_or(usize::MAX, |b| b.len());
    if size > limits.max_data_bytes {
        return Err(ApiError::TooLarge(format!(
            "the attributes are {size} bytes serialized; the limit is {}",
            limits.max_data_bytes
        )));
    }
    if let Route::Owner(owner) = forward::route_entity(&state, &request, &key)? {
        let body = serde_json::to_vec(&body.into_inner())
            .map_err(|e| ApiError::Internal(format!("cannot encode the attributes: {e}")))?;
        return forward::relay(&state, &request, &owner, body.into()).await;
    }
    let runtime = &state.runtime;
    let (tx, rx) = oneshot::channel();
    runtime.router.deliver(
        runtime,
        &key,
        EntityMsg::SetAttributes(body.into_inner().attributes, tx),
        0,
    );
    let (view, write) = rx
        .await
        .map_err(|_| ApiError::Internal("the entity stopped before answering".into()))?;
    let Some(write) = write else {
        return Err(ApiError::Unavailable(
            "the entity's state could not be read from the store, so it cannot be saved; see the server log".into(),
        ));
    };
    checkpoint::write_snapshots(runtime, &[write]).await?;
    runtime.store.sync().await?;
    Ok(HttpResponse::Ok().json(EntityBody::new(view, true)))
}
