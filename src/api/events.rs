//! `POST /v1/events`.

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use crate::actors::wall_now;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::AppState;
use crate::ingest::{self, BodyFormat, IngestSummary};
use crate::telemetry::{self, Stage};

/// Routes of this resource.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/events", web::post().to(post_events));
}

/// Accept events.
///
/// The body is one event object, a JSON array of events, NDJSON
/// (`application/x-ndjson`, one event per line), or CloudEvents 1.0 in
/// structured mode (`application/cloudevents+json`,
/// `application/cloudevents-batch+json`; `subject` is the key). Invalid
/// events are rejected one by one (and kept as dead letters); the valid ones
/// are accepted. The answer comes only after the accepted events are durable.
#[utoipa::path(
    post, path = "/v1/events", tag = "events",
    request_body(
        content(
            (serde_json::Value = "application/json", example = json!({"id": "e-1001", "key": "acct-42", "type": "login_failed", "time": "2026-01-01T00:00:01.123Z", "data": {"ip": "10.0.0.7"}})),
            (String = "application/x-ndjson"),
            (serde_json::Value = "application/cloudevents+json"),
            (serde_json::Value = "application/cloudevents-batch+json"),
        ),
        description = "One event, an array of events, NDJSON, or CloudEvents"
    ),
    responses(
        (status = 202, description = "Accepted and durable", body = IngestSummary),
        (status = 400, description = "The body cannot be parsed at all", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `ingest` scope", body = ErrorBody),
        (status = 413, description = "Body or event count over the limit", body = ErrorBody),
        (status = 415, description = "Unsupported content type", body = ErrorBody),
        (status = 429, description = "Overloaded; see Retry-After", body = ErrorBody),
        (status = 503, description = "Starting up, or the store failed", body = ErrorBody),
    ),
    security(("token" = ["ingest"]), ())
)]
pub async fn post_events(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let content_type = request
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let format = BodyFormat::from_content_type(content_type).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!(
            "content type `{}` is not accepted; send application/json, application/x-ndjson, \
             application/cloudevents+json or application/cloudevents-batch+json",
            content_type.unwrap_or_default()
        ))
    })?;
    ingest::check_capacity(&state.runtime)?;
    let body = read_body(payload, state.limits.max_body_bytes).await?;
    let started = std::time::Instant::now();
    let decoded = ingest::decode(&body, format, &state.limits.decode, wall_now())?;
    telemetry::stage(Stage::Decode, started.elapsed());
    let summary = ingest::ingest(&state.runtime, decoded).await?;
    Ok(HttpResponse::Accepted().json(summary))
}

/// Reads a request body, refusing it with 413 as soon as it passes `limit`.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(format!("the request body could not be read: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(format!(
                "the request body is larger than the limit of {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
