//! KTIMERs (one-shot and periodic, with a DPC), the per-device IoTimer, and the
//! controllable clock that drives them. Nothing here sleeps: time moves only when the
//! test (or an idle machine waiting for a timer) moves it.

use std::collections::{BTreeMap, HashMap};

use super::dpc::{self, Queued};
use super::header;
use crate::machine::{Ctx, KResult, State, kcall};
use crate::trace::Routine;
use crate::wdk_sys::{
    BOOLEAN, LARGE_INTEGER, LONG, NTSTATUS, PDEVICE_OBJECT, PIO_TIMER_ROUTINE, PKDPC, PKTIMER, PVOID, STATUS_SUCCESS,
    TIMER_TYPE,
};

/// 100 ns units per second.
pub const SECOND: u64 = 10_000_000;

pub(crate) struct SetTimer {
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
    pub(crate) fn io_timer_started(&self, device: usize) -> bool {
        self.io_timers.get(&device).is_some_and(|t| t.started)
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
    for (_, _, timer) in due {
        // SAFETY: a set timer is a live KTIMER (checked at unload).
        unsafe { *header::signal_state(timer) = 1 };
        let entry = state.ke.timers.set.get_mut(&timer).expect("due timer");
        let dpc = entry.dpc;
        if entry.period > 0 {
            while entry.due <= now {
                entry.due += entry.period;
            }
        } else {
            state.ke.timers.set.remove(&timer);
        }
        if dpc != 0 {
            let cpu = state.ke.dpcs.next_cpu;
            state.ke.dpcs.next_cpu = state.ke.dpcs.next_cpu.wrapping_add(1);
            dpc::insert(state, dpc, cpu, Routine::CustomTimerDpc);
        }
    }
    if state.ke.timers.next_io_tick == 0 {
        state.ke.timers.next_io_tick = SECOND;
    }
    while state.ke.timers.next_io_tick <= now {
        if state.ke.timers.io_timers.values().any(|t| t.started) {
            state.cpus[0].dpcs.push_back(Queued::IoTimerTick);
            state.cpus[0].queued_total += 1;
        }
        state.ke.timers.next_io_tick += SECOND;
    }
    let limit = state.slow_cancel;
    crate::io::irp::check_slow_cancel(state, limit);
    crate::sched::wake_satisfied(state);
}

/// Runs every started IoTimer routine once, at DISPATCH_LEVEL.
pub(crate) fn run_io_timers(ctx: &mut Ctx<'_>) -> KResult<()> {
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
        if let Some(routine) = routine {
            // SAFETY: the driver registered this routine for this device with IoInitializeTimer.
            ctx.call_driver(Routine::IoTimer, || unsafe { routine(device as PDEVICE_OBJECT, context as PVOID) });
            dpc::after_routine(ctx, Routine::IoTimer)?;
        }
    }
    Ok(())
}

fn due_time(state: &State, due: LARGE_INTEGER) -> u64 {
    // SAFETY: LARGE_INTEGER is a plain 64-bit union.
    let value = unsafe { due.QuadPart };
    if value < 0 { state.clock + value.unsigned_abs() } else { value.unsigned_abs().max(state.clock) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeInitializeTimerEx(Timer: PKTIMER, Type: TIMER_TYPE) {
    kcall("KeInitializeTimerEx", |ctx| {
        ctx.ke.timers.set.remove(&(Timer as usize));
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

fn set_timer(ctx: &mut Ctx<'_>, timer: PKTIMER, due: LARGE_INTEGER, period_ms: LONG, dpc: PKDPC) -> BOOLEAN {
    let due = due_time(ctx, due);
    let period = u64::try_from(period_ms.max(0)).expect("non-negative") * 10_000;
    let seq = ctx.ke.timers.next_seq;
    ctx.ke.timers.next_seq += 1;
    let was_set = ctx.ke.timers.set.insert(timer as usize, SetTimer { due, period, dpc: dpc as usize, seq }).is_some();
    // SAFETY: the driver passed an initialised KTIMER.
    unsafe { *header::signal_state(timer as usize) = 0 };
    BOOLEAN::from(was_set)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeSetTimerEx(Timer: PKTIMER, DueTime: LARGE_INTEGER, Period: LONG, Dpc: PKDPC) -> BOOLEAN {
    kcall("KeSetTimerEx", |ctx| Ok(set_timer(ctx, Timer, DueTime, Period, Dpc)))
}
const _: crate::wdk_sys::fnsig::KeSetTimerEx = KeSetTimerEx;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeSetTimer(Timer: PKTIMER, DueTime: LARGE_INTEGER, Dpc: PKDPC) -> BOOLEAN {
    kcall("KeSetTimer", |ctx| Ok(set_timer(ctx, Timer, DueTime, 0, Dpc)))
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
        if ctx.should_fail() {
            return Ok(crate::wdk_sys::STATUS_INSUFFICIENT_RESOURCES);
        }
        let seq = ctx.ke.timers.next_seq;
        ctx.ke.timers.next_seq += 1;
        ctx.ke.timers.io_timers.insert(
            DeviceObject as usize,
            IoTimer { routine: TimerRoutine, context: Context as usize, started: false, seq },
        );
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::IoInitializeTimer = IoInitializeTimer;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoStartTimer(DeviceObject: PDEVICE_OBJECT) {
    kcall("IoStartTimer", |ctx| {
        if let Some(timer) = ctx.ke.timers.io_timers.get_mut(&(DeviceObject as usize)) {
            timer.started = true;
        }
        if ctx.ke.timers.next_io_tick <= ctx.clock {
            let next = (ctx.clock / SECOND + 1) * SECOND;
            ctx.ke.timers.next_io_tick = next;
        }
        Ok(())
    });
}
const _: crate::wdk_sys::fnsig::IoStartTimer = IoStartTimer;

/// Stops future calls; like Windows, does not wait for a call already running.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoStopTimer(DeviceObject: PDEVICE_OBJECT) {
    kcall("IoStopTimer", |ctx| {
        if let Some(timer) = ctx.ke.timers.io_timers.get_mut(&(DeviceObject as usize)) {
            timer.started = false;
        }
        Ok(())
    });
}
const _: crate::wdk_sys::fnsig::IoStopTimer = IoStopTimer;
