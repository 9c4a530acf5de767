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
}
