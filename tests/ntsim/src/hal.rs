//! The HAL routines an NT4-style legacy driver uses to turn the bus-relative (raw)
//! resources it claims into the system (translated) ones it connects and maps:
//! HalGetInterruptVector and HalTranslateBusAddress. They are exported for
//! MmGetSystemRoutineAddress only (ntsim's wdk-sys bindings have no
//! HalGetInterruptVector: it is declared only without NO_LEGACY_DRIVERS), and
//! `Config::missing_exports` can report them absent, as a kernel without them would.
//!
//! ntsim's machine has one system bus (Internal or Isa, bus 0) with an interrupt
//! controller of [`LINES`] inputs and a memory space that appears at
//! [`BUS_MEMORY_OFFSET`] above the bus address in system physical space.

use crate::machine::kcall;
use crate::wdk_sys::_INTERFACE_TYPE::{Internal, Isa};
use crate::wdk_sys::{
    BOOLEAN, INTERFACE_TYPE, KAFFINITY, PHYSICAL_ADDRESS, PKAFFINITY, PKIRQL, PPHYSICAL_ADDRESS, PULONG, PVOID, ULONG,
};

/// Interrupt controller inputs (bus interrupt levels 0..LINES). ReactOS's root bus
/// handler refuses levels above 23, its I/O APIC's last input (hal/halx86/legacy/bus/sysbus.c).
pub const LINES: u32 = 24;

/// The system vector of line 0; line `n` gets `FIRST_VECTOR + VECTOR_STRIDE * n`.
/// Windows assigns vectors at boot; ntsim uses a fixed table (lines 0..23 get vectors
/// 0x50..0xAC, IRQL 5..10) so that tests can predict it.
pub const FIRST_VECTOR: u32 = 0x50;
const VECTOR_STRIDE: u32 = 4;

/// Where the bus's memory space appears in system physical space. On x86 PCs the HAL
/// translates memory addresses one to one (ReactOS hal/halx86/acpi/busemul.c); on other
/// platforms a bus window sits elsewhere in system space, which is the case the NT4 DDK
/// gives HalTranslateBusAddress for. ntsim puts it elsewhere so that a driver using a
/// raw address where a translated one belongs is caught.
pub const BUS_MEMORY_OFFSET: u64 = 0x8_0000_0000;

/// The system vector line `line` is routed to, if the controller has that input.
pub fn vector_of_line(line: u32) -> Option<u32> {
    (line < LINES).then(|| FIRST_VECTOR + VECTOR_STRIDE * line)
}

/// The IRQL of a system vector on x64: the processor masks interrupts by CR8, which
/// holds the IRQL and is compared with the vector's priority class, its upper four
/// bits (Intel SDM vol. 3, "Task Priority in IA-32e Mode").
pub fn irql_of_vector(vector: u32) -> u8 {
    u8::try_from(vector >> 4).unwrap_or(u8::MAX)
}

/// The system physical address of bus address `bus` (memory space).
pub fn system_address(bus: u64) -> u64 {
    bus + BUS_MEMORY_OFFSET
}

fn is_system_bus(interface: INTERFACE_TYPE, bus: ULONG) -> bool {
    (interface == Internal || interface == Isa) && bus == 0
}

/// `HalGetInterruptVector` (NT4 DDK, "HalGetInterruptVector"): the system vector, DIRQL
/// and affinity for a bus-relative interrupt level and vector, to be passed unchanged to
/// IoConnectInterrupt. 0 means no vector: an unknown bus, or a level the controller
/// does not have. Irql and Affinity are zeroed first, as ReactOS's
/// hal/halx86/legacy/bussupp.c does. The bus-relative vector is ignored on the system
/// bus (ReactOS's HalpGetRootInterruptVector ignores it too). PASSIVE_LEVEL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn HalGetInterruptVector(
    InterfaceType: INTERFACE_TYPE,
    BusNumber: ULONG,
    BusInterruptLevel: ULONG,
    _BusInterruptVector: ULONG,
    Irql: PKIRQL,
    Affinity: PKAFFINITY,
) -> ULONG {
    kcall("HalGetInterruptVector", |ctx| {
        // SAFETY: the driver passed writable out-parameters.
        unsafe {
            *Irql = 0;
            *Affinity = 0;
        }
        let vector = is_system_bus(InterfaceType, BusNumber).then(|| vector_of_line(BusInterruptLevel)).flatten();
        let Some(vector) = vector else { return Ok(0) };
        // Every processor, as ReactOS's HalpDefaultInterruptAffinity.
        let all: KAFFINITY = (1 << ctx.cpus.len()) - 1;
        // SAFETY: as above.
        unsafe {
            *Irql = irql_of_vector(vector);
            *Affinity = all;
        }
        Ok(vector)
    })
}

/// The signature of [`HalGetInterruptVector`], for drivers that look it up.
pub type HalGetInterruptVectorFn =
    unsafe extern "C" fn(INTERFACE_TYPE, ULONG, ULONG, ULONG, PKIRQL, PKAFFINITY) -> ULONG;
const _: HalGetInterruptVectorFn = HalGetInterruptVector;

/// `HalTranslateBusAddress` (NT4 DDK, "HalTranslateBusAddress"): the system address of a
/// bus-relative one, and the space it is in (0 memory, 1 I/O ports); a memory result is
/// what MmMapIoSpace takes. FALSE for an address outside every range the bus decodes
/// (ReactOS hal/halx86/legacy/bus/sysbus.c, HalpTranslateSystemBusAddress): ntsim's bus
/// decodes only the register windows a test added, and has no I/O port space.
/// IRQL <= DISPATCH_LEVEL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn HalTranslateBusAddress(
    InterfaceType: INTERFACE_TYPE,
    BusNumber: ULONG,
    BusAddress: PHYSICAL_ADDRESS,
    AddressSpace: PULONG,
    TranslatedAddress: PPHYSICAL_ADDRESS,
) -> BOOLEAN {
    kcall("HalTranslateBusAddress", |ctx| {
        // SAFETY: PHYSICAL_ADDRESS is a plain 64-bit union.
        let bus = unsafe { BusAddress.QuadPart } as u64;
        // SAFETY: the driver passed an initialised, writable AddressSpace.
        let space = unsafe { *AddressSpace };
        if !is_system_bus(InterfaceType, BusNumber) || space != 0 || !ctx.ke.interrupts.decodes(bus) {
            return Ok(0);
        }
        // SAFETY: the driver passed writable out-parameters.
        unsafe {
            (*TranslatedAddress).QuadPart = system_address(bus) as i64;
            *AddressSpace = 0;
        }
        Ok(1)
    })
}
const _: crate::wdk_sys::fnsig::HalTranslateBusAddress = HalTranslateBusAddress;

/// The HAL routines MmGetSystemRoutineAddress finds (it resolves kernel and HAL
/// exports, per its documentation).
pub(crate) fn routine_address(name: &str) -> Option<PVOID> {
    Some(match name {
        "HalGetInterruptVector" => HalGetInterruptVector as *const () as PVOID,
        "HalTranslateBusAddress" => HalTranslateBusAddress as *const () as PVOID,
        _ => return None,
    })
}
