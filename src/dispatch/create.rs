//! IRP_MJ_CREATE: a handle context per open, in FileObject->FsContext.

use crate::device::DeviceExtension;
use crate::kernel::irp::{Dispatched, Irp};
use crate::kernel::sys::{
    STATUS_DELETE_PENDING, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_REQUEST, STATUS_OBJECT_PATH_NOT_FOUND,
    STATUS_SUCCESS,
};
use crate::list;
use crate::pool::{PoolBuf, tag};
use crate::queue::HandleContext;

pub fn create(extension: &DeviceExtension, mut irp: Irp) -> Dispatched {
    // The device has no namespace below it: `\\.\StageDrv0\x` is refused.
    if irp.opens_a_subpath() {
        return irp.complete(STATUS_OBJECT_PATH_NOT_FOUND, 0);
    }
    let Some(context) = PoolBuf::<HandleContext>::zeroed(extension.driver().allocator, 1, tag::HANDLE) else {
        return irp.complete(STATUS_INSUFFICIENT_RESOURCES, 0);
    };
    let handle = context.as_ptr();
    {
        let shared = extension.shared.lock();
        if shared.stopping {
            drop(shared);
            context.free();
            return irp.complete(STATUS_DELETE_PENDING, 0);
        }
        // SAFETY: the context is fresh pool; its lists are initialised in place (no
        // reads yet, so it is not on the device's active list).
        unsafe {
            list::init(&raw mut (*handle).pending);
            list::init(&raw mut (*handle).active);
        }
        if !irp.set_file_context(handle.cast()) {
            // A create always carries its file object; a kernel caller's without one
            // gets no handle.
            drop(shared);
            context.free();
            return irp.complete(STATUS_INVALID_DEVICE_REQUEST, 0);
        }
    }
    irp.complete(STATUS_SUCCESS, 0)
}
