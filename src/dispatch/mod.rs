//! IRP dispatch routines. Each routine validates, then completes the IRP now or hands
//! it to the queue; the types make every path complete each IRP exactly once
//! ([`crate::kernel::irp`]).

mod cleanup;
mod close;
mod create;
mod ioctl;
pub mod read;

use crate::device::DeviceExtension;
use crate::kernel::irp::{DispatchRoutine, Dispatched, Irp, dispatch_routine};
use crate::kernel::sys::{
    DRIVER_OBJECT, IRP_MJ_CLEANUP, IRP_MJ_CLOSE, IRP_MJ_CREATE, IRP_MJ_DEVICE_CONTROL, IRP_MJ_READ, PDRIVER_DISPATCH,
};

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
pub fn install(driver: &mut DRIVER_OBJECT) {
    // SAFETY: this driver's only device objects are made by `Device::create`, which
    // initialises a DeviceExtension in each and sets DO_BUFFERED_IO before clearing
    // DO_DEVICE_INITIALIZING; the extension lives until IoDeleteDevice.
    let routines: [(u32, PDRIVER_DISPATCH); 5] = unsafe {
        [
            (IRP_MJ_CREATE, dispatch_routine::<Create>()),
            (IRP_MJ_READ, dispatch_routine::<Read>()),
            (IRP_MJ_DEVICE_CONTROL, dispatch_routine::<DeviceControl>()),
            (IRP_MJ_CLEANUP, dispatch_routine::<Cleanup>()),
            (IRP_MJ_CLOSE, dispatch_routine::<Close>()),
        ]
    };
    for (major, routine) in routines {
        if let Some(slot) = driver.MajorFunction.get_mut(major as usize) {
            *slot = routine;
        }
    }
}
