//! The host side of inline DDIs that `wdm.h` implements without an export. A driver's
//! own helpers for them call these on host builds, so they are scheduling points and
//! can be checked like any export.

use crate::machine::kcall;

/// Trace names of the inline DDIs and pseudo-calls below: no kernel image exports them.
pub const INLINE_DDIS: &[&str] = &[
    "KeGetCurrentIrql",
    "IoSetCancelRoutine",
    "Irp->Cancel",
    "(thread exit)",
    "KeQuerySystemTime",
    "KeQueryInterruptTime",
    "KeQueryTickCount",
];
use crate::wdk_sys::{KIRQL, PDRIVER_CANCEL, PIRP};

/// KeGetCurrentIrql.
#[allow(non_snake_case)]
pub fn KeGetCurrentIrql() -> KIRQL {
    kcall("KeGetCurrentIrql", |ctx| Ok(ctx.irql()))
}

/// IoSetCancelRoutine: an atomic exchange of `Irp->CancelRoutine`.
///
/// # Safety
/// `irp` must point to a valid IRP.
#[allow(non_snake_case)]
pub unsafe fn IoSetCancelRoutine(irp: PIRP, routine: PDRIVER_CANCEL) -> PDRIVER_CANCEL {
    kcall("IoSetCancelRoutine", |_ctx| {
        // SAFETY: the machine lock makes this exchange atomic with IoCancelIrp's. On
        // Windows this is the driver's own (inline) code: so is a fault in it.
        Ok(crate::stack::as_driver_code(|| unsafe { std::mem::replace(&mut (*irp).CancelRoutine, routine) }))
    })
}

/// A read of `Irp->Cancel`.
///
/// # Safety
/// `irp` must point to a valid IRP.
pub unsafe fn irp_cancel_requested(irp: PIRP) -> bool {
    // SAFETY: guaranteed by the caller.
    kcall("Irp->Cancel", |_ctx| Ok(crate::stack::as_driver_code(|| unsafe { (*irp).Cancel } != 0)))
}

/// KeQuerySystemTime: the system time (100 ns units since 1601) as of the latest clock
/// tick. On x64 `wdm.h` reads it from KUSER_SHARED_DATA.
#[allow(non_snake_case)]
pub fn KeQuerySystemTime() -> i64 {
    kcall("KeQuerySystemTime", |ctx| Ok(crate::ke::timer::system_time(ctx) as i64))
}

/// KeQueryInterruptTime: 100 ns units since boot, as of the latest clock tick.
#[allow(non_snake_case)]
pub fn KeQueryInterruptTime() -> u64 {
    kcall("KeQueryInterruptTime", |ctx| Ok(crate::ke::timer::last_tick(ctx)))
}

/// KeQueryTickCount: clock ticks since boot (multiply by KeQueryTimeIncrement for time).
#[allow(non_snake_case)]
pub fn KeQueryTickCount() -> i64 {
    kcall("KeQueryTickCount", |ctx| Ok((ctx.clock / ctx.time_increment) as i64))
}
