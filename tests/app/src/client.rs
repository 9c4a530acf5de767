//! What a scenario may do to the driver, as one small trait with two backends: real
//! Win32 calls ([`crate::win32`], on Windows and under Wine) and ntsim with stagedrv
//! loaded ([`crate::sim`], everywhere else).
//!
//! Everything is named by plain numbers (handles, pending requests, app threads) so the
//! trait stays object-safe and the scenarios never see a backend type.

use std::fmt;

/// An open handle, as the backend numbers it.
pub type H = u64;
/// A request that pended (an overlapped ReadFile that returned ERROR_IO_PENDING).
pub type Io = usize;
/// An application thread: 0 is the main thread, others come from [`Client::spawn_thread`].
pub type Tid = usize;

/// The final status of a request, normalised so both backends compare equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Success,
    Cancelled,
    BufferTooSmall,
    InvalidDeviceRequest,
    IoTimeout,
    QuotaExceeded,
    #[cfg_attr(windows, allow(dead_code))]
    DeletePending,
    PathNotFound,
    NoSuchDevice,
    AccessDenied,
    InvalidHandle,
    /// Anything else (the raw code is in [`Status::code`]).
    Other,
}

/// Where a status code comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// An NTSTATUS (ntsim).
    #[cfg_attr(windows, allow(dead_code))]
    Nt,
    /// A Win32 error code from GetLastError.
    #[cfg_attr(not(windows), allow(dead_code))]
    Win32,
}

/// A status as the caller saw it: the normalised kind plus the raw code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub kind: Kind,
    pub space: Space,
    pub code: u32,
}

impl Status {
    #[cfg_attr(windows, allow(dead_code))]
    pub fn from_nt(code: u32) -> Self {
        let kind = match code {
            0 => Kind::Success,
            0xC000_0120 => Kind::Cancelled,
            0xC000_0023 => Kind::BufferTooSmall,
            0xC000_0010 => Kind::InvalidDeviceRequest,
            0xC000_00B5 => Kind::IoTimeout,
            0xC000_0044 => Kind::QuotaExceeded,
            0xC000_0056 => Kind::DeletePending,
            0xC000_003A => Kind::PathNotFound,
            0xC000_000E => Kind::NoSuchDevice,
            0xC000_0022 => Kind::AccessDenied,
            0xC000_0008 => Kind::InvalidHandle,
            _ => Kind::Other,
        };
        Status { kind, space: Space::Nt, code }
    }

    #[cfg_attr(not(windows), allow(dead_code))]
    pub fn from_win32(code: u32) -> Self {
        let kind = match code {
            0 => Kind::Success,
            995 => Kind::Cancelled,          // ERROR_OPERATION_ABORTED
            122 => Kind::BufferTooSmall,     // ERROR_INSUFFICIENT_BUFFER
            1 => Kind::InvalidDeviceRequest, // ERROR_INVALID_FUNCTION
            121 => Kind::IoTimeout,          // ERROR_SEM_TIMEOUT
            1816 => Kind::QuotaExceeded,     // ERROR_NOT_ENOUGH_QUOTA
            3 => Kind::PathNotFound,         // ERROR_PATH_NOT_FOUND
            2 | 433 => Kind::NoSuchDevice,   // ERROR_FILE_NOT_FOUND, ERROR_NO_SUCH_DEVICE
            5 => Kind::AccessDenied,         // ERROR_ACCESS_DENIED (also STATUS_DELETE_PENDING)
            6 => Kind::InvalidHandle,        // ERROR_INVALID_HANDLE
            _ => Kind::Other,
        };
        Status { kind, space: Space::Win32, code }
    }

    pub fn is(self, kind: Kind) -> bool {
        self.kind == kind
    }

    /// The symbolic name in the status's own space.
    pub fn name(self) -> &'static str {
        match (self.space, self.kind) {
            (Space::Nt, Kind::Success) => "STATUS_SUCCESS",
            (Space::Nt, Kind::Cancelled) => "STATUS_CANCELLED",
            (Space::Nt, Kind::BufferTooSmall) => "STATUS_BUFFER_TOO_SMALL",
            (Space::Nt, Kind::InvalidDeviceRequest) => "STATUS_INVALID_DEVICE_REQUEST",
            (Space::Nt, Kind::IoTimeout) => "STATUS_IO_TIMEOUT",
            (Space::Nt, Kind::QuotaExceeded) => "STATUS_QUOTA_EXCEEDED",
            (Space::Nt, Kind::DeletePending) => "STATUS_DELETE_PENDING",
            (Space::Nt, Kind::PathNotFound) => "STATUS_OBJECT_PATH_NOT_FOUND",
            (Space::Nt, Kind::NoSuchDevice) => "STATUS_NO_SUCH_DEVICE",
            (Space::Nt, Kind::AccessDenied) => "STATUS_ACCESS_DENIED",
            (Space::Nt, Kind::InvalidHandle) => "STATUS_INVALID_HANDLE",
            (Space::Win32, Kind::Success) => "ERROR_SUCCESS",
            (Space::Win32, Kind::Cancelled) => "ERROR_OPERATION_ABORTED",
            (Space::Win32, Kind::BufferTooSmall) => "ERROR_INSUFFICIENT_BUFFER",
            (Space::Win32, Kind::InvalidDeviceRequest) => "ERROR_INVALID_FUNCTION",
            (Space::Win32, Kind::IoTimeout) => "ERROR_SEM_TIMEOUT",
            (Space::Win32, Kind::QuotaExceeded) => "ERROR_NOT_ENOUGH_QUOTA",
            (Space::Win32, Kind::PathNotFound) => "ERROR_PATH_NOT_FOUND",
            (Space::Win32, Kind::NoSuchDevice) if self.code == 2 => "ERROR_FILE_NOT_FOUND",
            (Space::Win32, Kind::NoSuchDevice) => "ERROR_NO_SUCH_DEVICE",
            (Space::Win32, Kind::AccessDenied) => "ERROR_ACCESS_DENIED",
            (Space::Win32, Kind::InvalidHandle) => "ERROR_INVALID_HANDLE",
            (_, _) => "",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        match (name.is_empty(), self.space) {
            (true, Space::Nt) => write!(f, "NTSTATUS {:#010x}", self.code),
            (true, Space::Win32) => write!(f, "Win32 error {}", self.code),
            (false, Space::Nt) => write!(f, "{name}"),
            (false, Space::Win32) => write!(f, "{name} ({})", self.code),
        }
    }
}

/// What to do about a CreateFile of `\\.\StageDrvN` that failed with `status`, for the
/// Win32 errors that nearly always have one cause; `None` for the others.
pub fn open_hint(status: Status) -> Option<&'static str> {
    match (status.space, status.code) {
        // The device's DACL (src/security.rs) admits SYSTEM and Administrators only.
        (Space::Win32, 5) => {
            Some("run elevated: the device admits only SYSTEM and Administrators (or set OpenToEveryone=1)")
        }
        // STATUS_OBJECT_NAME_NOT_FOUND (no such link) and STATUS_NO_SUCH_DEVICE (a stop is
        // waiting for the last handle) both arrive as ERROR_FILE_NOT_FOUND.
        (Space::Win32, 2) => Some(
            "is stagedrv running? sc.exe query stagedrv (STOP_PENDING: a stop waits for open handles); \
             sc.exe start stagedrv or install.ps1 starts it",
        ),
        _ => None,
    }
}

/// The message for a failed CreateFile of `\\.\StageDrv<device>`, with its hint if any.
pub fn open_failed(device: u32, status: Status) -> String {
    match open_hint(status) {
        Some(hint) => format!(r"CreateFile(\\.\StageDrv{device}) failed: {status}: {hint}"),
        None => format!(r"CreateFile(\\.\StageDrv{device}) failed: {status}"),
    }
}

/// A completed request.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: Status,
    /// IoStatus.Information / the byte count.
    pub bytes: usize,
    /// The first `bytes` bytes of the buffer.
    pub data: Vec<u8>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.status.is(Kind::Success)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {} bytes", self.status, self.bytes)
    }
}

/// What ReadFile returned.
pub enum Read {
    /// Completed at once (success or failure).
    Done(Outcome),
    /// ERROR_IO_PENDING on an overlapped handle.
    Pending(Io),
}

/// A backend failure: not a scenario's wrong answer but "could not even ask" (an API
/// call failed, a wait timed out, or ntsim stopped the machine with a bug check).
#[derive(Clone, Debug)]
pub struct Fail(pub String);

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Fail {
    fn from(s: String) -> Self {
        Fail(s)
    }
}

impl From<&str> for Fail {
    fn from(s: &str) -> Self {
        Fail(s.to_owned())
    }
}

/// How the child process with pending reads ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildEnd {
    /// TerminateProcess from the parent.
    Killed,
    /// The child calls ExitProcess itself with its reads still pending.
    Exits,
}

/// One stress worker: a little state machine that does one thing per [`Worker::step`],
/// always on the same application thread. Win32 runs each worker on its own OS
/// thread; ntsim interleaves the steps of all workers on simulated threads.
pub trait Worker: Send {
    /// Does one action; returns false when the worker is finished.
    fn step(&mut self, client: &mut dyn Client, on: Tid) -> Result<bool, Fail>;
}

/// Which implementation answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    #[cfg_attr(windows, allow(dead_code))]
    Ntsim,
    #[cfg_attr(not(windows), allow(dead_code))]
    Win32,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Ntsim => "ntsim",
            Backend::Win32 => "win32",
        }
    }
}

/// The operations scenarios use. `on` names the application thread that makes the
/// call (CancelIo and thread exit are per thread).
pub trait Client {
    /// CreateFile(`\\.\StageDrv<device>` + `suffix`), read/write access.
    fn open(&mut self, on: Tid, device: u32, suffix: &str, overlapped: bool) -> Result<Result<H, Status>, Fail>;
    /// ReadFile of `length` bytes: waits on a synchronous handle; on an overlapped one a
    /// request that pends comes back as [`Read::Pending`].
    fn read(&mut self, on: Tid, handle: H, length: usize) -> Result<Read, Fail>;
    /// Waits (at most `timeout_ms`) for a pending request's completion and returns it
    /// (GetOverlappedResult); `None` if it did not complete in time.
    fn wait(&mut self, io: Io, timeout_ms: u64) -> Result<Option<Outcome>, Fail>;
    /// The completion if it happened, without waiting.
    fn poll(&mut self, io: Io) -> Result<Option<Outcome>, Fail>;
    /// CancelIo: the calling thread's requests on `handle`.
    fn cancel_io(&mut self, on: Tid, handle: H) -> Result<(), Fail>;
    /// CancelIoEx: one request, or every request of the process on `handle`.
    fn cancel_io_ex(&mut self, on: Tid, handle: H, io: Option<Io>) -> Result<(), Fail>;
    fn close(&mut self, on: Tid, handle: H) -> Result<(), Fail>;
    /// DeviceIoControl (METHOD_BUFFERED), synchronous.
    fn ioctl(&mut self, on: Tid, handle: H, code: u32, input: &[u8], output_length: usize) -> Result<Outcome, Fail>;
    /// DuplicateHandle within the process.
    fn duplicate(&mut self, on: Tid, handle: H) -> Result<H, Fail>;
    /// A new application thread, idle until used.
    fn spawn_thread(&mut self) -> Result<Tid, Fail>;
    /// The thread returns (its pending requests are cancelled by the system).
    fn exit_thread(&mut self, thread: Tid) -> Result<(), Fail>;
    /// Another process opens `\\.\StageDrv<device>`, leaves `reads` reads pending and
    /// ends as `end` says. Returns how many of its reads were pending when it ended.
    fn child_with_pending_reads(&mut self, device: u32, reads: usize, end: ChildEnd) -> Result<usize, Fail>;
    /// Lets time pass (simulated time in ntsim).
    fn sleep_ms(&mut self, ms: u64) -> Result<(), Fail>;
    /// The driver's configured `ReadTimeoutSeconds` (None: unknown or off).
    fn read_timeout_s(&self) -> Option<u32>;
    /// Runs the workers to completion, each on its own application thread.
    fn run_workers(&mut self, workers: Vec<Box<dyn Worker>>) -> Result<(), Fail>;
    /// Called after each scenario: what the driver did meanwhile, for a person to read
    /// (ntsim's trace); empty where the backend cannot see it.
    fn activity(&mut self) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spaces_name_the_statuses_the_scenarios_expect() {
        // What the driver completes with, and what Win32 makes of it (RtlNtStatusToDosError).
        let pairs = [
            (0xC000_0120, 995, Kind::Cancelled),
            (0xC000_0023, 122, Kind::BufferTooSmall),
            (0xC000_0010, 1, Kind::InvalidDeviceRequest),
            (0xC000_00B5, 121, Kind::IoTimeout),
            (0xC000_0044, 1816, Kind::QuotaExceeded),
            (0xC000_003A, 3, Kind::PathNotFound),
            (0, 0, Kind::Success),
        ];
        for (nt, win32, kind) in pairs {
            assert_eq!(Status::from_nt(nt).kind, kind);
            assert_eq!(Status::from_win32(win32).kind, kind);
            assert!(!Status::from_nt(nt).name().is_empty() && !Status::from_win32(win32).name().is_empty());
        }
        assert_eq!(Status::from_nt(0xC000_0120).to_string(), "STATUS_CANCELLED");
        assert_eq!(Status::from_win32(995).to_string(), "ERROR_OPERATION_ABORTED (995)");
        assert_eq!(Status::from_nt(0xC000_9999).to_string(), "NTSTATUS 0xc0009999");
    }

    #[test]
    fn a_refused_open_tells_the_user_to_run_elevated() {
        assert_eq!(
            open_failed(0, Status::from_win32(5)),
            r"CreateFile(\\.\StageDrv0) failed: ERROR_ACCESS_DENIED (5): run elevated: the device admits only SYSTEM and Administrators (or set OpenToEveryone=1)"
        );
        let missing = open_failed(1, Status::from_win32(2));
        assert!(
            missing.starts_with(r"CreateFile(\\.\StageDrv1) failed: ERROR_FILE_NOT_FOUND (2): is stagedrv running?"),
            "{missing}"
        );
        // Other errors, and NTSTATUS codes (ntsim), get no hint.
        assert_eq!(open_hint(Status::from_win32(995)), None);
        assert_eq!(open_hint(Status::from_nt(0xC000_0022)), None);
        assert_eq!(open_failed(0, Status::from_win32(87)), r"CreateFile(\\.\StageDrv0) failed: Win32 error 87");
    }
}
