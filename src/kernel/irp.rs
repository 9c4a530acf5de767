//! The owned IRP and the one dispatch adapter.
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

use core::ffi::c_void;
use core::ptr::NonNull;

use super::sys::{
    self, IO_STACK_LOCATION, IRP, IRP_MJ_DEVICE_CONTROL, IRP_MJ_READ, NTSTATUS, PDEVICE_OBJECT, PDRIVER_DISPATCH, PIRP,
    STATUS_PENDING,
};

/// An IRP this driver owns and must complete or queue.
///
/// # Invariants
/// `raw` points to a live IRP sent to one of this driver's devices, which use buffered
/// I/O (DO_BUFFERED_IO); it is not completed, and no cancel routine is set that could
/// complete it. At most one `Irp` exists for an IRP: the type is neither `Copy` nor
/// `Clone`, and code that holds an IRP by pointer (the queue) gives the `Irp` up.
pub struct Irp {
    raw: NonNull<IRP>,
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
    pub(crate) unsafe fn from_raw(irp: NonNull<IRP>) -> Self {
        // INVARIANT: guaranteed by the caller.
        Self { raw: irp }
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

    /// The file object's context (`FileObject->FsContext`); NULL for an IRP without a
    /// file object or a file object that never went through IRP_MJ_CREATE.
    #[must_use]
    pub fn file_context(&self) -> *mut c_void {
        let file = self.stack().FileObject;
        if file.is_null() {
            return core::ptr::null_mut();
        }
        // SAFETY: the file object of an IRP we own is live while we own it.
        unsafe { (*file).FsContext }
    }

    /// Sets `FileObject->FsContext`; `false` if the IRP has no file object.
    pub fn set_file_context(&mut self, context: *mut c_void) -> bool {
        let file = self.stack().FileObject;
        if file.is_null() {
            return false;
        }
        // SAFETY: as in `file_context`; the driver owns FsContext of its file objects.
        unsafe { (*file).FsContext = context };
        true
    }

    /// Whether the open names something below the device (`\\.\StageDrv0\x`); `false`
    /// without a file object.
    #[must_use]
    pub fn opens_a_subpath(&self) -> bool {
        let file = self.stack().FileObject;
        // SAFETY: as in `file_context`.
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
    type Extension;
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
    let irp = unsafe { Irp::from_raw(raw) };
    R::dispatch(extension, irp).status()
}
