//! Pending reads: one FIFO per handle (FileObject->FsContext), guarded by the device
//! guard, with the cancel protocol:
//!
//! - enqueue: mark pending, set the cancel routine, re-check `Irp->Cancel` (IoCancelIrp
//!   sets it before taking the routine), then link the IRP;
//! - [`dequeue`], the one removal path for the thread, the watchdog, cleanup and close:
//!   unlink, self-link the entry, then take the cancel routine back with
//!   IoSetCancelRoutine(NULL). Getting NULL means the cancel routine owns the IRP: it
//!   finds the entry self-linked and completes it; the dequeuer must not;
//! - [`cancel_read`]: release the cancel spin lock, unlink under the guard if still
//!   linked, always complete.
//!
//! Completion always happens after the guard is released, from a local list.
//!
//! A handle is on the device's active list (`Shared::active`) exactly while its queue is
//! non-empty: it joins when [`enqueue`] links its first read and leaves when the last
//! one is unlinked, by [`dequeue`] or by [`cancel_read`], both under the guard. The
//! consumer and the watchdog walk only that list, so idle handles cost them nothing.

use core::ptr::NonNull;

use crate::device::{DeviceExtension, Shared};
use crate::kernel::device::DeviceObject;
use crate::kernel::irp::{Irp, Pending};
use crate::kernel::sys::{
    IoReleaseCancelSpinLock, LIST_ENTRY, NTSTATUS, PDEVICE_OBJECT, PFILE_OBJECT, PIRP, PLIST_ENTRY, STATUS_CANCELLED,
    current_stack_location, irp_cancel_requested, set_cancel_routine,
};
use crate::list;

/// Per-handle state, in pool from IRP_MJ_CREATE to IRP_MJ_CLOSE.
#[repr(C)]
pub struct HandleContext {
    /// Link in the device's list of handles with pending reads; self-linked while the
    /// queue is empty.
    pub active: LIST_ENTRY,
    /// Pending read IRPs, oldest first (through `Irp->Tail.Overlay.ListEntry`).
    pub pending: LIST_ENTRY,
    pub pending_count: u32,
    /// IRP_MJ_CLEANUP ran: later reads fail instead of pending forever.
    pub cleaned_up: bool,
}

impl HandleContext {
    /// The context of the file object an IRP was sent for.
    ///
    /// # Safety
    /// `file` is a file object of this driver's device, opened successfully.
    pub unsafe fn of(file: PFILE_OBJECT) -> *mut HandleContext {
        // SAFETY: guaranteed by the caller; CREATE stored the context.
        unsafe { (*file).FsContext.cast() }
    }

    /// The context of the file object a request was sent for, if it has one: a
    /// kernel-mode caller can send an IRP with no FileObject, or with a file object that
    /// never went through IRP_MJ_CREATE (FsContext NULL). CREATE is the only writer of a
    /// non-NULL context of our file objects.
    pub fn of_request(irp: &Irp) -> Option<*mut HandleContext> {
        let context = irp.file_context().cast::<HandleContext>();
        (!context.is_null()).then_some(context)
    }

    /// The context from a link in the device's active list (CONTAINING_RECORD).
    ///
    /// # Safety
    /// `link` is the `active` field of a live HandleContext.
    pub unsafe fn from_active(link: PLIST_ENTRY) -> *mut HandleContext {
        // SAFETY: guaranteed by the caller.
        unsafe { link.byte_sub(core::mem::offset_of!(HandleContext, active)).cast() }
    }
}

/// `Irp->Tail.Overlay.ListEntry`, which the driver may use while it owns the IRP.
///
/// # Safety
/// `irp` is valid.
pub unsafe fn irp_entry(irp: PIRP) -> PLIST_ENTRY {
    // SAFETY: guaranteed by the caller.
    unsafe { &raw mut (*irp).Tail.Overlay.__bindgen_anon_2.ListEntry }
}

/// The IRP whose `Tail.Overlay.ListEntry` is `entry` (CONTAINING_RECORD).
///
/// # Safety
/// `entry` is the list entry of an IRP.
pub unsafe fn irp_of(entry: PLIST_ENTRY) -> PIRP {
    // A field path, not bindgen's numbered type names: those differ between header sets.
    const OFFSET: usize = core::mem::offset_of!(crate::kernel::sys::IRP, Tail.Overlay.__bindgen_anon_2.ListEntry);
    // SAFETY: guaranteed by the caller.
    unsafe { entry.byte_sub(OFFSET).cast() }
}

/// `Irp->Tail.Overlay.DriverContext[0]`: the enqueue time, for the watchdog.
///
/// # Safety
/// `irp` is valid and owned by the driver (queued or being queued).
pub unsafe fn enqueue_time(irp: PIRP) -> *mut i64 {
    // SAFETY: guaranteed by the caller; DriverContext is the driver's while it owns the IRP.
    unsafe { (&raw mut (*irp).Tail.Overlay.__bindgen_anon_1.__bindgen_anon_1.DriverContext[0]).cast() }
}

/// Queues `irp` on `handle` (guard held). Marks it pending first, so the caller returns
/// STATUS_PENDING in every case: the [`Pending`] token is how it does. A read cancelled
/// before it could be queued goes to `cancelled_early`, for the caller to complete
/// after releasing the guard.
///
/// # Safety
/// The caller holds the device guard, and `handle` is the IRP's context.
pub unsafe fn enqueue(
    shared: &mut Shared,
    handle: *mut HandleContext,
    mut irp: Irp,
    now: i64,
    cancelled_early: &mut Completions,
) -> Pending {
    let pending = irp.mark_pending();
    let irp_ref = irp.as_raw();
    // SAFETY: we own the IRP; its driver context is ours while we do.
    unsafe { *enqueue_time(irp_ref) = now };
    // SAFETY: as above; from here the cancel routine may run, and it takes the guard
    // (held by the caller) before touching the list.
    unsafe { set_cancel_routine(irp_ref, Some(cancel_read)) };
    // IoCancelIrp sets Cancel before it takes the routine: if it ran before we set ours,
    // it found none, and the cancel is ours to carry out.
    // SAFETY: the IRP is not completed (the cancel routine needs the guard we hold).
    let cancelled = !cfg!(stagedrv_mutant = "skip_cancel_recheck") && unsafe { irp_cancel_requested(irp_ref) };
    // SAFETY: as above.
    if cancelled && unsafe { set_cancel_routine(irp_ref, None) }.is_some() {
        // Cancelled before queued and the routine was not called: ours to complete.
        crate::device::count(&mut shared.stats.reads_cancelled);
        cancelled_early.push(irp, STATUS_CANCELLED, 0);
        return pending;
    }
    // The queue owns the IRP from here; `dequeue` or the cancel routine gives it back.
    let irp = irp.into_raw().as_ptr();
    // Linked even if the cancel routine is about to run: its unlink then finds it.
    // SAFETY: the guard protects the handle's list and the active list; the entry is
    // the driver's now.
    unsafe {
        if list::is_empty(&raw const (*handle).pending) {
            list::insert_tail(&raw mut shared.active, &raw mut (*handle).active);
        }
        list::insert_tail(&raw mut (*handle).pending, irp_entry(irp));
        (*handle).pending_count = (*handle).pending_count.saturating_add(1);
    }
    crate::device::count(&mut shared.stats.reads_pending);
    pending
}

/// Removes the oldest pending read of `handle` that the caller can own, if `take`
/// accepts it. The one removal path for every consumer (guard held).
///
/// # Safety
/// The caller holds the device guard and `handle` is a live context of that device.
pub unsafe fn dequeue(shared: &mut Shared, handle: *mut HandleContext, take: impl Fn(PIRP) -> bool) -> Option<Irp> {
    loop {
        // SAFETY: the guard protects the list.
        let head = unsafe { &raw mut (*handle).pending };
        // SAFETY: as above.
        if unsafe { list::is_empty(head) } {
            return None;
        }
        // SAFETY: a non-empty list's first entry is a queued IRP.
        let irp = unsafe { irp_of((*head).Flink) };
        if !take(irp) {
            return None;
        }
        // SAFETY: a queued IRP of `handle`, under the guard.
        unsafe { unlink(shared, handle, irp) };
        // SAFETY: the IRP is not completed: only its cancel routine could complete it,
        // and that needs the routine we are about to take.
        if unsafe { set_cancel_routine(irp, None) }.is_some() || cfg!(stagedrv_mutant = "complete_after_null") {
            // SAFETY: unlinked and its cancel routine taken back: the IRP is ours again.
            return NonNull::new(irp).map(|irp| unsafe { Irp::from_raw(irp) });
        }
        // The cancel routine is running or about to: it owns the IRP.
    }
}

/// Unlinks a queued IRP from its handle's queue and self-links its entry; the handle
/// leaves the active list if that was its last read.
///
/// # Safety
/// The caller holds the device guard; `irp` is linked on the queue of `handle`.
unsafe fn unlink(shared: &mut Shared, handle: *mut HandleContext, irp: PIRP) {
    // SAFETY: guaranteed by the caller; the guard protects both lists.
    unsafe {
        list::remove(irp_entry(irp));
        (*handle).pending_count = (*handle).pending_count.saturating_sub(1);
        if list::is_empty(&raw const (*handle).pending) {
            list::remove(&raw mut (*handle).active);
        }
    }
    crate::device::uncount(&mut shared.stats.reads_pending);
}

/// IRPs to complete once the guard is released, in the order they were added. Chained
/// through their own `Tail.Overlay.ListEntry.Flink` (the driver owns these IRPs), so
/// the list holds no pointer to itself and may move freely.
pub struct Completions {
    first: PIRP,
    last: PIRP,
}

impl Completions {
    pub const fn new() -> Self {
        Self { first: core::ptr::null_mut(), last: core::ptr::null_mut() }
    }

    /// Adds an IRP, with its final status. The list owns it until `complete_all`.
    pub fn push(&mut self, irp: Irp, status: NTSTATUS, information: u64) {
        let irp = irp.into_raw().as_ptr();
        // SAFETY: the caller owns the IRP; its IoStatus and list entry are ours to use.
        unsafe {
            (*irp).IoStatus.__bindgen_anon_1.Status = status;
            (*irp).IoStatus.Information = information;
            (*irp_entry(irp)).Flink = core::ptr::null_mut();
        }
        if self.last.is_null() {
            self.first = irp;
        } else {
            // SAFETY: `last` is an IRP pushed earlier and still owned by this list.
            unsafe { (*irp_entry(self.last)).Flink = irp_entry(irp) };
        }
        self.last = irp;
    }

    /// Completes every IRP, oldest first. Call with no spin lock held.
    pub fn complete_all(self) {
        let mut next = self.first;
        while !next.is_null() {
            let irp = next;
            // SAFETY: every IRP on the chain was pushed by `push` and is still ours; the
            // link is read before completion hands the IRP back.
            let (mut link, status, information) = unsafe {
                ((*irp_entry(irp)).Flink, (*irp).IoStatus.__bindgen_anon_1.Status, (*irp).IoStatus.Information)
            };
            if let Some(owned) = NonNull::new(irp) {
                // SAFETY: pushed as an owned `Irp`, given back once (but see the mutant).
                let _ = unsafe { Irp::from_raw(owned) }.complete(status, information);
            }
            if READ_LINK_AFTER_COMPLETE {
                // SAFETY: none: the IRP was handed back; the mutant's bug.
                link = unsafe { (*irp_entry(irp)).Flink };
            }
            next = if link.is_null() {
                core::ptr::null_mut()
            } else {
                // SAFETY: a non-NULL link is the entry of the next pushed IRP.
                unsafe { irp_of(link) }
            };
        }
    }
}

/// Drains every pending read of `handle` as cancelled (cleanup, close).
///
/// # Safety
/// The caller holds the device guard and `handle` is live.
pub unsafe fn drain(shared: &mut Shared, handle: *mut HandleContext, out: &mut Completions) {
    // SAFETY: forwarded.
    while let Some(irp) = unsafe { dequeue(shared, handle, |_| true) } {
        crate::device::count(&mut shared.stats.reads_cancelled);
        out.push(irp, STATUS_CANCELLED, 0);
    }
}

/// The cancel routine of a queued read. Called with the cancel spin lock held.
unsafe extern "C" fn cancel_read(device: PDEVICE_OBJECT, irp: PIRP) {
    // SAFETY: IoCancelIrp stored the IRQL to return to; we release the lock first.
    unsafe { IoReleaseCancelSpinLock((*irp).CancelIrql) };
    // SAFETY: the device belongs to this driver and is live while it has IRPs.
    let extension = unsafe { DeviceObject::<DeviceExtension>::from_raw(device).extension() };
    // SAFETY: the IRP is outstanding, so its file object and context are live.
    let handle = unsafe { HandleContext::of((*current_stack_location(irp)).FileObject) };
    {
        let mut shared = extension.shared.lock();
        // SAFETY: under the guard; a dequeuer that got here first self-linked the entry,
        // and the context is touched only while the entry is still linked on its queue.
        unsafe {
            if !list::is_empty(irp_entry(irp)) {
                unlink(&mut shared, handle, irp);
            }
        }
        crate::device::count(&mut shared.stats.reads_cancelled);
    }
    if let Some(owned) = NonNull::new(irp) {
        // SAFETY: the cancel routine owns the IRP once IoCancelIrp took the routine.
        let _ = unsafe { Irp::from_raw(owned) }.complete(STATUS_CANCELLED, 0);
    }
}

/// Mutant `link_after_complete` (tests/mutants.rs): [`Completions::complete_all`]
/// reads the next link from an IRP it already completed. Windows reuses `Irp->Tail`
/// for the completion APC (the link reads NULL) or has freed the IRP.
const READ_LINK_AFTER_COMPLETE: bool = cfg!(stagedrv_mutant = "link_after_complete");
