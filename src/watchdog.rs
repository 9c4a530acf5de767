//! The watchdog: the device's IoTimer, once a second, completes reads older than
//! `ReadTimeoutSeconds` with STATUS_IO_TIMEOUT and keeps the dropped-records counter
//! current.

use core::sync::atomic::Ordering;

use crate::device::{Device, DeviceExtension, ReadOutcome};
use crate::kernel::error::NtResult;
use crate::kernel::file_queue::QueuedIrp;
use crate::kernel::io_timer::IoTimerRoutine;
use crate::kernel::irp::Completions;
use crate::kernel::irql;
use crate::kernel::sync::AtDispatch;
use crate::kernel::sys::STATUS_IO_TIMEOUT;
use crate::kernel::time::performance_counter;

/// IoInitializeTimer for the device. If it fails (it allocates; Wine does not implement
/// it) and a read timeout is configured, the device cannot keep that promise and the
/// error fails DriverEntry; with no timeout the watchdog only refreshes a counter that
/// the statistics IOCTL computes anyway, so the driver logs and runs without it.
/// PASSIVE_LEVEL.
pub fn init(device: &Device, extension: &'static DeviceExtension) -> NtResult {
    irql::assert_passive();
    let timeout_s = extension.context().config.read_timeout_s;
    let result = extension.watchdog.init(device, extension);
    match result {
        Err(error) if timeout_s > 0 => {
            log!(Error, "IoInitializeTimer failed ({error}): no watchdog for ReadTimeoutSeconds={timeout_s}");
            Err(error)
        }
        Err(error) => {
            log!(Warning, "IoInitializeTimer failed ({error}): running without the watchdog");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

impl IoTimerRoutine for DeviceExtension {
    /// One watchdog pass. DISPATCH_LEVEL.
    fn tick(&'static self, at_dispatch: &AtDispatch) {
        let counter = performance_counter();
        let limit = i64::from(self.context().config.read_timeout_s).saturating_mul(counter.frequency);
        let mut expired = Completions::new();
        let mut visited: u64 = 0;
        {
            let mut state = self.state.lock_at_dpc_level(at_dispatch);
            if state.stopping {
                return;
            }
            state.refresh_records_dropped();
            if limit > 0 {
                let crate::device::DeviceState { reads, stats, .. } = &mut *state;
                let expired_read = |irp: &QueuedIrp| counter.ticks.saturating_sub(irp.stamp()) >= limit;
                let (walked, cancelling) = reads.take_each(expired_read, |irp| {
                    stats.read_left_queue(ReadOutcome::TimedOut);
                    expired.push(irp, STATUS_IO_TIMEOUT, 0);
                });
                for _ in 0..cancelling {
                    stats.read_left_queue(ReadOutcome::Cancelled);
                }
                visited = walked;
            }
        }
        self.handle_nodes_visited.fetch_add(visited, Ordering::Relaxed);
        expired.complete_all();
        if STOP_WHEN_IDLE && self.state.lock_at_dpc_level(at_dispatch).stats.reads_pending() == 0 {
            self.watchdog.stop();
        }
    }
}

/// The `stop_timer_in_routine` mutant build (tests/mutants.rs) stops the watchdog from
/// its own IoTimer routine when no read is pending: IoStopTimer takes IopTimerLock,
/// which the I/O manager holds while it calls the routine (a self-deadlock).
const STOP_WHEN_IDLE: bool = cfg!(stagedrv_mutant = "stop_timer_in_routine");
