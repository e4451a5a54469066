//! `GET /v1/instances`: the instances directory.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::error::ErrorBody;
use crate::api::AppState;
use crate::cluster::instances::InstanceEntry;
use crate::journal::Ownership;
use crate::time::{wall_now, Timestamp};

/// Routes of this resource.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/instances", web::get().to(list_instances));
}

/// The instances of the deployment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstanceList {
    /// Partitions of the key space.
    pub partitions: u16,
    /// Partitions no live instance says it owns right now (during a
    /// rebalance, or when an owner stopped); empty when all are owned.
    pub unowned: Vec<i32>,
    /// The live instances, this one first.
    pub instances: Vec<InstanceBody>,
}

/// One instance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstanceBody {
    /// Its id (`kafka.instance_id`, or made at its first start).
    pub id: String,
    /// Where its HTTP API is reached (`kafka.advertised_url`).
    pub url: String,
    /// Whether it is the instance that answered.
    #[serde(rename = "self")]
    pub this: bool,
    /// Partitions it evaluates.
    pub assigned: Vec<i32>,
    /// Assigned partitions it has not read up to their end yet.
    pub restoring: Vec<i32>,
    /// When it started.
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    /// When it last said it is alive (for this instance: now).
    #[schema(value_type = String, format = DateTime)]
    pub heartbeat_at: Timestamp,
    /// Its cepheus version.
    pub version: String,
}

impl InstanceBody {
    fn new(entry: InstanceEntry, this: bool) -> Self {
        InstanceBody {
            id: entry.id,
            url: entry.url,
            this,
            assigned: entry.assigned,
            restoring: entry.restoring,
            started_at: entry.started_at,
            heartbeat_at: entry.heartbeat_at,
            version: entry.version,
        }
    }
}

/// The instances directory.
///
/// Each live instance with its URL and the partitions it evaluates. In the
/// scale-out mode the instances publish themselves to the instances topic
/// and this instance answers what it read, with its own entry as of now;
/// an instance that has not refreshed its entry for `kafka.missed_heartbeats`
/// heartbeats is left out. The embedded mode has one instance, owning every
/// partition.
#[utoipa::path(
    get, path = "/v1/instances", tag = "operations",
    responses(
        (status = 200, description = "The instances", body = InstanceList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
    ),
    security(("token" = ["read"]), ())
)]
pub async fn list_instances(state: web::Data<AppState>) -> HttpResponse {
    let journal = &state.runtime.journal;
    let partitions = journal.partitions();
    let now = wall_now();
    let ownership = journal.ownership().unwrap_or_else(|| Ownership {
        assigned: (0..i32::from(partitions)).collect(),
        ..Ownership::default()
    });
    let me = state.instances.identity().entry(&ownership, now);
    let mut instances = vec![InstanceBody::new(me, true)];
    instances.extend(
        state
            .instances
            .peers(now)
            .into_iter()
            .map(|peer| InstanceBody::new(peer, false)),
    );
    let unowned = (0..i32::from(partitions))
        .filter(|p| !instances.iter().any(|i| i.assigned.contains(p)))
        .collect();
    HttpResponse::Ok().json(InstanceList {
        partitions,
        unowned,
        instances,
    })
}
