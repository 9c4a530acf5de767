//! Spin locks, lock-protected data and events.
//!
//! - [`SpinLock<T>`]: a KSPIN_LOCK around the data it protects. [`SpinLock::lock`]
//!   (KeAcquireSpinLock) returns a [`Guard`] that restores the caller's IRQL;
//!   [`SpinLock::lock_at_dpc_level`] (KeAcquireSpinLockAtDpcLevel) returns a
//!   [`DpcGuard`] that does not, and needs an [`AtDispatch`] token: only code the kernel
//!   calls at DISPATCH_LEVEL (DPCs, IoTimer routines) gets one, from its kernel adapter.
//! - [`LockedBy<T, Owner>`]: data that lives outside a lock but is protected by it
//!   (Rust-for-Linux's `LockedBy`): reaching it takes a reference to the owner's data,
//!   which only the owner's guard gives.
//! - [`Event`]: a KEVENT, initialised in place with an [`EventKind`].
//!
//! In-place initialisation: a kernel object that must not move once the kernel knows
//! its address starts as an all-zero slot (`uninit()`, a `const fn`) written into its
//! final nonpaged home, and becomes usable with `init(&self, ..)` there. A spin lock
//! needs no `init`: all-zero is KeInitializeSpinLock's value, and an unheld lock may move.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicPtr, Ordering};

use super::irql;
use super::sys::{
    _EVENT_TYPE, _KWAIT_REASON, _MODE, KEVENT, KIRQL, KSPIN_LOCK, KeAcquireSpinLockAtDpcLevel,
    KeAcquireSpinLockRaiseToDpc, KeClearEvent, KeInitializeEvent, KeReleaseSpinLock, KeReleaseSpinLockFromDpcLevel,
    KeSetEvent, KeWaitForSingleObject,
};

/// Evidence that the code holding it runs at DISPATCH_LEVEL: the body of a DPC or an
/// IoTimer routine, to which its kernel adapter lends the token. Zero-sized and `!Send`
/// (it describes one processor's state), neither `Clone` nor `Copy`; lent by reference,
/// so it cannot outlive the routine.
///
/// A cancel routine gets none: after IoReleaseCancelSpinLock it runs at its caller's
/// IRQL. Code at device IRQL (an ISR, a KeSynchronizeExecution routine) gets none
/// either: an ordinary spin lock must not be taken above DISPATCH_LEVEL.
pub struct AtDispatch {
    _not_send: PhantomData<*mut ()>,
}

impl AtDispatch {
    /// The token for a routine the kernel calls at DISPATCH_LEVEL.
    ///
    /// # Safety
    /// The caller runs at DISPATCH_LEVEL and stays there for as long as the token
    /// lives: it is the adapter of a DPC or IoTimer routine, lending the token to the
    /// routine's body only.
    pub(crate) unsafe fn assume() -> Self {
        irql::assert_dispatch();
        Self { _not_send: PhantomData }
    }
}

/// `T` behind a spin lock.
///
/// # Invariants
/// `data` is reached only through a [`Guard`] or [`DpcGuard`], which exist only while
/// `lock` is held. `lock` starts all-zero, which is KeInitializeSpinLock's value.
pub struct SpinLock<T> {
    lock: UnsafeCell<KSPIN_LOCK>,
    data: UnsafeCell<T>,
}

// SAFETY: access to `data` is serialised by the spin lock (type invariant), so sharing
// the lock shares `T` between processors one at a time, which needs `T: Send`.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: the lock word is plain data; moving the lock moves `T`.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// An unheld lock around `data`.
    pub const fn new(data: T) -> Self {
        Self { lock: UnsafeCell::new(0), data: UnsafeCell::new(data) }
    }

    /// KeAcquireSpinLock: raises to DISPATCH_LEVEL; the guard restores the IRQL it
    /// found. IRQL <= DISPATCH_LEVEL.
    pub fn lock(&self) -> Guard<'_, T> {
        irql::assert_at_most_dispatch();
        // SAFETY: the lock word is initialised (type invariant) and lives as long as
        // the guard, which releases it once.
        let old_irql = unsafe { KeAcquireSpinLockRaiseToDpc(self.lock.get()) };
        // INVARIANT: the lock is held until the guard drops.
        Guard { owner: self, old_irql, _not_send: PhantomData }
    }

    /// KeAcquireSpinLockAtDpcLevel, for code already at DISPATCH_LEVEL, which the
    /// token proves.
    pub fn lock_at_dpc_level(&self, _at_dispatch: &AtDispatch) -> DpcGuard<'_, T> {
        irql::assert_dispatch();
        // SAFETY: as in `lock`; the token says the caller is at DISPATCH_LEVEL.
        unsafe { KeAcquireSpinLockAtDpcLevel(self.lock.get()) };
        // INVARIANT: the lock is held until the guard drops.
        DpcGuard { owner: self, _not_send: PhantomData }
    }
}

/// The lock taken with [`SpinLock::lock`]. `!Send`: a spin lock is released on the
/// processor that acquired it.
#[must_use = "the guard releases the lock when dropped"]
pub struct Guard<'a, T> {
    owner: &'a SpinLock<T>,
    old_irql: KIRQL,
    _not_send: PhantomData<*mut ()>,
}

/// The lock taken with [`SpinLock::lock_at_dpc_level`]; the IRQL stays DISPATCH_LEVEL.
#[must_use = "the guard releases the lock when dropped"]
pub struct DpcGuard<'a, T> {
    owner: &'a SpinLock<T>,
    _not_send: PhantomData<*mut ()>,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held for the guard's lifetime.
        unsafe { &*self.owner.data.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the lock is held for the guard's lifetime, and `&mut self` is unique.
        unsafe { &mut *self.owner.data.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: acquired by `lock`, released once with the IRQL it returned.
        unsafe { KeReleaseSpinLock(self.owner.lock.get(), self.old_irql) };
    }
}

impl<T> Deref for DpcGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held for the guard's lifetime.
        unsafe { &*self.owner.data.get() }
    }
}

impl<T> DerefMut for DpcGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the lock is held for the guard's lifetime, and `&mut self` is unique.
        unsafe { &mut *self.owner.data.get() }
    }
}

impl<T> Drop for DpcGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: acquired by `lock_at_dpc_level`, released once.
        unsafe { KeReleaseSpinLockFromDpcLevel(self.owner.lock.get()) };
    }
}

/// `T` stored outside a lock but protected by it: reached with a reference to the
/// lock's data (the owner), which only a guard of that lock gives.
///
/// # Invariants
/// `data` is reached only through [`LockedBy::access`] and [`LockedBy::access_mut`],
/// and only with the data of the lock given to [`LockedBy::new`]: shared access with a shared
/// borrow of it, exclusive access with an exclusive one. Rust-for-Linux's `LockedBy`
/// panics on another owner; this crate does not panic, so the check is a debug
/// assertion (every host test runs it) and release builds rely on construction: the
/// driver pairs each value with the one owner it was made under.
pub struct LockedBy<T, Owner> {
    owner: *const Owner,
    data: UnsafeCell<T>,
}

// SAFETY: access is serialised by the owner's lock (type invariant).
unsafe impl<T: Send, Owner> Sync for LockedBy<T, Owner> {}
// SAFETY: `owner` is only compared, never dereferenced.
unsafe impl<T: Send, Owner> Send for LockedBy<T, Owner> {}

impl<T, Owner> LockedBy<T, Owner> {
    /// `data`, protected by `lock`: reached with a borrow of the data `lock` protects.
    pub fn new(lock: &SpinLock<Owner>, data: T) -> Self {
        Self { owner: lock.data.get().cast_const(), data: UnsafeCell::new(data) }
    }

    /// The data, while the owner is borrowed (its lock held).
    pub fn access<'a>(&'a self, owner: &'a Owner) -> &'a T {
        debug_assert!(core::ptr::eq(owner, self.owner), "LockedBy reached with another owner");
        // SAFETY: a shared borrow of the owner means its lock is held and nobody has
        // exclusive access to the owner, so nobody has it to `data` (type invariant).
        unsafe { &*self.data.get() }
    }

    /// The data, exclusively, while the owner is borrowed exclusively (its lock held).
    pub fn access_mut<'a>(&'a self, owner: &'a mut Owner) -> &'a mut T {
        debug_assert!(core::ptr::eq(owner, self.owner), "LockedBy reached with another owner");
        // SAFETY: the exclusive borrow of the owner excludes every other access to
        // `data` for `'a` (type invariant).
        unsafe { &mut *self.data.get() }
    }
}

/// The kind of a KEVENT (`EVENT_TYPE`).
#[derive(Clone, Copy)]
pub enum EventKind {
    /// Stays signalled until cleared; wakes every waiter.
    Notification,
    /// Wakes one waiter and resets itself.
    Synchronization,
}

/// A KEVENT's state at initialisation.
#[derive(Clone, Copy)]
pub enum EventState {
    /// Signalled.
    Signalled,
    /// Not signalled.
    NotSignalled,
}

/// A KEVENT in nonpaged memory.
///
/// # Invariants
/// `home` is NULL until [`Event::init`] runs, [`Event::BUSY`] while it runs, then the
/// address the KEVENT was initialised at. The KEVENT is used only when `home` is the
/// event's current address: an event used before `init`, or moved after it, does
/// nothing (and fails a debug assertion) instead of touching a KEVENT whose wait list
/// points elsewhere.
pub struct Event {
    event: UnsafeCell<KEVENT>,
    home: AtomicPtr<Event>,
}

// SAFETY: KEVENTs are made to be signalled and waited on from any thread; `home` is atomic.
unsafe impl Sync for Event {}
// SAFETY: as above.
unsafe impl Send for Event {}

impl Event {
    /// `home` while `init` runs.
    const BUSY: *mut Event = core::ptr::dangling_mut();

    /// The all-zero slot; [`Event::init`] makes it an event where it lies.
    pub const fn uninit() -> Self {
        // SAFETY: KEVENT is plain data; all-zero is a valid (unused) value.
        Self { event: UnsafeCell::new(unsafe { core::mem::zeroed() }), home: AtomicPtr::new(core::ptr::null_mut()) }
    }

    fn here(&self) -> *mut Event {
        core::ptr::from_ref(self).cast_mut()
    }

    /// The KEVENT, for DDIs that wait on several objects; valid once `init` ran here.
    pub fn as_ptr(&self) -> *mut KEVENT {
        self.event.get()
    }

    /// KeInitializeEvent, at the event's final address. IRQL <= DISPATCH_LEVEL.
    pub fn init(&self, kind: EventKind, state: EventState) {
        irql::assert_at_most_dispatch();
        let found = self.home.load(Ordering::Acquire);
        let fresh = found != self.here() && found != Self::BUSY;
        debug_assert!(fresh, "an event initialised twice");
        if !fresh || self.home.compare_exchange(found, Self::BUSY, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return;
        }
        let kind = match kind {
            EventKind::Notification => _EVENT_TYPE::NotificationEvent,
            EventKind::Synchronization => _EVENT_TYPE::SynchronizationEvent,
        };
        let signalled = u8::from(matches!(state, EventState::Signalled));
        // SAFETY: `home` is BUSY: no other `init` runs and no other method touches the
        // KEVENT, which is at the address it keeps (`&self` is borrowed for the call).
        unsafe { KeInitializeEvent(self.as_ptr(), kind, signalled) };
        // INVARIANT: initialised at this address.
        self.home.store(self.here(), Ordering::Release);
    }

    /// Whether the KEVENT was initialised where it is now.
    fn ready(&self) -> bool {
        let ready = self.home.load(Ordering::Acquire) == self.here();
        debug_assert!(ready, "an event used before init, or after it moved");
        ready
    }

    /// KeSetEvent. IRQL <= DISPATCH_LEVEL.
    pub fn set(&self) {
        irql::assert_at_most_dispatch();
        if self.ready() {
            // SAFETY: initialised at this address (type invariant).
            unsafe { KeSetEvent(self.as_ptr(), 0, 0) };
        }
    }

    /// KeClearEvent. IRQL <= DISPATCH_LEVEL.
    pub fn clear(&self) {
        irql::assert_at_most_dispatch();
        if self.ready() {
            // SAFETY: initialised at this address (type invariant).
            unsafe { KeClearEvent(self.as_ptr()) };
        }
    }

    /// KeWaitForSingleObject with no timeout. PASSIVE_LEVEL.
    pub fn wait(&self) {
        irql::assert_passive();
        if self.ready() {
            // SAFETY: initialised at this address; `&self` keeps it there for the wait.
            let _ = unsafe {
                KeWaitForSingleObject(
                    self.as_ptr().cast(),
                    _KWAIT_REASON::Executive,
                    _MODE::KernelMode as i8,
                    0,
                    core::ptr::null_mut(),
                )
            };
        }
    }
}
