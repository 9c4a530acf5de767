//! The consumer: one system thread per driver that waits for records and completes
//! pending reads with them, outside any spin lock.

use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use crate::device::{Device, DeviceExtension};
use crate::driver::DriverState;
use crate::kernel::sys::object_attributes;
use crate::kernel::sys::{
    _KWAIT_REASON::Executive, _MODE::KernelMode, _WAIT_TYPE::WaitAny, HANDLE, KeWaitForMultipleObjects,
    KeWaitForSingleObject, NTSTATUS, ObReferenceObjectByHandle, PVOID, PsCreateSystemThread, PsTerminateSystemThread,
    STATUS_SUCCESS, STATUS_UNSUCCESSFUL, THREAD_ALL_ACCESS, ZwClose, ZwWaitForSingleObject, dereference_object,
    nt_success, thread_object_type,
};
use crate::queue::{Completions, HandleContext, dequeue};

/// The thread object, referenced, so Unload can wait for the thread to end.
pub struct ConsumerThread(NonNull<core::ffi::c_void>);

impl ConsumerThread {
    /// PsCreateSystemThread (kernel handle), ObReferenceObjectByHandle, ZwClose.
    /// PASSIVE_LEVEL.
    pub fn start(state: &DriverState) -> Result<Self, NTSTATUS> {
        let mut handle: HANDLE = core::ptr::null_mut();
        let mut attributes = object_attributes(core::ptr::null_mut());
        // SAFETY: the attributes are valid; the context outlives the thread (Unload waits
        // for it before the driver state goes).
        let status = unsafe {
            PsCreateSystemThread(
                &raw mut handle,
                THREAD_ALL_ACCESS,
                &raw mut attributes,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                Some(consumer_main),
                core::ptr::from_ref(state).cast_mut().cast(),
            )
        };
        if !nt_success(status) {
            log!(Error, "PsCreateSystemThread failed: {status:#x}");
            return Err(status);
        }
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
        let referenced = NonNull::new(object).filter(|_| nt_success(status));
        if referenced.is_none() {
            log!(Error, "ObReferenceObjectByHandle(thread) failed: {status:#x}; stopping the thread");
            // The thread waits on events in the driver state, which the caller frees once
            // this fails, and runs code of an image about to be unloaded: tell it to end,
            // and wait for it through the handle, the one thing left to wait on.
            state.stop.set();
            // SAFETY: PASSIVE_LEVEL; a kernel handle to our thread; no timeout.
            let waited = unsafe { ZwWaitForSingleObject(handle, 0, core::ptr::null_mut()) };
            if !nt_success(waited) {
                log!(Error, "ZwWaitForSingleObject(thread) failed: {waited:#x}");
            }
        }
        // SAFETY: the handle is ours; the thread lives on through the reference.
        let _ = unsafe { ZwClose(handle) };
        referenced.map(Self).ok_or(if nt_success(status) { STATUS_UNSUCCESSFUL } else { status })
    }

    /// Signals the thread, waits for it to call PsTerminateSystemThread, drops the
    /// reference (Unload stage 2). PASSIVE_LEVEL.
    pub fn stop(self, state: &DriverState) {
        state.stop.set();
        // SAFETY: a referenced thread object; waiting for it at PASSIVE_LEVEL.
        let _ =
            unsafe { KeWaitForSingleObject(self.0.as_ptr(), Executive, KernelMode as i8, 0, core::ptr::null_mut()) };
        // SAFETY: the reference taken in `start`, released once.
        unsafe { dereference_object(self.0.as_ptr()) };
    }
}

unsafe extern "C" fn consumer_main(context: PVOID) {
    // SAFETY: `start` passed the driver state, which outlives this thread.
    let state = unsafe { &*context.cast::<DriverState>() };
    let mut events = [state.stop.as_ptr().cast::<core::ffi::c_void>(), state.data_ready.as_ptr().cast()];
    loop {
        // SAFETY: two initialised events (within THREAD_WAIT_OBJECTS, so no wait block
        // array is needed), waited on at PASSIVE_LEVEL.
        let status = unsafe {
            KeWaitForMultipleObjects(
                2,
                events.as_mut_ptr(),
                WaitAny,
                Executive,
                KernelMode as i8,
                0,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
            )
        };
        if status == STATUS_SUCCESS {
            // Index 0: the stop event.
            break;
        }
        for device in state.devices().iter() {
            #[cfg(not(target_os = "windows"))]
            crate::probe::around_delivery(&mut || deliver(device));
            #[cfg(target_os = "windows")]
            deliver(device);
        }
    }
    // SAFETY: a system thread ends itself; this does not return.
    let _ = unsafe { PsTerminateSystemThread(STATUS_SUCCESS) };
}

/// Gives records to pending reads, fairly: the handle at the head of the device's
/// active list gets the next record for its oldest read and, if it has more reads
/// waiting, goes to the back, so handles with reads take turns across passes and
/// ticks. Each record costs one active-list node, however many handles are idle.
fn deliver(device: &Device) {
    let extension: &DeviceExtension = device.extension();
    let mut done = Completions::new();
    let mut visited: u64 = 0;
    {
        let mut shared = extension.shared.lock();
        let head = &raw mut shared.active;
        while shared.ring.as_ref().is_some_and(|r| !r.is_empty()) {
            // SAFETY: the guard protects the active list and the queues.
            let first = unsafe { (*head).Flink };
            if first == head {
                break;
            }
            visited = visited.wrapping_add(1);
            // SAFETY: as above; every node on the active list is a live handle's.
            let handle = unsafe { HandleContext::from_active(first) };
            // SAFETY: as above.
            let Some(mut irp) = (unsafe { dequeue(&mut shared, handle, |_| true) }) else {
                // Each of its reads was being cancelled, so its queue emptied and it
                // left the list. Removing it again is harmless and guarantees that the
                // loop moves on.
                // SAFETY: as above.
                unsafe { crate::list::remove(first) };
                continue;
            };
            let bytes = crate::dispatch::read::copy_records(&mut shared, &mut irp);
            crate::device::count(&mut shared.stats.reads_completed);
            done.push(irp, STATUS_SUCCESS, bytes);
            // SAFETY: as above; a handle still on the list moves to its tail.
            unsafe {
                let link = &raw mut (*handle).active;
                if !crate::list::is_empty(link) {
                    crate::list::remove(link);
                    crate::list::insert_tail(head, link);
                }
            }
        }
    }
    extension.handle_nodes_visited.fetch_add(visited, Ordering::Relaxed);
    done.complete_all();
}
