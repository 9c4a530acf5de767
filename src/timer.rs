//! The producer (a periodic KTIMER whose CustomTimerDpc appends records to the ring)
//! and the watchdog (the device's IoTimer, once a second).

use core::cell::{Cell, UnsafeCell};
use core::sync::atomic::Ordering;

use crate::device::DeviceExtension;
use crate::kernel::device::DeviceObject;
use crate::kernel::sys::{
    _TIMER_TYPE::NotificationTimer, IoInitializeTimer, IoStartTimer, IoStopTimer, KDPC, KTIMER, KeCancelTimer,
    KeInitializeDpc, KeInitializeTimerEx, KeQueryPerformanceCounter, KeSetTimerEx, LARGE_INTEGER, NTSTATUS,
    PDEVICE_OBJECT, PKDPC, PVOID, STATUS_IO_TIMEOUT, nt_success,
};
use crate::queue::{Completions, HandleContext, dequeue, enqueue_time};

/// KeQueryPerformanceCounter and its frequency.
pub fn performance_counter() -> (i64, i64) {
    let mut frequency = LARGE_INTEGER { QuadPart: 0 };
    // SAFETY: any IRQL; the out-parameter is a valid local.
    let now = unsafe { KeQueryPerformanceCounter(&raw mut frequency) };
    // SAFETY: LARGE_INTEGER is a plain 64-bit union.
    unsafe { (now.QuadPart, frequency.QuadPart) }
}

/// The KTIMER and KDPC of the producer, in the device extension.
pub struct Producer {
    timer: UnsafeCell<KTIMER>,
    dpc: UnsafeCell<KDPC>,
    armed: Cell<bool>,
}

impl Producer {
    pub const fn new() -> Self {
        // SAFETY: KTIMER and KDPC are plain data, initialised by `init` in place.
        unsafe {
            Self {
                timer: UnsafeCell::new(core::mem::zeroed()),
                dpc: UnsafeCell::new(core::mem::zeroed()),
                armed: Cell::new(false),
            }
        }
    }

    /// KeInitializeTimerEx + KeInitializeDpc(producer_dpc, device). Any IRQL.
    pub fn init(&self, device: PDEVICE_OBJECT) {
        // SAFETY: both objects are at their final address in the extension.
        unsafe {
            KeInitializeTimerEx(self.timer.get(), NotificationTimer);
            KeInitializeDpc(self.dpc.get(), Some(producer_dpc), device.cast());
        }
    }

    /// KeSetTimerEx: first tick after one period, then every period.
    pub fn start(&self, period_ms: u32) {
        let due = LARGE_INTEGER { QuadPart: i64::from(period_ms).saturating_mul(-10_000) };
        // SAFETY: initialised by `init`; the period fits a LONG (bounded by config).
        unsafe { KeSetTimerEx(self.timer.get(), due, period_ms as i32, self.dpc.get()) };
        self.armed.set(true);
    }

    /// KeCancelTimer. A DPC already queued or running is not stopped by this; the
    /// caller set `stopping` first and flushes DPCs after (Unload stage 2).
    pub fn cancel(&self) {
        if self.armed.replace(false) {
            // SAFETY: initialised by `init`.
            unsafe { KeCancelTimer(self.timer.get()) };
        }
    }
}

/// CustomTimerDpc: one record per tick; wakes the consumer if reads are waiting, and
/// every few ticks queues the statistics work item. DISPATCH_LEVEL.
unsafe extern "C" fn producer_dpc(_dpc: PKDPC, context: PVOID, _arg1: PVOID, _arg2: PVOID) {
    let device: PDEVICE_OBJECT = context.cast();
    // SAFETY: the DPC's context is our device, alive until Unload has flushed DPCs.
    let extension = unsafe { DeviceObject::<DeviceExtension>::from_raw(device).extension() };
    let (now, _) = performance_counter();
    let wake = {
        let mut shared = extension.shared.lock_at_dpc_level();
        if shared.stopping {
            return;
        }
        let sequence = shared.ring.as_ref().map_or(0, crate::ring::Ring::produced);
        // A recognisable synthetic sample: device index in the top byte.
        let value = (u64::from(extension.index) << 56) | sequence;
        if let Some(ring) = shared.ring.as_mut() {
            ring.push(now, value);
        }
        shared.ticks_since_statistics = shared.ticks_since_statistics.saturating_add(1);
        if shared.ticks_since_statistics >= extension.driver().config.stats_every && !shared.work_queued {
            shared.ticks_since_statistics = 0;
            shared.work_queued = extension.statistics.queue(device);
        }
        shared.stats.reads_pending > 0
    };
    if wake {
        extension.driver().data_ready.set();
    }
}

/// The device's IoTimer: completes reads older than the configured timeout with
/// STATUS_IO_TIMEOUT and keeps the dropped-records counter current.
pub struct Watchdog {
    timeout_s: u32,
    /// IoInitializeTimer succeeded (Wine does not implement it).
    available: Cell<bool>,
    started: Cell<bool>,
}

impl Watchdog {
    pub const fn new(timeout_s: u32) -> Self {
        Self { timeout_s, available: Cell::new(false), started: Cell::new(false) }
    }

    /// IoInitializeTimer. PASSIVE_LEVEL. If it fails (it allocates; Wine does not
    /// implement it) and a read timeout is configured, the device cannot keep that
    /// promise and the error fails DriverEntry; with no timeout the watchdog only
    /// refreshes a counter that the statistics IOCTL computes anyway, so the driver
    /// logs and runs without it.
    pub fn init(&self, device: PDEVICE_OBJECT) -> Result<(), NTSTATUS> {
        // SAFETY: the device is ours and still initialising.
        let status = unsafe { IoInitializeTimer(device, Some(watchdog_tick), core::ptr::null_mut()) };
        if nt_success(status) {
            self.available.set(true);
        } else if self.timeout_s > 0 {
            log!(
                Error,
                "IoInitializeTimer failed ({status:#x}): no watchdog for ReadTimeoutSeconds={}",
                self.timeout_s
            );
            return Err(status);
        } else {
            log!(Warning, "IoInitializeTimer failed ({status:#x}): running without the watchdog");
        }
        Ok(())
    }

    pub fn start(&self, device: PDEVICE_OBJECT) {
        if self.available.get() {
            // SAFETY: the timer was initialised for this device.
            unsafe { IoStartTimer(device) };
            self.started.set(true);
        }
    }

    /// IoStopTimer. A tick already running is not waited for; it sees `stopping`.
    pub fn stop(&self, device: PDEVICE_OBJECT) {
        if self.started.replace(false) {
            // SAFETY: started by `start`.
            unsafe { IoStopTimer(device) };
        }
    }
}

/// The IoTimer routine. DISPATCH_LEVEL.
unsafe extern "C" fn watchdog_tick(device: PDEVICE_OBJECT, _context: PVOID) {
    // SAFETY: the IoTimer is ours and stopped before the device is deleted.
    let extension = unsafe { DeviceObject::<DeviceExtension>::from_raw(device).extension() };
    let (now, frequency) = performance_counter();
    let limit = i64::from(extension.watchdog.timeout_s).saturating_mul(frequency);
    let mut expired = Completions::new();
    let mut visited: u64 = 0;
    {
        let mut shared = extension.shared.lock_at_dpc_level();
        if shared.stopping {
            return;
        }
        shared.stats.records_dropped = shared.ring.as_ref().map_or(0, |r| r.dropped);
        if limit > 0 {
            let head = &raw mut shared.active;
            // SAFETY: the guard protects the active list and every handle's queue.
            let mut link = unsafe { (*head).Flink };
            while link != head {
                visited = visited.wrapping_add(1);
                // Read first: a handle whose queue empties below leaves the list (only
                // this handle: nothing else runs under the guard).
                // SAFETY: as above.
                let next = unsafe { (*link).Flink };
                // SAFETY: as above; every node on the active list is a live handle's.
                let handle = unsafe { HandleContext::from_active(link) };
                let expired_read = |irp| {
                    // SAFETY: the dequeue helper passes queued IRPs, which carry their enqueue time.
                    let queued_at = unsafe { *enqueue_time(irp) };
                    now.saturating_sub(queued_at) >= limit
                };
                // SAFETY: as above.
                while let Some(irp) = unsafe { dequeue(&mut shared, handle, expired_read) } {
                    crate::device::count(&mut shared.stats.reads_timed_out);
                    expired.push(irp, STATUS_IO_TIMEOUT, 0);
                }
                link = next;
            }
        }
    }
    extension.handle_nodes_visited.fetch_add(visited, Ordering::Relaxed);
    expired.complete_all();
    if STOP_WHEN_IDLE && extension.shared.lock_at_dpc_level().stats.reads_pending == 0 {
        extension.watchdog.stop(device);
    }
}

/// The `stop_timer_in_routine` mutant build (tests/mutants.rs) stops the watchdog from
/// its own IoTimer routine when no read is pending: IoStopTimer takes IopTimerLock,
/// which the I/O manager holds while it calls the routine (a self-deadlock).
const STOP_WHEN_IDLE: bool = cfg!(stagedrv_mutant = "stop_timer_in_routine");
