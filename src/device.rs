//! One device object's extension: the guard and what it protects (the device state,
//! its read counters, the per-handle contexts and pending reads), the device's timers
//! and work item, its link; and how a device is created.

use core::cell::Cell;
use core::sync::atomic::AtomicU64;

use crate::context::DriverContext;
use crate::kernel::device::{DeviceObject, DeviceTable, OwnedDevice};
use crate::kernel::driver::{DriverObject, HasDriverState, StateRef};
use crate::kernel::error::{NtError, NtResult};
use crate::kernel::file_queue::FileQueues;
use crate::kernel::io_timer::IoTimer;
use crate::kernel::link::SymbolicLink;
use crate::kernel::name::Name;
use crate::kernel::sync::{LockedBy, SpinLock};
use crate::kernel::timer::Timer;
use crate::kernel::work_item::WorkItem;
use crate::ring::Ring;
use stagedrv_protocol::{FILE_DEVICE_STAGEDRV, Stats};

/// Object-manager prefix of every device name.
pub const DEVICE_PREFIX: &str = "\\Device\\StageDrv";
/// Object-manager prefix of every link name (user mode: `\\.\StageDrvK`).
pub const LINK_PREFIX: &str = "\\DosDevices\\StageDrv";

/// Most devices one driver instance creates (`Parameters\DeviceCount` is bounded by it).
pub const MAX_DEVICES: usize = 8;

/// The driver's devices, kept in the driver-wide state.
pub type DriverDevices = DeviceTable<DeviceExtension, MAX_DEVICES>;

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

/// Per-handle state, the context of its file object from IRP_MJ_CREATE to IRP_MJ_CLOSE.
pub struct HandleContext {
    /// IRP_MJ_CLEANUP ran: later reads fail instead of pending forever.
    cleaned_up: LockedBy<bool, DeviceState>,
}

impl HandleContext {
    /// A handle of the device whose guard is `guard`.
    pub fn new(guard: &SpinLock<DeviceState>) -> Self {
        Self { cleaned_up: LockedBy::new(guard, false) }
    }

    /// Whether IRP_MJ_CLEANUP ran for the handle.
    pub fn cleaned_up(&self, state: &DeviceState) -> bool {
        *self.cleaned_up.access(state)
    }

    /// Marks the handle cleaned up.
    pub fn mark_cleaned_up(&self, state: &mut DeviceState) {
        *self.cleaned_up.access_mut(state) = true;
    }
}

/// The cancel routine of a queued read (`queue.rs` implements it).
pub struct CancelRead;

/// The device's pending reads.
pub type PendingReads = FileQueues<HandleContext, CancelRead>;

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

/// A device object of this driver.
pub type Device = DeviceObject<DeviceExtension>;

/// The device extension. Written in place by [`create`] (the kernel's convention:
/// [`OwnedDevice::create`]); never moves, and is only reached through `&`.
pub struct DeviceExtension {
    pub index: u32,
    pub device_name: Name,
    /// Set once DriverEntry created it; taken by Unload's stage 3.
    pub link: Cell<Option<SymbolicLink>>,
    /// The device guard and the state it protects.
    pub state: SpinLock<DeviceState>,
    /// The producer's periodic timer (`producer.rs`).
    pub producer: Timer<DeviceExtension>,
    /// The watchdog's IoTimer (`watchdog.rs`).
    pub watchdog: IoTimer<DeviceExtension>,
    /// The statistics work item (`statistics.rs`).
    pub statistics: WorkItem<DeviceExtension>,
    /// The driver-wide context: parameters, allocator, service key, the consumer's
    /// wake-up event. Counted, so the driver-wide state outlives every device.
    context: StateRef<DriverContext>,
    pub max_pending_reads: u32,
    /// Active-list nodes the consumer and the watchdog have visited: what the host's
    /// tests and benchmark read (`probe`) to show that idle handles are never walked.
    pub handle_nodes_visited: AtomicU64,
}

impl DeviceExtension {
    /// The driver-wide context.
    pub fn context(&self) -> &DriverContext {
        self.context.get()
    }
}

impl HasDriverState for DeviceExtension {
    type Context = DriverContext;
    fn driver_state(&self) -> &StateRef<DriverContext> {
        &self.context
    }
}

/// `\Device\StageDrv<index>` (buffered I/O, secure open) and its extension. The ring
/// is allocated here; the timer, DPC, work item and link are set up by their own
/// stages. PASSIVE_LEVEL.
pub fn create(
    driver: &DriverObject<DeviceExtension>,
    index: u32,
    context: StateRef<DriverContext>,
) -> NtResult<OwnedDevice<DeviceExtension>> {
    let device_name = Name::indexed(DEVICE_PREFIX, index);
    let allocator = context.get().allocator;
    let max_pending_reads = context.get().config.max_pending_reads;
    let ring_capacity = context.get().config.ring_capacity as usize;
    let mut ring_missing = false;
    let object_name = Name::indexed(DEVICE_PREFIX, index);
    let device = OwnedDevice::create(driver, &object_name, FILE_DEVICE_STAGEDRV, || {
        let ring = Ring::new(allocator, ring_capacity);
        ring_missing = ring.is_none();
        DeviceExtension {
            index,
            device_name,
            link: Cell::new(None),
            state: SpinLock::new(DeviceState {
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
            context,
            max_pending_reads,
            handle_nodes_visited: AtomicU64::new(0),
        }
    })
    .inspect_err(|error| log!(Error, "IoCreateDevice({index}) failed: {error}"))?;
    if ring_missing {
        device.delete();
        return Err(NtError::INSUFFICIENT_RESOURCES);
    }
    #[cfg(not(target_os = "windows"))]
    crate::probe::register(device.as_raw(), &device.routine_context().handle_nodes_visited);
    Ok(device)
}

/// IoDeleteDevice, once every resource in the extension is released by its stage.
pub fn delete(device: OwnedDevice<DeviceExtension>) {
    #[cfg(not(target_os = "windows"))]
    crate::probe::unregister(device.as_raw());
    device.delete();
}
