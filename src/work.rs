//! The statistics work item: queued from the producer DPC, it writes the device's
//! counters to a volatile registry key at PASSIVE_LEVEL. At most one is outstanding
//! per device, and none is queued once the device is stopping.

use core::cell::Cell;

use crate::device::DeviceExtension;
use crate::kernel::device::DeviceObject;
use crate::kernel::sys::{
    _WORK_QUEUE_TYPE::DelayedWorkQueue, IoAllocateWorkItem, IoFreeWorkItem, IoQueueWorkItem, PDEVICE_OBJECT,
    PIO_WORKITEM, PVOID,
};
use crate::sync::Event;

pub struct StatisticsWork {
    item: Cell<PIO_WORKITEM>,
    /// Signalled while no work item is outstanding (Unload stage 2 waits on it).
    idle: Event,
}

impl StatisticsWork {
    pub const fn new() -> Self {
        Self { item: Cell::new(core::ptr::null_mut()), idle: Event::uninit() }
    }

    /// IoAllocateWorkItem and the idle event. PASSIVE_LEVEL (DriverEntry).
    pub fn allocate(&self, device: PDEVICE_OBJECT) -> bool {
        self.idle.init(false, true);
        // SAFETY: the device is ours.
        let item = unsafe { IoAllocateWorkItem(device) };
        self.item.set(item);
        !item.is_null()
    }

    /// IoQueueWorkItem; called under the device guard (DISPATCH_LEVEL) when none is
    /// outstanding. Returns whether it was queued.
    pub fn queue(&self, device: PDEVICE_OBJECT) -> bool {
        let item = self.item.get();
        if item.is_null() {
            return false;
        }
        self.idle.clear();
        // SAFETY: the item is allocated and not queued (the guard's `work_queued`).
        unsafe { IoQueueWorkItem(item, Some(write_statistics), DelayedWorkQueue, device.cast()) };
        true
    }

    /// Waits until no work item is outstanding. Call after `stopping` is set and DPCs
    /// are flushed, so none can be queued after the wait. PASSIVE_LEVEL.
    pub fn wait_idle(&self) {
        if !self.item.get().is_null() {
            self.idle.wait();
        }
    }

    /// IoFreeWorkItem (Unload stage 3). The item is idle.
    pub fn free(&self) {
        let item = self.item.replace(core::ptr::null_mut());
        if !item.is_null() {
            // SAFETY: allocated by `allocate`, not queued (`wait_idle` returned), freed once.
            unsafe { IoFreeWorkItem(item) };
        }
    }
}

/// The work routine. PASSIVE_LEVEL.
unsafe extern "C" fn write_statistics(device: PDEVICE_OBJECT, _context: PVOID) {
    // SAFETY: the queued item holds a reference on the device, which is ours.
    let extension = unsafe { DeviceObject::<DeviceExtension>::from_raw(device).extension() };
    let snapshot = extension.shared.lock().stats_now();
    crate::registry_entries::write_statistics(&extension.driver().registry_path, extension.index, &snapshot);
    let mut shared = extension.shared.lock();
    shared.work_queued = false;
    extension.statistics.idle.set();
}
