//! One device object: its extension, the guard and what it protects.

use core::ptr::NonNull;
use core::sync::atomic::AtomicU64;

use crate::kernel::error::{NtError, NtResult, to_result};
use crate::kernel::io_timer::IoTimer;
use crate::kernel::sync::SpinLock;
use crate::kernel::sys::{
    DEVICE_OBJECT, DO_BUFFERED_IO, DO_DEVICE_INITIALIZING, DRIVER_OBJECT, FALSE, FILE_DEVICE_SECURE_OPEN,
    IoCreateDevice, IoDeleteDevice, PDEVICE_OBJECT, ULONG,
};
use crate::kernel::timer::Timer;
use crate::kernel::work_item::WorkItem;
use crate::link::SymbolicLink;
use crate::name::Name;
use crate::queue::PendingReads;
use crate::ring::Ring;
use stagedrv_protocol::{FILE_DEVICE_STAGEDRV, Stats};

/// Object-manager prefix of every device name.
pub const DEVICE_PREFIX: &str = "\\Device\\StageDrv";

/// What the device guard protects.
pub struct DeviceState {
    /// Set by Unload stage 2 before anything is stopped; every source of new work
    /// (timer DPC, ISR DPC, watchdog, read path) checks it under the guard.
    pub stopping: bool,
    pub ring: Option<Ring>,
    /// Pending reads, per handle; the handles with reads queued, in the order the
    /// consumer serves them (a handle joins at the back when its first read is queued
    /// and goes back there each time it is served).
    pub reads: PendingReads,
    /// The counters; the read counters change only through [`ReadCounters`]' methods.
    pub stats: ReadCounters,
    /// A statistics work item is queued or running.
    pub work_queued: bool,
    pub ticks_since_statistics: u32,
}

impl DeviceState {
    /// The counters, with the ring's produced and dropped counts brought up to date.
    pub fn stats_now(&mut self) -> Stats {
        if let Some(ring) = self.ring.as_ref() {
            self.stats.0.records_produced = ring.produced();
            self.stats.0.records_dropped = ring.dropped;
        }
        self.stats.0
    }

    /// Brings the dropped-records counter up to date with the ring.
    pub fn refresh_records_dropped(&mut self) {
        self.stats.0.records_dropped = self.ring.as_ref().map_or(0, |ring| ring.dropped);
    }
}

/// How a queued read left its queue.
#[derive(Clone, Copy)]
pub enum ReadOutcome {
    Completed,
    Cancelled,
    TimedOut,
}

/// The device's [`Stats`]. Every read is counted once on arrival together with where it
/// went, and once more if it was queued and leaves the queue, so that
/// `reads_received = reads_completed + reads_cancelled + reads_timed_out +
/// reads_rejected + reads_pending` holds whenever the guard is released (checked in
/// debug builds). Counters wrap rather than panic.
pub struct ReadCounters(Stats);

impl ReadCounters {
    pub const fn new() -> Self {
        Self(Stats {
            records_produced: 0,
            records_dropped: 0,
            reads_received: 0,
            reads_completed: 0,
            reads_cancelled: 0,
            reads_timed_out: 0,
            reads_rejected: 0,
            reads_pending: 0,
        })
    }

    /// Reads queued now.
    #[must_use]
    pub fn reads_pending(&self) -> u64 {
        self.0.reads_pending
    }

    /// A read failed at once.
    pub fn read_rejected(&mut self) {
        self.received(|stats| &mut stats.reads_rejected);
    }

    /// A read completed at once.
    pub fn read_completed_at_once(&mut self) {
        self.received(|stats| &mut stats.reads_completed);
    }

    /// A read was cancelled as it was being queued.
    pub fn read_cancelled_before_queued(&mut self) {
        self.received(|stats| &mut stats.reads_cancelled);
    }

    /// A read was queued.
    pub fn read_queued(&mut self) {
        self.received(|stats| &mut stats.reads_pending);
    }

    /// A queued read left its queue, with this outcome.
    pub fn read_left_queue(&mut self, outcome: ReadOutcome) {
        self.0.reads_pending = self.0.reads_pending.saturating_sub(1);
        let counter = match outcome {
            ReadOutcome::Completed => &mut self.0.reads_completed,
            ReadOutcome::Cancelled => &mut self.0.reads_cancelled,
            ReadOutcome::TimedOut => &mut self.0.reads_timed_out,
        };
        *counter = counter.wrapping_add(1);
        self.check_balance();
    }

    fn received(&mut self, went: impl FnOnce(&mut Stats) -> &mut u64) {
        self.0.reads_received = self.0.reads_received.wrapping_add(1);
        let counter = went(&mut self.0);
        *counter = counter.wrapping_add(1);
        self.check_balance();
    }

    fn check_balance(&self) {
        let stats = &self.0;
        let accounted = [stats.reads_cancelled, stats.reads_timed_out, stats.reads_rejected, stats.reads_pending]
            .iter()
            .fold(stats.reads_completed, |sum, counter| sum.wrapping_add(*counter));
        debug_assert_eq!(stats.reads_received, accounted, "read counters out of balance: {stats:?}");
    }
}

/// The device extension. Initialised in place by [`Device::create`]; never moves.
pub struct DeviceExtension {
    pub index: u32,
    pub device_name: Name,
    /// Set once DriverEntry created it; taken by Unload's stage 3.
    pub link: Option<SymbolicLink>,
    pub shared: SpinLock<DeviceState>,
    /// The producer's periodic timer (`producer.rs`).
    pub producer: Timer<DeviceExtension>,
    /// The watchdog's IoTimer (`watchdog.rs`).
    pub watchdog: IoTimer<DeviceExtension>,
    /// The statistics work item (`statistics.rs`).
    pub statistics: WorkItem<DeviceExtension>,
    /// The driver-wide state, for the consumer thread's wake-up event.
    pub driver: *const crate::driver::DriverState,
    pub max_pending_reads: u32,
    /// Active-list nodes the consumer and the watchdog have visited: what the host's
    /// tests and benchmark read (`probe`) to show that idle handles are never walked.
    pub handle_nodes_visited: AtomicU64,
}

impl DeviceExtension {
    /// The extension of one of this driver's device objects.
    ///
    /// # Safety
    /// `device` was created by [`Device::create`] and is not deleted.
    pub unsafe fn of<'a>(device: PDEVICE_OBJECT) -> &'a DeviceExtension {
        // SAFETY: guaranteed by the caller; mutable fields sit behind the guard.
        unsafe { &*(*device).DeviceExtension.cast::<DeviceExtension>() }
    }

    pub fn driver(&self) -> &crate::driver::DriverState {
        // SAFETY: the driver state outlives every device (deleted after them).
        unsafe { &*self.driver }
    }
}

/// A device object this driver created. Deleting it is an explicit call made by the
/// last unload step; dropping the handle does nothing.
#[derive(Clone, Copy)]
pub struct Device(NonNull<DEVICE_OBJECT>);

impl Device {
    /// `IoCreateDevice` for `\Device\StageDrv<index>` (buffered I/O, secure open) and
    /// the extension's initialisation. The ring is allocated here; the timer, DPC,
    /// work item and link are set up by their own stages. PASSIVE_LEVEL.
    pub fn create(driver: &mut DRIVER_OBJECT, index: u32, state: &crate::driver::DriverState) -> NtResult<Self> {
        let device_name = Name::indexed(DEVICE_PREFIX, index);
        let mut unicode = device_name.as_unicode_string();
        let mut object: PDEVICE_OBJECT = core::ptr::null_mut();
        // The extension is a few hundred bytes.
        #[allow(clippy::cast_possible_truncation)]
        let extension_size = size_of::<DeviceExtension>() as ULONG;
        // SAFETY: every pointer is valid for the call; the name is read, not kept.
        let status = unsafe {
            IoCreateDevice(
                driver,
                extension_size,
                &raw mut unicode,
                FILE_DEVICE_STAGEDRV,
                FILE_DEVICE_SECURE_OPEN,
                FALSE as u8,
                &raw mut object,
            )
        };
        to_result(status).inspect_err(|error| log!(Error, "IoCreateDevice({index}) failed: {error}"))?;
        let device = Self(NonNull::new(object).ok_or(NtError::INSUFFICIENT_RESOURCES)?);
        let config = &state.config;
        let ring = Ring::new(state.allocator, config.ring_capacity as usize);
        let ring_missing = ring.is_none();
        let extension = DeviceExtension {
            index,
            device_name,
            link: None,
            shared: SpinLock::new(DeviceState {
                stopping: false,
                ring,
                reads: PendingReads::new(),
                stats: ReadCounters::new(),
                work_queued: false,
                ticks_since_statistics: 0,
            }),
            producer: Timer::new(),
            watchdog: IoTimer::new(),
            statistics: WorkItem::new(),
            driver: state,
            max_pending_reads: config.max_pending_reads,
            handle_nodes_visited: AtomicU64::new(0),
        };
        // SAFETY: IoCreateDevice succeeded, so the object and its zeroed extension of
        // `extension_size` bytes are ours; writing initialises the extension in place.
        unsafe { device.extension_ptr().write(extension) };
        // SAFETY: the new object is not visible to I/O yet; Flags is ours to set.
        unsafe { (*device.0.as_ptr()).Flags |= DO_BUFFERED_IO };
        if ring_missing {
            device.delete();
            return Err(NtError::INSUFFICIENT_RESOURCES);
        }
        Ok(device)
    }

    pub fn as_raw(self) -> PDEVICE_OBJECT {
        self.0.as_ptr()
    }

    fn extension_ptr(self) -> *mut DeviceExtension {
        // SAFETY: the object is live (type invariant).
        unsafe { (*self.0.as_ptr()).DeviceExtension.cast() }
    }

    pub fn extension<'a>(self) -> &'a DeviceExtension {
        // SAFETY: `create` initialised it; it lives until `delete`.
        unsafe { &*self.extension_ptr() }
    }

    /// Fields that only DriverEntry and Unload touch (PASSIVE_LEVEL, no I/O yet or
    /// any more): the link.
    #[allow(clippy::mut_from_ref)]
    pub fn extension_mut<'a>(self) -> &'a mut DeviceExtension {
        // SAFETY: see above; callers are DriverEntry and Unload, which are serialised
        // with each other and run when no other routine touches these fields.
        unsafe { &mut *self.extension_ptr() }
    }

    /// Lets the I/O manager send requests: clears DO_DEVICE_INITIALIZING.
    pub fn finish_initializing(self) {
        // SAFETY: DriverEntry still owns the object's flags.
        unsafe { (*self.0.as_ptr()).Flags &= !DO_DEVICE_INITIALIZING };
    }

    /// `IoDeleteDevice`. PASSIVE_LEVEL. Every resource in the extension must already be
    /// released by its stage; the extension's storage goes with the object.
    pub fn delete(self) {
        // SAFETY: the extension was initialised in `create`; its remaining contents own
        // no kernel resources (the stages took them).
        unsafe { core::ptr::drop_in_place(self.extension_ptr()) };
        // SAFETY: we created the object and release it once.
        unsafe { IoDeleteDevice(self.0.as_ptr()) };
    }
}
