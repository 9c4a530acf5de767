//! IRP_MJ_DEVICE_CONTROL: IOCTL_STAGEDRV_GET_STATS (METHOD_BUFFERED).

use crate::device::DeviceExtension;
use crate::kernel::irp::{Dispatched, Irp};
use crate::kernel::sys::{STATUS_BUFFER_TOO_SMALL, STATUS_INVALID_DEVICE_REQUEST, STATUS_SUCCESS};
use stagedrv_protocol::{IOCTL_STAGEDRV_GET_STATS, Stats};

pub fn device_control(extension: &DeviceExtension, mut irp: Irp) -> Dispatched {
    let Some((code, output_length)) = irp.device_control() else {
        return irp.complete(STATUS_INVALID_DEVICE_REQUEST, 0);
    };
    if code != IOCTL_STAGEDRV_GET_STATS {
        return irp.complete(STATUS_INVALID_DEVICE_REQUEST, 0);
    }
    if (output_length as usize) < size_of::<Stats>() {
        return irp.complete(STATUS_BUFFER_TOO_SMALL, 0);
    }
    let stats = extension.state.lock().stats_now();
    // The reply is written whole (no stale bytes of the input reach the caller).
    if !irp.write_output(0, &stats) {
        return irp.complete(STATUS_BUFFER_TOO_SMALL, 0);
    }
    irp.complete(STATUS_SUCCESS, size_of::<Stats>() as u64)
}
