//! ntsim's machinery rather than its checks: the API trace, fault injection, the
//! seeded scheduler's determinism, KeFlushQueuedDpcs, deferred unload, and when the
//! I/O manager sends IRP_MJ_CLEANUP and IRP_MJ_CLOSE.

mod common;

use std::sync::atomic::Ordering;

use common::{
    DEVICE, LINK, PATH, State, assert_check, assert_clean, bugcheck, complete, create_device, create_link,
    driver_state, entry_with, load, machine, mark_pending, print, relative_ms, setup, state, wait,
};
use ntsim::trace::{Call, Routine};
use ntsim::wdk_sys::ntddk::{
    ExAllocatePool2, ExFreePoolWithTag, IoAllocateWorkItem, IoCreateDevice, IoDeleteDevice, IoFreeWorkItem, IoInitializeTimer,
    IoQueueWorkItem, IoReleaseCancelSpinLock, IoStartTimer, IoStopTimer, KeCancelTimer, KeFlushQueuedDpcs,
    KeInitializeDpc, KeInitializeEvent, KeInitializeTimer, KeInsertQueueDpc, KeQueryPerformanceCounter,
    KeReadStateEvent, KeReadStateTimer, KeSetEvent, KeSetTimer, KeSetTimerEx, ObReferenceObjectByHandle,
    ObfDereferenceObject, PsCreateSystemThread, ZwClose,
};
use ntsim::wdk_sys::{
    _EVENT_TYPE, _MODE, _WORK_QUEUE_TYPE, FILE_DEVICE_UNKNOWN, HANDLE, IRP_MJ_CLEANUP, IRP_MJ_CLOSE, IRP_MJ_CREATE, IRP_MJ_READ, NTSTATUS,
    PCUNICODE_STRING, PDEVICE_OBJECT, PDRIVER_OBJECT, PIRP, POOL_FLAG_NON_PAGED, PRKDPC, PVOID, STATUS_CANCELLED,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_NO_SUCH_DEVICE, STATUS_PENDING, STATUS_SUCCESS, THREAD_ALL_ACCESS,
};
use ntsim::{Config, DriverState, Issued, Machine, Mode};

fn mark() {
    // SAFETY: a NULL frequency pointer is allowed.
    unsafe { KeQueryPerformanceCounter(std::ptr::null_mut()) };
}

fn create_thread(s: *mut State, routine: unsafe extern "C" fn(PVOID)) {
    // SAFETY: valid out-pointers; the handle is closed once the object is referenced.
    unsafe {
        let mut handle: HANDLE = std::ptr::null_mut();
        let status = PsCreateSystemThread(
            &raw mut handle,
            THREAD_ALL_ACCESS,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            Some(routine),
            s.cast(),
        );
        if status != STATUS_SUCCESS {
            print("PsCreateSystemThread failed");
            return;
        }
        let _ = ObReferenceObjectByHandle(handle, THREAD_ALL_ACCESS, std::ptr::null_mut(), _MODE::KernelMode as i8, &raw mut (*s).thread, std::ptr::null_mut());
        let _ = ZwClose(handle);
    }
}

// ---------------------------------------------------------------------------------
// The API trace
// ---------------------------------------------------------------------------------

unsafe extern "C" fn traced_timer_dpc(_dpc: PRKDPC, _context: PVOID, _a1: PVOID, _a2: PVOID) {
    mark();
}

unsafe extern "C" fn traced_dpc(_dpc: PRKDPC, _context: PVOID, _a1: PVOID, _a2: PVOID) {
    mark();
}

unsafe extern "C" fn traced_work(device: PDEVICE_OBJECT, _context: PVOID) {
    mark();
    // SAFETY: our device's state.
    unsafe { KeSetEvent(&raw mut (*state(device)).done, 0, 0) };
}

unsafe extern "C" fn traced_thread(_context: PVOID) {
    mark();
}

unsafe extern "C" fn traced_io_timer(_device: PDEVICE_OBJECT, _context: PVOID) {
    mark();
}

unsafe extern "C" fn traced_cancel(device: PDEVICE_OBJECT, irp: PIRP) {
    mark();
    // SAFETY: IoCancelIrp called us holding the cancel lock; the IRP is ours to complete.
    unsafe {
        IoReleaseCancelSpinLock((*irp).CancelIrql);
        (*state(device)).pending.store(std::ptr::null_mut(), Ordering::SeqCst);
        complete(irp, STATUS_CANCELLED, 0);
    }
}

unsafe extern "C" fn traced_create(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    mark();
    // SAFETY: forwarded.
    unsafe { common::dispatch_basic(device, irp) }
}

unsafe extern "C" fn traced_read(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    mark();
    // SAFETY: the IRP is ours until the cancel routine takes it.
    unsafe {
        mark_pending(irp);
        (*state(device)).pending.store(irp, Ordering::SeqCst);
        ntsim::inline::IoSetCancelRoutine(irp, Some(traced_cancel));
    }
    STATUS_PENDING
}

unsafe extern "C" fn traced_unload(driver: PDRIVER_OBJECT) {
    mark();
    // SAFETY: the state and objects DriverEntry initialised.
    unsafe {
        let s = driver_state(driver);
        IoStopTimer((*driver).DeviceObject);
        KeCancelTimer(&raw mut (*s).timer);
        KeFlushQueuedDpcs();
        wait((*s).thread, None);
        ObfDereferenceObject((*s).thread);
        wait((&raw mut (*s).done).cast(), None);
        IoFreeWorkItem((*s).work_item.load(Ordering::SeqCst));
        common::unload_clean(driver);
    }
}

unsafe extern "C" fn traced_entry(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    mark();
    let majors = [(IRP_MJ_CREATE, Some(traced_create as _)), (IRP_MJ_READ, Some(traced_read as _))];
    // SAFETY: DriverEntry's driver object.
    let status = unsafe { entry_with(driver, &majors, Some(traced_unload)) };
    if status != STATUS_SUCCESS {
        return status;
    }
    // SAFETY: the state of the device just created; every object is initialised first.
    unsafe {
        let device = (*driver).DeviceObject;
        let s = driver_state(driver);
        KeInitializeEvent(&raw mut (*s).done, _EVENT_TYPE::NotificationEvent, 0);
        KeInitializeTimer(&raw mut (*s).timer);
        KeInitializeDpc(&raw mut (*s).dpc, Some(traced_timer_dpc), s.cast());
        KeSetTimer(&raw mut (*s).timer, relative_ms(5), &raw mut (*s).dpc);
        KeInitializeDpc(&raw mut (*s).dpc2, Some(traced_dpc), s.cast());
        KeInsertQueueDpc(&raw mut (*s).dpc2, std::ptr::null_mut(), std::ptr::null_mut());
        let _ = IoInitializeTimer(device, Some(traced_io_timer), std::ptr::null_mut());
        IoStartTimer(device);
        let item = IoAllocateWorkItem(device);
        (*s).work_item.store(item, Ordering::SeqCst);
        IoQueueWorkItem(item, Some(traced_work), _WORK_QUEUE_TYPE::DelayedWorkQueue, std::ptr::null_mut());
        create_thread(s, traced_thread);
    }
    STATUS_SUCCESS
}

#[test]
fn trace_attributes_every_call_to_its_routine_thread_and_irql() {
    let machine = machine();
    let driver = load(&machine, traced_entry);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    let Issued::Pending(io) = process.read(handle, 4).unwrap() else { panic!("the read pends") };
    process.cancel_io_ex(handle, Some(&io)).unwrap();
    assert_eq!(process.main().wait(&io).unwrap().status, STATUS_CANCELLED);
    process.close(handle).unwrap();
    machine.advance_ms(1_500).unwrap();
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);

    let trace = machine.trace();
    // Who called KeQueryPerformanceCounter, from where, at which IRQL.
    let marks: Vec<(Routine, u8)> =
        trace.iter().filter(|c| c.api == "KeQueryPerformanceCounter").map(|c| (c.routine, c.irql)).collect();
    for expected in [
        (Routine::DriverEntry, 0),
        (Routine::Dispatch(IRP_MJ_CREATE as u8), 0),
        (Routine::Dispatch(IRP_MJ_READ as u8), 0),
        (Routine::CancelRoutine, 2),
        (Routine::CustomTimerDpc, 2),
        (Routine::Dpc, 2),
        (Routine::IoTimer, 2),
        (Routine::WorkItem, 0),
        (Routine::SystemThread, 0),
        (Routine::Unload, 0),
    ] {
        assert!(marks.contains(&expected), "no mark from {expected:?}: {marks:?}");
    }
    // Everything Unload called is attributed to it, on the unload thread.
    let by = |api: &str| -> Vec<&Call> { trace.iter().filter(|c| c.api == api).collect() };
    for api in ["IoDeleteDevice", "IoDeleteSymbolicLink", "IoStopTimer", "KeFlushQueuedDpcs", "IoFreeWorkItem"] {
        let calls = by(api);
        assert!(!calls.is_empty(), "{api} was called");
        assert!(calls.iter().all(|c| c.routine == Routine::Unload && c.thread == "driver-unload"), "{api}: {calls:?}");
    }
    for api in ["IoCreateDevice", "IoCreateSymbolicLink", "PsCreateSystemThread"] {
        assert!(by(api).iter().all(|c| c.routine == Routine::DriverEntry && c.thread == "driver-entry"), "{api}");
    }
    let completes = by("IofCompleteRequest");
    for major in [IRP_MJ_CREATE, IRP_MJ_CLEANUP, IRP_MJ_CLOSE] {
        assert!(completes.iter().any(|c| c.routine == Routine::Dispatch(major as u8) && c.thread == "p0-t0"), "{major}");
    }
    assert!(trace.windows(2).all(|w| w[0].seq < w[1].seq && w[0].time <= w[1].time), "ordered by seq and time");
    // Unload ran after everything else the driver did.
    let first_unload = trace.iter().position(|c| c.routine == Routine::Unload).expect("Unload ran");
    assert!(trace[first_unload..].iter().all(|c| c.routine == Routine::Unload || c.routine == Routine::Kernel));
}

// ---------------------------------------------------------------------------------
// Fault injection
// ---------------------------------------------------------------------------------

unsafe extern "C" fn entry_reports_status(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let status = match unsafe { setup(driver) } {
        Ok(_) => STATUS_SUCCESS,
        Err(status) => status,
    };
    print(&format!("setup: {status:#x}"));
    status
}

#[test]
fn failing_io_create_device_reaches_driver_entry_and_fails_the_load_cleanly() {
    let machine = machine();
    machine.faults().fail_nth("IoCreateDevice", 1);
    let (driver, status) = machine.load_driver("chk", entry_reports_status).unwrap();
    assert_eq!(status, STATUS_INSUFFICIENT_RESOURCES);
    assert_eq!(machine.driver_state(driver), DriverState::FailedToLoad(STATUS_INSUFFICIENT_RESOURCES));
    assert_eq!(machine.faults().injected(), vec!["IoCreateDevice"]);
    assert_eq!(machine.debug_output(), vec![format!("setup: {STATUS_INSUFFICIENT_RESOURCES:#x}")]);
    assert!(machine.trace().iter().all(|c| c.api != "IoCreateSymbolicLink"), "DriverEntry stopped at the failure");
    assert_clean(&machine);
    // Only the first call fails: the next load succeeds, and its device can be opened.
    let driver = load(&machine, entry_reports_status);
    let process = machine.new_process();
    let handle = process.open(PATH, false).unwrap().unwrap();
    process.close(handle).unwrap();
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

#[test]
fn failing_the_link_is_undone_by_a_careful_driver() {
    let machine = machine();
    machine.faults().fail_nth("IoCreateSymbolicLink", 1);
    let (driver, status) = machine.load_driver("chk", entry_reports_status).unwrap();
    assert_eq!(status, STATUS_INSUFFICIENT_RESOURCES);
    assert_eq!(machine.driver_state(driver), DriverState::FailedToLoad(status));
    assert_clean(&machine);
}

unsafe extern "C" fn entry_sloppy_on_failure(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    if let Err(status) = unsafe { create_device(driver) } {
        return status;
    }
    // The device is not deleted when the link fails: the bug.
    create_link(LINK, DEVICE)
}

#[test]
fn failing_the_link_exposes_a_device_left_behind() {
    let machine = machine();
    machine.faults().fail_nth("IoCreateSymbolicLink", 1);
    let v = bugcheck(machine.load_driver("chk", entry_sloppy_on_failure));
    assert_check(&v, 0xCE, 3);
}

unsafe extern "C" fn entry_with_pool(driver: PDRIVER_OBJECT, path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: a plain allocation.
    let block = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, 64, common::TAG) };
    if block.is_null() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: forwarded.
    let status = unsafe { entry_reports_status(driver, path) };
    if status == STATUS_SUCCESS {
        // SAFETY: the state of the device just created.
        unsafe { (*driver_state(driver)).blocks[0] = block };
        // SAFETY: DriverEntry owns the driver object.
        unsafe { (*driver).DriverUnload = Some(unload_with_pool) };
    } else {
        // SAFETY: our block.
        unsafe { ExFreePoolWithTag(block, common::TAG) };
    }
    status
}

unsafe extern "C" fn unload_with_pool(driver: PDRIVER_OBJECT) {
    // SAFETY: our state and block.
    unsafe { ExFreePoolWithTag((*driver_state(driver)).blocks[0], common::TAG) };
    // SAFETY: as for unload_clean.
    unsafe { common::unload_clean(driver) };
}

#[test]
fn systematic_low_resources_sweep_fails_each_call_in_turn() {
    // The failable calls DriverEntry makes, counted on a clean run.
    let total = {
        let machine = machine();
        let driver = load(&machine, entry_with_pool);
        assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
        machine.faults().failable_calls()
    };
    assert_eq!(total, 3, "ExAllocatePool2, IoCreateDevice, IoCreateSymbolicLink");
    let mut failed = Vec::new();
    for nth in 1..=total {
        let machine = machine();
        machine.faults().fail_nth_any(nth);
        let (driver, status) = machine.load_driver("chk", entry_with_pool).unwrap();
        assert_eq!(status, STATUS_INSUFFICIENT_RESOURCES, "failing call {nth}");
        assert_eq!(machine.driver_state(driver), DriverState::FailedToLoad(status));
        assert_clean(&machine);
        assert_eq!(machine.pool_stats().live_blocks, 0);
        failed.extend(machine.faults().injected());
    }
    assert_eq!(failed, vec!["ExAllocatePool2", "IoCreateDevice", "IoCreateSymbolicLink"]);
    assert_eq!(machine_with_failures_stats(), 1, "a failed allocation is counted");
}

fn machine_with_failures_stats() -> u64 {
    let machine = machine();
    machine.faults().fail_nth("ExAllocatePool2", 1);
    let _ = machine.load_driver("chk", entry_with_pool).unwrap();
    machine.pool_stats().failed
}

// ---------------------------------------------------------------------------------
// The seeded scheduler is deterministic
// ---------------------------------------------------------------------------------

unsafe extern "C" fn busy_timer_dpc(_dpc: PRKDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    let s = context.cast::<State>();
    mark();
    // SAFETY: the state, its timer and event, at DISPATCH_LEVEL.
    unsafe {
        if (*s).counter.fetch_add(1, Ordering::SeqCst) + 1 == 5 {
            KeCancelTimer(&raw mut (*s).timer);
            KeSetEvent(&raw mut (*s).event, 0, 0);
        }
    }
}

unsafe extern "C" fn busy_timer2_dpc(_dpc: PRKDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    let s = context.cast::<State>();
    // SAFETY: the state and its second timer, at DISPATCH_LEVEL.
    unsafe {
        KeReadStateTimer(&raw mut (*s).timer2);
        if (*s).ticks.fetch_add(1, Ordering::SeqCst) + 1 == 5 {
            KeCancelTimer(&raw mut (*s).timer2);
        }
    }
}

unsafe extern "C" fn busy_thread(context: PVOID) {
    let s = context.cast::<State>();
    for _ in 0..5 {
        mark();
    }
    // SAFETY: the state's event, valid until Unload waited for this thread.
    unsafe { wait((&raw mut (*s).event).cast(), None) };
}

unsafe extern "C" fn busy_io_timer(_device: PDEVICE_OBJECT, _context: PVOID) {
    mark();
}

unsafe extern "C" fn busy_io_timer2(device: PDEVICE_OBJECT, _context: PVOID) {
    // SAFETY: the state both devices share.
    unsafe { KeReadStateEvent(&raw mut (*state(device)).event) };
}

unsafe extern "C" fn busy_unload(driver: PDRIVER_OBJECT) {
    // SAFETY: the state and objects DriverEntry initialised; the unnamed second device
    // is the head of the driver's device list and has no link.
    unsafe {
        let s = driver_state(driver);
        let second = (*driver).DeviceObject;
        IoStopTimer(second);
        IoStopTimer((*second).NextDevice);
        IoDeleteDevice(second);
        KeCancelTimer(&raw mut (*s).timer);
        KeCancelTimer(&raw mut (*s).timer2);
        KeFlushQueuedDpcs();
        KeSetEvent(&raw mut (*s).event, 0, 0);
        wait((*s).thread, None);
        ObfDereferenceObject((*s).thread);
        common::unload_clean(driver);
    }
}

unsafe extern "C" fn busy_entry(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let status = unsafe { entry_with(driver, &[], Some(busy_unload)) };
    if status != STATUS_SUCCESS {
        return status;
    }
    // SAFETY: the state of the device just created; objects initialised before use.
    unsafe {
        let s = driver_state(driver);
        KeInitializeEvent(&raw mut (*s).event, _EVENT_TYPE::NotificationEvent, 0);
        KeInitializeTimer(&raw mut (*s).timer);
        KeInitializeTimer(&raw mut (*s).timer2);
        KeInitializeDpc(&raw mut (*s).dpc, Some(busy_timer_dpc), s.cast());
        KeInitializeDpc(&raw mut (*s).dpc2, Some(busy_timer2_dpc), s.cast());
        // Two periodic timers that expire at the same moments.
        KeSetTimerEx(&raw mut (*s).timer, relative_ms(1), 1, &raw mut (*s).dpc);
        KeSetTimerEx(&raw mut (*s).timer2, relative_ms(1), 1, &raw mut (*s).dpc2);
        // Two devices whose IoTimers tick together: an unnamed one sharing the state.
        let first = (*driver).DeviceObject;
        let mut second: PDEVICE_OBJECT = std::ptr::null_mut();
        let status = IoCreateDevice(driver, 8, std::ptr::null_mut(), FILE_DEVICE_UNKNOWN, 0, 0, &raw mut second);
        if status != STATUS_SUCCESS {
            return status;
        }
        *(*second).DeviceExtension.cast::<*mut State>() = s;
        let _ = IoInitializeTimer(first, Some(busy_io_timer), std::ptr::null_mut());
        let _ = IoInitializeTimer(second, Some(busy_io_timer2), std::ptr::null_mut());
        IoStartTimer(second);
        IoStartTimer(first);
        create_thread(s, busy_thread);
        for _ in 0..5 {
            KeReadStateEvent(&raw mut (*s).event);
        }
    }
    STATUS_SUCCESS
}

/// One run of the busy driver: (api, thread, routine) of every call.
fn busy_run(mode: Mode) -> Vec<(&'static str, String, Routine)> {
    let machine = Machine::new(Config { mode, ..Config::default() });
    let driver = load(&machine, busy_entry);
    machine.advance_ms(2_500).unwrap();
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
    machine.trace().into_iter().map(|c| (c.api, c.thread, c.routine)).collect()
}

#[test]
fn same_seed_gives_the_same_trace() {
    for seed in [1, 2, 3] {
        let first = busy_run(Mode::Seeded(seed));
        for _ in 0..3 {
            let again = busy_run(Mode::Seeded(seed));
            let at = first.iter().zip(&again).position(|(a, b)| a != b).unwrap_or(first.len().min(again.len()));
            assert!(again == first, "seed {seed} replayed differently from call {at}: {:?} vs {:?}", first.get(at), again.get(at));
        }
    }
    let pct = Mode::Pct { seed: 5, depth: 3 };
    assert!(busy_run(pct) == busy_run(pct), "PCT replays too");
}

#[test]
fn different_seeds_explore_different_interleavings() {
    let runs: Vec<_> = (1..=8).map(|seed| busy_run(Mode::Seeded(seed))).collect();
    assert!(runs.iter().any(|r| *r != runs[0]), "eight seeds gave one interleaving");
    // Every run made the same calls, only in another order.
    let mut sorted: Vec<Vec<&'static str>> = runs.iter().map(|r| r.iter().map(|c| c.0).collect()).collect();
    for r in &mut sorted {
        r.sort_unstable();
    }
    assert!(sorted.iter().all(|r| *r == sorted[0]));
}

// ---------------------------------------------------------------------------------
// KeFlushQueuedDpcs
// ---------------------------------------------------------------------------------

unsafe extern "C" fn counting_dpc(_dpc: PRKDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    let s = context.cast::<State>();
    mark();
    // SAFETY: the state.
    unsafe { (*s).counter.fetch_add(1, Ordering::SeqCst) };
}

unsafe extern "C" fn entry_flushes(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let device = match unsafe { setup(driver) } {
        Ok(d) => d,
        Err(status) => return status,
    };
    // SAFETY: our state and its DPC.
    unsafe {
        let s = state(device);
        KeInitializeDpc(&raw mut (*s).dpc, Some(counting_dpc), s.cast());
        KeInsertQueueDpc(&raw mut (*s).dpc, std::ptr::null_mut(), std::ptr::null_mut());
        let before = (*s).counter.load(Ordering::SeqCst);
        KeFlushQueuedDpcs();
        let after = (*s).counter.load(Ordering::SeqCst);
        print(&format!("before={before} after={after}"));
    }
    STATUS_SUCCESS
}

#[test]
fn flush_queued_dpcs_waits_for_a_queued_dpc() {
    let mut waited = 0;
    for seed in 1..=10 {
        let machine = Machine::new(Config::seeded(seed));
        let driver = load(&machine, entry_flushes);
        assert_eq!(machine.debug_output(), vec!["before=0 after=1".to_owned()], "seed {seed}");
        // Whether the DPC still had to run when the flush began (otherwise it ran at
        // the flush's scheduling point, just before it).
        let trace = machine.trace();
        let flush = trace.iter().position(|c| c.api == "KeFlushQueuedDpcs").unwrap();
        let dpc = trace.iter().position(|c| c.routine == Routine::Dpc).unwrap();
        waited += usize::from(dpc > flush);
        assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    }
    assert!(waited > 0, "some schedule made KeFlushQueuedDpcs wait for the DPC");
}

// ---------------------------------------------------------------------------------
// Deferred unload, CLEANUP and CLOSE
// ---------------------------------------------------------------------------------

unsafe extern "C" fn entry_basic(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    unsafe { entry_with(driver, &[], None) }
}

#[test]
fn stop_with_an_open_handle_defers_unload_until_the_close() {
    let machine = machine();
    let driver = load(&machine, entry_basic);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::UnloadPending);
    assert!(machine.trace().iter().all(|c| c.routine != Routine::Unload), "DriverUnload waits");
    assert_eq!(machine.new_process().open(PATH, false).unwrap().unwrap_err(), STATUS_NO_SUCH_DEVICE);
    // The open handle still works.
    assert_eq!(process.read(handle, 4).unwrap().done().unwrap().status, ntsim::wdk_sys::STATUS_INVALID_DEVICE_REQUEST);
    process.close(handle).unwrap();
    machine.wait_unloaded(driver).unwrap();
    assert_eq!(machine.driver_state(driver), DriverState::Unloaded);
    let trace = machine.trace();
    let close = trace.iter().rposition(|c| c.routine == Routine::Dispatch(IRP_MJ_CLOSE as u8)).unwrap();
    let unload = trace.iter().position(|c| c.routine == Routine::Unload).unwrap();
    assert!(close < unload, "DriverUnload ran after IRP_MJ_CLOSE");
    assert_clean(&machine);
}

#[test]
fn cleanup_is_sent_only_when_the_last_handle_closes() {
    let machine = machine();
    let driver = load(&machine, entry_basic);
    let process = machine.new_process();
    let first = process.open(PATH, false).unwrap().unwrap();
    let second = process.duplicate(first).unwrap().unwrap();
    assert_ne!(first, second);
    assert_eq!(process.handle_count(), 2);
    process.close(first).unwrap();
    assert_eq!(machine.debug_output(), vec!["create"], "a duplicate keeps the file object open");
    // The duplicate still reaches the same file object.
    assert_eq!(process.read(second, 4).unwrap().done().unwrap().status, ntsim::wdk_sys::STATUS_INVALID_DEVICE_REQUEST);
    process.close(second).unwrap();
    assert_eq!(machine.debug_output(), vec!["create", "cleanup", "close"]);
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

unsafe extern "C" fn read_completed_by_timer(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: our state; the IRP is ours until the DPC completes it.
    unsafe {
        let s = state(device);
        mark_pending(irp);
        (*s).pending.store(irp, Ordering::SeqCst);
        KeSetTimer(&raw mut (*s).timer, relative_ms(10), &raw mut (*s).dpc);
    }
    STATUS_PENDING
}

unsafe extern "C" fn dpc_completes_read(_dpc: PRKDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    let s = context.cast::<State>();
    // SAFETY: the state; the pending IRP has no cancel routine and is ours.
    unsafe {
        let irp = (*s).pending.swap(std::ptr::null_mut(), Ordering::SeqCst);
        if !irp.is_null() {
            print("read completed");
            complete(irp, STATUS_SUCCESS, 4);
        }
    }
}

unsafe extern "C" fn entry_slow_read(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let status = unsafe { entry_with(driver, &[(IRP_MJ_READ, Some(read_completed_by_timer))], Some(unload_slow_read)) };
    if status == STATUS_SUCCESS {
        // SAFETY: the state of the device just created.
        unsafe {
            let s = driver_state(driver);
            KeInitializeTimer(&raw mut (*s).timer);
            KeInitializeDpc(&raw mut (*s).dpc, Some(dpc_completes_read), s.cast());
        }
    }
    status
}

unsafe extern "C" fn unload_slow_read(driver: PDRIVER_OBJECT) {
    // SAFETY: our state.
    unsafe {
        let s = driver_state(driver);
        KeCancelTimer(&raw mut (*s).timer);
        KeFlushQueuedDpcs();
        common::unload_clean(driver);
    }
}

#[test]
fn close_waits_for_the_last_irp_of_the_file_object() {
    let machine = machine();
    let driver = load(&machine, entry_slow_read);
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().unwrap();
    let Issued::Pending(io) = process.read(handle, 4).unwrap() else { panic!("the read pends") };
    process.close(handle).unwrap();
    assert_eq!(machine.debug_output(), vec!["create", "cleanup"], "the pending read keeps the file object");
    // A stop now is deferred too: the file object still references the device.
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::UnloadPending);
    machine.advance_ms(20).unwrap();
    assert_eq!(io.result().expect("completed").status, STATUS_SUCCESS);
    assert_eq!(machine.debug_output(), vec!["create", "cleanup", "read completed", "close"]);
    machine.wait_unloaded(driver).unwrap();
    assert_clean(&machine);
}

// ---------------------------------------------------------------------------------
// A DPC still running when Unload returns (0xC7/2), found by exploring seeds
// ---------------------------------------------------------------------------------

unsafe extern "C" fn long_dpc(_dpc: PRKDPC, _context: PVOID, _a1: PVOID, _a2: PVOID) {
    for _ in 0..6 {
        mark();
    }
}

unsafe extern "C" fn unload_races_its_dpc(driver: PDRIVER_OBJECT) {
    // SAFETY: our state, read before the device goes.
    let s = unsafe { driver_state(driver) };
    // SAFETY: the state's DPC (leaked memory); not flushing it is the bug.
    unsafe { KeInsertQueueDpc(&raw mut (*s).dpc, std::ptr::null_mut(), std::ptr::null_mut()) };
    for _ in 0..4 {
        mark();
    }
    // SAFETY: as for unload_clean.
    unsafe { common::unload_clean(driver) };
}

unsafe extern "C" fn entry_races_its_dpc(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let status = unsafe { entry_with(driver, &[], Some(unload_races_its_dpc)) };
    if status == STATUS_SUCCESS {
        // SAFETY: the state's DPC.
        unsafe {
            let s = driver_state(driver);
            KeInitializeDpc(&raw mut (*s).dpc, Some(long_dpc), std::ptr::null_mut());
        }
    }
    status
}

#[test]
fn unload_while_a_dpc_runs_is_c7_2_on_some_schedules() {
    let mut outcomes = std::collections::BTreeMap::new();
    for seed in 1..=40 {
        let machine = Machine::new(Config::seeded(seed));
        let driver = load(&machine, entry_races_its_dpc);
        let outcome = match machine.stop_driver(driver) {
            Ok(state) => {
                assert_eq!(state, DriverState::Unloaded);
                "clean"
            }
            Err(ntsim::Stopped::BugCheck(v)) => match (v.code, v.params[0]) {
                (0xC7, 1) => "queued",
                (0xC7, 2) => "running",
                _ => panic!("seed {seed}: unexpected {v}"),
            },
            Err(e) => panic!("seed {seed}: {e}"),
        };
        *outcomes.entry(outcome).or_insert(0) += 1;
    }
    assert!(outcomes.contains_key("running"), "no schedule caught the DPC mid-run: {outcomes:?}");
}

#[test]
fn io_delete_device_is_attributed_even_when_called_from_driver_entry() {
    // A driver that gives up in DriverEntry deletes what it created itself.
    let machine = machine();
    let (driver, status) = machine.load_driver("chk", entry_gives_up).unwrap();
    assert_eq!(status, ntsim::wdk_sys::STATUS_UNSUCCESSFUL);
    assert_eq!(machine.driver_state(driver), DriverState::FailedToLoad(status));
    let trace = machine.trace();
    assert!(trace.iter().any(|c| c.api == "IoDeleteDevice" && c.routine == Routine::DriverEntry));
    assert_clean(&machine);
}

unsafe extern "C" fn entry_gives_up(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    if let Ok(device) = unsafe { setup(driver) } {
        common::delete_link(LINK);
        // SAFETY: our device, never opened.
        unsafe { IoDeleteDevice(device) };
    }
    ntsim::wdk_sys::STATUS_UNSUCCESSFUL
}
