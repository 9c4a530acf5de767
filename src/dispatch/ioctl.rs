//! IRP_MJ_DEVICE_CONTROL: IOCTL_STAGEDRV_GET_STATS (METHOD_BUFFERED).

use super::finish;
use crate::device::DeviceExtension;
use crate::kernel::sys::{
    NTSTATUS, PDEVICE_OBJECT, PIRP, STATUS_BUFFER_TOO_SMALL, STATUS_INVALID_DEVICE_REQUEST, STATUS_SUCCESS,
    current_stack_location,
};
use crate::protocol::{IOCTL_STAGEDRV_GET_STATS, Stats};

pub unsafe extern "C" fn dispatch_device_control(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: a valid IOCTL IRP.
    let (code, output_length) = unsafe {
        let parameters = &(*current_stack_location(irp)).Parameters.DeviceIoControl;
        (parameters.IoControlCode, parameters.OutputBufferLength as usize)
    };
    if code != IOCTL_STAGEDRV_GET_STATS {
        // SAFETY: we own the IRP.
        return unsafe { finish(irp, STATUS_INVALID_DEVICE_REQUEST, 0) };
    }
    if output_length < size_of::<Stats>() {
        // SAFETY: as above.
        return unsafe { finish(irp, STATUS_BUFFER_TOO_SMALL, 0) };
    }
    // SAFETY: the device is ours.
    let extension = unsafe { DeviceExtension::of(device) };
    let stats = extension.shared.lock().stats_now();
    // SAFETY: METHOD_BUFFERED: SystemBuffer holds at least `output_length` bytes, and the
    // reply is written whole (no stale bytes of the input reach the caller).
    unsafe {
        core::ptr::copy_nonoverlapping(
            core::ptr::from_ref(&stats).cast::<u8>(),
            (*irp).AssociatedIrp.SystemBuffer.cast::<u8>(),
            size_of::<Stats>(),
        );
    }
    // SAFETY: as above.
    unsafe { finish(irp, STATUS_SUCCESS, size_of::<Stats>() as u64) }
}
