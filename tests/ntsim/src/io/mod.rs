//! The I/O manager: drivers, devices and links, file objects and handles, IRPs and
//! their cancellation, and the user-mode-like client API tests drive it with.

pub mod client;
pub(crate) mod device;
pub mod driver;
pub(crate) mod file;
pub(crate) mod irp;
pub mod kernel;

use std::collections::HashMap;

/// The I/O manager's part of the machine state.
#[derive(Default)]
pub(crate) struct Io {
    pub(crate) drivers: HashMap<usize, driver::DriverInfo>,
    pub(crate) devices: HashMap<usize, device::DeviceInfo>,
    pub(crate) files: HashMap<usize, file::FileInfo>,
    pub(crate) irps: irp::Irps,
    pub(crate) processes: Vec<client::ProcessInfo>,
    /// Client threads that are exiting (their synchronous waits are interrupted).
    pub(crate) exiting: std::collections::HashSet<crate::sched::Tid>,
    /// Issue numbers of IRPs a thread exit gave up on (IopDisassociateThreadIrp).
    pub(crate) disassociated: std::collections::HashSet<u64>,
    pub(crate) error_log: Vec<ErrorLogEntry>,
}

/// An entry the I/O manager wrote to the system event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorLogEntry {
    /// The IO_* error code, e.g. IO_DRIVER_CANCEL_TIMEOUT.
    pub code: crate::wdk_sys::NTSTATUS,
    /// The device object the entry names.
    pub device: usize,
}

impl crate::machine::Machine {
    /// The I/O manager's error-log entries so far, oldest first.
    pub fn error_log(&self) -> Vec<ErrorLogEntry> {
        self.lock().io.error_log.clone()
    }
}
