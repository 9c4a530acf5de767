//! What user mode sees: the record format returned by ReadFile and the IOCTLs.
//!
//! The driver and every client (the test app, the VM guest client) depend on this
//! crate, the way a sample driver and its application share `public.h`.

#![no_std]

/// One timestamped sample, as ReadFile returns it (whole records only).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Per-device sequence number, starting at 0; a gap means records were dropped.
    pub sequence: u64,
    /// KeQueryPerformanceCounter at production.
    pub timestamp: i64,
    /// The sample (the virtual device's data register in the hardware profile).
    pub value: u64,
}

/// Bytes of one record.
pub const RECORD_SIZE: usize = size_of::<Record>();

/// Per-device counters returned by [`IOCTL_STAGEDRV_GET_STATS`]. They balance:
/// `reads_received == reads_completed + reads_cancelled + reads_timed_out +
/// reads_rejected + reads_pending`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records the producer (timer or interrupt) put into the ring.
    pub records_produced: u64,
    /// Records overwritten before any reader took them.
    pub records_dropped: u64,
    /// Read IRPs that reached the driver.
    pub reads_received: u64,
    /// Completed with records (STATUS_SUCCESS).
    pub reads_completed: u64,
    /// Completed with STATUS_CANCELLED (CancelIo, cleanup, close, thread exit).
    pub reads_cancelled: u64,
    /// Completed with STATUS_IO_TIMEOUT by the watchdog.
    pub reads_timed_out: u64,
    /// Failed at once (bad length, per-handle limit, handle already cleaned up).
    pub reads_rejected: u64,
    /// Queued now.
    pub reads_pending: u64,
}

/// The custom device type (custom types are 0x8000 and above).
pub const FILE_DEVICE_STAGEDRV: u32 = 0x8337;

/// `CTL_CODE(DeviceType, Function, Method, Access)` from `wdm.h`.
#[must_use]
pub const fn ctl_code(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

const METHOD_BUFFERED: u32 = 0;
const FILE_READ_ACCESS: u32 = 1;

/// Returns the device's [`Stats`]. Reads state, so it requires read access.
pub const IOCTL_STAGEDRV_GET_STATS: u32 = ctl_code(FILE_DEVICE_STAGEDRV, 0x800, METHOD_BUFFERED, FILE_READ_ACCESS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctl_code_matches_wdm_h_layout() {
        // CTL_CODE(0x8337, 0x800, METHOD_BUFFERED, FILE_READ_ACCESS) by hand:
        // 0x8337 << 16 | 1 << 14 | 0x800 << 2 | 0.
        assert_eq!(IOCTL_STAGEDRV_GET_STATS, 0x8337_6000);
    }

    #[test]
    fn wire_sizes_are_fixed() {
        assert_eq!(RECORD_SIZE, 24);
        assert_eq!(size_of::<Stats>(), 64);
    }
}
