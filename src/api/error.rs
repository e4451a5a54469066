//! The one JSON error shape, and the one place errors become HTTP statuses.
//!
//! Every error body is `{"error": "<code>", "message": "<sentence>", ...details}`
//! (DESIGN §2).

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::ingest::{DecodeError, IngestError};
use crate::store::StoreError;

/// The error body of every failed request.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"error": "not_found", "message": "no rule with id `brute-force`"}))]
pub struct ErrorBody {
    /// A stable, machine-readable code, e.g. `invalid_rule`, `not_found`.
    pub error: String,
    /// A sentence a person can act on.
    pub message: String,
    /// Details that depend on the code, e.g. `problems` for `invalid_rule`.
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

/// An error a handler returns.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or invalid.
    #[error("{message}")]
    BadRequest {
        /// Code, e.g. `bad_request`, `invalid_rule`.
        code: &'static str,
        /// The sentence.
        message: String,
        /// Extra fields of the body.
        details: Map<String, Value>,
    },
    /// 401: credentials are missing or wrong.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the credentials lack the needed scope.
    #[error("{0}")]
    Forbidden(String),
    /// 404: nothing at that id.
    #[error("{0}")]
    NotFound(String),
    /// 409: the resource already exists.
    #[error("{0}")]
    Conflict(String),
    /// 503: in the scale-out mode, no live instance owns the entity's
    /// partition right now (a rebalance, or its owner is gone); retry.
    #[error("{message}")]
    NoOwner {
        /// The sentence.
        message: String,
        /// The partition of the entity's key.
        partition: u16,
    },
    /// 502: in the scale-out mode, the instance that owns the entity's
    /// partition (or one a clock advance was forwarded to) did not answer.
    #[error("{0}")]
    OwnerUnreachable(String),
    /// 413: the body or request is too large.
    #[error("{0}")]
    TooLarge(String),
    /// 415: a content type cepheus does not read.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429: overloaded; retry after the given seconds.
    #[error("{message}")]
    Overloaded {
        /// The sentence.
        message: String,
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// 410: what was asked for is no longer held (a cursor older than
    /// retention); `oldest` is the first item still held.
    #[error("{message}")]
    Gone {
        /// The sentence.
        message: String,
        /// The oldest seq still held.
        oldest: u64,
    },
    /// 502: a receiver cepheus called failed.
    #[error("{0}")]
    BadGateway(String),
    /// 503: not ready, or the store failed.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 with code `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code: "bad_request",
            message: message.into(),
            details: Map::new(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::NoOwner { .. } => "no_owner",
            ApiError::OwnerUnreachable(_) => "owner_unreachable",
            ApiError::TooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::Gone { .. } => "gone",
            ApiError::BadGateway(_) => "delivery_failed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::NoOwner { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::OwnerUnreachable(_) => StatusCode::BAD_GATEWAY,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let details = match self {
            ApiError::BadRequest { details, .. } => details.clone(),
            ApiError::Gone { oldest, .. } => {
                let mut details = Map::new();
                details.insert("oldest".into(), (*oldest).into());
                details
            }
            ApiError::NoOwner { partition, .. } => {
                let mut details = Map::new();
                details.insert("partition".into(), (*partition).into());
                details
            }
            _ => Map::new(),
        };
        let body = ErrorBody {
            error: self.code().to_owned(),
            message: self.to_string(),
            details,
        };
        let mut response = HttpResponse::build(self.status_code()).json(body);
        let retry_after = match self {
            ApiError::Overloaded {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            // NB: ownership moves within a rebalance, about a second.
            ApiError::NoOwner { .. } => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if let ApiError::Unauthorized(_) = self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Unparseable(message) => ApiError::bad_request(message),
            too_many @ DecodeError::TooManyEvents { .. } => {
                ApiError::TooLarge(too_many.to_string())
            }
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Overloaded {
                retry_after_secs, ..
            }
            | IngestError::TooManyEntities {
                retry_after_secs, ..
            } => ApiError::Overloaded {
                message: e.to_string(),
                retry_after_secs,
            },
            IngestError::NotReady | IngestError::Journal(_) => ApiError::Unavailable(e.to_string()),
        }
    }
}

/// Turns actix's extractor errors (bad query strings, paths, JSON) into the
/// one error shape.
pub fn extractor_error(err: impl std::fmt::Display) -> actix_web::Error {
    ApiError::bad_request(err.to_string()).into()
}
