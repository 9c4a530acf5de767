//! The owned IRP, the one dispatch adapter, the one cancel adapter, and the list of
//! IRPs to complete once a lock is released.
//!
//! A dispatch routine receives an [`Irp`] by value and returns a [`Dispatched`]. The
//! only ways to get a `Dispatched` are [`Irp::complete`], which consumes the IRP, and
//! the [`Pending`] token that marking the IRP pending (`IoMarkIrpPending`) returns —
//! which only the pending-read queue does, as it takes the IRP. So these cannot be
//! written:
//!
//! Completing an IRP twice (the IRP moved into the first `complete`):
//!
//! ```compile_fail,E0382
//! use stagedrv::kernel::irp::{Dispatched, Irp};
//! use stagedrv::kernel::sys::STATUS_SUCCESS;
//!
//! fn dispatch_twice(irp: Irp) -> Dispatched {
//!     let _ = irp.complete(STATUS_SUCCESS, 0);
//!     irp.complete(STATUS_SUCCESS, 0)
//! }
//! ```
//!
//! Returning pending without queueing (and so without IoMarkIrpPending): no code
//! outside this module can make a `Pending` token.
//!
//! ```compile_fail,E0423
//! use stagedrv::kernel::irp::{Dispatched, Irp, Pending};
//!
//! fn dispatch_forgetting(irp: Irp) -> Dispatched {
//!     core::mem::forget(irp);
//!     Dispatched::Pending(Pending(()))
//! }
//! ```
//!
//! The same routine written correctly compiles:
//!
//! ```
//! use stagedrv::kernel::irp::{Dispatched, Irp};
//! use stagedrv::kernel::sys::STATUS_SUCCESS;
//!
//! fn dispatch_once(irp: Irp) -> Dispatched {
//!     irp.complete(STATUS_SUCCESS, 0)
//! }
//! ```

use core::any::TypeId;
use core::ptr::NonNull;

use super::list;
use super::sys::{
    self, IO_STACK_LOCATION, IRP, IRP_MJ_DEVICE_CONTROL, IRP_MJ_READ, IoReleaseCancelSpinLock, NTSTATUS,
    PDEVICE_OBJECT, PDRIVER_DISPATCH, PFILE_OBJECT, PIRP, PLIST_ENTRY, STATUS_PENDING,
};

/// An IRP this driver owns and must complete or queue.
///
/// # Invariants
/// `raw` points to a live IRP sent to one of this driver's devices, which use buffered
/// I/O (DO_BUFFERED_IO); it is not completed, and no cancel routine is set that could
/// complete it. At most one `Irp` exists for an IRP: the type is neither `Copy` nor
/// `Clone`, and code that holds an IRP by pointer (the queue) gives the `Irp` up.
/// `extension`, when known, is the type of the device extension of the device the IRP
/// was sent to (the dispatch adapter's `R::Extension`).
pub struct Irp {
    raw: NonNull<IRP>,
    extension: Option<TypeId>,
}

/// A completed IRP's status, returned to the I/O manager.
pub struct Completed(NTSTATUS);

/// Evidence that an IRP was marked pending (IoMarkIrpPending) and handed to the queue.
pub struct Pending(());

/// What a dispatch routine did with its IRP.
pub enum Dispatched {
    /// Completed with this status.
    Completed(Completed),
    /// Marked pending and queued: the routine returns STATUS_PENDING.
    Pending(Pending),
}

impl Dispatched {
    /// The dispatch routine's return value.
    #[must_use]
    pub fn status(&self) -> NTSTATUS {
        match self {
            Self::Completed(Completed(status)) => *status,
            Self::Pending(_) => STATUS_PENDING,
        }
    }
}

impl From<Pending> for Dispatched {
    fn from(pending: Pending) -> Self {
        Self::Pending(pending)
    }
}

impl Irp {
    /// Takes ownership of a raw IRP.
    ///
    /// # Safety
    /// `irp` satisfies the type invariants, and the caller gives up its pointer's
    /// ownership (it no longer completes the IRP itself).
    pub(crate) unsafe fn from_raw(irp: NonNull<IRP>, extension: Option<TypeId>) -> Self {
        // INVARIANT: guaranteed by the caller.
        Self { raw: irp, extension }
    }

    /// The type of the extension of the device the IRP was sent to, if known.
    pub(crate) fn extension_type(&self) -> Option<TypeId> {
        self.extension
    }

    /// Gives the IRP's ownership to the caller (the queue links it by pointer).
    pub(crate) fn into_raw(self) -> NonNull<IRP> {
        self.raw
    }

    /// The raw IRP, for the queue's own fields of it (list entry, driver context).
    pub(crate) fn as_raw(&self) -> PIRP {
        self.raw.as_ptr()
    }

    fn stack(&self) -> &IO_STACK_LOCATION {
        // SAFETY: a live IRP (type invariant) sent to our device has a current stack
        // location, valid while we own the IRP.
        unsafe { &*sys::current_stack_location(self.raw.as_ptr()) }
    }

    /// The request's file object (NULL for a kernel caller's IRP without one); live
    /// while the IRP is owned.
    pub(crate) fn file_object(&self) -> PFILE_OBJECT {
        self.stack().FileObject
    }

    /// The request's major function code (IRP_MJ_*).
    pub(crate) fn major_function(&self) -> u32 {
        u32::from(self.stack().MajorFunction)
    }

    /// Whether the open names something below the device (`\\.\StageDrv0\x`); `false`
    /// without a file object.
    #[must_use]
    pub fn opens_a_subpath(&self) -> bool {
        let file = self.stack().FileObject;
        // SAFETY: the file object of an IRP we own is live while we own it.
        !file.is_null() && unsafe { (*file).FileName.Length } != 0
    }

    /// `Parameters.Read.Length` of a read; 0 for any other request.
    #[must_use]
    pub fn read_length(&self) -> u32 {
        let stack = self.stack();
        if u32::from(stack.MajorFunction) != IRP_MJ_READ {
            return 0;
        }
        // SAFETY: a read's parameters are the `Read` member of the union.
        unsafe { stack.Parameters.Read.Length }
    }

    /// `(IoControlCode, OutputBufferLength)` of a device control; `None` otherwise.
    #[must_use]
    pub fn device_control(&self) -> Option<(u32, u32)> {
        let stack = self.stack();
        if u32::from(stack.MajorFunction) != IRP_MJ_DEVICE_CONTROL {
            return None;
        }
        // SAFETY: a device control's parameters are the `DeviceIoControl` member.
        let parameters = unsafe { &stack.Parameters.DeviceIoControl };
        Some((parameters.IoControlCode, parameters.OutputBufferLength))
    }

    /// Bytes the caller's output buffer holds: a read's length or a device control's
    /// output length (both buffered: the system buffer holds at least that many).
    fn output_capacity(&self) -> usize {
        let length = self.device_control().map_or_else(|| self.read_length(), |(_, output)| output);
        length as usize
    }

    /// Copies `value` into the system buffer at byte `offset`; `false` (nothing
    /// written) if it does not fit in the caller's output buffer. `T` is a `#[repr(C)]`
    /// type without padding (the protocol's records and counters), so every byte the
    /// caller receives is a value's byte.
    pub fn write_output<T: Copy>(&mut self, offset: usize, value: &T) -> bool {
        let size = size_of::<T>();
        if offset.checked_add(size).is_none_or(|end| end > self.output_capacity()) {
            return false;
        }
        // SAFETY: buffered I/O (type invariant): SystemBuffer holds `output_capacity`
        // bytes, which cover `offset..offset + size`; it may be unaligned, so bytes are
        // copied, and a driver's value cannot overlap the I/O manager's buffer.
        unsafe {
            let buffer = (*self.raw.as_ptr()).AssociatedIrp.SystemBuffer.cast::<u8>();
            core::ptr::copy_nonoverlapping(core::ptr::from_ref(value).cast::<u8>(), buffer.add(offset), size);
        }
        true
    }

    /// `Irp->Tail.Overlay.DriverContext[0]`, which the driver may use while it owns
    /// the IRP: the queue keeps a caller's value there (the time it was queued).
    pub(crate) fn set_stamp(&mut self, stamp: i64) {
        // SAFETY: we own the IRP; DriverContext is the driver's while it does.
        unsafe { stamp_slot(self.raw.as_ptr()).write(stamp) };
    }

    /// `IoMarkIrpPending`. Only the queue calls it, as it takes the IRP.
    pub(crate) fn mark_pending(&mut self) -> Pending {
        // SAFETY: we own the IRP (type invariant).
        unsafe { sys::mark_irp_pending(self.raw.as_ptr()) };
        Pending(())
    }

    /// Completes the IRP (`IoCompleteRequest`) and gives it back to the I/O manager.
    #[must_use = "a dispatch routine returns what it did with the IRP"]
    pub fn complete(self, status: NTSTATUS, information: u64) -> Dispatched {
        debug_assert!(status != STATUS_PENDING, "an IRP completed with STATUS_PENDING");
        // SAFETY: we own the IRP and `self` is consumed: nothing can touch it afterwards.
        unsafe { sys::complete_request(self.raw.as_ptr(), status, information) };
        Dispatched::Completed(Completed(status))
    }
}

/// A dispatch routine in safe Rust, installed with [`dispatch_routine`].
pub trait DispatchRoutine {
    /// The device extension the routine works on.
    type Extension: 'static;
    /// Handles one IRP sent to a device whose extension is `extension`.
    fn dispatch(extension: &Self::Extension, irp: Irp) -> Dispatched;
}

/// The `DRIVER_DISPATCH` entry for `R`: the raw unpacking happens once, here.
///
/// # Safety
/// Every device object that can receive this entry's IRPs holds an initialised
/// `R::Extension` in its DeviceExtension and uses buffered I/O, for as long as it can
/// receive IRPs.
#[must_use]
pub unsafe fn dispatch_routine<R: DispatchRoutine>() -> PDRIVER_DISPATCH {
    Some(dispatch::<R>)
}

unsafe extern "C" fn dispatch<R: DispatchRoutine>(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the I/O manager passes one of our live devices, whose extension is an
    // `R::Extension` (the promise of `dispatch_routine`).
    let extension = unsafe { &*(*device).DeviceExtension.cast::<R::Extension>() };
    let Some(raw) = NonNull::new(irp) else {
        return sys::STATUS_INVALID_PARAMETER;
    };
    // SAFETY: the I/O manager hands this routine a live IRP sent to our device, which
    // the routine now owns.
    let irp = unsafe { Irp::from_raw(raw, Some(TypeId::of::<R::Extension>())) };
    R::dispatch(extension, irp).status()
}

/// `Irp->Tail.Overlay.ListEntry`, which the driver may use while it owns the IRP.
///
/// # Safety
/// `irp` is valid.
pub(crate) unsafe fn list_entry(irp: PIRP) -> PLIST_ENTRY {
    // SAFETY: guaranteed by the caller; a field path, not a dereference.
    unsafe { &raw mut (*irp).Tail.Overlay.__bindgen_anon_2.ListEntry }
}

/// The IRP whose `Tail.Overlay.ListEntry` is `entry` (CONTAINING_RECORD).
///
/// # Safety
/// `entry` is the list entry of an IRP.
pub(crate) unsafe fn irp_of(entry: PLIST_ENTRY) -> PIRP {
    // A field path, not bindgen's numbered type names: those differ between header sets.
    const OFFSET: usize = core::mem::offset_of!(IRP, Tail.Overlay.__bindgen_anon_2.ListEntry);
    // SAFETY: guaranteed by the caller.
    unsafe { entry.byte_sub(OFFSET).cast() }
}

/// `Irp->Tail.Overlay.DriverContext[0]`, as an `i64`.
///
/// # Safety
/// `irp` is valid.
pub(crate) unsafe fn stamp_slot(irp: PIRP) -> *mut i64 {
    // SAFETY: guaranteed by the caller; a field path, not a dereference.
    unsafe { (&raw mut (*irp).Tail.Overlay.__bindgen_anon_1.__bindgen_anon_1.DriverContext[0]).cast() }
}

/// A queued IRP whose cancellation the cancel routine carries out: IoCancelIrp took
/// the routine back (IoSetCancelRoutine's exchange), so no dequeuer can own it. It may
/// still be linked on its queue; only the queue turns it into an [`Irp`], unlinking it
/// first.
///
/// # Invariants
/// `raw` is a live, uncompleted IRP whose cancel routine has been called and that no
/// other code will complete; `extension` as for [`Irp`].
pub struct CancelledIrp {
    pub(crate) raw: NonNull<IRP>,
    pub(crate) extension: TypeId,
}

/// A cancel routine in safe Rust, set on queued IRPs by the queue (never by the caller).
pub trait CancelRoutine: 'static {
    /// The extension of the devices whose IRPs it cancels.
    type Extension: 'static;
    /// Carries out the cancellation of one IRP of a device whose extension is
    /// `extension`. Runs at the IRQL of IoCancelIrp's caller (<= DISPATCH_LEVEL): the
    /// adapter has already released the cancel spin lock.
    fn cancel(extension: &Self::Extension, irp: CancelledIrp);
}

/// The `DRIVER_CANCEL` entry for `R`. Only the queue sets it, and only on IRPs whose
/// device extension is an `R::Extension` (the [`Irp`]'s recorded type).
pub(crate) fn cancel_routine<R: CancelRoutine>() -> CancelEntry {
    cancel::<R>
}

/// A `DRIVER_CANCEL` routine.
pub(crate) type CancelEntry = unsafe extern "C" fn(PDEVICE_OBJECT, PIRP);

unsafe extern "C" fn cancel<R: CancelRoutine>(device: PDEVICE_OBJECT, irp: PIRP) {
    // The I/O manager calls the routine with the cancel spin lock held, and stored in
    // Irp->CancelIrql the IRQL to return to: the lock is released first, as the
    // protocol requires ("Canceling IRPs": a cancel routine must release it).
    // SAFETY: the IRP is live (its cancellation is ours); the lock is held.
    unsafe { IoReleaseCancelSpinLock((*irp).CancelIrql) };
    super::irql::assert_at_most_dispatch();
    // SAFETY: the queue set this routine only on IRPs sent to devices whose extension
    // is an `R::Extension` (`cancel_routine`), and a device with IRPs is live.
    let extension = unsafe { &*(*device).DeviceExtension.cast::<R::Extension>() };
    let Some(raw) = NonNull::new(irp) else { return };
    // INVARIANT: IoCancelIrp took the routine back, which makes the IRP ours.
    R::cancel(extension, CancelledIrp { raw, extension: TypeId::of::<R::Extension>() });
}

/// IRPs to complete once the caller's lock is released, in the order they were added.
/// Chained through their own `Tail.Overlay.ListEntry` (the driver owns these IRPs), so
/// the list holds no pointer to itself and may move freely.
///
/// # Invariants
/// Every IRP on `irps` was an owned [`Irp`] given to [`Completions::push`], with its
/// final status in `IoStatus`.
pub struct Completions {
    irps: list::RawList,
}

impl Default for Completions {
    fn default() -> Self {
        Self::new()
    }
}

impl Completions {
    /// An empty list.
    #[must_use]
    pub const fn new() -> Self {
        Self { irps: list::RawList::new() }
    }

    /// Adds an IRP, with its final status. The list owns it until `complete_all`.
    pub fn push(&mut self, irp: Irp, status: NTSTATUS, information: u64) {
        debug_assert!(status != STATUS_PENDING, "an IRP completed with STATUS_PENDING");
        let irp = irp.into_raw().as_ptr();
        // SAFETY: we own the IRP; its IoStatus and list entry are ours to use, and it
        // stays valid until `complete_all` completes it.
        unsafe {
            (*irp).IoStatus.__bindgen_anon_1.Status = status;
            (*irp).IoStatus.Information = information;
            // INVARIANT: an owned IRP with its final status.
            self.irps.push_back(list_entry(irp));
        }
    }

    /// Completes every IRP, oldest first. Call with no spin lock held. IRQL <=
    /// DISPATCH_LEVEL.
    pub fn complete_all(self) {
        super::irql::assert_at_most_dispatch();
        let mut entry = self.irps.first();
        while !entry.is_null() {
            // SAFETY: every entry on the chain is an owned IRP's (type invariant); the
            // link is read before completion hands the IRP back.
            let (irp, mut link) = unsafe { (irp_of(entry), list::next(entry)) };
            // SAFETY: as above; `push` stored the final status.
            let (status, information) =
                unsafe { ((*irp).IoStatus.__bindgen_anon_1.Status, (*irp).IoStatus.Information) };
            if let Some(owned) = NonNull::new(irp) {
                // SAFETY: pushed as an owned `Irp`, given back once (but see the mutant).
                let _ = unsafe { Irp::from_raw(owned, None) }.complete(status, information);
            }
            if READ_LINK_AFTER_COMPLETE {
                // SAFETY: none: the IRP was handed back; the mutant's bug.
                link = unsafe { list::next(entry) };
            }
            entry = link;
        }
    }
}

/// Mutant `link_after_complete` (tests/mutants.rs): [`Completions::complete_all`]
/// reads the next link from an IRP it already completed. Windows reuses `Irp->Tail`
/// for the completion APC (the link reads NULL) or has freed the IRP.
const READ_LINK_AFTER_COMPLETE: bool = cfg!(stagedrv_mutant = "link_after_complete");
