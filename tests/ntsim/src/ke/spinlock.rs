//! Spin locks, the cancel spin lock and in-stack queued spin locks.
//!
//! Ownership is kept by ntsim (lock address → thread), so a recursive acquire, a
//! release by a thread that does not own the lock, and a wrong IRQL are all caught.
//! A thread that finds a lock held blocks until it is released: with serial
//! scheduling that is another simulated processor running meanwhile.

use crate::checker::{Violation, c4, code};
use crate::irql::DISPATCH_LEVEL;
use crate::machine::{Ctx, KResult, kcall};
use crate::sched::Tid;
use crate::trace::Routine;
use crate::wdk_sys::{KIRQL, KLOCK_QUEUE_HANDLE, PKIRQL, PKLOCK_QUEUE_HANDLE, PKSPIN_LOCK};

/// The cancel spin lock's key in the owner table (no real address is this).
pub(crate) const CANCEL_LOCK: usize = usize::MAX;

/// Driver KSPIN_LOCKs are written while held; ntsim's own locks (the cancel lock,
/// interrupt locks, which use odd keys) are not memory.
fn is_lock_word(lock: usize) -> bool {
    lock & 1 == 0
}

fn c4_violation(ctx: &Ctx<'_>, params: [u64; 4], text: String) -> crate::machine::Stop {
    ctx.violation(Violation::new(
        code::DRIVER_VERIFIER_DETECTED_VIOLATION,
        params,
        "DRIVER_VERIFIER_DETECTED_VIOLATION",
        text,
    ))
}

/// Locks the kernel itself takes, which Verifier's deadlock detection does not track:
/// a deadlock on one leaves processors spinning at DISPATCH_LEVEL until the DPC
/// watchdog fires.
fn is_kernel_internal(lock: usize) -> bool {
    lock == crate::ke::timer::IO_TIMER_LOCK
}

fn lock_name(lock: usize) -> String {
    match lock {
        CANCEL_LOCK => "the cancel spin lock".to_owned(),
        crate::ke::timer::IO_TIMER_LOCK => "IopTimerLock".to_owned(),
        _ => format!("spin lock {lock:#x}"),
    }
}

/// Would waiting for `lock` close a cycle of threads each spinning on a lock the next
/// one holds? Returns the cycle as (thread, lock it spins on), starting with the caller.
fn wait_cycle(ctx: &Ctx<'_>, lock: usize) -> Option<Vec<(Tid, usize)>> {
    let me = ctx.tid;
    let mut cycle = vec![(me, lock)];
    let mut wanted = lock;
    loop {
        let owner = *ctx.ke.lock_owner.get(&wanted)?;
        if owner == me {
            return Some(cycle);
        }
        wanted = *ctx.ke.spinning.get(&owner)?;
        if cycle.iter().any(|&(t, _)| t == owner) {
            return None;
        }
        cycle.push((owner, wanted));
    }
}

/// Processors spinning on each other's locks at DISPATCH_LEVEL or above never make
/// progress: the DPC watchdog bug-checks 0x133, P1 = 0 when one of them is running a
/// DPC (its single-DPC time allotment runs out), 1 otherwise (time at DISPATCH_LEVEL).
/// ntsim measures no CPU time, so the tick counts (P2, P3) are 0.
fn deadlock(ctx: &Ctx<'_>, cycle: &[(Tid, usize)]) -> crate::machine::Stop {
    let in_dpc = cycle.iter().any(|&(t, _)| {
        matches!(ctx.threads[t].routines.last(), Some(Routine::Dpc | Routine::CustomTimerDpc | Routine::IoTimer))
    });
    let who: Vec<String> = cycle
        .iter()
        .map(|&(t, l)| {
            let routine = ctx.threads[t].routines.last().copied().unwrap_or(Routine::Kernel);
            format!("{} ({routine}) spins on {}", ctx.threads[t].name, lock_name(l))
        })
        .collect();
    let text = if cycle.len() == 1 {
        format!(
            "{} acquires {}, which this processor already holds: it spins forever (self-deadlock).",
            ctx.api,
            lock_name(cycle[0].1)
        )
    } else {
        format!("deadlock: {}; each holds the lock the next one waits for.", who.join(", "))
    };
    ctx.violation(Violation::new(
        code::DPC_WATCHDOG_VIOLATION,
        [u64::from(!in_dpc), 0, 0, 0],
        "DPC_WATCHDOG_VIOLATION",
        text,
    ))
}

/// Takes `lock` for the calling thread, waiting while another thread holds it. A wait
/// that closes a cycle of spinning processors is reported as the deadlock it is.
pub(crate) fn acquire(ctx: &mut Ctx<'_>, lock: usize) -> KResult<()> {
    let me = ctx.tid;
    if ctx.ke.lock_owner.get(&lock) == Some(&me) && is_kernel_internal(lock) {
        return Err(deadlock(ctx, &[(me, lock)]));
    }
    if ctx.ke.lock_owner.get(&lock) == Some(&me) {
        return Err(c4_violation(
            ctx,
            [c4::RECURSIVE_SPIN_LOCK, lock as u64, 0, 0],
            format!(
                "{} acquired spin lock {lock:#x} that this thread already holds (deadlock on a real machine).",
                ctx.api
            ),
        ));
    }
    if let Some(cycle) = wait_cycle(ctx, lock) {
        return Err(deadlock(ctx, &cycle));
    }
    ctx.ke.spinning.insert(me, lock);
    let acquired = ctx.block(Box::new(move |state| match state.ke.lock_owner.entry(lock) {
        std::collections::hash_map::Entry::Occupied(_) => None,
        std::collections::hash_map::Entry::Vacant(free) => {
            free.insert(me);
            Some(0)
        }
    }));
    ctx.ke.spinning.remove(&me);
    acquired?;
    if is_lock_word(lock) {
        // Visible to a debugger-minded test: the lock word is non-zero while held.
        // SAFETY: the driver passed a valid KSPIN_LOCK.
        unsafe { *(lock as *mut u64) = (me as u64) + 1 };
    }
    Ok(())
}

/// Gives `lock` up; the caller must own it.
pub(crate) fn release(ctx: &mut Ctx<'_>, lock: usize) -> KResult<()> {
    let me = ctx.tid;
    match ctx.ke.lock_owner.get(&lock) {
        Some(&owner) if owner == me => {}
        other => {
            let text = match other {
                Some(_) => format!("{} released spin lock {lock:#x}, which another thread holds.", ctx.api),
                None => format!("{} released spin lock {lock:#x}, which is not held.", ctx.api),
            };
            // [lock, owner thread, current thread]: a thread is named by ntsim's
            // per-thread block (0 for a lock nobody holds).
            let owner = other.map_or(0, |&t| thread_address(ctx, t));
            let params = [c4::RELEASE_BY_NON_OWNER, lock as u64, owner, thread_address(ctx, me)];
            return Err(c4_violation(ctx, params, text));
        }
    }
    ctx.ke.lock_owner.remove(&lock);
    if is_lock_word(lock) {
        // SAFETY: the driver passed a valid KSPIN_LOCK.
        unsafe { *(lock as *mut u64) = 0 };
    }
    ctx.signal();
    Ok(())
}

/// A simulated thread's address in bug-check parameters: ntsim has no KTHREAD for
/// every thread, so it names one by its own per-thread block.
fn thread_address(ctx: &Ctx<'_>, tid: Tid) -> u64 {
    std::sync::Arc::as_ptr(&ctx.threads[tid].parking) as u64
}

/// KeAcquireSpinLock and the acquires built like it raise to DISPATCH_LEVEL. Above it,
/// KeAcquireSpinLock is Verifier's 0x42 [IRQL, lock, 0]; KeAcquireInStackQueuedSpinLock
/// and IoAcquireCancelSpinLock have no documented Verifier rule (ntsim's own, 6).
fn raise_to_dispatch(ctx: &mut Ctx<'_>, lock: usize) -> KResult<KIRQL> {
    let old = ctx.irql();
    if old > DISPATCH_LEVEL {
        let text = format!("{} was called at IRQL {old}; spin locks are acquired at or below DISPATCH_LEVEL.", ctx.api);
        if ctx.api != "KeAcquireSpinLockRaiseToDpc" {
            return Err(ctx.violation(Violation::new(
                code::NTSIM_RULE,
                [crate::checker::ntsim_rule::DDI_IRQL, u64::from(old), u64::from(DISPATCH_LEVEL), 0],
                "NTSIM_DDI_IRQL",
                text,
            )));
        }
        return Err(c4_violation(ctx, [c4::SPIN_LOCK_ACQUIRE_ABOVE_DISPATCH, u64::from(old), lock as u64, 0], text));
    }
    ctx.set_irql(DISPATCH_LEVEL);
    Ok(old)
}

/// Releases (and KeAcquireSpinLockAtDpcLevel) run at DISPATCH_LEVEL: [rule, IRQL, lock, 0].
fn require_dispatch(ctx: &Ctx<'_>, rule: u64, lock: usize) -> KResult<()> {
    let irql = ctx.irql();
    if irql == DISPATCH_LEVEL {
        return Ok(());
    }
    Err(c4_violation(
        ctx,
        [rule, u64::from(irql), lock as u64, 0],
        format!("{} was called at IRQL {irql}; it must run at DISPATCH_LEVEL.", ctx.api),
    ))
}

/// The release lowers IRQL to `new_irql` as KeLowerIrql does: a higher one is 0x31
/// [current IRQL, requested IRQL, 0 (the new IRQL is bad)].
fn lower_to(ctx: &mut Ctx<'_>, new_irql: KIRQL) -> KResult<()> {
    if new_irql > DISPATCH_LEVEL {
        return Err(c4_violation(
            ctx,
            [c4::LOWER_IRQL_INVALID, u64::from(ctx.irql()), u64::from(new_irql), 0],
            format!("{} was asked to return to IRQL {new_irql}, above DISPATCH_LEVEL.", ctx.api),
        ));
    }
    ctx.set_irql(new_irql);
    ctx.signal();
    Ok(())
}

/// The in-stack queued and the ordinary spin-lock calls keep different state in the
/// lock (a queue of KLOCK_QUEUE_HANDLEs versus a plain owner word): a lock taken with
/// one family and released with the other is Verifier's DDI-compliance SpinLockRelease
/// (0x4000B) or QueuedSpinLockRelease (0x40007) rule: [rule, rule text, 0, 0].
fn check_release_family(ctx: &Ctx<'_>, lock: usize, queued_release: bool) -> KResult<()> {
    let held_queued = ctx.ke.queued_locks.contains(&lock);
    if ctx.ke.lock_owner.get(&lock) != Some(&ctx.tid) || held_queued == queued_release {
        return Ok(());
    }
    let (rule, text) = if queued_release {
        (c4::QUEUED_SPIN_LOCK_RELEASE, "KeReleaseInStackQueuedSpinLock on a lock taken with KeAcquireSpinLock")
    } else {
        (c4::SPIN_LOCK_RELEASE_RULE, "KeReleaseSpinLock on a lock taken with KeAcquireInStackQueuedSpinLock")
    };
    Err(c4_violation(
        ctx,
        [rule, crate::checker::rule_text(rule), 0, 0],
        format!("{text} ({lock:#x}): release a lock with the call family that took it."),
    ))
}

/// KeAcquireSpinLockRaiseToDpc (what `KeAcquireSpinLock` expands to on x64).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeAcquireSpinLockRaiseToDpc(SpinLock: PKSPIN_LOCK) -> KIRQL {
    kcall("KeAcquireSpinLockRaiseToDpc", |ctx| {
        let old = raise_to_dispatch(ctx, SpinLock as usize)?;
        acquire(ctx, SpinLock as usize)?;
        Ok(old)
    })
}
const _: crate::wdk_sys::fnsig::KeAcquireSpinLockRaiseToDpc = KeAcquireSpinLockRaiseToDpc;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeReleaseSpinLock(SpinLock: PKSPIN_LOCK, NewIrql: KIRQL) {
    kcall("KeReleaseSpinLock", |ctx| {
        require_dispatch(ctx, c4::SPIN_LOCK_RELEASE_IRQL, SpinLock as usize)?;
        check_release_family(ctx, SpinLock as usize, false)?;
        release(ctx, SpinLock as usize)?;
        lower_to(ctx, NewIrql)
    });
}
const _: crate::wdk_sys::fnsig::KeReleaseSpinLock = KeReleaseSpinLock;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeAcquireSpinLockAtDpcLevel(SpinLock: PKSPIN_LOCK) {
    kcall("KeAcquireSpinLockAtDpcLevel", |ctx| {
        require_dispatch(ctx, c4::ACQUIRE_AT_DPC_LEVEL_IRQL, SpinLock as usize)?;
        acquire(ctx, SpinLock as usize)
    });
}
const _: crate::wdk_sys::fnsig::KeAcquireSpinLockAtDpcLevel = KeAcquireSpinLockAtDpcLevel;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeReleaseSpinLockFromDpcLevel(SpinLock: PKSPIN_LOCK) {
    kcall("KeReleaseSpinLockFromDpcLevel", |ctx| {
        require_dispatch(ctx, c4::RELEASE_FROM_DPC_LEVEL_IRQL, SpinLock as usize)?;
        check_release_family(ctx, SpinLock as usize, false)?;
        release(ctx, SpinLock as usize)
    });
}
const _: crate::wdk_sys::fnsig::KeReleaseSpinLockFromDpcLevel = KeReleaseSpinLockFromDpcLevel;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeAcquireInStackQueuedSpinLock(SpinLock: PKSPIN_LOCK, LockHandle: PKLOCK_QUEUE_HANDLE) {
    kcall("KeAcquireInStackQueuedSpinLock", |ctx| {
        let old = raise_to_dispatch(ctx, SpinLock as usize)?;
        acquire(ctx, SpinLock as usize)?;
        ctx.ke.queued_locks.insert(SpinLock as usize);
        // SAFETY: the driver passed a writable lock-queue handle.
        unsafe {
            (*LockHandle).LockQueue.Lock = SpinLock;
            (*LockHandle).OldIrql = old;
        }
        Ok(())
    });
}
const _: crate::wdk_sys::fnsig::KeAcquireInStackQueuedSpinLock = KeAcquireInStackQueuedSpinLock;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeReleaseInStackQueuedSpinLock(LockHandle: PKLOCK_QUEUE_HANDLE) {
    kcall("KeReleaseInStackQueuedSpinLock", |ctx| {
        // SAFETY: the handle was filled by KeAcquireInStackQueuedSpinLock.
        let handle: KLOCK_QUEUE_HANDLE = unsafe { core::ptr::read(LockHandle) };
        let lock = handle.LockQueue.Lock as usize;
        require_dispatch(ctx, c4::SPIN_LOCK_RELEASE_IRQL, lock)?;
        check_release_family(ctx, lock, true)?;
        release(ctx, lock)?;
        ctx.ke.queued_locks.remove(&lock);
        lower_to(ctx, handle.OldIrql)
    });
}
const _: crate::wdk_sys::fnsig::KeReleaseInStackQueuedSpinLock = KeReleaseInStackQueuedSpinLock;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoAcquireCancelSpinLock(Irql: PKIRQL) {
    kcall("IoAcquireCancelSpinLock", |ctx| {
        let old = raise_to_dispatch(ctx, CANCEL_LOCK)?;
        acquire(ctx, CANCEL_LOCK)?;
        // SAFETY: the driver passed a writable KIRQL.
        unsafe { *Irql = old };
        Ok(())
    });
}
const _: crate::wdk_sys::fnsig::IoAcquireCancelSpinLock = IoAcquireCancelSpinLock;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoReleaseCancelSpinLock(Irql: KIRQL) {
    kcall("IoReleaseCancelSpinLock", |ctx| {
        require_dispatch(ctx, c4::SPIN_LOCK_RELEASE_IRQL, 0)?;
        release(ctx, CANCEL_LOCK)?;
        lower_to(ctx, Irql)
    });
}
const _: crate::wdk_sys::fnsig::IoReleaseCancelSpinLock = IoReleaseCancelSpinLock;
