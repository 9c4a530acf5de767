//! The consumer: one system thread per driver that waits for records and completes
//! pending reads with them, outside any spin lock.

use core::sync::atomic::Ordering;

use crate::device::{Device, DeviceExtension};
use crate::driver::DriverState;
use crate::kernel::error::NtResult;
use crate::kernel::irql;
use crate::kernel::sys::STATUS_SUCCESS;
use crate::kernel::thread::{SystemThread, ThreadRoutine, wait_for_any};
use crate::queue::{Completions, HandleContext, dequeue};

/// Starts the consumer thread. PASSIVE_LEVEL.
pub fn start(state: &'static DriverState) -> NtResult<SystemThread> {
    irql::assert_passive();
    SystemThread::start(state)
}

/// Asks the thread to end and waits until it has (Unload stage 2). PASSIVE_LEVEL.
pub fn stop(thread: SystemThread, state: &DriverState) {
    irql::assert_passive();
    state.request_exit();
    thread.wait_for_exit();
}

impl ThreadRoutine for DriverState {
    /// Waits for the stop event (index 0) or records; each other wake-up is one
    /// delivery pass over every device.
    fn run(&'static self) {
        while wait_for_any([&self.stop, &self.data_ready]) != Some(0) {
            for device in self.devices() {
                #[cfg(not(target_os = "windows"))]
                crate::probe::around_delivery(&mut || deliver(device));
                #[cfg(target_os = "windows")]
                deliver(device);
            }
        }
    }

    fn request_exit(&self) {
        self.stop.set();
    }
}

/// Gives records to pending reads, fairly: the handle at the head of the device's
/// active list gets the next record for its oldest read and, if it has more reads
/// waiting, goes to the back, so handles with reads take turns across passes and
/// ticks. Each record costs one active-list node, however many handles are idle.
fn deliver(device: Device) {
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
