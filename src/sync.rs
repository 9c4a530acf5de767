//! The device guard: a KSPIN_LOCK around the data it protects, with guards that carry
//! the IRQL to return to and release when they go out of scope.

use core::cell::UnsafeCell;
use core::marker::PhantomData;

use crate::kernel::sys::{
    KIRQL, KSPIN_LOCK, KeAcquireSpinLockAtDpcLevel, KeAcquireSpinLockRaiseToDpc, KeReleaseSpinLock,
    KeReleaseSpinLockFromDpcLevel,
};

/// `T` behind a spin lock. Lives in nonpaged memory (a device extension) and never
/// moves once initialised; all-zero is its initial state (`KeInitializeSpinLock`
/// stores 0).
pub struct SpinLock<T> {
    lock: UnsafeCell<KSPIN_LOCK>,
    data: UnsafeCell<T>,
}

// SAFETY: access to `data` is serialised by the spin lock.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub const fn new(data: T) -> Self {
        Self { lock: UnsafeCell::new(0), data: UnsafeCell::new(data) }
    }

    /// KeAcquireSpinLock: raises to DISPATCH_LEVEL. Caller at <= DISPATCH_LEVEL.
    pub fn lock(&self) -> Guard<'_, T> {
        // SAFETY: the lock word is valid and initialised.
        let old = unsafe { KeAcquireSpinLockRaiseToDpc(self.lock.get()) };
        Guard { owner: self, old_irql: Some(old), _not_send: PhantomData }
    }

    /// KeAcquireSpinLockAtDpcLevel: for DPCs, IoTimer routines, and callers already at
    /// DISPATCH_LEVEL.
    pub fn lock_at_dpc_level(&self) -> Guard<'_, T> {
        // SAFETY: as above; the caller is at DISPATCH_LEVEL.
        unsafe { KeAcquireSpinLockAtDpcLevel(self.lock.get()) };
        Guard { owner: self, old_irql: None, _not_send: PhantomData }
    }
}

/// Access to the protected data while the lock is held. `!Send`: a spin lock is
/// released on the processor that acquired it.
pub struct Guard<'a, T> {
    owner: &'a SpinLock<T>,
    /// `Some` if acquired with `lock` (restore this IRQL), `None` at DPC level.
    old_irql: Option<KIRQL>,
    _not_send: PhantomData<*mut ()>,
}

impl<T> core::ops::Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the lock is held for the guard's lifetime.
        unsafe { &*self.owner.data.get() }
    }
}

impl<T> core::ops::DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the lock is held for the guard's lifetime, and `&mut self` is unique.
        unsafe { &mut *self.owner.data.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        match self.old_irql {
            // SAFETY: acquired by `lock`, released once with the IRQL it returned.
            Some(irql) => unsafe { KeReleaseSpinLock(self.owner.lock.get(), irql) },
            // SAFETY: acquired by `lock_at_dpc_level`, released once.
            None => unsafe { KeReleaseSpinLockFromDpcLevel(self.owner.lock.get()) },
        }
    }
}

/// A KEVENT stored in nonpaged memory that never moves once initialised.
pub struct Event(UnsafeCell<crate::kernel::sys::KEVENT>);

// SAFETY: KEVENTs are made to be signalled and waited on from any thread.
unsafe impl Sync for Event {}
// SAFETY: as above.
unsafe impl Send for Event {}

impl Event {
    /// Uninitialised storage; call `init_*` once the event is at its final address.
    pub const fn uninit() -> Self {
        // SAFETY: KEVENT is plain data; all-zero is a valid (if meaningless) value.
        Self(UnsafeCell::new(unsafe { core::mem::zeroed() }))
    }

    pub fn as_ptr(&self) -> *mut crate::kernel::sys::KEVENT {
        self.0.get()
    }

    /// KeInitializeEvent(NotificationEvent or SynchronizationEvent, signalled).
    pub fn init(&self, synchronization: bool, signalled: bool) {
        let kind = if synchronization {
            crate::kernel::sys::_EVENT_TYPE::SynchronizationEvent
        } else {
            crate::kernel::sys::_EVENT_TYPE::NotificationEvent
        };
        // SAFETY: the event is at its final address and not yet in use.
        unsafe { crate::kernel::sys::KeInitializeEvent(self.as_ptr(), kind, u8::from(signalled)) };
    }

    /// KeSetEvent. IRQL <= DISPATCH_LEVEL.
    pub fn set(&self) {
        // SAFETY: the event was initialised.
        unsafe { crate::kernel::sys::KeSetEvent(self.as_ptr(), 0, 0) };
    }

    /// KeClearEvent. IRQL <= DISPATCH_LEVEL.
    pub fn clear(&self) {
        // SAFETY: the event was initialised.
        unsafe { crate::kernel::sys::KeClearEvent(self.as_ptr()) };
    }

    /// KeWaitForSingleObject with no timeout. PASSIVE_LEVEL.
    pub fn wait(&self) {
        // SAFETY: the event was initialised and outlives the wait.
        let _ = unsafe {
            crate::kernel::sys::KeWaitForSingleObject(
                self.as_ptr().cast(),
                crate::kernel::sys::_KWAIT_REASON::Executive,
                crate::kernel::sys::_MODE::KernelMode as i8,
                0,
                core::ptr::null_mut(),
            )
        };
    }
}
