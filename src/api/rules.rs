//! `/v1/rules`: create, read, list, replace, delete, enable/disable, validate.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map};
use utoipa::{IntoParams, ToSchema};

use crate::api::error::{ApiError, ErrorBody};
use crate::api::events::read_body;
use crate::api::AppState;
use crate::catalog::{CatalogError, StatePolicy};
use crate::rules::{Format, RuleDocument};
use crate::store::rules::StoredRule;
use crate::time::Timestamp;

/// Routes of this resource.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/rules", web::get().to(list_rules))
        .route("/v1/rules", web::post().to(create_rule))
        .route("/v1/rules/validate", web::post().to(validate_rule))
        .route("/v1/rules/{id}", web::get().to(get_rule))
        .route("/v1/rules/{id}", web::put().to(replace_rule))
        .route("/v1/rules/{id}", web::delete().to(delete_rule))
        .route("/v1/rules/{id}/versions", web::get().to(list_versions))
        .route(
            "/v1/rules/{id}/versions/{version}",
            web::get().to(get_version),
        )
        .route("/v1/rules/{id}/enable", web::post().to(enable_rule))
        .route("/v1/rules/{id}/disable", web::post().to(disable_rule));
}

/// A stored rule: its document and version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleBody {
    /// The rule document as stored.
    pub rule: RuleDocument,
    /// 1 when created, +1 on each replacement.
    pub version: u64,
    /// When version 1 was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When this version was stored.
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// What is valid but worth knowing about the rule, e.g. a sequence
    /// without `within` (its partial matches expire after
    /// `engine.max_match_age`). Absent when there is nothing to say.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<crate::rules::Problem>,
}

impl From<StoredRule> for RuleBody {
    fn from(s: StoredRule) -> Self {
        RuleBody {
            warnings: crate::rules::compile::warnings(&s.document, &Default::default()),
            rule: s.document,
            version: s.version,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// Every rule.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleList {
    /// The rules, by id.
    pub rules: Vec<RuleBody>,
}

/// The answer of a successful validation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Validation {
    /// Always true (invalid rules get 400 with the problems).
    pub valid: bool,
    /// The rule's id.
    pub id: String,
    /// Event types the rule can act on; absent when any type may match.
    pub event_types: Option<Vec<String>>,
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Invalid(problems) => {
                let count = problems.len();
                let summary: Vec<String> =
                    problems.iter().take(3).map(ToString::to_string).collect();
                let mut details = Map::new();
                details.insert("problems".into(), json!(problems));
                ApiError::BadRequest {
                    code: "invalid_rule",
                    message: format!(
                        "the rule has {count} problem{}: {}{}",
                        if count == 1 { "" } else { "s" },
                        summary.join("; "),
                        if count > 3 { "; ..." } else { "" }
                    ),
                    details,
                }
            }
            CatalogError::Exists(_) => ApiError::Conflict(e.to_string()),
            CatalogError::NotFound(_) => ApiError::NotFound(e.to_string()),
            CatalogError::IdMismatch { .. } => ApiError::bad_request(e.to_string()),
            CatalogError::CannotKeepState { .. } => ApiError::BadRequest {
                code: "cannot_keep_state",
                message: e.to_string(),
                details: Map::new(),
            },
            CatalogError::Store(store) => ApiError::from(store),
        }
    }
}

/// Reads a rule body: JSON or YAML by content type (default YAML, which
/// also reads JSON).
async fn rule_text(
    state: &AppState,
    request: &HttpRequest,
    payload: web::Payload,
) -> Result<(String, Format), ApiError> {
    let format = match request
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        None => Format::Yaml,
        Some(content_type) => Format::from_content_type(content_type).ok_or_else(|| {
            ApiError::UnsupportedMediaType(format!(
                "content type `{content_type}` is not accepted; send application/json or application/yaml"
            ))
        })?,
    };
    let body = read_body(payload, state.limits.max_rule_bytes).await?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("the rule is not UTF-8 text"))?;
    Ok((text, format))
}

/// List rules.
#[utoipa::path(
    get, path = "/v1/rules", tag = "rules",
    responses(
        (status = 200, description = "Every rule", body = RuleList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn list_rules(state: web::Data<AppState>) -> HttpResponse {
    let rules = state
        .catalog
        .list()
        .into_iter()
        .map(RuleBody::from)
        .collect();
    HttpResponse::Ok().json(RuleList { rules })
}

/// Register a rule.
///
/// The body is a rule document in YAML (`application/yaml`) or JSON
/// (`application/json`); see `docs/rules.md`. The rule applies at once to
/// every entity, live or passivated. An invalid rule gets 400 with every
/// problem listed, each with its field path (and line and column for YAML).
#[utoipa::path(
    post, path = "/v1/rules", tag = "rules",
    request_body(content(
        (RuleDocument = "application/json"),
        (String = "application/yaml", example = "id: brute-force-login\nseverity: high\nsequence:\n  within: 5m\n  steps:\n    - name: failures\n      match: type == \"login_failed\"\n      times: {min: 3}\n    - name: success\n      match: type == \"login_success\"\n"),
    )),
    responses(
        (status = 201, description = "Created", body = RuleBody),
        (status = 400, description = "Invalid rule; `problems` lists every problem", body = ErrorBody,
         example = json!({"error": "invalid_rule", "message": "the rule has 1 problem: sequence.within (line 4, column 11): `within` must be a duration such as 30s, 5m or 1h30m, not `5 minutes`",
                          "problems": [{"path": "sequence.within", "line": 4, "column": 11, "message": "`within` must be a duration such as 30s, 5m or 1h30m, not `5 minutes`"}]})),
        (status = 409, description = "A rule with this id exists", body = ErrorBody),
        (status = 413, description = "Rule over the size limit", body = ErrorBody),
        (status = 415, description = "Unsupported content type", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` scope", body = ErrorBody),
    ),
    security(("token" = ["admin"]), ())
)]
pub async fn create_rule(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (text, format) = rule_text(&state, &request, payload).await?;
    let stored = state.catalog.create(&state.runtime, &text, format)?;
    settle(&state).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/rules/{}", stored.document.id)))
        .json(RuleBody::from(stored)))
}

/// Check a rule without saving it.
#[utoipa::path(
    post, path = "/v1/rules/validate", tag = "rules",
    request_body(content((RuleDocument = "application/json"), (String = "application/yaml"))),
    responses(
        (status = 200, description = "Valid", body = Validation),
        (status = 400, description = "Invalid rule; `problems` lists every problem", body = ErrorBody),
        (status = 413, description = "Rule over the size limit", body = ErrorBody),
        (status = 415, description = "Unsupported content type", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn validate_rule(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (text, format) = rule_text(&state, &request, payload).await?;
    let rule = state.catalog.validate(&text, format)?;
    Ok(HttpResponse::Ok().json(Validation {
        valid: true,
        id: rule.id.to_string(),
        event_types: rule.event_types.map(|t| t.into_iter().collect()),
    }))
}

/// One rule.
#[utoipa::path(
    get, path = "/v1/rules/{id}", tag = "rules",
    params(("id" = String, Path, description = "The rule id")),
    responses(
        (status = 200, description = "The rule", body = RuleBody),
        (status = 404, description = "No such rule", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn get_rule(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match state.catalog.get(&id) {
        Some(stored) => Ok(HttpResponse::Ok().json(RuleBody::from(stored))),
        None => Err(CatalogError::NotFound(id.into_inner()).into()),
    }
}

/// Options of a replacement.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReplaceQuery {
    /// `reset` (default): entities drop the previous version's state and the
    /// new version starts empty. `keep`: entities keep it — allowed only when
    /// the pattern's shape is unchanged (e.g. a new threshold value or
    /// message), refused with 400 `cannot_keep_state` otherwise.
    pub state: Option<StatePolicy>,
}

/// Replace a rule.
///
/// Stores the document as the rule's next version and applies it at once
/// to every entity, live or passivated. With `state=reset` (default) the new
/// version starts with empty per-key state; with `state=keep` it continues
/// the previous version's partial matches and windows. Alerts name the
/// version that produced them; every version stays readable under
/// `/v1/rules/{id}/versions`.
#[utoipa::path(
    put, path = "/v1/rules/{id}", tag = "rules",
    params(("id" = String, Path, description = "The rule id"), ReplaceQuery),
    request_body(content((RuleDocument = "application/json"), (String = "application/yaml"))),
    responses(
        (status = 200, description = "Replaced", body = RuleBody),
        (status = 400, description = "Invalid rule, its id differs from the path, or `keep` is not possible", body = ErrorBody),
        (status = 404, description = "No such rule", body = ErrorBody),
        (status = 413, description = "Rule over the size limit", body = ErrorBody),
        (status = 415, description = "Unsupported content type", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` scope", body = ErrorBody),
    ),
    security(("token" = ["admin"]), ())
)]
pub async fn replace_rule(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<ReplaceQuery>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (text, format) = rule_text(&state, &request, payload).await?;
    let policy = query.state.unwrap_or_default();
    let stored = state
        .catalog
        .replace(&state.runtime, &id, &text, format, policy)?;
    settle(&state).await?;
    Ok(HttpResponse::Ok().json(RuleBody::from(stored)))
}

/// Every version of a rule.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionList {
    /// Oldest first.
    pub versions: Vec<RuleBody>,
}

/// Every version of a rule.
///
/// Each replacement (and each re-enabling) stores a new version; all stay
/// readable, also after the rule is deleted.
#[utoipa::path(
    get, path = "/v1/rules/{id}/versions", tag = "rules",
    params(("id" = String, Path, description = "The rule id")),
    responses(
        (status = 200, description = "The versions, oldest first", body = VersionList),
        (status = 404, description = "No such rule", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn list_versions(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let versions = state
        .catalog
        .versions(&id)?
        .into_iter()
        .map(RuleBody::from)
        .collect();
    Ok(HttpResponse::Ok().json(VersionList { versions }))
}

/// One version of a rule.
#[utoipa::path(
    get, path = "/v1/rules/{id}/versions/{version}", tag = "rules",
    params(("id" = String, Path, description = "The rule id"), ("version" = u64, Path, description = "The version")),
    responses(
        (status = 200, description = "That version", body = RuleBody),
        (status = 400, description = "The version is not a number", body = ErrorBody),
        (status = 404, description = "No such rule or version", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn get_version(
    state: web::Data<AppState>,
    path: web::Path<(String, u64)>,
) -> Result<HttpResponse, ApiError> {
    let (id, version) = path.into_inner();
    Ok(HttpResponse::Ok().json(RuleBody::from(state.catalog.version(&id, version)?)))
}

/// Delete a rule.
#[utoipa::path(
    delete, path = "/v1/rules/{id}", tag = "rules",
    params(("id" = String, Path, description = "The rule id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such rule", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` scope", body = ErrorBody),
    ),
    security(("token" = ["admin"]), ())
)]
pub async fn delete_rule(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.catalog.delete(&state.runtime, &id)?;
    settle(&state).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Enable a rule.
///
/// A disabled rule kept no state, so enabling stores it as a new version
/// that starts afresh.
#[utoipa::path(
    post, path = "/v1/rules/{id}/enable", tag = "rules",
    params(("id" = String, Path, description = "The rule id")),
    responses(
        (status = 200, description = "Enabled", body = RuleBody),
        (status = 404, description = "No such rule", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` scope", body = ErrorBody),
    ),
    security(("token" = ["admin"]), ())
)]
pub async fn enable_rule(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    switch(state, id, true).await
}

/// Disable a rule: it keeps no state and fires nothing until enabled.
#[utoipa::path(
    post, path = "/v1/rules/{id}/disable", tag = "rules",
    params(("id" = String, Path, description = "The rule id")),
    responses(
        (status = 200, description = "Disabled", body = RuleBody),
        (status = 404, description = "No such rule", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` scope", body = ErrorBody),
    ),
    security(("token" = ["admin"]), ())
)]
pub async fn disable_rule(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    switch(state, id, false).await
}

/// Makes a rule change durable together with a checkpoint, before it is
/// acknowledged.
///
/// NB: without the checkpoint, a crash after the change made recovery
/// replay the events accepted before it through the new rule set: a
/// replaced (or re-enabled) rule continued from state the old version had
/// built, and fired where it would not have without the crash. The
/// checkpoint covers every event logged before the change; the entities'
/// snapshots keep the old version's state, which the new version drops.
async fn settle(state: &AppState) -> Result<(), ApiError> {
    crate::actors::checkpoint::checkpoint(&state.runtime).await?;
    state.runtime.store.sync().await?;
    Ok(())
}

async fn switch(
    state: web::Data<AppState>,
    id: web::Path<String>,
    enabled: bool,
) -> Result<HttpResponse, ApiError> {
    let stored = state.catalog.set_enabled(&state.runtime, &id, enabled)?;
    settle(&state).await?;
    Ok(HttpResponse::Ok().json(RuleBody::from(stored)))
}
