//! Logging through `DbgPrintEx` under the IHV driver component, so a debugger filter
//! (`ed nt!Kd_IHVDRIVER_Mask 0xf`) or DebugView shows only what is enabled.
//!
//! Messages are formatted in Rust into a stack buffer and printed with `"%s"`, so no
//! format directive that is only legal at PASSIVE_LEVEL (`%wZ`, `%ws`) is ever used and
//! the same text appears on every host.

use core::fmt::{self, Write};

use crate::kernel::sys::{
    _DPFLTR_TYPE::DPFLTR_IHVDRIVER_ID, DPFLTR_ERROR_LEVEL, DPFLTR_INFO_LEVEL, DPFLTR_WARNING_LEVEL, DbgPrintEx, ULONG,
};

/// Severity of a message; maps to the `DPFLTR_*_LEVEL` values.
#[derive(Clone, Copy)]
pub enum Level {
    /// DPFLTR_ERROR_LEVEL: a failure.
    Error,
    /// DPFLTR_WARNING_LEVEL: something ignored or degraded.
    Warning,
    /// DPFLTR_INFO_LEVEL: progress.
    Info,
}

/// A fixed-capacity line that silently truncates, so logging never allocates or fails.
struct Line {
    bytes: [u8; 200],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &byte in s.as_bytes() {
            // Keep the last byte for the terminating NUL.
            if self.len.saturating_add(1) >= self.bytes.len() {
                break;
            }
            if let Some(slot) = self.bytes.get_mut(self.len) {
                *slot = byte;
            }
            self.len = self.len.saturating_add(1);
        }
        Ok(())
    }
}

/// Prints one line prefixed with `stagedrv: `.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    let mut line = Line { bytes: [0; 200], len: 0 };
    // Line never fails; a too-long message is cut.
    let _ = line.write_str("stagedrv: ");
    let _ = line.write_fmt(args);
    let _ = line.write_str("\n");
    if let Some(end) = line.bytes.get_mut(line.len) {
        *end = 0;
    }
    let level: ULONG = match level {
        Level::Error => DPFLTR_ERROR_LEVEL,
        Level::Warning => DPFLTR_WARNING_LEVEL,
        Level::Info => DPFLTR_INFO_LEVEL,
    };
    // The component id is a small non-negative enum value.
    #[allow(clippy::cast_sign_loss)]
    let component = DPFLTR_IHVDRIVER_ID as ULONG;
    // SAFETY: both strings are NUL-terminated and live across the call; "%s" consumes
    // exactly the one vararg passed.
    unsafe { DbgPrintEx(component, level, c"%s".as_ptr(), line.bytes.as_ptr()) };
}

/// `log!(Info, "...", args)` — one line to the kernel debugger.
macro_rules! log {
    ($level:ident, $($arg:tt)*) => {
        $crate::kernel::log::write($crate::kernel::log::Level::$level, format_args!($($arg)*))
    };
}
