//! The clock's DDIs: system time, interrupt time, tick count, the performance counter,
//! the time increment, and the two ways a thread lets time pass (KeDelayExecutionThread
//! sleeps, KeStallExecutionProcessor spins).
//!
//! The tick-updated values (KeQuerySystemTime, KeQueryInterruptTime, KeQueryTickCount,
//! KeQueryUnbiasedInterruptTime) are as of the latest clock tick; the precise variants
//! and the performance counter read the clock itself (KeQuerySystemTimePrecise and
//! KeQueryInterruptTimePrecise documentation). KeQuerySystemTime, KeQueryInterruptTime
//! and KeQueryTickCount are `wdm.h` macros on x64 (reads of KUSER_SHARED_DATA): their
//! host side is in `crate::inline`.

use crate::ke::timer::{BOOT_SYSTEM_TIME, last_tick};
use crate::machine::kcall;
use crate::wdk_sys::{
    BOOLEAN, KPROCESSOR_MODE, LARGE_INTEGER, NTSTATUS, PLARGE_INTEGER, PULONG64, STATUS_SUCCESS, ULONG, ULONG64,
    ULONGLONG,
};

/// ntsim's performance counter runs at the clock's resolution: 10 MHz, counting from boot.
pub const PERFORMANCE_FREQUENCY: i64 = 10_000_000;

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeQueryPerformanceCounter(PerformanceFrequency: PLARGE_INTEGER) -> LARGE_INTEGER {
    kcall("KeQueryPerformanceCounter", |ctx| {
        if !PerformanceFrequency.is_null() {
            // SAFETY: the driver passed a writable LARGE_INTEGER.
            unsafe { (*PerformanceFrequency).QuadPart = PERFORMANCE_FREQUENCY };
        }
        Ok(LARGE_INTEGER { QuadPart: as_i64(ctx.clock) })
    })
}
const _: crate::wdk_sys::fnsig::KeQueryPerformanceCounter = KeQueryPerformanceCounter;

/// The 100 ns units one clock tick adds to the system time; constant while the
/// machine runs (KeQueryTimeIncrement documentation).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeQueryTimeIncrement() -> ULONG {
    kcall("KeQueryTimeIncrement", |ctx| Ok(ULONG::try_from(ctx.time_increment).unwrap_or(ULONG::MAX)))
}
const _: crate::wdk_sys::fnsig::KeQueryTimeIncrement = KeQueryTimeIncrement;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeQuerySystemTimePrecise(CurrentTime: PLARGE_INTEGER) {
    kcall("KeQuerySystemTimePrecise", |ctx| {
        // SAFETY: the driver passed a writable LARGE_INTEGER.
        unsafe { (*CurrentTime).QuadPart = as_i64(BOOT_SYSTEM_TIME + ctx.clock) };
        Ok(())
    });
}
const _: crate::wdk_sys::fnsig::KeQuerySystemTimePrecise = KeQuerySystemTimePrecise;

/// The interrupt time now; `QpcTimeStamp` gets the performance counter it came from.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeQueryInterruptTimePrecise(QpcTimeStamp: PULONG64) -> ULONG64 {
    kcall("KeQueryInterruptTimePrecise", |ctx| {
        if !QpcTimeStamp.is_null() {
            // SAFETY: the driver passed a writable ULONG64.
            unsafe { *QpcTimeStamp = ctx.clock };
        }
        Ok(ctx.clock)
    })
}
const _: crate::wdk_sys::fnsig::KeQueryInterruptTimePrecise = KeQueryInterruptTimePrecise;

/// The interrupt time as of the latest tick; ntsim never sleeps, so there is no bias
/// to take out.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeQueryUnbiasedInterruptTime() -> ULONGLONG {
    kcall("KeQueryUnbiasedInterruptTime", |ctx| Ok(last_tick(ctx)))
}
const _: crate::wdk_sys::fnsig::KeQueryUnbiasedInterruptTime = KeQueryUnbiasedInterruptTime;

/// Puts the thread in an alertable or non-alertable wait for `Interval`: a timeout
/// with nothing to wait for, so it expires on a tick like any other and returns
/// STATUS_SUCCESS. A positive interval is an absolute system time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeDelayExecutionThread(
    _WaitMode: KPROCESSOR_MODE,
    _Alertable: BOOLEAN,
    Interval: PLARGE_INTEGER,
) -> NTSTATUS {
    kcall("KeDelayExecutionThread", |ctx| {
        // SAFETY: the driver passed a readable LARGE_INTEGER.
        let value = unsafe { (*Interval).QuadPart };
        let Some(when) = crate::ke::timer::expiry(ctx, value) else { return Ok(STATUS_SUCCESS) };
        ctx.ke.timers.add_deadline(when);
        ctx.block(Box::new(move |state| (state.clock >= when).then_some(0)))?;
        ctx.ke.timers.forget_deadline(when);
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::KeDelayExecutionThread = KeDelayExecutionThread;

/// Spins for `MicroSeconds`: the thread keeps its processor and the clock moves on
/// meanwhile, so timers fall due (their DPCs run once a processor is free).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeStallExecutionProcessor(MicroSeconds: ULONG) {
    kcall("KeStallExecutionProcessor", |ctx| {
        crate::ke::timer::run_clock_for(ctx, u64::from(MicroSeconds) * 10);
        ctx.signal();
        Ok(())
    });
}
const _: crate::wdk_sys::fnsig::KeStallExecutionProcessor = KeStallExecutionProcessor;
