//! IRP dispatch routines. Each routine validates, then completes the IRP now or hands
//! it to the queue; the types make every path complete each IRP exactly once
//! ([`crate::kernel::irp`]).

mod cleanup;
mod close;
mod create;
mod ioctl;
pub mod read;

use crate::device::DeviceExtension;
use crate::kernel::driver::DriverObject;
use crate::kernel::irp::{DispatchRoutine, Dispatched, Irp};
use crate::kernel::sys::{IRP_MJ_CLEANUP, IRP_MJ_CLOSE, IRP_MJ_CREATE, IRP_MJ_DEVICE_CONTROL, IRP_MJ_READ};

/// Declares a unit type per routine that the dispatch adapter calls.
macro_rules! routines {
    ($($name:ident => $function:path),* $(,)?) => {
        $(
            struct $name;
            impl DispatchRoutine for $name {
                type Extension = DeviceExtension;
                fn dispatch(extension: &DeviceExtension, irp: Irp) -> Dispatched {
                    $function(extension, irp)
                }
            }
        )*
    };
}

routines! {
    Create => create::create,
    Read => read::read,
    DeviceControl => ioctl::device_control,
    Cleanup => cleanup::cleanup,
    Close => close::close,
}

/// Points the driver object's major-function table at this driver's routines.
/// Majors left alone keep the I/O manager's default (STATUS_INVALID_DEVICE_REQUEST).
pub fn install(driver: &mut DriverObject<DeviceExtension>) {
    driver.set_dispatch::<Create>(IRP_MJ_CREATE);
    driver.set_dispatch::<Read>(IRP_MJ_READ);
    driver.set_dispatch::<DeviceControl>(IRP_MJ_DEVICE_CONTROL);
    driver.set_dispatch::<Cleanup>(IRP_MJ_CLEANUP);
    driver.set_dispatch::<Close>(IRP_MJ_CLOSE);
}
