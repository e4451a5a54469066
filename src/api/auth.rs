//! Access control: API tokens with scopes.
//!
//! Tokens are configured in the config file as SHA-256 hashes (never in
//! clear), each with scopes: `ingest` (post events), `read` (read alerts,
//! rules, entities, dead letters, metrics; subscribe to alerts), `admin`
//! (everything, including changing rules, entity attributes and the
//! clock). With no token configured, the API is open — and the server then
//! refuses to listen on a non-loopback address unless told `--insecure`.
//!
//! A token is sent as `Authorization: Bearer <token>`; WebSocket clients
//! that cannot set headers (browsers) may send `?access_token=<token>` on
//! `/v1/alerts/ws` instead. Tokens are never logged.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Post events.
    Ingest,
    /// Read alerts, rules, entities, dead letters and metrics.
    Read,
    /// Everything.
    Admin,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// One configured token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for people (which client this is); never the token.
    pub name: String,
    /// Hex SHA-256 of the token (`cepheus token` prints it).
    pub sha256: String,
    /// What the token may do.
    pub scopes: Vec<Scope>,
}

/// The configured tokens, ready to check requests against.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Vec<([u8; 32], Vec<Scope>)>,
}

/// A token entry that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("token `{name}`: `sha256` must be 64 hex digits (run `cepheus token` to make one)")]
pub struct BadTokenConfig {
    name: String,
}

impl Auth {
    /// Checks and loads `tokens`.
    pub fn new(tokens: &[TokenConfig]) -> Result<Auth, BadTokenConfig> {
        let tokens = tokens
            .iter()
            .map(|t| match decode_hex(&t.sha256) {
                Some(hash) => Ok((hash, t.scopes.clone())),
                None => Err(BadTokenConfig {
                    name: t.name.clone(),
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Auth { tokens })
    }

    /// True when tokens are configured (requests must carry one).
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks that `token` (if any) grants the scope `method path` needs.
    pub fn check(&self, method: &Method, path: &str, token: Option<&str>) -> Result<(), ApiError> {
        let Some(needed) = required_scope(method, path) else {
            return Ok(());
        };
        if !self.enabled() {
            return Ok(());
        }
        let Some(token) = token else {
            return Err(ApiError::Unauthorized(
                "this request needs an API token: send `Authorization: Bearer <token>`".into(),
            ));
        };
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let Some((_, scopes)) = self
            .tokens
            .iter()
            .find(|(hash, _)| constant_time_eq(hash, &presented))
        else {
            return Err(ApiError::Unauthorized("the API token is not valid".into()));
        };
        if scopes.contains(&Scope::Admin) || scopes.contains(&needed) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this request needs a token with the `{}` scope",
                needed.name()
            )))
        }
    }
}

/// The scope a route needs; `None` for public routes (health, readiness,
/// the API description). Kept as one table beside the route table.
pub fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    if matches!(path, "/" | "/healthz" | "/readyz" | "/openapi.json")
        || path == "/docs"
        || path.starts_with("/docs/")
    {
        return None;
    }
    let reading = *method == Method::GET || *method == Method::HEAD;
    Some(match path {
        "/v1/events" => Scope::Ingest,
        "/v1/rules/validate" => Scope::Read,
        p if p.starts_with("/v1/rules") && !reading => Scope::Admin,
        p if p.starts_with("/v1/entities/") && !reading => Scope::Admin,
        // NB: receivers carry secrets: writing them (and routes and
        // silences) needs `admin`; reading shows no secret.
        p if (p.starts_with("/v1/receivers")
            || p.starts_with("/v1/routes")
            || p.starts_with("/v1/silences"))
            && !reading =>
        {
            Scope::Admin
        }
        "/v1/clock" => Scope::Admin,
        _ => Scope::Read,
    })
}

/// The middleware: refuses requests whose token does not grant their route.
pub async fn require_token(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(auth) = request.app_data::<web::Data<Auth>>() {
        let header = request
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let query = if request.path() == "/v1/alerts/ws" {
            query_token(request.query_string())
        } else {
            None
        };
        auth.check(
            request.method(),
            request.path(),
            header.or(query.as_deref()),
        )?;
    }
    next.call(request).await
}

fn query_token(query: &str) -> Option<String> {
    web::Query::<std::collections::HashMap<String, String>>::from_query(query)
        .ok()
        .and_then(|q| q.get("access_token").cloned())
}

/// A new random token and its hash (for `cepheus token`).
pub fn new_token() -> std::io::Result<(String, String)> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token = format!("cph_{}", hex(&bytes));
    let hash = hex(&Sha256::digest(token.as_bytes()));
    Ok((token, hash))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Equality that takes the same time wherever the first difference is.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_with(scopes: Vec<Scope>) -> (Auth, String) {
        let (token, hash) = new_token().unwrap();
        let auth = Auth::new(&[TokenConfig {
            name: "t".into(),
            sha256: hash,
            scopes,
        }])
        .unwrap();
        (auth, token)
    }

    #[test]
    fn routes_need_the_scope_of_their_table_row() {
        assert_eq!(
            required_scope(&Method::POST, "/v1/events"),
            Some(Scope::Ingest)
        );
        assert_eq!(
            required_scope(&Method::GET, "/v1/rules/x"),
            Some(Scope::Read)
        );
        assert_eq!(
            required_scope(&Method::PUT, "/v1/rules/x"),
            Some(Scope::Admin)
        );
        assert_eq!(
            required_scope(&Method::POST, "/v1/rules/validate"),
            Some(Scope::Read)
        );
        assert_eq!(
            required_scope(&Method::PUT, "/v1/entities/k"),
            Some(Scope::Admin)
        );
        assert_eq!(
            required_scope(&Method::GET, "/v1/alerts/ws"),
            Some(Scope::Read)
        );
        assert_eq!(
            required_scope(&Method::POST, "/v1/receivers"),
            Some(Scope::Admin)
        );
        assert_eq!(
            required_scope(&Method::GET, "/v1/receivers/x"),
            Some(Scope::Read)
        );
        assert_eq!(
            required_scope(&Method::DELETE, "/v1/silences/x"),
            Some(Scope::Admin)
        );
        assert_eq!(required_scope(&Method::GET, "/healthz"), None);
        assert_eq!(required_scope(&Method::GET, "/docs/index.html"), None);
    }

    #[test]
    fn tokens_are_checked_by_hash_and_scope() {
        let (auth, token) = auth_with(vec![Scope::Ingest]);
        assert!(auth
            .check(&Method::POST, "/v1/events", Some(&token))
            .is_ok());
        assert!(matches!(
            auth.check(&Method::GET, "/v1/alerts", Some(&token)),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            auth.check(&Method::POST, "/v1/events", Some("wrong")),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            auth.check(&Method::POST, "/v1/events", None),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(auth.check(&Method::GET, "/healthz", None).is_ok());
        let (admin, token) = auth_with(vec![Scope::Admin]);
        assert!(admin
            .check(&Method::DELETE, "/v1/rules/x", Some(&token))
            .is_ok());
    }

    #[test]
    fn no_tokens_means_open_and_bad_hashes_are_refused() {
        assert!(Auth::default()
            .check(&Method::POST, "/v1/clock", None)
            .is_ok());
        assert!(Auth::new(&[TokenConfig {
            name: "x".into(),
            sha256: "abc".into(),
            scopes: vec![]
        }])
        .is_err());
    }
}
