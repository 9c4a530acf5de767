//! Raw (bus-relative) resources to translated (system) ones, the way an NT4-style
//! legacy driver obtains them: HalGetInterruptVector for the interrupt and
//! HalTranslateBusAddress for the register window ("Getting a System-assigned Interrupt
//! Vector, DIRQL, and Processor Mask", NT4 DDK). The claim keeps the raw values; the
//! connection and the mapping take these.
//!
//! Where the kernel does not export the routines, or they give no usable vector (what
//! a legacy driver should expect on x64 Windows 10/11, whose interrupts come from the
//! PnP arbiters), the hardware profile is refused with STATUS_NOT_SUPPORTED.

use crate::config::HardwareProfile;
use crate::kernel::error::{NtError, NtResult};
use crate::kernel::hal::Hal;
use crate::kernel::irql;
use crate::kernel::sys::{_INTERFACE_TYPE::Internal, DISPATCH_LEVEL, INTERFACE_TYPE, KAFFINITY, KIRQL, ULONG};

/// The bus the device sits on: the system bus, number 0.
pub const BUS: INTERFACE_TYPE = Internal;
pub const BUS_NUMBER: ULONG = 0;

/// What IoConnectInterrupt and MmMapIoSpace take.
#[derive(Clone, Copy)]
pub struct Translated {
    pub vector: ULONG,
    pub irql: KIRQL,
    pub affinity: KAFFINITY,
    pub registers: u64,
}

/// The translated resources for `profile`, or STATUS_NOT_SUPPORTED with one error line.
/// PASSIVE_LEVEL (HalGetInterruptVector's rule).
pub fn translate(profile: &HardwareProfile) -> NtResult<Translated> {
    irql::assert_passive();
    let hal = Hal::find().ok_or_else(|| {
        log!(
            Error,
            "hardware profile refused: the kernel exports no HalGetInterruptVector or HalTranslateBusAddress, so legacy resources cannot be translated"
        );
        NtError::NOT_SUPPORTED
    })?;
    let Some(registers) = hal.translate_memory_address(BUS, BUS_NUMBER, profile.register_base) else {
        log!(
            Error,
            "hardware profile refused: HalTranslateBusAddress gives no memory address for bus address {:#x}",
            profile.register_base
        );
        return Err(NtError::NOT_SUPPORTED);
    };
    let system = hal.interrupt_vector(BUS, BUS_NUMBER, profile.level, profile.vector);
    let (vector, irql, affinity) = (system.vector, system.irql, system.affinity);
    if vector == 0 || u32::from(irql) <= DISPATCH_LEVEL || affinity == 0 {
        log!(
            Error,
            "hardware profile refused: HalGetInterruptVector gives no usable vector for bus level {} vector {} (vector {vector:#x}, IRQL {irql}, affinity {affinity:#x})",
            profile.level,
            profile.vector
        );
        return Err(NtError::NOT_SUPPORTED);
    }
    Ok(Translated { vector, irql, affinity, registers })
}
