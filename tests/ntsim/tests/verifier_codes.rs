//! Negative tests for rules whose code or parameters follow a specific entry of
//! Microsoft's bug-check reference (0xC4's table, the DDI compliance rule pages) and
//! for ntsim's own rule where Verifier has none: each driver makes one mistake and the
//! test asserts the code and all four parameters.

#![allow(clippy::cast_possible_truncation, reason = "IRQLs and KPROCESSOR_MODE narrowed as wdm.h does")]

mod common;

use common::{State, assert_clean, bugcheck, load, machine, print, print_value, printed, setup, state};
use ntsim::hal::{irql_of_vector, vector_of_line};
use ntsim::inline::{KeGetCurrentIrql, KeLowerIrql, KfRaiseIrql};
use ntsim::wdk_sys::ntddk::{
    IoConnectInterrupt, IoCreateDevice, KeAcquireInStackQueuedSpinLock, KeAcquireSpinLockRaiseToDpc, KeFlushQueuedDpcs,
    KeInitializeEvent, KeReleaseSpinLock, KeReleaseSpinLockFromDpcLevel, KeSetEvent, KeSetTimer,
    KeSynchronizeExecution, ObReferenceObjectByHandle, PsCreateSystemThread,
};
use ntsim::wdk_sys::{
    _EVENT_TYPE, _KINTERRUPT_MODE, _MODE, BOOLEAN, FILE_DEVICE_UNKNOWN, HANDLE, KLOCK_QUEUE_HANDLE, LARGE_INTEGER,
    NTSTATUS, PCUNICODE_STRING, PDEVICE_OBJECT, PDRIVER_OBJECT, PKINTERRUPT, PVOID, STATUS_SUCCESS, THREAD_ALL_ACCESS,
    ULONG,
};

const C4: u32 = 0xC4;
const NTSIM: u32 = 0x4E54_0000;
const DIRQL: u8 = 5;

/// DriverEntry: [`setup`], then `body` with the driver object and the device's state.
macro_rules! entry_then {
    ($entry:ident, |$driver:ident, $s:ident| $body:block) => {
        unsafe extern "C" fn $entry($driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
            // SAFETY: DriverEntry's driver object.
            let device = match unsafe { setup($driver) } {
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

/// The NUL-terminated rule text a DDI compliance violation's P2 points to.
fn rule_text(v: &ntsim::Violation) -> String {
    // SAFETY: ntsim's static, NUL-terminated rule text.
    unsafe { std::ffi::CStr::from_ptr(v.params[1] as *const std::ffi::c_char) }.to_string_lossy().into_owned()
}

/// A DDI compliance rule: [rule, its text, 0, 0].
#[track_caller]
fn assert_ddi_rule(v: &ntsim::Violation, rule: u64, name: &str) {
    assert_eq!((v.code, v.params[0], v.params[2], v.params[3]), (C4, rule, 0, 0), "{v}");
    assert!(rule_text(v).starts_with(&format!("{name}:")), "P2 names {name}: {}", rule_text(v));
}

unsafe extern "C" fn isr_unclaimed(_interrupt: PKINTERRUPT, _context: PVOID) -> BOOLEAN {
    0
}

/// Connects a virtual interrupt at [`DIRQL`] and runs `routine` synchronized with it.
unsafe fn at_dirql(s: *mut State, routine: unsafe extern "C" fn(PVOID) -> BOOLEAN) {
    let mut interrupt: PKINTERRUPT = std::ptr::null_mut();
    // SAFETY: valid arguments for a latched interrupt on an unused vector.
    unsafe {
        let _ = IoConnectInterrupt(
            &raw mut interrupt,
            Some(isr_unclaimed),
            s.cast(),
            std::ptr::null_mut(),
            0x51,
            DIRQL,
            DIRQL,
            _KINTERRUPT_MODE::Latched,
            0,
            1,
            0,
        );
        KeSynchronizeExecution(interrupt, Some(routine), s.cast());
    }
}

// --- Above DISPATCH_LEVEL ---------------------------------------------------------------

unsafe extern "C" fn sync_sets_event(context: PVOID) -> BOOLEAN {
    let s = context.cast::<State>();
    // SAFETY: an initialised event; KeSetEvent at DIRQL is the bug.
    unsafe {
        print_value("event", (&raw mut (*s).event) as u64);
        KeSetEvent(&raw mut (*s).event, 0, 0);
    }
    1
}

entry_then!(entry_sets_event_at_dirql, |_driver, s| {
    // SAFETY: our state's event.
    unsafe {
        KeInitializeEvent(&raw mut (*s).event, _EVENT_TYPE::NotificationEvent, 0);
        at_dirql(s, sync_sets_event);
    }
});

/// 0xC4/0x80: KeSetEvent above DISPATCH_LEVEL, [0x80, IRQL, event, 0].
#[test]
fn set_event_above_dispatch_is_c4_80() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_sets_event_at_dirql));
    assert_eq!((v.code, v.params), (C4, [0x80, u64::from(DIRQL), printed(&machine, "event"), 0]), "{v}");
}

unsafe extern "C" fn sync_sets_timer(context: PVOID) -> BOOLEAN {
    let s = context.cast::<State>();
    // SAFETY: a KTIMER set at DIRQL: the bug (the check fires before the timer is touched).
    unsafe { KeSetTimer(&raw mut (*s).timer, LARGE_INTEGER { QuadPart: -10_000 }, std::ptr::null_mut()) };
    1
}

entry_then!(entry_sets_timer_at_dirql, |_driver, s| {
    // SAFETY: our state.
    unsafe { at_dirql(s, sync_sets_timer) };
});

/// KeSetTimer is in the IrqlKeDispatchLte rule: 0xC4/0x20011.
#[test]
fn set_timer_above_dispatch_is_c4_20011() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_sets_timer_at_dirql));
    assert_ddi_rule(&v, 0x20011, "IrqlKeDispatchLte");
}

unsafe extern "C" fn sync_acquires_queued(context: PVOID) -> BOOLEAN {
    let s = context.cast::<State>();
    // SAFETY: an in-stack queued acquire at DIRQL: the bug.
    unsafe {
        let mut handle: KLOCK_QUEUE_HANDLE = std::mem::zeroed();
        KeAcquireInStackQueuedSpinLock(&raw mut (*s).lock, &raw mut handle);
    }
    1
}

entry_then!(entry_acquires_queued_at_dirql, |_driver, s| {
    // SAFETY: our state.
    unsafe { at_dirql(s, sync_acquires_queued) };
});

/// Verifier documents no rule for KeAcquireInStackQueuedSpinLock above DISPATCH_LEVEL:
/// ntsim's own rule 6 [6, IRQL, highest allowed, 0].
#[test]
fn queued_acquire_above_dispatch_is_ntsim_6() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_acquires_queued_at_dirql));
    assert_eq!((v.code, v.params), (NTSIM, [6, u64::from(DIRQL), 2, 0]), "{v}");
}

// --- At DISPATCH_LEVEL, under a spin lock -------------------------------------------

entry_then!(entry_creates_thread_at_dispatch, |_driver, s| {
    // SAFETY: our state's lock; PsCreateSystemThread at DISPATCH_LEVEL is the bug.
    unsafe {
        KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        let mut handle: HANDLE = std::ptr::null_mut();
        let _ = PsCreateSystemThread(
            &raw mut handle,
            THREAD_ALL_ACCESS,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            None,
            std::ptr::null_mut(),
        );
    }
});

/// IrqlPsPassive: 0xC4/0x2001C.
#[test]
fn creating_a_thread_at_dispatch_is_c4_2001c() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_creates_thread_at_dispatch));
    assert_ddi_rule(&v, 0x2001C, "IrqlPsPassive");
}

entry_then!(entry_references_handle_at_dispatch, |_driver, s| {
    // SAFETY: our state's lock; ObReferenceObjectByHandle at DISPATCH_LEVEL is the bug.
    unsafe {
        KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        let mut object: PVOID = std::ptr::null_mut();
        let _ = ObReferenceObjectByHandle(
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            _MODE::KernelMode as i8,
            &raw mut object,
            std::ptr::null_mut(),
        );
    }
});

/// IrqlObPassive: 0xC4/0x2001B (the rule the old generic code borrowed).
#[test]
fn referencing_a_handle_at_dispatch_is_c4_2001b() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_references_handle_at_dispatch));
    assert_ddi_rule(&v, 0x2001B, "IrqlObPassive");
}

entry_then!(entry_creates_device_at_dispatch, |driver, s| {
    // SAFETY: our state's lock; IoCreateDevice at DISPATCH_LEVEL is the bug.
    unsafe {
        KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        let mut device: PDEVICE_OBJECT = std::ptr::null_mut();
        let _ = IoCreateDevice(driver, 0, std::ptr::null_mut(), FILE_DEVICE_UNKNOWN, 0, 0, &raw mut device);
    }
});

/// IrqlIoPassive1: 0xC4/0x2000A.
#[test]
fn creating_a_device_at_dispatch_is_c4_2000a() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_creates_device_at_dispatch));
    assert_ddi_rule(&v, 0x2000A, "IrqlIoPassive1");
}

entry_then!(entry_flushes_at_dispatch, |_driver, s| {
    // SAFETY: our state's lock; KeFlushQueuedDpcs at DISPATCH_LEVEL is the bug.
    unsafe {
        KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        KeFlushQueuedDpcs();
    }
});

/// KeFlushQueuedDpcs is PASSIVE_LEVEL only, but no Verifier rule names it: ntsim's
/// own rule 6 [6, IRQL, highest allowed, 0].
#[test]
fn flushing_dpcs_at_dispatch_is_ntsim_6() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_flushes_at_dispatch));
    assert_eq!((v.code, v.params), (NTSIM, [6, 2, 0, 0]), "{v}");
}

// --- Spin-lock releases -----------------------------------------------------------------

entry_then!(entry_releases_from_dpc_level_at_passive, |_driver, s| {
    // SAFETY: the state's lock's address; the FromDpcLevel release at PASSIVE_LEVEL is the bug.
    unsafe {
        print_value("lock", (&raw mut (*s).lock) as u64);
        KeReleaseSpinLockFromDpcLevel(&raw mut (*s).lock);
    }
});

/// 0xC4/0x41: KeReleaseSpinLockFromDpcLevel below DISPATCH_LEVEL, [0x41, IRQL, lock, 0].
#[test]
fn releasing_from_dpc_level_at_passive_is_c4_41() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_releases_from_dpc_level_at_passive));
    assert_eq!((v.code, v.params), (C4, [0x41, 0, printed(&machine, "lock"), 0]), "{v}");
}

entry_then!(entry_releases_to_dirql, |_driver, s| {
    // SAFETY: the state's lock, released "back" to DIRQL: the bug.
    unsafe {
        let _ = KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock);
        KeReleaseSpinLock(&raw mut (*s).lock, DIRQL);
    }
});

/// Releasing to an IRQL above the current one is KeLowerIrql's 0xC4/0x31
/// [0x31, current IRQL, requested IRQL, 0 (the new IRQL is bad)].
#[test]
fn releasing_a_spin_lock_to_a_higher_irql_is_c4_31() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_releases_to_dirql));
    assert_eq!((v.code, v.params), (C4, [0x31, 2, u64::from(DIRQL), 0]), "{v}");
}

// --- KeRaiseIrql and KeLowerIrql --------------------------------------------------------

entry_then!(entry_raises_to_lower, |_driver, s| {
    // SAFETY: our state's lock; "raising" from DISPATCH_LEVEL to PASSIVE_LEVEL is the bug.
    unsafe { KeAcquireSpinLockRaiseToDpc(&raw mut (*s).lock) };
    KfRaiseIrql(0);
});

/// 0xC4/0x30: KeRaiseIrql to a lower IRQL, [0x30, current IRQL, requested IRQL, 0].
#[test]
fn raising_irql_to_a_lower_one_is_c4_30() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_raises_to_lower));
    assert_eq!((v.code, v.params), (C4, [0x30, 2, 0, 0]), "{v}");
}

entry_then!(entry_raises_above_high_level, |_driver, _s| {
    // The bug: no IRQL above HIGH_LEVEL (15) exists.
    KfRaiseIrql(16);
});

/// 0xC4/0x30 also covers a requested IRQL above HIGH_LEVEL.
#[test]
fn raising_irql_above_high_level_is_c4_30() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_raises_above_high_level));
    assert_eq!((v.code, v.params), (C4, [0x30, 0, 16, 0]), "{v}");
}

entry_then!(entry_lowers_to_higher, |_driver, _s| {
    // The bug: "lowering" from PASSIVE_LEVEL to DISPATCH_LEVEL.
    KeLowerIrql(2);
});

/// 0xC4/0x31: KeLowerIrql to a higher IRQL, [0x31, current IRQL, requested IRQL, 0].
#[test]
fn lowering_irql_to_a_higher_one_is_c4_31() {
    let machine = machine();
    let v = bugcheck(machine.load_driver("chk", entry_lowers_to_higher));
    assert_eq!((v.code, v.params), (C4, [0x31, 0, 2, 0]), "{v}");
}

// --- An ISR returning at another IRQL ---------------------------------------------------

/// The bus line the ISR tests' device interrupts on.
const LINE: ULONG = 3;

/// Raises to HIGH_LEVEL and returns there: the bug.
unsafe extern "C" fn isr_stays_raised(_interrupt: PKINTERRUPT, _context: PVOID) -> BOOLEAN {
    KfRaiseIrql(15);
    1
}

/// Lowers to DISPATCH_LEVEL and returns there: the bug.
unsafe extern "C" fn isr_stays_lowered(_interrupt: PKINTERRUPT, _context: PVOID) -> BOOLEAN {
    KeLowerIrql(2);
    1
}

/// Raises to HIGH_LEVEL for a moment and restores the IRQL it was called at.
unsafe extern "C" fn isr_restores(_interrupt: PKINTERRUPT, _context: PVOID) -> BOOLEAN {
    let old = KfRaiseIrql(15);
    KeLowerIrql(old);
    print(&format!("isr ran at {old}, returns at {}", KeGetCurrentIrql()));
    1
}

/// IoConnectInterrupt of `isr` on the vector the HAL routes [`LINE`] to.
unsafe fn connect_line(s: *mut State, isr: unsafe extern "C" fn(PKINTERRUPT, PVOID) -> BOOLEAN) {
    let vector = vector_of_line(LINE).expect("a routed line");
    let irql = irql_of_vector(vector);
    let mut interrupt: PKINTERRUPT = std::ptr::null_mut();
    // SAFETY: valid arguments for a latched interrupt; the state outlives the connection.
    let status = unsafe {
        IoConnectInterrupt(
            &raw mut interrupt,
            Some(isr),
            s.cast(),
            std::ptr::null_mut(),
            vector,
            irql,
            irql,
            _KINTERRUPT_MODE::Latched,
            0,
            1,
            0,
        )
    };
    print_value("connect", u64::from(status.cast_unsigned()));
}

entry_then!(entry_connects_isr_stays_raised, |_driver, s| {
    // SAFETY: our state.
    unsafe { connect_line(s, isr_stays_raised) };
});

entry_then!(entry_connects_isr_stays_lowered, |_driver, s| {
    // SAFETY: our state.
    unsafe { connect_line(s, isr_stays_lowered) };
});

entry_then!(entry_connects_isr_restores, |_driver, s| {
    // SAFETY: our state.
    unsafe { connect_line(s, isr_restores) };
});

/// The IRQL the ISR on [`LINE`] is called at.
fn line_irql() -> u64 {
    u64::from(irql_of_vector(vector_of_line(LINE).unwrap()))
}

/// 0xC4/0x111 [0x111, ISR, IRQL before, IRQL after]: an ISR that left the IRQL raised.
#[test]
fn isr_returning_raised_is_c4_111() {
    let machine = machine();
    load(&machine, entry_connects_isr_stays_raised);
    assert_eq!(printed(&machine, "connect"), 0);
    let v = bugcheck(machine.raise_interrupt(LINE));
    assert_eq!((v.code, v.params), (C4, [0x111, isr_stays_raised as *const () as u64, line_irql(), 15]), "{v}");
}

/// The same check for an ISR that left the IRQL lowered.
#[test]
fn isr_returning_lowered_is_c4_111() {
    let machine = machine();
    load(&machine, entry_connects_isr_stays_lowered);
    assert_eq!(printed(&machine, "connect"), 0);
    let v = bugcheck(machine.raise_interrupt(LINE));
    assert_eq!((v.code, v.params), (C4, [0x111, isr_stays_lowered as *const () as u64, line_irql(), 2]), "{v}");
}

/// An ISR that raises and restores its IRQL before returning is not reported.
#[test]
fn isr_restoring_its_irql_is_clean() {
    let machine = machine();
    load(&machine, entry_connects_isr_restores);
    assert_eq!(printed(&machine, "connect"), 0);
    assert!(machine.raise_interrupt(LINE).unwrap(), "the ISR claimed the interrupt");
    let irql = line_irql();
    assert!(machine.debug_output().contains(&format!("isr ran at {irql}, returns at {irql}")));
    assert_clean(&machine);
}
