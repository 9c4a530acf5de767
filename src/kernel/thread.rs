//! A system thread: PsCreateSystemThread with a kernel handle, the thread object
//! referenced through it (ObReferenceObjectByHandle with `*PsThreadType`) and the handle
//! closed; at the end the owner asks the thread to leave, the thread ends itself
//! (PsTerminateSystemThread), and the owner waits on the thread object before it
//! drops the reference and releases what the thread used.

use core::ffi::c_void;
use core::ptr::NonNull;

use super::error::{NtError, NtResult, to_result};
use super::irql;
use super::sync::Event;
use super::sys::{
    _KWAIT_REASON::Executive, _MODE::KernelMode, _WAIT_TYPE::WaitAny, HANDLE, KeWaitForMultipleObjects,
    KeWaitForSingleObject, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, OBJECT_ATTRIBUTES, ObReferenceObjectByHandle,
    PVOID, PsCreateSystemThread, PsTerminateSystemThread, STATUS_SUCCESS, THREAD_ALL_ACCESS, ZwClose,
    ZwWaitForSingleObject, dereference_object, thread_object_type,
};

/// What a system thread does, implemented by the context it runs on.
pub trait ThreadRoutine: 'static {
    /// The thread's body, at PASSIVE_LEVEL; the thread ends when it returns.
    fn run(&'static self);
    /// Makes `run` return soon. Called by [`SystemThread::start`] if the thread object
    /// cannot be referenced, then waited for.
    fn request_exit(&self);
}

/// A running system thread whose object is referenced, so its end can be waited for.
///
/// # Invariants
/// `object` is a thread object this value holds one reference on (dropped only by
/// [`SystemThread::wait_for_exit`]).
#[must_use = "the thread must be waited for before the image and its context go"]
pub struct SystemThread {
    object: NonNull<c_void>,
}

impl SystemThread {
    /// PsCreateSystemThread (kernel handle) running `C::run(context)`, then
    /// ObReferenceObjectByHandle and ZwClose. PASSIVE_LEVEL.
    ///
    /// # Errors
    /// PsCreateSystemThread's or ObReferenceObjectByHandle's status. In the second
    /// case the thread was asked to exit and waited for through its handle (the one
    /// thing left to wait on) before this returns.
    pub fn start<C: ThreadRoutine>(context: &'static C) -> NtResult<Self> {
        irql::assert_passive();
        let mut handle: HANDLE = core::ptr::null_mut();
        let mut attributes = kernel_handle_attributes();
        // SAFETY: the attributes are valid for the call; the context is a 'static `C`,
        // which is what `thread_start::<C>` reads.
        let status = unsafe {
            PsCreateSystemThread(
                &raw mut handle,
                THREAD_ALL_ACCESS,
                &raw mut attributes,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                Some(thread_start::<C>),
                core::ptr::from_ref(context).cast_mut().cast(),
            )
        };
        to_result(status).inspect_err(|error| log!(Error, "PsCreateSystemThread failed: {error}"))?;
        let mut object: PVOID = core::ptr::null_mut();
        // SAFETY: a kernel handle we just received, checked to be a thread's.
        let status = unsafe {
            ObReferenceObjectByHandle(
                handle,
                THREAD_ALL_ACCESS,
                thread_object_type(),
                KernelMode as i8,
                &raw mut object,
                core::ptr::null_mut(),
            )
        };
        let referenced = NonNull::new(object).filter(|_| to_result(status).is_ok());
        if referenced.is_none() {
            log!(Error, "ObReferenceObjectByHandle(thread) failed: {status:#x}; stopping the thread");
            // The thread uses the context, which the caller releases once this fails,
            // and runs code of an image about to be unloaded: tell it to end, and wait.
            context.request_exit();
            // SAFETY: PASSIVE_LEVEL; a kernel handle to our thread; no timeout.
            let waited = unsafe { ZwWaitForSingleObject(handle, 0, core::ptr::null_mut()) };
            if let Err(error) = to_result(waited) {
                log!(Error, "ZwWaitForSingleObject(thread) failed: {error}");
            }
        }
        // SAFETY: the handle is ours; the thread lives on through the reference.
        let _ = unsafe { ZwClose(handle) };
        // INVARIANT: `object` holds the reference ObReferenceObjectByHandle took.
        referenced.map(|object| Self { object }).ok_or_else(|| NtError::new(status).unwrap_or(NtError::UNSUCCESSFUL))
    }

    /// Waits for the thread to end (KeWaitForSingleObject on the thread object, which
    /// is signalled once PsTerminateSystemThread ran) and drops the reference. The
    /// caller asked it to exit first. PASSIVE_LEVEL.
    pub fn wait_for_exit(self) {
        irql::assert_passive();
        let object = self.object.as_ptr();
        // SAFETY: a referenced thread object (invariant), waited on at PASSIVE_LEVEL.
        let _ = unsafe { KeWaitForSingleObject(object, Executive, KernelMode as i8, 0, core::ptr::null_mut()) };
        // SAFETY: the reference `start` took, released once (`self` is consumed).
        unsafe { dereference_object(object) };
    }
}

/// Waits, without a timeout, until one of `events` is signalled
/// (KeWaitForMultipleObjects, WaitAny); returns its index, or `None` if the wait ended
/// otherwise. PASSIVE_LEVEL.
#[must_use]
pub fn wait_for_any(events: [&Event; 2]) -> Option<usize> {
    irql::assert_passive();
    let mut objects = events.map(|event| event.as_ptr().cast::<c_void>());
    // SAFETY: two initialised events (within THREAD_WAIT_OBJECTS, so no wait block
    // array is needed) that outlive the wait, waited on at PASSIVE_LEVEL.
    let status = unsafe {
        KeWaitForMultipleObjects(
            2,
            objects.as_mut_ptr(),
            WaitAny,
            Executive,
            KernelMode as i8,
            0,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
        )
    };
    // STATUS_WAIT_0 + index.
    usize::try_from(status).ok().filter(|&index| index < objects.len())
}

/// `InitializeObjectAttributes` for an unnamed object with a kernel handle.
fn kernel_handle_attributes() -> OBJECT_ATTRIBUTES {
    OBJECT_ATTRIBUTES {
        Length: size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: core::ptr::null_mut(),
        ObjectName: core::ptr::null_mut(),
        Attributes: OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE,
        SecurityDescriptor: core::ptr::null_mut(),
        SecurityQualityOfService: core::ptr::null_mut(),
    }
}

/// The PKSTART_ROUTINE of every [`SystemThread`] over `C`.
unsafe extern "C" fn thread_start<C: ThreadRoutine>(context: PVOID) {
    irql::assert_passive();
    // SAFETY: `SystemThread::start` passed a `&'static C` as the start context.
    let context = unsafe { &*context.cast_const().cast::<C>() };
    context.run();
    // SAFETY: a system thread ends itself; this does not return.
    let _ = unsafe { PsTerminateSystemThread(STATUS_SUCCESS) };
}
