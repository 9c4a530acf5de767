//! IRP_MJ_CLEANUP: the last handle to a file object closed (in the closing process).
//! Every read queued for it is cancelled under the device guard, the same guard the
//! read path queues under; the handle is marked so that a read still in flight fails.

use super::finish;
use crate::device::DeviceExtension;
use crate::kernel::sys::{NTSTATUS, PDEVICE_OBJECT, PIRP, STATUS_INVALID_DEVICE_REQUEST, STATUS_SUCCESS};
use crate::queue::{Completions, HandleContext, drain};

pub unsafe extern "C" fn dispatch_cleanup(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: a valid cleanup IRP for our device.
    let Some(handle) = (unsafe { HandleContext::of_request(irp) }) else {
        // Not a handle this driver opened (a kernel caller's IRP).
        // SAFETY: we own the IRP.
        return unsafe { finish(irp, STATUS_INVALID_DEVICE_REQUEST, 0) };
    };
    // SAFETY: the device is ours.
    let extension = unsafe { DeviceExtension::of(device) };
    let mut cancelled = Completions::new();
    {
        let mut shared = extension.shared.lock();
        // SAFETY: under the guard.
        unsafe {
            (*handle).cleaned_up = true;
            drain(&mut shared, handle, &mut cancelled);
        }
    }
    cancelled.complete_all();
    // SAFETY: we own the cleanup IRP.
    unsafe { finish(irp, STATUS_SUCCESS, 0) }
}
