//! One device object: its extension, the guard and what it protects.

use core::ptr::NonNull;
use core::sync::atomic::AtomicU64;

use crate::kernel::error::{NtError, NtResult, to_result};
use crate::kernel::io_timer::IoTimer;
use crate::kernel::sys::{
    DEVICE_OBJECT, DO_BUFFERED_IO, DO_DEVICE_INITIALIZING, DRIVER_OBJECT, FALSE, FILE_DEVICE_SECURE_OPEN,
    IoCreateDevice, IoDeleteDevice, LIST_ENTRY, PDEVICE_OBJECT, ULONG,
};
use crate::kernel::timer::Timer;
use crate::kernel::work_item::WorkItem;
use crate::link::SymbolicLink;
use crate::name::Name;
use crate::ring::Ring;
use crate::sync::SpinLock;
use stagedrv_protocol::{FILE_DEVICE_STAGEDRV, Stats};

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

/// The device extension. Initialised in place by [`Device::create`]; never moves.
pub struct DeviceExtension {
    pub index: u32,
    pub device_name: Name,
    /// Set once DriverEntry created it; taken by Unload's stage 3.
    pub link: Option<SymbolicLink>,
    pub shared: SpinLock<Shared>,
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
            shared: SpinLock::new(Shared {
                stopping: false,
                ring,
                active: LIST_ENTRY { Flink: core::ptr::null_mut(), Blink: core::ptr::null_mut() },
                stats: Stats::default(),
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
        {
            let mut shared = device.extension().shared.lock();
            // SAFETY: the extension no longer moves; the head is initialised in place.
            unsafe { crate::list::init(&raw mut shared.active) };
        }
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
