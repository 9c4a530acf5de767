//! The consumer: one system thread per driver that waits for records and completes
//! pending reads with them, outside any spin lock.

use core::sync::atomic::Ordering;

use crate::context::DriverContext;
use crate::device::{Device, DeviceExtension, DriverDevices, ReadOutcome};
use crate::kernel::irp::Completions;
use crate::kernel::irql;
use crate::kernel::sys::STATUS_SUCCESS;
use crate::kernel::thread::{SystemThread, wait_for_any};

/// The thread's body (the kernel runs it as the driver-wide state's
/// [`ThreadRoutine`](crate::kernel::thread::ThreadRoutine), `state.rs`): waits for
/// the stop event (index 0) or records; each other wake-up is one delivery pass over
/// every device.
pub fn run(context: &DriverContext, devices: &DriverDevices) {
    while wait_for_any([&context.stop, &context.data_ready]) != Some(0) {
        for device in devices.borrow().iter() {
            #[cfg(not(target_os = "windows"))]
            crate::probe::around_delivery(&mut || deliver(device));
            #[cfg(target_os = "windows")]
            deliver(device);
        }
    }
}

/// Makes [`run`] return soon.
pub fn request_exit(context: &DriverContext) {
    context.stop.set();
}

/// Asks the thread to end and waits until it has (Unload stage 2). PASSIVE_LEVEL.
pub fn stop(thread: SystemThread, context: &DriverContext) {
    irql::assert_passive();
    request_exit(context);
    thread.wait_for_exit();
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
        let mut state = extension.state.lock();
        while state.ring.as_ref().is_some_and(|r| !r.is_empty()) {
            let Some(served) = state.reads.serve_front() else { break };
            visited = visited.wrapping_add(1);
            // Reads being cancelled were unlinked on the way; a handle left with none
            // has left the list, so the loop moves on.
            for _ in 0..served.cancelling {
                state.stats.read_left_queue(ReadOutcome::Cancelled);
            }
            let Some(mut irp) = served.irp else { continue };
            let bytes = crate::dispatch::read::copy_records(&mut state, &mut irp);
            state.stats.read_left_queue(ReadOutcome::Completed);
            done.push(irp, STATUS_SUCCESS, bytes);
        }
    }
    extension.handle_nodes_visited.fetch_add(visited, Ordering::Relaxed);
    done.complete_all();
}
