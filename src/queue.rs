//! Pending reads: what a handle keeps, how a queued read is counted, and what a
//! cancelled one becomes. The queue itself — one FIFO per handle, the list of handles
//! with reads queued, the cancel protocol — is the kernel's
//! ([`crate::kernel::file_queue`]); every function here runs with the device guard
//! held, which the `&mut DeviceState` they take proves.
//!
//! Completion always happens after the guard is released, from a [`Completions`] list.

use crate::device::{DeviceExtension, DeviceState, ReadOutcome};
use crate::kernel::file_queue::{FileQueues, Unlinked};
use crate::kernel::irp::{CancelRoutine, CancelledIrp, Completions, Irp, Pending};
use crate::kernel::sync::{LockedBy, SpinLock};
use crate::kernel::sys::STATUS_CANCELLED;

/// Per-handle state, the context of its file object from IRP_MJ_CREATE to IRP_MJ_CLOSE.
pub struct HandleContext {
    /// IRP_MJ_CLEANUP ran: later reads fail instead of pending forever.
    cleaned_up: LockedBy<bool, DeviceState>,
}

impl HandleContext {
    /// A handle of the device whose guard is `guard`.
    pub fn new(guard: &SpinLock<DeviceState>) -> Self {
        Self { cleaned_up: LockedBy::new(guard, false) }
    }

    /// Whether IRP_MJ_CLEANUP ran for the handle.
    pub fn cleaned_up(&self, state: &DeviceState) -> bool {
        *self.cleaned_up.access(state)
    }

    /// Marks the handle cleaned up.
    pub fn mark_cleaned_up(&self, state: &mut DeviceState) {
        *self.cleaned_up.access_mut(state) = true;
    }
}

/// The device's pending reads.
pub type PendingReads = FileQueues<HandleContext, CancelRead>;

/// Queues a read on its handle. Marks it pending first, so the caller returns
/// STATUS_PENDING in every case: the [`Pending`] token is how it does. A read cancelled
/// before it could be queued goes to `cancelled_early`, for the caller to complete
/// after releasing the guard.
pub fn enqueue(state: &mut DeviceState, mut irp: Irp, now: i64, cancelled_early: &mut Completions) -> Pending {
    let pending = irp.mark_pending();
    match state.reads.enqueue(irp, now) {
        Ok(()) => state.stats.read_queued(),
        Err(irp) => {
            state.stats.read_cancelled_before_queued();
            cancelled_early.push(irp, STATUS_CANCELLED, 0);
        }
    }
    pending
}

/// Drains every pending read of the handle `irp` was sent for, as cancelled (cleanup,
/// close).
pub fn drain(state: &mut DeviceState, irp: &Irp, out: &mut Completions) {
    let DeviceState { reads, stats, .. } = state;
    reads.drain_file_of(irp, |unlinked| {
        stats.read_left_queue(ReadOutcome::Cancelled);
        if let Unlinked::Owned(irp) = unlinked {
            out.push(irp, STATUS_CANCELLED, 0);
        }
    });
}

/// The cancel routine of a queued read.
pub struct CancelRead;

impl CancelRoutine for CancelRead {
    type Extension = DeviceExtension;

    fn cancel(extension: &DeviceExtension, irp: CancelledIrp) {
        let irp = {
            let mut shared = extension.shared.lock();
            let (irp, was_queued) = shared.reads.take_cancelled(irp);
            // A read a remover unlinked first was counted by it.
            if was_queued {
                shared.stats.read_left_queue(ReadOutcome::Cancelled);
            }
            irp
        };
        let _ = irp.complete(STATUS_CANCELLED, 0);
    }
}
