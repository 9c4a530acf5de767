//! The only platform seam: kernel bindings and the driver's helpers for inline DDIs.
//!
//! On Windows every name comes from `wdk-sys`. On any other host it comes from
//! `ntsim`, whose bindings are generated from the same DDK headers with the same
//! settings, so the rest of the driver compiles unchanged against either.
//!
//! `wdm.h` implements some DDIs as inline functions or macros, which no bindings
//! contain. Their equivalents live here, each checked against `wdm.h`. On the host the
//! ones that touch shared state (the cancel-routine exchange, `Irp->Cancel`) call into
//! ntsim, so the simulator can check them and schedule other threads there.

#[cfg(not(target_os = "windows"))]
pub use ntsim::wdk_sys::{ntddk::*, *};
#[cfg(target_os = "windows")]
pub use wdk_sys::{ntddk::*, *};

/// bindgen writes its opaque-blob helper `__BindgenOpaqueArray` into each generated file
/// that needs one. With the WDK's headers both `wdk_sys::ntddk` and the types at the
/// root of `wdk_sys` get their own, so the two globs above would re-export that name
/// ambiguously (`ambiguous_glob_reexports`, an error under `-D warnings`). A local item
/// takes precedence over both globs, whichever of them defines the name (with
/// mingw-w64's headers neither does); the driver never names the helper.
#[cfg(target_os = "windows")]
#[allow(hidden_glob_reexports, non_camel_case_types, dead_code)]
struct __BindgenOpaqueArray;

unsafe extern "C" {
    /// The object type of device objects: a kernel export that no WDK header declares
    /// (Microsoft's own sources declare it where they use it, as
    /// `extern POBJECT_TYPE *IoDeviceObjectType;`). Like `PsThreadType`, the symbol is
    /// the import-table slot holding the address of the kernel's variable, so its value
    /// is read through one more dereference.
    pub static IoDeviceObjectType: *mut POBJECT_TYPE;
}

/// `*PsThreadType`: the object type of threads, for ObReferenceObjectByHandle.
#[must_use]
pub fn thread_object_type() -> POBJECT_TYPE {
    // SAFETY: the import slot points to the kernel's PsThreadType variable, set once
    // at boot, before any driver loads.
    unsafe { *PsThreadType }
}

/// `*IoDeviceObjectType`: the object type of device objects, for ObOpenObjectByPointer.
#[must_use]
pub fn device_object_type() -> POBJECT_TYPE {
    // SAFETY: as for `thread_object_type`.
    unsafe { *IoDeviceObjectType }
}

/// `NT_SUCCESS`: success and informational codes are non-negative.
#[must_use]
pub const fn nt_success(status: NTSTATUS) -> bool {
    status >= 0
}

/// `IoGetCurrentIrpStackLocation`.
///
/// # Safety
/// `irp` must point to a valid IRP owned by the caller.
#[must_use]
pub unsafe fn current_stack_location(irp: PIRP) -> PIO_STACK_LOCATION {
    // SAFETY: the caller guarantees `irp` is valid; the field is plain data.
    unsafe { (*irp).Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1.CurrentStackLocation }
}

/// `IoMarkIrpPending`: sets SL_PENDING_RETURNED in the current stack location.
///
/// # Safety
/// `irp` must point to a valid IRP owned by the caller.
pub unsafe fn mark_irp_pending(irp: PIRP) {
    // SAFETY: the caller owns `irp`, so its current stack location is valid.
    let stack = unsafe { current_stack_location(irp) };
    // SL_PENDING_RETURNED is 0x01 and fits the UCHAR Control field.
    #[allow(clippy::cast_possible_truncation)]
    let pending = SL_PENDING_RETURNED as u8;
    // SAFETY: `stack` is the IRP's current stack location, owned by the caller.
    unsafe { (*stack).Control |= pending };
}

/// `IoSetCancelRoutine`: an atomic exchange of `Irp->CancelRoutine`. Whoever gets a
/// non-NULL routine back owns the IRP's completion.
///
/// # Safety
/// `irp` must point to a valid IRP that is not yet completed.
pub unsafe fn set_cancel_routine(irp: PIRP, routine: PDRIVER_CANCEL) -> PDRIVER_CANCEL {
    #[cfg(target_os = "windows")]
    {
        use core::sync::atomic::{AtomicPtr, Ordering};
        let new = routine.map_or(core::ptr::null_mut(), |f| f as *mut core::ffi::c_void);
        // SAFETY: `CancelRoutine` is a pointer-sized, pointer-aligned field of a live IRP
        // that other processors only access with interlocked operations.
        let slot = unsafe { AtomicPtr::from_ptr((&raw mut (*irp).CancelRoutine).cast()) };
        let old = slot.swap(new, Ordering::SeqCst);
        // SAFETY: the slot only ever holds NULL or a DRIVER_CANCEL function pointer, and
        // Option<fn> has the same representation as a nullable pointer.
        unsafe { core::mem::transmute::<*mut core::ffi::c_void, PDRIVER_CANCEL>(old) }
    }
    #[cfg(not(target_os = "windows"))]
    {
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { ntsim::inline::IoSetCancelRoutine(irp, routine) }
    }
}

/// Reads `Irp->Cancel`, which IoCancelIrp sets on another processor.
///
/// # Safety
/// `irp` must point to a valid IRP that is not yet completed.
#[must_use]
pub unsafe fn irp_cancel_requested(irp: PIRP) -> bool {
    #[cfg(target_os = "windows")]
    {
        // SAFETY: `Cancel` is a BOOLEAN of a live IRP; a volatile read sees other
        // processors' writes without tearing.
        unsafe { core::ptr::read_volatile(&raw const (*irp).Cancel) != 0 }
    }
    #[cfg(not(target_os = "windows"))]
    {
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { ntsim::inline::irp_cancel_requested(irp) }
    }
}

/// `IoCompleteRequest`, a macro over `IofCompleteRequest`.
///
/// # Safety
/// The caller owns `irp`; it must not touch the IRP (or its file object's context)
/// afterwards.
pub unsafe fn complete_request(irp: PIRP, status: NTSTATUS, information: u64) {
    // SAFETY: the caller owns `irp`.
    unsafe {
        (*irp).IoStatus.__bindgen_anon_1.Status = status;
    }
    // SAFETY: as above.
    unsafe { (*irp).IoStatus.Information = information };
    // IO_NO_INCREMENT is 0 and fits CCHAR.
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    let boost = IO_NO_INCREMENT as CCHAR;
    // SAFETY: the caller owns `irp` and hands it back to the I/O manager here.
    unsafe { IofCompleteRequest(irp, boost) };
}

/// `ObDereferenceObject`, a macro over `ObfDereferenceObject`.
///
/// # Safety
/// `object` must be a referenced object whose reference the caller owns.
pub unsafe fn dereference_object(object: PVOID) {
    // SAFETY: the caller gives up its reference here.
    unsafe { ObfDereferenceObject(object) };
}

/// `KeGetCurrentIrql`: on x64 the IRQL is the task-priority register, CR8.
#[must_use]
pub fn current_irql() -> KIRQL {
    #[cfg(target_os = "windows")]
    {
        let cr8: u64;
        // SAFETY: reading CR8 is allowed at any IRQL in kernel mode and has no side
        // effect (wdm.h's KeGetCurrentIrql is `__readcr8()`).
        unsafe { core::arch::asm!("mov {}, cr8", out(reg) cr8, options(nomem, nostack, preserves_flags)) };
        cr8 as KIRQL
    }
    #[cfg(not(target_os = "windows"))]
    {
        ntsim::inline::KeGetCurrentIrql()
    }
}

/// `InitializeObjectAttributes(&a, name, OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE, NULL, NULL)`.
#[must_use]
pub fn object_attributes(name: *mut UNICODE_STRING) -> OBJECT_ATTRIBUTES {
    // The structure is a few dozen bytes.
    #[allow(clippy::cast_possible_truncation)]
    let length = size_of::<OBJECT_ATTRIBUTES>() as u32;
    OBJECT_ATTRIBUTES {
        Length: length,
        RootDirectory: core::ptr::null_mut(),
        ObjectName: name,
        Attributes: OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE,
        SecurityDescriptor: core::ptr::null_mut(),
        SecurityQualityOfService: core::ptr::null_mut(),
    }
}
