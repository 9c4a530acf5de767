//! IRP_MJ_READ: whole records now if the handle has no earlier read waiting and the
//! ring has data; otherwise the read is queued on its handle.

use super::finish;
use crate::device::{DeviceExtension, Shared};
use crate::kernel::sys::{
    NTSTATUS, PDEVICE_OBJECT, PIRP, STATUS_BUFFER_TOO_SMALL, STATUS_CANCELLED, STATUS_DELETE_PENDING,
    STATUS_INVALID_DEVICE_REQUEST, STATUS_PENDING, STATUS_QUOTA_EXCEEDED, STATUS_SUCCESS, current_stack_location,
};
use crate::protocol::RECORD_SIZE;
use crate::queue::{Enqueued, HandleContext, enqueue};
use crate::timer::performance_counter;

pub unsafe extern "C" fn dispatch_read(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: a valid read IRP for our device.
    let length = unsafe { (*current_stack_location(irp)).Parameters.Read.Length };
    // SAFETY: the device is ours.
    let extension = unsafe { DeviceExtension::of(device) };
    // SAFETY: as above.
    let Some(handle) = (unsafe { HandleContext::of_request(irp) }) else {
        // Not a handle this driver opened (a kernel caller's IRP): nothing to queue on.
        {
            let mut shared = extension.shared.lock();
            crate::device::count(&mut shared.stats.reads_received);
            crate::device::count(&mut shared.stats.reads_rejected);
        }
        // SAFETY: we own the IRP and never touch it again.
        return unsafe { finish(irp, STATUS_INVALID_DEVICE_REQUEST, 0) };
    };
    if length == 0 {
        // A zero-length read succeeds at once with nothing, as on any Windows device.
        {
            let mut shared = extension.shared.lock();
            crate::device::count(&mut shared.stats.reads_received);
            crate::device::count(&mut shared.stats.reads_completed);
        }
        // SAFETY: we own the IRP and never touch it again.
        return unsafe { finish(irp, STATUS_SUCCESS, 0) };
    }
    let (now, _) = performance_counter();
    let mut shared = extension.shared.lock();
    crate::device::count(&mut shared.stats.reads_received);
    // SAFETY: the context is live while its file object has IRPs; the guard protects it.
    let cleaned_up = unsafe { (*handle).cleaned_up };
    let reject = if (length as usize) < RECORD_SIZE {
        Some(STATUS_BUFFER_TOO_SMALL)
    } else if shared.stopping {
        Some(STATUS_DELETE_PENDING)
    } else if cleaned_up {
        // A read that raced CloseHandle past the handle look-up: it would pend forever.
        Some(STATUS_CANCELLED)
    } else {
        None
    };
    if let Some(status) = reject {
        crate::device::count(&mut shared.stats.reads_rejected);
        drop(shared);
        // SAFETY: as above.
        return unsafe { finish(irp, status, 0) };
    }
    // SAFETY: under the guard.
    let earlier_waiting = unsafe { (*handle).pending_count } > 0;
    if !earlier_waiting && shared.ring.as_ref().is_some_and(|r| !r.is_empty()) {
        let bytes = fill(&mut shared, irp, length);
        crate::device::count(&mut shared.stats.reads_completed);
        drop(shared);
        // SAFETY: as above.
        return unsafe { finish(irp, STATUS_SUCCESS, bytes) };
    }
    // SAFETY: under the guard.
    if unsafe { (*handle).pending_count } >= extension.max_pending_reads {
        crate::device::count(&mut shared.stats.reads_rejected);
        drop(shared);
        // SAFETY: as above.
        return unsafe { finish(irp, STATUS_QUOTA_EXCEEDED, 0) };
    }
    // SAFETY: guard held, IRP owned, `handle` is its context.
    match unsafe { enqueue(&mut shared, handle, irp, now) } {
        Enqueued::Queued => {}
        Enqueued::CancelledEarly => {
            drop(shared);
            // SAFETY: we took the cancel routine back, so the IRP is ours to complete.
            unsafe { crate::kernel::sys::complete_request(irp, STATUS_CANCELLED, 0) };
        }
    }
    STATUS_PENDING
}

/// Copies as many whole records as fit in the read into its system buffer; returns
/// the byte count. Guard held.
pub fn fill(shared: &mut Shared, irp: PIRP, length: u32) -> u64 {
    let room = (length as usize).checked_div(RECORD_SIZE).unwrap_or(0);
    // SAFETY: buffered I/O: SystemBuffer holds `length` bytes for this read.
    let buffer = unsafe { (*irp).AssociatedIrp.SystemBuffer.cast::<u8>() };
    let mut written: usize = 0;
    while written < room {
        let Some(record) = shared.ring.as_mut().and_then(crate::ring::Ring::pop) else { break };
        // SAFETY: `written < room` records fit in the buffer, so this record's bytes lie
        // within it; the system buffer may be unaligned for Record, so bytes are copied.
        unsafe {
            core::ptr::copy_nonoverlapping(
                core::ptr::from_ref(&record).cast::<u8>(),
                buffer.wrapping_add(written.wrapping_mul(RECORD_SIZE)),
                RECORD_SIZE,
            );
        }
        written = written.wrapping_add(1);
    }
    // At most `length` bytes, a u32.
    written.wrapping_mul(RECORD_SIZE) as u64
}
