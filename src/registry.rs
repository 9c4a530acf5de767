//! Registry entries the driver owns: its device names under
//! `HKLM\HARDWARE\DEVICEMAP\StageDrv` (removed in Unload stage 6), and per-device
//! statistics in the volatile key `<service>\Statistics` (gone at reboot).

use crate::config::object_attributes;
use crate::driver::DriverState;
use crate::kernel::sys::{
    HANDLE, KEY_ALL_ACCESS, NTSTATUS, REG_BINARY, REG_OPTION_VOLATILE, REG_SZ, ZwClose, ZwCreateKey, ZwDeleteKey,
    ZwOpenKey, ZwSetValueKey, nt_success,
};
use crate::name::{Name, PathBuf};
use stagedrv_protocol::Stats;

const DEVICEMAP_KEY: &str = "\\Registry\\Machine\\HARDWARE\\DEVICEMAP\\StageDrv";

/// A key handle, closed explicitly.
struct Key(HANDLE);

impl Key {
    fn create(path: &PathBuf, volatile: bool) -> Result<Self, NTSTATUS> {
        let mut name = path.as_unicode_string();
        let mut attributes = object_attributes(&raw mut name);
        let mut handle: HANDLE = core::ptr::null_mut();
        let options = if volatile { REG_OPTION_VOLATILE } else { 0 };
        // SAFETY: attributes and name live across the call.
        let status = unsafe {
            ZwCreateKey(
                &raw mut handle,
                KEY_ALL_ACCESS,
                &raw mut attributes,
                0,
                core::ptr::null_mut(),
                options,
                core::ptr::null_mut(),
            )
        };
        if nt_success(status) { Ok(Self(handle)) } else { Err(status) }
    }

    fn open(path: &PathBuf) -> Result<Self, NTSTATUS> {
        let mut name = path.as_unicode_string();
        let mut attributes = object_attributes(&raw mut name);
        let mut handle: HANDLE = core::ptr::null_mut();
        // SAFETY: as above.
        let status = unsafe { ZwOpenKey(&raw mut handle, KEY_ALL_ACCESS, &raw mut attributes) };
        if nt_success(status) { Ok(Self(handle)) } else { Err(status) }
    }

    fn set(&self, name: &Name, kind: u32, data: &[u8]) -> Result<(), NTSTATUS> {
        let mut value_name = name.as_unicode_string();
        // SAFETY: the data is readable for its length; the value name lives across the call.
        let status = unsafe {
            ZwSetValueKey(self.0, &raw mut value_name, 0, kind, data.as_ptr().cast_mut().cast(), data.len() as u32)
        };
        if nt_success(status) { Ok(()) } else { Err(status) }
    }

    fn close(self) {
        // SAFETY: opened by create/open, closed once.
        let _ = unsafe { ZwClose(self.0) };
    }
}

/// A REG_SZ payload: the name's UTF-16 units and a terminating NUL, as bytes.
fn sz_bytes(name: &Name, out: &mut [u8; 128]) -> usize {
    let mut len: usize = 0;
    for (pair, unit) in out.chunks_exact_mut(2).zip(name.units().iter().copied().chain([0])) {
        pair.copy_from_slice(&unit.to_le_bytes());
        len = len.saturating_add(2);
    }
    len
}

/// Publishes `\Device\StageDrvK` → `\DosDevices\StageDrvK` for every device.
/// PASSIVE_LEVEL. Once the key exists, Unload (or DriverEntry's unwinding) deletes it,
/// even if a value could not be written.
pub fn publish_device_names(state: &DriverState) -> Result<(), NTSTATUS> {
    let key = Key::create(&PathBuf::from_ascii(DEVICEMAP_KEY), true)?;
    state.device_names_published.set(true);
    let mut result = Ok(());
    for device in state.devices() {
        let extension = device.extension();
        let link = Name::indexed(crate::link::LINK_PREFIX, extension.index);
        let mut data = [0u8; 128];
        let len = sz_bytes(&link, &mut data);
        result = result.and(key.set(&extension.device_name, REG_SZ, data.get(..len).unwrap_or(&[])));
    }
    key.close();
    result
}

/// Removes the DEVICEMAP key (Unload stage 6). PASSIVE_LEVEL.
pub fn remove_device_names() {
    match Key::open(&PathBuf::from_ascii(DEVICEMAP_KEY)) {
        Ok(key) => {
            // SAFETY: an open key handle with DELETE access (KEY_ALL_ACCESS).
            let status = unsafe { ZwDeleteKey(key.0) };
            if !nt_success(status) {
                log!(Warning, "ZwDeleteKey(DEVICEMAP) failed: {status:#x}");
            }
            key.close();
        }
        Err(status) => log!(Warning, "DEVICEMAP key not found: {status:#x}"),
    }
}

/// Writes one device's counters to `<service>\Statistics` (volatile). PASSIVE_LEVEL.
pub fn write_statistics(state: &DriverState, index: u32, stats: &Stats) {
    let mut path = PathBuf::new();
    if !path.push_unicode(&state.registry_path.as_unicode_string()) || !path.push_str("\\Statistics") {
        return;
    }
    let key = match Key::create(&path, true) {
        Ok(key) => key,
        Err(status) => {
            log!(Warning, "statistics key: {status:#x}");
            return;
        }
    };
    let name = Name::indexed("StageDrv", index);
    // SAFETY: Stats is repr(C) plain data; viewing it as bytes is sound.
    let bytes = unsafe { core::slice::from_raw_parts(core::ptr::from_ref(stats).cast::<u8>(), size_of::<Stats>()) };
    if let Err(status) = key.set(&name, REG_BINARY, bytes) {
        log!(Warning, "statistics value: {status:#x}");
    }
    key.close();
}
