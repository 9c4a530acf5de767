//! DriverUnload, in the stages of "Releasing Driver-Allocated Resources", then the
//! device objects as "Releasing Device and Controller Objects" describes.

use crate::device::Device;
use crate::sys::PDRIVER_OBJECT;

/// Called at PASSIVE_LEVEL once no device of the driver is referenced.
///
/// # Safety
/// Called by the I/O manager with the driver object DriverEntry received.
pub unsafe extern "C" fn driver_unload(driver: PDRIVER_OBJECT) {
    log!(Info, "Unload: begin");
    // SAFETY: the driver object stays valid for the whole Unload.
    let first = unsafe { (*driver).DeviceObject };
    if first.is_null() {
        return;
    }
    // SAFETY: every device object of this driver was made by `Device::create`.
    let first = unsafe { Device::from_raw(first) };
    stage_3_release_device_resources(&first);
    delete_devices(first);
    log!(Info, "Unload: done");
}

/// Stage 3: device-specific resources — the symbolic links.
fn stage_3_release_device_resources(first: &Device) {
    let mut next = Some(Device::as_raw(first));
    while let Some(raw) = next {
        // SAFETY: `raw` comes from the driver's device list.
        let device = unsafe { Device::from_raw(raw) };
        if let Some(link) = device.extension().link.take() {
            link.delete();
        }
        log!(Info, "Unload: stage 3 device {} released", device.extension().index);
        next = device.next().map(|d| d.as_raw());
    }
}

/// Last: IoDeleteDevice for every device object.
fn delete_devices(first: Device) {
    let mut next = Some(first);
    while let Some(device) = next {
        next = device.next();
        device.delete();
    }
    log!(Info, "Unload: devices deleted");
}
