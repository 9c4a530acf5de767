//! One device object's extension: the guard and what it protects, the device's
//! timers and work item, its link; and how a device is created.

use core::cell::Cell;
use core::sync::atomic::AtomicU64;

use crate::driver::DriverState;
use crate::kernel::device::{DeviceObject, OwnedDevice};
use crate::kernel::driver::{DriverObject, HasDriverState, StateRef};
use crate::kernel::error::{NtError, NtResult};
use crate::kernel::link::SymbolicLink;
use crate::kernel::name::Name;
use crate::kernel::sys::LIST_ENTRY;
use crate::protocol::{FILE_DEVICE_STAGEDRV, Stats};
use crate::ring::Ring;
use crate::sync::SpinLock;
use crate::timer::{Producer, Watchdog};
use crate::work::StatisticsWork;

/// Adds one to a counter (counters wrap rather than panic).
pub fn count(counter: &mut u64) {
    *counter = counter.wrapping_add(1);
}

/// Takes one from a gauge that is never below zero when this is called.
pub fn uncount(gauge: &mut u64) {
    *gauge = gauge.saturating_sub(1);
}

/// Object-manager prefix of every device name.
pub const DEVICE_PREFIX: &str = "\\Device\\StageDrv";
/// Object-manager prefix of every link name (user mode: `\\.\StageDrvK`).
pub const LINK_PREFIX: &str = "\\DosDevices\\StageDrv";

/// What the device guard protects.
pub struct Shared {
    /// Set by Unload stage 2 before anything is stopped; every source of new work
    /// (timer DPC, ISR DPC, watchdog, read path) checks it under the guard.
    pub stopping: bool,
    pub ring: Option<Ring>,
    /// Handles with pending reads (HandleContext::active), in the order the consumer
    /// serves them: a handle joins at the tail when its queue goes non-empty, and goes
    /// back to the tail each time it is served.
    pub active: LIST_ENTRY,
    pub stats: Stats,
    /// A statistics work item is queued or running.
    pub work_queued: bool,
    pub ticks_since_statistics: u32,
}

impl Shared {
    /// The counters, with the ring's produced and dropped counts brought up to date.
    pub fn stats_now(&mut self) -> Stats {
        if let Some(ring) = self.ring.as_ref() {
            self.stats.records_produced = ring.produced();
            self.stats.records_dropped = ring.dropped;
        }
        self.stats
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
    pub shared: SpinLock<Shared>,
    pub producer: Producer,
    pub watchdog: Watchdog,
    pub statistics: StatisticsWork,
    /// The driver-wide state, for the consumer thread's wake-up event.
    driver: StateRef<DriverState>,
    pub max_pending_reads: u32,
    /// Active-list nodes the consumer and the watchdog have visited: what the host's
    /// tests and benchmark read (`probe`) to show that idle handles are never walked.
    pub handle_nodes_visited: AtomicU64,
}

impl DeviceExtension {
    pub fn driver(&self) -> &DriverState {
        self.driver.get()
    }
}

impl HasDriverState for DeviceExtension {
    type State = DriverState;
    fn driver_state(&self) -> &StateRef<DriverState> {
        &self.driver
    }
}

/// `\Device\StageDrv<index>` (buffered I/O, secure open) and its extension. The ring
/// is allocated here; the timer, DPC, work item and link are set up by their own
/// stages. PASSIVE_LEVEL.
pub fn create(
    driver: &DriverObject<DeviceExtension>,
    index: u32,
    state: &DriverState,
    reference: StateRef<DriverState>,
) -> NtResult<OwnedDevice<DeviceExtension>> {
    let device_name = Name::indexed(DEVICE_PREFIX, index);
    let config = &state.config;
    let mut ring_missing = false;
    let object_name = Name::indexed(DEVICE_PREFIX, index);
    let device = OwnedDevice::create(driver, &object_name, FILE_DEVICE_STAGEDRV, || {
        let ring = Ring::new(state.allocator, config.ring_capacity as usize);
        ring_missing = ring.is_none();
        DeviceExtension {
            index,
            device_name,
            link: Cell::new(None),
            shared: SpinLock::new(Shared {
                stopping: false,
                ring,
                active: LIST_ENTRY { Flink: core::ptr::null_mut(), Blink: core::ptr::null_mut() },
                stats: Stats::default(),
                work_queued: false,
                ticks_since_statistics: 0,
            }),
            producer: Producer::new(),
            watchdog: Watchdog::new(config.read_timeout_s),
            statistics: StatisticsWork::new(),
            driver: reference,
            max_pending_reads: config.max_pending_reads,
            handle_nodes_visited: AtomicU64::new(0),
        }
    })
    .inspect_err(|error| log!(Error, "IoCreateDevice({index}) failed: {error}"))?;
    {
        let mut shared = device.extension().shared.lock();
        // SAFETY: the extension no longer moves; the head is initialised in place.
        unsafe { crate::list::init(&raw mut shared.active) };
    }
    if ring_missing {
        device.delete();
        return Err(NtError::INSUFFICIENT_RESOURCES);
    }
    Ok(device)
}
