//! Pending IRPs kept per file object, with the cancel protocol: the I/O manager's
//! cancel-safe queue (IoCsq) done by hand, because Wine 8.0 stubs the `IoCsq*` routines
//! (tests/wine/wine-safe-ddis.txt).
//!
//! A [`FileContext<C>`] is the driver's context of one open file object
//! (`FileObject->FsContext`), in nonpaged pool from IRP_MJ_CREATE to IRP_MJ_CLOSE. Next
//! to the driver's `C` it holds that file's queue of IRPs (oldest first, linked through
//! `Irp->Tail.Overlay.ListEntry`) and a link in its device's [`FileQueues`]: the list
//! of the files that have IRPs queued, in the order they are served. A file is on that
//! list exactly while its queue is non-empty, so walking it costs nothing for idle
//! files.
//!
//! The protocol, for every IRP:
//! - [`FileQueues::enqueue`]: set the cancel routine, re-check `Irp->Cancel` (IoCancelIrp
//!   sets it before it takes the routine), then link the IRP;
//! - every removal (serve, expire, drain): unlink, self-link the entry, then take the
//!   cancel routine back with IoSetCancelRoutine(NULL). NULL means the cancel routine
//!   owns the IRP: it will find the entry self-linked, and the remover must not touch
//!   the IRP again;
//! - the cancel adapter ([`crate::kernel::irp`]) releases the cancel spin lock and hands
//!   the safe routine a [`CancelledIrp`], which only [`FileQueues::take_cancelled`]
//!   turns into an [`Irp`], unlinking it first if it is still linked.
//!
//! All of it runs under the lock that protects the `FileQueues` (`&mut self`).

use core::any::TypeId;
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ptr::NonNull;

use super::irp::{CancelRoutine, CancelledIrp, Irp, cancel_routine, irp_of, list_entry, stamp_slot};
use super::list::{self, RawList};
use super::pool::{Allocator, PoolBuf};
use super::sys::{IRP, IRP_MJ_CLOSE, PIRP, ULONG, irp_cancel_requested, set_cancel_routine};

/// The memory behind a [`FileContext<C>`].
///
/// # Invariants
/// `type_id` is `TypeId::of::<C>()` and sits at offset 0 (`repr(C)`), so it can be read
/// through the FsContext of any file context to learn its type. `irps` and `active`
/// are touched only by a [`FileQueues`] under its lock.
#[repr(C)]
struct Node<C> {
    type_id: TypeId,
    /// The pool tag the node was allocated with, for the free.
    tag: ULONG,
    /// This file's queued IRPs, oldest first.
    irps: UnsafeCell<RawList>,
    /// The link on its device's list of files with queued IRPs.
    active: UnsafeCell<ActiveLink<C>>,
    value: C,
}

struct ActiveLink<C> {
    prev: *mut Node<C>,
    next: *mut Node<C>,
    linked: bool,
}

/// A file object's context, owned: made in IRP_MJ_CREATE, attached to the file object
/// with [`Irp::attach_file_context`], detached in IRP_MJ_CLOSE and freed.
///
/// # Invariants
/// `node` is initialised. While attached, the file object's FsContext points to it.
pub struct FileContext<C: 'static> {
    node: PoolBuf<Node<C>>,
}

impl<C: Sync + 'static> FileContext<C> {
    /// `value` in nonpaged pool with `tag`; `None` if the pool is exhausted. IRQL <=
    /// DISPATCH_LEVEL.
    pub fn new(allocator: Allocator, tag: ULONG, value: C) -> Option<Self> {
        super::irql::assert_at_most_dispatch();
        let node = PoolBuf::<Node<C>>::zeroed(allocator, 1, tag)?;
        let initial = Node {
            type_id: TypeId::of::<C>(),
            tag,
            irps: UnsafeCell::new(RawList::new()),
            active: UnsafeCell::new(ActiveLink {
                prev: core::ptr::null_mut(),
                next: core::ptr::null_mut(),
                linked: false,
            }),
            value,
        };
        // SAFETY: a fresh, aligned block of one `Node<C>` (pool is 16-byte aligned);
        // writing initialises it.
        unsafe { node.as_ptr().write(initial) };
        // INVARIANT: initialised above; not attached yet.
        Some(Self { node })
    }

    /// Frees the context. One still holding IRPs (a driver bug: CLOSE drains first) is
    /// left allocated rather than freed under its queue.
    pub fn free(self) {
        let node = self.node.as_ptr();
        // SAFETY: detached, so only this owner reaches the node.
        let idle = unsafe { (*(*node).irps.get()).is_empty() && !(*(*node).active.get()).linked };
        debug_assert!(idle, "a file context freed with IRPs queued");
        if !idle {
            let _ = self.node.into_raw();
            return;
        }
        // SAFETY: initialised (type invariant) and dropped once; the block goes next.
        unsafe { core::ptr::drop_in_place(node) };
        self.node.free();
    }
}

impl Irp {
    /// Makes `context` the file object's context (FsContext).
    ///
    /// # Errors
    /// Gives the context back if the IRP is not an IRP_MJ_CREATE with a file object
    /// that has no context yet.
    pub fn attach_file_context<C: 'static>(&mut self, context: FileContext<C>) -> Result<(), FileContext<C>> {
        let file = self.file_object();
        if self.major_function() != super::sys::IRP_MJ_CREATE || file.is_null() {
            return Err(context);
        }
        // SAFETY: the file object of an owned IRP is live; a CREATE's FsContext is NULL
        // until the driver sets it.
        if !unsafe { (*file).FsContext }.is_null() {
            return Err(context);
        }
        // SAFETY: as above; the driver owns FsContext of its file objects.
        unsafe { (*file).FsContext = context.node.into_raw().as_ptr().cast() };
        Ok(())
    }

    /// The file object's context, if it has one of type `C`: a kernel-mode caller can
    /// send an IRP with no file object, or with one that never went through
    /// IRP_MJ_CREATE. Valid while the IRP is owned: IRP_MJ_CLOSE, which frees it, comes
    /// only after every IRP of the file object has completed.
    #[must_use]
    pub fn file_context<C: Sync + 'static>(&self) -> Option<&C> {
        // SAFETY: an owned IRP's file object and its context are live while we own it.
        node_of::<C>(self.as_raw()).map(|node| unsafe { &(*node.as_ptr()).value })
    }

    /// Takes the context back from the file object of an IRP_MJ_CLOSE (the last
    /// request a file object receives); `None` for other requests or without one.
    pub fn detach_file_context<C: Sync + 'static>(&mut self) -> Option<FileContext<C>> {
        if self.major_function() != IRP_MJ_CLOSE {
            return None;
        }
        let node = node_of::<C>(self.as_raw())?;
        // SAFETY: node_of found a file object and an attached context.
        unsafe { (*self.file_object()).FsContext = core::ptr::null_mut() };
        // SAFETY: attached by `attach_file_context` from a `FileContext<C>` (the type
        // check in `node_of`), detached once: CLOSE is the file object's last request.
        Some(FileContext { node: unsafe { PoolBuf::from_raw(node, 1, (*node.as_ptr()).tag) } })
    }
}

/// The node of `irp`'s file context, if it has one of type `C`.
fn node_of<C: 'static>(irp: PIRP) -> Option<NonNull<Node<C>>> {
    // SAFETY: `irp` is a live IRP the caller owns; its stack location is current.
    let file = unsafe { (*super::sys::current_stack_location(irp)).FileObject };
    if file.is_null() {
        return None;
    }
    // SAFETY: the file object of an owned IRP is live.
    let context = NonNull::new(unsafe { (*file).FsContext })?;
    // SAFETY: the driver's FsContexts are set only by `attach_file_context`, so a
    // non-NULL one is a `Node<_>`, whose TypeId is at offset 0.
    let type_id = unsafe { context.cast::<TypeId>().read() };
    (type_id == TypeId::of::<C>()).then_some(context.cast())
}

/// What leaving a queue made of an IRP.
pub enum Unlinked {
    /// The cancel routine was taken back: the IRP is the caller's.
    Owned(Irp),
    /// The cancel routine is running or about to: it owns the IRP, and will find it
    /// unlinked. The caller counts it as cancelled.
    Cancelling,
}

/// A queued IRP, as a remover sees it before deciding to take it.
pub struct QueuedIrp(NonNull<IRP>);

impl QueuedIrp {
    /// The value given to [`FileQueues::enqueue`] (the time it was queued).
    #[must_use]
    pub fn stamp(&self) -> i64 {
        // SAFETY: a queued IRP is live and its DriverContext is the queue's.
        unsafe { stamp_slot(self.0.as_ptr()).read() }
    }
}

/// One step of [`FileQueues::serve_front`].
pub struct Served {
    /// The oldest read of the file at the front, if one could be taken.
    pub irp: Option<Irp>,
    /// Reads unlinked on the way whose cancel routine owns them.
    pub cancelling: u32,
}

/// The files of one device that have IRPs queued, and their queues.
///
/// # Invariants
/// `first`..`last` is a NULL-terminated chain (through `Node::active`) of the attached
/// file contexts of this device whose queues are non-empty, each with `linked` set;
/// every IRP on those queues is an uncompleted IRP of that file object whose cancel
/// routine is `cancel_routine::<R>()` or has been called, and whose device extension
/// is an `R::Extension`. A file context is freed only when unlinked and empty
/// ([`FileContext::free`]), so the chain's nodes are live. The caller's lock serialises
/// every method (`&mut self` exists only under it); a file context is only ever queued
/// on the `FileQueues` of its own device, which the dispatch adapter's pairing of a
/// device with its IRPs gives.
pub struct FileQueues<C: 'static, R: CancelRoutine> {
    first: *mut Node<C>,
    last: *mut Node<C>,
    _routine: PhantomData<R>,
}

// SAFETY: the queues own their IRPs and refer to file contexts that live until CLOSE;
// none of it is tied to a thread.
unsafe impl<C: Sync + 'static, R: CancelRoutine> Send for FileQueues<C, R> {}

impl<C: Sync + 'static, R: CancelRoutine> FileQueues<C, R> {
    /// No file has IRPs queued.
    pub const fn new() -> Self {
        Self { first: core::ptr::null_mut(), last: core::ptr::null_mut(), _routine: PhantomData }
    }

    /// IRPs queued on `irp`'s file object (0 without a file context of type `C`).
    #[must_use]
    // `&self` is the evidence that the lock is held, not data the count needs.
    #[allow(clippy::unused_self)]
    pub fn queued_on_file_of(&self, irp: &Irp) -> u32 {
        node_of::<C>(irp.as_raw()).map_or(0, |node| {
            // SAFETY: the owned IRP keeps its context live; `&self` means our lock is
            // held, which serialises the queue (type invariant).
            unsafe { (*(*node.as_ptr()).irps.get()).len() }
        })
    }

    /// Queues an IRP the caller has marked pending, with `stamp` kept beside it. Gives
    /// it back if it was cancelled before it could be queued and the cancel routine
    /// was taken back (the caller completes it as cancelled), or if it is not a request
    /// of an `R::Extension` device with a file context of type `C`.
    pub fn enqueue(&mut self, mut irp: Irp, stamp: i64) -> Result<(), Irp> {
        let Some(node) = node_of::<C>(irp.as_raw()) else { return Err(irp) };
        if irp.extension_type() != Some(TypeId::of::<R::Extension>()) {
            debug_assert!(false, "an IRP queued with another device's cancel routine");
            return Err(irp);
        }
        irp.set_stamp(stamp);
        let raw = irp.as_raw();
        // SAFETY: we own the IRP; from here the cancel routine may run, and it takes
        // the caller's lock (held) before it touches the queue.
        unsafe { set_cancel_routine(raw, Some(cancel_routine::<R>())) };
        // IoCancelIrp sets Cancel before it takes the routine: if it ran before we set
        // ours, it found none, and the cancel is ours to carry out.
        // SAFETY: the IRP is not completed (its cancel routine needs our lock).
        let cancelled = RECHECK_CANCEL && unsafe { irp_cancel_requested(raw) };
        // SAFETY: as above.
        if cancelled && unsafe { set_cancel_routine(raw, None) }.is_some() {
            return Err(irp);
        }
        // Linked even if the cancel routine is about to run: it unlinks it.
        let raw = irp.into_raw().as_ptr();
        // SAFETY: the IRP stays valid until completed, which needs it unlinked first;
        // the context is live (an IRP of its file is outstanding); our lock is held.
        unsafe {
            let irps = &mut *(*node.as_ptr()).irps.get();
            if irps.is_empty() {
                self.join(node.as_ptr());
            }
            irps.push_back(list_entry(raw));
        }
        Ok(())
    }

    /// Serves the file at the front: takes its oldest read the caller can own and, if
    /// it has more, moves it to the back. `None` when no file has reads queued.
    pub fn serve_front(&mut self) -> Option<Served> {
        let node = NonNull::new(self.first)?;
        let mut cancelling: u32 = 0;
        let irp = loop {
            // SAFETY: a node on the chain is live (type invariant).
            match unsafe { self.pop_front_of(node, |_| true) } {
                None => break None,
                Some(Unlinked::Owned(irp)) => break Some(irp),
                Some(Unlinked::Cancelling) => cancelling = cancelling.saturating_add(1),
            }
        };
        // SAFETY: as above; a node still linked keeps its place, moved to the back.
        unsafe {
            if (*(*node.as_ptr()).active.get()).linked {
                self.leave(node.as_ptr());
                self.join(node.as_ptr());
            }
        }
        Some(Served { irp, cancelling })
    }

    /// Walks every file with reads queued and takes, oldest first, each read that
    /// `expired` accepts, handing it to `out`. Returns the files visited and the reads
    /// unlinked whose cancel routine owns them.
    pub fn take_each(&mut self, expired: impl Fn(&QueuedIrp) -> bool, mut out: impl FnMut(Irp)) -> (u64, u32) {
        let (mut visited, mut cancelling): (u64, u32) = (0, 0);
        let mut node = self.first;
        while let Some(current) = NonNull::new(node) {
            visited = visited.wrapping_add(1);
            // Read first: a file whose queue empties below leaves the chain.
            // SAFETY: a node on the chain is live (type invariant).
            node = unsafe { (*(*current.as_ptr()).active.get()).next };
            // SAFETY: as above.
            while let Some(unlinked) = unsafe { self.pop_front_of(current, &expired) } {
                match unlinked {
                    Unlinked::Owned(irp) => out(irp),
                    Unlinked::Cancelling => cancelling = cancelling.saturating_add(1),
                }
            }
        }
        (visited, cancelling)
    }

    /// Unlinks every read queued on `irp`'s file object (cleanup, close), handing each
    /// to `out`.
    pub fn drain_file_of(&mut self, irp: &Irp, mut out: impl FnMut(Unlinked)) {
        let Some(node) = node_of::<C>(irp.as_raw()) else { return };
        // SAFETY: the owned IRP keeps the context live; our lock is held.
        while let Some(unlinked) = unsafe { self.pop_front_of(node, |_| true) } {
            out(unlinked);
        }
    }

    /// Turns a cancelled IRP into an owned one, unlinking it if it is still queued;
    /// the flag says whether it was (if not, a remover unlinked it and counted it).
    // By value: the cancelled IRP is used up, and only this makes an `Irp` of it.
    #[allow(clippy::needless_pass_by_value)]
    pub fn take_cancelled(&mut self, irp: CancelledIrp) -> (Irp, bool) {
        let CancelledIrp { raw: owned, extension } = irp;
        let raw = owned.as_ptr();
        // SAFETY: the cancel routine owns the IRP (CancelledIrp invariant); its entry is
        // the queue's and our lock is held.
        let linked = unsafe { list::is_linked(list_entry(raw)) };
        if linked && let Some(node) = node_of::<C>(raw) {
            // SAFETY: a linked IRP is on its file's queue; the context is live while the
            // IRP is outstanding.
            unsafe { self.unlink(node, raw) };
        }
        // SAFETY: unlinked, with its cancel routine spent: the IRP is ours alone.
        (unsafe { Irp::from_raw(owned, Some(extension)) }, linked)
    }

    /// Removes the oldest read of `node` that `take` accepts, if any.
    ///
    /// # Safety
    /// `node` is live and is a file context of this device; our lock is held.
    unsafe fn pop_front_of(&mut self, node: NonNull<Node<C>>, take: impl Fn(&QueuedIrp) -> bool) -> Option<Unlinked> {
        // SAFETY: guaranteed by the caller.
        let entry = unsafe { (*(*node.as_ptr()).irps.get()).first() };
        if entry.is_null() {
            return None;
        }
        // SAFETY: a queued entry is an IRP's list entry.
        let raw = unsafe { irp_of(entry) };
        let queued = QueuedIrp(NonNull::new(raw)?);
        if !take(&queued) {
            return None;
        }
        // SAFETY: a queued IRP of `node`, under our lock.
        unsafe { self.unlink(node, raw) };
        // SAFETY: the IRP is not completed: only its cancel routine could complete it,
        // and that needs the routine we are about to take, or our lock.
        if unsafe { set_cancel_routine(raw, None) }.is_some() || COMPLETE_AFTER_NULL {
            // SAFETY: unlinked and its cancel routine taken back: the IRP is ours again,
            // sent to an `R::Extension` device (type invariant).
            return Some(Unlinked::Owned(unsafe { Irp::from_raw(queued.0, Some(TypeId::of::<R::Extension>())) }));
        }
        Some(Unlinked::Cancelling)
    }

    /// Unlinks a queued IRP from its file's queue and self-links its entry; the file
    /// leaves the chain if that was its last IRP.
    ///
    /// # Safety
    /// `node` is live and a file context of this device; `raw` is on its queue, or
    /// self-linked; our lock is held.
    unsafe fn unlink(&mut self, node: NonNull<Node<C>>, raw: PIRP) {
        // SAFETY: guaranteed by the caller; neighbours on the queue are live IRPs.
        unsafe {
            let irps = &mut *(*node.as_ptr()).irps.get();
            let _ = irps.remove(list_entry(raw));
            if irps.is_empty() && (*(*node.as_ptr()).active.get()).linked {
                self.leave(node.as_ptr());
            }
        }
    }

    /// Links `node` at the back of the chain.
    ///
    /// # Safety
    /// `node` is live, not on the chain; our lock is held.
    unsafe fn join(&mut self, node: *mut Node<C>) {
        // SAFETY: guaranteed by the caller; `last` is on the chain (type invariant).
        unsafe {
            let link = &mut *(*node).active.get();
            *link = ActiveLink { prev: self.last, next: core::ptr::null_mut(), linked: true };
            if self.last.is_null() {
                self.first = node;
            } else {
                (*(*self.last).active.get()).next = node;
            }
        }
        self.last = node;
    }

    /// Unlinks `node` from the chain.
    ///
    /// # Safety
    /// `node` is live and on the chain; our lock is held.
    unsafe fn leave(&mut self, node: *mut Node<C>) {
        // SAFETY: guaranteed by the caller; neighbours on the chain are live.
        unsafe {
            let link = &mut *(*node).active.get();
            let (prev, next) = (link.prev, link.next);
            if (prev.is_null() && self.first != node) || (next.is_null() && self.last != node) {
                debug_assert!(false, "a file context unlinked from another device's queues");
                return;
            }
            if prev.is_null() {
                self.first = next;
            } else {
                (*(*prev).active.get()).next = next;
            }
            if next.is_null() {
                self.last = prev;
            } else {
                (*(*next).active.get()).prev = prev;
            }
            *link = ActiveLink { prev: core::ptr::null_mut(), next: core::ptr::null_mut(), linked: false };
        }
    }
}

/// Mutant `skip_cancel_recheck` (tests/mutants.rs): [`FileQueues::enqueue`] does not
/// re-check `Irp->Cancel` after setting the cancel routine, so a read cancelled just
/// before it was queued pends until something else completes it.
const RECHECK_CANCEL: bool = !cfg!(stagedrv_mutant = "skip_cancel_recheck");

/// Mutant `complete_after_null` (tests/mutants.rs): a remover takes an IRP whose cancel
/// routine IoSetCancelRoutine(NULL) said was already running, so both complete it.
const COMPLETE_AFTER_NULL: bool = cfg!(stagedrv_mutant = "complete_after_null");
