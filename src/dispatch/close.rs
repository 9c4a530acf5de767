//! IRP_MJ_CLOSE: the file object's last reference is gone. On Windows every read of
//! the handle has completed by now; hosts without IRP_MJ_CLEANUP (Wine) send CLOSE
//! while reads are queued, so they are drained here too (a no-op on Windows).

use super::finish;
use crate::device::DeviceExtension;
use crate::kernel::sys::{ExFreePoolWithTag, NTSTATUS, PDEVICE_OBJECT, PIRP, STATUS_SUCCESS, current_stack_location};
use crate::pool::tag;
use crate::queue::{Completions, HandleContext, drain};

pub unsafe extern "C" fn dispatch_close(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: a valid close IRP for our device.
    let file = unsafe { (*current_stack_location(irp)).FileObject };
    // SAFETY: as above. A file object that never went through CREATE (a kernel
    // caller's) has no context: nothing to release, and CLOSE still succeeds.
    let handle = unsafe { HandleContext::of_request(irp) }.unwrap_or(core::ptr::null_mut());
    // SAFETY: the device is ours.
    let extension = unsafe { DeviceExtension::of(device) };
    let mut cancelled = Completions::new();
    if !handle.is_null() {
        let mut shared = extension.shared.lock();
        // SAFETY: under the guard; the drain empties the queue, which takes the handle
        // off the active list, so after this the context is unreachable from the device.
        unsafe {
            drain(&mut shared, handle, &mut cancelled);
            (*file).FsContext = core::ptr::null_mut();
        }
    }
    cancelled.complete_all();
    if !handle.is_null() {
        // SAFETY: allocated in CREATE with this tag, unreachable now, freed once.
        unsafe { ExFreePoolWithTag(handle.cast(), tag::HANDLE) };
    }
    // SAFETY: we own the close IRP.
    unsafe { finish(irp, STATUS_SUCCESS, 0) }
}
