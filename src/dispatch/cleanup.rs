//! IRP_MJ_CLEANUP: the last handle to a file object closed (in the closing process).
//! Every read queued for it is cancelled under the device guard, the same guard the
//! read path queues under; the handle is marked so that a read still in flight fails.

use crate::device::{DeviceExtension, HandleContext};
use crate::kernel::irp::{Completions, Dispatched, Irp};
use crate::kernel::sys::{STATUS_INVALID_DEVICE_REQUEST, STATUS_SUCCESS};
use crate::queue::drain;

pub fn cleanup(extension: &DeviceExtension, irp: Irp) -> Dispatched {
    let Some(handle) = irp.file_context::<HandleContext>() else {
        // Not a handle this driver opened (a kernel caller's IRP).
        return irp.complete(STATUS_INVALID_DEVICE_REQUEST, 0);
    };
    let mut cancelled = Completions::new();
    {
        let mut state = extension.state.lock();
        handle.mark_cleaned_up(&mut state);
        drain(&mut state, &irp, &mut cancelled);
    }
    cancelled.complete_all();
    irp.complete(STATUS_SUCCESS, 0)
}
