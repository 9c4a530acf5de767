//! The driver-wide state: what DriverEntry acquires and Unload releases, in one pool
//! block (tag "SdDs"). Every device extension references its [`DriverContext`] part,
//! which is how DriverUnload finds the block; it is freed last, after the devices are
//! deleted. DriverEntry (`driver.rs`) builds it; Unload (`unload.rs`) takes it apart.

use core::cell::Cell;

use crate::consumer;
use crate::context::DriverContext;
use crate::device::{DeviceExtension, DriverDevices, MAX_DEVICES};
use crate::hardware::HardwareResources;
use crate::kernel::device::{DeviceTable, Devices, OwnedDevice};
use crate::kernel::thread::{SystemThread, ThreadRoutine};

/// Everything the driver holds between DriverEntry and Unload.
pub struct DriverResources {
    /// The part the devices see.
    pub context: DriverContext,
    devices: DriverDevices,
    /// The consumer thread (`consumer.rs`).
    pub thread: Cell<Option<SystemThread>>,
    pub hardware: HardwareResources,
}

impl DriverResources {
    /// The state with no device, thread or hardware yet.
    pub const fn new(context: DriverContext) -> Self {
        Self { context, devices: DeviceTable::new(), thread: Cell::new(None), hardware: HardwareResources::new() }
    }

    /// The device table, for routines that walk the devices.
    pub fn device_table(&self) -> &DriverDevices {
        &self.devices
    }

    /// Every created device, in index order, borrowed from the returned guard.
    pub fn devices(&self) -> Devices<'_, DeviceExtension, MAX_DEVICES> {
        self.devices.borrow()
    }

    /// Takes the devices back to delete them (no device may be borrowed).
    pub fn take_devices(&self) -> impl Iterator<Item = OwnedDevice<DeviceExtension>> + '_ {
        self.devices.take_all()
    }
}

/// The consumer thread runs on the driver-wide state (`consumer.rs` says what it does).
impl ThreadRoutine for DriverResources {
    fn run(&'static self) {
        consumer::run(&self.context, &self.devices);
    }

    fn request_exit(&self) {
        consumer::request_exit(&self.context);
    }
}
