//! Requests one instance answers with another's help in the scale-out mode
//! (`docs/scale-out.md`): an entity request goes to the owner of the key's
//! partition, found in the instances directory, and a clock advance goes
//! to every live instance.
//!
//! # Invariants
//! - A forwarded request carries [`FORWARDED_BY`] (the forwarding
//!   instance's id), and a request that carries it is never forwarded
//!   again: a directory a moment out of date cannot make a loop.
//! - The caller's `Authorization` goes along unchanged, so the instance
//!   that answers checks the same token.

use std::cell::OnceCell;
use std::time::Duration;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};

use crate::api::error::ApiError;
use crate::api::AppState;
use crate::cluster::instances::InstanceEntry;
use crate::journal::partition::partition_of;
use crate::time::wall_now;

/// The request header naming the instance that forwarded a request.
pub const FORWARDED_BY: &str = "cepheus-forwarded-by";
/// The response header naming the instance that answered a forwarded
/// entity request.
pub const ANSWERED_BY: &str = "cepheus-answered-by";

/// Longest wait for the other instance's answer (a `PUT` waits for its
/// store's sync, a clock advance for its alerts).
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer relayed.
const MAX_ANSWER_BYTES: usize = 64 << 20;

thread_local! {
    // NB: awc's client is not `Send`; one per HTTP worker thread keeps its
    // connection pool.
    static CLIENT: OnceCell<awc::Client> = const { OnceCell::new() };
}

fn client(state: &AppState) -> awc::Client {
    CLIENT.with(|client| {
        client
            .get_or_init(|| {
                let mut connector = awc::Connector::new();
                // NB: an `https://` advertised URL is checked against the
                // same roots as receivers (`delivery.ca_file`).
                if let Some(tls) = state.delivery.tls() {
                    connector = connector.rustls_0_23(tls);
                }
                awc::Client::builder()
                    .connector(connector)
                    .disable_redirects()
                    .timeout(TIMEOUT)
                    .finish()
            })
            .clone()
    })
}

/// Where a request about one entity is answered.
#[derive(Debug)]
pub enum Route {
    /// Here: this instance owns the key's partition (or the journal is
    /// embedded and owns them all).
    Local,
    /// At the owner of the key's partition.
    Owner(InstanceEntry),
}

/// The id of the instance that forwarded `request`, if it was forwarded.
pub fn forwarded_by(request: &HttpRequest) -> Option<&str> {
    request
        .headers()
        .get(FORWARDED_BY)
        .map(|v| v.to_str().unwrap_or("?"))
}

/// Where the request about `key` is answered; `503 no_owner` when no live
/// instance owns its partition, or when it was forwarded here and this
/// instance does not own it (the partitions are moving).
pub fn route_entity(state: &AppState, request: &HttpRequest, key: &str) -> Result<Route, ApiError> {
    let journal = &state.runtime.journal;
    let Some(ownership) = journal.ownership() else {
        return Ok(Route::Local);
    };
    let partition = partition_of(key, journal.partitions());
    if ownership.assigned.contains(&i32::from(partition)) {
        if journal.evaluates(partition) {
            return Ok(Route::Local);
        }
        // NB: an entity read or written before its partition's state is
        // restored would start from a stale local snapshot.
        return Err(ApiError::NoOwner {
            message: format!(
                "the entity `{key}` is in partition {partition}, which this instance is taking over: \
                 its entities' state is being restored from the changelog; retry in a moment"
            ),
            partition,
        });
    }
    let me = &state.instances.identity().id;
    if let Some(by) = forwarded_by(request) {
        return Err(ApiError::NoOwner {
            message: format!(
                "the entity `{key}` is in partition {partition}; instance {by} forwarded the request to \
                 this instance ({me}) as its owner, but this instance does not own it now: the partition \
                 is moving between instances; retry in a moment"
            ),
            partition,
        });
    }
    match state.instances.owner_of(i32::from(partition), wall_now()) {
        Some(owner) => Ok(Route::Owner(owner)),
        None => Err(ApiError::NoOwner {
            message: format!(
                "the entity `{key}` is in partition {partition}, which no instance owns right now \
                 (a rebalance, or its owner stopped); retry in a moment"
            ),
            partition,
        }),
    }
}

/// What another instance answered.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers a client acts on: `Content-Type`, `Retry-After`,
    /// `WWW-Authenticate`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Its body.
    pub body: Bytes,
}

/// Sends `request` (with `body`) to the instance `to`, as this instance,
/// and reads its answer; the error says why it got none.
pub async fn send(
    state: &AppState,
    request: &HttpRequest,
    to: &InstanceEntry,
    body: Bytes,
) -> Result<Answer, String> {
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.path(), |p| p.as_str());
    let mut outgoing = client(state)
        .request(request.method().clone(), format!("{}{path}", to.url))
        .insert_header((FORWARDED_BY, state.instances.identity().id.as_str()));
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(value) = request.headers().get(&name) {
            outgoing = outgoing.insert_header((name, value.clone()));
        }
    }
    let mut response = outgoing.send_body(body).await.map_err(|e| e.to_string())?;
    let answer = response
        .body()
        .limit(MAX_ANSWER_BYTES)
        .await
        .map_err(|e| format!("cannot read its answer: {e}"))?;
    Ok(Answer {
        status: response.status(),
        headers: [
            header::CONTENT_TYPE,
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
        ]
        .into_iter()
        .filter_map(|name| {
            let value = response.headers().get(&name)?.clone();
            Some((name, value))
        })
        .collect(),
        body: answer,
    })
}

/// Forwards an entity request to its partition's owner and answers what
/// the owner answered, naming it in [`ANSWERED_BY`].
pub async fn relay(
    state: &AppState,
    request: &HttpRequest,
    owner: &InstanceEntry,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let answer = send(state, request, owner, body).await.map_err(|e| {
        ApiError::OwnerUnreachable(format!(
            "instance {} at {}, which owns the entity's partition, did not answer: {e}",
            owner.id, owner.url
        ))
    })?;
    let mut response = HttpResponse::build(answer.status);
    for header in answer.headers {
        response.insert_header(header);
    }
    response.insert_header((ANSWERED_BY, owner.id.as_str()));
    Ok(response.body(answer.body))
}
