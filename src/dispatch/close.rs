//! IRP_MJ_CLOSE: the file object's last reference is gone. On Windows every read of
//! the handle has completed by now; hosts without IRP_MJ_CLEANUP (Wine) send CLOSE
//! while reads are queued, so they are drained here too (a no-op on Windows).

use crate::device::{DeviceExtension, HandleContext};
use crate::kernel::irp::{Completions, Dispatched, Irp};
use crate::kernel::sys::STATUS_SUCCESS;
use crate::queue::drain;

pub fn close(extension: &DeviceExtension, mut irp: Irp) -> Dispatched {
    let mut cancelled = Completions::new();
    let context = {
        let mut state = extension.state.lock();
        // The drain empties the queue, which takes the handle off the list of handles
        // with reads; detached after it, the context is unreachable from the device.
        drain(&mut state, &irp, &mut cancelled);
        irp.detach_file_context::<HandleContext>()
    };
    cancelled.complete_all();
    // A file object that never went through CREATE (a kernel caller's) has no context:
    // nothing to release, and CLOSE still succeeds.
    if let Some(context) = context {
        context.free();
    }
    irp.complete(STATUS_SUCCESS, 0)
}
