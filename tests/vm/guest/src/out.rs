//! Output: every line goes to the debugger (OutputDebugStringA, which reaches the
//! kernel's debug port: COM1 in the VM) and to standard output (a results file where
//! the guest script redirects it). Lines start with `stageguest: ` so the host can
//! pick them out of the kernel's log.

use alloc::vec::Vec;

use windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE;
use windows_sys::Win32::Storage::FileSystem::WriteFile;
use windows_sys::Win32::System::Console::{GetStdHandle, STD_OUTPUT_HANDLE};
use windows_sys::Win32::System::Diagnostics::Debug::OutputDebugStringA;

/// The kernel's debug print keeps 512 bytes of a message: stay well below.
const CHUNK: usize = 400;

/// Prints `stageguest: <text>` (long text in several lines, non-ASCII as `?`).
pub fn say(text: &str) {
    let ascii: Vec<u8> = text.chars().map(|c| if c.is_ascii() && c != '\0' { c as u8 } else { b'?' }).collect();
    for part in ascii.chunks(CHUNK) {
        let mut line = Vec::with_capacity(part.len() + 16);
        line.extend_from_slice(b"stageguest: ");
        line.extend_from_slice(part);
        line.extend_from_slice(b"\r\n");
        write_stdout(&line);
        line.truncate(line.len() - 2);
        line.extend_from_slice(b"\n\0");
        // SAFETY: a NUL-terminated buffer that lives across the call.
        unsafe { OutputDebugStringA(line.as_ptr()) };
    }
}

fn write_stdout(bytes: &[u8]) {
    // SAFETY: GetStdHandle has no preconditions; the handle is checked before use.
    let out = unsafe { GetStdHandle(STD_OUTPUT_HANDLE) };
    if out.is_null() || out == INVALID_HANDLE_VALUE {
        return;
    }
    let mut written = 0u32;
    let length = u32::try_from(bytes.len()).unwrap_or(0);
    // SAFETY: the buffer holds `length` bytes; synchronous write, no OVERLAPPED.
    unsafe { WriteFile(out, bytes.as_ptr(), length, &raw mut written, core::ptr::null_mut()) };
}

/// `say!("...", args)`: one formatted line.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::out::say(&alloc::format!($($arg)*))
    };
}
