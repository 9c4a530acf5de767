//! The producer: each device's periodic timer appends one synthetic record to the
//! device's ring per tick, wakes the consumer when reads are waiting, and every few
//! ticks queues the statistics work item.

use crate::device::DeviceExtension;
use crate::kernel::irql;
use crate::kernel::sync::AtDispatch;
use crate::kernel::time::performance_counter;
use crate::kernel::timer::{Period, RelativeDueTime, TimerRoutine};

/// Starts producing: the first tick after one period, then one every period. IRQL <=
/// DISPATCH_LEVEL.
pub fn start(extension: &DeviceExtension, period_ms: u32) {
    irql::assert_at_most_dispatch();
    extension.producer.set_periodic(RelativeDueTime::from_millis(period_ms), Period::from_millis(period_ms));
}

impl TimerRoutine for DeviceExtension {
    /// One tick. DISPATCH_LEVEL.
    fn expired(&'static self, at_dispatch: &AtDispatch) {
        let now = performance_counter().ticks;
        let wake = {
            let mut state = self.state.lock_at_dpc_level(at_dispatch);
            if state.stopping {
                return;
            }
            let sequence = state.ring.as_ref().map_or(0, crate::ring::Ring::produced);
            // A recognisable synthetic sample: device index in the top byte.
            let value = (u64::from(self.index) << 56) | sequence;
            if let Some(ring) = state.ring.as_mut() {
                ring.push(now, value);
            }
            state.ticks_since_statistics = state.ticks_since_statistics.saturating_add(1);
            if state.ticks_since_statistics >= self.context().config.stats_every && !state.work_queued {
                state.ticks_since_statistics = 0;
                state.work_queued = self.statistics.queue();
            }
            state.stats.reads_pending() > 0
        };
        if wake {
            self.context().data_ready.set();
        }
    }
}
