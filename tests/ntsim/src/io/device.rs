//! Device objects and symbolic links in the object namespace.

use crate::checker::{Violation, c9, code, ntsim_rule};
use crate::machine::{Ctx, KResult, kcall};
use crate::ob::{Kind, Named};
use crate::special_pool::{self, Block};
use crate::wdk_sys::{
    BOOLEAN, DEVICE_OBJECT, DO_DEVICE_INITIALIZING, DO_EXCLUSIVE, NTSTATUS, PDEVICE_OBJECT, PDRIVER_DISPATCH,
    PDRIVER_OBJECT, PUNICODE_STRING, STATUS_INSUFFICIENT_RESOURCES, STATUS_OBJECT_NAME_COLLISION,
    STATUS_OBJECT_NAME_INVALID, STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS, ULONG,
};

pub(crate) struct DeviceInfo {
    pub(crate) driver: usize,
    pub(crate) name: Option<String>,
    /// IoDeleteDevice was called (DOE_DELETE_PENDING); the memory goes with the last
    /// object reference.
    pub(crate) deleted: bool,
    /// Opens not yet closed: `DEVICE_OBJECT.ReferenceCount`, raised before IRP_MJ_CREATE
    /// and lowered after IRP_MJ_CLOSE (or a failed CREATE). Only this defers
    /// DriverUnload; object references (a queued work item's) do not.
    pub(crate) open_count: u32,
    /// Creation order, for deterministic iteration.
    pub(crate) seq: u64,
    /// The DACL: IoCreateDevice's default for a named device, or the one applied with
    /// ZwSetSecurityObject; `None` is no (or a NULL) DACL, which grants everything.
    pub(crate) dacl: Option<Vec<crate::se::Ace>>,
    /// The device object with its extension right after it, in one special-pool block
    /// (no-access once freed).
    memory: Block,
}

/// Reads a counted UTF-16 string.
///
/// # Safety
/// `s` is NULL or points to a valid UNICODE_STRING.
pub(crate) unsafe fn read_unicode(s: PUNICODE_STRING) -> Option<String> {
    if s.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller.
    let (len, buffer) = unsafe { ((*s).Length as usize / 2, (*s).Buffer) };
    if buffer.is_null() {
        return Some(String::new());
    }
    // SAFETY: a valid UNICODE_STRING has Length bytes at Buffer.
    let units = unsafe { std::slice::from_raw_parts(buffer, len) };
    Some(String::from_utf16_lossy(units))
}

/// The namespace key of a full object name: case-insensitive, `\DosDevices\` is `\??\`.
pub(crate) fn name_key(name: &str) -> String {
    let upper = name.to_uppercase();
    match upper.strip_prefix("\\DOSDEVICES\\") {
        Some(rest) => format!("\\??\\{rest}"),
        None => upper,
    }
}

pub(crate) fn dispatch_routine(ctx: &Ctx<'_>, device: usize, major: u8) -> PDRIVER_DISPATCH {
    let driver = ctx.io.devices.get(&device).map_or(0, |d| d.driver);
    if driver == 0 {
        return None;
    }
    // SAFETY: the driver object outlives its devices.
    unsafe { (*(driver as PDRIVER_OBJECT)).MajorFunction[usize::from(major)] }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoCreateDevice(
    DriverObject: PDRIVER_OBJECT,
    DeviceExtensionSize: ULONG,
    DeviceName: PUNICODE_STRING,
    DeviceType: ULONG,
    DeviceCharacteristics: ULONG,
    Exclusive: BOOLEAN,
    DeviceObject: *mut PDEVICE_OBJECT,
) -> NTSTATUS {
    kcall("IoCreateDevice", |ctx| {
        if ctx.should_fail() {
            return Ok(STATUS_INSUFFICIENT_RESOURCES);
        }
        // SAFETY: the driver passed NULL or a valid name.
        let name = unsafe { read_unicode(DeviceName) };
        if let Some(name) = &name {
            if !name.starts_with('\\') {
                return Ok(STATUS_OBJECT_NAME_INVALID);
            }
            if ctx.ob.names.contains_key(&name_key(name)) {
                return Ok(STATUS_OBJECT_NAME_COLLISION);
            }
        }
        // One allocation, device object then extension, as IoCreateDevice makes it.
        let object_size = size_of::<DEVICE_OBJECT>().next_multiple_of(16);
        let memory = Block::new(object_size + DeviceExtensionSize as usize, special_pool::Kind::DeviceObject);
        let address = memory.address();
        // SAFETY: a fresh zeroed block, large enough; DEVICE_OBJECT is plain data for
        // which all-zero is its initial state.
        #[allow(clippy::cast_ptr_alignment, reason = "special pool blocks are 16-byte aligned")]
        let object = unsafe { &mut *memory.as_ptr().cast::<DEVICE_OBJECT>() };
        object.Type = 3;
        object.Size =
            u16::try_from(size_of::<DEVICE_OBJECT>()).expect("small") + u16::try_from(DeviceExtensionSize).unwrap_or(0);
        object.ReferenceCount = 0;
        object.DriverObject = DriverObject;
        // SAFETY: the driver object is valid.
        object.NextDevice = unsafe { (*DriverObject).DeviceObject };
        object.DeviceExtension =
            // SAFETY: the extension's bytes follow the device object in the block.
            if DeviceExtensionSize == 0 { std::ptr::null_mut() } else { unsafe { memory.as_ptr().add(object_size) }.cast() };
        object.DeviceType = DeviceType;
        object.Characteristics = DeviceCharacteristics;
        object.Flags = DO_DEVICE_INITIALIZING | if Exclusive != 0 { DO_EXCLUSIVE } else { 0 };
        object.StackSize = 1;
        // SAFETY: as above; link the new device at the head of the driver's list.
        unsafe { (*DriverObject).DeviceObject = address as PDEVICE_OBJECT };
        if let Some(name) = &name {
            ctx.ob.names.insert(name_key(name), Named::Device(address));
        }
        ctx.ob.insert(address, Kind::Device, 1);
        let seq = ctx.io.devices.len() as u64 + ctx.io.irps.issued_total;
        // A named device gets the system's default descriptor for its type; an unnamed one
        // has no DACL (IoCreateDevice documentation).
        let dacl = name.as_ref().map(|_| crate::se::default_dacl(DeviceType, DeviceCharacteristics));
        ctx.io.devices.insert(
            address,
            DeviceInfo { driver: DriverObject as usize, name, deleted: false, open_count: 0, seq, dacl, memory },
        );
        // SAFETY: the driver passed a writable pointer.
        unsafe { *DeviceObject = address as PDEVICE_OBJECT };
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::IoCreateDevice = IoCreateDevice;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoDeleteDevice(DeviceObject: PDEVICE_OBJECT) {
    kcall("IoDeleteDevice", |ctx| {
        let address = DeviceObject as usize;
        let (name, driver) = match ctx.io.devices.get(&address) {
            Some(d) if !d.deleted => (d.name.clone(), d.driver),
            _ => {
                return Err(ctx.violation(Violation::new(
                    code::DRIVER_VERIFIER_IOMANAGER_VIOLATION,
                    // WDM DRIVER ERROR layout [code, driver address (unknown: 0), IRP (none), device].
                    [c9::DEVICE_DELETED_TWICE, 0, 0, address as u64],
                    "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
                    format!("IoDeleteDevice on {address:#x}, which is not a live device object (deleted twice?)."),
                )));
            }
        };
        if let Some(name) = &name {
            let key = name_key(name);
            let links: Vec<String> = ctx
                .ob
                .names
                .iter()
                .filter(|(_, n)| matches!(n, Named::Link(target) if name_key(target) == key))
                .map(|(link, _)| link.clone())
                .collect();
            if let Some(link) = links.into_iter().min() {
                return Err(ctx.violation(Violation::new(
                    code::NTSIM_RULE,
                    [ntsim_rule::LINK_TO_DELETED_DEVICE, address as u64, 0, 0],
                    "NTSIM_LINK_TO_DELETED_DEVICE",
                    format!("IoDeleteDevice({name}) while the symbolic link {link} still points to it: delete the link first (Unload stage 3 comes before deleting device objects)."),
                )));
            }
            ctx.ob.names.remove(&key);
        }
        // IoDeleteDevice removes a started IoTimer itself (ReactOS IoDeleteDevice →
        // IopRemoveTimerFromTimerList, which takes IopTimerLock).
        crate::ke::timer::remove_io_timer(ctx, address)?;
        // While opens remain the device stays on the driver's list, delete-pending
        // (ReactOS IoDeleteDevice: IopUnloadDevice only once ReferenceCount is 0).
        if ctx.io.devices[&address].open_count == 0 {
            unlink(driver, address);
        }
        ctx.io.devices.get_mut(&address).expect("checked").deleted = true;
        crate::ob::dereference(ctx, address)?;
        Ok(())
    });
}
const _: crate::wdk_sys::fnsig::IoDeleteDevice = IoDeleteDevice;

/// Removes `device` from `DriverObject->DeviceObject` (IopEditDeviceList).
fn unlink(driver: usize, device: usize) {
    // SAFETY: the driver object and its device list are valid.
    unsafe {
        let mut link: *mut PDEVICE_OBJECT = &raw mut (*(driver as PDRIVER_OBJECT)).DeviceObject;
        while !(*link).is_null() {
            if *link as usize == device {
                *link = (*(device as PDEVICE_OBJECT)).NextDevice;
                break;
            }
            link = &raw mut (**link).NextDevice;
        }
    }
}

fn set_reference_count(device: usize, count: u32) {
    // SAFETY: a live device object of this machine; the I/O manager owns the field.
    unsafe { (*(device as PDEVICE_OBJECT)).ReferenceCount = i32::try_from(count).unwrap_or(i32::MAX) };
}

/// An open is about to send IRP_MJ_CREATE: `ReferenceCount` + 1 (ReactOS
/// IopParseDevice / IopCheckDeviceAndDriver).
pub(crate) fn add_open(ctx: &mut Ctx<'_>, device: usize) {
    if let Some(info) = ctx.io.devices.get_mut(&device) {
        info.open_count += 1;
        set_reference_count(device, info.open_count);
    }
}

/// IRP_MJ_CLOSE was sent (or the CREATE failed): `ReferenceCount` − 1. At zero a
/// delete-pending device leaves its driver's list, and a pending unload may run
/// (ReactOS IopDereferenceDeviceObject → IopUnloadDevice).
pub(crate) fn drop_open(ctx: &mut Ctx<'_>, device: usize) {
    let Some(info) = ctx.io.devices.get_mut(&device) else { return };
    info.open_count -= 1;
    let (count, deleted, driver) = (info.open_count, info.deleted, info.driver);
    set_reference_count(device, count);
    if count == 0 {
        if deleted {
            unlink(driver, device);
        }
        crate::io::driver::maybe_finish_unload(ctx);
    }
}

/// The device object's last reference is gone: its memory is freed.
pub(crate) fn last_reference(ctx: &mut Ctx<'_>, address: usize) -> KResult<()> {
    let mut driver = None;
    if let Some(info) = ctx.io.devices.get(&address).filter(|d| d.deleted) {
        // The extension goes with the device object: Verifier checks the block for
        // live timers and DPCs as for any pool free.
        let api = ctx.api;
        crate::pool::check_timers_and_dpcs(ctx, info.memory.address(), info.memory.size(), api)?;
        let info = ctx.io.devices.remove(&address).expect("found");
        driver = Some(info.driver);
        drop(info);
    }
    match driver {
        Some(driver) => crate::io::driver::maybe_rundown(ctx, driver),
        None => Ok(()),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoCreateSymbolicLink(
    SymbolicLinkName: PUNICODE_STRING,
    DeviceName: PUNICODE_STRING,
) -> NTSTATUS {
    kcall("IoCreateSymbolicLink", |ctx| {
        if ctx.should_fail() {
            return Ok(STATUS_INSUFFICIENT_RESOURCES);
        }
        // SAFETY: the driver passed valid names.
        let (Some(link), Some(target)) =
            (unsafe { read_unicode(SymbolicLinkName) }, unsafe { read_unicode(DeviceName) })
        else {
            return Ok(STATUS_OBJECT_NAME_INVALID);
        };
        let key = name_key(&link);
        if ctx.ob.names.contains_key(&key) {
            return Ok(STATUS_OBJECT_NAME_COLLISION);
        }
        ctx.ob.names.insert(key, Named::Link(target));
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::IoCreateSymbolicLink = IoCreateSymbolicLink;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoDeleteSymbolicLink(SymbolicLinkName: PUNICODE_STRING) -> NTSTATUS {
    kcall("IoDeleteSymbolicLink", |ctx| {
        // SAFETY: the driver passed a valid name.
        let Some(link) = (unsafe { read_unicode(SymbolicLinkName) }) else { return Ok(STATUS_OBJECT_NAME_INVALID) };
        let key = name_key(&link);
        match ctx.ob.names.get(&key) {
            Some(Named::Link(_)) => {
                ctx.ob.names.remove(&key);
                Ok(STATUS_SUCCESS)
            }
            _ => Ok(STATUS_OBJECT_NAME_NOT_FOUND),
        }
    })
}
const _: crate::wdk_sys::fnsig::IoDeleteSymbolicLink = IoDeleteSymbolicLink;

/// Resolves `\??\NAME\rest` through links to a device; returns it and the remainder.
pub(crate) fn resolve(ctx: &Ctx<'_>, path: &str) -> Option<(usize, String)> {
    let key = name_key(path);
    // Longest prefix that names something.
    let mut cut = key.len();
    loop {
        let prefix = &key[..cut];
        match ctx.ob.names.get(prefix) {
            Some(Named::Device(device)) => return Some((*device, path[cut..].to_owned())),
            Some(Named::Link(target)) => {
                let target = format!("{target}{}", &path[cut..]);
                return resolve(ctx, &target);
            }
            None => {}
        }
        cut = prefix.rfind('\\')?;
        if cut == 0 {
            return None;
        }
    }
}
