//! `Hostile::odd_routine_addresses`: routine addresses a driver gets from ntsim are odd,
//! as on a kernel whose functions are not aligned. A driver that keeps a flag in bit 0
//! of one and masks it off before calling jumps one byte early: 0x50. A driver that
//! calls what it was given works, and so do the default dispatch routines.

mod common;

use common::{PATH, TAG, assert_check, bugcheck, entry_with, load, print, print_value, printed};
use ntsim::wdk_sys::ntddk::{ExFreePoolWithTag, MmGetSystemRoutineAddress};
use ntsim::wdk_sys::{IRP_MJ_WRITE, NTSTATUS, PCUNICODE_STRING, PDRIVER_OBJECT, PVOID, SIZE_T, ULONG};
use ntsim::{Config, Hostile, Machine};

/// `ExAllocatePoolWithTag(POOL_TYPE, SIZE_T, ULONG)`.
type AllocateWithTag = unsafe extern "C" fn(i32, SIZE_T, ULONG) -> PVOID;
/// `NonPagedPoolNx`.
const NON_PAGED_POOL_NX: i32 = 512;

fn machine(odd: bool) -> Machine {
    Machine::new(Config { hostile: Hostile { odd_routine_addresses: odd, ..Hostile::default() }, ..Config::seeded(1) })
}

/// MmGetSystemRoutineAddress("ExAllocatePoolWithTag"), printed as `routine`.
fn resolve() -> usize {
    let mut name = common::wide("ExAllocatePoolWithTag");
    let mut unicode = common::counted(&mut name);
    // SAFETY: PASSIVE_LEVEL; the name lives across the call.
    let routine = unsafe { MmGetSystemRoutineAddress(&raw mut unicode) } as usize;
    print_value("routine", routine as u64);
    routine
}

/// Allocates and frees a block through `routine`.
fn allocate_through(routine: usize) {
    // SAFETY: `routine` is taken to be ExAllocatePoolWithTag; nonpaged pool at
    // PASSIVE_LEVEL, freed with the same tag.
    unsafe {
        let allocate = std::mem::transmute::<usize, AllocateWithTag>(routine);
        let block = allocate(NON_PAGED_POOL_NX, 64, TAG);
        assert!(!block.is_null());
        ExFreePoolWithTag(block, TAG);
    }
    print("allocated");
}

/// The mistake: the allocator kind kept in bit 0 of the routine's address.
unsafe extern "C" fn entry_tags_the_address(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let status = unsafe { entry_with(driver, &[], None) };
    let tagged = resolve() | 1;
    allocate_through(tagged & !1);
    status
}

/// Right: the address is called as returned; also reports the default dispatch
/// routine's address.
unsafe extern "C" fn entry_calls_what_it_got(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let default_write = unsafe { (*driver).MajorFunction[IRP_MJ_WRITE as usize] }.map_or(0, |f| f as usize);
    print_value("default_write", default_write as u64);
    // SAFETY: as above.
    let status = unsafe { entry_with(driver, &[], None) };
    allocate_through(resolve());
    status
}

#[test]
fn a_driver_that_tags_a_routine_address_faults_with_odd_addresses() {
    let v = bugcheck(machine(true).load_driver("chk", entry_tags_the_address));
    assert_check(&v, 0x50, v.params[0]);
    assert_eq!(v.routine, ntsim::trace::Routine::DriverEntry, "{v}");
}

#[test]
fn without_the_option_the_same_driver_passes() {
    let machine = machine(false);
    let driver = load(&machine, entry_tags_the_address);
    assert_eq!(printed(&machine, "routine") & 1, 0, "host functions are aligned");
    assert!(machine.debug_output().iter().any(|l| l == "allocated"));
    machine.stop_driver(driver).unwrap();
    machine.verdict().unwrap();
}

#[test]
fn odd_routine_addresses_work_when_called_as_given() {
    let machine = machine(true);
    let driver = load(&machine, entry_calls_what_it_got);
    assert_eq!(printed(&machine, "routine") & 1, 1, "MmGetSystemRoutineAddress returned an odd address");
    assert_eq!(printed(&machine, "default_write") & 1, 1, "the default dispatch routine's address is odd");
    assert!(machine.debug_output().iter().any(|l| l == "allocated"));
    // A request the driver has no routine for goes through the odd default.
    let process = machine.new_process();
    let handle = process.open(PATH, false).unwrap().expect("open");
    let written = process.write(handle, &[1, 2, 3]).unwrap().done().expect("completes");
    assert_eq!(written.status, ntsim::wdk_sys::STATUS_INVALID_DEVICE_REQUEST);
    process.close(handle).unwrap();
    machine.stop_driver(driver).unwrap();
    machine.verdict().unwrap();
}
