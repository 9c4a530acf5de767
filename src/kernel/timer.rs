//! A KTIMER with the KDPC its expiry queues (a CustomTimerDpc), and the DPC flush that
//! Unload's stage 2 needs after cancelling.
//!
//! Cancelling is not enough to stop a timer's work: `KeCancelTimer` leaves a DPC that
//! an expiry already queued, or one running on another processor, alone. The order
//! Unload follows is: mark the owner stopping (the routine checks it), [`Timer::cancel`]
//! every timer, then one [`flush_queued_dpcs`], which waits for the DPCs queued before
//! it. Only after that may the memory of the timer and its context go.
//!
//! Due times are relative by construction:
//!
//! ```
//! use stagedrv::kernel::timer::{Period, RelativeDueTime};
//!
//! let (due, period) = (RelativeDueTime::from_millis(10), Period::from_millis(10));
//! ```
//!
//! and a positive (absolute) value cannot be written into one:
//!
//! ```compile_fail,E0451
//! use stagedrv::kernel::timer::RelativeDueTime;
//!
//! let absolute = RelativeDueTime { negative_100ns: 133_000_000_000_000_000 };
//! ```

use core::cell::{Cell, UnsafeCell};
use core::marker::PhantomData;

use super::irql;
use super::sync::AtDispatch;
use super::sys::{
    _TIMER_TYPE::NotificationTimer, KDPC, KTIMER, KeCancelTimer, KeFlushQueuedDpcs, KeInitializeDpc,
    KeInitializeTimerEx, KeSetTimerEx, LARGE_INTEGER, LONG, PKDPC, PVOID,
};

/// What a timer's DPC does, implemented by the context the DPC receives.
pub trait TimerRoutine: 'static {
    /// Runs once per expiry, at DISPATCH_LEVEL, on the context given to [`Timer::init`].
    fn expired(&'static self, at_dispatch: &AtDispatch);
}

/// A due time relative to now. `KeSetTimerEx` reads a negative due time as an interval
/// from now and a positive one as an absolute system time; this type only holds the
/// first kind, so an absolute time cannot be passed by mistake.
#[derive(Clone, Copy)]
pub struct RelativeDueTime {
    /// Negative: 100-ns units from now.
    negative_100ns: i64,
}

impl RelativeDueTime {
    /// `milliseconds` from now.
    #[must_use]
    pub fn from_millis(milliseconds: u32) -> Self {
        Self { negative_100ns: i64::from(milliseconds).saturating_mul(-10_000) }
    }
}

/// The period of a periodic timer (`KeSetTimerEx`'s `Period`, a LONG of milliseconds).
#[derive(Clone, Copy)]
pub struct Period {
    milliseconds: LONG,
}

impl Period {
    /// Every `milliseconds` (at most `LONG::MAX`; longer periods are capped).
    #[must_use]
    pub fn from_millis(milliseconds: u32) -> Self {
        Self { milliseconds: LONG::try_from(milliseconds).unwrap_or(LONG::MAX) }
    }
}

/// A notification KTIMER and its KDPC, whose routine is `C::expired` on a context `C`.
///
/// # Invariants
/// `ktimer` and `kdpc` are initialised (KeInitializeTimerEx, KeInitializeDpc) exactly
/// when `initialised` is set, which only [`Timer::init`] does: on a `&'static` timer
/// with a `&'static C` as the DPC's context, so neither moves nor goes away while the
/// kernel may use them. The memory that holds them in fact (a device extension) is
/// released by explicit teardown only after [`Timer::cancel`] and
/// [`flush_queued_dpcs`]. `armed` is set while the timer may be in the kernel's timer
/// table (from `set_periodic` until `cancel`).
pub struct Timer<C> {
    ktimer: UnsafeCell<KTIMER>,
    kdpc: UnsafeCell<KDPC>,
    initialised: Cell<bool>,
    armed: Cell<bool>,
    _context: PhantomData<fn(&C)>,
}

impl<C> Timer<C> {
    /// Storage for a timer that [`Timer::init`] initialises where it finally lives.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            // SAFETY: KTIMER and KDPC are plain C structures; all-zero is a valid
            // bit pattern for them (and no DDI sees them before `init`).
            ktimer: UnsafeCell::new(unsafe { core::mem::zeroed() }),
            // SAFETY: as above.
            kdpc: UnsafeCell::new(unsafe { core::mem::zeroed() }),
            initialised: Cell::new(false),
            armed: Cell::new(false),
            _context: PhantomData,
        }
    }
}

impl<C> Default for Timer<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: TimerRoutine> Timer<C> {
    /// KeInitializeTimerEx(NotificationTimer) + KeInitializeDpc with `C::expired` and
    /// `context`. Once only (a second call does nothing). IRQL <= DISPATCH_LEVEL.
    pub fn init(&'static self, context: &'static C) {
        irql::assert_at_most_dispatch();
        if self.initialised.get() {
            return;
        }
        // SAFETY: both objects are at their final, 'static address and not in use; the
        // DPC's context is a 'static `C`, which is what `timer_dpc::<C>` reads.
        unsafe {
            KeInitializeTimerEx(self.ktimer.get(), NotificationTimer);
            KeInitializeDpc(self.kdpc.get(), Some(timer_dpc::<C>), core::ptr::from_ref(context).cast_mut().cast());
        }
        // INVARIANT: both objects were initialised just above.
        self.initialised.set(true);
    }

    /// KeSetTimerEx: the first expiry after `due`, then one every `period`. Does
    /// nothing before `init`. IRQL <= DISPATCH_LEVEL.
    pub fn set_periodic(&self, due: RelativeDueTime, period: Period) {
        irql::assert_at_most_dispatch();
        if !self.initialised.get() {
            debug_assert!(false, "a timer set before it was initialised");
            return;
        }
        let due_time = LARGE_INTEGER { QuadPart: due.negative_100ns };
        // SAFETY: initialised (checked) and 'static (type invariant).
        unsafe { KeSetTimerEx(self.ktimer.get(), due_time, period.milliseconds, self.kdpc.get()) };
        // INVARIANT: the timer is in the timer table now.
        self.armed.set(true);
    }

    /// KeCancelTimer, if the timer was set. A DPC already queued by an expiry, or
    /// running, is not stopped by this: see [`flush_queued_dpcs`]. IRQL <=
    /// DISPATCH_LEVEL.
    pub fn cancel(&self) {
        irql::assert_at_most_dispatch();
        if self.armed.replace(false) {
            // SAFETY: set by `set_periodic`, so initialised.
            unsafe { KeCancelTimer(self.ktimer.get()) };
        }
    }
}

/// KeFlushQueuedDpcs: returns once every DPC queued before the call, on any processor,
/// has run. Unload calls it after cancelling its timers, before releasing what their
/// routines touch. PASSIVE_LEVEL.
pub fn flush_queued_dpcs() {
    irql::assert_passive();
    // SAFETY: PASSIVE_LEVEL (asserted); the call has no other precondition.
    unsafe { KeFlushQueuedDpcs() };
}

/// The KDEFERRED_ROUTINE of every [`Timer`] over `C`.
unsafe extern "C" fn timer_dpc<C: TimerRoutine>(_dpc: PKDPC, context: PVOID, _arg1: PVOID, _arg2: PVOID) {
    // SAFETY: `Timer::init` gave KeInitializeDpc a `&'static C` as this DPC's context.
    let context = unsafe { &*context.cast_const().cast::<C>() };
    // SAFETY: the kernel runs DPC routines at DISPATCH_LEVEL, until they return.
    let at_dispatch = unsafe { AtDispatch::assume() };
    context.expired(&at_dispatch);
}
