//! Events, semaphores and KeWaitFor(Single|Multiple)Object(s).

use super::header;
use crate::checker::{Violation, c4, code};
use crate::irql::DISPATCH_LEVEL;
use crate::machine::{Ctx, KResult, State, kcall};
use crate::wdk_sys::{
    BOOLEAN, EVENT_TYPE, HANDLE, KPRIORITY, KPROCESSOR_MODE, KWAIT_REASON, LONG, MAXIMUM_WAIT_OBJECTS, NTSTATUS,
    PKWAIT_BLOCK, PLARGE_INTEGER, PRKEVENT, PRKSEMAPHORE, PVOID, STATUS_INVALID_HANDLE, STATUS_OBJECT_TYPE_MISMATCH,
    STATUS_SEMAPHORE_LIMIT_EXCEEDED, STATUS_SUCCESS, STATUS_TIMEOUT, THREAD_WAIT_OBJECTS, ULONG, WAIT_TYPE,
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

/// When a wait gives up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Timeout {
    /// No timeout (NULL).
    Never,
    /// Zero, or an absolute time not in the future: the wait only polls.
    Expired,
    /// On this clock tick (interrupt time).
    At(u64),
}

/// A wait's timeout as Windows reads it: NULL waits forever, negative is relative in
/// 100 ns units, zero or positive is an absolute system time, so a small positive
/// value (a relative timeout written without its minus sign) is long past
/// (KeWaitForSingleObject documentation; ReactOS `KiComputeDueTime` via the wait's
/// timer). Expiry lands on a clock tick.
fn timeout_of(state: &State, timeout: PLARGE_INTEGER) -> Timeout {
    if timeout.is_null() {
        return Timeout::Never;
    }
    // SAFETY: the driver passed a readable LARGE_INTEGER.
    let value = unsafe { (*timeout).QuadPart };
    crate::ke::timer::expiry(state, value).map_or(Timeout::Expired, Timeout::At)
}

fn check_wait_irql(ctx: &Ctx<'_>, object: usize, timeout: PLARGE_INTEGER) -> KResult<()> {
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
    // [address of the IRQL value, object, address of the timeout] (0xC4 page): the
    // IRQL value is this thread's IRQL cell.
    Err(ctx.violation(Violation::new(
        code::DRIVER_VERIFIER_DETECTED_VIOLATION,
        [rule, crate::crash::irql_cell() as u64, object as u64, timeout as u64],
        "DRIVER_VERIFIER_DETECTED_VIOLATION",
        match rule {
            c4::WAIT_ABOVE_DISPATCH => format!("{} was called at IRQL {irql}, above DISPATCH_LEVEL.", ctx.api),
            c4::WAIT_AT_DISPATCH_INFINITE => format!("{} was called at DISPATCH_LEVEL with no timeout (an infinite wait): only a zero timeout may be used at DISPATCH_LEVEL.", ctx.api),
            _ => format!("{} was called at IRQL {irql} with a non-zero timeout: only a zero timeout may be used at DISPATCH_LEVEL.", ctx.api),
        },
    )))
}

/// KeSetEvent, KeReleaseSemaphore, an expiring KTIMER and a wait that blocks all walk
/// or insert into the object's `Header.WaitListHead` under the dispatcher lock, at
/// DISPATCH_LEVEL or above. An object never initialised (zeroed: NULL links) or moved
/// after its initialisation sends the kernel to the bogus link: bug check 0x0A, P1 =
/// the link, P3 = 1 when the kernel inserts (writes), 0 when it walks (reads).
pub(crate) fn check_initialised(ctx: &Ctx<'_>, object: usize, write: bool) -> KResult<()> {
    // SAFETY: the driver passed a dispatcher object, whose header is readable.
    let Some(link) = (unsafe { header::bad_wait_list(object) }) else { return Ok(()) };
    let irql = ctx.irql().max(DISPATCH_LEVEL);
    Err(ctx.violation(Violation::new(
        code::IRQL_NOT_LESS_OR_EQUAL,
        [link as u64, u64::from(irql), u64::from(write), 0],
        "IRQL_NOT_LESS_OR_EQUAL",
        format!(
            "{} on {object:#x}, whose Header.WaitListHead is not a list (link {link:#x}): the object was never initialised with its KeInitializeXxx, or was moved after it was.",
            ctx.api
        ),
    )))
}

/// Waits for any (or all) of `objects`; returns the NTSTATUS the DDI returns.
pub(crate) fn wait(ctx: &mut Ctx<'_>, objects: Vec<usize>, all: bool, timeout: PLARGE_INTEGER) -> KResult<NTSTATUS> {
    check_wait_irql(ctx, objects.first().copied().unwrap_or(0), timeout)?;
    let timeout = timeout_of(ctx, timeout);
    // SAFETY: the driver passed dispatcher objects (checked just below when the wait
    // blocks); reading SignalState does not consume anything.
    let signalled = |o: usize| unsafe { try_satisfy(o, false) };
    let satisfied_now = if all { objects.iter().all(|&o| signalled(o)) } else { objects.iter().any(|&o| signalled(o)) };
    if !satisfied_now && timeout != Timeout::Expired {
        // A wait that blocks links a wait block into every object's wait list.
        for &object in &objects {
            check_initialised(ctx, object, true)?;
        }
    }
    let deadline = match timeout {
        Timeout::Never => None,
        Timeout::Expired => Some(ctx.clock),
        Timeout::At(when) => Some(when),
    };
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
        let irql = ctx.irql();
        if irql > DISPATCH_LEVEL {
            return Err(ctx.violation(Violation::new(
                code::DRIVER_VERIFIER_DETECTED_VIOLATION,
                [c4::SET_EVENT_IRQL, u64::from(irql), Event as u64, 0],
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format!("KeSetEvent was called at IRQL {irql}, above DISPATCH_LEVEL."),
            )));
        }
        check_initialised(ctx, Event as usize, false)?;
        // SAFETY: the driver passed a KEVENT (its header checked above).
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
        check_initialised(ctx, Semaphore as usize, false)?;
        // SAFETY: the driver passed a KSEMAPHORE (its header checked above).
        let (state, limit) = unsafe { (header::signal_state(Semaphore as usize), (*Semaphore).Limit) };
        // SAFETY: as above.
        let previous = unsafe { *state };
        if Adjustment > limit || previous > limit - Adjustment {
            // KeReleaseSemaphore raises STATUS_SEMAPHORE_LIMIT_EXCEEDED (ReactOS
            // `semphobj.c`); a driver does not handle it: an exception not handled in
            // kernel mode, bug check 0x1E with the exception code.
            return Err(ctx.violation(Violation::new(
                code::KMODE_EXCEPTION_NOT_HANDLED,
                [
                    u64::from(STATUS_SEMAPHORE_LIMIT_EXCEEDED.cast_unsigned()),
                    KeReleaseSemaphore as *const () as u64,
                    0,
                    0,
                ],
                "KMODE_EXCEPTION_NOT_HANDLED",
                format!("KeReleaseSemaphore by {Adjustment} from {previous} past the semaphore's limit of {limit}."),
            )));
        }
        // SAFETY: as above.
        unsafe { *state = previous + Adjustment };
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
    WaitBlockArray: PKWAIT_BLOCK,
) -> NTSTATUS {
    kcall("KeWaitForMultipleObjects", |ctx| {
        // More than THREAD_WAIT_OBJECTS objects need the caller's wait blocks, and no
        // more than MAXIMUM_WAIT_OBJECTS can be waited for (the DDI's documentation;
        // ReactOS `wait.c` bug-checks 0x0C).
        if Count > MAXIMUM_WAIT_OBJECTS || (Count > THREAD_WAIT_OBJECTS && WaitBlockArray.is_null()) {
            return Err(ctx.violation(Violation::new(
                code::MAXIMUM_WAIT_OBJECTS_EXCEEDED,
                [0, 0, 0, 0],
                "MAXIMUM_WAIT_OBJECTS_EXCEEDED",
                format!(
                    "KeWaitForMultipleObjects of {Count} objects {}.",
                    if Count > MAXIMUM_WAIT_OBJECTS {
                        "(at most 64)"
                    } else {
                        "without a WaitBlockArray (more than 3 need one)"
                    }
                ),
            )));
        }
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
