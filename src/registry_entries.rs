//! Registry entries the driver owns: its device names under
//! `HKLM\HARDWARE\DEVICEMAP\StageDrv` (removed in Unload stage 6), and per-device
//! statistics in the volatile key `<service>\Statistics` (gone at reboot).

use crate::context::DriverContext;
use crate::device::{DriverDevices, LINK_PREFIX};
use crate::kernel::error::NtResult;
use crate::kernel::irql;
use crate::kernel::name::{Name, RegistryPath};
use crate::kernel::registry::{Access, Key};
use stagedrv_protocol::Stats;

const DEVICEMAP_KEY: &str = "\\Registry\\Machine\\HARDWARE\\DEVICEMAP\\StageDrv";

/// Publishes `\Device\StageDrvK` → `\DosDevices\StageDrvK` for every device.
/// PASSIVE_LEVEL. Once the key exists (recorded in `context`), Unload (or
/// DriverEntry's unwinding) deletes it, even if a value could not be written.
///
/// # Errors
/// The status of creating the key, or of the first value that could not be written.
pub fn publish_device_names(context: &DriverContext, devices: &DriverDevices) -> NtResult {
    irql::assert_passive();
    let key = Key::create_volatile(&RegistryPath::from_ascii(DEVICEMAP_KEY))?;
    context.device_names_published.set(true);
    let mut result = Ok(());
    for device in devices.borrow().iter() {
        let extension = device.extension();
        let link = Name::indexed(LINK_PREFIX, extension.index);
        result = result.and(key.set_string(&extension.device_name, &link));
    }
    result
}

/// Removes the DEVICEMAP key (Unload stage 6). PASSIVE_LEVEL.
pub fn remove_device_names() {
    irql::assert_passive();
    match Key::open(&RegistryPath::from_ascii(DEVICEMAP_KEY), Access::All) {
        Ok(key) => {
            if let Err(error) = key.delete() {
                log!(Warning, "ZwDeleteKey(DEVICEMAP) failed: {error}");
            }
        }
        Err(error) => log!(Warning, "DEVICEMAP key not found: {error}"),
    }
}

/// Writes one device's counters to `<service>\Statistics` (volatile). PASSIVE_LEVEL.
pub fn write_statistics(registry_path: &RegistryPath, index: u32, stats: &Stats) {
    irql::assert_passive();
    let mut path = RegistryPath::new();
    if !path.push_units(registry_path.units()) || !path.push_str("\\Statistics") {
        return;
    }
    let key = match Key::create_volatile(&path) {
        Ok(key) => key,
        Err(error) => {
            log!(Warning, "statistics key: {error}");
            return;
        }
    };
    if let Err(error) = key.set_binary(&Name::indexed("StageDrv", index), stats) {
        log!(Warning, "statistics value: {error}");
    }
}
