//! `GET /v1/alerts/ws`: alerts as they fire, over a WebSocket.
//!
//! With `after`, the subscriber first gets the logged alerts after that
//! cursor, then live ones, with no gap and no duplicate at the seam: it
//! subscribes to the live broadcast *before* reading the log, and skips live
//! alerts at or below the last seq it replayed. A subscriber that falls more
//! than the backlog behind is closed with a reason (and can resume with
//! `after`), so a slow client never grows memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message};
use futures_util::StreamExt;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::api::alerts::AlertQuery;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::AppState;
use crate::store::alerts::{AlertFilter, StoredAlert};
use crate::telemetry;

/// Routes of this resource.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/alerts/ws", web::get().to(alerts_ws));
}

/// How often the server pings; a client silent for three pings is closed.
const PING_EVERY: Duration = Duration::from_secs(10);

/// Stream alerts over a WebSocket.
///
/// Each alert is sent as one JSON text message (the same shape as
/// `GET /v1/alerts/{id}`). Filters as in `GET /v1/alerts`. With `after`,
/// logged alerts after that cursor are replayed first. The server pings
/// every 10 s. A subscriber that falls too far behind is closed with code
/// 1008 and a reason naming the last seq it received.
#[utoipa::path(
    get, path = "/v1/alerts/ws", tag = "alerts",
    params(AlertQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Bad query or not a WebSocket request", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
        (status = 410, description = "`after` is older than what retention keeps; `details.oldest` is the oldest seq held", body = ErrorBody),
        (status = 503, description = "Too many subscribers", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn alerts_ws(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Payload,
    query: web::Query<AlertQuery>,
) -> Result<HttpResponse, ApiError> {
    if state.runtime.alerts.subscribers() >= state.limits.max_subscribers {
        return Err(ApiError::Unavailable(format!(
            "the limit of {} WebSocket subscribers is reached; retry later",
            state.limits.max_subscribers
        )));
    }
    crate::api::alerts::check_cursor(&state, query.after)?;
    let (response, session, stream) = actix_ws::handle(&request, body)
        .map_err(|e| ApiError::bad_request(format!("not a WebSocket request: {e}")))?;
    let query = query.into_inner();
    // NB: subscribe before answering, not in the spawned task: once the
    // client holds the 101 it counts against `max_subscribers` and misses
    // no alert published after it.
    let live = state.runtime.alerts.subscribe();
    actix_web::rt::spawn(subscription(
        state.into_inner(),
        session,
        stream,
        query,
        live,
    ));
    Ok(response)
}

async fn subscription(
    state: Arc<AppState>,
    mut session: actix_ws::Session,
    mut stream: actix_ws::MessageStream,
    query: AlertQuery,
    (mut live, published): (broadcast::Receiver<Arc<StoredAlert>>, u64),
) {
    let filter = query.filter();
    let mut last = match query.after {
        Some(after) => match replay(&state, &mut session, &filter, after, published).await {
            Some(last) => last,
            None => return,
        },
        None => published,
    };
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut heard = Instant::now();
    let mut closing = state.runtime.alerts.closing();
    let reason = loop {
        tokio::select! {
            _ = closing.wait_for(|closing| *closing) => break Some(CloseReason {
                code: CloseCode::Away,
                description: Some(format!("cepheus is shutting down; reconnect with after={last}")),
            }),
            received = live.recv() => match received {
                Ok(alert) => {
                    if alert.seq <= last {
                        continue;
                    }
                    last = alert.seq;
                    let mut alert = alert;
                    if !state.delivery.silences().is_empty() {
                        let mut marked = (*alert).clone();
                        state.delivery.mark(&mut marked);
                        alert = Arc::new(marked);
                    }
                    if filter.accepts(&alert) {
                        let text = serde_json::to_string(&*alert).unwrap_or_default();
                        if session.text(text).await.is_err() {
                            return;
                        }
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    telemetry::ws_slow_disconnect();
                    break Some(CloseReason {
                        code: CloseCode::Policy,
                        description: Some(format!(
                            "subscriber too slow: {missed} alerts behind; reconnect with after={last}"
                        )),
                    });
                }
                Err(RecvError::Closed) => break Some(CloseCode::Away.into()),
            },
            message = stream.next() => match message {
                Some(Ok(Message::Ping(bytes))) => {
                    heard = Instant::now();
                    if session.pong(&bytes).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                Some(Ok(_)) => heard = Instant::now(),
            },
            _ = ping.tick() => {
                if heard.elapsed() > PING_EVERY * 3 {
                    break Some(CloseReason {
                        code: CloseCode::Policy,
                        description: Some("no pong for 30 s".into()),
                    });
                }
                if session.ping(b"").await.is_err() {
                    return;
                }
            }
        }
    };
    let _ = session.close(reason).await;
    // Finish the closing handshake: read until the client answers the close
    // (or goes away, or a few seconds pass). Dropping the connection with
    // the client's frames unread would make the kernel reset it, and the
    // reset can destroy the close frame (and its reason) before the client
    // reads it.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Close(_) = message {
                break;
            }
        }
    })
    .await;
}

/// How long a closing socket waits for the client's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Sends logged alerts with seq in `(after, through]`; returns the last seq
/// covered, or `None` if the client went away.
async fn replay(
    state: &AppState,
    session: &mut actix_ws::Session,
    filter: &AlertFilter,
    after: u64,
    through: u64,
) -> Option<u64> {
    let mut cursor = after;
    while cursor < through {
        let (page, scanned) = match state.runtime.store.alerts().query_marked(
            filter,
            cursor,
            through,
            1_000,
            100_000,
            |alert| state.delivery.mark(alert),
        ) {
            Ok(page) => page,
            Err(e) => {
                let reason = CloseReason {
                    code: CloseCode::Error,
                    description: Some(format!("cannot read the alert log: {e}")),
                };
                let _ = session.clone().close(Some(reason)).await;
                return None;
            }
        };
        for alert in page {
            let text = serde_json::to_string(&alert).unwrap_or_default();
            if session.text(text).await.is_err() {
                return None;
            }
        }
        if scanned <= cursor {
            break;
        }
        cursor = scanned;
    }
    Some(through.max(after))
}
