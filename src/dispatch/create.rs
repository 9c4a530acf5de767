//! IRP_MJ_CREATE: a handle context per open, in FileObject->FsContext.

use super::finish;
use crate::device::DeviceExtension;
use crate::kernel::sys::{
    NTSTATUS, PDEVICE_OBJECT, PIRP, STATUS_DELETE_PENDING, STATUS_INSUFFICIENT_RESOURCES, STATUS_OBJECT_PATH_NOT_FOUND,
    STATUS_SUCCESS, current_stack_location,
};
use crate::list;
use crate::pool::{PoolBuf, tag};
use crate::queue::HandleContext;

pub unsafe extern "C" fn dispatch_create(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the I/O manager passes a valid IRP whose stack location names a file object.
    let file = unsafe { (*current_stack_location(irp)).FileObject };
    // The device has no namespace below it: `\\.\StageDrv0\x` is refused.
    // SAFETY: a create IRP always carries its file object.
    if unsafe { (*file).FileName.Length } != 0 {
        // SAFETY: we own the IRP and do not touch it afterwards.
        return unsafe { finish(irp, STATUS_OBJECT_PATH_NOT_FOUND, 0) };
    }
    // SAFETY: the device is ours.
    let extension = unsafe { DeviceExtension::of(device) };
    let Some(context) = PoolBuf::<HandleContext>::zeroed(extension.driver().allocator, 1, tag::HANDLE) else {
        // SAFETY: as above.
        return unsafe { finish(irp, STATUS_INSUFFICIENT_RESOURCES, 0) };
    };
    let handle = context.as_ptr();
    {
        let shared = extension.shared.lock();
        if shared.stopping {
            drop(shared);
            context.free();
            // SAFETY: as above.
            return unsafe { finish(irp, STATUS_DELETE_PENDING, 0) };
        }
        // SAFETY: the context is fresh pool; its lists are initialised in place (no
        // reads yet, so it is not on the device's active list).
        unsafe {
            list::init(&raw mut (*handle).pending);
            list::init(&raw mut (*handle).active);
            (*file).FsContext = handle.cast();
        }
    }
    // SAFETY: as above.
    unsafe { finish(irp, STATUS_SUCCESS, 0) }
}
