//! The passivation sweep: asks entities idle for `passivate_after` to leave
//! memory.
//!
//! One loop for all entities rather than a timer in every actor: a timer
//! per actor cost a few hundred bytes each and woke every live entity twice
//! per `passivate_after`, which at millions of live entities was most of
//! their memory and a steady load. The sweep reads the idle time the actors
//! publish in their [`Liveness`](crate::actors::router::Liveness) and sends
//! [`EntityMsg::Passivate`] only to those idle long enough; the actor
//! decides (it stays if its state cannot be persisted or a timer is about
//! to fire).

use std::sync::Arc;
use std::time::Duration;

use crate::actors::entity::EntityMsg;
use crate::actors::Runtime;

/// The sweep loop: every half `passivate_after` (at least every 50 ms).
pub(crate) async fn run(runtime: Arc<Runtime>) {
    let idle = runtime.config.passivate_after;
    let mut interval = tokio::time::interval((idle / 2).max(Duration::from_millis(50)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        for key in runtime.router.idle_keys(idle) {
            runtime.router.deliver_if_live(&key, EntityMsg::Passivate);
        }
    }
}
