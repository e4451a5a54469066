//! What the scale-out tests share: the deployment's config and waiting for
//! an instance's partitions.

use serde_json::Value;

use super::{wait_until, Server, FAST_TIMING};

/// Partitions of the events topic in these tests.
pub const PARTITIONS: i32 = 4;

/// A config for an instance of the deployment on `brokers`, with
/// `kafka_extra` added to its `[kafka]` table.
pub fn config_with(brokers: &str, kafka_extra: &str) -> String {
    format!(
        r#"
partitions = {PARTITIONS}
{FAST_TIMING}
[kafka]
brokers = "{brokers}"
ack_timeout = "20s"
{kafka_extra}
[kafka.client]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"#
    )
}

/// A config for an instance of the deployment on `brokers`.
pub fn config(brokers: &str) -> String {
    config_with(brokers, "")
}

/// The partitions `server` owns (`/readyz`), once there are `count` of
/// them and none is still restoring.
pub fn owning(server: &Server, count: usize) -> Option<Vec<i64>> {
    let ready = server.get_json("/readyz");
    let partitions = &ready["partitions"];
    let assigned: Vec<i64> = partitions["assigned"]
        .as_array()?
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    let restoring = partitions["restoring"].as_array()?.len();
    (assigned.len() == count && restoring == 0).then_some(assigned)
}

/// Waits until `server` owns `count` partitions and has read them to their
/// end (`/readyz`), and returns what it owns.
pub fn wait_owning(server: &Server, count: usize) -> Vec<i64> {
    wait_until(&format!("an instance owning {count} partition(s)"), || {
        owning(server, count)
    })
}

/// What each of `servers` owns, once together they split `partitions`
/// evenly, each has read its share to the end, and no partition has two
/// owners. One poll of every server in turn: a rebalance between two
/// polls shows as a gap or an overlap, and the caller polls again —
/// waiting for each server alone could pair one's share before a
/// rebalance with another's after it.
pub fn balanced(servers: &[&Server], partitions: usize) -> Option<Vec<Vec<i64>>> {
    let each = partitions / servers.len();
    let shares: Vec<Vec<i64>> = servers
        .iter()
        .map(|server| owning(server, each))
        .collect::<Option<_>>()?;
    let mut all: Vec<i64> = shares.iter().flatten().copied().collect();
    all.sort_unstable();
    all.dedup();
    (all.len() == partitions).then_some(shares)
}
