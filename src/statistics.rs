//! The periodic statistics: queued from the producer's tick (at most one outstanding
//! per device, none once the device is stopping), the work item writes the device's
//! counters to the volatile registry key `<service>\Statistics` at PASSIVE_LEVEL.

use crate::device::{Device, DeviceExtension};
use crate::kernel::error::NtResult;
use crate::kernel::irql;
use crate::kernel::work_item::{WorkDone, WorkRoutine};

/// IoAllocateWorkItem for the device. PASSIVE_LEVEL (DriverEntry).
pub fn allocate(device: &Device, extension: &'static DeviceExtension) -> NtResult {
    irql::assert_passive();
    extension.statistics.allocate(device, extension)
}

impl WorkRoutine for DeviceExtension {
    /// Writes the counters. PASSIVE_LEVEL.
    fn run(&'static self, done: WorkDone<'_, Self>) {
        let snapshot = self.state.lock().stats_now();
        crate::registry_entries::write_statistics(&self.context().registry_path, self.index, &snapshot);
        let mut state = self.state.lock();
        state.work_queued = false;
        // Under the guard, where the producer queues the next run.
        done.finish();
        drop(state);
    }
}
