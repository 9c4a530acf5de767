//! Events, semaphores and KeWaitFor(Single|Multiple)Object(s).

use super::header;
use crate::checker::{Violation, c4, code};
use crate::irql::DISPATCH_LEVEL;
use crate::machine::{Ctx, KResult, State, kcall};
use crate::wdk_sys::{
    BOOLEAN, EVENT_TYPE, HANDLE, KPRIORITY, KPROCESSOR_MODE, KWAIT_REASON, LONG, NTSTATUS, PKWAIT_BLOCK,
    PLARGE_INTEGER, PRKEVENT, PRKSEMAPHORE, PVOID, STATUS_INVALID_HANDLE, STATUS_OBJECT_TYPE_MISMATCH, STATUS_SUCCESS,
    STATUS_TIMEOUT, ULONG, WAIT_TYPE,
};

/// Whether `object` is signalled; if so and `consume`, takes the signal as a satisfied
/// wait does (auto-reset events, semaphores, synchronization timers).
///
/// # Safety
/// `object` points to an initialised dispatcher object.
pub(crate) unsafe fn try_satisfy(object: usize, consume: bool) -> bool {
    // SAFETY: guaranteed by the caller.
    let (kind, state) = unsafe { (header::kind(object), header::signal_state(object)) };
    // SAFETY: as above; only ntsim writes SignalState, under the machine lock.
    let signalled = unsafe { *state } > 0;
    if signalled && consume {
        match kind {
            header::EVENT_SYNCHRONIZATION | header::TIMER_SYNCHRONIZATION => {
                // SAFETY: as above.
                unsafe { *state = 0 };
            }
            header::SEMAPHORE => {
                // SAFETY: as above.
                unsafe { *state -= 1 };
            }
            _ => {}
        }
    }
    signalled
}

/// A wait deadline from a Windows timeout: NULL waits forever, negative is relative
/// in 100 ns units, positive is absolute system time (ntsim's clock).
fn deadline(state: &State, timeout: PLARGE_INTEGER) -> Option<u64> {
    if timeout.is_null() {
        return None;
    }
    // SAFETY: the driver passed a readable LARGE_INTEGER.
    let value = unsafe { (*timeout).QuadPart };
    Some(if value < 0 { state.clock + value.unsigned_abs() } else { value.unsigned_abs() })
}

fn check_wait_irql(ctx: &Ctx<'_>, timeout: PLARGE_INTEGER) -> KResult<()> {
    let irql = ctx.irql();
    let zero_timeout = !timeout.is_null() && {
        // SAFETY: non-NULL timeouts point to a LARGE_INTEGER.
        unsafe { (*timeout).QuadPart == 0 }
    };
    let rule = if irql > DISPATCH_LEVEL {
        c4::WAIT_ABOVE_DISPATCH
    } else if irql == DISPATCH_LEVEL && timeout.is_null() {
        c4::WAIT_AT_DISPATCH_INFINITE
    } else if irql == DISPATCH_LEVEL && !zero_timeout {
        c4::WAIT_AT_DISPATCH_WITH_TIMEOUT
    } else {
        return Ok(());
    };
    Err(ctx.violation(Violation::new(
        code::DRIVER_VERIFIER_DETECTED_VIOLATION,
        [rule, u64::from(irql), 0, 0],
        "DRIVER_VERIFIER_DETECTED_VIOLATION",
        match rule {
            c4::WAIT_ABOVE_DISPATCH => format!("{} was called at IRQL {irql}, above DISPATCH_LEVEL.", ctx.api),
            c4::WAIT_AT_DISPATCH_INFINITE => format!("{} was called at DISPATCH_LEVEL with no timeout (an infinite wait): only a zero timeout may be used at DISPATCH_LEVEL.", ctx.api),
            _ => format!("{} was called at IRQL {irql} with a non-zero timeout: only a zero timeout may be used at DISPATCH_LEVEL.", ctx.api),
        },
    )))
}

/// Waits for any (or all) of `objects`; returns the NTSTATUS the DDI returns.
pub(crate) fn wait(ctx: &mut Ctx<'_>, objects: Vec<usize>, all: bool, timeout: PLARGE_INTEGER) -> KResult<NTSTATUS> {
    check_wait_irql(ctx, timeout)?;
    let deadline = deadline(ctx, timeout);
    if let Some(when) = deadline {
        ctx.ke.timers.add_deadline(when);
    }
    let result = ctx.block(Box::new(move |state| {
        if all {
            // SAFETY: the objects were valid when the wait began and the driver keeps
            // them alive while it waits.
            if objects.iter().all(|&o| unsafe { try_satisfy(o, false) }) {
                for &o in &objects {
                    // SAFETY: as above.
                    unsafe { try_satisfy(o, true) };
                }
                return Some(i64::from(STATUS_SUCCESS));
            }
        } else {
            for (index, &o) in objects.iter().enumerate() {
                // SAFETY: as above.
                if unsafe { try_satisfy(o, true) } {
                    return Some(i64::try_from(index).expect("small"));
                }
            }
        }
        match deadline {
            Some(when) if state.clock >= when => Some(i64::from(STATUS_TIMEOUT)),
            _ => None,
        }
    }))?;
    if let Some(when) = deadline {
        ctx.ke.timers.forget_deadline(when);
    }
    Ok(i32::try_from(result).expect("status"))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeInitializeEvent(Event: PRKEVENT, Type: EVENT_TYPE, State: BOOLEAN) {
    kcall("KeInitializeEvent", |_ctx| {
        let kind = if Type == 0 { header::EVENT_NOTIFICATION } else { header::EVENT_SYNCHRONIZATION };
        // SAFETY: the driver passed a KEVENT to initialise.
        unsafe { header::init(Event as usize, kind, size_of::<crate::wdk_sys::KEVENT>(), i32::from(State)) };
        Ok(())
    });
}
const _: crate::wdk_sys::fnsig::KeInitializeEvent = KeInitializeEvent;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeSetEvent(Event: PRKEVENT, _Increment: KPRIORITY, _Wait: BOOLEAN) -> LONG {
    kcall("KeSetEvent", |ctx| {
        // SAFETY: the driver passed an initialised KEVENT.
        let state = unsafe { header::signal_state(Event as usize) };
        // SAFETY: as above.
        let previous = unsafe { *state };
        // SAFETY: as above.
        unsafe { *state = 1 };
        ctx.signal();
        Ok(previous)
    })
}
const _: crate::wdk_sys::fnsig::KeSetEvent = KeSetEvent;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeResetEvent(Event: PRKEVENT) -> LONG {
    kcall("KeResetEvent", |_ctx| {
        // SAFETY: the driver passed an initialised KEVENT.
        let state = unsafe { header::signal_state(Event as usize) };
        // SAFETY: as above.
        Ok(unsafe { std::mem::replace(&mut *state, 0) })
    })
}
const _: crate::wdk_sys::fnsig::KeResetEvent = KeResetEvent;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeClearEvent(Event: PRKEVENT) {
    kcall("KeClearEvent", |_ctx| {
        // SAFETY: the driver passed an initialised KEVENT.
        unsafe { *header::signal_state(Event as usize) = 0 };
        Ok(())
    });
}
const _: crate::wdk_sys::fnsig::KeClearEvent = KeClearEvent;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeReadStateEvent(Event: PRKEVENT) -> LONG {
    kcall("KeReadStateEvent", |_ctx| {
        // SAFETY: the driver passed an initialised KEVENT.
        Ok(unsafe { *header::signal_state(Event as usize) })
    })
}
const _: crate::wdk_sys::fnsig::KeReadStateEvent = KeReadStateEvent;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeInitializeSemaphore(Semaphore: PRKSEMAPHORE, Count: LONG, Limit: LONG) {
    kcall("KeInitializeSemaphore", |_ctx| {
        // SAFETY: the driver passed a KSEMAPHORE to initialise.
        unsafe {
            header::init(Semaphore as usize, header::SEMAPHORE, size_of::<crate::wdk_sys::KSEMAPHORE>(), Count);
            (*Semaphore).Limit = Limit;
        }
        Ok(())
    });
}
const _: crate::wdk_sys::fnsig::KeInitializeSemaphore = KeInitializeSemaphore;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeReleaseSemaphore(
    Semaphore: PRKSEMAPHORE,
    _Increment: KPRIORITY,
    Adjustment: LONG,
    _Wait: BOOLEAN,
) -> LONG {
    kcall("KeReleaseSemaphore", |ctx| {
        // SAFETY: the driver passed an initialised KSEMAPHORE.
        let (state, limit) = unsafe { (header::signal_state(Semaphore as usize), (*Semaphore).Limit) };
        // SAFETY: as above.
        let previous = unsafe { *state };
        // Windows raises STATUS_SEMAPHORE_LIMIT_EXCEEDED; ntsim saturates at the limit.
        // SAFETY: as above.
        unsafe { *state = previous.saturating_add(Adjustment).min(limit) };
        ctx.signal();
        Ok(previous)
    })
}
const _: crate::wdk_sys::fnsig::KeReleaseSemaphore = KeReleaseSemaphore;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeWaitForSingleObject(
    Object: PVOID,
    _WaitReason: KWAIT_REASON,
    _WaitMode: KPROCESSOR_MODE,
    _Alertable: BOOLEAN,
    Timeout: PLARGE_INTEGER,
) -> NTSTATUS {
    kcall("KeWaitForSingleObject", |ctx| wait(ctx, vec![Object as usize], false, Timeout))
}
const _: crate::wdk_sys::fnsig::KeWaitForSingleObject = KeWaitForSingleObject;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeWaitForMultipleObjects(
    Count: ULONG,
    Object: *mut PVOID,
    WaitType: WAIT_TYPE,
    _WaitReason: KWAIT_REASON,
    _WaitMode: KPROCESSOR_MODE,
    _Alertable: BOOLEAN,
    Timeout: PLARGE_INTEGER,
    _WaitBlockArray: PKWAIT_BLOCK,
) -> NTSTATUS {
    kcall("KeWaitForMultipleObjects", |ctx| {
        let objects = (0..Count as usize)
            // SAFETY: the driver passed `Count` object pointers.
            .map(|i| unsafe { *Object.add(i) } as usize)
            .collect();
        // WaitAll is 0 in the WAIT_TYPE enumeration.
        wait(ctx, objects, WaitType == 0, Timeout)
    })
}
const _: crate::wdk_sys::fnsig::KeWaitForMultipleObjects = KeWaitForMultipleObjects;

/// ZwWaitForSingleObject on a kernel handle. ntsim's waitable objects behind handles
/// are threads (signalled when they end); waiting on a handle to anything else
/// returns STATUS_OBJECT_TYPE_MISMATCH, as Windows does for objects without a
/// dispatcher header (ReactOS ntoskrnl/ob/obwait.c, NtWaitForSingleObject).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ZwWaitForSingleObject(
    Handle: HANDLE,
    _Alertable: BOOLEAN,
    Timeout: PLARGE_INTEGER,
) -> NTSTATUS {
    kcall("ZwWaitForSingleObject", |ctx| match crate::ob::by_handle(ctx, Handle) {
        None => Ok(STATUS_INVALID_HANDLE),
        Some((object, crate::ob::Kind::Thread)) => wait(ctx, vec![object], false, Timeout),
        Some(_) => Ok(STATUS_OBJECT_TYPE_MISMATCH),
    })
}
const _: crate::wdk_sys::fnsig::ZwWaitForSingleObject = ZwWaitForSingleObject;
