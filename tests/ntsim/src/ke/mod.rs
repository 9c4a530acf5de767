//! The dispatcher: IRQL, spin locks, dispatcher objects and waits, DPCs, timers,
//! system threads, work items, interrupts.

pub(crate) mod clock;
pub(crate) mod dpc;
pub(crate) mod interrupt;
pub(crate) mod misc;
pub(crate) mod spinlock;
pub(crate) mod thread;
pub(crate) mod timer;
pub(crate) mod wait;
pub(crate) mod work;

use std::collections::HashMap;

use crate::sched::Tid;

/// The dispatcher's part of the machine state.
#[derive(Default)]
pub(crate) struct Ke {
    /// Spin lock address → owning thread.
    pub(crate) lock_owner: HashMap<usize, Tid>,
    /// Thread → the spin lock it is waiting for (to find deadlock cycles).
    pub(crate) spinning: HashMap<Tid, usize>,
    /// Locks held through KeAcquireInStackQueuedSpinLock.
    pub(crate) queued_locks: std::collections::HashSet<usize>,
    pub(crate) timers: timer::Timers,
    pub(crate) dpcs: dpc::Dpcs,
    pub(crate) work: work::WorkQueue,
    pub(crate) threads: thread::Threads,
    pub(crate) interrupts: interrupt::Interrupts,
    /// Lines printed with DbgPrint(Ex), in order.
    pub(crate) debug_output: Vec<String>,
    /// The DbgPrintEx level of each line (`None` for DbgPrint's).
    pub(crate) debug_levels: Vec<Option<u32>>,
}

/// Dispatcher objects ntsim reads through their DISPATCHER_HEADER: `Type` is the byte
/// at offset 0 and `SignalState` the LONG at offset 4 on every Windows version.
pub(crate) mod header {
    pub const EVENT_NOTIFICATION: u8 = 0;
    pub const EVENT_SYNCHRONIZATION: u8 = 1;
    pub const SEMAPHORE: u8 = 5;
    pub const THREAD: u8 = 6;
    pub const TIMER_NOTIFICATION: u8 = 8;
    pub const TIMER_SYNCHRONIZATION: u8 = 9;

    /// # Safety
    /// `object` points to an initialised dispatcher object.
    pub unsafe fn kind(object: usize) -> u8 {
        // SAFETY: offset 0 of a dispatcher object is its Type byte.
        unsafe { *(object as *const u8) }
    }

    /// # Safety
    /// As for [`kind`].
    pub unsafe fn signal_state(object: usize) -> *mut i32 {
        (object + 4) as *mut i32
    }

    /// The address the kernel would follow from `object`'s `Header.WaitListHead`, if
    /// that is not a valid empty list head: NULL links in a KEVENT, KSEMAPHORE or
    /// KTIMER that was never initialised, or links pointing at the old place of one
    /// that was moved after initialisation. ntsim never queues wait blocks on the list,
    /// so a valid head links to itself.
    ///
    /// # Safety
    /// `object` points to at least 0x18 readable bytes.
    pub unsafe fn bad_wait_list(object: usize) -> Option<usize> {
        let head = object + 8;
        // SAFETY: the caller gives us the object's header to read.
        let (flink, blink) = unsafe { (*(head as *const usize), *((head + 8) as *const usize)) };
        (flink != head || blink != head).then_some(if flink == head { blink } else { flink })
    }

    /// Writes Type, Size (in LONGs) and SignalState, and self-links WaitListHead.
    ///
    /// # Safety
    /// `object` points to at least 0x18 writable bytes.
    pub unsafe fn init(object: usize, kind: u8, size_bytes: usize, signal: i32) {
        // SAFETY: the caller gives us the object's header to write.
        unsafe {
            *(object as *mut u8) = kind;
            *((object + 2) as *mut u8) = u8::try_from(size_bytes / 4).unwrap_or(u8::MAX);
            *signal_state(object) = signal;
            let list = object + 8;
            *(list as *mut usize) = list;
            *((list + 8) as *mut usize) = list;
        }
    }
}
