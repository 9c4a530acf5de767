//! IRP_MJ_READ: whole records now if the handle has no earlier read waiting and the
//! ring has data; otherwise the read is queued on its handle.

use crate::device::{DeviceExtension, DeviceState, HandleContext};
use crate::kernel::irp::{Completions, Dispatched, Irp};
use crate::kernel::sys::{
    STATUS_BUFFER_TOO_SMALL, STATUS_CANCELLED, STATUS_DELETE_PENDING, STATUS_INVALID_DEVICE_REQUEST,
    STATUS_QUOTA_EXCEEDED, STATUS_SUCCESS,
};
use crate::queue::enqueue;
use stagedrv_protocol::RECORD_SIZE;

pub fn read(extension: &DeviceExtension, mut irp: Irp) -> Dispatched {
    let length = irp.read_length();
    let Some(handle) = irp.file_context::<HandleContext>() else {
        // Not a handle this driver opened (a kernel caller's IRP): nothing to queue on.
        extension.state.lock().stats.read_rejected();
        return irp.complete(STATUS_INVALID_DEVICE_REQUEST, 0);
    };
    if length == 0 {
        // A zero-length read succeeds at once with nothing, as on any Windows device.
        extension.state.lock().stats.read_completed_at_once();
        return irp.complete(STATUS_SUCCESS, 0);
    }
    let now = crate::kernel::time::performance_counter().ticks;
    let mut state = extension.state.lock();
    let reject = if (length as usize) < RECORD_SIZE {
        Some(STATUS_BUFFER_TOO_SMALL)
    } else if state.stopping {
        Some(STATUS_DELETE_PENDING)
    } else if handle.cleaned_up(&state) {
        // A read that raced CloseHandle past the handle look-up: it would pend forever.
        Some(STATUS_CANCELLED)
    } else {
        None
    };
    if let Some(status) = reject {
        state.stats.read_rejected();
        drop(state);
        return irp.complete(status, 0);
    }
    let waiting = state.reads.queued_on_file_of(&irp);
    if waiting == 0 && state.ring.as_ref().is_some_and(|r| !r.is_empty()) {
        let bytes = copy_records(&mut state, &mut irp);
        state.stats.read_completed_at_once();
        drop(state);
        return irp.complete(STATUS_SUCCESS, bytes);
    }
    if waiting >= extension.max_pending_reads {
        state.stats.read_rejected();
        drop(state);
        return irp.complete(STATUS_QUOTA_EXCEEDED, 0);
    }
    let mut cancelled_early = Completions::new();
    let pending = enqueue(&mut state, irp, now, &mut cancelled_early);
    drop(state);
    cancelled_early.complete_all();
    pending.into()
}

/// Copies as many whole records as fit in the read into its system buffer; returns
/// the byte count. Guard held.
pub fn copy_records(state: &mut DeviceState, irp: &mut Irp) -> u64 {
    let room = (irp.read_length() as usize).checked_div(RECORD_SIZE).unwrap_or(0);
    let mut written: usize = 0;
    while written < room {
        let Some(record) = state.ring.as_mut().and_then(crate::ring::Ring::pop) else { break };
        // `written < room` records fit, so this one does too.
        if !irp.write_output(written.wrapping_mul(RECORD_SIZE), &record) {
            break;
        }
        written = written.wrapping_add(1);
    }
    // At most the read's length, a u32.
    written.wrapping_mul(RECORD_SIZE) as u64
}
