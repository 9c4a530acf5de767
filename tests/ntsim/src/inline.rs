//! The host side of inline DDIs that `wdm.h` implements without an export. A driver's
//! own helpers for them call these on host builds, so they are scheduling points and
//! can be checked like any export.

use crate::checker::{Violation, c4, code};
use crate::irql::HIGH_LEVEL;
use crate::machine::{Ctx, Stop, kcall};
use crate::wdk_sys::{KIRQL, PDRIVER_CANCEL, PIRP};

/// Trace names of the inline DDIs and pseudo-calls below: no kernel image exports them.
pub const INLINE_DDIS: &[&str] = &[
    "KeGetCurrentIrql",
    "IoSetCancelRoutine",
    "Irp->Cancel",
    "(thread exit)",
    "KeQuerySystemTime",
    "KeQueryInterruptTime",
    "KeQueryTickCount",
    "KfRaiseIrql",
    "KeLowerIrql",
];

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

/// KfRaiseIrql (what `KeRaiseIrql(new, &old)` expands to): raises to `new_irql` and
/// returns the old IRQL. On x64 `wdm.h` inlines it as a CR8 write that Verifier never
/// sees; ntsim checks it with KeRaiseIrql's rule in 0xC4's reference: 0x30 [current
/// IRQL, requested IRQL, 0] for a value below the current IRQL or above HIGH_LEVEL.
#[allow(non_snake_case)]
pub fn KfRaiseIrql(new_irql: KIRQL) -> KIRQL {
    kcall("KfRaiseIrql", |ctx| {
        let old = ctx.irql();
        if new_irql < old || new_irql > HIGH_LEVEL {
            return Err(irql_violation(ctx, c4::RAISE_IRQL_INVALID, new_irql, "raise"));
        }
        ctx.set_irql(new_irql);
        Ok(old)
    })
}

/// KeLowerIrql: lowers to `new_irql` (on x64 an inline CR8 write, like KfRaiseIrql).
/// ntsim checks it with KeLowerIrql's rule in 0xC4's reference: 0x31 [current IRQL,
/// requested IRQL, 0 (the new IRQL is bad)] for a value above the current IRQL.
#[allow(non_snake_case)]
pub fn KeLowerIrql(new_irql: KIRQL) {
    kcall("KeLowerIrql", |ctx| {
        if new_irql > ctx.irql() {
            return Err(irql_violation(ctx, c4::LOWER_IRQL_INVALID, new_irql, "lower"));
        }
        ctx.set_irql(new_irql);
        // A lower IRQL may let waiting work run.
        ctx.signal();
        Ok(())
    });
}

fn irql_violation(ctx: &Ctx<'_>, rule: u64, new_irql: KIRQL, verb: &str) -> Stop {
    let old = ctx.irql();
    ctx.violation(Violation::new(
        code::DRIVER_VERIFIER_DETECTED_VIOLATION,
        [rule, u64::from(old), u64::from(new_irql), 0],
        "DRIVER_VERIFIER_DETECTED_VIOLATION",
        format!("{} was asked to {verb} IRQL {old} to IRQL {new_irql}.", ctx.api),
    ))
}
