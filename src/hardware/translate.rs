//! Raw (bus-relative) resources to translated (system) ones, the way an NT4-style
//! legacy driver obtains them: HalGetInterruptVector for the interrupt and
//! HalTranslateBusAddress for the register window ("Getting a System-assigned Interrupt
//! Vector, DIRQL, and Processor Mask", NT4 DDK). The claim keeps the raw values; the
//! connection and the mapping take these.
//!
//! Both routines are looked up with MmGetSystemRoutineAddress, never imported by name,
//! so the image loads on a kernel that lacks them. There, or where they give no usable
//! vector (what a legacy driver should expect on x64 Windows 10/11, whose interrupts
//! come from the PnP arbiters), the hardware profile is refused with
//! STATUS_NOT_SUPPORTED.

use crate::config::Hardware as Raw;
use crate::kernel::name::Name;
use crate::kernel::sys::{
    _INTERFACE_TYPE::Internal, BOOLEAN, DISPATCH_LEVEL, INTERFACE_TYPE, KAFFINITY, KIRQL, MmGetSystemRoutineAddress,
    NTSTATUS, PHYSICAL_ADDRESS, PKAFFINITY, PKIRQL, PPHYSICAL_ADDRESS, PULONG, PVOID, STATUS_NOT_SUPPORTED, ULONG,
};

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

/// `HalGetInterruptVector` (ntddk.h, declared only without NO_LEGACY_DRIVERS).
type GetInterruptVector = unsafe extern "C" fn(INTERFACE_TYPE, ULONG, ULONG, ULONG, PKIRQL, PKAFFINITY) -> ULONG;
/// `HalTranslateBusAddress` (ntddk.h).
type TranslateBusAddress =
    unsafe extern "C" fn(INTERFACE_TYPE, ULONG, PHYSICAL_ADDRESS, PULONG, PPHYSICAL_ADDRESS) -> BOOLEAN;

/// AddressSpace 0: memory space (1 would be I/O ports, which this device has none of).
const MEMORY_SPACE: ULONG = 0;

fn lookup(name: &str) -> PVOID {
    let name = Name::from_ascii(name);
    let mut unicode = name.as_unicode_string();
    // SAFETY: PASSIVE_LEVEL (DriverEntry); the name lives across the call.
    unsafe { MmGetSystemRoutineAddress(&raw mut unicode) }
}

/// The translated resources for `raw`, or STATUS_NOT_SUPPORTED with one error line.
/// PASSIVE_LEVEL (HalGetInterruptVector's rule).
pub fn translate(raw: &Raw) -> Result<Translated, NTSTATUS> {
    let (get_vector, translate_address) = (lookup("HalGetInterruptVector"), lookup("HalTranslateBusAddress"));
    if get_vector.is_null() || translate_address.is_null() {
        log!(
            Error,
            "hardware profile refused: the kernel exports no HalGetInterruptVector or HalTranslateBusAddress, so legacy resources cannot be translated"
        );
        return Err(STATUS_NOT_SUPPORTED);
    }
    // SAFETY: the address MmGetSystemRoutineAddress returned for HalTranslateBusAddress,
    // which has this signature.
    let translate_address = unsafe { core::mem::transmute::<PVOID, TranslateBusAddress>(translate_address) };
    // SAFETY: as above, for HalGetInterruptVector.
    let get_vector = unsafe { core::mem::transmute::<PVOID, GetInterruptVector>(get_vector) };

    let bus_address = PHYSICAL_ADDRESS { QuadPart: raw.register_base as i64 };
    let mut space = MEMORY_SPACE;
    let mut system = PHYSICAL_ADDRESS { QuadPart: 0 };
    // SAFETY: PASSIVE_LEVEL; valid in/out parameters.
    let translated = unsafe { translate_address(BUS, BUS_NUMBER, bus_address, &raw mut space, &raw mut system) };
    if translated == 0 || space != MEMORY_SPACE {
        log!(
            Error,
            "hardware profile refused: HalTranslateBusAddress gives no memory address for bus address {:#x}",
            raw.register_base
        );
        return Err(STATUS_NOT_SUPPORTED);
    }

    let (mut irql, mut affinity): (KIRQL, KAFFINITY) = (0, 0);
    // SAFETY: PASSIVE_LEVEL; valid out-parameters.
    let vector = unsafe { get_vector(BUS, BUS_NUMBER, raw.level, raw.vector, &raw mut irql, &raw mut affinity) };
    if vector == 0 || u32::from(irql) <= DISPATCH_LEVEL || affinity == 0 {
        log!(
            Error,
            "hardware profile refused: HalGetInterruptVector gives no usable vector for bus level {} vector {} (vector {vector:#x}, IRQL {irql}, affinity {affinity:#x})",
            raw.level,
            raw.vector
        );
        return Err(STATUS_NOT_SUPPORTED);
    }
    // SAFETY: PHYSICAL_ADDRESS is a plain 64-bit union.
    let registers = unsafe { system.QuadPart } as u64;
    Ok(Translated { vector, irql, affinity, registers })
}
