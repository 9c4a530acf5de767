//! IRP dispatch routines. Each routine validates, then completes the IRP now or hands
//! it to the queue; every path completes each IRP exactly once.

mod cleanup;
mod close;
mod create;
mod ioctl;
pub mod read;

use crate::kernel::sys::{
    DRIVER_OBJECT, IRP_MJ_CLEANUP, IRP_MJ_CLOSE, IRP_MJ_CREATE, IRP_MJ_DEVICE_CONTROL, IRP_MJ_READ, NTSTATUS,
    PDRIVER_DISPATCH, PIRP, complete_request,
};

/// Points the driver object's major-function table at this driver's routines.
/// Majors left alone keep the I/O manager's default (STATUS_INVALID_DEVICE_REQUEST).
pub fn install(driver: &mut DRIVER_OBJECT) {
    let routines: [(u32, PDRIVER_DISPATCH); 5] = [
        (IRP_MJ_CREATE, Some(create::dispatch_create)),
        (IRP_MJ_READ, Some(read::dispatch_read)),
        (IRP_MJ_DEVICE_CONTROL, Some(ioctl::dispatch_device_control)),
        (IRP_MJ_CLEANUP, Some(cleanup::dispatch_cleanup)),
        (IRP_MJ_CLOSE, Some(close::dispatch_close)),
    ];
    for (major, routine) in routines {
        if let Some(slot) = driver.MajorFunction.get_mut(major as usize) {
            *slot = routine;
        }
    }
}

/// Completes `irp` with `status` and returns it, the usual tail of a dispatch routine.
///
/// # Safety
/// The caller owns `irp` and does not touch it afterwards.
pub unsafe fn finish(irp: PIRP, status: NTSTATUS, information: u64) -> NTSTATUS {
    // SAFETY: forwarded with the caller's ownership of `irp`.
    unsafe { complete_request(irp, status, information) };
    status
}
