//! An I/O work item (IoAllocateWorkItem, IoQueueWorkItem, IoFreeWorkItem) with the
//! wait Unload needs: Windows calls DriverUnload even while a work item is queued or
//! running (its reference keeps only the device object and the image), so Unload waits
//! until none is outstanding, and only then frees the item.
//!
//! At most one run is outstanding at a time. The states are Idle → Queued (by
//! [`WorkItem::queue`]) → Idle (the routine says it is done) and, once, → Closed (by
//! [`WorkItem::wait_idle`] or [`WorkItem::free`]); a closed item is never queued again,
//! and only a closed item is freed.

use core::cell::Cell;
use core::sync::atomic::{AtomicU8, Ordering};

use super::device::DeviceObject;
use super::error::{NtError, NtResult};
use super::irql;
use super::sync::{Event, EventKind, EventState};
use super::sys::{
    _WORK_QUEUE_TYPE::DelayedWorkQueue, IoAllocateWorkItem, IoFreeWorkItem, IoQueueWorkItem, PDEVICE_OBJECT,
    PIO_WORKITEM, PVOID,
};

/// What a work item does, implemented by the context it runs on.
pub trait WorkRoutine: Sized + 'static {
    /// Runs at PASSIVE_LEVEL in a system worker thread, once per successful
    /// [`WorkItem::queue`]. `done` marks the item idle when it is finished or dropped;
    /// finish it at the point where a new run may be queued.
    fn run(&'static self, done: WorkDone<'_, Self>);
}

const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const CLOSED: u8 = 2;

/// An I/O work item for a device, kept in the device's extension.
///
/// # Invariants
/// `item` is non-NULL from a successful IoAllocateWorkItem until IoFreeWorkItem; the
/// item is queued (with `self` as its context) only while `state` is QUEUED, and freed
/// only once `state` is CLOSED. `context` is set, to a `'static` `C`, whenever `item`
/// is. `idle` is initialised from [`WorkItem::allocate`] on, and signalled whenever
/// `state` is not QUEUED, except just after the change to QUEUED or back.
pub struct WorkItem<C: 'static> {
    item: Cell<PIO_WORKITEM>,
    context: Cell<Option<&'static C>>,
    state: AtomicU8,
    idle: Event,
}

/// Held by a running work routine; marks the item idle when finished or dropped.
#[must_use = "the work item becomes idle when this is dropped"]
pub struct WorkDone<'a, C: 'static> {
    item: &'a WorkItem<C>,
}

impl<C: 'static> WorkDone<'_, C> {
    /// The run is over: a new one may be queued, and Unload's wait may return.
    pub fn finish(self) {
        drop(self);
    }
}

impl<C: 'static> Drop for WorkDone<'_, C> {
    fn drop(&mut self) {
        // INVARIANT: QUEUED → IDLE, then the event, so a waiter that wakes sees IDLE.
        self.item.state.store(IDLE, Ordering::Release);
        self.item.idle.set();
    }
}

impl<C: 'static> WorkItem<C> {
    /// An item not allocated yet: `queue` refuses, `wait_idle` and `free` do nothing.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            item: Cell::new(core::ptr::null_mut()),
            context: Cell::new(None),
            state: AtomicU8::new(IDLE),
            idle: Event::uninit(),
        }
    }

    /// Waits until no run is outstanding, and closes the item: it is never queued
    /// again. Unload calls it once every source of new runs is stopped. PASSIVE_LEVEL.
    pub fn wait_idle(&self) {
        irql::assert_passive();
        if self.item.get().is_null() {
            return;
        }
        while self.state.compare_exchange(IDLE, CLOSED, Ordering::AcqRel, Ordering::Acquire) == Err(QUEUED) {
            self.idle.wait();
        }
    }

    /// IoFreeWorkItem (Unload stage 3), once no run is outstanding. An item still
    /// queued is left alone (a leak, logged) rather than freed under the I/O manager.
    /// PASSIVE_LEVEL.
    pub fn free(&self) {
        irql::assert_passive();
        let item = self.item.get();
        if item.is_null() {
            return;
        }
        let closed = self.state.compare_exchange(IDLE, CLOSED, Ordering::AcqRel, Ordering::Acquire) != Err(QUEUED);
        if !closed && REFUSE_TO_FREE_WHILE_QUEUED {
            log!(Error, "a work item still queued is not freed");
            debug_assert!(false, "IoFreeWorkItem of a queued work item");
            return;
        }
        self.item.set(core::ptr::null_mut());
        // SAFETY: allocated by `allocate` and freed once (the pointer is cleared); CLOSED,
        // so not queued and never queued again (invariant).
        unsafe { IoFreeWorkItem(item) };
    }
}

impl<C: 'static> Default for WorkItem<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: WorkRoutine> WorkItem<C> {
    /// IoAllocateWorkItem for `device`, whose runs will work on `context`; initialises
    /// the idle event. A second allocation is refused. PASSIVE_LEVEL.
    ///
    /// # Errors
    /// STATUS_INSUFFICIENT_RESOURCES if the item could not be allocated;
    /// STATUS_INVALID_DEVICE_REQUEST if it already was.
    pub fn allocate<E>(&'static self, device: &DeviceObject<E>, context: &'static C) -> NtResult {
        irql::assert_passive();
        if !self.item.get().is_null() {
            return Err(NtError::INVALID_DEVICE_REQUEST);
        }
        self.idle.init(EventKind::Notification, EventState::Signalled);
        // SAFETY: a live device object (DeviceObject's invariant); the item keeps a
        // reference to it while queued.
        let item = unsafe { IoAllocateWorkItem(device.as_raw()) };
        if item.is_null() {
            return Err(NtError::INSUFFICIENT_RESOURCES);
        }
        // INVARIANT: allocated, with its context.
        self.context.set(Some(context));
        self.item.set(item);
        Ok(())
    }

    /// IoQueueWorkItem (delayed work queue), unless a run is outstanding, the item is
    /// closed or was never allocated. Returns whether it was queued. IRQL <=
    /// DISPATCH_LEVEL.
    pub fn queue(&'static self) -> bool {
        irql::assert_at_most_dispatch();
        let item = self.item.get();
        if item.is_null() || self.state.compare_exchange(IDLE, QUEUED, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        // INVARIANT: QUEUED from here; the event follows.
        self.idle.clear();
        // SAFETY: allocated and, by the exchange above, not queued; its context is this
        // 'static item, which is what `work_routine::<C>` reads.
        unsafe {
            IoQueueWorkItem(
                item,
                Some(work_routine::<C>),
                DelayedWorkQueue,
                core::ptr::from_ref(self).cast_mut().cast(),
            );
        }
        true
    }
}

/// The PIO_WORKITEM_ROUTINE of every [`WorkItem`] over `C`.
unsafe extern "C" fn work_routine<C: WorkRoutine>(_device: PDEVICE_OBJECT, context: PVOID) {
    irql::assert_passive();
    // SAFETY: `WorkItem::queue` passed its own 'static address as the context.
    let item = unsafe { &*context.cast_const().cast::<WorkItem<C>>() };
    let done = WorkDone { item };
    match item.context.get() {
        Some(context) => context.run(done),
        None => done.finish(),
    }
}

/// IoFreeWorkItem refuses a queued item. The `no_work_item_wait` mutant build
/// (tests/mutants.rs) also takes Unload's wait out, so that it frees one: 0xE4.
const REFUSE_TO_FREE_WHILE_QUEUED: bool = !cfg!(stagedrv_mutant = "no_work_item_wait");
