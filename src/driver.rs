//! DriverEntry: acquires resources in stage order and, on failure, releases exactly
//! what it acquired with the same functions Unload uses.

use crate::device::Device;
use crate::link::SymbolicLink;
use crate::sys::{DRIVER_OBJECT, NTSTATUS, PCUNICODE_STRING, PDRIVER_OBJECT, STATUS_SUCCESS};
use crate::{dispatch, unload};

/// The driver's entry point, called once at PASSIVE_LEVEL when the service starts.
///
/// # Safety
/// Called by the I/O manager with a valid driver object and registry path.
#[cfg_attr(target_os = "windows", unsafe(export_name = "DriverEntry"))]
pub unsafe extern "C" fn driver_entry(driver: PDRIVER_OBJECT, _registry_path: PCUNICODE_STRING) -> NTSTATUS {
    log!(Info, "DriverEntry");
    // SAFETY: the driver object is valid and ours for the duration of DriverEntry.
    let driver = unsafe { &mut *driver };
    dispatch::install(driver);
    driver.DriverUnload = Some(unload::driver_unload);
    match create_device(driver, 0) {
        Ok(device) => {
            device.finish_initializing();
            log!(Info, "DriverEntry done");
            STATUS_SUCCESS
        }
        Err(status) => {
            log!(Error, "DriverEntry failed: {status:#x}");
            status
        }
    }
}

/// Creates device `index` with its link; on failure nothing of it remains.
fn create_device(driver: &mut DRIVER_OBJECT, index: u32) -> Result<Device, NTSTATUS> {
    let device = Device::create(driver, index)?;
    let extension = device.extension();
    match SymbolicLink::create(index, &extension.device_name) {
        Ok(link) => {
            extension.link = Some(link);
            Ok(device)
        }
        Err(status) => {
            device.delete();
            Err(status)
        }
    }
}
