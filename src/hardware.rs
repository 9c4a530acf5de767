//! The hardware profile: a register window (MmMapIoSpace), an interrupt connected
//! with IoConnectInterrupt whose ISR queues a CustomDpc, resources claimed with
//! IoReportResourceForDetection, and a controller object shared by the devices whose
//! extension holds the interrupt object. Only used when `Parameters` describes an
//! interrupt; the default profile touches none of it.

use crate::driver::DriverState;
use crate::sys::{DRIVER_OBJECT, NTSTATUS, STATUS_NOT_SUPPORTED};

/// What the hardware profile acquired (nothing in the default profile).
pub struct Hardware {}

impl Hardware {
    pub const fn new() -> Self {
        Self {}
    }
}

/// Controller, register mapping and resource claim.
pub fn claim(_driver: &mut DRIVER_OBJECT, state: &DriverState) -> Result<(), NTSTATUS> {
    if state.config.hardware.is_some() {
        log!(Error, "hardware profile: not available in this build");
        return Err(STATUS_NOT_SUPPORTED);
    }
    Ok(())
}

pub fn connect(_state: &DriverState) -> Result<(), NTSTATUS> {
    Ok(())
}

pub fn disconnect(_state: &DriverState) {}

pub fn remove_queued_dpc(_state: &DriverState) {}

pub fn unmap_registers(_state: &DriverState) {}

pub fn forget_interrupt(_state: &DriverState) {}

pub fn release_claim(_state: &DriverState) {}

pub fn delete_controller(_state: &DriverState) {}
