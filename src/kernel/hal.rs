//! The NT4-style HAL routines that translate a legacy device's bus-relative (raw)
//! resources to system ones: HalGetInterruptVector and HalTranslateBusAddress
//! (ntddk.h, declared only without NO_LEGACY_DRIVERS).
//!
//! Both are found with MmGetSystemRoutineAddress, never imported by name, so the image
//! loads on a kernel that lacks them.

use super::irql;
use super::sys::{
    BOOLEAN, INTERFACE_TYPE, KAFFINITY, KIRQL, MmGetSystemRoutineAddress, PHYSICAL_ADDRESS, PKAFFINITY, PKIRQL,
    PPHYSICAL_ADDRESS, PULONG, PVOID, PWCH, ULONG, UNICODE_STRING,
};

type GetInterruptVector = unsafe extern "C" fn(INTERFACE_TYPE, ULONG, ULONG, ULONG, PKIRQL, PKAFFINITY) -> ULONG;
type TranslateBusAddress =
    unsafe extern "C" fn(INTERFACE_TYPE, ULONG, PHYSICAL_ADDRESS, PULONG, PPHYSICAL_ADDRESS) -> BOOLEAN;

/// AddressSpace 0: memory space (1 would be I/O ports).
const MEMORY_SPACE: ULONG = 0;

/// HalGetInterruptVector's answer, unchecked: a vector of 0 means none.
#[derive(Clone, Copy)]
pub struct SystemInterrupt {
    /// The system vector.
    pub vector: u32,
    /// The device IRQL.
    pub irql: KIRQL,
    /// The processors the interrupt may arrive on.
    pub affinity: KAFFINITY,
}

/// The two HAL routines, as this kernel exports them.
pub struct Hal {
    get_interrupt_vector: GetInterruptVector,
    translate_bus_address: TranslateBusAddress,
}

/// Longest routine name looked up here.
const MAX_NAME: usize = 32;

/// MmGetSystemRoutineAddress of an ASCII `name`.
fn system_routine(name: &str) -> PVOID {
    let mut units = [0u16; MAX_NAME];
    let mut length = 0usize;
    for (slot, byte) in units.iter_mut().zip(name.bytes()) {
        *slot = u16::from(byte);
        length = length.saturating_add(1);
    }
    debug_assert!(name.len() <= MAX_NAME && name.is_ascii(), "routine name {name}");
    // At most MAX_NAME units: the byte count fits a USHORT.
    let bytes = (length << 1) as u16;
    let mut unicode = UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: units.as_mut_ptr() as PWCH };
    // SAFETY: PASSIVE_LEVEL; the name lives across the call, which only reads it.
    unsafe { MmGetSystemRoutineAddress(&raw mut unicode) }
}

impl Hal {
    /// Looks both routines up; `None` if this kernel does not export one of them.
    /// PASSIVE_LEVEL.
    #[must_use]
    pub fn find() -> Option<Self> {
        irql::assert_passive();
        let get_interrupt_vector = system_routine("HalGetInterruptVector");
        let translate_bus_address = system_routine("HalTranslateBusAddress");
        if get_interrupt_vector.is_null() || translate_bus_address.is_null() {
            return None;
        }
        // SAFETY: the kernel's address of HalGetInterruptVector, which has this
        // signature (ntddk.h).
        let get_interrupt_vector = unsafe { core::mem::transmute::<PVOID, GetInterruptVector>(get_interrupt_vector) };
        // SAFETY: as above, for HalTranslateBusAddress.
        let translate_bus_address =
            unsafe { core::mem::transmute::<PVOID, TranslateBusAddress>(translate_bus_address) };
        Some(Self { get_interrupt_vector, translate_bus_address })
    }

    /// HalTranslateBusAddress of a memory-space bus address: the system physical
    /// address, or `None` if the HAL cannot translate it to memory space. PASSIVE_LEVEL.
    #[must_use]
    pub fn translate_memory_address(&self, bus: INTERFACE_TYPE, bus_number: u32, address: u64) -> Option<u64> {
        irql::assert_passive();
        let mut space = MEMORY_SPACE;
        let mut system = PHYSICAL_ADDRESS { QuadPart: 0 };
        let bus_address = PHYSICAL_ADDRESS { QuadPart: address as i64 };
        // SAFETY: PASSIVE_LEVEL; valid in/out parameters.
        let translated =
            unsafe { (self.translate_bus_address)(bus, bus_number, bus_address, &raw mut space, &raw mut system) };
        // SAFETY: PHYSICAL_ADDRESS is a plain 64-bit union.
        let system = unsafe { system.QuadPart } as u64;
        (translated != 0 && space == MEMORY_SPACE).then_some(system)
    }

    /// HalGetInterruptVector of a bus interrupt level and vector. PASSIVE_LEVEL.
    #[must_use]
    pub fn interrupt_vector(&self, bus: INTERFACE_TYPE, bus_number: u32, level: u32, vector: u32) -> SystemInterrupt {
        irql::assert_passive();
        let (mut irql, mut affinity): (KIRQL, KAFFINITY) = (0, 0);
        // SAFETY: PASSIVE_LEVEL; valid out-parameters.
        let vector =
            unsafe { (self.get_interrupt_vector)(bus, bus_number, level, vector, &raw mut irql, &raw mut affinity) };
        SystemInterrupt { vector, irql, affinity }
    }
}
