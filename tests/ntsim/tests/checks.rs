//! Negative tests for every check ntsim implements: each small, deliberately wrong
//! driver makes exactly one mistake and the test asserts the bug-check code and first
//! parameter Driver Verifier would report. Each area also has a well-behaved driver
//! showing that its checks stay quiet on correct code.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::doc_markdown,
    clippy::unnecessary_box_returns,
    clippy::many_single_char_names,
    reason = "kernel names in docs; IRP_MJ_* and KPROCESSOR_MODE constants narrowed as wdm.h does"
)]

mod common;

use std::sync::atomic::Ordering;

use common::{
    DEVICE, LINK, PATH, State, TAG, assert_check, assert_clean, bugcheck, complete, counted, create_device,
    create_link, delete_link, driver_state, entry_with, load, machine, mark_pending, print, print_value, printed,
    relative_ms, setup, stack, start_thread, state, wait,
};
use ntsim::wdk_sys::ntddk::{
    ExAllocatePool2, ExFreePool, ExFreePoolWithTag, IoAcquireCancelSpinLock, IoAllocateWorkItem, IoConnectInterrupt,
    IoCreateSymbolicLink, IoDeleteDevice, IoFreeWorkItem, IoInitializeTimer, IoQueueWorkItem, IoReleaseCancelSpinLock,
    IoStartTimer, IoStopTimer, KeAcquireInStackQueuedSpinLock, KeAcquireSpinLockAtDpcLevel,
    KeAcquireSpinLockRaiseToDpc, KeCancelTimer, KeFlushQueuedDpcs, KeInitializeDpc, KeInitializeEvent,
    KeInitializeTimer, KeInsertQueueDpc, KeReleaseInStackQueuedSpinLock, KeReleaseSpinLock,
    KeReleaseSpinLockFromDpcLevel, KeSetEvent, KeSetTimer, KeSetTimerEx, KeSynchronizeExecution, ObOpenObjectByPointer,
    ObfDereferenceObject, PsCreateSystemThread, PsTerminateSystemThread, ZwClose, ZwOpenKey,
};
use ntsim::wdk_sys::{
    _EVENT_TYPE, _KINTERRUPT_MODE, _MODE, _WORK_QUEUE_TYPE, BOOLEAN, HANDLE, IRP_MJ_CREATE, IRP_MJ_DEVICE_CONTROL,
    IRP_MJ_READ, KEY_READ, KLOCK_QUEUE_HANDLE, NTSTATUS, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, OBJECT_ATTRIBUTES,
    PCUNICODE_STRING, PDEVICE_OBJECT, PDRIVER_DISPATCH, PDRIVER_OBJECT, PIRP, PKINTERRUPT, POOL_FLAG_NON_PAGED,
    POOL_FLAG_NON_PAGED_EXECUTE, POOL_FLAG_PAGED, PRKDPC, PVOID, STATUS_CANCELLED, STATUS_PENDING, STATUS_SUCCESS,
    STATUS_TIMEOUT, STATUS_UNSUCCESSFUL, THREAD_ALL_ACCESS,
};
use ntsim::{Config, DriverState, Issued, Machine};

const C4: u32 = 0xC4;
const C9: u32 = 0xC9;
const NTSIM: u32 = 0x4E54_0000;
/// ntsim's own unload checks (Windows does not bug-check for these leaks).
const NTSIM_UNLOAD: u32 = 0x4E54_00CE;

/// Opens [`PATH`] on a new process's main thread and reads `length` bytes; returns the
/// result of the read.
fn open_and_read(machine: &Machine, length: usize) -> Result<Issued, ntsim::Stopped> {
    let process = machine.new_process();
    let handle = process.open(PATH, false)?.expect("open succeeds");
    process.read(handle, length)
}

/// DriverEntry with `read` as IRP_MJ_READ.
macro_rules! read_driver {
    ($entry:ident, $read:ident) => {
        unsafe extern "C" fn $entry(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
            // SAFETY: DriverEntry's driver object.
            unsafe { entry_with(driver, &[(IRP_MJ_READ, Some($read))], None) }
        }
    };
}

/// DriverEntry with `unload` as DriverUnload.
macro_rules! unload_driver {
    ($entry:ident, $unload:ident) => {
        unsafe extern "C" fn $entry(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
            // SAFETY: DriverEntry's driver object.
            unsafe { entry_with(driver, &[], Some($unload)) }
        }
    };
}

fn print_irp(irp: PIRP) {
    print_value("irp", irp as u64);
}

fn print_irp_and_device(device: PDEVICE_OBJECT, irp: PIRP) {
    print_irp(irp);
    print_value("device", device as u64);
}

/// The one non-fatal report the machine recorded; the verdict fails with it.
#[track_caller]
fn only_report(machine: &Machine) -> ntsim::Violation {
    let reports = machine.reports();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    assert!(!reports[0].fatal);
    let Err(ntsim::Stopped::BugCheck(verdict)) = machine.verdict() else { panic!("the report fails the verdict") };
    assert_eq!((verdict.code, verdict.params), (reports[0].code, reports[0].params));
    reports[0].clone()
}

/// The NUL-terminated rule text a DDI compliance violation's P2 points to.
fn rule_text(v: &ntsim::Violation) -> String {
    // SAFETY: ntsim's static, NUL-terminated rule text.
    unsafe { std::ffi::CStr::from_ptr(v.params[1] as *const std::ffi::c_char) }.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------
// IRP completion and dispatch-routine rules
// ---------------------------------------------------------------------------------

unsafe extern "C" fn read_completes_twice(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    print_irp(irp);
    // SAFETY: the IRP is ours; the second completion is the bug under test.
    unsafe {
        complete(irp, STATUS_SUCCESS, 0);
        complete(irp, STATUS_SUCCESS, 0);
    }
    STATUS_SUCCESS
}
read_driver!(entry_completes_twice, read_completes_twice);

#[test]
fn irp_completed_twice_is_0x44() {
    let machine = machine();
    load(&machine, entry_completes_twice);
    let v = bugcheck(open_and_read(&machine, 4));
    assert_check(&v, 0x44, printed(&machine, "irp"));
    assert_eq!(v.name, "MULTIPLE_IRP_COMPLETE_REQUESTS");
}

unsafe extern "C" fn cancel_noop(_device: PDEVICE_OBJECT, _irp: PIRP) {}

unsafe extern "C" fn read_completes_with_cancel_routine(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    print_irp(irp);
    // SAFETY: the IRP is ours; completing it with the cancel routine set is the bug.
    unsafe {
        ntsim::inline::IoSetCancelRoutine(irp, Some(cancel_noop));
        complete(irp, STATUS_SUCCESS, 0);
    }
    STATUS_SUCCESS
}
read_driver!(entry_cancel_routine_set, read_completes_with_cancel_routine);

#[test]
fn completed_with_cancel_routine_set_is_c9_07() {
    let machine = machine();
    load(&machine, entry_cancel_routine_set);
    let v = bugcheck(open_and_read(&machine, 4));
    assert_eq!(
        (v.code, v.params),
        (C9, [0x07, cancel_noop as *const () as u64, printed(&machine, "irp"), 0]),
        "[rule, cancel routine, IRP, 0]"
    );
}

unsafe extern "C" fn read_completes_with_pending(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    print_irp(irp);
    // SAFETY: the IRP is ours; STATUS_PENDING as a final status is the bug.
    unsafe { complete(irp, STATUS_PENDING, 0) };
    STATUS_PENDING
}
read_driver!(entry_completes_with_pending, read_completes_with_pending);

#[test]
fn completed_with_status_pending_is_c9_06() {
    let machine = machine();
    load(&machine, entry_completes_with_pending);
    let v = bugcheck(open_and_read(&machine, 4));
    assert_eq!(
        (v.code, v.params),
        (C9, [0x06, STATUS_PENDING as u64, printed(&machine, "irp"), 0]),
        "[rule, status, IRP, 0]"
    );
}

unsafe extern "C" fn read_returns_at_dispatch(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    print_irp_and_device(device, irp);
    // SAFETY: our device's state.
    let s = unsafe { state(device) };
    // SAFETY: the lock is initialised (zeroed); leaving IRQL raised is the bug.
    unsafe {
        KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        KeReleaseSpinLockFromDpcLevel(&raw mut (*s).lock);
        complete(irp, STATUS_SUCCESS, 0);
    }
    STATUS_SUCCESS
}
read_driver!(entry_returns_at_dispatch, read_returns_at_dispatch);

#[test]
fn dispatch_routine_changing_irql_is_c9_05() {
    let machine = machine();
    load(&machine, entry_returns_at_dispatch);
    let v = bugcheck(open_and_read(&machine, 4));
    assert_eq!(
        (v.code, v.params),
        (C9, [0x05, printed(&machine, "device"), 0, 2]),
        "[rule, device, IRQL before, after]"
    );
}

unsafe extern "C" fn read_pends_unmarked(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    print_irp_and_device(device, irp);
    // SAFETY: our device's state; the IRP is kept (but never marked pending: the bug).
    unsafe { (*state(device)).pending.store(irp, Ordering::SeqCst) };
    STATUS_PENDING
}
read_driver!(entry_pends_unmarked, read_pends_unmarked);

#[test]
fn pending_without_mark_irp_pending_is_c9_23d() {
    let machine = machine();
    load(&machine, entry_pends_unmarked);
    // Non-fatal: the read stays pending and the machine runs on.
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().expect("open succeeds");
    let Issued::Pending(_io) = process.read(handle, 4).unwrap() else { panic!("the read pends") };
    let v = only_report(&machine);
    let routine = read_pends_unmarked as *const () as u64;
    let (irp, device) = (printed(&machine, "irp"), printed(&machine, "device"));
    assert_eq!((v.code, v.params), (C9, [0x23D, routine, irp, device]), "[code, driver address, IRP, device]");
    machine.advance_ms(1).expect("the machine keeps running");
}

unsafe extern "C" fn read_marks_but_completes(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    print_irp_and_device(device, irp);
    // SAFETY: the IRP is ours; marking it pending and returning success is the bug.
    unsafe {
        mark_pending(irp);
        complete(irp, STATUS_SUCCESS, 0);
    }
    STATUS_SUCCESS
}
read_driver!(entry_marks_but_completes, read_marks_but_completes);

#[test]
fn marked_pending_but_returned_success_is_c9_23e() {
    let machine = machine();
    load(&machine, entry_marks_but_completes);
    // Non-fatal: the caller gets the status returned.
    let Issued::Done(result) = open_and_read(&machine, 4).unwrap() else { panic!("completed") };
    assert_eq!(result.status, STATUS_SUCCESS);
    let v = only_report(&machine);
    let routine = read_marks_but_completes as *const () as u64;
    let (irp, device) = (printed(&machine, "irp"), printed(&machine, "device"));
    assert_eq!((v.code, v.params), (C9, [0x23E, routine, irp, device]), "[code, driver address, IRP, device]");
}

unsafe extern "C" fn read_forgets_irp(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    print_irp_and_device(device, irp);
    STATUS_SUCCESS
}
read_driver!(entry_forgets_irp, read_forgets_irp);

#[test]
fn neither_completed_nor_pending_is_c9_226() {
    let machine = machine();
    load(&machine, entry_forgets_irp);
    let v = bugcheck(open_and_read(&machine, 4));
    let routine = read_forgets_irp as *const () as u64;
    let (irp, device) = (printed(&machine, "irp"), printed(&machine, "device"));
    assert_eq!((v.code, v.params), (C9, [0x226, routine, irp, device]), "[code, driver address, IRP, device]");
    assert!(v.fatal);
}

unsafe extern "C" fn read_returns_other_status(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    print_irp_and_device(device, irp);
    // SAFETY: the IRP is ours.
    unsafe { complete(irp, STATUS_SUCCESS, 0) };
    STATUS_UNSUCCESSFUL
}
read_driver!(entry_returns_other_status, read_returns_other_status);

#[test]
fn returned_status_differs_from_completion_is_c9_224() {
    let machine = machine();
    load(&machine, entry_returns_other_status);
    let v = bugcheck(open_and_read(&machine, 4));
    let routine = read_returns_other_status as *const () as u64;
    let (irp, device) = (printed(&machine, "irp"), printed(&machine, "device"));
    assert_eq!((v.code, v.params), (C9, [0x224, routine, irp, device]), "[code, driver address, IRP, device]");
}

unsafe extern "C" fn read_reports_too_much(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    print_irp_and_device(device, irp);
    // SAFETY: the IRP is ours; 8 bytes of Information for a 4-byte read is the bug.
    unsafe { complete(irp, STATUS_SUCCESS, 8) };
    STATUS_SUCCESS
}
read_driver!(entry_reports_too_much, read_reports_too_much);

#[test]
fn information_larger_than_read_buffer_is_c9_312() {
    let machine = machine();
    load(&machine, entry_reports_too_much);
    // Non-fatal: the read completes, with no more than the buffer copied back.
    let Issued::Done(result) = open_and_read(&machine, 4).unwrap() else { panic!("completed") };
    assert_eq!((result.status, result.data.len()), (STATUS_SUCCESS, 4));
    let v = only_report(&machine);
    let (irp, device) = (printed(&machine, "irp"), printed(&machine, "device"));
    assert_eq!((v.code, v.params), (C9, [0x312, 0, irp, device]), "[code, driver address (unknown), IRP, device]");
}

/// Completes the IRP but never calls IoReleaseCancelSpinLock.
unsafe extern "C" fn cancel_keeps_lock(device: PDEVICE_OBJECT, irp: PIRP) {
    // SAFETY: IoCancelIrp hands us the IRP; our device's state.
    unsafe {
        (*state(device)).pending.store(std::ptr::null_mut(), Ordering::SeqCst);
        complete(irp, STATUS_CANCELLED, 0);
    }
}

unsafe extern "C" fn read_pends_cancelable_bad(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    print_irp(irp);
    // SAFETY: the IRP is ours until the cancel routine takes it.
    unsafe {
        mark_pending(irp);
        (*state(device)).pending.store(irp, Ordering::SeqCst);
        ntsim::inline::IoSetCancelRoutine(irp, Some(cancel_keeps_lock));
    }
    STATUS_PENDING
}
read_driver!(entry_cancel_keeps_lock, read_pends_cancelable_bad);

#[test]
fn cancel_routine_keeping_cancel_lock_is_0x11b() {
    let machine = machine();
    load(&machine, entry_cancel_keeps_lock);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    let Issued::Pending(io) = process.read(handle, 4).unwrap() else { panic!("the read pends") };
    let v = bugcheck(process.cancel_io_ex(handle, Some(&io)));
    assert_check(&v, 0x11B, printed(&machine, "irp"));
    assert_eq!(v.routine, ntsim::trace::Routine::Kernel, "reported after the cancel routine returned");
}

// --- the well-behaved IRP driver -------------------------------------------------

/// IOCTL 1 pends until cancelled; IOCTL 2 pends until a timer DPC completes it.
const IOCTL_WAIT_CANCEL: u32 = 1;
const IOCTL_WAIT_TIMER: u32 = 2;

unsafe extern "C" fn cancel_good(device: PDEVICE_OBJECT, irp: PIRP) {
    // SAFETY: IoCancelIrp called us holding the cancel lock, at the IRP's CancelIrql.
    unsafe { IoReleaseCancelSpinLock((*irp).CancelIrql) };
    // SAFETY: our device's state; the IRP is ours to complete now.
    unsafe {
        let _ =
            (*state(device)).pending.compare_exchange(irp, std::ptr::null_mut(), Ordering::SeqCst, Ordering::SeqCst);
        complete(irp, STATUS_CANCELLED, 0);
    }
}

unsafe extern "C" fn dpc_completes_pending(_dpc: PRKDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    let s = context.cast::<State>();
    // SAFETY: the context is the device's state.
    let irp = unsafe { (*s).pending.swap(std::ptr::null_mut(), Ordering::SeqCst) };
    // SAFETY: a non-NULL pending IRP is outstanding; whoever clears the cancel routine
    // owns its completion.
    if !irp.is_null() && unsafe { ntsim::inline::IoSetCancelRoutine(irp, None) }.is_some() {
        print("timer completes the IRP");
        // SAFETY: we own it now.
        unsafe { complete(irp, STATUS_SUCCESS, 0) };
    }
}

unsafe extern "C" fn read_good(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the I/O manager passes a valid read IRP with a buffer of Length bytes.
    let length = unsafe { (*stack(irp)).Parameters.Read.Length };
    // SAFETY: as above.
    let buffer = unsafe { (*irp).AssociatedIrp.SystemBuffer }.cast::<u8>();
    // SAFETY: as above.
    unsafe { std::ptr::write_bytes(buffer, 0x5A, length as usize) };
    // SAFETY: we own the IRP.
    unsafe { complete(irp, STATUS_SUCCESS, u64::from(length)) };
    STATUS_SUCCESS
}

unsafe extern "C" fn ioctl_good(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: our device's state.
    let s = unsafe { state(device) };
    // SAFETY: the I/O manager passes a valid IOCTL IRP.
    let code = unsafe { (*stack(irp)).Parameters.DeviceIoControl.IoControlCode };
    // SAFETY: the IRP is ours until the cancel routine or the DPC takes it.
    unsafe {
        mark_pending(irp);
        (*s).pending.store(irp, Ordering::SeqCst);
        ntsim::inline::IoSetCancelRoutine(irp, Some(cancel_good));
    }
    // SAFETY: as above.
    if unsafe { ntsim::inline::irp_cancel_requested(irp) && ntsim::inline::IoSetCancelRoutine(irp, None).is_some() } {
        // SAFETY: cancelled before we queued it, and we took the cancel routine back.
        unsafe {
            (*s).pending.store(std::ptr::null_mut(), Ordering::SeqCst);
            complete(irp, STATUS_CANCELLED, 0);
        }
        return STATUS_PENDING;
    }
    if code == IOCTL_WAIT_TIMER {
        // SAFETY: the timer and DPC were initialised in DriverEntry.
        unsafe { KeSetTimer(&raw mut (*s).timer, relative_ms(5), &raw mut (*s).dpc) };
    }
    STATUS_PENDING
}

unsafe extern "C" fn unload_irp_good(driver: PDRIVER_OBJECT) {
    // SAFETY: our device's state, read before the device goes.
    let s = unsafe { driver_state(driver) };
    // SAFETY: initialised timer; nothing else is queued.
    unsafe {
        KeCancelTimer(&raw mut (*s).timer);
        KeFlushQueuedDpcs();
    }
    // SAFETY: as for unload_clean.
    unsafe { common::unload_clean(driver) };
}

unsafe extern "C" fn entry_irp_good(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    let majors: [(u32, PDRIVER_DISPATCH); 2] =
        [(IRP_MJ_READ, Some(read_good)), (IRP_MJ_DEVICE_CONTROL, Some(ioctl_good))];
    // SAFETY: DriverEntry's driver object.
    let status = unsafe { entry_with(driver, &majors, Some(unload_irp_good)) };
    if status != STATUS_SUCCESS {
        return status;
    }
    // SAFETY: the state of the device just created.
    let s = unsafe { driver_state(driver) };
    // SAFETY: the state's timer and DPC, initialised once.
    unsafe {
        KeInitializeTimer(&raw mut (*s).timer);
        KeInitializeDpc(&raw mut (*s).dpc, Some(dpc_completes_pending), s.cast());
    }
    STATUS_SUCCESS
}

#[test]
fn well_behaved_irp_handling_passes_every_check() {
    let machine = machine();
    let driver = load(&machine, entry_irp_good);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    // Completed in the dispatch routine, with exactly the buffer's length.
    let read = process.read(handle, 4).unwrap().done().expect("completes at once");
    assert_eq!((read.status, read.information, read.data), (STATUS_SUCCESS, 4, vec![0x5A; 4]));
    // Pended with a cancel routine, then cancelled.
    let Issued::Pending(io) = process.ioctl(handle, IOCTL_WAIT_CANCEL, &[], 0).unwrap() else { panic!("pends") };
    assert_eq!(process.cancel_io_ex(handle, Some(&io)).unwrap(), STATUS_SUCCESS);
    assert_eq!(process.main().wait(&io).unwrap().status, STATUS_CANCELLED);
    // Pended, then completed by a timer DPC at DISPATCH_LEVEL.
    let Issued::Pending(io) = process.ioctl(handle, IOCTL_WAIT_TIMER, &[], 0).unwrap() else { panic!("pends") };
    // The 5 ms timer expires at the first clock tick (15.625 ms).
    machine.advance_ms(20).unwrap();
    assert_eq!(io.result().expect("completed by the DPC").status, STATUS_SUCCESS);
    process.close(handle).unwrap();
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

// ---------------------------------------------------------------------------------
// DDI IRQL rules and waits
// ---------------------------------------------------------------------------------

unsafe extern "C" fn entry_link_under_lock(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let device = match unsafe { create_device(driver) } {
        Ok(d) => d,
        Err(status) => return status,
    };
    // SAFETY: our device's state.
    let s = unsafe { state(device) };
    // SAFETY: an initialised lock; IoCreateSymbolicLink at DISPATCH_LEVEL is the bug.
    unsafe { KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock) };
    let (mut l, mut t) = (common::wide(LINK), common::wide(DEVICE));
    let (mut lu, mut tu) = (counted(&mut l), counted(&mut t));
    // SAFETY: valid names.
    unsafe { IoCreateSymbolicLink(&raw mut lu, &raw mut tu) }
}

#[test]
fn passive_ddi_under_spin_lock_is_c4_2000d() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_link_under_lock));
    assert_eq!((v.code, v.params[0], v.params[2], v.params[3]), (C4, 0x2000D, 0, 0), "IrqlIoPassive4: {v}");
    assert!(rule_text(&v).starts_with("IrqlIoPassive4:"), "P2 is the rule text");
    assert_eq!(v.trace_tail.last().map(|c| c.api), Some("IoCreateSymbolicLink"));
}

unsafe extern "C" fn thread_returns(_context: PVOID) {}

unsafe extern "C" fn dpc_closes_handle(_dpc: PRKDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    let s = context.cast::<State>();
    // SAFETY: the state's handle is a kernel handle; closing it at DISPATCH is the bug.
    let _ = unsafe { ZwClose((*s).thread_handle) };
}

unsafe extern "C" fn entry_zwclose_in_dpc(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let device = match unsafe { setup(driver) } {
        Ok(d) => d,
        Err(status) => return status,
    };
    // SAFETY: our device's state.
    let s = unsafe { state(device) };
    // SAFETY: valid out-pointer, routine and DPC.
    unsafe {
        let _ = PsCreateSystemThread(
            &raw mut (*s).thread_handle,
            THREAD_ALL_ACCESS,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            Some(thread_returns),
            std::ptr::null_mut(),
        );
        KeInitializeDpc(&raw mut (*s).dpc, Some(dpc_closes_handle), s.cast());
        KeInsertQueueDpc(&raw mut (*s).dpc, std::ptr::null_mut(), std::ptr::null_mut());
    }
    STATUS_SUCCESS
}

#[test]
fn zw_close_in_a_dpc_is_c4_2001f() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_zwclose_in_dpc).and_then(|_| machine.advance_ms(1)));
    assert_eq!((v.code, v.params[0], v.params[2], v.params[3]), (C4, 0x2001F, 0, 0), "IrqlZwPassive: {v}");
    assert!(rule_text(&v).starts_with("IrqlZwPassive:"), "P2 is the rule text");
    assert_eq!(v.routine, ntsim::trace::Routine::Dpc);
    assert_eq!(v.trace_tail.last().map(|c| c.api), Some("ZwClose"));
}

/// DriverEntry that waits on an event while holding a spin lock, with `timeout`.
unsafe fn wait_under_lock(driver: PDRIVER_OBJECT, timeout: Option<i64>) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let device = match unsafe { setup(driver) } {
        Ok(d) => d,
        Err(status) => return status,
    };
    // SAFETY: our device's state.
    let s = unsafe { state(device) };
    // SAFETY: initialised objects; a non-zero timeout at DISPATCH is the bug.
    unsafe {
        KeInitializeEvent(&raw mut (*s).event, _EVENT_TYPE::NotificationEvent, 0);
        let old = KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        print_value("event", (&raw mut (*s).event) as u64);
        wait((&raw mut (*s).event).cast(), timeout);
        KeReleaseSpinLock(&raw mut (*s).lock, old);
    }
    STATUS_SUCCESS
}

unsafe extern "C" fn entry_wait_timeout_at_dispatch(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: forwarded.
    unsafe { wait_under_lock(driver, Some(-10_000)) }
}

unsafe extern "C" fn entry_wait_forever_at_dispatch(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: forwarded.
    unsafe { wait_under_lock(driver, None) }
}

#[test]
fn wait_at_dispatch_with_timeout_is_c4_122() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_wait_timeout_at_dispatch));
    assert_check(&v, C4, 0x122);
    assert_wait_params(&machine, &v, 2, Some(-10_000));
}

/// [rule, address of the IRQL value, object, address of the timeout]: the waiting
/// thread is parked, so its IRQL value and its timeout are still readable.
#[track_caller]
fn assert_wait_params(machine: &Machine, v: &ntsim::Violation, irql: u8, timeout: Option<i64>) {
    // SAFETY: P2 is the parked thread's IRQL cell.
    assert_eq!(unsafe { *(v.params[1] as *const u8) }, irql, "P2 points to the IRQL");
    assert_eq!(v.params[2], printed(machine, "event"), "P3 is the object");
    match timeout {
        // SAFETY: P4 is the parked waiter's LARGE_INTEGER.
        Some(t) => assert_eq!(unsafe { *(v.params[3] as *const i64) }, t, "P4 points to the timeout"),
        None => assert_eq!(v.params[3], 0, "no timeout"),
    }
}

#[test]
fn wait_at_dispatch_forever_is_c4_121() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_wait_forever_at_dispatch));
    assert_check(&v, C4, 0x121);
    assert_wait_params(&machine, &v, 2, None);
    assert!(v.explanation.contains("infinite"), "{v}");
}

unsafe extern "C" fn entry_waits_correctly(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let device = match unsafe { setup(driver) } {
        Ok(d) => d,
        Err(status) => return status,
    };
    // SAFETY: our device's state.
    let s = unsafe { state(device) };
    // SAFETY: the state's event's address.
    let event: PVOID = unsafe { &raw mut (*s).event }.cast();
    // SAFETY: initialised objects used at the IRQLs their documentation allows.
    unsafe {
        KeInitializeEvent(&raw mut (*s).event, _EVENT_TYPE::NotificationEvent, 0);
        let old = KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        let polled = wait(event, Some(0));
        KeReleaseSpinLock(&raw mut (*s).lock, old);
        let timed = wait(event, Some(-10 * 10_000));
        KeSetEvent(&raw mut (*s).event, 0, 0);
        let signalled = wait(event, None);
        print(&format!("polled={polled:#x} timed={timed:#x} signalled={signalled:#x}"));
    }
    STATUS_SUCCESS
}

#[test]
fn well_behaved_waits_and_ddi_irqls_pass() {
    let machine = machine();
    let driver = load(&machine, entry_waits_correctly);
    let expected = format!("polled={STATUS_TIMEOUT:#x} timed={STATUS_TIMEOUT:#x} signalled={STATUS_SUCCESS:#x}");
    assert!(machine.debug_output().contains(&expected), "{:#?}", machine.debug_output());
    assert!(machine.now() >= 10 * 10_000, "the timed wait moved the clock by its timeout");
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

// ---------------------------------------------------------------------------------
// Spin locks
// ---------------------------------------------------------------------------------

/// DriverEntry: [`setup`], then `body` with the device's state.
macro_rules! entry_then {
    ($entry:ident, |$d:ident, $s:ident| $body:block) => {
        unsafe extern "C" fn $entry(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
            // SAFETY: DriverEntry's driver object.
            let $d = match unsafe { setup(driver) } {
                Ok(d) => d,
                Err(status) => return status,
            };
            // SAFETY: our device's state.
            let $s: *mut State = unsafe { state($d) };
            let _ = ($d, $s);
            $body
            STATUS_SUCCESS
        }
    };
}

entry_then!(entry_recursive_lock, |_device, s| {
    // SAFETY: an initialised lock; the second acquire is the bug.
    unsafe {
        print_value("lock", (&raw mut (*s).lock) as u64);
        KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        KeAcquireSpinLockAtDpcLevel(&raw mut (*s).lock);
    }
});

#[test]
fn recursive_spin_lock_acquire_is_c4_1000() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_recursive_lock));
    assert_check(&v, C4, 0x1000);
    assert_eq!(v.params[1], printed(&machine, "lock"));
}

entry_then!(entry_release_unheld, |_device, s| {
    // SAFETY: initialised locks; releasing lock2, which nobody holds, is the bug.
    unsafe {
        print_value("lock2", (&raw mut (*s).lock2) as u64);
        KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        KeReleaseSpinLockFromDpcLevel(&raw mut (*s).lock2);
    }
});

#[test]
fn releasing_a_spin_lock_not_held_is_c4_1004() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_release_unheld));
    assert_eq!((v.code, v.params[0], v.params[1], v.params[2]), (C4, 0x1004, printed(&machine, "lock2"), 0), "{v}");
    assert_ne!(v.params[3], 0, "P4 names the releasing thread; P3, the owner, is 0: nobody holds it");
}

unsafe extern "C" fn dpc_keeps_lock(_dpc: PRKDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    let s = context.cast::<State>();
    // SAFETY: the state's lock's address.
    print_value("lock", unsafe { &raw mut (*s).lock } as u64);
    // SAFETY: an initialised lock, at DISPATCH_LEVEL; returning with it is the bug.
    unsafe { KeAcquireSpinLockAtDpcLevel(&raw mut (*s).lock) };
}

entry_then!(entry_dpc_keeps_lock, |_device, s| {
    // SAFETY: the state's DPC.
    unsafe {
        KeInitializeDpc(&raw mut (*s).dpc, Some(dpc_keeps_lock), s.cast());
        KeInsertQueueDpc(&raw mut (*s).dpc, std::ptr::null_mut(), std::ptr::null_mut());
    }
});

#[test]
fn dpc_returning_with_a_spin_lock_is_ntsim_3() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_dpc_keeps_lock).and_then(|_| machine.advance_ms(1)));
    assert_eq!((v.code, v.params), (NTSIM, [3, printed(&machine, "lock"), 0, 0]), "{v}");
    assert_eq!(v.routine, ntsim::trace::Routine::Kernel, "found after the DPC routine returned");
    assert!(v.explanation.contains("holding spin lock"), "{v}");
}

unsafe extern "C" fn dpc_locks_properly(_dpc: PRKDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    let s = context.cast::<State>();
    // SAFETY: initialised locks at DISPATCH_LEVEL, released in reverse order.
    unsafe {
        KeAcquireSpinLockAtDpcLevel(&raw mut (*s).lock);
        KeAcquireSpinLockAtDpcLevel(&raw mut (*s).lock2);
        KeReleaseSpinLockFromDpcLevel(&raw mut (*s).lock2);
        KeReleaseSpinLockFromDpcLevel(&raw mut (*s).lock);
    }
    print("dpc done");
}

entry_then!(entry_locks_properly, |_device, s| {
    // SAFETY: initialised locks, used as documented.
    unsafe {
        let old = KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        let held = ntsim::inline::KeGetCurrentIrql();
        KeReleaseSpinLock(&raw mut (*s).lock, old);
        let after = ntsim::inline::KeGetCurrentIrql();
        print(&format!("irql held={held} after={after}"));
        let mut queue: KLOCK_QUEUE_HANDLE = std::mem::zeroed();
        KeAcquireInStackQueuedSpinLock(&raw mut (*s).lock2, &raw mut queue);
        KeReleaseInStackQueuedSpinLock(&raw mut queue);
        let mut cancel_irql = 0;
        IoAcquireCancelSpinLock(&raw mut cancel_irql);
        IoReleaseCancelSpinLock(cancel_irql);
        KeInitializeDpc(&raw mut (*s).dpc, Some(dpc_locks_properly), s.cast());
        KeInsertQueueDpc(&raw mut (*s).dpc, std::ptr::null_mut(), std::ptr::null_mut());
        KeFlushQueuedDpcs();
    }
});

#[test]
fn well_behaved_spin_lock_use_passes() {
    let machine = machine();
    let driver = load(&machine, entry_locks_properly);
    let output = machine.debug_output();
    assert!(output.contains(&"irql held=2 after=0".to_owned()), "{output:#?}");
    assert!(output.contains(&"dpc done".to_owned()), "{output:#?}");
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

// ---------------------------------------------------------------------------------
// Pool
// ---------------------------------------------------------------------------------

const OTHER_TAG: u32 = u32::from_le_bytes(*b"Chk2");

entry_then!(entry_double_free, |_device, _s| {
    // SAFETY: a fresh block, freed twice: the bug.
    unsafe {
        let block = ExAllocatePool2(POOL_FLAG_NON_PAGED, 32, TAG);
        print_value("block", block as u64);
        ExFreePoolWithTag(block, TAG);
        ExFreePoolWithTag(block, TAG);
    }
});

#[test]
fn pool_double_free_is_c4_14() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_double_free));
    assert_check(&v, C4, 0x14);
    assert_eq!(v.params[1], printed(&machine, "block"));
}

entry_then!(entry_free_non_pool, |_device, _s| {
    let mut local = [0u64; 4];
    print_value("block", local.as_mut_ptr() as u64);
    // SAFETY: the address is not a pool block: the bug.
    unsafe { ExFreePool(local.as_mut_ptr().cast()) };
});

#[test]
fn freeing_non_pool_memory_is_c4_10() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_free_non_pool));
    assert_check(&v, C4, 0x10);
    assert_eq!(v.params[1], printed(&machine, "block"));
}

entry_then!(entry_zero_size, |_device, _s| {
    // SAFETY: a zero-byte request is the bug.
    unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, 0, TAG) };
});

#[test]
fn zero_size_allocation_is_c4_00() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_zero_size));
    assert_eq!((v.code, v.params), (C4, [0x00, 0, 512, 0]), "[rule, IRQL, pool type NonPagedPoolNx, 0]");
}

entry_then!(entry_wrong_tag, |_device, _s| {
    // SAFETY: a fresh block freed with another tag: the bug.
    unsafe {
        let block = ExAllocatePool2(POOL_FLAG_NON_PAGED, 32, TAG);
        ExFreePoolWithTag(block, OTHER_TAG);
    }
});

#[test]
fn free_with_the_wrong_tag_is_c2() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_wrong_tag));
    assert_check(&v, 0xC2, 0x0A);
    assert_eq!(
        (v.params[2], v.params[3]),
        (u64::from(TAG), u64::from(OTHER_TAG)),
        "allocated tag, then the tag passed"
    );
}

entry_then!(entry_paged_at_dispatch, |_device, s| {
    // SAFETY: an initialised lock; paged pool at DISPATCH_LEVEL is the bug.
    unsafe {
        KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        ExAllocatePool2(POOL_FLAG_PAGED, 32, TAG);
    }
});

#[test]
fn paged_pool_at_dispatch_is_c4_01() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_paged_at_dispatch));
    assert_eq!((v.code, v.params), (C4, [0x01, 2, 1, 32]), "[rule, IRQL, pool type PagedPool, size]");
}

unsafe extern "C" fn unload_frees_one_block(driver: PDRIVER_OBJECT) {
    // SAFETY: our device's state, read before the device goes.
    let s = unsafe { driver_state(driver) };
    // SAFETY: a block we allocated; blocks 1 and 2 are leaked: the bug.
    unsafe { ExFreePoolWithTag((*s).blocks[0], TAG) };
    // SAFETY: as for unload_clean.
    unsafe { common::unload_clean(driver) };
}

unsafe extern "C" fn entry_leaks_pool(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let status = unsafe { entry_with(driver, &[], Some(unload_frees_one_block)) };
    // SAFETY: the state of the device just created.
    let s = unsafe { driver_state(driver) };
    for n in 0..3 {
        // SAFETY: plain allocations.
        unsafe { (*s).blocks[n] = ExAllocatePool2(POOL_FLAG_NON_PAGED, 64, TAG) };
    }
    status
}

#[test]
fn pool_leaked_at_unload_is_c4_62_with_block_count() {
    let machine = machine();
    let driver = load(&machine, entry_leaks_pool);
    let v = bugcheck(machine.stop_driver(driver));
    assert_check(&v, C4, 0x62);
    assert_eq!((v.params[2], v.params[3]), (0, 2), "P4 counts the blocks not freed");
    // SAFETY: P2 is the driver object's DriverName, a UNICODE_STRING that outlives the unload.
    let name = unsafe { &*(v.params[1] as *const ntsim::wdk_sys::UNICODE_STRING) };
    // SAFETY: its buffer holds Length bytes of UTF-16.
    let units = unsafe { std::slice::from_raw_parts(name.Buffer, usize::from(name.Length) / 2) };
    assert_eq!(String::from_utf16_lossy(units), r"\Driver\chk", "P2 names the driver");
    assert!(v.explanation.contains("Chk1 x2 (128 bytes)"), "{v}");
}

unsafe extern "C" fn unload_frees_pool(driver: PDRIVER_OBJECT) {
    // SAFETY: our device's state, read before the device goes.
    let s = unsafe { driver_state(driver) };
    // SAFETY: the blocks DriverEntry allocated, freed once each with their tags.
    unsafe {
        ExFreePoolWithTag((*s).blocks[0], TAG);
        ExFreePool((*s).blocks[1]);
        ExFreePoolWithTag((*s).blocks[2], OTHER_TAG);
    }
    // SAFETY: as for unload_clean.
    unsafe { common::unload_clean(driver) };
}

unsafe extern "C" fn entry_pool_good(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let status = unsafe { entry_with(driver, &[], Some(unload_frees_pool)) };
    // SAFETY: the state of the device just created.
    let s = unsafe { driver_state(driver) };
    // SAFETY: allocations at IRQLs their pool types allow; the transient block is freed.
    unsafe {
        (*s).blocks[0] = ExAllocatePool2(POOL_FLAG_PAGED, 16, TAG);
        let old = KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        (*s).blocks[1] = ExAllocatePool2(POOL_FLAG_NON_PAGED, 16, TAG);
        let transient = ExAllocatePool2(POOL_FLAG_NON_PAGED, 8, TAG);
        ExFreePoolWithTag(transient, TAG);
        KeReleaseSpinLock(&raw mut (*s).lock, old);
        (*s).blocks[2] = ExAllocatePool2(POOL_FLAG_NON_PAGED, 16, OTHER_TAG);
    }
    status
}

#[test]
fn well_behaved_pool_use_passes() {
    let machine = machine();
    let driver = load(&machine, entry_pool_good);
    let stats = machine.pool_stats();
    assert_eq!((stats.allocations, stats.frees, stats.live_blocks), (4, 1, 3));
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    let stats = machine.pool_stats();
    assert_eq!((stats.allocations, stats.frees, stats.live_blocks, stats.live_bytes), (4, 4, 0, 0));
    assert_clean(&machine);
}

// ---------------------------------------------------------------------------------
// What must be gone at unload
// ---------------------------------------------------------------------------------

entry_then!(entry_timer_left_set, |_device, s| {
    // SAFETY: the state's timer, set far in the future and never cancelled: the bug.
    unsafe {
        KeInitializeTimer(&raw mut (*s).timer);
        KeSetTimer(&raw mut (*s).timer, relative_ms(10_000), std::ptr::null_mut());
        print_value("timer", (&raw mut (*s).timer) as u64);
    }
});

/// A timer without a DPC touches nothing of the image: ntsim's own unload check.
#[test]
fn unload_with_a_timer_set_is_ntsim_unload_12() {
    let machine = machine();
    let driver = load(&machine, entry_timer_left_set);
    let v = bugcheck(machine.stop_driver(driver));
    assert_eq!((v.code, v.params), (NTSIM_UNLOAD, [12, printed(&machine, "timer"), 0, 0]), "{v}");
}

entry_then!(entry_timer_with_dpc_left_set, |device, s| {
    // SAFETY: the state's timer and DPC, set far in the future and never cancelled: the bug.
    unsafe {
        KeInitializeDpc(&raw mut (*s).dpc, Some(dpc_noop), std::ptr::null_mut());
        KeInitializeTimer(&raw mut (*s).timer);
        KeSetTimer(&raw mut (*s).timer, relative_ms(10_000), &raw mut (*s).dpc);
        print_image(device);
    }
});

/// The image's range as DriverObject->DriverStart/DriverSize give it.
///
/// # Safety
/// `device` is a live device object of the driver.
unsafe fn print_image(device: PDEVICE_OBJECT) {
    // SAFETY: the device's driver object is live.
    let (start, size) = unsafe { ((*(*device).DriverObject).DriverStart as u64, (*(*device).DriverObject).DriverSize) };
    print_value("start", start);
    print_value("end", start + u64::from(size));
}

/// Verifier's unload check finds the DPC routine of a set timer in the image: 0xC7/2
/// [2, routine, image start, image end].
#[test]
fn unload_with_a_timer_and_dpc_set_is_c7_2() {
    let machine = machine();
    let driver = load(&machine, entry_timer_with_dpc_left_set);
    let v = bugcheck(machine.stop_driver(driver));
    let (start, end) = (printed(&machine, "start"), printed(&machine, "end"));
    let routine = dpc_noop as *const () as u64;
    assert!(start < routine && routine < end, "the routine lies in the image");
    assert_eq!((v.code, v.params), (0xC7, [2, routine, start, end]), "{v}");
}

unsafe extern "C" fn dpc_noop(_dpc: PRKDPC, _context: PVOID, _a1: PVOID, _a2: PVOID) {}

unsafe extern "C" fn unload_queues_dpc(driver: PDRIVER_OBJECT) {
    // SAFETY: our device's state, read before the device goes.
    let s = unsafe { driver_state(driver) };
    // SAFETY: as for unload_clean.
    unsafe { common::unload_clean(driver) };
    // SAFETY: the state's DPC (leaked memory, so it outlives the device); queueing it
    // as the last thing Unload does is the bug.
    unsafe { KeInsertQueueDpc(&raw mut (*s).dpc, std::ptr::null_mut(), std::ptr::null_mut()) };
}

unsafe extern "C" fn entry_dpc_left_queued(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let status = unsafe { entry_with(driver, &[], Some(unload_queues_dpc)) };
    // SAFETY: the state of the device just created.
    let s = unsafe { driver_state(driver) };
    // SAFETY: the state's DPC.
    unsafe { KeInitializeDpc(&raw mut (*s).dpc, Some(dpc_noop), std::ptr::null_mut()) };
    // SAFETY: the device just created.
    unsafe { print_image((*driver).DeviceObject) };
    status
}

#[test]
fn unload_with_a_dpc_queued_is_c7_2() {
    let machine = machine();
    let driver = load(&machine, entry_dpc_left_queued);
    let v = bugcheck(machine.stop_driver(driver));
    let (start, end) = (printed(&machine, "start"), printed(&machine, "end"));
    assert_eq!((v.code, v.params), (0xC7, [2, dpc_noop as *const () as u64, start, end]), "{v}");
}

entry_then!(entry_work_item_not_freed, |device, s| {
    // SAFETY: a work item for our device, never freed: the bug.
    let item = unsafe { IoAllocateWorkItem(device) };
    print_value("item", item as u64);
    // SAFETY: the state's field.
    unsafe { (*s).work_item.store(item, Ordering::SeqCst) };
});

#[test]
fn unload_with_a_work_item_allocated_is_ntsim_unload_1() {
    let machine = machine();
    let driver = load(&machine, entry_work_item_not_freed);
    let v = bugcheck(machine.stop_driver(driver));
    assert_check(&v, NTSIM_UNLOAD, 1);
    assert_eq!(v.params[1], printed(&machine, "item"));
}

unsafe extern "C" fn work_noop(_device: PDEVICE_OBJECT, _context: PVOID) {}

unsafe extern "C" fn unload_queues_work(driver: PDRIVER_OBJECT) {
    // SAFETY: our device's state.
    let s = unsafe { driver_state(driver) };
    // SAFETY: as above.
    let item = unsafe { (*s).work_item.load(Ordering::SeqCst) };
    // SAFETY: our allocated item; queueing it and unloading without waiting is the bug.
    unsafe { IoQueueWorkItem(item, Some(work_noop), _WORK_QUEUE_TYPE::DelayedWorkQueue, std::ptr::null_mut()) };
    // SAFETY: as for unload_clean.
    unsafe { common::unload_clean(driver) };
}

unsafe extern "C" fn entry_work_queued_at_unload(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let status = unsafe { entry_with(driver, &[], Some(unload_queues_work)) };
    // SAFETY: our first device and its state.
    unsafe {
        let item = IoAllocateWorkItem((*driver).DeviceObject);
        (*driver_state(driver)).work_item.store(item, Ordering::SeqCst);
    }
    status
}

#[test]
fn unload_with_a_work_item_queued_is_ntsim_unload_1() {
    // No worker threads: the queued item stays queued.
    let machine = Machine::new(Config { workers: 0, ..Config::seeded(1) });
    let driver = load(&machine, entry_work_queued_at_unload);
    let v = bugcheck(machine.stop_driver(driver));
    assert_check(&v, NTSIM_UNLOAD, 1);
    assert!(v.explanation.contains("queued or running"), "{v}");
}

unsafe extern "C" fn thread_waits_for_event(context: PVOID) {
    let s = context.cast::<State>();
    // SAFETY: the state's event (leaked memory, valid for as long as the thread waits).
    unsafe { wait((&raw mut (*s).event).cast(), None) };
}

entry_then!(entry_thread_left_running, |_device, s| {
    // SAFETY: the state's event, a thread waiting on it, and its handle closed at once.
    // Unload never signals the event: the bug.
    unsafe {
        KeInitializeEvent(&raw mut (*s).event, _EVENT_TYPE::NotificationEvent, 0);
        let mut handle: HANDLE = std::ptr::null_mut();
        let _ = PsCreateSystemThread(
            &raw mut handle,
            THREAD_ALL_ACCESS,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            Some(thread_waits_for_event),
            s.cast(),
        );
        let _ = ZwClose(handle);
    }
});

#[test]
fn unload_with_a_system_thread_running_is_ntsim_unload_2() {
    let machine = machine();
    let driver = load(&machine, entry_thread_left_running);
    let v = bugcheck(machine.stop_driver(driver));
    assert_check(&v, NTSIM_UNLOAD, 2);
}

unsafe extern "C" fn unload_keeps_thread_reference(driver: PDRIVER_OBJECT) {
    // SAFETY: our device's state.
    let s = unsafe { driver_state(driver) };
    // SAFETY: the referenced thread object; waiting for it is right, keeping the
    // reference is the bug.
    unsafe { wait((*s).thread, None) };
    // SAFETY: as for unload_clean.
    unsafe { common::unload_clean(driver) };
}

unsafe extern "C" fn entry_thread_reference_kept(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let status = unsafe { entry_with(driver, &[], Some(unload_keeps_thread_reference)) };
    // SAFETY: the state of the device just created.
    unsafe { start_thread(driver_state(driver), thread_returns) };
    status
}

#[test]
fn unload_holding_a_thread_object_reference_is_ntsim_unload_5() {
    let machine = machine();
    let driver = load(&machine, entry_thread_reference_kept);
    let v = bugcheck(machine.stop_driver(driver));
    assert_check(&v, NTSIM_UNLOAD, 5);
    assert_eq!(v.params[1], printed(&machine, "thread"));
}

unsafe extern "C" fn unload_leaves_handle_open(driver: PDRIVER_OBJECT) {
    let mut handle: HANDLE = std::ptr::null_mut();
    // SAFETY: a handle to our live device; never closing it is the bug.
    unsafe {
        let _ = ObOpenObjectByPointer(
            (*driver).DeviceObject.cast(),
            OBJ_KERNEL_HANDLE,
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            _MODE::KernelMode as i8,
            &raw mut handle,
        );
    }
    print_value("handle", handle as u64);
    // SAFETY: as for unload_clean.
    unsafe { common::unload_clean(driver) };
}
unload_driver!(entry_handle_left_open, unload_leaves_handle_open);

#[test]
fn unload_with_a_kernel_handle_open_is_ntsim_unload_5() {
    let machine = machine();
    let driver = load(&machine, entry_handle_left_open);
    let v = bugcheck(machine.stop_driver(driver));
    assert_check(&v, NTSIM_UNLOAD, 5);
    assert_eq!(v.params[1], printed(&machine, "handle"));
}

unsafe extern "C" fn unload_keeps_device(_driver: PDRIVER_OBJECT) {
    delete_link(LINK);
}
unload_driver!(entry_device_left, unload_keeps_device);

#[test]
fn unload_leaving_a_device_is_ntsim_unload_3() {
    let machine = machine();
    let driver = load(&machine, entry_device_left);
    let v = bugcheck(machine.stop_driver(driver));
    assert_check(&v, NTSIM_UNLOAD, 3);
    assert!(v.explanation.contains(DEVICE), "{v}");
}

const ALIAS: &str = r"\??\NtsimCheckAlias";

unsafe extern "C" fn entry_link_left(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object; Unload is the clean one, which does not know
    // about the alias: the bug.
    let status = unsafe { entry_with(driver, &[], None) };
    if status == STATUS_SUCCESS { create_link(ALIAS, LINK) } else { status }
}

#[test]
fn unload_leaving_a_symbolic_link_is_ntsim_unload_4() {
    let machine = machine();
    let driver = load(&machine, entry_link_left);
    // The alias resolves through the link while the driver runs.
    let process = machine.new_process();
    let handle = process.open(r"\\.\NtsimCheckAlias", false).unwrap().expect("alias opens the device");
    process.close(handle).unwrap();
    let v = bugcheck(machine.stop_driver(driver));
    assert_check(&v, NTSIM_UNLOAD, 4);
    assert!(v.explanation.contains("NTSIMCHECKALIAS"), "{v}");
}

unsafe extern "C" fn unload_device_before_link(driver: PDRIVER_OBJECT) {
    // SAFETY: our device, deleted while the link still names it: the bug.
    unsafe { IoDeleteDevice((*driver).DeviceObject) };
    delete_link(LINK);
}

unsafe extern "C" fn entry_device_before_link(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let status = unsafe { entry_with(driver, &[], Some(unload_device_before_link)) };
    // SAFETY: the device just created.
    print_value("device", unsafe { (*driver).DeviceObject } as u64);
    status
}

#[test]
fn deleting_the_device_before_its_link_is_ntsim_1() {
    let machine = machine();
    let driver = load(&machine, entry_device_before_link);
    let v = bugcheck(machine.stop_driver(driver));
    assert_check(&v, NTSIM, 1);
    assert_eq!(v.params[1], printed(&machine, "device"));
    assert_eq!(v.routine, ntsim::trace::Routine::Unload);
}

unsafe extern "C" fn unload_deletes_twice(driver: PDRIVER_OBJECT) {
    // SAFETY: our device's address, read while it is live.
    let device = unsafe { (*driver).DeviceObject };
    print_value("device", device as u64);
    delete_link(LINK);
    // SAFETY: the second IoDeleteDevice is the bug.
    unsafe {
        IoDeleteDevice(device);
        IoDeleteDevice(device);
    }
}
unload_driver!(entry_deletes_twice, unload_deletes_twice);

#[test]
fn deleting_a_device_twice_is_c9_240() {
    let machine = machine();
    let driver = load(&machine, entry_deletes_twice);
    let v = bugcheck(machine.stop_driver(driver));
    assert_eq!((v.code, v.params), (C9, [0x240, 0, 0, printed(&machine, "device")]), "{v}");
}

// ---------------------------------------------------------------------------------
// Object references and work items
// ---------------------------------------------------------------------------------

entry_then!(entry_thread_dereferenced_twice, |_device, s| {
    // SAFETY: the state's thread object: one reference is ours, released twice: the bug.
    unsafe {
        start_thread(s, thread_returns);
        wait((*s).thread, None);
        ObfDereferenceObject((*s).thread);
        ObfDereferenceObject((*s).thread);
    }
});

#[test]
fn dereferencing_a_thread_object_twice_is_c4_3f() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_thread_dereferenced_twice));
    assert_eq!(
        (v.code, v.params),
        (C4, [0x3F, printed(&machine, "thread"), u64::MAX, 0]),
        "[rule, object, new count -1, 0]"
    );
}

unsafe extern "C" fn create_dereferences_file(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: a create IRP names its file object.
    let file = unsafe { (*stack(irp)).FileObject };
    print_value("file", file as u64);
    // SAFETY: a reference the driver never took: the bug.
    unsafe { ObfDereferenceObject(file.cast()) };
    // SAFETY: as for dispatch_basic.
    unsafe { common::dispatch_basic(device, irp) }
}

unsafe extern "C" fn entry_create_dereferences_file(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    unsafe { entry_with(driver, &[(IRP_MJ_CREATE, Some(create_dereferences_file))], None) }
}

#[test]
fn dereferencing_an_unreferenced_file_object_is_c4_3f() {
    let machine = machine();
    load(&machine, entry_create_dereferences_file);
    let v = bugcheck(machine.new_process().open(PATH, false));
    assert_eq!(
        (v.code, v.params),
        (C4, [0x3F, printed(&machine, "file"), u64::MAX, 0]),
        "[rule, object, new count -1, 0]"
    );
    assert_eq!(v.routine, ntsim::trace::Routine::Dispatch(IRP_MJ_CREATE as u8));
}

fn no_workers() -> Machine {
    Machine::new(Config { workers: 0, ..Config::seeded(1) })
}

entry_then!(entry_frees_queued_item, |device, _s| {
    // SAFETY: our device's work item, freed while queued: the bug.
    unsafe {
        let item = IoAllocateWorkItem(device);
        print_value("item", item as u64);
        IoQueueWorkItem(item, Some(work_noop), _WORK_QUEUE_TYPE::DelayedWorkQueue, std::ptr::null_mut());
        IoFreeWorkItem(item);
    }
});

#[test]
fn freeing_a_queued_work_item_is_e4_2() {
    let machine = no_workers();
    let v = bugcheck(machine.load_driver("chk", entry_frees_queued_item));
    assert_check(&v, 0xE4, 2);
    assert_eq!(v.params[1], printed(&machine, "item"));
    assert_eq!(v.params[2], work_noop as *const () as u64, "P3 is the I/O worker routine");
}

entry_then!(entry_queues_item_twice, |device, _s| {
    // SAFETY: our device's work item, queued again while queued: the bug.
    unsafe {
        let item = IoAllocateWorkItem(device);
        print_value("item", item as u64);
        IoQueueWorkItem(item, Some(work_noop), _WORK_QUEUE_TYPE::DelayedWorkQueue, std::ptr::null_mut());
        IoQueueWorkItem(item, Some(work_noop), _WORK_QUEUE_TYPE::DelayedWorkQueue, std::ptr::null_mut());
    }
});

#[test]
fn queueing_a_queued_work_item_is_e4_1() {
    let machine = no_workers();
    let v = bugcheck(machine.load_driver("chk", entry_queues_item_twice));
    assert_check(&v, 0xE4, 1);
    assert_eq!(v.params[1], printed(&machine, "item"));
    assert!(v.explanation.contains("already queued"), "{v}");
}

// --- the well-behaved driver that owns one of every resource ---------------------

unsafe extern "C" fn good_timer_dpc(_dpc: PRKDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    let s = context.cast::<State>();
    // SAFETY: the state, its timer and event, at DISPATCH_LEVEL.
    unsafe {
        let n = (*s).counter.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 5 {
            KeCancelTimer(&raw mut (*s).timer);
            KeSetEvent(&raw mut (*s).event, 0, 0);
        }
    }
}

unsafe extern "C" fn good_io_timer(device: PDEVICE_OBJECT, _context: PVOID) {
    // SAFETY: our device's state.
    unsafe { (*state(device)).ticks.fetch_add(1, Ordering::SeqCst) };
    print("io timer");
}

unsafe extern "C" fn good_work(device: PDEVICE_OBJECT, _context: PVOID) {
    // SAFETY: our device's state; paged pool at PASSIVE_LEVEL.
    unsafe {
        let s = state(device);
        let block = ExAllocatePool2(POOL_FLAG_PAGED, 100, TAG);
        ExFreePoolWithTag(block, TAG);
        KeSetEvent(&raw mut (*s).done, 0, 0);
    }
    print("work item ran");
}

unsafe extern "C" fn good_thread(context: PVOID) {
    let s = context.cast::<State>();
    // SAFETY: the state's event stays valid until Unload waited for this thread.
    unsafe { wait((&raw mut (*s).event).cast(), None) };
    print("thread exits");
    // SAFETY: a system thread ending itself.
    let _ = unsafe { PsTerminateSystemThread(STATUS_SUCCESS) };
}

unsafe extern "C" fn unload_everything(driver: PDRIVER_OBJECT) {
    // SAFETY: our device's state, read before the device goes.
    let s = unsafe { driver_state(driver) };
    // SAFETY: every object below was initialised in DriverEntry; released in stages.
    unsafe {
        let device = (*driver).DeviceObject;
        // Stage 1: stop new work. Stage 2: cancel and wait for what runs.
        IoStopTimer(device);
        KeCancelTimer(&raw mut (*s).timer);
        KeFlushQueuedDpcs();
        KeSetEvent(&raw mut (*s).event, 0, 0);
        wait((*s).thread, None);
        ObfDereferenceObject((*s).thread);
        wait((&raw mut (*s).done).cast(), None);
        IoFreeWorkItem((*s).work_item.load(Ordering::SeqCst));
        ExFreePoolWithTag((*s).blocks[0], TAG);
        // Stage 3: names, then objects.
        common::unload_clean(driver);
    }
}

unsafe extern "C" fn entry_everything(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let status = unsafe { entry_with(driver, &[], Some(unload_everything)) };
    if status != STATUS_SUCCESS {
        return status;
    }
    // SAFETY: the state of the device just created; every object is initialised before use.
    unsafe {
        let device = (*driver).DeviceObject;
        let s = driver_state(driver);
        (*s).blocks[0] = ExAllocatePool2(POOL_FLAG_NON_PAGED, 256, TAG);
        KeInitializeEvent(&raw mut (*s).event, _EVENT_TYPE::NotificationEvent, 0);
        KeInitializeEvent(&raw mut (*s).done, _EVENT_TYPE::NotificationEvent, 0);
        KeInitializeTimer(&raw mut (*s).timer);
        KeInitializeDpc(&raw mut (*s).dpc, Some(good_timer_dpc), s.cast());
        KeSetTimerEx(&raw mut (*s).timer, relative_ms(1), 1, &raw mut (*s).dpc);
        let _ = IoInitializeTimer(device, Some(good_io_timer), std::ptr::null_mut());
        IoStartTimer(device);
        let item = IoAllocateWorkItem(device);
        (*s).work_item.store(item, Ordering::SeqCst);
        IoQueueWorkItem(item, Some(good_work), _WORK_QUEUE_TYPE::DelayedWorkQueue, std::ptr::null_mut());
        start_thread(s, good_thread);
    }
    STATUS_SUCCESS
}

#[test]
fn well_behaved_driver_releasing_everything_unloads_clean() {
    let machine = machine();
    let driver = load(&machine, entry_everything);
    machine.advance_ms(2_500).unwrap();
    let output = machine.debug_output();
    assert!(output.iter().filter(|l| *l == "io timer").count() >= 2, "{output:#?}");
    assert!(output.contains(&"work item ran".to_owned()), "{output:#?}");
    assert!(output.contains(&"thread exits".to_owned()), "the DPC released the thread: {output:#?}");
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_eq!(machine.pool_stats().live_blocks, 0);
    assert_clean(&machine);
}

#[test]
fn well_behaved_driver_unloads_clean_before_its_work_is_done() {
    // Stopped at once: Unload itself releases the thread and waits for it.
    let machine = machine();
    let driver = load(&machine, entry_everything);
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

// ---------------------------------------------------------------------------------
// The remaining checks: spin-lock IRQL rules, callbacks returning at the wrong IRQL,
// work items freed twice, registry keys left open
// ---------------------------------------------------------------------------------

entry_then!(entry_release_at_passive, |_device, s| {
    // SAFETY: the state's lock's address.
    print_value("lock", unsafe { &raw mut (*s).lock } as u64);
    // SAFETY: an initialised lock released at PASSIVE_LEVEL, never acquired: the bug.
    unsafe { KeReleaseSpinLock(&raw mut (*s).lock, 0) };
});

#[test]
fn releasing_a_spin_lock_at_passive_is_c4_32() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_release_at_passive));
    assert_eq!((v.code, v.params), (C4, [0x32, 0, printed(&machine, "lock"), 0]), "[rule, IRQL, lock, 0]");
}

entry_then!(entry_dpc_level_acquire_at_passive, |_device, s| {
    // SAFETY: the state's lock's address.
    print_value("lock", unsafe { &raw mut (*s).lock } as u64);
    // SAFETY: an initialised lock; the AtDpcLevel variant at PASSIVE_LEVEL is the bug.
    unsafe { KeAcquireSpinLockAtDpcLevel(&raw mut (*s).lock) };
});

#[test]
fn acquiring_at_dpc_level_from_passive_is_c4_40() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_dpc_level_acquire_at_passive));
    assert_eq!((v.code, v.params), (C4, [0x40, 0, printed(&machine, "lock"), 0]), "[rule, IRQL, lock, 0]");
}

/// Releases the cancel lock to DISPATCH_LEVEL instead of Irp->CancelIrql.
unsafe extern "C" fn cancel_wrong_irql(device: PDEVICE_OBJECT, irp: PIRP) {
    // SAFETY: IoCancelIrp hands us the IRP and the cancel lock; the wrong IRQL is the bug.
    unsafe {
        IoReleaseCancelSpinLock(2);
        (*state(device)).pending.store(std::ptr::null_mut(), Ordering::SeqCst);
        complete(irp, STATUS_CANCELLED, 0);
    }
}

unsafe extern "C" fn read_pends_cancel_wrong_irql(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the IRP is ours until the cancel routine takes it.
    unsafe {
        mark_pending(irp);
        (*state(device)).pending.store(irp, Ordering::SeqCst);
        ntsim::inline::IoSetCancelRoutine(irp, Some(cancel_wrong_irql));
    }
    STATUS_PENDING
}
read_driver!(entry_cancel_wrong_irql, read_pends_cancel_wrong_irql);

#[test]
fn cancel_routine_returning_at_dispatch_is_0xc8() {
    let machine = machine();
    load(&machine, entry_cancel_wrong_irql);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    let Issued::Pending(_io) = process.read(handle, 4).unwrap() else { panic!("the read pends") };
    let v = bugcheck(process.main().cancel_io(handle));
    // (current 2 << 16) | (expected PASSIVE_LEVEL << 8) | ntsim's site 4 (cancel routine).
    assert_eq!((v.code, v.params), (0xC8, [0x0002_0004, 0, 0, 0]), "{v}");
}

unsafe extern "C" fn work_returns_at_dispatch(device: PDEVICE_OBJECT, _context: PVOID) {
    // SAFETY: our state's lock; leaving the IRQL raised is the bug.
    unsafe {
        let s = state(device);
        KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        KeReleaseSpinLockFromDpcLevel(&raw mut (*s).lock);
    }
}

entry_then!(entry_work_returns_at_dispatch, |device, s| {
    // SAFETY: our device's work item.
    unsafe {
        let item = IoAllocateWorkItem(device);
        print_value("item", item as u64);
        (*s).work_item.store(item, Ordering::SeqCst);
        IoQueueWorkItem(item, Some(work_returns_at_dispatch), _WORK_QUEUE_TYPE::DelayedWorkQueue, std::ptr::null_mut());
    }
});

#[test]
fn work_item_returning_at_dispatch_is_0xe1() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_work_returns_at_dispatch).and_then(|_| machine.advance_ms(1)));
    let routine = work_returns_at_dispatch as *const () as u64;
    assert_eq!(
        (v.code, v.params),
        (0xE1, [routine, 2, 0, printed(&machine, "item")]),
        "[routine, IRQL, parameter, item]"
    );
    assert!(v.explanation.contains("work item"), "{v}");
}

unsafe extern "C" fn io_timer_keeps_lock(device: PDEVICE_OBJECT, _context: PVOID) {
    // SAFETY: the state's lock's address.
    print_value("lock", unsafe { &raw mut (*state(device)).lock } as u64);
    // SAFETY: our state's lock at DISPATCH_LEVEL; returning with it is the bug.
    unsafe { KeAcquireSpinLockAtDpcLevel(&raw mut (*state(device)).lock) };
}

entry_then!(entry_io_timer_keeps_lock, |device, _s| {
    // SAFETY: our device's IoTimer.
    unsafe {
        let _ = IoInitializeTimer(device, Some(io_timer_keeps_lock), std::ptr::null_mut());
        IoStartTimer(device);
    }
});

#[test]
fn io_timer_returning_with_a_spin_lock_is_ntsim_3() {
    let machine = machine();
    load(&machine, entry_io_timer_keeps_lock);
    let v = bugcheck(machine.advance_ms(1_500));
    assert_eq!((v.code, v.params), (NTSIM, [3, printed(&machine, "lock"), 0, 0]), "{v}");
    assert!(v.explanation.contains("IoTimer returned holding spin lock"), "{v}");
    assert_eq!(machine.now(), ntsim::SECOND, "the first tick, one second after boot");
}

entry_then!(entry_frees_item_twice, |device, _s| {
    // SAFETY: our device's work item, freed twice: the bug.
    unsafe {
        let item = IoAllocateWorkItem(device);
        print_value("item", item as u64);
        IoFreeWorkItem(item);
        IoFreeWorkItem(item);
    }
});

#[test]
fn freeing_a_work_item_twice_is_ntsim_4() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_frees_item_twice));
    assert_check(&v, NTSIM, 4);
    assert_eq!(v.params[1], printed(&machine, "item"));
}

/// Opens the service key (RegistryPath) into the state's handle.
unsafe fn open_service_key(s: *mut State, path: PCUNICODE_STRING) -> NTSTATUS {
    let mut attributes = OBJECT_ATTRIBUTES {
        Length: u32::try_from(size_of::<OBJECT_ATTRIBUTES>()).expect("small"),
        RootDirectory: std::ptr::null_mut(),
        ObjectName: path.cast_mut(),
        Attributes: OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
        SecurityDescriptor: std::ptr::null_mut(),
        SecurityQualityOfService: std::ptr::null_mut(),
    };
    // SAFETY: valid attributes naming the registry path DriverEntry received.
    unsafe { ZwOpenKey(&raw mut (*s).handle, KEY_READ, &raw mut attributes) }
}

unsafe extern "C" fn entry_registry_key_left_open(driver: PDRIVER_OBJECT, path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object; the clean Unload never closes the key: the bug.
    let status = unsafe { entry_with(driver, &[], None) };
    if status != STATUS_SUCCESS {
        return status;
    }
    // SAFETY: the state of the device just created.
    unsafe { open_service_key(driver_state(driver), path) }
}

#[test]
fn unload_with_a_registry_key_open_is_ntsim_unload_8() {
    let machine = machine();
    let driver = load(&machine, entry_registry_key_left_open);
    let v = bugcheck(machine.stop_driver(driver));
    assert_check(&v, NTSIM_UNLOAD, 8);
}

unsafe extern "C" fn unload_closes_key(driver: PDRIVER_OBJECT) {
    // SAFETY: the key DriverEntry opened.
    let _ = unsafe { ZwClose((*driver_state(driver)).handle) };
    // SAFETY: as for unload_clean.
    unsafe { common::unload_clean(driver) };
}

unsafe extern "C" fn entry_registry_key_closed(driver: PDRIVER_OBJECT, path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let status = unsafe { entry_with(driver, &[], Some(unload_closes_key)) };
    if status != STATUS_SUCCESS {
        return status;
    }
    // SAFETY: the state of the device just created.
    unsafe { open_service_key(driver_state(driver), path) }
}

#[test]
fn well_behaved_registry_use_unloads_clean() {
    let machine = machine();
    let driver = load(&machine, entry_registry_key_closed);
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

entry_then!(entry_non_paged_execute, |_device, s| {
    // SAFETY: POOL_FLAG_NON_PAGED_EXECUTE is one of ExAllocatePool2's pool types,
    // valid up to DISPATCH_LEVEL.
    unsafe {
        let block = ExAllocatePool2(POOL_FLAG_NON_PAGED_EXECUTE, 16, TAG);
        let old = KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        let other = ExAllocatePool2(POOL_FLAG_NON_PAGED_EXECUTE, 16, TAG);
        KeReleaseSpinLock(&raw mut (*s).lock, old);
        print(&format!("allocated={}", !block.is_null() && !other.is_null()));
        ExFreePoolWithTag(block, TAG);
        ExFreePoolWithTag(other, TAG);
    }
});

#[test]
fn non_paged_execute_pool_is_a_valid_pool_type() {
    let machine = machine();
    let driver = load(&machine, entry_non_paged_execute);
    assert_eq!(machine.debug_output(), vec!["allocated=true"]);
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

entry_then!(entry_no_pool_type, |_device, _s| {
    // SAFETY: no pool type flag at all: the bug.
    unsafe { ExAllocatePool2(ntsim::wdk_sys::POOL_FLAG_UNINITIALIZED, 16, TAG) };
});

#[test]
fn allocation_without_a_pool_type_is_c4() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_no_pool_type));
    assert_eq!((v.code, v.params), (C4, [0x02, 0, 0, 16]), "[rule, IRQL, pool type (none: 0), size]");
}

// ---------------------------------------------------------------------------------
// Above DISPATCH_LEVEL: a synchronize routine runs at the interrupt's DIRQL
// ---------------------------------------------------------------------------------

const DIRQL: u8 = 5;

unsafe extern "C" fn isr_unclaimed(_interrupt: PKINTERRUPT, _context: PVOID) -> BOOLEAN {
    0
}

/// Connects a virtual interrupt at [`DIRQL`] and runs `routine` synchronized with it.
unsafe fn at_dirql(s: *mut State, routine: unsafe extern "C" fn(PVOID) -> BOOLEAN) {
    let mut interrupt: PKINTERRUPT = std::ptr::null_mut();
    // SAFETY: valid arguments for a latched interrupt on an unused vector.
    let status = unsafe {
        IoConnectInterrupt(
            &raw mut interrupt,
            Some(isr_unclaimed),
            s.cast(),
            std::ptr::null_mut(),
            0x51,
            DIRQL,
            DIRQL,
            _KINTERRUPT_MODE::Latched,
            0,
            1,
            0,
        )
    };
    print(&format!("IoConnectInterrupt={status:#x}"));
    // SAFETY: a connected interrupt object and a routine taking the state.
    unsafe { KeSynchronizeExecution(interrupt, Some(routine), s.cast()) };
}

unsafe extern "C" fn sync_acquires_spin_lock(context: PVOID) -> BOOLEAN {
    let s = context.cast::<State>();
    // SAFETY: the state's lock's address.
    print_value("lock", unsafe { &raw mut (*s).lock } as u64);
    // SAFETY: an initialised lock; acquiring it at DIRQL is the bug.
    unsafe { KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock) };
    1
}

entry_then!(entry_lock_at_dirql, |_device, s| {
    // SAFETY: our state.
    unsafe { at_dirql(s, sync_acquires_spin_lock) };
});

#[test]
fn spin_lock_acquire_above_dispatch_is_c4_42() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_lock_at_dirql));
    assert_eq!(machine.debug_output()[0], "IoConnectInterrupt=0x0");
    assert_eq!(
        (v.code, v.params),
        (C4, [0x42, u64::from(DIRQL), printed(&machine, "lock"), 0]),
        "[rule, IRQL, lock, 0]"
    );
    assert_eq!(v.routine, ntsim::trace::Routine::SynchronizeRoutine);
}

unsafe extern "C" fn sync_waits(context: PVOID) -> BOOLEAN {
    let s = context.cast::<State>();
    // SAFETY: an initialised event; any wait at DIRQL is the bug.
    unsafe {
        print_value("event", (&raw mut (*s).event) as u64);
        wait((&raw mut (*s).event).cast(), Some(0));
    }
    1
}

entry_then!(entry_wait_at_dirql, |_device, s| {
    // SAFETY: our state.
    unsafe {
        KeInitializeEvent(&raw mut (*s).event, _EVENT_TYPE::NotificationEvent, 0);
        at_dirql(s, sync_waits);
    }
});

#[test]
fn wait_above_dispatch_is_c4_120() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_wait_at_dirql));
    assert_check(&v, C4, 0x120);
    assert_wait_params(&machine, &v, DIRQL, Some(0));
}

unsafe extern "C" fn sync_completes(context: PVOID) -> BOOLEAN {
    let s = context.cast::<State>();
    // SAFETY: the IRP the dispatch routine owns; completing it at DIRQL is the bug.
    unsafe { complete((*s).pending.load(Ordering::SeqCst), STATUS_SUCCESS, 0) };
    1
}

unsafe extern "C" fn read_completes_at_dirql(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    print_irp(irp);
    // SAFETY: our state; the IRP is ours.
    unsafe {
        let s = state(device);
        (*s).pending.store(irp, Ordering::SeqCst);
        at_dirql(s, sync_completes);
    }
    STATUS_SUCCESS
}
read_driver!(entry_completes_at_dirql, read_completes_at_dirql);

#[test]
fn completing_above_dispatch_is_c9_0e() {
    let machine = machine();
    load(&machine, entry_completes_at_dirql);
    let v = bugcheck(open_and_read(&machine, 4));
    assert_eq!((v.code, v.params), (C9, [0x0E, u64::from(DIRQL), printed(&machine, "irp"), 0]), "[rule, IRQL, IRP, 0]");
}

unsafe extern "C" fn sync_creates_link(_context: PVOID) -> BOOLEAN {
    // A PASSIVE_LEVEL DDI at DIRQL is still the generic DDI rule.
    create_link(ALIAS, LINK);
    1
}

entry_then!(entry_link_at_dirql, |_device, s| {
    // SAFETY: our state.
    unsafe { at_dirql(s, sync_creates_link) };
});

#[test]
fn passive_ddi_at_dirql_is_c4_2000d() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_link_at_dirql));
    assert_eq!((v.code, v.params[0], v.params[2], v.params[3]), (C4, 0x2000D, 0, 0), "IrqlIoPassive4: {v}");
    assert!(rule_text(&v).starts_with("IrqlIoPassive4:"), "P2 is the rule text");
}

unsafe extern "C" fn sync_allocates(_context: PVOID) -> BOOLEAN {
    // SAFETY: nonpaged pool at DIRQL is the bug.
    unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, 16, TAG) };
    1
}

entry_then!(entry_allocates_at_dirql, |_device, s| {
    // SAFETY: our state.
    unsafe { at_dirql(s, sync_allocates) };
});

#[test]
fn non_paged_pool_above_dispatch_is_c4_02() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_allocates_at_dirql));
    assert_eq!((v.code, v.params), (C4, [0x02, u64::from(DIRQL), 512, 16]), "[rule, IRQL, NonPagedPoolNx, size]");
}

// --- Slow cancel and wild pointers ------------------------------------------------------

unsafe extern "C" fn cancel_forgets_to_complete(_device: PDEVICE_OBJECT, irp: PIRP) {
    // SAFETY: called with the cancel lock held; not completing the IRP is the bug.
    unsafe { IoReleaseCancelSpinLock((*irp).CancelIrql) };
}

unsafe extern "C" fn read_pends_with_lazy_cancel(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    print_irp(irp);
    // SAFETY: the IRP is ours until the cancel routine takes it.
    unsafe {
        mark_pending(irp);
        ntsim::inline::IoSetCancelRoutine(irp, Some(cancel_forgets_to_complete));
    }
    STATUS_PENDING
}
read_driver!(entry_lazy_cancel, read_pends_with_lazy_cancel);

#[test]
fn a_cancelled_irp_left_uncompleted_is_c4_135() {
    let machine = Machine::new(ntsim::Config { slow_cancel: 100 * 10_000, ..ntsim::Config::seeded(1) });
    load(&machine, entry_lazy_cancel);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    let Issued::Pending(read) = process.read(handle, 4).unwrap() else { panic!("the read must pend") };
    process.cancel_io_ex(handle, Some(&read)).unwrap();
    machine.advance_ms(50).unwrap();
    let v = bugcheck(machine.advance_ms(100));
    assert_eq!((v.code, v.params), (C4, [0x135, printed(&machine, "irp"), 100, 0]), "[rule, IRP, ms allowed, 0]");
}

unsafe extern "C" fn read_touches_a_wild_pointer(_device: PDEVICE_OBJECT, _irp: PIRP) -> NTSTATUS {
    // SAFETY: none — reading address 0x10 is the bug this test needs ntsim to catch.
    let value = unsafe { std::ptr::read_volatile(0x10 as *const u64) };
    value as NTSTATUS
}
read_driver!(entry_wild_pointer, read_touches_a_wild_pointer);

#[test]
fn a_page_fault_in_driver_code_is_bug_check_0x50() {
    let machine = machine();
    load(&machine, entry_wild_pointer);
    let v = bugcheck(open_and_read(&machine, 4));
    assert_eq!((v.code, v.params[0]), (0x50, 0x10), "{v}");
    assert_eq!(v.routine, ntsim::trace::Routine::Dispatch(IRP_MJ_READ as u8));
}
