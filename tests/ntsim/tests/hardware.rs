//! ntsim's legacy hardware: the HAL routines a driver finds with
//! MmGetSystemRoutineAddress (and their absence), interrupt lines routed to the vectors
//! the HAL assigns, the interrupt object freed by IoDisconnectInterrupt (a later use is
//! bug check 0x50), and resource claims released only by a list whose Count is zero.

#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss, clippy::doc_markdown)]

mod common;

use common::{State, assert_check, bugcheck, counted, load, machine, print, print_value, printed, setup, state, wide};
use ntsim::hal::{BUS_MEMORY_OFFSET, HalGetInterruptVectorFn, LINES, irql_of_vector, vector_of_line};
use ntsim::wdk_sys::_INTERFACE_TYPE::{Internal, PCIBus};
use ntsim::wdk_sys::_MEMORY_CACHING_TYPE::MmNonCached;
use ntsim::wdk_sys::ntddk::{
    IoConnectInterrupt, IoDisconnectInterrupt, IoReportResourceForDetection, KeAcquireSpinLockRaiseToDpc,
    KeReleaseSpinLock, KeSynchronizeExecution, MmGetSystemRoutineAddress, MmMapIoSpace, MmUnmapIoSpace,
};
use ntsim::wdk_sys::{
    _KINTERRUPT_MODE, BOOLEAN, CM_RESOURCE_LIST, CmResourceTypeMemory, KAFFINITY, KIRQL, NTSTATUS, PCUNICODE_STRING,
    PDRIVER_OBJECT, PHYSICAL_ADDRESS, PKINTERRUPT, PVOID, STATUS_INVALID_PARAMETER, STATUS_SUCCESS, ULONG,
};
use ntsim::{Config, DriverState, Machine};

/// A device the tests describe: its register window's bus address and its bus line.
const BUS_ADDRESS: u64 = 0x000F_0000;
const LINE: u32 = 3;

type TranslateFn = ntsim::wdk_sys::fnsig::HalTranslateBusAddress;

fn routine(name: &str) -> PVOID {
    let mut units = wide(name);
    let mut unicode = counted(&mut units);
    // SAFETY: a valid name for the call.
    unsafe { MmGetSystemRoutineAddress(&raw mut unicode) }
}

// ---------------------------------------------------------------------------------
// HalGetInterruptVector and HalTranslateBusAddress, found at run time
// ---------------------------------------------------------------------------------

/// Prints what HalGetInterruptVector gives for `interface`/`level` as v=, irql=, aff=.
fn print_vector(get: HalGetInterruptVectorFn, interface: i32, level: ULONG, tag: &str) {
    let (mut irql, mut affinity): (KIRQL, KAFFINITY) = (0xEE, 0xEE);
    // SAFETY: valid out-parameters.
    let vector = unsafe { get(interface, 0, level, level, &raw mut irql, &raw mut affinity) };
    print(&format!("{tag} v={vector:#x} irql={irql} aff={affinity:#x}"));
}

/// Prints what HalTranslateBusAddress gives for `bus` in `space` as ok=, space=, at=.
fn print_translation(translate: TranslateFn, bus: u64, space: ULONG, tag: &str) {
    let mut space = space;
    let mut system = PHYSICAL_ADDRESS { QuadPart: -1 };
    let bus = PHYSICAL_ADDRESS { QuadPart: bus as i64 };
    // SAFETY: valid in/out parameters.
    let ok = unsafe { translate(Internal, 0, bus, &raw mut space, &raw mut system) };
    // SAFETY: a plain 64-bit union.
    let at = unsafe { system.QuadPart };
    print(&format!("{tag} ok={ok} space={space} at={at:#x}"));
}

unsafe extern "C" fn entry_asks_the_hal(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    if let Err(status) = unsafe { setup(driver) } {
        return status;
    }
    let (get, translate) = (routine("HalGetInterruptVector"), routine("HalTranslateBusAddress"));
    print(&format!("found {} {}", !get.is_null(), !translate.is_null()));
    if get.is_null() || translate.is_null() {
        return STATUS_SUCCESS;
    }
    // SAFETY: the addresses of the routines of these signatures.
    let (get, translate) = unsafe {
        (
            std::mem::transmute::<PVOID, HalGetInterruptVectorFn>(get),
            std::mem::transmute::<PVOID, TranslateFn>(translate),
        )
    };
    print_vector(get, Internal, LINE, "line");
    print_vector(get, Internal, LINES, "past-the-last-line");
    print_vector(get, PCIBus, LINE, "other-bus");
    print_translation(translate, BUS_ADDRESS + 8, 0, "window");
    print_translation(translate, BUS_ADDRESS + 0x1000, 0, "elsewhere");
    print_translation(translate, BUS_ADDRESS, 1, "io-space");
    STATUS_SUCCESS
}

fn hal_machine(config: Config) -> Machine {
    let machine = Machine::new(config);
    machine.add_register_window(BUS_ADDRESS, 4);
    machine
}

fn line_of(machine: &Machine, tag: &str) -> String {
    let output = machine.debug_output();
    let prefix = format!("{tag} ");
    output.iter().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {tag}: {output:?}")).to_owned()
}

#[test]
fn hal_get_interrupt_vector_maps_a_line_to_its_vector_irql_and_processors() {
    let machine = hal_machine(Config::seeded(1));
    load(&machine, entry_asks_the_hal);
    assert_eq!(line_of(&machine, "found"), "true true");
    let vector = vector_of_line(LINE).unwrap();
    assert_eq!(line_of(&machine, "line"), format!("v={vector:#x} irql={} aff=0x3", irql_of_vector(vector)));
    assert!(irql_of_vector(vector) > 2, "a device IRQL");
    // No vector: the out-parameters are zeroed (ReactOS bussupp.c).
    assert_eq!(line_of(&machine, "past-the-last-line"), "v=0x0 irql=0 aff=0x0");
    assert_eq!(line_of(&machine, "other-bus"), "v=0x0 irql=0 aff=0x0");
}

#[test]
fn hal_translate_bus_address_translates_only_what_the_bus_decodes() {
    let machine = hal_machine(Config::seeded(2));
    load(&machine, entry_asks_the_hal);
    let system = BUS_ADDRESS + 8 + BUS_MEMORY_OFFSET;
    assert_eq!(line_of(&machine, "window"), format!("ok=1 space=0 at={system:#x}"));
    assert_eq!(line_of(&machine, "elsewhere"), "ok=0 space=0 at=0xffffffffffffffff");
    assert_eq!(line_of(&machine, "io-space"), "ok=0 space=1 at=0xffffffffffffffff");
}

#[test]
fn the_hal_routines_can_be_reported_missing() {
    for missing in ["HalGetInterruptVector", "HalTranslateBusAddress"] {
        let machine = hal_machine(Config { missing_exports: vec![missing.to_owned()], ..Config::seeded(3) });
        load(&machine, entry_asks_the_hal);
        let expected = if missing == "HalGetInterruptVector" { "false true" } else { "true false" };
        assert_eq!(line_of(&machine, "found"), expected);
    }
}

// ---------------------------------------------------------------------------------
// Interrupt lines, vectors and the interrupt object's lifetime
// ---------------------------------------------------------------------------------

const DIRQL: KIRQL = 5;

unsafe extern "C" fn isr_counts(_interrupt: PKINTERRUPT, context: PVOID) -> BOOLEAN {
    // SAFETY: the context is the device's state.
    unsafe { (*context.cast::<State>()).counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) };
    1
}

unsafe extern "C" fn synchronized(_context: PVOID) -> BOOLEAN {
    print("synchronized");
    1
}

/// IoConnectInterrupt of [`isr_counts`] on `vector` for processors `mask`; prints
/// connect= and the object as interrupt=.
fn connect(s: *mut State, vector: ULONG, irql: KIRQL, mask: KAFFINITY) -> PKINTERRUPT {
    let mut interrupt: PKINTERRUPT = std::ptr::null_mut();
    // SAFETY: valid arguments; the state outlives the connection.
    let status = unsafe {
        IoConnectInterrupt(
            &raw mut interrupt,
            Some(isr_counts),
            s.cast(),
            std::ptr::null_mut(),
            vector,
            irql,
            irql,
            _KINTERRUPT_MODE::Latched,
            0,
            mask,
            0,
        )
    };
    print(&format!("connect={status:#x}"));
    print_value("interrupt", interrupt as u64);
    interrupt
}

/// DriverEntry: [`setup`], then `body` with the device's state.
macro_rules! entry_then {
    ($entry:ident, |$s:ident| $body:block) => {
        unsafe extern "C" fn $entry(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
            // SAFETY: DriverEntry's driver object.
            let device = match unsafe { setup(driver) } {
                Ok(d) => d,
                Err(status) => return status,
            };
            // SAFETY: our device's state.
            let $s: *mut State = unsafe { state(device) };
            $body
            STATUS_SUCCESS
        }
    };
}

entry_then!(entry_connects_translated_and_raw, |s| {
    let translated = vector_of_line(LINE).unwrap();
    connect(s, translated, irql_of_vector(translated), 1);
    print("raw");
    connect(s, LINE + 0x30, DIRQL, 1);
});

#[test]
fn a_line_reaches_only_the_vector_the_hal_assigned_it() {
    let machine = machine();
    load(&machine, entry_connects_translated_and_raw);
    assert!(machine.raise_interrupt(LINE).unwrap(), "the ISR on the translated vector claimed it");
    assert!(!machine.raise_interrupt(LINES + 1).unwrap(), "no such line");
    let vectors: Vec<u32> = machine.connected_interrupts().iter().map(|c| c.0).collect();
    assert!(vectors.contains(&(LINE + 0x30)), "connected, but no line is routed to it: {vectors:?}");
}

entry_then!(entry_connects_for_no_processor, |s| {
    connect(s, 0x51, DIRQL, 0b100);
});

#[test]
fn connecting_for_no_active_processor_is_invalid_parameter() {
    let machine = machine();
    load(&machine, entry_connects_for_no_processor);
    assert_eq!(printed(&machine, "connect"), u64::from(STATUS_INVALID_PARAMETER.cast_unsigned()));
    assert_eq!(printed(&machine, "interrupt"), 0);
    assert!(machine.connected_interrupts().is_empty());
}

entry_then!(entry_synchronizes_after_disconnect, |s| {
    let interrupt = connect(s, 0x51, DIRQL, 1);
    // SAFETY: connected above; PASSIVE_LEVEL.
    unsafe { IoDisconnectInterrupt(interrupt) };
    // SAFETY: the bug: IoDisconnectInterrupt freed the object.
    unsafe { KeSynchronizeExecution(interrupt, Some(synchronized), s.cast()) };
});

#[test]
fn synchronizing_with_a_disconnected_interrupt_is_0x50() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_synchronizes_after_disconnect));
    assert_check(&v, 0x50, printed(&machine, "interrupt"));
    assert_eq!(v.params[1], 0, "a read");
    assert!(v.explanation.contains("which IoDisconnectInterrupt freed"), "{v}");
    assert!(!machine.debug_output().contains(&"synchronized".to_owned()));
}

entry_then!(entry_disconnects_twice, |s| {
    let interrupt = connect(s, 0x51, DIRQL, 1);
    // SAFETY: connected above, then (the bug) disconnected again.
    unsafe {
        IoDisconnectInterrupt(interrupt);
        IoDisconnectInterrupt(interrupt);
    }
});

#[test]
fn disconnecting_twice_is_0x50() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_disconnects_twice));
    assert_check(&v, 0x50, printed(&machine, "interrupt"));
}

entry_then!(entry_synchronizes_then_disconnects, |s| {
    let interrupt = connect(s, 0x51, DIRQL, 1);
    // SAFETY: connected above; PASSIVE_LEVEL; disconnected once, last.
    unsafe {
        KeSynchronizeExecution(interrupt, Some(synchronized), s.cast());
        IoDisconnectInterrupt(interrupt);
    }
});

#[test]
fn synchronizing_before_disconnecting_is_clean() {
    let machine = machine();
    let driver = load(&machine, entry_synchronizes_then_disconnects);
    assert!(machine.debug_output().contains(&"synchronized".to_owned()));
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
}

entry_then!(entry_synchronizes_a_null_routine, |s| {
    let interrupt = connect(s, 0x51, DIRQL, 1);
    // SAFETY: connected above; PASSIVE_LEVEL; the bug: no routine.
    unsafe { KeSynchronizeExecution(interrupt, None, s.cast()) };
});

#[test]
fn synchronizing_a_null_routine_is_0x0a_at_the_synchronize_irql() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_synchronizes_a_null_routine));
    assert_eq!(v.code, 0x0A, "{v}");
    assert_eq!(v.params, [0, u64::from(DIRQL), 8, 0], "an instruction fetch from 0 at the synchronize IRQL");
    assert!(v.explanation.contains("NULL synchronize routine"), "{v}");
}

/// MmMapIoSpace of the register window's translated address, kept in `blocks[0]`.
fn map_registers(s: *mut State) {
    let system = PHYSICAL_ADDRESS { QuadPart: (BUS_ADDRESS + BUS_MEMORY_OFFSET) as i64 };
    // SAFETY: PASSIVE_LEVEL; the state is ours.
    unsafe { (*s).blocks[0] = MmMapIoSpace(system, 4, MmNonCached) };
    // SAFETY: the state is ours.
    print_value("mapped", unsafe { (*s).blocks[0] } as u64);
}

unsafe extern "C" fn unmap_registers(context: PVOID) -> BOOLEAN {
    let s = context.cast::<State>();
    // SAFETY: the mapping made by `map_registers`.
    unsafe { MmUnmapIoSpace((*s).blocks[0], 4) };
    1
}

entry_then!(entry_unmaps_at_passive_level, |s| {
    map_registers(s);
    // SAFETY: the mapping just made, at PASSIVE_LEVEL.
    unsafe { unmap_registers(s.cast()) };
});

#[test]
fn unmapping_io_space_at_passive_level_is_allowed() {
    let machine = hal_machine(Config::seeded(1));
    let driver = load(&machine, entry_unmaps_at_passive_level);
    assert_ne!(printed(&machine, "mapped"), 0, "the translated window maps");
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded, "nothing left mapped");
}

entry_then!(entry_unmaps_at_dispatch_level, |s| {
    map_registers(s);
    // SAFETY: our state's lock; the bug: Verifier allows MmUnmapIoSpace up to APC_LEVEL.
    unsafe {
        let old = KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        unmap_registers(s.cast());
        KeReleaseSpinLock(&raw mut (*s).lock, old);
    }
});

/// The DDI page allows DISPATCH_LEVEL, but Driver Verifier flags MmUnmapIoSpace above
/// APC_LEVEL: 0xC4/0x7B [IRQL, address, bytes] (bug check 0xC4's reference).
#[test]
fn unmapping_io_space_at_dispatch_level_is_c4_7b() {
    let machine = hal_machine(Config::seeded(1));
    let v = bugcheck(machine.load_driver("chk", entry_unmaps_at_dispatch_level));
    assert_eq!((v.code, v.params), (0xC4, [0x7B, 2, printed(&machine, "mapped"), 4]), "{v}");
}

entry_then!(entry_unmaps_in_a_synchronize_routine, |s| {
    map_registers(s);
    let interrupt = connect(s, 0x51, DIRQL, 1);
    // SAFETY: connected above; the bug: the routine runs at the interrupt's IRQL.
    unsafe { KeSynchronizeExecution(interrupt, Some(unmap_registers), s.cast()) };
});

#[test]
fn unmapping_io_space_above_dispatch_level_is_c4_7b() {
    let machine = hal_machine(Config::seeded(1));
    let v = bugcheck(machine.load_driver("chk", entry_unmaps_in_a_synchronize_routine));
    assert_eq!((v.code, v.params), (0xC4, [0x7B, u64::from(DIRQL), printed(&machine, "mapped"), 4]), "{v}");
    assert_eq!(v.trace_tail.last().map(|c| c.api), Some("MmUnmapIoSpace"));
}

// ---------------------------------------------------------------------------------
// Resource claims
// ---------------------------------------------------------------------------------

/// Claims one memory range, then reports `release` (NULL lists, or a list with Count 0)
/// and prints its status as release=.
fn claim_then_release(driver: PDRIVER_OBJECT, release_with_empty_list: bool) {
    // SAFETY: plain data.
    let mut claim: CM_RESOURCE_LIST = unsafe { std::mem::zeroed() };
    claim.Count = 1;
    claim.List[0].PartialResourceList.Count = 1;
    let memory = &mut claim.List[0].PartialResourceList.PartialDescriptors[0];
    memory.Type = CmResourceTypeMemory as u8;
    memory.u.Memory.Start = PHYSICAL_ADDRESS { QuadPart: BUS_ADDRESS as i64 };
    memory.u.Memory.Length = 16;
    let size = size_of::<CM_RESOURCE_LIST>() as u32;
    let mut conflict: BOOLEAN = 0;
    // SAFETY: a well-formed list of `size` bytes.
    let status = unsafe {
        IoReportResourceForDetection(
            driver,
            &raw mut claim,
            size,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
            &raw mut conflict,
        )
    };
    print(&format!("claim={status:#x}"));
    // SAFETY: plain data: Count 0.
    let mut empty: CM_RESOURCE_LIST = unsafe { std::mem::zeroed() };
    let (list, size) = if release_with_empty_list { (&raw mut empty, size) } else { (std::ptr::null_mut(), 0) };
    // SAFETY: NULL lists are a documented-invalid call; the empty list is well formed.
    let status = unsafe {
        IoReportResourceForDetection(
            driver,
            list,
            size,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
            &raw mut conflict,
        )
    };
    print(&format!("release={status:#x}"));
}

unsafe extern "C" fn entry_releases_with_null_lists(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    if let Err(status) = unsafe { setup(driver) } {
        return status;
    }
    claim_then_release(driver, false);
    STATUS_SUCCESS
}

unsafe extern "C" fn entry_releases_with_an_empty_list(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    if let Err(status) = unsafe { setup(driver) } {
        return status;
    }
    claim_then_release(driver, true);
    STATUS_SUCCESS
}

#[test]
fn null_lists_release_nothing_and_are_invalid_parameter() {
    let machine = machine();
    let driver = load(&machine, entry_releases_with_null_lists);
    assert_eq!(printed(&machine, "claim"), 0);
    assert_eq!(printed(&machine, "release"), u64::from(STATUS_INVALID_PARAMETER.cast_unsigned()));
    assert_eq!(machine.claimed_resources(), vec![vec![ntsim::Resource::Memory { start: BUS_ADDRESS, length: 16 }]]);
    let v = bugcheck(machine.stop_driver(driver));
    assert_check(&v, ntsim::checker::code::NTSIM_UNLOAD_LEAK, ntsim::checker::unload::RESOURCE_CLAIM);
}

#[test]
fn a_list_whose_count_is_zero_releases_the_claim() {
    let machine = machine();
    let driver = load(&machine, entry_releases_with_an_empty_list);
    assert_eq!((printed(&machine, "claim"), printed(&machine, "release")), (0, 0));
    assert_eq!(machine.resource_claims(), 0);
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
}
