//! System threads: PsCreateSystemThread, PsTerminateSystemThread, thread objects that
//! are signalled when the thread ends.

use std::collections::HashMap;

use super::header;
use crate::machine::{KResult, Stop, kcall};
use crate::ob::Kind;
use crate::trace::Routine;
use crate::wdk_sys::{
    HANDLE, NTSTATUS, OBJ_KERNEL_HANDLE, PCLIENT_ID, PHANDLE, PKSTART_ROUTINE, POBJECT_ATTRIBUTES, PVOID,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS, ULONG,
};

/// Size of ntsim's thread object; only its DISPATCHER_HEADER is meaningful.
const THREAD_OBJECT_SIZE: usize = 0x100;

pub(crate) struct ThreadInfo {
    pub(crate) terminated: bool,
    /// The memory behind the thread object.
    _memory: Box<[u64; THREAD_OBJECT_SIZE / 8]>,
}

#[derive(Default)]
pub(crate) struct Threads {
    pub(crate) objects: HashMap<usize, ThreadInfo>,
    /// Thread objects whose memory outlived their last reference while running.
    pub(crate) running: usize,
}

/// The thread object's last reference is gone.
pub(crate) fn delete_object(ctx: &mut crate::machine::Ctx<'_>, address: usize) {
    if ctx.ke.threads.objects.get(&address).is_some_and(|t| t.terminated) {
        ctx.ke.threads.objects.remove(&address);
    }
}

fn terminate(ctx: &mut crate::machine::Ctx<'_>, object: usize) {
    if let Some(info) = ctx.ke.threads.objects.get_mut(&object) {
        if !info.terminated {
            info.terminated = true;
            ctx.ke.threads.running -= 1;
        }
        // SAFETY: the header lives in `info.memory`.
        unsafe { *header::signal_state(object) = 1 };
    }
    if ctx.ob.refs(object) == 0 {
        ctx.ke.threads.objects.remove(&object);
    }
    ctx.signal();
}

thread_local! {
    static THREAD_OBJECT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn PsCreateSystemThread(
    ThreadHandle: PHANDLE,
    _DesiredAccess: ULONG,
    ObjectAttributes: POBJECT_ATTRIBUTES,
    _ProcessHandle: HANDLE,
    _ClientId: PCLIENT_ID,
    StartRoutine: PKSTART_ROUTINE,
    StartContext: PVOID,
) -> NTSTATUS {
    kcall("PsCreateSystemThread", |ctx| -> KResult<NTSTATUS> {
        if ctx.should_fail() {
            return Ok(STATUS_INSUFFICIENT_RESOURCES);
        }
        let mut memory = Box::new([0u64; THREAD_OBJECT_SIZE / 8]);
        let object = memory.as_mut_ptr() as usize;
        // SAFETY: `memory` is a fresh, large-enough block.
        unsafe { header::init(object, header::THREAD, THREAD_OBJECT_SIZE, 0) };
        ctx.ke.threads.objects.insert(object, ThreadInfo { terminated: false, _memory: memory });
        ctx.ke.threads.running += 1;
        // The thread's own reference, dropped when it ends.
        ctx.ob.insert(object, Kind::Thread, 1);
        // OBJ_KERNEL_HANDLE puts the handle in the System table; without it the handle
        // is the calling process's (PsCreateSystemThread's documentation).
        let kernel = !ObjectAttributes.is_null() && {
            // SAFETY: the driver passed NULL or valid OBJECT_ATTRIBUTES.
            unsafe { (*ObjectAttributes).Attributes & OBJ_KERNEL_HANDLE != 0 }
        };
        let owner = crate::ob::current_owner(ctx);
        let handle = ctx.ob.open_handle(owner, kernel, crate::ob::Target::Object(object));
        // SAFETY: the driver passed a writable HANDLE.
        unsafe { *ThreadHandle = handle as HANDLE };
        let context = StartContext as usize;
        let routine = StartRoutine;
        let name = format!("system-thread-{}", ctx.ke.threads.objects.len());
        let tid = ctx.spawn(name, 0, move || {
            THREAD_OBJECT.with(|t| t.set(object));
            if let Some(start) = routine {
                // SAFETY: the driver's start routine with the context it supplied.
                unsafe { start(context as PVOID) };
            }
            // The start routine returned instead of calling PsTerminateSystemThread.
            kcall("(thread exit)", move |ctx| {
                terminate(ctx, object);
                crate::ob::dereference(ctx, object)?;
                Ok(())
            });
        });
        ctx.threads[tid].routines.push(Routine::SystemThread);
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::PsCreateSystemThread = PsCreateSystemThread;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn PsTerminateSystemThread(_ExitStatus: NTSTATUS) -> NTSTATUS {
    kcall("PsTerminateSystemThread", |ctx| -> KResult<NTSTATUS> {
        let object = THREAD_OBJECT.with(std::cell::Cell::get);
        terminate(ctx, object);
        crate::ob::dereference(ctx, object)?;
        // The thread never returns to the driver.
        Err(Stop::Terminate)
    })
}
const _: crate::wdk_sys::fnsig::PsTerminateSystemThread = PsTerminateSystemThread;
