//! The clock floor set by `POST /v1/clock`: a passivated entity moves its
//! clock to it when it wakes.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::store::{Store, StoreResult};
use crate::time::Timestamp;

/// Name of the clock floor in the store's meta tree.
const CLOCK_FLOOR: &str = "clock_floor";

/// The floor, in ms (`i64::MIN` when none).
pub struct ClockFloor(AtomicI64);

impl ClockFloor {
    /// The floor the store recorded, if any.
    pub fn open(store: &Store) -> ClockFloor {
        let floor = store
            .meta_u64(CLOCK_FLOOR)
            .ok()
            .flatten()
            .map_or(i64::MIN, |f| f as i64);
        ClockFloor(AtomicI64::new(floor))
    }

    /// The floor, if any.
    pub fn get(&self) -> Option<Timestamp> {
        match self.0.load(Ordering::Acquire) {
            i64::MIN => None,
            f => Some(Timestamp(f)),
        }
    }

    /// Raises the floor in memory: entities woken from now on move their
    /// clocks to it. [`ClockFloor::persist`] makes it durable.
    pub fn raise(&self, to: Timestamp) {
        self.0.fetch_max(to.millis(), Ordering::AcqRel);
    }

    /// Writes the floor to the store (durable with the next flush).
    ///
    /// NB: only once a checkpoint covers every event journalled before the
    /// floor was raised. An entity restored after a restart moves its clock
    /// to the floor at once, so events from before the floor must not be
    /// replayed to it afterwards (they would be late, though they were not).
    pub fn persist(&self, store: &Store) -> StoreResult<()> {
        match self.get() {
            Some(floor) => store.set_meta_u64(CLOCK_FLOOR, floor.millis() as u64),
            None => Ok(()),
        }
    }
}
