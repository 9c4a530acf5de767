//! KTIMERs (one-shot and periodic, with a DPC), the per-device IoTimer, and the
//! controllable clock that drives them. Nothing here sleeps: time moves only when the
//! test (or an idle machine waiting for a timer) moves it, or, with
//! [`crate::machine::TimePasses`], at scheduling points.
//!
//! The clock (`State::clock`) is the interrupt time: 100 ns units since boot. System
//! time is [`BOOT_SYSTEM_TIME`] plus the interrupt time. Both advance, as Windows
//! reports them, one clock tick ([`crate::machine::Config::time_increment`]) at a time;
//! the precise variants and the performance counter see the clock itself.

use std::collections::{BTreeMap, HashMap};

use super::dpc::{self, Queued};
use super::{header, spinlock};
use crate::checker::{Violation, c9, code};
use crate::irql::DISPATCH_LEVEL;
use crate::machine::{Ctx, KResult, State, kcall};
use crate::trace::Routine;
use crate::wdk_sys::{
    BOOLEAN, LARGE_INTEGER, LONG, NTSTATUS, PDEVICE_OBJECT, PIO_TIMER_ROUTINE, PKDPC, PKTIMER, PVOID, STATUS_SUCCESS,
    TIMER_TYPE,
};

/// 100 ns units per second.
pub const SECOND: u64 = 10_000_000;

/// The system time at boot: 2024-01-01 00:00:00 UTC as a FILETIME (100 ns units since
/// 1601-01-01), fixed so that runs stay reproducible. A due time or timeout that is
/// positive is an absolute system time (KeSetTimer, KeWaitForSingleObject
/// documentation), so a small one is long past.
pub const BOOT_SYSTEM_TIME: u64 = 133_485_408_000_000_000;

/// The default clock tick, 15.625 ms: the interval KeQueryTimeIncrement reports on
/// most x64 machines at the default timer resolution.
pub const DEFAULT_TIME_INCREMENT: u64 = 156_250;

/// The interrupt time as the kernel's tick-updated copy shows it (KeQueryInterruptTime,
/// and the base of relative due times): the clock at its latest tick.
pub(crate) fn last_tick(state: &State) -> u64 {
    state.clock - state.clock % state.time_increment
}

/// The first clock tick at or after `when`: a timer is expired by the processing of
/// the first tick at or after its due time ("Timer Accuracy", Microsoft; ReactOS
/// `KiTimerExpiration` compares DueTime with the tick's interrupt time).
pub(crate) fn tick_at_or_after(increment: u64, when: u64) -> u64 {
    when.div_ceil(increment) * increment
}

/// KeQuerySystemTime: the system time at the latest tick.
pub(crate) fn system_time(state: &State) -> u64 {
    BOOT_SYSTEM_TIME + last_tick(state)
}

/// When a due time or timeout given as Windows takes it expires, in interrupt time and
/// on a tick; `None` when it already has. Negative is relative to the interrupt time
/// at the latest tick; zero or positive is an absolute system time, expired when it is
/// not later than the current system time (ReactOS `KiComputeDueTime`).
pub(crate) fn expiry(state: &State, value: i64) -> Option<u64> {
    let due = if value < 0 {
        last_tick(state) + value.unsigned_abs()
    } else {
        let absolute = value.unsigned_abs();
        if absolute <= system_time(state) {
            return None;
        }
        absolute - BOOT_SYSTEM_TIME
    };
    Some(tick_at_or_after(state.time_increment, due))
}

pub(crate) struct SetTimer {
    /// The tick (interrupt time) at which it expires.
    due: u64,
    period: u64,
    pub(crate) dpc: usize,
    /// Set order: timers due at the same moment expire in this order, never in
    /// hash-map order (which differs between runs and would break seed replay).
    seq: u64,
}

pub(crate) struct IoTimer {
    routine: PIO_TIMER_ROUTINE,
    context: usize,
    pub(crate) started: bool,
    /// `IoInitializeTimer` order, the order in which one tick calls the routines.
    seq: u64,
}

// SAFETY: the routine is a plain function pointer into driver code.
unsafe impl Send for IoTimer {}

#[derive(Default)]
pub(crate) struct Timers {
    pub(crate) set: HashMap<usize, SetTimer>,
    /// Deadlines of timed waits, with multiplicity.
    waits: BTreeMap<u64, usize>,
    /// Device object → its IoTimer.
    pub(crate) io_timers: HashMap<usize, IoTimer>,
    next_io_tick: u64,
    /// Next `seq` for a set timer or an initialised `IoTimer`.
    next_seq: u64,
}

impl Timers {
    pub(crate) fn add_deadline(&mut self, when: u64) {
        *self.waits.entry(when).or_default() += 1;
    }
    pub(crate) fn forget_deadline(&mut self, when: u64) {
        if let Some(count) = self.waits.get_mut(&when) {
            *count -= 1;
            if *count == 0 {
                self.waits.remove(&when);
            }
        }
    }
}

/// The next moment something timed happens, if anything is scheduled.
pub(crate) fn next_event(state: &State) -> Option<u64> {
    let timers = &state.ke.timers;
    let timer = timers.set.values().map(|t| t.due).min();
    let wait = timers.waits.keys().next().copied();
    let io_tick = timers.io_timers.values().any(|t| t.started).then(|| timers.next_io_tick.max(state.clock + 1));
    [timer, wait, io_tick].into_iter().flatten().min().map(|when| when.max(state.clock))
}

/// Whether nothing timed is due at the current clock.
pub(crate) fn nothing_due(state: &State) -> bool {
    let now = state.clock;
    !state.ke.timers.set.values().any(|t| t.due <= now)
}

/// Sets the clock to `when` (never backwards) and expires what is due.
pub(crate) fn advance_to(state: &mut State, when: u64) {
    state.clock = state.clock.max(when);
    let now = state.clock;
    let mut due: Vec<(u64, u64, usize)> =
        state.ke.timers.set.iter().filter(|(_, t)| t.due <= now).map(|(a, t)| (t.due, t.seq, *a)).collect();
    due.sort_unstable();
    let increment = state.time_increment;
    for (tick, _, timer) in due {
        let entry = state.ke.timers.set.get_mut(&timer).expect("due timer");
        let (dpc, period) = (entry.dpc, entry.period);
        if period > 0 {
            // Re-inserted relative to the tick that expired it (ReactOS
            // KiTimerExpiration: Period as a relative interval). Ticks the clock jumped
            // over in one step expire it only once.
            entry.due = tick_at_or_after(increment, tick + period);
            while entry.due <= now {
                entry.due = tick_at_or_after(increment, entry.due + period);
            }
        } else {
            state.ke.timers.set.remove(&timer);
        }
        signal(state, timer, dpc, BOOT_SYSTEM_TIME + tick);
    }
    if state.ke.timers.next_io_tick == 0 {
        state.ke.timers.next_io_tick = SECOND;
    }
    while state.ke.timers.next_io_tick <= now {
        if state.ke.timers.io_timers.values().any(|t| t.started) {
            state.cpus[0].push(Queued::IoTimerTick);
        }
        state.ke.timers.next_io_tick += SECOND;
    }
    let limit = state.slow_cancel;
    crate::io::irp::check_slow_cancel(state, limit);
    crate::sched::wake_satisfied(state);
}

/// An expiring timer: signalled, and its DPC queued with the system time of the
/// expiring tick, low half in SystemArgument1 and high half in SystemArgument2 (ReactOS
/// `KiTimerExpiration` and `KiSignalTimer` pass KeQuerySystemTime's halves so;
/// Microsoft documents both arguments as not used for a CustomTimerDpc, so a driver
/// must not rely on them).
fn signal(state: &mut State, timer: usize, dpc: usize, system_time: u64) {
    // SAFETY: a set timer is a live KTIMER (checked at unload and when freed).
    unsafe { *header::signal_state(timer) = 1 };
    if dpc == 0 || state.ke.dpcs.inserted.contains_key(&dpc) {
        return;
    }
    let raw = dpc as *mut crate::wdk_sys::KDPC;
    // SAFETY: the driver passed this initialised KDPC with the timer and keeps it alive
    // while the timer is set; KeInsertQueueDpc writes the arguments only when it
    // queues the DPC.
    unsafe {
        (*raw).SystemArgument1 = (system_time & 0xFFFF_FFFF) as PVOID;
        (*raw).SystemArgument2 = (system_time >> 32) as PVOID;
    }
    let cpu = state.ke.dpcs.next_cpu;
    state.ke.dpcs.next_cpu = state.ke.dpcs.next_cpu.wrapping_add(1);
    dpc::insert(state, dpc, cpu, Routine::CustomTimerDpc);
}

/// With [`crate::machine::TimePasses`]: at a scheduling point the clock may move by a
/// seeded random step, expiring timers and timeouts while threads are still runnable.
pub(crate) fn maybe_pass_time(state: &mut State) {
    let Some(passes) = state.time_passes else { return };
    let rng = &mut state.time_rng;
    if passes.max_step == 0 || !rng.next_u64().is_multiple_of(u64::from(passes.one_in.max(1))) {
        return;
    }
    let step = 1 + rng.next_u64() % passes.max_step;
    run_clock_for(state, step);
}

/// Moves the clock forward by `step`, expiring what falls due in order on the way.
pub(crate) fn run_clock_for(state: &mut State, step: u64) {
    let target = state.clock + step;
    while let Some(when) = next_event(state).filter(|&w| w <= target && w > state.clock) {
        advance_to(state, when);
    }
    advance_to(state, target);
}

/// The I/O manager's IopTimerLock in the spin-lock owner table (an odd key: no real
/// lock word). IopTimerDispatch holds it while it calls every enabled IoTimer
/// routine, and IoStartTimer, IoStopTimer and IoDeleteDevice take it (ReactOS
/// `iotimer.c`; decompiled Windows 10 `IopTimerDispatch`).
pub(crate) const IO_TIMER_LOCK: usize = usize::MAX - 2;

/// Runs every started IoTimer routine once, at DISPATCH_LEVEL, holding IopTimerLock.
pub(crate) fn run_io_timers(ctx: &mut Ctx<'_>) -> KResult<()> {
    spinlock::acquire(ctx, IO_TIMER_LOCK)?;
    let mut started: Vec<(u64, usize, PIO_TIMER_ROUTINE, usize)> = ctx
        .ke
        .timers
        .io_timers
        .iter()
        .filter(|(_, t)| t.started)
        .map(|(d, t)| (t.seq, *d, t.routine, t.context))
        .collect();
    started.sort_unstable_by_key(|&(seq, ..)| seq);
    for (_, device, routine, context) in started {
        let Some(routine) = routine else {
            // IoInitializeTimer with a NULL routine: the tick calls address 0.
            return Err(crate::ke::dpc::null_routine_called(ctx, "IoTimer"));
        };
        // SAFETY: the driver registered this routine for this device with IoInitializeTimer.
        ctx.call_driver(Routine::IoTimer, || unsafe { routine(device as PDEVICE_OBJECT, context as PVOID) });
        dpc::after_routine(ctx, Routine::IoTimer)?;
    }
    spinlock::release(ctx, IO_TIMER_LOCK)
}

/// Runs `f` holding IopTimerLock, raised to DISPATCH_LEVEL as KeAcquireSpinLock does.
fn with_timer_lock<R>(ctx: &mut Ctx<'_>, f: impl FnOnce(&mut Ctx<'_>) -> KResult<R>) -> KResult<R> {
    let old = ctx.irql();
    ctx.set_irql(old.max(DISPATCH_LEVEL));
    spinlock::acquire(ctx, IO_TIMER_LOCK)?;
    let result = f(ctx)?;
    spinlock::release(ctx, IO_TIMER_LOCK)?;
    ctx.set_irql(old);
    Ok(result)
}

/// IoStartTimer and IoStopTimer read `DeviceObject->Timer->TimerFlag` under
/// IopTimerLock with no NULL check: without a successful IoInitializeTimer that is a
/// read of address 2 (TimerFlag's offset in IO_TIMER) at DISPATCH_LEVEL.
fn io_timer_of(ctx: &mut Ctx<'_>, device: usize, routine: usize) -> KResult<()> {
    if ctx.ke.timers.io_timers.contains_key(&device) {
        return Ok(());
    }
    let irql = ctx.irql();
    let api = ctx.api;
    Err(ctx.violation(Violation::new(
        code::IRQL_NOT_LESS_OR_EQUAL,
        [2, u64::from(irql), 0, routine as u64],
        "IRQL_NOT_LESS_OR_EQUAL",
        format!(
            "{api} on device {device:#x}, which has no IoTimer: DeviceObject->Timer is NULL (IoInitializeTimer was never called, or failed)."
        ),
    )))
}

/// IoDeleteDevice's removal of the device's IoTimer, started or not.
pub(crate) fn remove_io_timer(ctx: &mut Ctx<'_>, device: usize) -> KResult<()> {
    if !ctx.ke.timers.io_timers.contains_key(&device) {
        return Ok(());
    }
    with_timer_lock(ctx, |ctx| {
        ctx.ke.timers.io_timers.remove(&device);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeInitializeTimerEx(Timer: PKTIMER, Type: TIMER_TYPE) {
    kcall("KeInitializeTimerEx", |ctx| {
        let timer = Timer as usize;
        if ctx.ke.timers.set.contains_key(&timer) {
            // The timer is still linked into the timer table: re-initialising it
            // rewrites those links. Verifier reports the timer found where it may not be.
            return Err(ctx.violation(Violation::new(
                code::TIMER_OR_DPC_INVALID,
                [0, timer as u64, timer as u64, (timer + size_of::<crate::wdk_sys::KTIMER>()) as u64],
                "TIMER_OR_DPC_INVALID",
                format!("KeInitializeTimer(Ex) on {timer:#x}, which is still set: KeCancelTimer it first."),
            )));
        }
        let kind = if Type == 0 { header::TIMER_NOTIFICATION } else { header::TIMER_SYNCHRONIZATION };
        // SAFETY: the driver passed a KTIMER to initialise.
        unsafe {
            core::ptr::write_bytes(Timer, 0, 1);
            header::init(Timer as usize, kind, size_of::<crate::wdk_sys::KTIMER>(), 0);
        }
        Ok(())
    });
}
const _: crate::wdk_sys::fnsig::KeInitializeTimerEx = KeInitializeTimerEx;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeInitializeTimer(Timer: PKTIMER) {
    // SAFETY: forwarded.
    unsafe { KeInitializeTimerEx(Timer, 0) }
}
const _: crate::wdk_sys::fnsig::KeInitializeTimer = KeInitializeTimer;

fn set_timer(ctx: &mut Ctx<'_>, timer: PKTIMER, due: LARGE_INTEGER, period_ms: LONG, dpc: PKDPC) -> KResult<BOOLEAN> {
    // The expiry walks the timer's wait list (KiSignalTimer).
    crate::ke::wait::check_initialised(ctx, timer as usize, false)?;
    // SAFETY: LARGE_INTEGER is a plain 64-bit union.
    let due = expiry(ctx, unsafe { due.QuadPart });
    let period = u64::try_from(period_ms.max(0)).expect("non-negative") * 10_000;
    let was_set = ctx.ke.timers.set.remove(&(timer as usize)).is_some();
    // SAFETY: the driver passed an initialised KTIMER.
    unsafe { *header::signal_state(timer as usize) = 0 };
    let due = due.or_else(|| {
        // Already expired (an absolute time not in the future): KeSetTimerEx signals
        // the timer and queues its DPC at once, and a periodic timer is re-inserted
        // one period on (ReactOS `timerobj.c` KeSetTimerEx, KiSignalTimer).
        let now = system_time(ctx);
        signal(ctx, timer as usize, dpc as usize, now);
        ctx.signal();
        let base = last_tick(ctx);
        let increment = ctx.time_increment;
        (period > 0).then(|| tick_at_or_after(increment, base + period))
    });
    if let Some(due) = due {
        let seq = ctx.ke.timers.next_seq;
        ctx.ke.timers.next_seq += 1;
        ctx.ke.timers.set.insert(timer as usize, SetTimer { due, period, dpc: dpc as usize, seq });
    }
    Ok(BOOLEAN::from(was_set))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeSetTimerEx(Timer: PKTIMER, DueTime: LARGE_INTEGER, Period: LONG, Dpc: PKDPC) -> BOOLEAN {
    kcall("KeSetTimerEx", |ctx| set_timer(ctx, Timer, DueTime, Period, Dpc))
}
const _: crate::wdk_sys::fnsig::KeSetTimerEx = KeSetTimerEx;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeSetTimer(Timer: PKTIMER, DueTime: LARGE_INTEGER, Dpc: PKDPC) -> BOOLEAN {
    kcall("KeSetTimer", |ctx| set_timer(ctx, Timer, DueTime, 0, Dpc))
}
const _: crate::wdk_sys::fnsig::KeSetTimer = KeSetTimer;

/// Removes the timer from the timer queue. Like Windows, it does not remove a DPC the
/// timer already queued, nor wait for one that is running.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeCancelTimer(Timer: PKTIMER) -> BOOLEAN {
    kcall("KeCancelTimer", |ctx| Ok(BOOLEAN::from(ctx.ke.timers.set.remove(&(Timer as usize)).is_some())))
}
const _: crate::wdk_sys::fnsig::KeCancelTimer = KeCancelTimer;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeReadStateTimer(Timer: PKTIMER) -> BOOLEAN {
    kcall("KeReadStateTimer", |_ctx| {
        // SAFETY: the driver passed an initialised KTIMER.
        Ok(BOOLEAN::from(unsafe { *header::signal_state(Timer as usize) } > 0))
    })
}
const _: crate::wdk_sys::fnsig::KeReadStateTimer = KeReadStateTimer;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoInitializeTimer(
    DeviceObject: PDEVICE_OBJECT,
    TimerRoutine: PIO_TIMER_ROUTINE,
    Context: PVOID,
) -> NTSTATUS {
    kcall("IoInitializeTimer", |ctx| {
        let device = DeviceObject as usize;
        if ctx.ke.timers.io_timers.contains_key(&device) {
            // Verifier's I/O verification: "IoInitializeTimer on a device object with an
            // already-initialized timer" (0xC9/0x0A); without it the timer list is
            // corrupted (ReactOS re-inserts the entry).
            return Err(ctx.violation(Violation::new(
                code::DRIVER_VERIFIER_IOMANAGER_VIOLATION,
                [c9::TIMER_ALREADY_INITIALIZED, device as u64, 0, 0],
                "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
                format!("IoInitializeTimer on device {device:#x}, whose IoTimer is already initialised (call it once per device object)."),
            )));
        }
        if ctx.should_fail() {
            return Ok(crate::wdk_sys::STATUS_INSUFFICIENT_RESOURCES);
        }
        let seq = ctx.ke.timers.next_seq;
        ctx.ke.timers.next_seq += 1;
        with_timer_lock(ctx, |ctx| {
            let timer = IoTimer { routine: TimerRoutine, context: Context as usize, started: false, seq };
            ctx.ke.timers.io_timers.insert(device, timer);
            Ok(())
        })?;
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::IoInitializeTimer = IoInitializeTimer;

/// Ignored once the device is unload- or delete-pending (ReactOS IoStartTimer checks
/// DOE_UNLOAD_PENDING / DOE_DELETE_PENDING first); otherwise takes IopTimerLock.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoStartTimer(DeviceObject: PDEVICE_OBJECT) {
    kcall("IoStartTimer", |ctx| {
        let device = DeviceObject as usize;
        let pending =
            ctx.io.devices.get(&device).is_none_or(|d| d.deleted || crate::io::driver::is_stopping(ctx, d.driver));
        if pending {
            return Ok(());
        }
        with_timer_lock(ctx, |ctx| {
            io_timer_of(ctx, device, IoStartTimer as *const () as usize)?;
            ctx.ke.timers.io_timers.get_mut(&device).expect("checked").started = true;
            Ok(())
        })?;
        if ctx.ke.timers.next_io_tick <= ctx.clock {
            let next = (ctx.clock / SECOND + 1) * SECOND;
            ctx.ke.timers.next_io_tick = next;
        }
        Ok(())
    });
}
const _: crate::wdk_sys::fnsig::IoStartTimer = IoStartTimer;

/// Stops future calls. It takes IopTimerLock, which a running tick holds: so it waits
/// for a routine running on another processor, deadlocks when called from an IoTimer
/// routine, and deadlocks (ABBA) when called holding a lock the routine takes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoStopTimer(DeviceObject: PDEVICE_OBJECT) {
    kcall("IoStopTimer", |ctx| {
        let device = DeviceObject as usize;
        with_timer_lock(ctx, |ctx| {
            io_timer_of(ctx, device, IoStopTimer as *const () as usize)?;
            ctx.ke.timers.io_timers.get_mut(&device).expect("checked").started = false;
            Ok(())
        })
    });
}
const _: crate::wdk_sys::fnsig::IoStopTimer = IoStopTimer;
