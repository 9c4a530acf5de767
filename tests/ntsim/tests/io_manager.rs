//! The I/O manager and dispatcher semantics Windows is strict about: what defers
//! DriverUnload, the IoTimer and its lock, uninitialised kernel objects, CancelIo and
//! synchronous handles, handle tables. Each mistake is a small driver that breaks on
//! Windows, caught here with the bug-check code and parameters Windows reports.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::doc_markdown,
    reason = "kernel names in docs; IRP_MJ_* and KPROCESSOR_MODE constants narrowed as wdm.h does"
)]

mod common;

use std::sync::atomic::Ordering;

use common::{
    LINK, PATH, State, assert_check, assert_clean, bugcheck, complete, delete_link, driver_state, entry_with, load,
    machine, print, print_value, printed, relative_ms, setup, stack, state, wait,
};
use ntsim::trace::Routine;
use ntsim::wdk_sys::ntddk::{
    IoAllocateWorkItem, IoDeleteDevice, IoFreeWorkItem, IoInitializeTimer, IoQueueWorkItem, IoReleaseCancelSpinLock,
    IoStartTimer, IoStopTimer, KeAcquireInStackQueuedSpinLock, KeAcquireSpinLockAtDpcLevel,
    KeAcquireSpinLockRaiseToDpc, KeFlushQueuedDpcs, KeInitializeDpc, KeInitializeEvent, KeInitializeSemaphore,
    KeInitializeTimer, KeInsertQueueDpc, KeQueryPerformanceCounter, KeReleaseInStackQueuedSpinLock, KeReleaseSemaphore,
    KeReleaseSpinLock, KeReleaseSpinLockFromDpcLevel, KeRemoveQueueDpc, KeSetEvent, KeSetTimer,
    KeWaitForMultipleObjects, KeWaitForSingleObject, ObOpenObjectByPointer, ObReferenceObjectByHandle,
    ObfDereferenceObject, ObfReferenceObject, PsCreateSystemThread, ZwClose, ZwCreateKey,
};
use ntsim::wdk_sys::{
    _EVENT_TYPE, _MODE, _WAIT_TYPE, _WORK_QUEUE_TYPE, ExEventObjectType, HANDLE, IRP_MJ_CLEANUP, IRP_MJ_DEVICE_CONTROL,
    IRP_MJ_READ, KDPC, KEVENT, KEY_ALL_ACCESS, KLOCK_QUEUE_HANDLE, KSEMAPHORE, KTIMER, KWAIT_BLOCK, NTSTATUS,
    OBJ_KERNEL_HANDLE, OBJECT_ATTRIBUTES, PCUNICODE_STRING, PDEVICE_OBJECT, PDRIVER_OBJECT, PIRP, POBJECT_TYPE, PRKDPC,
    PVOID, PsThreadType, REG_OPTION_VOLATILE, STATUS_BUFFER_OVERFLOW, STATUS_CANCELLED, STATUS_CHILD_MUST_BE_VOLATILE,
    STATUS_INVALID_PARAMETER, STATUS_NOT_FOUND, STATUS_OBJECT_TYPE_MISMATCH, STATUS_PENDING,
    STATUS_SEMAPHORE_LIMIT_EXCEEDED, STATUS_SUCCESS, THREAD_ALL_ACCESS,
};
use ntsim::{Config, DriverState, Machine, Mode};

const C9: u32 = 0xC9;
const DPC_WATCHDOG_VIOLATION: u32 = 0x133;
const WORKER_INVALID: u32 = 0xE4;

fn mark() {
    // SAFETY: a NULL frequency pointer is allowed.
    unsafe { KeQueryPerformanceCounter(std::ptr::null_mut()) };
}

/// DriverEntry: [`setup`], then `body` with the device and its state.
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

// ---------------------------------------------------------------------------------
// What defers DriverUnload: open handles (DEVICE_OBJECT.ReferenceCount), nothing else
// ---------------------------------------------------------------------------------

unsafe extern "C" fn work_noop(_device: PDEVICE_OBJECT, _context: PVOID) {}

unsafe extern "C" fn unload_frees_queued_item(driver: PDRIVER_OBJECT) {
    // SAFETY: the state and item DriverEntry made; freeing the item without waiting for
    // its routine is the bug.
    unsafe {
        IoFreeWorkItem((*driver_state(driver)).work_item.load(Ordering::SeqCst));
        common::unload_clean(driver);
    }
}

entry_then!(entry_item_queued_at_stop, |device, s| {
    // SAFETY: our device's work item, queued; Unload does not wait for it.
    unsafe {
        (*(*device).DriverObject).DriverUnload = Some(unload_frees_queued_item);
        let item = IoAllocateWorkItem(device);
        print_value("item", item as u64);
        (*s).work_item.store(item, Ordering::SeqCst);
        IoQueueWorkItem(item, Some(work_noop), _WORK_QUEUE_TYPE::DelayedWorkQueue, std::ptr::null_mut());
    }
});

/// Windows calls DriverUnload while a work item is still queued (the item's reference
/// keeps the device object, not the driver): an Unload that frees it without waiting
/// is 0xE4/0x2 (a queued I/O work item freed).
#[test]
fn unload_freeing_a_still_queued_work_item_is_e4_2() {
    // No worker threads: the item stays queued.
    let machine = Machine::new(Config { workers: 0, ..Config::seeded(1) });
    let driver = load(&machine, entry_item_queued_at_stop);
    let v = bugcheck(machine.stop_driver(driver));
    assert_check(&v, WORKER_INVALID, 2);
    assert_eq!(v.params[1], printed(&machine, "item"));
    assert_eq!(v.params[2], work_noop as *const () as u64);
    assert_eq!(v.routine, Routine::Unload);
}

unsafe extern "C" fn unload_drops_own_reference(driver: PDRIVER_OBJECT) {
    // SAFETY: our only device; its memory stays until our own reference goes.
    unsafe {
        let device = (*driver).DeviceObject;
        common::unload_clean(driver);
        ObfDereferenceObject(device.cast());
    }
    print("unload");
}

entry_then!(entry_keeps_device_reference, |device, _s| {
    // SAFETY: our device; the driver keeps an object reference on it until Unload.
    unsafe {
        (*(*device).DriverObject).DriverUnload = Some(unload_drops_own_reference);
        ObfReferenceObject(device.cast());
    }
});

/// An object reference on the device (ObReferenceObject) does not hold DriverUnload
/// back: only opens do.
#[test]
fn a_device_object_reference_does_not_defer_unload() {
    let machine = machine();
    let driver = load(&machine, entry_keeps_device_reference);
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_eq!(machine.debug_output(), vec!["unload"]);
    assert_clean(&machine);
}

unsafe extern "C" fn create_reports_reference_count(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the device the I/O manager is opening.
    print_value("references", u64::from(unsafe { (*device).ReferenceCount }.cast_unsigned()));
    // SAFETY: forwarded.
    unsafe { common::dispatch_basic(device, irp) }
}

unsafe extern "C" fn ioctl_deletes_device(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: our device, deleted while a handle is open (allowed: the device goes
    // delete-pending); the IRP is ours.
    unsafe {
        delete_link(LINK);
        IoDeleteDevice(device);
        print_value("still listed", u64::from((*(*device).DriverObject).DeviceObject == device));
        complete(irp, STATUS_SUCCESS, 0);
    }
    STATUS_SUCCESS
}

unsafe extern "C" fn unload_after_delete(driver: PDRIVER_OBJECT) {
    // SAFETY: the driver object; its device was deleted by the IOCTL.
    print_value("listed at unload", u64::from(unsafe { !(*driver).DeviceObject.is_null() }));
}

unsafe extern "C" fn entry_deletes_in_ioctl(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    let majors = [
        (ntsim::wdk_sys::IRP_MJ_CREATE, Some(create_reports_reference_count as _)),
        (IRP_MJ_DEVICE_CONTROL, Some(ioctl_deletes_device as _)),
    ];
    // SAFETY: DriverEntry's driver object.
    unsafe { entry_with(driver, &majors, Some(unload_after_delete)) }
}

/// A device deleted while a handle is open stays on its driver's list, delete-pending,
/// and defers DriverUnload until its last CLOSE (ReactOS `IoDeleteDevice`,
/// `IopUnloadDevice`): CLEANUP and CLOSE never arrive after DriverUnload.
#[test]
fn a_deleted_device_with_an_open_handle_defers_unload() {
    let machine = machine();
    let driver = load(&machine, entry_deletes_in_ioctl);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    assert_eq!(printed(&machine, "references"), 1, "ReferenceCount is raised before CREATE");
    let ioctl = process.ioctl(handle, 1, &[], 0).unwrap().done().unwrap();
    assert_eq!(ioctl.status, STATUS_SUCCESS);
    assert_eq!(printed(&machine, "still listed"), 1, "delete-pending, still on DriverObject->DeviceObject");
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::UnloadPending);
    process.close(handle).unwrap();
    machine.wait_unloaded(driver).unwrap();
    assert_eq!(printed(&machine, "listed at unload"), 0, "unlinked once its last CLOSE was sent");
    let output = machine.debug_output();
    let at = |line: &str| output.iter().position(|l| l.starts_with(line)).unwrap();
    assert!(at("close") < at("listed at unload"), "{output:#?}");
    assert_clean(&machine);
}

unsafe extern "C" fn ioctl_deletes_every_device(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: our driver object. The loop assumes IoDeleteDevice unlinks at once, which
    // it does not while a handle is open: the second iteration deletes the same device.
    unsafe {
        let driver = (*device).DriverObject;
        delete_link(LINK);
        print_value("device", device as u64);
        while !(*driver).DeviceObject.is_null() {
            IoDeleteDevice((*driver).DeviceObject);
        }
        complete(irp, STATUS_SUCCESS, 0);
    }
    STATUS_SUCCESS
}

unsafe extern "C" fn entry_delete_loop(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    unsafe { entry_with(driver, &[(IRP_MJ_DEVICE_CONTROL, Some(ioctl_deletes_every_device))], None) }
}

#[test]
fn deleting_devices_until_the_list_is_empty_with_a_handle_open_is_c9_240() {
    let machine = machine();
    load(&machine, entry_delete_loop);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    let v = bugcheck(process.ioctl(handle, 1, &[], 0));
    assert_eq!((v.code, v.params), (C9, [0x240, 0, 0, printed(&machine, "device")]), "{v}");
}

// ---------------------------------------------------------------------------------
// The IoTimer and IopTimerLock
// ---------------------------------------------------------------------------------

unsafe extern "C" fn io_timer_stops_itself(device: PDEVICE_OBJECT, _context: PVOID) {
    print("tick");
    // SAFETY: our device's IoTimer; stopping it from its own routine is the bug.
    unsafe { IoStopTimer(device) };
}

entry_then!(entry_io_timer_stops_itself, |device, _s| {
    // SAFETY: our device's IoTimer.
    unsafe {
        let _ = IoInitializeTimer(device, Some(io_timer_stops_itself), std::ptr::null_mut());
        IoStartTimer(device);
    }
});

/// IoTimer routines run holding IopTimerLock, which IoStopTimer takes: the processor
/// spins on a lock it holds, and the DPC watchdog fires (0x133, P1 = 0: a single DPC).
#[test]
fn io_stop_timer_inside_the_io_timer_routine_is_0x133() {
    let machine = machine();
    load(&machine, entry_io_timer_stops_itself);
    let v = bugcheck(machine.advance_ms(1_500));
    assert_eq!((v.code, v.params), (DPC_WATCHDOG_VIOLATION, [0, 0, 0, 0]), "{v}");
    assert_eq!(v.routine, Routine::IoTimer);
    assert!(v.explanation.contains("IopTimerLock"), "{v}");
    assert_eq!(machine.debug_output(), vec!["tick"]);
}

unsafe extern "C" fn io_timer_takes_lock(device: PDEVICE_OBJECT, _context: PVOID) {
    // SAFETY: our state's lock, at DISPATCH_LEVEL.
    unsafe {
        let s = state(device);
        KeAcquireSpinLockAtDpcLevel(&raw mut (*s).lock);
        KeReleaseSpinLockFromDpcLevel(&raw mut (*s).lock);
    }
}

unsafe extern "C" fn read_stops_timer_under_lock(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: our state's lock and IoTimer; IoStopTimer under the lock the IoTimer
    // routine takes is the bug (ABBA with IopTimerLock).
    unsafe {
        let s = state(device);
        let old = KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        IoStopTimer(device);
        KeReleaseSpinLock(&raw mut (*s).lock, old);
        complete(irp, STATUS_SUCCESS, 0);
    }
    STATUS_SUCCESS
}

entry_then!(entry_stop_timer_under_lock, |device, _s| {
    // SAFETY: our device's IoTimer and read routine.
    unsafe {
        (*(*device).DriverObject).MajorFunction[IRP_MJ_READ as usize] = Some(read_stops_timer_under_lock);
        let _ = IoInitializeTimer(device, Some(io_timer_takes_lock), std::ptr::null_mut());
        IoStartTimer(device);
    }
});

/// One schedule of a read racing the IoTimer tick: `Ok` or the bug check.
fn tick_races_read(mode: Mode) -> Result<(), ntsim::Stopped> {
    let machine = Machine::new(Config { mode, ..Config::default() });
    load(&machine, entry_stop_timer_under_lock);
    let thread = machine.new_process().main();
    let handle = thread.open(PATH, true)?.unwrap();
    machine.tick(ntsim::SECOND);
    let read = thread.post_read(handle, 4);
    machine.run_until_idle();
    machine.verdict()?;
    assert_eq!(read.completion().map(|r| r.status), Some(STATUS_SUCCESS));
    Ok(())
}

/// IoStopTimer while holding a lock that the IoTimer routine takes: the tick holds
/// IopTimerLock and spins on the driver's lock, the reader holds the driver's lock and
/// spins on IopTimerLock. Caught on the schedules where both got their first lock, as
/// 0x133 with P1 = 0 (the tick is a DPC); the other schedules are clean.
#[test]
fn io_stop_timer_under_a_lock_the_io_timer_routine_takes_is_0x133() {
    let mut caught = 0;
    for seed in 0..200 {
        match tick_races_read(Mode::Seeded(seed)) {
            Ok(()) => {}
            Err(ntsim::Stopped::BugCheck(v)) => {
                assert_eq!((v.code, v.params), (DPC_WATCHDOG_VIOLATION, [0, 0, 0, 0]), "seed {seed}: {v}");
                assert!(v.explanation.contains("IopTimerLock"), "{v}");
                caught += 1;
            }
            Err(other) => panic!("seed {seed}: {other}"),
        }
    }
    assert!(caught > 0, "some schedule interleaves the two lock acquisitions");
}

unsafe extern "C" fn io_timer_slow(_device: PDEVICE_OBJECT, _context: PVOID) {
    print("tick begins");
    mark();
    mark();
    print("tick ends");
}

unsafe extern "C" fn read_stops_timer(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: our IoTimer, stopped outside any lock; the IRP is ours.
    unsafe {
        IoStopTimer(device);
        print("stopped");
        complete(irp, STATUS_SUCCESS, 0);
    }
    STATUS_SUCCESS
}

entry_then!(entry_slow_io_timer, |device, _s| {
    // SAFETY: our device's IoTimer and read routine.
    unsafe {
        (*(*device).DriverObject).MajorFunction[IRP_MJ_READ as usize] = Some(read_stops_timer);
        let _ = IoInitializeTimer(device, Some(io_timer_slow), std::ptr::null_mut());
        IoStartTimer(device);
    }
});

/// IoStopTimer waits for an IoTimer routine running on another processor: "stopped"
/// never appears inside a tick, on any schedule, and on some schedules IoStopTimer was
/// called while the tick ran.
#[test]
fn io_stop_timer_waits_for_a_running_io_timer_routine() {
    let mut waited = 0;
    for seed in 0..100 {
        let machine = Machine::new(Config::seeded(seed));
        load(&machine, entry_slow_io_timer);
        let thread = machine.new_process().main();
        let handle = thread.open(PATH, true).unwrap().unwrap();
        machine.tick(ntsim::SECOND);
        let read = thread.post_read(handle, 4);
        machine.run_until_idle();
        assert_clean(&machine);
        assert_eq!(read.completion().map(|r| r.status), Some(STATUS_SUCCESS));
        let output = machine.debug_output();
        if let Some(begin) = output.iter().position(|l| l == "tick begins") {
            let end = output.iter().position(|l| l == "tick ends").unwrap();
            let stopped = output.iter().position(|l| l == "stopped").unwrap();
            assert!(stopped < begin || stopped > end, "seed {seed}: {output:#?}");
            let trace = machine.trace();
            let call = |api: &str| trace.iter().position(|c| c.api == api).unwrap();
            let first_mark = call("KeQueryPerformanceCounter");
            if call("IoStopTimer") < first_mark && stopped > end {
                waited += 1;
            }
        }
    }
    assert!(waited > 0, "some schedule calls IoStopTimer during a tick");
}

entry_then!(entry_starts_uninitialised_timer, |device, _s| {
    print_value("device", device as u64);
    // SAFETY: our device, which has no IoTimer: the bug.
    unsafe { IoStartTimer(device) };
});

/// IoStartTimer reads DeviceObject->Timer->TimerFlag under IopTimerLock with no NULL
/// check: a read of address 2 at DISPATCH_LEVEL, 0x0A.
#[test]
fn io_start_timer_without_io_initialize_timer_is_0x0a() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_starts_uninitialised_timer));
    assert_eq!(v.code, 0x0A, "{v}");
    assert_eq!(&v.params[..3], &[2, 2, 0], "{v}");
    assert_ne!(v.params[3], 0, "P4: the instruction that faulted (in IoStartTimer)");
}

entry_then!(entry_stops_uninitialised_timer, |device, _s| {
    // SAFETY: our device, which has no IoTimer (IoInitializeTimer failed and the driver
    // ignored it): the bug.
    unsafe {
        let _ = IoInitializeTimer(device, Some(io_timer_slow), std::ptr::null_mut());
        IoStopTimer(device);
    }
});

/// The case fault injection produces: IoInitializeTimer fails, the driver ignores it.
#[test]
fn io_stop_timer_after_a_failed_io_initialize_timer_is_0x0a() {
    let machine = machine();
    machine.faults().fail_nth("IoInitializeTimer", 1);
    let v = bugcheck(machine.load_driver("chk", entry_stops_uninitialised_timer));
    assert_eq!(v.code, 0x0A, "{v}");
    assert_eq!(&v.params[..3], &[2, 2, 0], "{v}");
}

entry_then!(entry_initialises_timer_twice, |device, _s| {
    print_value("device", device as u64);
    // SAFETY: our device; the second IoInitializeTimer is the bug.
    unsafe {
        let _ = IoInitializeTimer(device, Some(io_timer_slow), std::ptr::null_mut());
        let _ = IoInitializeTimer(device, Some(io_timer_slow), std::ptr::null_mut());
    }
});

#[test]
fn a_second_io_initialize_timer_is_c9_0a() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_initialises_timer_twice));
    assert_eq!((v.code, v.params), (C9, [0x0A, printed(&machine, "device"), 0, 0]), "{v}");
}

unsafe extern "C" fn io_timer_prints(_device: PDEVICE_OBJECT, _context: PVOID) {
    print("tick");
}

unsafe extern "C" fn cleanup_starts_timer(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: our device's IoTimer; the unload is pending by now.
    unsafe { IoStartTimer(device) };
    // SAFETY: forwarded.
    unsafe { common::dispatch_basic(device, irp) }
}

entry_then!(entry_starts_timer_in_cleanup, |device, _s| {
    // SAFETY: our device's IoTimer (initialised, not started) and CLEANUP routine.
    unsafe {
        (*(*device).DriverObject).MajorFunction[IRP_MJ_CLEANUP as usize] = Some(cleanup_starts_timer);
        let _ = IoInitializeTimer(device, Some(io_timer_prints), std::ptr::null_mut());
    }
});

/// Once the unload is pending, IoStartTimer does nothing (ReactOS checks
/// DOE_UNLOAD_PENDING first).
#[test]
fn io_start_timer_while_the_unload_is_pending_is_ignored() {
    let machine = machine();
    let driver = load(&machine, entry_starts_timer_in_cleanup);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::UnloadPending);
    process.close(handle).unwrap();
    machine.wait_unloaded(driver).unwrap();
    machine.advance_ms(3_000).unwrap();
    assert!(!machine.debug_output().contains(&"tick".to_owned()), "{:#?}", machine.debug_output());
    assert_clean(&machine);
}

entry_then!(entry_io_timer_left_running, |device, _s| {
    // SAFETY: our device; the clean Unload never calls IoStopTimer, and IoDeleteDevice
    // removes the started timer itself.
    unsafe {
        let _ = IoInitializeTimer(device, Some(io_timer_prints), std::ptr::null_mut());
        IoStartTimer(device);
    }
});

/// IoDeleteDevice removes a started IoTimer (ReactOS IoDeleteDevice →
/// IopRemoveTimerFromTimerList): no IoStopTimer is needed first.
#[test]
fn deleting_a_device_with_its_io_timer_started_is_legal() {
    let machine = machine();
    let driver = load(&machine, entry_io_timer_left_running);
    machine.advance_ms(1_500).unwrap();
    assert_eq!(machine.debug_output(), vec!["tick"]);
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    machine.advance_ms(3_000).unwrap();
    assert_eq!(machine.debug_output(), vec!["tick"], "no tick after IoDeleteDevice");
    assert_clean(&machine);
}

// ---------------------------------------------------------------------------------
// Kernel objects never initialised, re-initialised while in use, or with NULL routines
// ---------------------------------------------------------------------------------

entry_then!(entry_sets_zeroed_event, |_device, s| {
    // SAFETY: the state's KEVENT, zeroed and never initialised: the bug.
    unsafe { KeSetEvent(&raw mut (*s).event, 0, 0) };
});

/// KeSetEvent walks the wait list of a zeroed KEVENT: its NULL Flink, at DISPATCH_LEVEL.
#[test]
fn setting_an_event_never_initialised_is_0x0a() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_sets_zeroed_event));
    assert_eq!((v.code, v.params), (0x0A, [0, 2, 0, 0]), "{v}");
    assert!(v.explanation.contains("never initialised"), "{v}");
}

entry_then!(entry_waits_on_zeroed_event, |_device, s| {
    // SAFETY: the state's KEVENT, zeroed and never initialised: the bug.
    unsafe { wait((&raw mut (*s).event).cast(), Some(-10 * 10_000)) };
});

/// A wait that blocks inserts its wait block into the list: a write through NULL.
#[test]
fn waiting_on_an_event_never_initialised_is_0x0a_write() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_waits_on_zeroed_event));
    assert_eq!((v.code, v.params), (0x0A, [0, 2, 1, 0]), "{v}");
}

entry_then!(entry_releases_zeroed_semaphore, |_device, _s| {
    let semaphore: *mut KSEMAPHORE = Box::leak(Box::new(
        // SAFETY: all-zero is a valid (never initialised) KSEMAPHORE bit pattern.
        unsafe { std::mem::zeroed::<KSEMAPHORE>() },
    ));
    // SAFETY: a zeroed KSEMAPHORE that was never initialised: the bug.
    unsafe { KeReleaseSemaphore(semaphore, 0, 1, 0) };
});

#[test]
fn releasing_a_semaphore_never_initialised_is_0x0a() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_releases_zeroed_semaphore));
    assert_eq!((v.code, v.params), (0x0A, [0, 2, 0, 0]), "{v}");
}

entry_then!(entry_moves_initialised_event, |_device, s| {
    // SAFETY: an event initialised in one place and then moved by value into the state
    // (a Rust struct built on the stack and written into its final place): its list head
    // still links to the old place. Signalling the moved copy is the bug.
    unsafe {
        let mut local: KEVENT = std::mem::zeroed();
        KeInitializeEvent(&raw mut local, _EVENT_TYPE::NotificationEvent, 0);
        print_value("old list head", (&raw mut local) as u64 + 8);
        std::ptr::write(&raw mut (*s).event, local);
        KeSetEvent(&raw mut (*s).event, 0, 0);
    }
});

#[test]
fn setting_an_event_moved_after_initialisation_is_0x0a() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_moves_initialised_event));
    assert_eq!(v.code, 0x0A, "{v}");
    assert_eq!(v.params, [printed(&machine, "old list head"), 2, 0, 0], "P1: the stale link the kernel follows");
    assert!(v.explanation.contains("moved"), "{v}");
}

entry_then!(entry_sets_zeroed_timer, |_device, s| {
    // SAFETY: the state's KTIMER, zeroed and never initialised: the bug.
    unsafe { KeSetTimer(&raw mut (*s).timer, relative_ms(10), std::ptr::null_mut()) };
});

#[test]
fn setting_a_timer_never_initialised_is_0x0a() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_sets_zeroed_timer));
    assert_eq!((v.code, v.params), (0x0A, [0, 2, 0, 0]), "{v}");
}

entry_then!(entry_reinitialises_armed_timer, |_device, s| {
    // SAFETY: the state's KTIMER, initialised, set for 10 s, then initialised again
    // while it is still in the timer table: the bug.
    unsafe {
        let timer = &raw mut (*s).timer;
        print_value("timer", timer as u64);
        KeInitializeTimer(timer);
        KeSetTimer(timer, relative_ms(10_000), std::ptr::null_mut());
        KeInitializeTimer(timer);
    }
});

/// Re-initialising a set KTIMER rewrites links the timer table still uses; reported as
/// Verifier reports a live timer in memory being re-used: 0xC7, P1 = 0, P2 = the timer,
/// P3/P4 = the range checked (the KTIMER itself).
#[test]
fn reinitialising_a_set_timer_is_c7_0() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_reinitialises_armed_timer));
    let timer = printed(&machine, "timer");
    assert_eq!((v.code, v.params), (0xC7, [0, timer, timer, timer + size_of::<KTIMER>() as u64]), "{v}");
}

unsafe extern "C" fn dpc_noop(_dpc: PRKDPC, _context: PVOID, _a1: PVOID, _a2: PVOID) {}

entry_then!(entry_reinitialises_queued_dpc, |_device, s| {
    // SAFETY: the state's KDPC, queued and then initialised again: a bug whenever the
    // DPC has not run in between.
    unsafe {
        let dpc = &raw mut (*s).dpc;
        print_value("dpc", dpc as u64);
        KeInitializeDpc(dpc, Some(dpc_noop), std::ptr::null_mut());
        KeInsertQueueDpc(dpc, std::ptr::null_mut(), std::ptr::null_mut());
        KeInitializeDpc(dpc, Some(dpc_noop), std::ptr::null_mut());
    }
});

/// Caught on every schedule where the DPC is still queued at the second
/// KeInitializeDpc; the others are legal and clean.
#[test]
fn reinitialising_a_queued_dpc_is_c7_1() {
    let mut caught = 0;
    for seed in 0..40 {
        let machine = Machine::new(Config::seeded(seed));
        match machine.load_driver("chk", entry_reinitialises_queued_dpc) {
            Ok(_) => assert_clean(&machine),
            Err(ntsim::Stopped::BugCheck(v)) => {
                let dpc = printed(&machine, "dpc");
                assert_eq!((v.code, v.params), (0xC7, [1, dpc, dpc, dpc + size_of::<KDPC>() as u64]), "{v}");
                caught += 1;
            }
            Err(other) => panic!("seed {seed}: {other}"),
        }
    }
    assert!(caught > 0, "some schedule re-initialises the DPC while it is queued");
}

entry_then!(entry_queues_null_dpc, |_device, s| {
    // SAFETY: the state's KDPC, initialised with a NULL routine and queued: the bug.
    unsafe {
        KeInitializeDpc(&raw mut (*s).dpc, None, std::ptr::null_mut());
        KeInsertQueueDpc(&raw mut (*s).dpc, std::ptr::null_mut(), std::ptr::null_mut());
    }
});

entry_then!(entry_queues_zeroed_dpc, |_device, s| {
    // SAFETY: the state's second KDPC, zeroed and never initialised, queued: the bug.
    unsafe { KeInsertQueueDpc(&raw mut (*s).dpc2, std::ptr::null_mut(), std::ptr::null_mut()) };
});

/// The kernel calls the DPC's routine, NULL, at DISPATCH_LEVEL: an instruction fetch
/// from address 0 (0x0A, P3 = 8), whether the routine was NULL or the KDPC never
/// initialised.
#[test]
fn a_dpc_with_a_null_or_no_routine_is_0x0a_execute() {
    for entry in [entry_queues_null_dpc as ntsim::DriverEntry, entry_queues_zeroed_dpc] {
        let machine = machine();
        let v = bugcheck(machine.load_driver("chk", entry).and_then(|_| machine.advance_ms(1)));
        assert_eq!((v.code, v.params), (0x0A, [0, 2, 8, 0]), "{v}");
        assert!(v.thread.ends_with("-dpc"), "{v}");
    }
}

entry_then!(entry_queues_null_work_routine, |device, _s| {
    // SAFETY: our device's work item, queued with a NULL routine: the bug.
    unsafe {
        let item = IoAllocateWorkItem(device);
        print_value("item", item as u64);
        IoQueueWorkItem(item, None, _WORK_QUEUE_TYPE::DelayedWorkQueue, std::ptr::null_mut());
    }
});

#[test]
fn queueing_a_work_item_with_a_null_routine_is_e4_7() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_queues_null_work_routine));
    let queue = u64::from(_WORK_QUEUE_TYPE::DelayedWorkQueue.cast_unsigned());
    assert_eq!((v.code, v.params), (WORKER_INVALID, [7, printed(&machine, "item"), queue, 0]), "{v}");
}

entry_then!(entry_null_io_timer_routine, |device, _s| {
    // SAFETY: our device's IoTimer with a NULL routine, started: the bug.
    unsafe {
        let _ = IoInitializeTimer(device, None, std::ptr::null_mut());
        IoStartTimer(device);
    }
});

#[test]
fn an_io_timer_with_a_null_routine_is_0x0a_execute_at_the_first_tick() {
    let machine = machine();
    load(&machine, entry_null_io_timer_routine);
    let v = bugcheck(machine.advance_ms(1_500));
    assert_eq!((v.code, v.params), (0x0A, [0, 2, 8, 0]), "{v}");
    assert_eq!(machine.now(), ntsim::SECOND);
}

// ---------------------------------------------------------------------------------
// CancelIo, CancelIoEx, synchronous handles, buffered copy-back, thread exit
// ---------------------------------------------------------------------------------

/// Completes the IRP the state holds with STATUS_CANCELLED, from a timer DPC.
unsafe extern "C" fn dpc_completes_cancelled(_dpc: PRKDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    let s = context.cast::<State>();
    // SAFETY: the state the DPC was initialised with; the IRP is ours (its cancel
    // routine ran and parked it there).
    unsafe {
        let irp = (*s).pending.swap(std::ptr::null_mut(), Ordering::SeqCst);
        if !irp.is_null() {
            print("cancelled");
            complete(irp, STATUS_CANCELLED, 0);
        }
    }
}

/// A cancel routine that parks the IRP and completes it 50 ms later.
unsafe extern "C" fn cancel_later(device: PDEVICE_OBJECT, irp: PIRP) {
    // SAFETY: IoCancelIrp called us holding the cancel lock; the IRP is ours.
    unsafe {
        IoReleaseCancelSpinLock((*irp).CancelIrql);
        let s = state(device);
        (*s).pending.store(irp, Ordering::SeqCst);
        KeSetTimer(&raw mut (*s).timer, relative_ms(50), &raw mut (*s).dpc);
    }
}

/// A cancel routine that loses the IRP: it expects CLEANUP to complete it.
unsafe extern "C" fn cancel_forgets(_device: PDEVICE_OBJECT, irp: PIRP) {
    // SAFETY: IoCancelIrp called us holding the cancel lock; not completing the IRP is
    // the bug under test.
    unsafe { IoReleaseCancelSpinLock((*irp).CancelIrql) };
}

unsafe extern "C" fn cancel_now(device: PDEVICE_OBJECT, irp: PIRP) {
    // SAFETY: IoCancelIrp called us holding the cancel lock; the IRP is ours.
    unsafe {
        IoReleaseCancelSpinLock((*irp).CancelIrql);
        (*state(device)).pending.store(std::ptr::null_mut(), Ordering::SeqCst);
        print("cancelled");
        complete(irp, STATUS_CANCELLED, 0);
    }
}

/// Which cancel routine reads get: the state's counter picks it.
fn cancel_routine_for(s: *mut State) -> ntsim::wdk_sys::PDRIVER_CANCEL {
    // SAFETY: the state of a device of this driver.
    match unsafe { (*s).counter.load(Ordering::SeqCst) } {
        0 => Some(cancel_now),
        1 => Some(cancel_later),
        2 => Some(cancel_forgets),
        _ => None,
    }
}

unsafe extern "C" fn read_pends(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    print("read");
    // SAFETY: the IRP is ours until a cancel routine or CLEANUP takes it.
    unsafe {
        let s = state(device);
        common::mark_pending(irp);
        (*s).pending.store(irp, Ordering::SeqCst);
        ntsim::inline::IoSetCancelRoutine(irp, cancel_routine_for(s));
    }
    STATUS_PENDING
}

unsafe extern "C" fn cleanup_completes_pending(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the state's pending IRP: CLEANUP completes it when it can take it from its
    // cancel routine, or when the design leaves that to CLEANUP (kinds 2 and 3).
    unsafe {
        let s = state(device);
        let pending = (*s).pending.swap(std::ptr::null_mut(), Ordering::SeqCst);
        if !pending.is_null() {
            let owned = ntsim::inline::IoSetCancelRoutine(pending, None).is_some();
            if owned || (*s).counter.load(Ordering::SeqCst) >= 2 {
                print("cleanup completes the read");
                complete(pending, STATUS_CANCELLED, 0);
            }
        }
        common::dispatch_basic(device, irp)
    }
}

/// IOCTL 1: four bytes with STATUS_BUFFER_OVERFLOW; 2: the same, reporting 16 bytes;
/// 3: an error status reporting 16 bytes.
unsafe extern "C" fn ioctl_overflows(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    print_value("device", device as u64);
    // SAFETY: a METHOD_BUFFERED IOCTL with an 8-byte output buffer; the IRP is ours.
    unsafe {
        let code = (*stack(irp)).Parameters.DeviceIoControl.IoControlCode;
        let buffer = (*irp).AssociatedIrp.SystemBuffer.cast::<u8>();
        std::ptr::copy_nonoverlapping([1u8, 2, 3, 4].as_ptr(), buffer, 4);
        let (status, information) = match code {
            1 => (STATUS_BUFFER_OVERFLOW, 4),
            2 => (STATUS_BUFFER_OVERFLOW, 16),
            _ => (STATUS_INVALID_PARAMETER, 16),
        };
        print_irp(irp);
        complete(irp, status, information);
        status
    }
}

fn print_irp(irp: PIRP) {
    print_value("irp", irp as u64);
}

/// DriverEntry of this section's driver; `cancel_kind` picks the cancel routine of
/// its reads (see [`cancel_routine_for`]).
unsafe fn io_entry(driver: PDRIVER_OBJECT, cancel_kind: u32) -> NTSTATUS {
    let majors = [
        (IRP_MJ_READ, Some(read_pends as _)),
        (IRP_MJ_CLEANUP, Some(cleanup_completes_pending as _)),
        (IRP_MJ_DEVICE_CONTROL, Some(ioctl_overflows as _)),
    ];
    // SAFETY: DriverEntry's driver object.
    let status = unsafe { entry_with(driver, &majors, None) };
    if status != STATUS_SUCCESS {
        return status;
    }
    // SAFETY: the state of the device just created.
    unsafe {
        let s = driver_state(driver);
        (*s).counter.store(cancel_kind, Ordering::SeqCst);
        KeInitializeTimer(&raw mut (*s).timer);
        KeInitializeDpc(&raw mut (*s).dpc, Some(dpc_completes_cancelled), s.cast());
    }
    status
}

macro_rules! io_entry {
    ($name:ident, $kind:expr) => {
        unsafe extern "C" fn $name(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
            // SAFETY: forwarded from the I/O manager.
            unsafe { io_entry(driver, $kind) }
        }
    };
}
io_entry!(entry_cancel_now, 0);
io_entry!(entry_cancel_later, 1);
io_entry!(entry_cancel_forgets, 2);
io_entry!(entry_not_cancellable, 3);

fn pending(issued: ntsim::Issued) -> ntsim::PendingIo {
    match issued {
        ntsim::Issued::Pending(io) => io,
        ntsim::Issued::Done(r) => panic!("expected the read to pend: {r:?}"),
    }
}

/// CancelIo returns only once the cancelled request completed (here 50 ms later).
#[test]
fn cancel_io_waits_until_the_cancelled_request_completed() {
    let machine = machine();
    load(&machine, entry_cancel_later);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    let read = pending(process.read(handle, 4).unwrap());
    let before = machine.now();
    assert_eq!(process.main().cancel_io(handle).unwrap(), STATUS_SUCCESS);
    assert_eq!(read.result().map(|r| r.status), Some(STATUS_CANCELLED), "completed before CancelIo returned");
    assert!(machine.now() - before >= 50 * 10_000, "CancelIo waited for the completion 50 ms later");
    assert_clean(&machine);
}

/// A cancel routine that loses the IRP leaves CancelIo waiting for good: it has not
/// returned after 4 s, and Verifier's slow-cancel rule fires at 5 s (0xC4/0x135).
#[test]
fn cancel_io_after_a_lost_cancel_never_returns() {
    let machine = machine();
    load(&machine, entry_cancel_forgets);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    let read = pending(process.read(handle, 4).unwrap());
    let cancel = process.main().post_cancel_io(handle);
    machine.advance_ms(4_000).unwrap();
    assert_eq!(cancel.get(), None, "CancelIo is still waiting");
    let v = bugcheck(machine.advance_ms(2_000));
    assert_check(&v, 0xC4, 0x135);
    assert!(read.result().is_none());
}

#[test]
fn cancel_io_ex_with_nothing_to_cancel_is_not_found() {
    let machine = machine();
    load(&machine, entry_cancel_now);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    assert_eq!(process.cancel_io_ex(handle, None).unwrap(), STATUS_NOT_FOUND);
    let read = pending(process.read(handle, 4).unwrap());
    assert_eq!(process.cancel_io_ex(handle, Some(&read)).unwrap(), STATUS_SUCCESS);
    assert_eq!(read.result().map(|r| r.status), Some(STATUS_CANCELLED));
    assert_eq!(process.cancel_io_ex(handle, Some(&read)).unwrap(), STATUS_NOT_FOUND, "already completed");
    assert_eq!(process.main().cancel_io(handle).unwrap(), STATUS_SUCCESS, "CancelIo has no such status");
    assert_clean(&machine);
}

/// Requests on a synchronous handle are served one at a time: the second thread's
/// read reaches the driver only once the first read completed.
#[test]
fn a_synchronous_handle_serves_one_request_at_a_time() {
    let machine = machine();
    load(&machine, entry_cancel_now);
    let process = machine.new_process();
    let (t0, t1, t2) = (process.thread(0), process.thread(1), process.thread(2));
    let handle = process.open(PATH, false).unwrap().unwrap();
    let first = t0.post_read(handle, 4);
    let second = t1.post_read(handle, 4);
    machine.run_until_idle();
    let reads = || machine.debug_output().iter().filter(|l| *l == "read").count();
    assert_eq!(reads(), 1, "the second read waits for the file object");
    assert!(first.get().is_none() && second.get().is_none(), "both callers are blocked");
    // The caller whose read reached the driver holds the file object; another thread
    // cancels that read with CancelSynchronousIo.
    let reader = machine.trace().into_iter().find(|c| c.routine == Routine::Dispatch(IRP_MJ_READ as u8)).unwrap();
    let (holder, waiter) = if reader.thread == "p0-t0" { (t0, t1) } else { (t1, t0) };
    assert_eq!(t2.cancel_synchronous_io(&waiter).unwrap(), STATUS_NOT_FOUND, "still waiting for the file object");
    assert_eq!(t2.cancel_synchronous_io(&holder).unwrap(), STATUS_SUCCESS);
    machine.run_until_idle();
    assert_eq!(reads(), 2, "the second read reached the driver after the first completed");
    assert_clean(&machine);
}

/// "CloseHandle from another thread unblocks a synchronous ReadFile" is false on
/// Windows: the close waits for the file object, so IRP_MJ_CLEANUP, which would
/// complete the read, is never sent. A hang.
#[test]
fn closing_a_synchronous_handle_under_a_blocked_read_hangs() {
    let machine = machine();
    load(&machine, entry_not_cancellable);
    let process = machine.new_process();
    let (t0, t1) = (process.thread(0), process.thread(1));
    let handle = process.open(PATH, false).unwrap().unwrap();
    let read = t0.post_read(handle, 4);
    machine.run_until_idle();
    match t1.close(handle) {
        Err(ntsim::Stopped::Hang(what)) => assert!(what.contains("CloseHandle"), "{what}"),
        other => panic!("expected the close to hang, got {other:?}"),
    }
    assert!(read.get().is_none());
    assert!(!machine.debug_output().contains(&"cleanup".to_owned()), "{:#?}", machine.debug_output());
}

/// CancelSynchronousIo is the way out: the read completes, then the close proceeds.
#[test]
fn cancel_synchronous_io_releases_a_close_waiting_for_the_file_object() {
    let machine = machine();
    load(&machine, entry_cancel_now);
    let process = machine.new_process();
    let (t0, t1, t2) = (process.thread(0), process.thread(1), process.thread(2));
    let handle = process.open(PATH, false).unwrap().unwrap();
    let read = t0.post_read(handle, 4);
    let close = t1.post_close(handle);
    machine.run_until_idle();
    assert!(close.get().is_none(), "CloseHandle waits for the synchronous read");
    assert_eq!(t2.cancel_synchronous_io(&t1).unwrap(), STATUS_NOT_FOUND, "t1 is in CloseHandle, not in I/O");
    assert_eq!(t2.cancel_synchronous_io(&t0).unwrap(), STATUS_SUCCESS);
    machine.run_until_idle();
    assert_eq!(read.completion().map(|r| r.status), Some(STATUS_CANCELLED));
    assert_eq!(close.get(), Some(STATUS_SUCCESS));
    assert_eq!(machine.debug_output(), vec!["create", "read", "cancelled", "cleanup", "close"]);
    assert_clean(&machine);
}

/// Buffered copy-back follows IopCompleteRequest: a warning status returns exactly
/// Information bytes.
#[test]
fn a_warning_status_returns_information_bytes() {
    let machine = machine();
    load(&machine, entry_cancel_now);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    let result = process.ioctl(handle, 1, &[], 8).unwrap().done().unwrap();
    assert_eq!((result.status, result.information), (STATUS_BUFFER_OVERFLOW, 4));
    assert_eq!(result.data, vec![1, 2, 3, 4]);
    assert_clean(&machine);
}

/// Information larger than the buffer is 0xC9/0x312 whatever the status: a warning
/// (Windows would copy 16 bytes into an 8-byte user buffer) or an error. It is one of
/// Verifier's non-fatal I/O errors: recorded, the request completes, the verdict fails.
#[test]
fn information_larger_than_the_buffer_is_c9_312_with_a_warning_or_error_status() {
    for code in [2, 3] {
        let machine = machine();
        load(&machine, entry_cancel_now);
        let process = machine.new_process();
        let handle = process.open(PATH, true).unwrap().unwrap();
        let result = process.ioctl(handle, code, &[], 8).unwrap().done().unwrap();
        assert!(result.data.len() <= 8, "no more than the buffer comes back");
        let reports = machine.reports();
        assert_eq!(reports.len(), 1, "{reports:#?}");
        let v = &reports[0];
        assert!(!v.fatal);
        let (irp, device) = (printed(&machine, "irp"), printed(&machine, "device"));
        assert_eq!((v.code, v.params), (C9, [0x312, 0, irp, device]), "[code, driver address (unknown), IRP, device]");
        assert!(machine.verdict().is_err(), "a report fails the verdict");
    }
}

/// Thread exit waits for the thread's cancelled requests for five minutes, then
/// disassociates them with an IO_DRIVER_CANCEL_TIMEOUT error-log entry and lets the
/// thread go (with Verifier's 5 s slow-cancel rule off here).
#[test]
fn thread_exit_gives_up_on_a_lost_request_after_five_minutes() {
    let machine = Machine::new(Config { slow_cancel: u64::MAX, ..Config::seeded(1) });
    load(&machine, entry_cancel_forgets);
    let process = machine.new_process();
    let (t0, t1) = (process.thread(0), process.thread(1));
    let handle = process.open(PATH, true).unwrap().unwrap();
    let read = pending(t1.read(handle, 4).unwrap());
    let before = machine.now();
    t1.exit().unwrap();
    assert_eq!(machine.now() - before, 300 * ntsim::SECOND, "3000 waits of 100 ms");
    assert!(read.result().is_none(), "still outstanding, no longer the thread's");
    let log = machine.error_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].code, ntsim::wdk_sys::IO_DRIVER_CANCEL_TIMEOUT);
    // The design completes it at CLEANUP; that still works after the disassociation.
    t0.close(handle).unwrap();
    assert_eq!(read.result().map(|r| r.status), Some(STATUS_CANCELLED));
    assert_clean(&machine);
}

/// With Verifier's rule on (the default), the same lost request is 0xC4/0x135 long
/// before the five minutes.
#[test]
fn thread_exit_with_a_lost_request_is_c4_135_under_the_slow_cancel_rule() {
    let machine = machine();
    load(&machine, entry_cancel_forgets);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    let _read = pending(process.thread(1).read(handle, 4).unwrap());
    let v = bugcheck(process.thread(1).exit());
    assert_check(&v, 0xC4, 0x135);
}

/// A thread blocked in a synchronous read that exits: its read is cancelled at once.
#[test]
fn thread_exit_interrupts_a_blocked_synchronous_read() {
    let machine = machine();
    load(&machine, entry_cancel_now);
    let process = machine.new_process();
    let t0 = process.thread(0);
    let handle = process.open(PATH, false).unwrap().unwrap();
    let read = t0.post_read(handle, 4);
    machine.run_until_idle();
    t0.exit().unwrap();
    assert_eq!(read.completion().map(|r| r.status), Some(STATUS_CANCELLED));
    process.close(handle).unwrap();
    assert_clean(&machine);
}

// ---------------------------------------------------------------------------------
// Handle tables, object types, ZwClose, deferred deletion
// ---------------------------------------------------------------------------------

/// A handle to our device: a kernel handle with OBJ_KERNEL_HANDLE, otherwise one in the
/// calling process's table.
unsafe fn open_device_handle(device: PDEVICE_OBJECT, attributes: u32) -> HANDLE {
    let mut handle: HANDLE = std::ptr::null_mut();
    // SAFETY: our live device and a writable out-pointer.
    unsafe {
        let _ = ObOpenObjectByPointer(
            device.cast(),
            attributes,
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            _MODE::KernelMode as i8,
            &raw mut handle,
        );
    }
    handle
}

unsafe extern "C" fn create_opens_handle(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: our device and state; CREATE runs in the opening process's context, so
    // without OBJ_KERNEL_HANDLE the handle lands in that process's table: the bug.
    unsafe {
        let s = state(device);
        let attributes = (*s).counter.load(Ordering::SeqCst);
        (*s).handle = open_device_handle(device, attributes);
        print_value("handle", (*s).handle as u64);
        common::dispatch_basic(device, irp)
    }
}

unsafe extern "C" fn unload_closes_handle(driver: PDRIVER_OBJECT) {
    // SAFETY: the state's handle, closed in the System process's context.
    unsafe {
        let s = driver_state(driver);
        let _ = ZwClose((*s).handle);
        common::unload_clean(driver);
    }
}

unsafe fn handle_entry(driver: PDRIVER_OBJECT, attributes: u32) -> NTSTATUS {
    let majors = [(ntsim::wdk_sys::IRP_MJ_CREATE, Some(create_opens_handle as _))];
    // SAFETY: DriverEntry's driver object.
    let status = unsafe { entry_with(driver, &majors, Some(unload_closes_handle)) };
    // SAFETY: the state of the device just created.
    unsafe { (*driver_state(driver)).counter.store(attributes, Ordering::SeqCst) };
    status
}

unsafe extern "C" fn entry_handle_in_process(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: forwarded.
    unsafe { handle_entry(driver, 0) }
}

unsafe extern "C" fn entry_kernel_handle(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: forwarded.
    unsafe { handle_entry(driver, OBJ_KERNEL_HANDLE) }
}

/// A handle made in CREATE without OBJ_KERNEL_HANDLE is the client process's; the
/// ZwClose in DriverUnload (System process) finds no such handle: 0x93, P2 = 1.
#[test]
fn zw_close_in_unload_of_a_handle_made_without_obj_kernel_handle_is_0x93() {
    let machine = machine();
    let driver = load(&machine, entry_handle_in_process);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    assert_eq!(process.handle_count(), 2, "the client's handle and the driver's, in one table");
    process.close(handle).unwrap();
    let v = bugcheck(machine.stop_driver(driver));
    assert_eq!((v.code, v.params), (0x93, [printed(&machine, "handle"), 1, 0, 0]), "{v}");
    assert_eq!(v.routine, Routine::Unload);
}

/// The same driver with OBJ_KERNEL_HANDLE is correct: a System-table handle.
#[test]
fn a_kernel_handle_made_in_a_client_context_closes_in_unload() {
    let machine = machine();
    let driver = load(&machine, entry_kernel_handle);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    assert_eq!(process.handle_count(), 1);
    assert_eq!(printed(&machine, "handle") >> 31, 0x1_FFFF_FFFF, "a kernel handle has the top bits set");
    process.close(handle).unwrap();
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

/// The process owns a handle the driver made in its context: it can close it (or
/// the value can be reused); the driver's later ZwClose is 0x93.
#[test]
fn a_client_closing_the_drivers_handle_makes_its_zw_close_0x93() {
    let machine = machine();
    let driver = load(&machine, entry_handle_in_process);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    let drivers = ntsim::Handle(printed(&machine, "handle"));
    assert_eq!(process.close(drivers).unwrap(), STATUS_SUCCESS, "CloseHandle on the driver's handle works");
    process.close(handle).unwrap();
    let v = bugcheck(machine.stop_driver(driver));
    assert_eq!((v.code, v.params), (0x93, [drivers.0, 1, 0, 0]), "{v}");
}

entry_then!(entry_closes_twice, |device, _s| {
    // SAFETY: a kernel handle to our device, closed twice: the bug.
    unsafe {
        let handle = open_device_handle(device, OBJ_KERNEL_HANDLE);
        print_value("handle", handle as u64);
        let _ = ZwClose(handle);
        let _ = ZwClose(handle);
    }
});

#[test]
fn zw_close_of_a_closed_kernel_handle_is_0x93() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_closes_twice));
    assert_eq!((v.code, v.params), (0x93, [printed(&machine, "handle"), 1, 0, 0]), "{v}");
}

unsafe extern "C" fn thread_ends(_context: PVOID) {}

/// PsCreateSystemThread with OBJ_KERNEL_HANDLE, then references by type.
unsafe fn thread_handle() -> HANDLE {
    let mut attributes: OBJECT_ATTRIBUTES =
        // SAFETY: all-zero is a valid OBJECT_ATTRIBUTES to fill in.
        unsafe { std::mem::zeroed() };
    attributes.Length = u32::try_from(size_of::<OBJECT_ATTRIBUTES>()).unwrap();
    attributes.Attributes = OBJ_KERNEL_HANDLE;
    let mut handle: HANDLE = std::ptr::null_mut();
    // SAFETY: valid out-pointer and attributes; the routine returns at once.
    unsafe {
        let _ = PsCreateSystemThread(
            &raw mut handle,
            THREAD_ALL_ACCESS,
            &raw mut attributes,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            Some(thread_ends),
            std::ptr::null_mut(),
        );
    }
    handle
}

unsafe fn reference(handle: HANDLE, object_type: POBJECT_TYPE, mode: i8) -> (NTSTATUS, PVOID) {
    let mut object: PVOID = std::ptr::null_mut();
    // SAFETY: a writable out-pointer; the handle and type are the test's.
    let status = unsafe {
        ObReferenceObjectByHandle(handle, THREAD_ALL_ACCESS, object_type, mode, &raw mut object, std::ptr::null_mut())
    };
    (status, object)
}

entry_then!(entry_references_by_type, |_device, _s| {
    // SAFETY: a kernel thread handle referenced with the wrong, then the right, type.
    unsafe {
        let handle = thread_handle();
        let (wrong, object) = reference(handle, *ExEventObjectType, _MODE::KernelMode as i8);
        print_value("as event", wrong.cast_unsigned().into());
        print_value("object", object as u64);
        let (right, object) = reference(handle, *PsThreadType, _MODE::KernelMode as i8);
        print_value("as thread", right.cast_unsigned().into());
        let _ = KeWaitForSingleObject(object, 0, _MODE::KernelMode as i8, 0, std::ptr::null_mut());
        ObfDereferenceObject(object);
        let _ = ZwClose(handle);
    }
});

/// ObReferenceObjectByHandle checks ObjectType: a thread handle is no event.
#[test]
fn referencing_a_handle_as_the_wrong_object_type_is_object_type_mismatch() {
    let machine = machine();
    let driver = load(&machine, entry_references_by_type);
    assert_eq!(printed(&machine, "as event"), u64::from(STATUS_OBJECT_TYPE_MISMATCH.cast_unsigned()));
    assert_eq!(printed(&machine, "object"), 0, "no object on a mismatch");
    assert_eq!(printed(&machine, "as thread"), 0);
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

unsafe extern "C" fn create_references_user_handle(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: a handle in the client's table, referenced as KernelMode: the bug (a
    // handle from user space must be referenced with UserMode).
    unsafe {
        let handle = open_device_handle(device, 0);
        print_value("handle", handle as u64);
        let _ = reference(handle, std::ptr::null_mut(), _MODE::KernelMode as i8);
        common::dispatch_basic(device, irp)
    }
}

unsafe extern "C" fn entry_references_user_handle(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    let majors = [(ntsim::wdk_sys::IRP_MJ_CREATE, Some(create_references_user_handle as _))];
    // SAFETY: DriverEntry's driver object.
    unsafe { entry_with(driver, &majors, None) }
}

#[test]
fn a_user_handle_referenced_as_kernel_mode_is_c4_f6() {
    let machine = machine();
    load(&machine, entry_references_user_handle);
    let v = bugcheck(machine.new_process().open(PATH, true));
    assert_eq!((v.code, v.params[..2].to_vec()), (0xC4, vec![0xF6, printed(&machine, "handle")]), "{v}");
}

entry_then!(entry_references_kernel_handle_as_user_mode, |_device, _s| {
    // SAFETY: a kernel handle referenced with UserMode in the System process: the bug.
    unsafe {
        let handle = thread_handle();
        print_value("handle", handle as u64);
        let _ = reference(handle, *PsThreadType, _MODE::UserMode as i8);
    }
});

#[test]
fn a_kernel_handle_referenced_as_user_mode_in_the_system_process_is_c4_f7() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_references_kernel_handle_as_user_mode));
    // SAFETY: reading the exported type object's address.
    let thread_type = unsafe { *PsThreadType } as u64;
    assert_eq!((v.code, v.params), (0xC4, [0xF7, printed(&machine, "handle"), thread_type, 1]), "{v}");
}

entry_then!(entry_references_null_handle, |_device, _s| {
    // SAFETY: a NULL handle: the bug.
    unsafe {
        let _ = reference(std::ptr::null_mut(), *PsThreadType, _MODE::KernelMode as i8);
    }
});

#[test]
fn referencing_a_null_handle_is_c4_f5() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_references_null_handle));
    // SAFETY: reading the exported type object's address.
    let thread_type = unsafe { *PsThreadType } as u64;
    assert_eq!((v.code, v.params), (0xC4, [0xF5, 0, thread_type, 0]), "{v}");
}

unsafe extern "C" fn dpc_drops_file(_dpc: PRKDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    let s = context.cast::<State>();
    // SAFETY: the file object reference CREATE took; dropped at DISPATCH_LEVEL.
    unsafe { ObfDereferenceObject((*s).thread) };
}

unsafe extern "C" fn create_keeps_file(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: CREATE's file object, referenced until the DPC drops it.
    unsafe {
        let file = (*stack(irp)).FileObject;
        ObfReferenceObject(file.cast());
        (*state(device)).thread = file.cast();
        common::dispatch_basic(device, irp)
    }
}

unsafe extern "C" fn cleanup_arms_dpc(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the state's timer and DPC, initialised in DriverEntry.
    unsafe {
        let s = state(device);
        KeSetTimer(&raw mut (*s).timer, relative_ms(5), &raw mut (*s).dpc);
        common::dispatch_basic(device, irp)
    }
}

unsafe extern "C" fn close_reports_irql(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    print(&format!("close at irql {}", ntsim::inline::KeGetCurrentIrql()));
    // SAFETY: forwarded.
    unsafe { common::dispatch_basic(device, irp) }
}

unsafe extern "C" fn entry_drops_file_in_dpc(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    let majors = [
        (ntsim::wdk_sys::IRP_MJ_CREATE, Some(create_keeps_file as _)),
        (IRP_MJ_CLEANUP, Some(cleanup_arms_dpc as _)),
        (ntsim::wdk_sys::IRP_MJ_CLOSE, Some(close_reports_irql as _)),
    ];
    // SAFETY: DriverEntry's driver object and the new device's state.
    unsafe {
        let status = entry_with(driver, &majors, None);
        let s = driver_state(driver);
        KeInitializeTimer(&raw mut (*s).timer);
        KeInitializeDpc(&raw mut (*s).dpc, Some(dpc_drops_file), s.cast());
        status
    }
}

/// The last reference dropped in a DPC: the object manager defers the deletion to a
/// worker, so IRP_MJ_CLOSE arrives at PASSIVE_LEVEL (ReactOS ObpDeferObjectDeletion).
#[test]
fn a_last_reference_dropped_at_dispatch_level_closes_on_a_worker() {
    let machine = machine();
    let driver = load(&machine, entry_drops_file_in_dpc);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    process.close(handle).unwrap();
    // The 5 ms timer expires at the first clock tick (15.625 ms).
    machine.advance_ms(20).unwrap();
    assert!(machine.debug_output().contains(&"close at irql 0".to_owned()), "{:#?}", machine.debug_output());
    let close =
        machine.trace().into_iter().find(|c| c.routine == Routine::Dispatch(ntsim::wdk_sys::IRP_MJ_CLOSE as u8));
    assert!(close.as_ref().is_some_and(|c| c.thread.starts_with("worker-")), "{close:?}");
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

// ---------------------------------------------------------------------------------
// Smaller rules: the volatile HARDWARE hive, semaphore limits, wait blocks,
// KeFlushQueuedDpcs, queued versus ordinary spin-lock calls
// ---------------------------------------------------------------------------------

/// ZwCreateKey of `name` with `options`; closes the key it opened.
unsafe fn create_key(name: &str, options: u32) -> NTSTATUS {
    let mut units = common::wide(name);
    let mut unicode = common::counted(&mut units);
    let mut attributes = OBJECT_ATTRIBUTES {
        Length: u32::try_from(size_of::<OBJECT_ATTRIBUTES>()).expect("small"),
        RootDirectory: std::ptr::null_mut(),
        ObjectName: &raw mut unicode,
        Attributes: OBJ_KERNEL_HANDLE,
        SecurityDescriptor: std::ptr::null_mut(),
        SecurityQualityOfService: std::ptr::null_mut(),
    };
    let mut key: HANDLE = std::ptr::null_mut();
    // SAFETY: valid attributes and out-pointers for the call.
    let status = unsafe {
        ZwCreateKey(
            &raw mut key,
            KEY_ALL_ACCESS,
            &raw mut attributes,
            0,
            std::ptr::null_mut(),
            options,
            std::ptr::null_mut(),
        )
    };
    if status == STATUS_SUCCESS {
        // SAFETY: the key just opened.
        let _ = unsafe { ZwClose(key) };
    }
    status
}

const DEVICEMAP_KEY: &str = r"\Registry\Machine\HARDWARE\DEVICEMAP\NtsimCheck";

entry_then!(entry_writes_devicemap, |_device, _s| {
    // SAFETY: plain registry calls; the first forgets REG_OPTION_VOLATILE: the bug.
    unsafe {
        print_value("persistent", u64::from(create_key(DEVICEMAP_KEY, 0).cast_unsigned()));
        print_value("volatile", u64::from(create_key(DEVICEMAP_KEY, REG_OPTION_VOLATILE).cast_unsigned()));
    }
});

/// HARDWARE is a volatile hive: a persistent subkey fails with
/// STATUS_CHILD_MUST_BE_VOLATILE.
#[test]
fn a_persistent_key_under_hardware_is_child_must_be_volatile() {
    let machine = machine();
    load(&machine, entry_writes_devicemap);
    assert_eq!(printed(&machine, "persistent"), u64::from(STATUS_CHILD_MUST_BE_VOLATILE.cast_unsigned()));
    assert_eq!(printed(&machine, "volatile"), 0);
    assert_eq!(machine.registry().is_volatile(DEVICEMAP_KEY), Some(true));
}

entry_then!(entry_releases_past_limit, |_device, _s| {
    let semaphore: *mut KSEMAPHORE = Box::leak(Box::new(
        // SAFETY: all-zero is a valid bit pattern, initialised just below.
        unsafe { std::mem::zeroed::<KSEMAPHORE>() },
    ));
    // SAFETY: an initialised semaphore of limit 1, released twice: the bug.
    unsafe {
        KeInitializeSemaphore(semaphore, 0, 1);
        KeReleaseSemaphore(semaphore, 0, 1, 0);
        KeReleaseSemaphore(semaphore, 0, 1, 0);
    }
});

/// KeReleaseSemaphore past the limit raises STATUS_SEMAPHORE_LIMIT_EXCEEDED, which a
/// driver does not handle: 0x1E with the exception code.
#[test]
fn releasing_a_semaphore_past_its_limit_is_0x1e() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_releases_past_limit));
    assert_eq!((v.code, v.params[0]), (0x1E, u64::from(STATUS_SEMAPHORE_LIMIT_EXCEEDED.cast_unsigned())), "{v}");
}

entry_then!(entry_waits_on_four, |_device, _s| {
    let events: &'static mut [KEVENT; 4] = Box::leak(Box::new(
        // SAFETY: all-zero is a valid bit pattern, initialised just below.
        unsafe { std::mem::zeroed() },
    ));
    let mut objects: Vec<PVOID> = Vec::new();
    for event in events.iter_mut() {
        // SAFETY: each event is initialised, signalled, before the waits.
        unsafe { KeInitializeEvent(event, _EVENT_TYPE::NotificationEvent, 1) };
        objects.push(std::ptr::from_mut(event).cast());
    }
    let mut blocks: Box<[KWAIT_BLOCK; 4]> =
        // SAFETY: wait blocks are the kernel's scratch space; zeroed is fine.
        Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: four signalled events; first with wait blocks (fine), then without: the bug.
    unsafe {
        let with_blocks = KeWaitForMultipleObjects(
            4,
            objects.as_mut_ptr(),
            _WAIT_TYPE::WaitAll,
            0,
            _MODE::KernelMode as i8,
            0,
            std::ptr::null_mut(),
            blocks.as_mut_ptr(),
        );
        print_value("with blocks", u64::from(with_blocks.cast_unsigned()));
        let _ = KeWaitForMultipleObjects(
            4,
            objects.as_mut_ptr(),
            _WAIT_TYPE::WaitAll,
            0,
            _MODE::KernelMode as i8,
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
    }
});

/// More than THREAD_WAIT_OBJECTS (3) objects need a WaitBlockArray: 0x0C.
#[test]
fn waiting_on_four_objects_without_wait_blocks_is_0x0c() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_waits_on_four));
    assert_eq!(printed(&machine, "with blocks"), 0);
    assert_eq!((v.code, v.params), (0x0C, [0, 0, 0, 0]), "{v}");
}

unsafe extern "C" fn dpc_queues_and_removes_another(_dpc: PRKDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    let s = context.cast::<State>();
    print("first begins");
    // SAFETY: the state's second DPC, initialised in DriverEntry.
    unsafe {
        KeInsertQueueDpc(&raw mut (*s).dpc2, std::ptr::null_mut(), std::ptr::null_mut());
        KeRemoveQueueDpc(&raw mut (*s).dpc2);
    }
    print("first ends");
}

unsafe extern "C" fn read_flushes(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the state's first DPC; the IRP is ours.
    unsafe {
        let s = state(device);
        KeInsertQueueDpc(&raw mut (*s).dpc, std::ptr::null_mut(), std::ptr::null_mut());
        KeFlushQueuedDpcs();
        print("flushed");
        complete(irp, STATUS_SUCCESS, 0);
    }
    STATUS_SUCCESS
}

unsafe extern "C" fn entry_flush_accounting(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object and the new device's state.
    unsafe {
        let status = entry_with(driver, &[(IRP_MJ_READ, Some(read_flushes))], None);
        let s = driver_state(driver);
        KeInitializeDpc(&raw mut (*s).dpc, Some(dpc_queues_and_removes_another), s.cast());
        KeInitializeDpc(&raw mut (*s).dpc2, Some(dpc_noop), std::ptr::null_mut());
        status
    }
}

/// A DPC queued and removed while a flush waits does not count for it:
/// KeFlushQueuedDpcs still returns only after the DPC queued before it has finished.
#[test]
fn a_dpc_removed_during_a_flush_does_not_end_it_early() {
    let mut raced = 0;
    for seed in 0..60 {
        let machine = Machine::new(Config::seeded(seed));
        load(&machine, entry_flush_accounting);
        let process = machine.new_process();
        let handle = process.open(PATH, true).unwrap().unwrap();
        process.read(handle, 4).unwrap();
        assert_clean(&machine);
        let output = machine.debug_output();
        let at = |line: &str| output.iter().position(|l| l == line).unwrap();
        assert!(at("first ends") < at("flushed"), "seed {seed}: {output:#?}");
        let trace = machine.trace();
        let call = |api: &str| trace.iter().position(|c| c.api == api).unwrap();
        if call("KeFlushQueuedDpcs") < call("KeRemoveQueueDpc") {
            raced += 1;
        }
    }
    assert!(raced > 0, "some schedule removes the second DPC while the flush waits");
}

entry_then!(entry_queued_acquire_plain_release, |_device, s| {
    // SAFETY: the state's lock, taken queued and released with KeReleaseSpinLock: the bug.
    unsafe {
        let mut handle: KLOCK_QUEUE_HANDLE = std::mem::zeroed();
        KeAcquireInStackQueuedSpinLock(&raw mut (*s).lock, &raw mut handle);
        KeReleaseSpinLock(&raw mut (*s).lock, handle.OldIrql);
    }
});

entry_then!(entry_plain_acquire_queued_release, |_device, s| {
    // SAFETY: the state's lock, taken with KeAcquireSpinLock and released through a
    // queue handle naming it: the bug.
    unsafe {
        let mut handle: KLOCK_QUEUE_HANDLE = std::mem::zeroed();
        handle.OldIrql = KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        handle.LockQueue.Lock = &raw mut (*s).lock;
        KeReleaseInStackQueuedSpinLock(&raw mut handle);
    }
});

/// The NUL-terminated rule text a DDI compliance violation's P2 points to.
fn rule_text(v: &ntsim::Violation) -> String {
    // SAFETY: ntsim's static, NUL-terminated rule text.
    unsafe { std::ffi::CStr::from_ptr(v.params[1] as *const std::ffi::c_char) }.to_string_lossy().into_owned()
}

#[test]
fn mixing_queued_and_ordinary_spin_lock_calls_is_c4_4000b_or_40007() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_queued_acquire_plain_release));
    assert_eq!((v.code, v.params[0], v.params[2], v.params[3]), (0xC4, 0x4000B, 0, 0), "{v}");
    assert!(rule_text(&v).starts_with("SpinlockRelease:"), "P2 is the rule text");
    let machine = common::machine();
    let v = bugcheck(machine.load_driver("chk", entry_plain_acquire_queued_release));
    assert_eq!((v.code, v.params[0], v.params[2], v.params[3]), (0xC4, 0x40007, 0, 0), "{v}");
    assert!(rule_text(&v).starts_with("QueuedSpinLockRelease:"), "P2 is the rule text");
}
