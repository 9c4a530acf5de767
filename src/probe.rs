//! Observation points for the host's tests and benchmark; not part of `stagedrv.sys`.
//!
//! - [`observe_delivery`]: a function that runs around each of the consumer thread's
//!   delivery passes (one device, one wake-up), so the benchmark can time stagedrv's
//!   own part of delivering a record, as it times DispatchCleanup by wrapping it;
//! - [`handle_nodes_visited`]: how many active-list nodes the consumer and the
//!   watchdog of a device have visited, the load-independent measure of their cost.

extern crate std;

use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::vec::Vec;

use crate::kernel::sys::PDEVICE_OBJECT;

/// Runs the pass it is given (exactly once) and may observe it.
pub type DeliveryObserver = fn(&mut dyn FnMut());

static OBSERVER: RwLock<Option<DeliveryObserver>> = RwLock::new(None);

/// Installs (or with `None` removes) the observer of every driver in this process.
pub fn observe_delivery(observer: Option<DeliveryObserver>) {
    *OBSERVER.write().unwrap_or_else(PoisonError::into_inner) = observer;
}

/// Runs one delivery pass, through the observer if one is installed.
pub(crate) fn around_delivery(pass: &mut dyn FnMut()) {
    let observer = *OBSERVER.read().unwrap_or_else(PoisonError::into_inner);
    match observer {
        Some(observe) => observe(pass),
        None => pass(),
    }
}

/// Each live device's visit counter, by device object address: registered when the
/// device is created, removed before it is deleted, so a counter here is always in a
/// live extension.
static VISIT_COUNTERS: Mutex<Vec<(usize, &'static AtomicU64)>> = Mutex::new(Vec::new());

/// Publishes a new device's counter.
pub(crate) fn register(device: PDEVICE_OBJECT, counter: &'static AtomicU64) {
    let mut counters = VISIT_COUNTERS.lock().unwrap_or_else(PoisonError::into_inner);
    counters.retain(|(address, _)| *address != device as usize);
    counters.push((device as usize, counter));
}

/// Withdraws a device's counter before the device is deleted.
pub(crate) fn unregister(device: PDEVICE_OBJECT) {
    VISIT_COUNTERS.lock().unwrap_or_else(PoisonError::into_inner).retain(|(address, _)| *address != device as usize);
}

/// Active-list nodes visited so far by the consumer and the watchdog of `device`, or
/// `None` if `device` is not a live device of a loaded stagedrv.
#[must_use]
pub fn handle_nodes_visited(device: PDEVICE_OBJECT) -> Option<u64> {
    let counters = VISIT_COUNTERS.lock().unwrap_or_else(PoisonError::into_inner);
    counters.iter().find(|(address, _)| *address == device as usize).map(|(_, counter)| counter.load(Ordering::Relaxed))
}
