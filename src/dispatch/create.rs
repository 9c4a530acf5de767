//! IRP_MJ_CREATE: a handle context per open, in FileObject->FsContext.

use crate::device::DeviceExtension;
use crate::device::HandleContext;
use crate::kernel::file_queue::FileContext;
use crate::kernel::irp::{Dispatched, Irp};
use crate::kernel::pool::tag;
use crate::kernel::sys::{
    STATUS_DELETE_PENDING, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_REQUEST, STATUS_OBJECT_PATH_NOT_FOUND,
    STATUS_SUCCESS,
};

pub fn create(extension: &DeviceExtension, mut irp: Irp) -> Dispatched {
    // The device has no namespace below it: `\\.\StageDrv0\x` is refused.
    if irp.opens_a_subpath() {
        return irp.complete(STATUS_OBJECT_PATH_NOT_FOUND, 0);
    }
    let handle = HandleContext::new(&extension.state);
    let Some(context) = FileContext::new(extension.context().allocator, tag::HANDLE, handle) else {
        return irp.complete(STATUS_INSUFFICIENT_RESOURCES, 0);
    };
    {
        let state = extension.state.lock();
        if state.stopping {
            drop(state);
            context.free();
            return irp.complete(STATUS_DELETE_PENDING, 0);
        }
        if let Err(context) = irp.attach_file_context(context) {
            // A create always carries its file object; a kernel caller's without one
            // gets no handle.
            drop(state);
            context.free();
            return irp.complete(STATUS_INVALID_DEVICE_REQUEST, 0);
        }
    }
    irp.complete(STATUS_SUCCESS, 0)
}
