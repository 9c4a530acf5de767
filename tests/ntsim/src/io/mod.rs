//! The I/O manager: drivers, devices and links, file objects and handles, IRPs and
//! their cancellation, and the user-mode-like client API tests drive it with.

pub mod client;
pub(crate) mod device;
pub mod driver;
pub(crate) mod file;
pub(crate) mod irp;
pub mod kernel;

use std::collections::HashMap;

/// Objects the I/O manager freed are kept for a while (like completed IRPs), so a
/// driver's use after free reads stale memory rather than crashing the host.
pub(crate) fn quarantine(ctx: &mut crate::machine::Ctx<'_>, object: Box<dyn std::any::Any>) {
    const KEEP: usize = 1024;
    ctx.io.quarantine.push_back(object);
    if ctx.io.quarantine.len() > KEEP {
        ctx.io.quarantine.pop_front();
    }
}

/// The I/O manager's part of the machine state.
#[derive(Default)]
pub(crate) struct Io {
    pub(crate) drivers: HashMap<usize, driver::DriverInfo>,
    pub(crate) devices: HashMap<usize, device::DeviceInfo>,
    pub(crate) files: HashMap<usize, file::FileInfo>,
    pub(crate) irps: irp::Irps,
    pub(crate) processes: Vec<client::ProcessInfo>,
    pub(crate) quarantine: std::collections::VecDeque<Box<dyn std::any::Any>>,
}
