//! Pending reads: how a queued read is counted, and what a cancelled one becomes
//! (what a handle keeps is in `device.rs`, with the state its guard protects). The
//! queue itself — one FIFO per handle, the list of handles with reads queued, the
//! cancel protocol — is the kernel's
//! ([`crate::kernel::file_queue`]); every function here runs with the device guard
//! held, which the `&mut DeviceState` they take proves.
//!
//! Completion always happens after the guard is released, from a [`Completions`] list.

use crate::device::{CancelRead, DeviceExtension, DeviceState, ReadOutcome};
use crate::kernel::file_queue::Unlinked;
use crate::kernel::irp::{CancelRoutine, CancelledIrp, Completions, Irp, Pending};
use crate::kernel::sys::STATUS_CANCELLED;

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
impl CancelRoutine for CancelRead {
    type Extension = DeviceExtension;

    fn cancel(extension: &DeviceExtension, irp: CancelledIrp) {
        let irp = {
            let mut state = extension.state.lock();
            let (irp, was_queued) = state.reads.take_cancelled(irp);
            // A read a remover unlinked first was counted by it.
            if was_queued {
                state.stats.read_left_queue(ReadOutcome::Cancelled);
            }
            irp
        };
        let _ = irp.complete(STATUS_CANCELLED, 0);
    }
}
