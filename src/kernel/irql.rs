//! IRQL contracts as debug assertions.
//!
//! A driver function documented "PASSIVE_LEVEL" or "<= DISPATCH_LEVEL" states it with
//! one of these calls on entry. They cost nothing in a release build; in a debug build
//! (every host test) a violation panics with the contract and the level found, which
//! ntsim reports as a driver assertion.

use super::sys::{self, DISPATCH_LEVEL, KIRQL, PASSIVE_LEVEL};

/// The current processor's IRQL (`KeGetCurrentIrql`).
#[must_use]
pub fn current() -> KIRQL {
    sys::current_irql()
}

/// Contract: the caller runs at PASSIVE_LEVEL.
#[track_caller]
pub fn assert_passive() {
    if cfg!(debug_assertions) {
        let irql = current();
        debug_assert!(u32::from(irql) == PASSIVE_LEVEL, "IRQL contract: PASSIVE_LEVEL expected, running at {irql}");
    }
}

/// Contract: the caller runs at or below DISPATCH_LEVEL.
#[track_caller]
pub fn assert_at_most_dispatch() {
    if cfg!(debug_assertions) {
        let irql = current();
        debug_assert!(
            u32::from(irql) <= DISPATCH_LEVEL,
            "IRQL contract: <= DISPATCH_LEVEL expected, running at {irql}"
        );
    }
}

/// Contract: the caller runs at DISPATCH_LEVEL (DPCs, IoTimer routines, holders of a
/// spin lock).
#[track_caller]
pub fn assert_dispatch() {
    if cfg!(debug_assertions) {
        let irql = current();
        debug_assert!(u32::from(irql) == DISPATCH_LEVEL, "IRQL contract: DISPATCH_LEVEL expected, running at {irql}");
    }
}

/// Contract: the caller runs above DISPATCH_LEVEL, at a device IRQL (an ISR or a
/// KeSynchronizeExecution callback).
#[track_caller]
pub fn assert_device_irql() {
    if cfg!(debug_assertions) {
        let irql = current();
        debug_assert!(u32::from(irql) > DISPATCH_LEVEL, "IRQL contract: a device IRQL expected, running at {irql}");
    }
}
