//! IRP_MJ_CLOSE: the file object's last reference is gone.

use super::finish;
use crate::sys::{NTSTATUS, PDEVICE_OBJECT, PIRP, STATUS_SUCCESS};

pub unsafe extern "C" fn dispatch_close(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: we own the IRP and do not touch it afterwards.
    unsafe { finish(irp, STATUS_SUCCESS, 0) }
}
