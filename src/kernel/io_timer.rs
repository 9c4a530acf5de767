//! The IoTimer of a device object: IoInitializeTimer, IoStartTimer, IoStopTimer.
//!
//! The I/O manager calls every started IoTimer routine about once a second, at
//! DISPATCH_LEVEL, while it holds its timer lock (IopTimerLock). IoStopTimer takes the
//! same lock, so it waits for a routine that is running — and **must never be called
//! from the routine itself** (it would spin on the lock it already holds), nor while
//! holding a lock the routine takes (an ABBA deadlock). A routine that should no longer
//! run checks its owner's `stopping` flag and returns; Unload stops the timer. (The
//! `stop_timer_in_routine` mutant build breaks this rule: 0x133.)

use core::cell::Cell;
use core::marker::PhantomData;

use super::device::DeviceObject;
use super::error::{NtError, NtResult, to_result};
use super::irql;
use super::sync::AtDispatch;
use super::sys::{IoInitializeTimer, IoStartTimer, IoStopTimer, PDEVICE_OBJECT, PVOID};

/// What an IoTimer routine does, implemented by the context it receives.
pub trait IoTimerRoutine: 'static {
    /// Runs about once a second while the timer is started, at DISPATCH_LEVEL under
    /// the I/O manager's timer lock: never call [`IoTimer::stop`] from here.
    fn tick(&'static self, at_dispatch: &AtDispatch);
}

/// The device object's IoTimer, kept in its extension.
///
/// # Invariants
/// `device` is non-NULL exactly when IoInitializeTimer succeeded for it (only
/// [`IoTimer::init`] sets it): a device object of this driver whose extension holds
/// this value, so the device outlives it. `started` is set from IoStartTimer until
/// IoStopTimer.
pub struct IoTimer<C> {
    device: Cell<PDEVICE_OBJECT>,
    started: Cell<bool>,
    _context: PhantomData<fn(&C)>,
}

impl<C> IoTimer<C> {
    /// A timer not initialised yet: `start` and `stop` do nothing.
    #[must_use]
    pub const fn new() -> Self {
        Self { device: Cell::new(core::ptr::null_mut()), started: Cell::new(false), _context: PhantomData }
    }
}

impl<C> Default for IoTimer<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: IoTimerRoutine> IoTimer<C> {
    /// IoInitializeTimer(device, `C::tick`, context). It allocates, and Wine does not
    /// implement it (STATUS_NOT_IMPLEMENTED). A second initialisation is refused
    /// (Windows bug-checks a device's second IoInitializeTimer, 0xC9/0x0A). The device
    /// is the one whose extension holds `self`, so it outlives the timer. PASSIVE_LEVEL.
    ///
    /// # Errors
    /// IoInitializeTimer's status (the timer then stays unavailable), or
    /// STATUS_INVALID_DEVICE_REQUEST for a second initialisation.
    pub fn init<E>(&'static self, device: &DeviceObject<E>, context: &'static C) -> NtResult {
        irql::assert_passive();
        if self.is_available() {
            return Err(NtError::INVALID_DEVICE_REQUEST);
        }
        // SAFETY: a live device object (DeviceObject's invariant) without an IoTimer
        // from this value (checked above); the context is a 'static `C`, which is what
        // `io_timer_routine::<C>` reads.
        let status = unsafe {
            IoInitializeTimer(
                device.as_raw(),
                Some(io_timer_routine::<C>),
                core::ptr::from_ref(context).cast_mut().cast(),
            )
        };
        to_result(status)?;
        // INVARIANT: IoInitializeTimer succeeded for this device.
        self.device.set(device.as_raw());
        Ok(())
    }

    /// Whether IoInitializeTimer succeeded.
    #[must_use]
    pub fn is_available(&self) -> bool {
        !self.device.get().is_null()
    }

    /// IoStartTimer, if the timer is available. IRQL <= DISPATCH_LEVEL.
    pub fn start(&self) {
        irql::assert_at_most_dispatch();
        let device = self.device.get();
        if !device.is_null() {
            // SAFETY: IoInitializeTimer succeeded for this live device (invariant).
            unsafe { IoStartTimer(device) };
            self.started.set(true);
        }
    }

    /// IoStopTimer, if started. Waits for a routine that is running. IRQL <=
    /// DISPATCH_LEVEL, and never from the IoTimer routine (see the module doc).
    pub fn stop(&self) {
        irql::assert_at_most_dispatch();
        if self.started.replace(false) {
            // SAFETY: started, so initialised for this live device (invariant).
            unsafe { IoStopTimer(self.device.get()) };
        }
    }
}

/// The PIO_TIMER_ROUTINE of every [`IoTimer`] over `C`.
unsafe extern "C" fn io_timer_routine<C: IoTimerRoutine>(_device: PDEVICE_OBJECT, context: PVOID) {
    // SAFETY: `IoTimer::init` gave IoInitializeTimer a `&'static C` as the context.
    let context = unsafe { &*context.cast_const().cast::<C>() };
    // SAFETY: the I/O manager calls IoTimer routines at DISPATCH_LEVEL.
    let at_dispatch = unsafe { AtDispatch::assume() };
    context.tick(&at_dispatch);
}
