//! IRP_MJ_CLOSE: the file object's last reference is gone. On Windows every read of
//! the handle has completed by now; hosts without IRP_MJ_CLEANUP (Wine) send CLOSE
//! while reads are queued, so they are drained here too (a no-op on Windows).

use crate::device::DeviceExtension;
use crate::kernel::irp::{Dispatched, Irp};
use crate::kernel::sys::{ExFreePoolWithTag, STATUS_SUCCESS};
use crate::pool::tag;
use crate::queue::{Completions, HandleContext, drain};

pub fn close(extension: &DeviceExtension, mut irp: Irp) -> Dispatched {
    // A file object that never went through CREATE (a kernel caller's) has no context:
    // nothing to release, and CLOSE still succeeds.
    let Some(handle) = HandleContext::of_request(&irp) else {
        return irp.complete(STATUS_SUCCESS, 0);
    };
    let mut cancelled = Completions::new();
    {
        let mut shared = extension.shared.lock();
        // SAFETY: under the guard; the drain empties the queue, which takes the handle
        // off the active list, so after this the context is unreachable from the device.
        unsafe { drain(&mut shared, handle, &mut cancelled) };
        irp.set_file_context(core::ptr::null_mut());
    }
    cancelled.complete_all();
    // SAFETY: allocated in CREATE with this tag, unreachable now, freed once.
    unsafe { ExFreePoolWithTag(handle.cast(), tag::HANDLE) };
    irp.complete(STATUS_SUCCESS, 0)
}
