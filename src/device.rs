//! One device object and its extension.

use core::ptr::NonNull;

use crate::link::SymbolicLink;
use crate::name::Name;
use crate::sys::{
    DEVICE_OBJECT, DO_BUFFERED_IO, DO_DEVICE_INITIALIZING, DRIVER_OBJECT, FALSE, FILE_DEVICE_SECURE_OPEN,
    IoCreateDevice, IoDeleteDevice, NTSTATUS, PDEVICE_OBJECT, ULONG, nt_success,
};

/// Custom device types start at 0x8000.
pub const FILE_DEVICE_STAGEDRV: ULONG = 0x8337;

/// Object-manager prefix of every device name.
pub const DEVICE_PREFIX: &str = "\\Device\\StageDrv";

/// State kept in each device object's extension.
pub struct DeviceExtension {
    pub index: u32,
    pub device_name: Name,
    /// Set once DriverEntry created the link; taken by Unload's stage 3.
    pub link: Option<SymbolicLink>,
}

/// A device object this driver created. Deleting it is an explicit call made by the
/// stage that owns it; dropping the handle does nothing.
pub struct Device(NonNull<DEVICE_OBJECT>);

impl Device {
    /// `IoCreateDevice` for `\Device\StageDrv<index>`: buffered I/O, secure open.
    /// PASSIVE_LEVEL.
    pub fn create(driver: &mut DRIVER_OBJECT, index: u32) -> Result<Self, NTSTATUS> {
        let device_name = Name::indexed(DEVICE_PREFIX, index);
        let mut unicode = device_name.as_unicode_string();
        let mut object: PDEVICE_OBJECT = core::ptr::null_mut();
        // The extension is a few hundred bytes.
        #[allow(clippy::cast_possible_truncation)]
        let extension_size = size_of::<DeviceExtension>() as ULONG;
        // SAFETY: every pointer is valid for the call; the name is read, not kept.
        let status = unsafe {
            IoCreateDevice(
                driver,
                extension_size,
                &raw mut unicode,
                FILE_DEVICE_STAGEDRV,
                FILE_DEVICE_SECURE_OPEN,
                FALSE as u8,
                &raw mut object,
            )
        };
        if !nt_success(status) {
            log!(Error, "IoCreateDevice({index}) failed: {status:#x}");
            return Err(status);
        }
        let device = Self(NonNull::new(object).ok_or(status)?);
        // SAFETY: IoCreateDevice succeeded, so the object and its (zeroed) extension of
        // `extension_size` bytes are ours; writing initialises the extension.
        unsafe {
            device.extension_ptr().write(DeviceExtension { index, device_name, link: None });
        }
        // SAFETY: the new object is not visible to I/O yet; Flags is ours to set.
        unsafe { (*device.0.as_ptr()).Flags |= DO_BUFFERED_IO };
        Ok(device)
    }

    /// Wraps a device object of this driver.
    ///
    /// # Safety
    /// `object` must be a live device object created by [`Device::create`].
    pub unsafe fn from_raw(object: PDEVICE_OBJECT) -> Self {
        // The caller guarantees non-NULL.
        Self(NonNull::new(object).expect("device object"))
    }

    pub fn as_raw(&self) -> PDEVICE_OBJECT {
        self.0.as_ptr()
    }

    fn extension_ptr(&self) -> *mut DeviceExtension {
        // SAFETY: the object is live (type invariant).
        unsafe { (*self.0.as_ptr()).DeviceExtension.cast() }
    }

    /// The extension, initialised by [`Device::create`].
    #[allow(clippy::mut_from_ref)]
    pub fn extension(&self) -> &mut DeviceExtension {
        // SAFETY: `create` initialised it; the driver serialises access to fields that
        // change after DriverEntry (the link is only touched by DriverEntry and Unload).
        unsafe { &mut *self.extension_ptr() }
    }

    /// Lets the I/O manager send requests: clears DO_DEVICE_INITIALIZING.
    pub fn finish_initializing(&self) {
        // SAFETY: DriverEntry still owns the object's flags.
        unsafe { (*self.0.as_ptr()).Flags &= !DO_DEVICE_INITIALIZING };
    }

    /// The next device object of the driver, in `DriverObject->DeviceObject` order.
    pub fn next(&self) -> Option<Self> {
        // SAFETY: the object is live; the list only changes in DriverEntry and Unload.
        let next = unsafe { (*self.0.as_ptr()).NextDevice };
        NonNull::new(next).map(Self)
    }

    /// `IoDeleteDevice`. PASSIVE_LEVEL. The extension's contents must already be
    /// released; its storage goes with the object.
    pub fn delete(self) {
        // SAFETY: the extension was initialised in `create`; dropping it in place releases
        // nothing kernel-side (the link was already taken by its stage).
        unsafe { core::ptr::drop_in_place(self.extension_ptr()) };
        // SAFETY: we created the object and nothing else references it anymore.
        unsafe { IoDeleteDevice(self.0.as_ptr()) };
    }
}
