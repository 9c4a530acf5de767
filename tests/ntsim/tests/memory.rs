//! Memory as Windows (with Driver Verifier's special pool) has it: each small,
//! deliberately wrong driver touches memory that Windows would have freed, overruns a
//! block, touches paged pool at DISPATCH_LEVEL, frees a live timer or runs off its
//! kernel stack, and the test asserts the bug check and parameters Windows reports.
//! Well-behaved counterparts show the same paths stay quiet.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::doc_markdown,
    clippy::large_stack_arrays,
    reason = "kernel names in docs; IRP_MJ_* codes narrowed as wdm.h does; stack overflows are under test"
)]

mod common;

use std::sync::atomic::Ordering;

use common::{
    DEVICE, LINK, PATH, State, TAG, assert_clean, bugcheck, complete, counted, create_link, delete_link, entry_with,
    load, machine, mark_pending, print, print_value, printed, setup, stack, state, wide,
};
use ntsim::wdk_sys::ntddk::{
    ExAllocatePool2, ExFreePool, IoCreateDevice, IoDeleteDevice, KeAcquireSpinLockRaiseToDpc, KeCancelTimer,
    KeInitializeDpc, KeInitializeEvent, KeInitializeTimer, KeReleaseSpinLock, KeSetEvent, KeSetTimer,
    PsTerminateSystemThread,
};
use ntsim::wdk_sys::{
    _EVENT_TYPE, DEVICE_OBJECT, DO_BUFFERED_IO, DO_DEVICE_INITIALIZING, FILE_DEVICE_UNKNOWN, FILE_OBJECT,
    IRP_MJ_CLEANUP, IRP_MJ_CLOSE, IRP_MJ_CREATE, IRP_MJ_DEVICE_CONTROL, IRP_MJ_READ, KDPC, KEVENT, KTIMER, NTSTATUS,
    PCUNICODE_STRING, PDEVICE_OBJECT, PDRIVER_OBJECT, PIRP, POOL_FLAG_NON_PAGED, POOL_FLAG_PAGED, PRKDPC, PVOID,
    STATUS_PENDING, STATUS_SUCCESS,
};
use ntsim::{CompletionApc, Config, Issued, Machine, Violation};

/// Asserts the code and all four parameters, except an instruction address (`None`),
/// which must be non-zero.
#[track_caller]
fn assert_params(v: &Violation, code: u32, params: [Option<u64>; 4]) {
    assert_eq!(v.code, code, "wrong bug check:\n{v}");
    for (n, (expected, actual)) in params.iter().zip(v.params).enumerate() {
        match expected {
            Some(value) => assert_eq!(actual, *value, "parameter {} of\n{v}", n + 1),
            None => assert_ne!(actual, 0, "parameter {} (an instruction address) of\n{v}", n + 1),
        }
    }
}

fn with_apc(timing: CompletionApc) -> Machine {
    Machine::new(Config { completion_apc: timing, ..Config::seeded(1) })
}

/// Opens [`PATH`] overlapped on a new process: the process and the handle.
fn open(machine: &Machine) -> (ntsim::Process<'_>, ntsim::Handle) {
    let process = machine.new_process();
    let handle = process.open(PATH, true).unwrap().expect("open succeeds");
    (process, handle)
}

// ---------------------------------------------------------------------------------
// IRPs: Tail reused by the completion APC, the IRP freed by it
// ---------------------------------------------------------------------------------

/// Pends every read in `State::pending`.
unsafe extern "C" fn read_pends(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the IRP is ours; the device's state is live.
    unsafe {
        mark_pending(irp);
        (*state(device)).pending.store(irp, Ordering::SeqCst);
    }
    STATUS_PENDING
}

/// Completes the pended read, then reads its IoStatus.Information: the bug.
unsafe extern "C" fn ioctl_completes_then_reads(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the pended read is ours until completed; the read after is the bug.
    unsafe {
        let read = (*state(device)).pending.swap(std::ptr::null_mut(), Ordering::SeqCst);
        print_value("information", (&raw const (*read).IoStatus.Information) as u64);
        complete(read, STATUS_SUCCESS, 0);
        let stale = std::ptr::read_volatile(&raw const (*read).IoStatus.Information);
        print_value("stale", stale);
        complete(irp, STATUS_SUCCESS, 0);
    }
    STATUS_SUCCESS
}

unsafe extern "C" fn entry_uses_completed_irp(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    unsafe {
        entry_with(
            driver,
            &[(IRP_MJ_READ, Some(read_pends)), (IRP_MJ_DEVICE_CONTROL, Some(ioctl_completes_then_reads))],
            None,
        )
    }
}

#[test]
fn reading_an_irp_after_completing_it_is_d5() {
    let machine = with_apc(CompletionApc::AtOnce);
    load(&machine, entry_uses_completed_irp);
    let (process, handle) = open(&machine);
    assert!(matches!(process.read(handle, 4).unwrap(), Issued::Pending(_)));
    let v = bugcheck(process.ioctl(handle, 0x22_2000, &[], 0));
    // P1 the address, P2 0 (a read), P3 the instruction (bug check 0xD5's reference).
    assert_params(&v, 0xD5, [Some(printed(&machine, "information")), Some(0), None, Some(0)]);
}

/// Completes the pended read and reports what Irp->Tail holds afterwards.
unsafe extern "C" fn ioctl_completes_then_inspects_tail(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the read is the driver's until completed; afterwards this test driver
    // only reads it to show what Windows leaves there (the APC has not run).
    unsafe {
        let read = (*state(device)).pending.swap(std::ptr::null_mut(), Ordering::SeqCst);
        print_value("file", (*stack(read)).FileObject as u64);
        complete(read, STATUS_SUCCESS, 0);
        let overlay = &raw const (*read).Tail.Overlay;
        print_value("flink", (*overlay).__bindgen_anon_2.ListEntry.Flink as u64);
        print_value("thread", (*overlay).Thread as u64);
        print_value("stack", (*overlay).__bindgen_anon_2.__bindgen_anon_1.CurrentStackLocation as u64);
        print_value("type", u64::from((*read).Tail.Apc.Type));
        complete(irp, STATUS_SUCCESS, 0);
    }
    STATUS_SUCCESS
}

unsafe extern "C" fn entry_inspects_tail(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    unsafe {
        entry_with(
            driver,
            &[(IRP_MJ_READ, Some(read_pends)), (IRP_MJ_DEVICE_CONTROL, Some(ioctl_completes_then_inspects_tail))],
            None,
        )
    }
}

#[test]
fn completion_reuses_tail_overlay_for_the_apc() {
    let machine = with_apc(CompletionApc::Later);
    load(&machine, entry_inspects_tail);
    let (process, handle) = open(&machine);
    let Issued::Pending(read) = process.read(handle, 4).unwrap() else { panic!("the read must pend") };
    process.ioctl(handle, 0x22_2000, &[], 0).unwrap();
    assert_eq!(read.result().expect("completed").status, STATUS_SUCCESS);
    // NormalRoutine (NULL) over ListEntry.Flink: a chain walked through completed IRPs
    // stops here on Windows.
    assert_eq!(printed(&machine, "flink"), 0);
    // KernelRoutine over Tail.Overlay.Thread; SystemArgument1 (the file object) over
    // CurrentStackLocation; Type 0x12 (ApcObject) over DriverContext[0].
    assert_ne!(printed(&machine, "thread"), 0);
    assert_eq!(printed(&machine, "stack"), printed(&machine, "file"));
    assert_eq!(printed(&machine, "type"), 0x12);
    process.close(handle).unwrap();
    common::assert_clean(&machine);
}

/// Pends the read, hands it to the system thread, and returns only once the IOCTL
/// says so: the read is completed on another thread while this routine still runs.
unsafe extern "C" fn read_waits_for_release(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the IRP is ours until the system thread completes it, and is not touched
    // afterwards; the events are initialised in DriverEntry.
    unsafe {
        let s = state(device);
        mark_pending(irp);
        (*s).pending.store(irp, Ordering::SeqCst);
        KeSetEvent(&raw mut (*s).event, 0, 0);
        common::wait((&raw mut (*s).done).cast(), None);
    }
    STATUS_PENDING
}

/// Completes the read handed over by [`read_waits_for_release`], then ends.
unsafe extern "C" fn thread_completes_read(context: PVOID) {
    let s = context.cast::<State>();
    // SAFETY: the state is live for the machine's life; the read is the driver's.
    unsafe {
        common::wait((&raw mut (*s).event).cast(), None);
        let read = (*s).pending.swap(std::ptr::null_mut(), Ordering::SeqCst);
        complete(read, STATUS_SUCCESS, 0);
        let _ = PsTerminateSystemThread(STATUS_SUCCESS);
    }
}

/// Lets [`read_waits_for_release`] return.
unsafe extern "C" fn ioctl_releases_read(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the state is live; the IOCTL is ours.
    unsafe {
        KeSetEvent(&raw mut (*state(device)).done, 0, 0);
        complete(irp, STATUS_SUCCESS, 0);
    }
    STATUS_SUCCESS
}

unsafe extern "C" fn entry_completes_during_dispatch(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object; the state's events are set up before the
    // thread that waits on them starts.
    unsafe {
        let status = entry_with(
            driver,
            &[(IRP_MJ_READ, Some(read_waits_for_release)), (IRP_MJ_DEVICE_CONTROL, Some(ioctl_releases_read))],
            None,
        );
        if status != STATUS_SUCCESS {
            return status;
        }
        let s = common::driver_state(driver);
        KeInitializeEvent(&raw mut (*s).event, _EVENT_TYPE::NotificationEvent, 0);
        KeInitializeEvent(&raw mut (*s).done, _EVENT_TYPE::NotificationEvent, 0);
        common::start_thread(s, thread_completes_read);
    }
    STATUS_SUCCESS
}

#[test]
fn a_read_completed_on_another_thread_while_its_dispatch_routine_runs_is_kept() {
    // The system thread completes the read while its dispatch routine waits; then more
    // requests complete than ntsim keeps completed IRPs' records for (4096), all before
    // the routine returns. Windows' caller of IoCallDriver gets the routine's status
    // whatever happened to the IRP meanwhile; ntsim must still know the request then.
    let machine = machine();
    load(&machine, entry_completes_during_dispatch);
    let (process, handle) = open(&machine);
    let reader = process.thread(1);
    let posted = reader.post_read(handle, 4);
    machine.run_until_idle();
    for _ in 0..1_400 {
        // CREATE, CLEANUP and CLOSE: three completions each.
        let extra = process.open(PATH, true).unwrap().expect("open succeeds");
        process.close(extra).unwrap();
    }
    process.ioctl(handle, 0x22_2000, &[], 0).unwrap();
    let Some(Ok((_, _, pending))) = posted.get() else { panic!("the read was issued") };
    assert!(pending, "the dispatch routine returned STATUS_PENDING");
    assert_eq!(posted.completion().map(|r| r.status), Some(STATUS_SUCCESS));
    process.close(handle).unwrap();
    common::assert_clean(&machine);
}

/// Writes 4 bytes into an 8-byte read but reports 8.
unsafe extern "C" fn read_reports_unwritten_bytes(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: an 8-byte system buffer for an 8-byte read.
    unsafe {
        std::ptr::copy_nonoverlapping([1u8, 2, 3, 4].as_ptr(), (*irp).AssociatedIrp.SystemBuffer.cast::<u8>(), 4);
        complete(irp, STATUS_SUCCESS, 8);
    }
    STATUS_SUCCESS
}

unsafe extern "C" fn entry_stale_bytes(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    unsafe { entry_with(driver, &[(IRP_MJ_READ, Some(read_reports_unwritten_bytes))], None) }
}

#[test]
fn stale_system_buffer_bytes_reach_the_caller() {
    let machine = machine();
    load(&machine, entry_stale_bytes);
    let (process, handle) = open(&machine);
    let result = process.read(handle, 8).unwrap().done().expect("completed at once");
    assert_eq!(result.data, [1, 2, 3, 4, 0xCD, 0xCD, 0xCD, 0xCD], "not zeros: what the pool held");
}

// ---------------------------------------------------------------------------------
// Pool: freed blocks and guard pages
// ---------------------------------------------------------------------------------

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
            let _ = $s;
            $body
            STATUS_SUCCESS
        }
    };
}

entry_then!(entry_overruns_pool, |_s| {
    // SAFETY: a 32-byte block; the write one past its end is the bug.
    unsafe {
        let block = ExAllocatePool2(POOL_FLAG_NON_PAGED, 32, TAG).cast::<u8>();
        print_value("past", block.add(32) as u64);
        std::ptr::write_volatile(block.add(32), 1);
    }
});

#[test]
fn writing_past_the_end_of_pool_is_d6() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_overruns_pool));
    // P2 1: a write.
    assert_params(&v, 0xD6, [Some(printed(&machine, "past")), Some(1), None, Some(0)]);
}

entry_then!(entry_writes_slop, |_s| {
    // SAFETY: a 20-byte block ends 12 bytes before its 16-byte boundary (the guard
    // page); the write just past its end, into that slop, is the bug. It does not
    // fault: Verifier finds it when the block is freed.
    unsafe {
        let block = ExAllocatePool2(POOL_FLAG_NON_PAGED, 20, TAG).cast::<u8>();
        print_value("block", block as u64);
        print_value("slop", block.add(21) as u64);
        std::ptr::write_volatile(block.add(21), 1);
        print("written");
        ExFreePool(block.cast());
    }
});

/// Bug check 0xC1 SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION, P4 0x24: bytes after the
/// end of the block overwritten, found at free ([block, corrupted byte, 0, 0x24]).
#[test]
fn writing_into_the_slop_after_a_block_is_c1_24_at_free() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_writes_slop));
    assert!(machine.debug_output().contains(&"written".to_owned()), "the write itself did not fault");
    assert_eq!((v.code, v.params), (0xC1, [printed(&machine, "block"), printed(&machine, "slop"), 0, 0x24]), "{v}");
    assert_eq!(v.trace_tail.last().map(|c| c.api), Some("ExFreePool"));
}

entry_then!(entry_writes_before_block, |_s| {
    // SAFETY: the page's bytes before a 64-byte block are special pool's pattern; the
    // write just before the block (an underrun) is the bug.
    unsafe {
        let block = ExAllocatePool2(POOL_FLAG_NON_PAGED, 64, TAG).cast::<u8>();
        print_value("block", block as u64);
        print_value("before", block.sub(1) as u64);
        std::ptr::write_volatile(block.sub(1), 0);
        ExFreePool(block.cast());
    }
});

/// P4 0x23: bytes in the block's page, before it, overwritten.
#[test]
fn writing_before_a_block_in_its_page_is_c1_23_at_free() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_writes_before_block));
    assert_eq!((v.code, v.params), (0xC1, [printed(&machine, "block"), printed(&machine, "before"), 0, 0x23]), "{v}");
}

entry_then!(entry_uses_whole_odd_block, |_s| {
    // SAFETY: every byte of a 20-byte block written, then freed: no bug.
    unsafe {
        let block = ExAllocatePool2(POOL_FLAG_NON_PAGED, 20, TAG).cast::<u8>();
        std::ptr::write_bytes(block, 0xFF, 20);
        ExFreePool(block.cast());
        print("freed");
    }
});

#[test]
fn writing_a_whole_odd_sized_block_is_clean() {
    let machine = machine();
    load(&machine, entry_uses_whole_odd_block);
    assert!(machine.debug_output().contains(&"freed".to_owned()));
    assert_clean(&machine);
}

entry_then!(entry_reads_freed_pool, |_s| {
    // SAFETY: the read after ExFreePool is the bug.
    unsafe {
        let block = ExAllocatePool2(POOL_FLAG_NON_PAGED, 64, TAG).cast::<u64>();
        print_value("block", block as u64);
        ExFreePool(block.cast());
        print_value("stale", std::ptr::read_volatile(block));
    }
});

#[test]
fn reading_freed_pool_is_d5() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_reads_freed_pool));
    assert_params(&v, 0xD5, [Some(printed(&machine, "block")), Some(0), None, Some(0)]);
}

entry_then!(entry_reads_freed_pool_at_dispatch, |s| {
    // SAFETY: the read after ExFreePool, under a spin lock, is the bug.
    unsafe {
        let block = ExAllocatePool2(POOL_FLAG_NON_PAGED, 64, TAG).cast::<u64>();
        print_value("block", block as u64);
        ExFreePool(block.cast());
        let irql = KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        print_value("stale", std::ptr::read_volatile(block));
        KeReleaseSpinLock(&raw mut (*s).lock, irql);
    }
});

#[test]
fn reading_freed_pool_at_dispatch_level_is_d1() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_reads_freed_pool_at_dispatch));
    // P2 the IRQL, P3 0 (a read), P4 the instruction (bug check 0xD1's reference).
    assert_params(&v, 0xD1, [Some(printed(&machine, "block")), Some(2), Some(0), None]);
}

entry_then!(entry_null_at_dispatch, |s| {
    // SAFETY: none — reading address 0x10 under a spin lock is the bug.
    unsafe {
        let irql = KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        print_value("value", std::ptr::read_volatile(0x10 as *const u64));
        KeReleaseSpinLock(&raw mut (*s).lock, irql);
    }
});

#[test]
fn a_null_pointer_at_dispatch_level_is_d1() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_null_at_dispatch));
    assert_params(&v, 0xD1, [Some(0x10), Some(2), Some(0), None]);
}

entry_then!(entry_sets_freed_event, |_s| {
    // SAFETY: handing freed memory to KeSetEvent is the bug.
    unsafe {
        let event = ExAllocatePool2(POOL_FLAG_NON_PAGED, size_of::<KEVENT>() as u64, TAG).cast::<KEVENT>();
        KeInitializeEvent(event, _EVENT_TYPE::NotificationEvent, 0);
        print_value("event", event as u64);
        ExFreePool(event.cast());
        KeSetEvent(event, 0, 0);
    }
});

#[test]
fn the_kernel_touching_freed_pool_for_the_driver_is_cc() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_sets_freed_event));
    // The fault is in the kernel's code (KeSetEvent), so the kernel's variant:
    // 0xCC PAGE_FAULT_IN_FREED_SPECIAL_POOL, P1 inside the event's header.
    let event = printed(&machine, "event");
    assert_eq!(v.code, 0xCC, "{v}");
    assert!((event..event + 0x18).contains(&v.params[0]), "{v}");
    assert_eq!(v.params[3], 0, "{v}");
}

// ---------------------------------------------------------------------------------
// File and device objects
// ---------------------------------------------------------------------------------

/// CREATE keeps the file object in `State::blocks[0]`; an IOCTL reads the one kept.
unsafe extern "C" fn create_keeps_file(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the IRP and its stack location are ours; the state is live.
    unsafe {
        let s = state(device);
        if (*s).blocks[0].is_null() {
            (*s).blocks[0] = (*stack(irp)).FileObject.cast();
            print_value("file", (*s).blocks[0] as u64);
        }
        complete(irp, STATUS_SUCCESS, 0);
    }
    STATUS_SUCCESS
}

unsafe extern "C" fn ioctl_reads_kept_file(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: reading the first handle's file object after its CLOSE is the bug.
    unsafe {
        let file = (*state(device)).blocks[0].cast::<FILE_OBJECT>();
        print_value("flags", u64::from(std::ptr::read_volatile(&raw const (*file).Flags)));
        complete(irp, STATUS_SUCCESS, 0);
    }
    STATUS_SUCCESS
}

unsafe extern "C" fn entry_keeps_file(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    unsafe {
        entry_with(
            driver,
            &[(IRP_MJ_CREATE, Some(create_keeps_file)), (IRP_MJ_DEVICE_CONTROL, Some(ioctl_reads_kept_file))],
            None,
        )
    }
}

#[test]
fn touching_a_closed_file_object_is_d5() {
    let machine = machine();
    load(&machine, entry_keeps_file);
    let (first, handle) = open(&machine);
    first.close(handle).unwrap();
    let (second, other) = open(&machine);
    let v = bugcheck(second.ioctl(other, 0x22_2000, &[], 0));
    let flags = printed(&machine, "file") + std::mem::offset_of!(FILE_OBJECT, Flags) as u64;
    assert_params(&v, 0xD5, [Some(flags), Some(0), None, Some(0)]);
}

/// Deletes the device, then reads its Flags: the bug.
unsafe extern "C" fn unload_reads_deleted_device(driver: PDRIVER_OBJECT) {
    delete_link(LINK);
    // SAFETY: the device is the driver's; the read after IoDeleteDevice is the bug.
    unsafe {
        let device = (*driver).DeviceObject;
        print_value("device", device as u64);
        IoDeleteDevice(device);
        print_value("flags", u64::from(std::ptr::read_volatile(&raw const (*device).Flags)));
    }
}

unsafe extern "C" fn entry_reads_deleted_device(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    unsafe { entry_with(driver, &[], Some(unload_reads_deleted_device)) }
}

#[test]
fn touching_a_deleted_device_object_is_d5() {
    let machine = machine();
    let driver = load(&machine, entry_reads_deleted_device);
    let v = bugcheck(machine.stop_driver(driver));
    let flags = printed(&machine, "device") + std::mem::offset_of!(DEVICE_OBJECT, Flags) as u64;
    assert_params(&v, 0xD5, [Some(flags), Some(0), None, Some(0)]);
}

// ---------------------------------------------------------------------------------
// 0xC7: a live timer or DPC in memory being freed
// ---------------------------------------------------------------------------------

unsafe extern "C" fn timer_dpc(_dpc: PRKDPC, _context: PVOID, _a1: PVOID, _a2: PVOID) {}

/// A KTIMER and its KDPC in one pool block.
#[repr(C)]
struct TimerBlock {
    timer: KTIMER,
    dpc: KDPC,
}

/// Allocates a [`TimerBlock`], sets the timer (10 ms, with the DPC), prints the
/// addresses, and returns it.
///
/// # Safety
/// Call from driver code at PASSIVE_LEVEL.
unsafe fn set_timer_block() -> *mut TimerBlock {
    let size = size_of::<TimerBlock>();
    // SAFETY: a fresh block large enough for the timer and the DPC.
    unsafe {
        let block = ExAllocatePool2(POOL_FLAG_NON_PAGED, size as u64, TAG).cast::<TimerBlock>();
        KeInitializeTimer(&raw mut (*block).timer);
        KeInitializeDpc(&raw mut (*block).dpc, Some(timer_dpc), std::ptr::null_mut());
        KeSetTimer(&raw mut (*block).timer, common::relative_ms(10), &raw mut (*block).dpc);
        print_value("block", block as u64);
        print_value("end", block as u64 + size as u64);
        print_value("dpc", (&raw mut (*block).dpc) as u64);
        block
    }
}

entry_then!(entry_frees_set_timer, |_s| {
    // SAFETY: freeing the block while its timer is set is the bug.
    unsafe { ExFreePool(set_timer_block().cast()) };
});

#[test]
fn freeing_pool_that_holds_a_set_timer_is_c7_0() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_frees_set_timer));
    let block = printed(&machine, "block");
    // P2 the timer (the block's first field), P3/P4 the range being freed.
    assert_params(&v, 0xC7, [Some(0), Some(block), Some(block), Some(printed(&machine, "end"))]);
}

entry_then!(entry_frees_timer_dpc, |s| {
    // SAFETY: the timer lives in the device state; its DPC is in the block freed while
    // the timer is set: the bug.
    unsafe {
        let block = set_timer_block();
        KeCancelTimer(&raw mut (*block).timer);
        KeInitializeTimer(&raw mut (*s).timer);
        KeSetTimer(&raw mut (*s).timer, common::relative_ms(10), &raw mut (*block).dpc);
        ExFreePool(block.cast());
    }
});

#[test]
fn freeing_the_dpc_of_a_set_timer_is_c7_1() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_frees_timer_dpc));
    let block = printed(&machine, "block");
    assert_params(&v, 0xC7, [Some(1), Some(printed(&machine, "dpc")), Some(block), Some(printed(&machine, "end"))]);
}

entry_then!(entry_frees_cancelled_timer, |_s| {
    // SAFETY: cancelled first, then freed: correct.
    unsafe {
        let block = set_timer_block();
        KeCancelTimer(&raw mut (*block).timer);
        ExFreePool(block.cast());
    }
});

#[test]
fn freeing_pool_after_cancelling_its_timer_passes() {
    let machine = machine();
    load(&machine, entry_frees_cancelled_timer);
    machine.advance_ms(20).unwrap();
    common::assert_clean(&machine);
}

/// A device whose extension is one KTIMER, set when the device is created.
unsafe extern "C" fn entry_timer_in_extension(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    let mut name = wide(DEVICE);
    let mut unicode = counted(&mut name);
    let mut device: PDEVICE_OBJECT = std::ptr::null_mut();
    // SAFETY: valid pointers for the call; the extension is ours to use.
    unsafe {
        let status = IoCreateDevice(
            driver,
            size_of::<KTIMER>() as u32,
            &raw mut unicode,
            FILE_DEVICE_UNKNOWN,
            0,
            0,
            &raw mut device,
        );
        if status != STATUS_SUCCESS {
            return status;
        }
        (*device).Flags |= DO_BUFFERED_IO;
        (*device).Flags &= !DO_DEVICE_INITIALIZING;
        let timer = (*device).DeviceExtension.cast::<KTIMER>();
        KeInitializeTimer(timer);
        KeSetTimer(timer, common::relative_ms(1000), std::ptr::null_mut());
        print_value("device", device as u64);
        print_value("timer", timer as u64);
        print_value("end", timer as u64 + size_of::<KTIMER>() as u64);
        (*driver).MajorFunction[IRP_MJ_CREATE as usize] = Some(common::dispatch_basic);
        (*driver).MajorFunction[IRP_MJ_CLEANUP as usize] = Some(common::dispatch_basic);
        (*driver).MajorFunction[IRP_MJ_CLOSE as usize] = Some(common::dispatch_basic);
        (*driver).DriverUnload = Some(unload_deletes_device);
    }
    create_link(LINK, DEVICE)
}

/// Deletes the device without cancelling the timer in its extension: the bug.
unsafe extern "C" fn unload_deletes_device(driver: PDRIVER_OBJECT) {
    delete_link(LINK);
    // SAFETY: the driver's only device.
    unsafe { IoDeleteDevice((*driver).DeviceObject) };
}

#[test]
fn deleting_a_device_whose_extension_holds_a_set_timer_is_c7_0() {
    let machine = machine();
    let driver = load(&machine, entry_timer_in_extension);
    let v = bugcheck(machine.stop_driver(driver));
    // The range is the device object's block: the object, then its extension.
    let (device, timer) = (printed(&machine, "device"), printed(&machine, "timer"));
    assert_params(&v, 0xC7, [Some(0), Some(timer), Some(device), Some(printed(&machine, "end"))]);
}

// ---------------------------------------------------------------------------------
// Paged pool (Force IRQL Checking)
// ---------------------------------------------------------------------------------

entry_then!(entry_frees_paged_at_dispatch, |s| {
    // SAFETY: freeing paged pool under a spin lock is the bug.
    unsafe {
        let block = ExAllocatePool2(POOL_FLAG_PAGED, 64, TAG);
        print_value("block", block as u64);
        let irql = KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        ExFreePool(block);
        KeReleaseSpinLock(&raw mut (*s).lock, irql);
    }
});

#[test]
fn freeing_paged_pool_at_dispatch_level_is_c4_11() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_frees_paged_at_dispatch));
    // P2 the IRQL, P3 the pool type (PagedPool, 1), P4 the address.
    assert_params(&v, 0xC4, [Some(0x11), Some(2), Some(1), Some(printed(&machine, "block"))]);
}

entry_then!(entry_reads_paged_at_dispatch, |s| {
    // SAFETY: reading paged pool under a spin lock is the bug.
    unsafe {
        let block = ExAllocatePool2(POOL_FLAG_PAGED, 64, TAG).cast::<u64>();
        std::ptr::write_volatile(block, 7);
        print_value("block", block as u64);
        let irql = KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        print_value("value", std::ptr::read_volatile(block));
        KeReleaseSpinLock(&raw mut (*s).lock, irql);
    }
});

#[test]
fn touching_paged_pool_at_dispatch_level_is_d1() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_reads_paged_at_dispatch));
    assert_params(&v, 0xD1, [Some(printed(&machine, "block")), Some(2), Some(0), None]);
}

entry_then!(entry_uses_paged_at_passive, |s| {
    // SAFETY: paged pool touched only at PASSIVE_LEVEL, between spin-lock sections that
    // trim it: correct.
    unsafe {
        let block = ExAllocatePool2(POOL_FLAG_PAGED, 64, TAG).cast::<u64>();
        std::ptr::write_volatile(block, 7);
        let irql = KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        KeReleaseSpinLock(&raw mut (*s).lock, irql);
        print_value("value", std::ptr::read_volatile(block));
        ExFreePool(block.cast());
    }
});

#[test]
fn paged_pool_touched_at_passive_level_pages_back_in() {
    let machine = machine();
    load(&machine, entry_uses_paged_at_passive);
    assert_eq!(printed(&machine, "value"), 7);
    common::assert_clean(&machine);
}

// ---------------------------------------------------------------------------------
// Kernel stacks
// ---------------------------------------------------------------------------------

/// A dispatch routine with a `BYTES`-byte local buffer it fills.
#[inline(never)]
fn use_stack<const BYTES: usize>() -> u8 {
    let mut buffer = [0u8; BYTES];
    std::hint::black_box(&mut buffer);
    buffer.iter().fold(0, |a, b| a ^ b)
}

unsafe extern "C" fn read_uses_32k(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    std::hint::black_box(use_stack::<{ 32 * 1024 }>());
    // SAFETY: the IRP is ours.
    unsafe { complete(irp, STATUS_SUCCESS, 0) };
    STATUS_SUCCESS
}

unsafe extern "C" fn read_uses_8k(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    std::hint::black_box(use_stack::<{ 8 * 1024 }>());
    // SAFETY: the IRP is ours.
    unsafe { complete(irp, STATUS_SUCCESS, 0) };
    STATUS_SUCCESS
}

unsafe extern "C" fn entry_big_frame(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    unsafe { entry_with(driver, &[(IRP_MJ_READ, Some(read_uses_32k))], None) }
}

unsafe extern "C" fn entry_modest_frame(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    unsafe { entry_with(driver, &[(IRP_MJ_READ, Some(read_uses_8k))], None) }
}

#[test]
fn a_dispatch_routine_overflowing_the_kernel_stack_is_7f_8() {
    let machine = machine();
    load(&machine, entry_big_frame);
    let (process, handle) = open(&machine);
    let v = bugcheck(process.read(handle, 4));
    // P1 8: the double fault a kernel stack overflow ends in.
    assert_params(&v, 0x7F, [Some(8), Some(0), Some(0), Some(0)]);
    assert_eq!(v.routine, ntsim::trace::Routine::Dispatch(IRP_MJ_READ as u8));
}

#[test]
fn a_dispatch_routine_within_the_kernel_stack_passes() {
    let machine = machine();
    load(&machine, entry_modest_frame);
    let (process, handle) = open(&machine);
    assert_eq!(process.read(handle, 4).unwrap().done().expect("done").status, STATUS_SUCCESS);
    process.close(handle).unwrap();
    common::assert_clean(&machine);
}

unsafe extern "C" fn dpc_uses_32k(_dpc: PRKDPC, _context: PVOID, _a1: PVOID, _a2: PVOID) {
    std::hint::black_box(use_stack::<{ 32 * 1024 }>());
}

entry_then!(entry_big_dpc, |s| {
    // SAFETY: the state's timer and DPC; the DPC routine's frame is the bug.
    unsafe {
        KeInitializeTimer(&raw mut (*s).timer);
        KeInitializeDpc(&raw mut (*s).dpc, Some(dpc_uses_32k), std::ptr::null_mut());
        KeSetTimer(&raw mut (*s).timer, common::relative_ms(10), &raw mut (*s).dpc);
    }
});

#[test]
fn a_dpc_overflowing_the_kernel_stack_is_7f_8() {
    let machine = machine();
    load(&machine, entry_big_dpc);
    let v = bugcheck(machine.advance_ms(20));
    assert_params(&v, 0x7F, [Some(8), Some(0), Some(0), Some(0)]);
    assert_eq!(v.routine, ntsim::trace::Routine::CustomTimerDpc);
}

/// Calls the kernel with 24 KiB of its own frame below DriverEntry's.
#[inline(never)]
fn call_kernel_deep() {
    let mut buffer = [0u8; 24 * 1024];
    std::hint::black_box(&mut buffer);
    // A plain kernel call; how deep it is made is the bug.
    let irql = ntsim::inline::KeGetCurrentIrql();
    std::hint::black_box((irql, &mut buffer));
}

entry_then!(entry_calls_kernel_deep, |_s| {
    call_kernel_deep();
});

#[test]
fn driver_entry_overflowing_the_kernel_stack_is_7f_8() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_calls_kernel_deep));
    assert_params(&v, 0x7F, [Some(8), Some(0), Some(0), Some(0)]);
}
