//! Observation points for the host's tests and benchmark; not part of `stagedrv.sys`.
//!
//! - [`observe_delivery`]: a function that runs around each of the consumer thread's
//!   delivery passes (one device, one wake-up), so the benchmark can time stagedrv's
//!   own part of delivering a record, as it times DispatchCleanup by wrapping it;
//! - [`handle_nodes_visited`]: how many active-list nodes the consumer and the
//!   watchdog of a device have visited, the load-independent measure of their cost.

extern crate std;

use core::sync::atomic::Ordering;
use std::sync::{PoisonError, RwLock};

use crate::device::DeviceExtension;
use crate::kernel::device::DeviceObject;
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

/// Active-list nodes visited so far by the consumer and the watchdog of `device`.
///
/// # Safety
/// `device` is a device object of a loaded stagedrv, not yet deleted.
pub unsafe fn handle_nodes_visited(device: PDEVICE_OBJECT) -> u64 {
    // SAFETY: guaranteed by the caller; the counter is atomic, readable from any thread.
    unsafe { DeviceObject::<DeviceExtension>::from_raw(device).extension() }
        .handle_nodes_visited
        .load(Ordering::Relaxed)
}
