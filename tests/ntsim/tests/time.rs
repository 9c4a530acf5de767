//! Time as Windows has it: system time since 1601, clock ticks, absolute (positive)
//! due times and timeouts, the timer DPC's arguments, and `Config::time_passes`, under
//! which a timeout can expire while the thread it waits for is merely slow.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::doc_markdown,
    reason = "kernel names in docs; LARGE_INTEGERs and PVOIDs carry 64-bit times"
)]

mod common;

use std::sync::atomic::Ordering;

use common::{
    State, assert_clean, bugcheck, driver_state, entry_with, load, machine, print_value, printed, relative_ms,
    start_thread, wait,
};
use ntsim::wdk_sys::ntddk::{
    ExAllocatePool2, ExFreePoolWithTag, KeCancelTimer, KeDelayExecutionThread, KeFlushQueuedDpcs, KeInitializeDpc,
    KeInitializeEvent, KeInitializeTimer, KeQueryInterruptTimePrecise, KeQueryPerformanceCounter,
    KeQuerySystemTimePrecise, KeQueryTimeIncrement, KeQueryUnbiasedInterruptTime, KeSetEvent, KeSetTimer, KeSetTimerEx,
    KeStallExecutionProcessor, ObfDereferenceObject,
};
use ntsim::wdk_sys::{
    _EVENT_TYPE, _MODE, LARGE_INTEGER, NTSTATUS, PCUNICODE_STRING, PDRIVER_OBJECT, POOL_FLAG_NON_PAGED, PRKDPC, PVOID,
    STATUS_SUCCESS, STATUS_TIMEOUT,
};
use ntsim::{BOOT_SYSTEM_TIME, Config, DEFAULT_TIME_INCREMENT, DriverState, Machine, TimePasses};

/// 100 ns units per millisecond.
const MS: i64 = 10_000;

/// A due time of `ms` milliseconds written without its minus sign: an absolute system
/// time in January 1601.
fn forgotten_minus_ms(ms: i64) -> LARGE_INTEGER {
    LARGE_INTEGER { QuadPart: ms * MS }
}

/// How many times the test's timer DPC ran.
fn ticks(machine: &Machine) -> usize {
    machine.debug_output().iter().filter(|l| l.starts_with("dpc at=")).count()
}

/// Counts its runs and prints the time it runs at and the time it was given.
unsafe extern "C" fn timer_dpc(_dpc: PRKDPC, context: PVOID, a1: PVOID, a2: PVOID) {
    let s: *mut State = context.cast();
    // SAFETY: the state outlives the machine; a NULL frequency pointer is allowed.
    let now = unsafe {
        (*s).ticks.fetch_add(1, Ordering::Relaxed);
        KeQueryPerformanceCounter(std::ptr::null_mut()).QuadPart
    };
    print_value("dpc at", now as u64);
    print_value("sa", (a1 as u64 & 0xFFFF_FFFF) | ((a2 as u64) << 32));
}

/// Cancels the timer and flushes its DPC.
unsafe extern "C" fn unload_timer(driver: PDRIVER_OBJECT) {
    // SAFETY: our device's state; then as for unload_clean.
    unsafe {
        let s = driver_state(driver);
        KeCancelTimer(&raw mut (*s).timer);
        KeFlushQueuedDpcs();
        common::unload_clean(driver);
    }
}

/// DriverEntry arming the state's timer with `due` (and `period_ms`) and `timer_dpc`.
///
/// # Safety
/// `driver` is the driver object passed to DriverEntry.
unsafe fn entry_arming(driver: PDRIVER_OBJECT, due: LARGE_INTEGER, period_ms: i32) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object and the new device's state.
    unsafe {
        let status = entry_with(driver, &[], Some(unload_timer));
        let s = driver_state(driver);
        KeInitializeTimer(&raw mut (*s).timer);
        KeInitializeDpc(&raw mut (*s).dpc, Some(timer_dpc), s.cast());
        KeSetTimerEx(&raw mut (*s).timer, due, period_ms, &raw mut (*s).dpc);
        status
    }
}

unsafe extern "C" fn entry_periodic_forgotten_minus(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: forwarded.
    unsafe { entry_arming(driver, forgotten_minus_ms(100), 100) }
}

unsafe extern "C" fn entry_periodic_relative(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: forwarded.
    unsafe { entry_arming(driver, relative_ms(100), 100) }
}

unsafe extern "C" fn entry_one_shot_forgotten_minus(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: forwarded.
    unsafe { entry_arming(driver, forgotten_minus_ms(100), 0) }
}

unsafe extern "C" fn entry_one_shot_1ms(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: forwarded.
    unsafe { entry_arming(driver, relative_ms(1), 0) }
}

/// (a) A periodic timer armed with `+100 ms` (the minus forgotten) is set for a moment
/// in 1601: its DPC runs before the clock moves at all, then every period from there;
/// the same timer armed with `-100 ms` has not fired at that point.
#[test]
fn a_positive_small_due_time_is_in_the_past_and_fires_at_once() {
    let machine = machine();
    let driver = load(&machine, entry_periodic_forgotten_minus);
    machine.run_until_idle();
    assert_eq!(machine.now(), 0, "the clock has not moved");
    assert_eq!(ticks(&machine), 1, "fired inside KeSetTimerEx: {:#?}", machine.debug_output());
    assert_eq!(printed(&machine, "dpc at"), 0);
    // Re-inserted one period on, on a tick: 100 ms rounds up to 109.375 ms (7 ticks).
    machine.advance_ms(100).unwrap();
    assert_eq!(ticks(&machine), 1);
    machine.advance_ms(10).unwrap();
    assert_eq!(ticks(&machine), 2);
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);

    let control = common::machine();
    let driver = load(&control, entry_periodic_relative);
    control.run_until_idle();
    assert_eq!(ticks(&control), 0, "a relative due time waits: {:#?}", control.debug_output());
    control.advance_ms(110).unwrap();
    assert_eq!(ticks(&control), 1);
    assert_eq!(control.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&control);
}

/// (a) The one-shot version: fired at once, never again.
#[test]
fn a_one_shot_timer_with_a_positive_small_due_time_fires_at_once_and_once() {
    let machine = machine();
    let driver = load(&machine, entry_one_shot_forgotten_minus);
    machine.run_until_idle();
    assert_eq!((machine.now(), ticks(&machine)), (0, 1), "{:#?}", machine.debug_output());
    machine.advance_ms(1_000).unwrap();
    assert_eq!(ticks(&machine), 1);
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

/// (c) A relative due time of 1 ms expires at the first clock tick, 15.625 ms, not at
/// 1 ms; (d) its DPC gets that tick's system time in SystemArgument1 (low half) and
/// SystemArgument2 (high half).
#[test]
fn a_1ms_timer_fires_at_the_first_tick_with_the_system_time_in_its_arguments() {
    let machine = machine();
    let driver = load(&machine, entry_one_shot_1ms);
    machine.advance_ms(15).unwrap();
    assert_eq!(ticks(&machine), 0, "not due before the tick: {:#?}", machine.debug_output());
    machine.advance(DEFAULT_TIME_INCREMENT - 15 * MS as u64).unwrap();
    assert_eq!(ticks(&machine), 1);
    assert_eq!(printed(&machine, "dpc at"), DEFAULT_TIME_INCREMENT);
    assert_eq!(printed(&machine, "sa"), BOOT_SYSTEM_TIME + DEFAULT_TIME_INCREMENT);
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

/// (d) A timer that expired inside KeSetTimerEx gets the system time of that moment.
#[test]
fn a_timer_expired_at_once_gets_the_current_system_time() {
    let machine = machine();
    let driver = load(&machine, entry_one_shot_forgotten_minus);
    machine.run_until_idle();
    assert_eq!(printed(&machine, "sa"), BOOT_SYSTEM_TIME);
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

/// With a 1 ms clock tick (`Config::time_increment`), the same timer fires at 1 ms.
#[test]
fn the_tick_is_configurable() {
    let machine = Machine::new(Config { time_increment: MS as u64, ..Config::seeded(1) });
    let driver = load(&machine, entry_one_shot_1ms);
    machine.advance_ms(1).unwrap();
    assert_eq!(printed(&machine, "dpc at"), MS as u64);
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

unsafe extern "C" fn entry_waits(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object and the new device's state; the event is
    // never signalled.
    unsafe {
        let status = entry_with(driver, &[], None);
        let s = driver_state(driver);
        KeInitializeEvent(&raw mut (*s).event, _EVENT_TYPE::NotificationEvent, 0);
        let forgotten = wait((&raw mut (*s).event).cast(), Some(5_000 * MS));
        print_value("positive", u64::from(forgotten.cast_unsigned()));
        print_value("positive at", KeQueryPerformanceCounter(std::ptr::null_mut()).QuadPart as u64);
        let relative = wait((&raw mut (*s).event).cast(), Some(-5_000 * MS));
        print_value("relative", u64::from(relative.cast_unsigned()));
        print_value("relative at", KeQueryPerformanceCounter(std::ptr::null_mut()).QuadPart as u64);
        status
    }
}

/// (b) KeWaitForSingleObject with a timeout of `+5 s` (the minus forgotten) returns
/// STATUS_TIMEOUT at once; with `-5 s` it waits 5 s (rounded up to a tick).
#[test]
fn a_wait_with_a_positive_small_timeout_times_out_at_once() {
    let machine = machine();
    let driver = load(&machine, entry_waits);
    assert_eq!(printed(&machine, "positive"), STATUS_TIMEOUT as u64);
    assert_eq!(printed(&machine, "positive at"), 0, "no time passed");
    assert_eq!(printed(&machine, "relative"), STATUS_TIMEOUT as u64);
    assert_eq!(printed(&machine, "relative at"), 5_000 * MS as u64, "5 s is 320 whole ticks");
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

/// Reads every clock in a DPC at the first tick, and again 1 ms of stalling later.
unsafe extern "C" fn clocks_dpc(_dpc: PRKDPC, _context: PVOID, _a1: PVOID, _a2: PVOID) {
    let report = |when: &str| {
        let mut precise = LARGE_INTEGER { QuadPart: 0 };
        let mut qpc = 0u64;
        // SAFETY: valid out-pointers; every query is allowed at DISPATCH_LEVEL.
        unsafe {
            KeQuerySystemTimePrecise(&raw mut precise);
            print_value(&format!("{when} interrupt precise"), KeQueryInterruptTimePrecise(&raw mut qpc));
            print_value(&format!("{when} qpc"), qpc);
            print_value(&format!("{when} system precise"), precise.QuadPart as u64);
            print_value(&format!("{when} unbiased"), KeQueryUnbiasedInterruptTime());
        }
        print_value(&format!("{when} system"), ntsim::inline::KeQuerySystemTime() as u64);
        print_value(&format!("{when} interrupt"), ntsim::inline::KeQueryInterruptTime());
        print_value(&format!("{when} ticks"), ntsim::inline::KeQueryTickCount() as u64);
    };
    report("tick");
    // SAFETY: any IRQL.
    unsafe { KeStallExecutionProcessor(1_000) };
    report("stalled");
    // SAFETY: any IRQL.
    print_value("increment", u64::from(unsafe { KeQueryTimeIncrement() }));
}

unsafe extern "C" fn entry_reads_clocks(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object and the new device's state.
    unsafe {
        let status = entry_with(driver, &[], Some(unload_timer));
        let s = driver_state(driver);
        print_value("boot system", ntsim::inline::KeQuerySystemTime() as u64);
        KeInitializeTimer(&raw mut (*s).timer);
        KeInitializeDpc(&raw mut (*s).dpc, Some(clocks_dpc), s.cast());
        KeSetTimer(&raw mut (*s).timer, relative_ms(1), &raw mut (*s).dpc);
        status
    }
}

/// System time counts from 2024 and interrupt time from boot; the tick-updated ones
/// stay at the latest tick while the precise ones and the performance counter follow
/// the clock (here moved 1 ms by KeStallExecutionProcessor).
#[test]
fn system_time_interrupt_time_and_ticks_count_separately() {
    let machine = machine();
    let driver = load(&machine, entry_reads_clocks);
    assert_eq!(printed(&machine, "boot system"), BOOT_SYSTEM_TIME);
    machine.advance_ms(20).unwrap();
    let tick = DEFAULT_TIME_INCREMENT;
    let stalled = tick + MS as u64;
    let read = |key: &str| printed(&machine, key);
    assert_eq!(read("increment"), DEFAULT_TIME_INCREMENT);
    for (when, now) in [("tick", tick), ("stalled", stalled)] {
        assert_eq!(read(&format!("{when} system")), BOOT_SYSTEM_TIME + tick, "{when}");
        assert_eq!(read(&format!("{when} interrupt")), tick, "{when}");
        assert_eq!(read(&format!("{when} unbiased")), tick, "{when}");
        assert_eq!(read(&format!("{when} ticks")), 1, "{when}");
        assert_eq!(read(&format!("{when} system precise")), BOOT_SYSTEM_TIME + now, "{when}");
        assert_eq!(read(&format!("{when} interrupt precise")), now, "{when}");
        assert_eq!(read(&format!("{when} qpc")), now, "{when}");
    }
    assert_eq!(machine.system_time(), BOOT_SYSTEM_TIME + 20 * MS as u64);
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

unsafe extern "C" fn entry_delays(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object; valid intervals.
    unsafe {
        let status = entry_with(driver, &[], None);
        let mut forgotten = forgotten_minus_ms(1);
        let _ = KeDelayExecutionThread(_MODE::KernelMode as i8, 0, &raw mut forgotten);
        print_value("positive at", KeQueryPerformanceCounter(std::ptr::null_mut()).QuadPart as u64);
        let mut relative = relative_ms(1);
        let delayed = KeDelayExecutionThread(_MODE::KernelMode as i8, 0, &raw mut relative);
        print_value("relative at", KeQueryPerformanceCounter(std::ptr::null_mut()).QuadPart as u64);
        print_value("delayed", delayed as u64);
        status
    }
}

/// KeDelayExecutionThread: `+1 ms` returns at once, `-1 ms` at the first tick.
#[test]
fn ke_delay_execution_thread_sleeps_to_a_tick() {
    let machine = machine();
    let driver = load(&machine, entry_delays);
    assert_eq!(printed(&machine, "positive at"), 0);
    assert_eq!(printed(&machine, "relative at"), DEFAULT_TIME_INCREMENT);
    assert_eq!(printed(&machine, "delayed"), STATUS_SUCCESS as u64);
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    assert_clean(&machine);
}

// ---------------------------------------------------------------------------------
// Time passing at scheduling points (Config::time_passes)
// ---------------------------------------------------------------------------------

/// Bytes of the worker's buffer.
const BUFFER: usize = 64;

/// A slow worker: waits for the go signal, then fills the buffer one byte per kernel
/// call, and finishes.
unsafe extern "C" fn slow_worker(context: PVOID) {
    let s: *mut State = context.cast();
    // SAFETY: the state is leaked; the buffer is the driver's until Unload frees it.
    unsafe {
        let _ = wait((&raw mut (*s).event).cast(), None);
        let buffer: *mut u8 = (*s).blocks[0].cast();
        for i in 0..BUFFER {
            KeQueryPerformanceCounter(std::ptr::null_mut());
            *buffer.add(i) = 0x5A;
        }
    }
}

unsafe extern "C" fn entry_slow_worker(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object and the new device's state.
    unsafe {
        let status = entry_with(driver, &[], Some(unload_waits_with_timeout));
        let s = driver_state(driver);
        KeInitializeEvent(&raw mut (*s).event, _EVENT_TYPE::NotificationEvent, 0);
        (*s).blocks[0] = ExAllocatePool2(POOL_FLAG_NON_PAGED, BUFFER as u64, common::TAG);
        start_thread(s, slow_worker);
        status
    }
}

/// The deliberate bug: waits for the worker with a 1 s timeout, ignores
/// STATUS_TIMEOUT, and frees the worker's buffer anyway.
unsafe extern "C" fn unload_waits_with_timeout(driver: PDRIVER_OBJECT) {
    // SAFETY: our state; the thread object is referenced by start_thread.
    unsafe {
        let s = driver_state(driver);
        KeSetEvent(&raw mut (*s).event, 0, 0);
        let waited = wait((*s).thread, Some(-1_000 * MS));
        print_value("waited", u64::from(waited.cast_unsigned()));
        ObfDereferenceObject((*s).thread);
        ExFreePoolWithTag((*s).blocks[0], common::TAG);
        common::unload_clean(driver);
    }
}

fn run_slow_worker(config: Config) -> Result<DriverState, ntsim::Stopped> {
    let machine = Machine::new(config);
    let driver = load(&machine, entry_slow_worker);
    let state = machine.stop_driver(driver)?;
    machine.verdict()?;
    Ok(state)
}

/// (e) Without time passing, the wait always sees the worker finish: the clock moves
/// only when no thread can run, and the worker always can. With it, the 1 s expires
/// while the worker still runs and Unload frees the buffer under it.
#[test]
fn time_passing_catches_a_teardown_that_trusts_a_timeout() {
    for seed in 1..=5 {
        let state = run_slow_worker(Config::seeded(seed)).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(state, DriverState::Unloaded, "seed {seed}");
    }
    let passes = TimePasses { max_step: 100 * MS as u64, one_in: 2 };
    for seed in 1..=5 {
        let config = Config { time_passes: Some(passes), ..Config::seeded(seed) };
        let v = bugcheck(run_slow_worker(config.clone()));
        assert_caught(&v, seed);
        let again = bugcheck(run_slow_worker(config));
        assert_eq!((again.code, &again.thread), (v.code, &v.thread), "seed {seed} replays");
    }
}

/// The worker's next write lands in the freed buffer (0xD5, P2 = 1: a write), or the
/// unload check finds the worker still running first (ntsim's own unload check).
#[track_caller]
fn assert_caught(v: &ntsim::Violation, seed: u64) {
    let freed_write = v.code == 0xD5 && v.params[1] == 1;
    assert!(
        freed_write || v.code == ntsim::checker::code::NTSIM_UNLOAD_LEAK,
        "seed {seed}: not the use after free or the running thread:\n{v}"
    );
}
