//! IRP_MJ_CREATE: opening `\\.\StageDrvK`.

use super::finish;
use crate::sys::{NTSTATUS, PDEVICE_OBJECT, PIRP, STATUS_OBJECT_PATH_NOT_FOUND, STATUS_SUCCESS, current_stack_location};

/// Refuses sub-paths (`\\.\StageDrv0\x`): the device has no namespace below it.
pub unsafe extern "C" fn dispatch_create(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the I/O manager passes a valid IRP whose stack location names a file object.
    let file_object = unsafe { (*current_stack_location(irp)).FileObject };
    // SAFETY: a create IRP always carries its file object.
    let remaining = unsafe { (*file_object).FileName.Length };
    let status = if remaining == 0 { STATUS_SUCCESS } else { STATUS_OBJECT_PATH_NOT_FOUND };
    // SAFETY: we own the IRP and do not touch it afterwards.
    unsafe { finish(irp, status, 0) }
}
