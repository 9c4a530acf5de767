//! Thin wrappers over the Win32 calls the scenarios make. Every call here exists in
//! an NT 5.2 user mode (ReactOS, Windows Server 2003); CancelIoEx (Vista) is looked up
//! at run time and reported as unavailable where it is missing or not implemented.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ptr::{null, null_mut};
use core::sync::atomic::{AtomicUsize, Ordering};

use windows_sys::Win32::Foundation::{
    CloseHandle, DUPLICATE_SAME_ACCESS, DuplicateHandle, ERROR_IO_PENDING, ERROR_NOT_FOUND, GENERIC_READ,
    GENERIC_WRITE, GetLastError, HANDLE, INVALID_HANDLE_VALUE, WAIT_OBJECT_0,
};
use windows_sys::Win32::Security::SECURITY_ATTRIBUTES;
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_ATTRIBUTE_NORMAL, FILE_FLAG_OVERLAPPED, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING,
    ReadFile,
};
use windows_sys::Win32::System::Environment::GetCommandLineW;
use windows_sys::Win32::System::IO::{CancelIo, DeviceIoControl, GetOverlappedResult, OVERLAPPED};
use windows_sys::Win32::System::LibraryLoader::{GetModuleFileNameW, GetProcAddress, LoadLibraryW};
use windows_sys::Win32::System::Performance::{QueryPerformanceCounter, QueryPerformanceFrequency};
use windows_sys::Win32::System::Registry::{
    HKEY, HKEY_LOCAL_MACHINE, KEY_READ, RegCloseKey, RegOpenKeyExW, RegQueryValueExW,
};
use windows_sys::Win32::System::SystemInformation::GetTickCount;
use windows_sys::Win32::System::Threading::{
    CreateEventW, CreateProcessW, CreateThread, GetCurrentProcess, INFINITE, PROCESS_INFORMATION, STARTUPINFOW,
    SetEvent, Sleep, TerminateProcess, WaitForSingleObject,
};

/// `STATUS_PENDING` in `OVERLAPPED::Internal` while a request is in flight.
const STATUS_PENDING: usize = 0x103;

/// A call that could not even be made (an API failed, a wait ran out).
#[derive(Clone, Debug)]
pub struct Fail(pub String);

impl From<&str> for Fail {
    fn from(s: &str) -> Self {
        Fail(s.into())
    }
}

pub fn last_error() -> u32 {
    // SAFETY: reads the calling thread's last-error value.
    unsafe { GetLastError() }
}

fn api_fail(what: &str) -> Fail {
    Fail(format!("{what} failed: {}", Status(last_error())))
}

/// The size of a Win32 structure, for its `cb`/`nLength` field (all are far below 4 GB).
#[allow(clippy::cast_possible_truncation)]
const fn size_u32<T>() -> u32 {
    size_of::<T>() as u32
}

pub fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(core::iter::once(0)).collect()
}

/// A Win32 error code as the caller saw it (GetLastError; 0 is success).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub u32);

impl Status {
    pub const SUCCESS: Status = Status(0);
    /// ERROR_INVALID_FUNCTION: STATUS_INVALID_DEVICE_REQUEST.
    pub const INVALID_FUNCTION: Status = Status(1);
    /// ERROR_PATH_NOT_FOUND: STATUS_OBJECT_PATH_NOT_FOUND.
    pub const PATH_NOT_FOUND: Status = Status(3);
    /// ERROR_NOT_SUPPORTED.
    pub const NOT_SUPPORTED: Status = Status(50);
    /// ERROR_SEM_TIMEOUT: STATUS_IO_TIMEOUT.
    pub const IO_TIMEOUT: Status = Status(121);
    /// ERROR_INSUFFICIENT_BUFFER: STATUS_BUFFER_TOO_SMALL.
    pub const BUFFER_TOO_SMALL: Status = Status(122);
    /// ERROR_CALL_NOT_IMPLEMENTED.
    pub const NOT_IMPLEMENTED: Status = Status(120);
    /// ERROR_OPERATION_ABORTED: STATUS_CANCELLED.
    pub const CANCELLED: Status = Status(995);
    /// ERROR_NOT_ENOUGH_QUOTA: STATUS_QUOTA_EXCEEDED.
    pub const QUOTA_EXCEEDED: Status = Status(1816);

    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "ERROR_SUCCESS",
            1 => "ERROR_INVALID_FUNCTION",
            2 => "ERROR_FILE_NOT_FOUND",
            3 => "ERROR_PATH_NOT_FOUND",
            5 => "ERROR_ACCESS_DENIED",
            6 => "ERROR_INVALID_HANDLE",
            50 => "ERROR_NOT_SUPPORTED",
            120 => "ERROR_CALL_NOT_IMPLEMENTED",
            121 => "ERROR_SEM_TIMEOUT",
            122 => "ERROR_INSUFFICIENT_BUFFER",
            433 => "ERROR_NO_SUCH_DEVICE",
            995 => "ERROR_OPERATION_ABORTED",
            1816 => "ERROR_NOT_ENOUGH_QUOTA",
            _ => "Win32 error",
        }
    }
}

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// A finished request.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: Status,
    pub bytes: usize,
    /// The first `bytes` bytes of the buffer.
    pub data: Vec<u8>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.status == Status::SUCCESS
    }
}

impl core::fmt::Display for Outcome {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}, {} bytes", self.status, self.bytes)
    }
}

// --- events, time, threads ------------------------------------------------------------

/// An owned kernel handle, closed on drop.
pub struct Owned(HANDLE);

// SAFETY: a kernel handle is a process-wide value usable from any thread.
unsafe impl Send for Owned {}
// SAFETY: as above; the calls made through `&Owned` are thread-safe kernel calls.
unsafe impl Sync for Owned {}

impl Owned {
    pub fn raw(&self) -> HANDLE {
        self.0
    }

    /// Waits up to `ms` for the object; true if it is signalled.
    pub fn wait(&self, ms: u32) -> bool {
        // SAFETY: an open handle owned by self.
        unsafe { WaitForSingleObject(self.0, ms) == WAIT_OBJECT_0 }
    }

    pub fn set(&self) {
        // SAFETY: an event handle owned by self.
        unsafe { SetEvent(self.0) };
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: owned by self and closed once.
        unsafe { CloseHandle(self.0) };
    }
}

/// An anonymous event; `inheritable` lets a child process use it (its value is passed
/// on the command line).
pub fn event(manual_reset: bool, inheritable: bool) -> Result<Owned, Fail> {
    let attributes = SECURITY_ATTRIBUTES {
        nLength: size_u32::<SECURITY_ATTRIBUTES>(),
        lpSecurityDescriptor: null_mut(),
        bInheritHandle: i32::from(inheritable),
    };
    // SAFETY: valid attributes, no name.
    let e = unsafe { CreateEventW(&raw const attributes, i32::from(manual_reset), 0, null()) };
    if e.is_null() { Err(api_fail("CreateEventW")) } else { Ok(Owned(e)) }
}

pub fn sleep_ms(ms: u32) {
    // SAFETY: no preconditions.
    unsafe { Sleep(ms) };
}

/// Milliseconds since boot (wraps after 49 days: compare with `wrapping_sub`).
pub fn tick_ms() -> u32 {
    // SAFETY: no preconditions.
    unsafe { GetTickCount() }
}

/// The performance counter, in ticks of [`counter_frequency`].
pub fn counter() -> i64 {
    let mut now = 0i64;
    // SAFETY: a valid out-parameter.
    unsafe { QueryPerformanceCounter(&raw mut now) };
    now
}

pub fn counter_frequency() -> i64 {
    let mut f = 0i64;
    // SAFETY: a valid out-parameter.
    unsafe { QueryPerformanceFrequency(&raw mut f) };
    f.max(1)
}

/// Seconds between two [`counter`] values.
pub fn seconds(from: i64, to: i64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let s = (to - from) as f64 / counter_frequency() as f64;
    s
}

/// A value one thread writes once and another reads after a synchronizing wait.
struct Slot<T>(UnsafeCell<Option<T>>);

// SAFETY: the writer stores before signalling (thread exit or SetEvent) and the reader
// loads only after waiting for that signal; the kernel's wait orders the accesses.
unsafe impl<T: Send> Sync for Slot<T> {}

impl<T> Slot<T> {
    fn new() -> Self {
        Slot(UnsafeCell::new(None))
    }

    /// # Safety
    /// No other thread accesses the slot at the same time (see the `Sync` impl).
    unsafe fn put(&self, value: T) {
        // SAFETY: exclusive by the caller's contract.
        unsafe { *self.0.get() = Some(value) };
    }

    /// # Safety
    /// As for `put`.
    unsafe fn take(&self) -> Option<T> {
        // SAFETY: exclusive by the caller's contract.
        unsafe { (*self.0.get()).take() }
    }
}

struct Start<R> {
    run: Box<dyn FnOnce() -> R + Send>,
    result: Arc<Slot<R>>,
}

unsafe extern "system" fn thread_start<R: Send>(parameter: *mut c_void) -> u32 {
    // SAFETY: `spawn` passed a leaked Box<Start<R>>, taken back exactly once here.
    let start = unsafe { Box::from_raw(parameter.cast::<Start<R>>()) };
    let value = (start.run)();
    // SAFETY: the joiner reads the slot only after this thread has exited.
    unsafe { start.result.put(value) };
    0
}

/// An OS thread running one closure.
pub struct Thread<R> {
    handle: Owned,
    result: Arc<Slot<R>>,
}

pub fn spawn<R: Send + 'static>(run: impl FnOnce() -> R + Send + 'static) -> Result<Thread<R>, Fail> {
    let result = Arc::new(Slot::new());
    let start = Box::into_raw(Box::new(Start { run: Box::new(run), result: Arc::clone(&result) }));
    // SAFETY: the start routine takes ownership of `start`; default stack size.
    let handle = unsafe { CreateThread(null(), 0, Some(thread_start::<R>), start.cast(), 0, null_mut()) };
    if handle.is_null() {
        let fail = api_fail("CreateThread");
        // SAFETY: the thread was not created, so the block is still ours.
        drop(unsafe { Box::from_raw(start) });
        return Err(fail);
    }
    Ok(Thread { handle: Owned(handle), result })
}

impl<R> Thread<R> {
    /// Waits up to `ms` for the thread to finish and returns its value. On time-out
    /// the thread is left running (it may be stuck in a call that never returns).
    pub fn join(self, ms: u32) -> Result<R, Fail> {
        if !self.handle.wait(ms) {
            core::mem::forget(self);
            return Err(Fail(format!("the thread did not finish within {} s", ms / 1000)));
        }
        // SAFETY: the thread has exited, so its write is complete and nobody else reads.
        unsafe { self.result.take() }.ok_or_else(|| "the thread ended without a result".into())
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The job slot between a caller and an [`AppThread`].
struct Mailbox {
    job: Slot<Option<Job>>,
    go: Owned,
    done: Owned,
}

/// An application thread that runs the calls sent to it, so that CancelIo and thread
/// exit act on the requests that thread issued.
pub struct AppThread {
    thread: Thread<()>,
    mailbox: Arc<Mailbox>,
}

impl AppThread {
    pub fn new() -> Result<Self, Fail> {
        let mailbox = Arc::new(Mailbox { job: Slot::new(), go: event(false, false)?, done: event(false, false)? });
        let theirs = Arc::clone(&mailbox);
        let thread = spawn(move || {
            loop {
                theirs.go.wait(INFINITE);
                // SAFETY: the caller stored the job before setting `go` and waits on
                // `done` before touching the slot again.
                match unsafe { theirs.job.take() }.flatten() {
                    Some(job) => {
                        job();
                        theirs.done.set();
                    }
                    None => return,
                }
            }
        })?;
        Ok(AppThread { thread, mailbox })
    }

    /// Runs `f` on this thread and returns its value (30 s at most).
    pub fn call<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<R, Fail> {
        let result = Arc::new(Slot::new());
        let theirs = Arc::clone(&result);
        let job: Job = Box::new(move || {
            // SAFETY: read by the caller only after `done` is set, which follows this.
            unsafe { theirs.put(f()) }
        });
        // SAFETY: the thread is idle (waiting on `go`), so the slot is ours.
        unsafe { self.mailbox.job.put(Some(job)) };
        self.mailbox.go.set();
        if !self.mailbox.done.wait(30_000) {
            return Err("an application thread did not answer within 30 s".into());
        }
        // SAFETY: `done` was set after the job stored its value.
        unsafe { result.take() }.ok_or_else(|| "an application thread's call gave no result".into())
    }

    /// Lets the thread return: the system then cancels the requests it issued.
    pub fn exit(self) -> Result<(), Fail> {
        // SAFETY: the thread is idle (waiting on `go`).
        unsafe { self.mailbox.job.put(None) };
        self.mailbox.go.set();
        self.thread.join(30_000)
    }
}

// --- the device -------------------------------------------------------------------------

/// One overlapped request in flight. Heap-allocated and never moved: the kernel writes
/// `ov` and `buffer` until the request completes.
#[repr(C)]
struct Request {
    ov: OVERLAPPED,
    buffer: Vec<u8>,
    handle: usize,
}

/// A request that returned ERROR_IO_PENDING. Dropped before it completed, its memory
/// is leaked on purpose (the kernel may still write to it).
pub struct Io {
    request: *mut Request,
    outcome: Option<Outcome>,
}

// SAFETY: the request block is plain heap memory; only the owner of the Io touches it.
unsafe impl Send for Io {}

impl Io {
    fn request(&self) -> Option<&Request> {
        // SAFETY: non-null until freed in `finish`, and only then set to null.
        unsafe { self.request.as_ref() }
    }

    /// `HasOverlappedIoCompleted`.
    fn completed(&self) -> bool {
        self.request().is_none_or(|r| {
            // SAFETY: the kernel writes Internal at completion; a volatile read of an
            // aligned usize sees the old or the new value.
            unsafe { core::ptr::read_volatile(&raw const r.ov.Internal) != STATUS_PENDING }
        })
    }

    fn finish(&mut self) -> Outcome {
        if let Some(o) = &self.outcome {
            return o.clone();
        }
        // SAFETY: completed (checked by the callers), so the kernel is done with it.
        let request = unsafe { Box::from_raw(self.request) };
        self.request = null_mut();
        let mut bytes = 0u32;
        // SAFETY: the OVERLAPPED of a completed request; bWait FALSE never touches the
        // file handle (which may be closed by now).
        let ok = unsafe { GetOverlappedResult(request.handle as HANDLE, &raw const request.ov, &raw mut bytes, 0) };
        let status = if ok != 0 { Status::SUCCESS } else { Status(last_error()) };
        let n = (bytes as usize).min(request.buffer.len());
        if !request.ov.hEvent.is_null() {
            // SAFETY: the request's own event, closed once.
            unsafe { CloseHandle(request.ov.hEvent) };
        }
        let outcome = Outcome { status, bytes: bytes as usize, data: request.buffer[..n].to_vec() };
        self.outcome = Some(outcome.clone());
        outcome
    }

    /// The outcome if the request completed, without waiting.
    pub fn poll(&mut self) -> Option<Outcome> {
        self.completed().then(|| self.finish())
    }

    /// Waits up to `ms` for the completion.
    pub fn wait(&mut self, ms: u32) -> Option<Outcome> {
        let start = tick_ms();
        while !self.completed() {
            let left = ms.saturating_sub(tick_ms().wrapping_sub(start));
            if left == 0 {
                return None;
            }
            let event = self.request().map_or(null_mut(), |r| r.ov.hEvent);
            if event.is_null() {
                sleep_ms(1);
            } else {
                // SAFETY: the request's own event, open while the request is.
                unsafe { WaitForSingleObject(event, left.min(20)) };
            }
        }
        Some(self.finish())
    }

    /// The OVERLAPPED's address (for CancelIoEx), while in flight.
    fn overlapped(&self) -> Option<*const OVERLAPPED> {
        self.request().map(|r| &raw const r.ov)
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        if !self.request.is_null() && self.completed() {
            self.finish();
        }
    }
}

/// What ReadFile returned.
pub enum Read {
    Done(Outcome),
    Pending(Io),
}

/// A handle to `\\.\StageDrvN`. Not closed on drop: scenarios close handles
/// explicitly, since closing is what many of them test.
#[derive(Clone, Copy, Debug)]
pub struct Device {
    raw: usize,
    pub overlapped: bool,
}

/// CreateFile(`\\.\StageDrv<device><suffix>`), read/write, shared.
pub fn open(device: u32, suffix: &str, overlapped: bool) -> Result<Device, Status> {
    let path = wide(&format!(r"\\.\StageDrv{device}{suffix}"));
    let flags = if overlapped { FILE_FLAG_OVERLAPPED } else { FILE_ATTRIBUTE_NORMAL };
    // SAFETY: a NUL-terminated path; no security attributes or template.
    let h = unsafe {
        CreateFileW(
            path.as_ptr(),
            GENERIC_READ | GENERIC_WRITE,
            FILE_SHARE_READ | FILE_SHARE_WRITE,
            null(),
            OPEN_EXISTING,
            flags,
            null_mut(),
        )
    };
    if h == INVALID_HANDLE_VALUE { Err(Status(last_error())) } else { Ok(Device { raw: h as usize, overlapped }) }
}

/// Whether CancelIoEx can be used, and why not.
pub enum CancelEx {
    Done,
    Unavailable(String),
}

type CancelIoExFn = unsafe extern "system" fn(HANDLE, *const OVERLAPPED) -> i32;

/// 0: not looked up yet; 1: absent; otherwise the address of CancelIoEx.
static CANCEL_IO_EX: AtomicUsize = AtomicUsize::new(0);

fn cancel_io_ex_routine() -> Option<CancelIoExFn> {
    let mut address = CANCEL_IO_EX.load(Ordering::Acquire);
    if address == 0 {
        address = 1;
        // kernel32 has it from Vista on; ReactOS keeps its NT6 additions in kernel32_vista.
        for module in ["kernel32.dll", "kernel32_vista.dll"] {
            let name = wide(module);
            // SAFETY: a NUL-terminated module name; the module stays loaded.
            let m = unsafe { LoadLibraryW(name.as_ptr()) };
            if m.is_null() {
                continue;
            }
            // SAFETY: a loaded module and a NUL-terminated export name.
            if let Some(f) = unsafe { GetProcAddress(m, c"CancelIoEx".as_ptr().cast()) } {
                address = f as usize;
                break;
            }
        }
        CANCEL_IO_EX.store(address, Ordering::Release);
    }
    // SAFETY: an address GetProcAddress returned for CancelIoEx, which has this signature.
    (address > 1).then(|| unsafe { core::mem::transmute::<usize, CancelIoExFn>(address) })
}

impl Device {
    /// ReadFile of `length` bytes: waits on a synchronous handle; on an overlapped one
    /// a request that pends comes back as [`Read::Pending`]. `event` false leaves
    /// `hEvent` NULL (completion is then polled: for benchmarks with many requests).
    pub fn read_with(self, length: usize, event: bool) -> Result<Read, Fail> {
        let len = u32::try_from(length).map_err(|_| "read too long")?;
        if !self.overlapped {
            let mut buffer = vec![0u8; length];
            let mut bytes = 0u32;
            // SAFETY: the buffer holds `len` bytes; no OVERLAPPED on a synchronous handle.
            let ok = unsafe { ReadFile(self.raw as HANDLE, buffer.as_mut_ptr(), len, &raw mut bytes, null_mut()) };
            let status = if ok != 0 { Status::SUCCESS } else { Status(last_error()) };
            buffer.truncate(bytes as usize);
            return Ok(Read::Done(Outcome { status, bytes: bytes as usize, data: buffer }));
        }
        // SAFETY: OVERLAPPED is plain data; all-zero is its documented initial state.
        let mut ov: OVERLAPPED = unsafe { core::mem::zeroed() };
        if event {
            ov.hEvent = self::event(true, false)?.into_raw();
        }
        let request = Box::into_raw(Box::new(Request { ov, buffer: vec![0; length], handle: self.raw }));
        // SAFETY: the block stays allocated until the request completed (see Io).
        let ok = unsafe {
            ReadFile(self.raw as HANDLE, (*request).buffer.as_mut_ptr(), len, null_mut(), &raw mut (*request).ov)
        };
        let error = if ok != 0 { 0 } else { last_error() };
        let mut io = Io { request, outcome: None };
        if ok == 0 && error == ERROR_IO_PENDING {
            return Ok(Read::Pending(io));
        }
        if ok == 0 {
            // Failed at once: nothing was queued. Internal may still say pending, so
            // the block is freed here rather than through GetOverlappedResult.
            // SAFETY: the kernel did not take the request.
            let request = unsafe { Box::from_raw(io.request) };
            io.request = null_mut();
            io.outcome = Some(Outcome { status: Status(error), bytes: 0, data: Vec::new() });
            if !request.ov.hEvent.is_null() {
                // SAFETY: the request's own event, closed once.
                unsafe { CloseHandle(request.ov.hEvent) };
            }
            return Ok(Read::Done(Outcome { status: Status(error), bytes: 0, data: Vec::new() }));
        }
        Ok(Read::Done(io.finish()))
    }

    pub fn read(self, length: usize) -> Result<Read, Fail> {
        self.read_with(length, true)
    }

    /// DeviceIoControl (METHOD_BUFFERED), waiting for the result.
    pub fn ioctl(self, code: u32, input: &[u8], output_length: usize) -> Result<Outcome, Fail> {
        let in_len = u32::try_from(input.len()).map_err(|_| "input too long")?;
        let out_len = u32::try_from(output_length).map_err(|_| "output too long")?;
        let mut output = vec![0u8; output_length];
        let mut bytes = 0u32;
        // SAFETY: OVERLAPPED is plain data; all-zero is its documented initial state.
        let mut ov: OVERLAPPED = unsafe { core::mem::zeroed() };
        let done = event(true, false)?;
        ov.hEvent = done.raw();
        let (ovp, count) = if self.overlapped { (&raw mut ov, null_mut()) } else { (null_mut(), &raw mut bytes) };
        // SAFETY: the buffers hold the lengths passed; the OVERLAPPED (if any) lives on
        // this stack frame and is waited for below.
        let ok = unsafe {
            DeviceIoControl(
                self.raw as HANDLE,
                code,
                input.as_ptr().cast(),
                in_len,
                output.as_mut_ptr().cast(),
                out_len,
                count,
                ovp,
            )
        };
        let status = if !self.overlapped {
            if ok != 0 { Status::SUCCESS } else { Status(last_error()) }
        } else if ok == 0 && last_error() != ERROR_IO_PENDING {
            Status(last_error())
        } else {
            // SAFETY: our OVERLAPPED with its event: GetOverlappedResult waits on it.
            let ok = unsafe { GetOverlappedResult(self.raw as HANDLE, &raw const ov, &raw mut bytes, 1) };
            if ok != 0 { Status::SUCCESS } else { Status(last_error()) }
        };
        let n = (bytes as usize).min(output_length);
        output.truncate(n);
        Ok(Outcome { status, bytes: bytes as usize, data: output })
    }

    /// CancelIo: this thread's requests on the handle.
    pub fn cancel_io(self) -> Result<(), Fail> {
        // SAFETY: a handle of this process.
        if unsafe { CancelIo(self.raw as HANDLE) } == 0 && last_error() != ERROR_NOT_FOUND {
            return Err(api_fail("CancelIo"));
        }
        Ok(())
    }

    /// CancelIoEx of one request (`Some`) or of every request of the process on the
    /// handle (`None`); says so when this user mode cannot.
    pub fn cancel_io_ex(self, io: Option<&Io>) -> Result<CancelEx, Fail> {
        let Some(cancel) = cancel_io_ex_routine() else {
            return Ok(CancelEx::Unavailable("this user mode exports no CancelIoEx (kernel32, kernel32_vista)".into()));
        };
        let ov = match io {
            None => null(),
            Some(io) => match io.overlapped() {
                Some(ov) => ov,
                None => return Ok(CancelEx::Done),
            },
        };
        // SAFETY: a handle of this process and NULL or the OVERLAPPED of a request on
        // it that is still allocated (Io frees it only after completion).
        if unsafe { cancel(self.raw as HANDLE, ov) } != 0 {
            return Ok(CancelEx::Done);
        }
        match Status(last_error()) {
            s if s.0 == ERROR_NOT_FOUND => Ok(CancelEx::Done),
            s @ (Status::NOT_SUPPORTED | Status::NOT_IMPLEMENTED | Status::INVALID_FUNCTION) => {
                Ok(CancelEx::Unavailable(format!("CancelIoEx failed with {s}: not implemented by this kernel")))
            }
            s => Err(Fail(format!("CancelIoEx failed: {s}"))),
        }
    }

    pub fn close(self) -> Result<(), Fail> {
        // SAFETY: a handle of this process, closed once by the scenario's design.
        if unsafe { CloseHandle(self.raw as HANDLE) } == 0 {
            return Err(api_fail("CloseHandle"));
        }
        Ok(())
    }

    /// DuplicateHandle within the process (a second handle to the same file object).
    pub fn duplicate(self) -> Result<Device, Fail> {
        let mut copy: HANDLE = null_mut();
        // SAFETY: a handle of this process duplicated within the process.
        let ok = unsafe {
            let me = GetCurrentProcess();
            DuplicateHandle(me, self.raw as HANDLE, me, &raw mut copy, 0, 0, DUPLICATE_SAME_ACCESS)
        };
        if ok == 0 {
            Err(api_fail("DuplicateHandle"))
        } else {
            Ok(Device { raw: copy as usize, overlapped: self.overlapped })
        }
    }
}

impl Owned {
    /// Gives up ownership (the handle stays open).
    fn into_raw(self) -> HANDLE {
        let h = self.0;
        core::mem::forget(self);
        h
    }

    /// The handle's value, as a child process inheriting it sees it.
    pub fn value(&self) -> usize {
        self.0 as usize
    }

    /// Takes ownership of an inherited handle value.
    ///
    /// # Safety
    /// `value` is an open handle of this process that nothing else closes.
    pub unsafe fn from_value(value: usize) -> Owned {
        Owned(value as HANDLE)
    }
}

// --- processes, registry, command line ------------------------------------------------

/// Starts this program again with `arguments`, inheriting inheritable handles.
pub fn spawn_self(arguments: &str) -> Result<Owned, Fail> {
    let mut path = vec![0u16; 1024];
    // SAFETY: the buffer holds its length in UTF-16 units; NULL is this executable.
    let n =
        unsafe { GetModuleFileNameW(null_mut(), path.as_mut_ptr(), u32::try_from(path.len()).unwrap_or(0)) } as usize;
    if n == 0 || n >= path.len() {
        return Err(api_fail("GetModuleFileNameW"));
    }
    let exe = String::from_utf16_lossy(&path[..n]);
    let mut command = wide(&format!("\"{exe}\" {arguments}"));
    // SAFETY: STARTUPINFOW is plain data; cb is set below.
    let mut startup: STARTUPINFOW = unsafe { core::mem::zeroed() };
    startup.cb = size_u32::<STARTUPINFOW>();
    // SAFETY: plain data, written by CreateProcessW.
    let mut info: PROCESS_INFORMATION = unsafe { core::mem::zeroed() };
    // SAFETY: a writable NUL-terminated command line; the structures live across the call.
    let ok = unsafe {
        CreateProcessW(
            null(),
            command.as_mut_ptr(),
            null(),
            null(),
            1,
            0,
            null(),
            null(),
            &raw const startup,
            &raw mut info,
        )
    };
    if ok == 0 {
        return Err(api_fail("CreateProcessW"));
    }
    drop(Owned(info.hThread));
    Ok(Owned(info.hProcess))
}

/// The exit code of a process that has ended.
pub fn exit_code(process: &Owned) -> Option<u32> {
    let mut code = 0u32;
    // SAFETY: a process handle with query access (we created the process).
    (unsafe { windows_sys::Win32::System::Threading::GetExitCodeProcess(process.raw(), &raw mut code) } != 0)
        .then_some(code)
}

pub fn terminate(process: &Owned) -> Result<(), Fail> {
    // SAFETY: a process handle with terminate access (we created the process).
    if unsafe { TerminateProcess(process.raw(), 1) } == 0 {
        return Err(api_fail("TerminateProcess"));
    }
    Ok(())
}

/// A REG_DWORD under HKEY_LOCAL_MACHINE, if present.
pub fn registry_dword(key: &str, value: &str) -> Option<u32> {
    let (key, value) = (wide(key), wide(value));
    let mut handle: HKEY = null_mut();
    // SAFETY: NUL-terminated names and a valid out-parameter.
    if unsafe { RegOpenKeyExW(HKEY_LOCAL_MACHINE, key.as_ptr(), 0, KEY_READ, &raw mut handle) } != 0 {
        return None;
    }
    let (mut data, mut size, mut kind) = (0u32, 4u32, 0u32);
    // SAFETY: an open key; the output is a DWORD of the size passed.
    let error = unsafe {
        RegQueryValueExW(handle, value.as_ptr(), null(), &raw mut kind, (&raw mut data).cast(), &raw mut size)
    };
    // SAFETY: the key opened above, closed once.
    unsafe { RegCloseKey(handle) };
    // REG_DWORD is type 4.
    (error == 0 && kind == 4 && size == 4).then_some(data)
}

pub use windows_sys::Win32::System::Services::SERVICE_STOPPED;

/// The current state of a service (SERVICE_STOPPED, SERVICE_RUNNING...).
pub fn service_state(name: &str) -> Result<u32, String> {
    use windows_sys::Win32::System::Services::{
        CloseServiceHandle, OpenSCManagerW, OpenServiceW, QueryServiceStatus, SC_MANAGER_CONNECT, SERVICE_QUERY_STATUS,
        SERVICE_STATUS,
    };
    let name = wide(name);
    // SAFETY: local machine, default database.
    let scm = unsafe { OpenSCManagerW(null(), null(), SC_MANAGER_CONNECT) };
    if scm.is_null() {
        return Err(format!("OpenSCManagerW failed: {}", Status(last_error())));
    }
    // SAFETY: an open manager handle and a NUL-terminated name.
    let service = unsafe { OpenServiceW(scm, name.as_ptr(), SERVICE_QUERY_STATUS) };
    let result = if service.is_null() {
        Err(format!("OpenServiceW failed: {}", Status(last_error())))
    } else {
        // SAFETY: plain data, filled by the call.
        let mut status: SERVICE_STATUS = unsafe { core::mem::zeroed() };
        // SAFETY: an open service handle and a valid out-parameter.
        let ok = unsafe { QueryServiceStatus(service, &raw mut status) };
        // SAFETY: opened above, closed once.
        unsafe { CloseServiceHandle(service) };
        if ok == 0 {
            Err(format!("QueryServiceStatus failed: {}", Status(last_error())))
        } else {
            Ok(status.dwCurrentState)
        }
    };
    // SAFETY: opened above, closed once.
    unsafe { CloseServiceHandle(scm) };
    result
}

/// The process's command line, split into words (the program name first).
pub fn command_line() -> Vec<String> {
    // SAFETY: returns a pointer to the process's NUL-terminated command line.
    let p = unsafe { GetCommandLineW() };
    let mut units = Vec::new();
    let mut at = 0;
    // SAFETY: reads up to the terminating NUL of that string.
    while !p.is_null() && unsafe { *p.add(at) } != 0 {
        // SAFETY: as above.
        units.push(unsafe { *p.add(at) });
        at += 1;
    }
    crate::args::split_command_line(&String::from_utf16_lossy(&units))
}
