//! The clock the driver stamps records and reads with: the performance counter.

use super::sys::{KeQueryPerformanceCounter, LARGE_INTEGER};

/// One reading of the performance counter (`KeQueryPerformanceCounter`).
#[derive(Clone, Copy)]
pub struct CounterReading {
    /// Counts since boot.
    pub ticks: i64,
    /// Counts per second.
    pub frequency: i64,
}

/// Reads the performance counter and its frequency. Any IRQL.
#[must_use]
pub fn performance_counter() -> CounterReading {
    let mut frequency = LARGE_INTEGER { QuadPart: 0 };
    // SAFETY: callable at any IRQL; the out-parameter is a valid local.
    let now = unsafe { KeQueryPerformanceCounter(&raw mut frequency) };
    // SAFETY: LARGE_INTEGER is a 64-bit union whose every bit pattern is a QuadPart.
    unsafe { CounterReading { ticks: now.QuadPart, frequency: frequency.QuadPart } }
}
