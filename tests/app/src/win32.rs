//! The Win32 backend: the installed stagedrv through the real API (CreateFileW,
//! ReadFile with OVERLAPPED, GetOverlappedResult, CancelIo/CancelIoEx, CloseHandle,
//! DeviceIoControl, DuplicateHandle). Runs on Windows and under Wine.
//!
//! Application thread 0 is the calling thread. Other application threads are OS
//! threads that run the calls sent to them, so CancelIo and thread exit act on the
//! requests that thread issued, as the scenarios mean. Handles are the HANDLE values;
//! a pending request is a heap block (OVERLAPPED, event, buffer) that stays put until
//! the request completes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    CloseHandle, DUPLICATE_SAME_ACCESS, DuplicateHandle, ERROR_IO_PENDING, ERROR_NOT_FOUND, GENERIC_READ,
    GENERIC_WRITE, GetLastError, HANDLE, INVALID_HANDLE_VALUE, WAIT_OBJECT_0,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_ATTRIBUTE_NORMAL, FILE_FLAG_OVERLAPPED, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING,
    ReadFile,
};
use windows_sys::Win32::System::IO::{CancelIo, CancelIoEx, DeviceIoControl, GetOverlappedResult, OVERLAPPED};
use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
use windows_sys::Win32::System::Registry::{HKEY_LOCAL_MACHINE, RRF_RT_REG_DWORD, RegGetValueW};
use windows_sys::Win32::System::Threading::{CreateEventW, GetCurrentProcess, WaitForSingleObject};

use crate::client::{ChildEnd, Client, Fail, H, Io, Outcome, Read, Status, Tid, Worker};
use crate::protocol::RECORD_SIZE;

/// `STATUS_PENDING` in `OVERLAPPED::Internal` while a request is in flight.
const STATUS_PENDING: usize = 0x103;

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

fn last_error() -> u32 {
    // SAFETY: reads the calling thread's last-error value; no preconditions.
    unsafe { GetLastError() }
}

fn api_fail(what: &str) -> Fail {
    Fail(format!("{what} failed: {}", Status::from_win32(last_error())))
}

/// `wine_get_version` from ntdll, which only Wine exports.
pub fn wine_version() -> Option<String> {
    let ntdll = wide("ntdll.dll");
    // SAFETY: a NUL-terminated module name; ntdll is always loaded.
    let module = unsafe { GetModuleHandleW(ntdll.as_ptr()) };
    if module.is_null() {
        return None;
    }
    // SAFETY: a loaded module and a NUL-terminated export name.
    let export = unsafe { GetProcAddress(module, c"wine_get_version".as_ptr().cast()) }?;
    // SAFETY: Wine's wine_get_version takes nothing and returns a static C string.
    let get: unsafe extern "C" fn() -> *const std::ffi::c_char = unsafe { std::mem::transmute(export) };
    // SAFETY: as above; the pointer is checked before use.
    let text = unsafe { get() };
    if text.is_null() {
        return Some(String::new());
    }
    // SAFETY: a NUL-terminated static string owned by ntdll.
    Some(unsafe { std::ffi::CStr::from_ptr(text) }.to_string_lossy().into_owned())
}

/// Opens and closes `\\.\StageDrv<device>`, so a run that cannot open the device says why
/// once instead of failing every scenario the same way.
pub fn check_open(device: u32) -> Result<(), String> {
    let handle = ops::open(&wide(&format!(r"\\.\StageDrv{device}")), false)
        .map_err(|status| crate::client::open_failed(device, status))?;
    ops::close(handle).map_err(|fail| fail.0)
}

/// A manual-reset event for one OVERLAPPED request.
fn event() -> Result<HANDLE, Fail> {
    // SAFETY: no security attributes, no name: an anonymous manual-reset event.
    let e = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
    if e.is_null() { Err(api_fail("CreateEventW")) } else { Ok(e) }
}

/// One overlapped request in flight. Boxed and never moved: the kernel writes to
/// `ov` and `buffer` until the request completes.
#[repr(C)]
struct Request {
    ov: OVERLAPPED,
    buffer: Vec<u8>,
    handle: usize,
}

impl Request {
    fn new(handle: usize, length: usize) -> Result<Box<Request>, Fail> {
        // SAFETY: OVERLAPPED is plain data; all-zero is its documented initial state.
        let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
        ov.hEvent = event()?;
        Ok(Box::new(Request { ov, buffer: vec![0; length], handle }))
    }

    /// `HasOverlappedIoCompleted`.
    fn completed(&self) -> bool {
        // SAFETY: the kernel writes Internal once the request completes; a volatile
        // read of an aligned usize sees either the old or the new value.
        unsafe { std::ptr::read_volatile(&raw const self.ov.Internal) != STATUS_PENDING }
    }

    /// GetOverlappedResult once the request completed (or to wait for it).
    fn result(&mut self, wait: bool) -> Outcome {
        let mut bytes = 0u32;
        // SAFETY: `ov` belongs to a request issued on `handle`; with an event in the
        // OVERLAPPED the handle itself is not waited on (it may be closed by now).
        let ok =
            unsafe { GetOverlappedResult(self.handle as HANDLE, &raw const self.ov, &raw mut bytes, i32::from(wait)) };
        let status = if ok != 0 { Status::from_win32(0) } else { Status::from_win32(last_error()) };
        let n = (bytes as usize).min(self.buffer.len());
        Outcome { status, bytes: bytes as usize, data: self.buffer[..n].to_vec() }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        // SAFETY: the event was created for this request and is closed once.
        unsafe { CloseHandle(self.ov.hEvent) };
    }
}

/// Where a pending request stands.
enum Slot {
    /// In flight: the address of a leaked `Box<Request>`.
    Pending(usize),
    Done(Outcome),
}

enum Raw {
    Done(Outcome),
    Pending(usize),
}

/// What one application thread does with a request: the system calls themselves,
/// on whichever OS thread runs them. Only plain numbers cross threads.
mod ops {
    use super::{
        CancelIo, CancelIoEx, CloseHandle, CreateFileW, DUPLICATE_SAME_ACCESS, DeviceIoControl, DuplicateHandle,
        ERROR_IO_PENDING, ERROR_NOT_FOUND, FILE_ATTRIBUTE_NORMAL, FILE_FLAG_OVERLAPPED, FILE_SHARE_READ,
        FILE_SHARE_WRITE, Fail, GENERIC_READ, GENERIC_WRITE, GetCurrentProcess, HANDLE, INVALID_HANDLE_VALUE,
        OPEN_EXISTING, OVERLAPPED, Outcome, Raw, ReadFile, Request, Status, api_fail, last_error,
    };

    pub fn open(path: &[u16], overlapped: bool) -> Result<usize, Status> {
        let flags = if overlapped { FILE_FLAG_OVERLAPPED } else { FILE_ATTRIBUTE_NORMAL };
        // SAFETY: a NUL-terminated path; no security attributes or template.
        let h = unsafe {
            CreateFileW(
                path.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                FILE_SHARE_READ | FILE_SHARE_WRITE,
                std::ptr::null(),
                OPEN_EXISTING,
                flags,
                std::ptr::null_mut(),
            )
        };
        if h == INVALID_HANDLE_VALUE { Err(Status::from_win32(last_error())) } else { Ok(h as usize) }
    }

    /// ReadFile: synchronous on a synchronous handle; on an overlapped one a request
    /// that pends is returned as the address of its (leaked) block.
    pub fn read(handle: usize, length: usize, overlapped: bool) -> Result<Raw, Fail> {
        let len = u32::try_from(length).map_err(|_| "read too long")?;
        if !overlapped {
            let mut buffer = vec![0u8; length];
            let mut bytes = 0u32;
            // SAFETY: the buffer holds `len` bytes; no OVERLAPPED on a synchronous handle.
            let ok =
                unsafe { ReadFile(handle as HANDLE, buffer.as_mut_ptr(), len, &raw mut bytes, std::ptr::null_mut()) };
            let status = if ok != 0 { Status::from_win32(0) } else { Status::from_win32(last_error()) };
            buffer.truncate(bytes as usize);
            return Ok(Raw::Done(Outcome { status, bytes: bytes as usize, data: buffer }));
        }
        let mut request = Request::new(handle, length)?;
        let buffer = request.buffer.as_mut_ptr();
        // SAFETY: the block is heap-allocated and outlives the request (it is leaked
        // below while pending); the byte count must be NULL with an OVERLAPPED.
        let ok = unsafe { ReadFile(handle as HANDLE, buffer, len, std::ptr::null_mut(), &raw mut request.ov) };
        if ok != 0 {
            return Ok(Raw::Done(request.result(false)));
        }
        let error = last_error();
        if error == ERROR_IO_PENDING {
            return Ok(Raw::Pending(Box::into_raw(request) as usize));
        }
        // Failed at once: nothing was queued, the block may go.
        Ok(Raw::Done(Outcome { status: Status::from_win32(error), bytes: 0, data: Vec::new() }))
    }

    pub fn cancel_io(handle: usize) -> Result<(), Fail> {
        // SAFETY: a handle of this process.
        if unsafe { CancelIo(handle as HANDLE) } == 0 && last_error() != ERROR_NOT_FOUND {
            return Err(api_fail("CancelIo"));
        }
        Ok(())
    }

    /// CancelIoEx; `ov` 0 means every request of the process on the handle.
    pub fn cancel_io_ex(handle: usize, ov: usize) -> Result<(), Fail> {
        // SAFETY: a handle of this process and NULL or the OVERLAPPED of a request on it
        // (still allocated: blocks live until their request completed).
        if unsafe { CancelIoEx(handle as HANDLE, ov as *const OVERLAPPED) } == 0 && last_error() != ERROR_NOT_FOUND {
            return Err(api_fail("CancelIoEx"));
        }
        Ok(())
    }

    pub fn close(handle: usize) -> Result<(), Fail> {
        // SAFETY: a handle of this process, closed once.
        if unsafe { CloseHandle(handle as HANDLE) } == 0 {
            return Err(api_fail("CloseHandle"));
        }
        Ok(())
    }

    pub fn duplicate(handle: usize) -> Result<usize, Fail> {
        let mut copy: HANDLE = std::ptr::null_mut();
        // SAFETY: a handle of this process duplicated within the process.
        let ok = unsafe {
            let me = GetCurrentProcess();
            DuplicateHandle(me, handle as HANDLE, me, &raw mut copy, 0, 0, DUPLICATE_SAME_ACCESS)
        };
        if ok == 0 { Err(api_fail("DuplicateHandle")) } else { Ok(copy as usize) }
    }

    /// DeviceIoControl, waiting for the result (with an OVERLAPPED on an overlapped
    /// handle, as the API requires).
    pub fn ioctl(
        handle: usize,
        code: u32,
        input: &[u8],
        output_length: usize,
        overlapped: bool,
    ) -> Result<Outcome, Fail> {
        let in_len = u32::try_from(input.len()).map_err(|_| "input too long")?;
        let out_len = u32::try_from(output_length).map_err(|_| "output too long")?;
        let mut request = Request::new(handle, output_length)?;
        let out = request.buffer.as_mut_ptr();
        let mut bytes = 0u32;
        let ov = if overlapped { &raw mut request.ov } else { std::ptr::null_mut() };
        let count = if overlapped { std::ptr::null_mut() } else { &raw mut bytes };
        // SAFETY: the buffers hold the lengths passed; the OVERLAPPED (if any) lives in
        // `request`, which is waited for below before it is dropped.
        let ok = unsafe {
            DeviceIoControl(handle as HANDLE, code, input.as_ptr().cast(), in_len, out.cast(), out_len, count, ov)
        };
        if !overlapped {
            let status = if ok != 0 { Status::from_win32(0) } else { Status::from_win32(last_error()) };
            let n = (bytes as usize).min(output_length);
            return Ok(Outcome { status, bytes: bytes as usize, data: request.buffer[..n].to_vec() });
        }
        if ok == 0 && last_error() != ERROR_IO_PENDING {
            return Ok(Outcome { status: Status::from_win32(last_error()), bytes: 0, data: Vec::new() });
        }
        // Completed or pending: GetOverlappedResult waits on the event.
        Ok(request.result(true))
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// An application thread other than the main one: an OS thread running jobs.
struct AppThread {
    jobs: mpsc::Sender<Job>,
    thread: std::thread::JoinHandle<()>,
}

pub struct Win32 {
    wine: bool,
    /// Handle → opened with FILE_FLAG_OVERLAPPED.
    handles: std::collections::HashMap<u64, bool>,
    requests: Vec<Slot>,
    /// Application threads 1.. (None once exited).
    threads: Vec<Option<AppThread>>,
}

impl Win32 {
    pub fn new(wine: bool) -> Self {
        Win32 { wine, handles: std::collections::HashMap::new(), requests: Vec::new(), threads: Vec::new() }
    }

    /// Runs `op` on application thread `on` and returns its result.
    fn on<R: Send + 'static>(&mut self, on: Tid, op: impl FnOnce() -> R + Send + 'static) -> Result<R, Fail> {
        if on == 0 {
            return Ok(op());
        }
        let thread = self
            .threads
            .get(on - 1)
            .and_then(Option::as_ref)
            .ok_or_else(|| Fail(format!("application thread {on} does not exist")))?;
        let (tx, rx) = mpsc::channel();
        thread
            .jobs
            .send(Box::new(move || {
                let _ = tx.send(op());
            }))
            .map_err(|_| "application thread gone")?;
        rx.recv_timeout(Duration::from_secs(30)).map_err(|_| Fail(format!("application thread {on} did not answer")))
    }

    fn overlapped(&self, handle: H) -> Result<bool, Fail> {
        self.handles.get(&handle).copied().ok_or_else(|| Fail(format!("handle {handle:#x} is not open")))
    }

    fn settle(&mut self, io: Io, wait_ms: u64) -> Result<Option<Outcome>, Fail> {
        let slot = self.requests.get_mut(io).ok_or("no such request")?;
        let address = match slot {
            Slot::Done(o) => return Ok(Some(o.clone())),
            Slot::Pending(address) => *address,
        };
        // SAFETY: the block was leaked by ops::read for this slot and is freed only here.
        let request = unsafe { &mut *(address as *mut Request) };
        // The event and OVERLAPPED::Internal are both written at completion, but not
        // always in that order (Wine has signalled the event of a read cancelled by
        // its thread's exit before the status was in): wait until Internal is final.
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        while !request.completed() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let ms = u32::try_from(left.as_millis().min(20)).unwrap_or(20);
            // SAFETY: the request's own event.
            let waited = unsafe { WaitForSingleObject(request.ov.hEvent, ms) };
            if waited == WAIT_OBJECT_0 && !request.completed() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let outcome = request.result(false);
        // SAFETY: completed, so the kernel no longer touches the block; freed once.
        drop(unsafe { Box::from_raw(address as *mut Request) });
        *slot = Slot::Done(outcome.clone());
        Ok(Some(outcome))
    }
}

impl Drop for Win32 {
    fn drop(&mut self) {
        for slot in &self.requests {
            if let Slot::Pending(address) = slot {
                // SAFETY: a block leaked for a request; freed only if the request is
                // over (a request still in flight keeps its block: leaked for good).
                let request = unsafe { &*(*address as *const Request) };
                if request.completed() {
                    // SAFETY: as above; completed and freed once.
                    drop(unsafe { Box::from_raw(*address as *mut Request) });
                }
            }
        }
        for thread in self.threads.drain(..).flatten() {
            drop(thread.jobs);
            let _ = thread.thread.join();
        }
    }
}

impl Client for Win32 {
    fn open(&mut self, on: Tid, device: u32, suffix: &str, overlapped: bool) -> Result<Result<H, Status>, Fail> {
        let path = wide(&format!(r"\\.\StageDrv{device}{suffix}"));
        let opened = self.on(on, move || ops::open(&path, overlapped))?;
        Ok(opened.map(|h| {
            self.handles.insert(h as u64, overlapped);
            h as u64
        }))
    }

    fn read(&mut self, on: Tid, handle: H, length: usize) -> Result<Read, Fail> {
        let overlapped = self.overlapped(handle)?;
        let h = usize::try_from(handle).map_err(|_| "handle")?;
        Ok(match self.on(on, move || ops::read(h, length, overlapped))?? {
            Raw::Done(o) => Read::Done(o),
            Raw::Pending(address) => {
                self.requests.push(Slot::Pending(address));
                Read::Pending(self.requests.len() - 1)
            }
        })
    }

    fn wait(&mut self, io: Io, timeout_ms: u64) -> Result<Option<Outcome>, Fail> {
        self.settle(io, timeout_ms)
    }

    fn poll(&mut self, io: Io) -> Result<Option<Outcome>, Fail> {
        self.settle(io, 0)
    }

    fn cancel_io(&mut self, on: Tid, handle: H) -> Result<(), Fail> {
        let h = usize::try_from(handle).map_err(|_| "handle")?;
        self.on(on, move || ops::cancel_io(h))?
    }

    fn cancel_io_ex(&mut self, on: Tid, handle: H, io: Option<Io>) -> Result<(), Fail> {
        let h = usize::try_from(handle).map_err(|_| "handle")?;
        let ov = match io {
            None => 0,
            Some(io) => match self.requests.get(io).ok_or("no such request")? {
                // Over already: nothing to cancel.
                Slot::Done(_) => return Ok(()),
                Slot::Pending(address) => *address + std::mem::offset_of!(Request, ov),
            },
        };
        self.on(on, move || ops::cancel_io_ex(h, ov))?
    }

    fn close(&mut self, on: Tid, handle: H) -> Result<(), Fail> {
        let h = usize::try_from(handle).map_err(|_| "handle")?;
        self.on(on, move || ops::close(h))??;
        self.handles.remove(&handle);
        Ok(())
    }

    fn ioctl(&mut self, on: Tid, handle: H, code: u32, input: &[u8], output_length: usize) -> Result<Outcome, Fail> {
        let overlapped = self.overlapped(handle)?;
        let h = usize::try_from(handle).map_err(|_| "handle")?;
        let input = input.to_vec();
        self.on(on, move || ops::ioctl(h, code, &input, output_length, overlapped))?
    }

    fn duplicate(&mut self, on: Tid, handle: H) -> Result<H, Fail> {
        let overlapped = self.overlapped(handle)?;
        let h = usize::try_from(handle).map_err(|_| "handle")?;
        let copy = self.on(on, move || ops::duplicate(h))?? as u64;
        self.handles.insert(copy, overlapped);
        Ok(copy)
    }

    fn spawn_thread(&mut self) -> Result<Tid, Fail> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(format!("app-thread-{}", self.threads.len() + 1))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
            .map_err(|e| Fail(format!("spawning a thread: {e}")))?;
        self.threads.push(Some(AppThread { jobs, thread }));
        Ok(self.threads.len())
    }

    fn exit_thread(&mut self, thread: Tid) -> Result<(), Fail> {
        let t =
            self.threads.get_mut(thread.wrapping_sub(1)).and_then(Option::take).ok_or("no such application thread")?;
        // The thread's loop ends when its queue closes; the OS thread then exits and
        // the system cancels the requests it issued.
        drop(t.jobs);
        t.thread.join().map_err(|_| "application thread panicked")?;
        Ok(())
    }

    fn child_with_pending_reads(&mut self, device: u32, reads: usize, end: ChildEnd) -> Result<usize, Fail> {
        let exe = std::env::current_exe().map_err(|e| Fail(format!("current_exe: {e}")))?;
        let mut child = Command::new(exe)
            .args(["--child-reader", "--device", &device.to_string(), "--child-reads", &reads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Fail(format!("starting the child process: {e}")))?;
        let stdout = child.stdout.take().ok_or("child stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Some(pending) = line.trim().strip_prefix("pending ").and_then(|n| n.parse::<usize>().ok()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Fail(format!("the child process did not report its pending reads (said {:?})", line.trim())));
        };
        match end {
            ChildEnd::Killed => child.kill().map_err(|e| Fail(format!("TerminateProcess: {e}")))?,
            ChildEnd::Exits => {
                let mut stdin = child.stdin.take().ok_or("child stdin")?;
                writeln!(stdin, "exit").map_err(|e| Fail(format!("telling the child to exit: {e}")))?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if child.try_wait().map_err(|e| Fail(format!("waiting for the child: {e}")))?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("the child process did not end".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(pending)
    }

    fn sleep_ms(&mut self, ms: u64) -> Result<(), Fail> {
        std::thread::sleep(Duration::from_millis(ms));
        Ok(())
    }

    fn read_timeout_s(&self) -> Option<u32> {
        let key = wide(r"SYSTEM\CurrentControlSet\Services\stagedrv\Parameters");
        let name = wide("ReadTimeoutSeconds");
        let mut value = 0u32;
        let mut size = 4u32;
        // SAFETY: NUL-terminated names; the output is a DWORD of the size passed.
        let error = unsafe {
            RegGetValueW(
                HKEY_LOCAL_MACHINE,
                key.as_ptr(),
                name.as_ptr(),
                RRF_RT_REG_DWORD,
                std::ptr::null_mut(),
                (&raw mut value).cast(),
                &raw mut size,
            )
        };
        (error == 0 && value > 0).then_some(value)
    }

    fn run_workers(&mut self, workers: Vec<Box<dyn Worker>>) -> Result<(), Fail> {
        // Real concurrency: each worker on its own OS thread with its own client, for
        // which that thread is "the main thread".
        let wine = self.wine;
        std::thread::scope(|scope| {
            let running: Vec<_> = workers
                .into_iter()
                .map(|mut worker| {
                    scope.spawn(move || -> Result<(), Fail> {
                        let mut client = Win32::new(wine);
                        while worker.step(&mut client, 0)? {}
                        Ok(())
                    })
                })
                .collect();
            let mut first = Ok(());
            for r in running {
                let result = r.join().unwrap_or_else(|_| Err("a stress thread panicked".into()));
                if first.is_ok() {
                    first = result;
                }
            }
            first
        })
    }
}

/// The child process of process-kill/process-exit: opens the device, leaves `reads`
/// reads pending, prints `pending N`, then waits for "exit" on stdin (or to be killed)
/// and exits without waiting for them.
pub fn child_reader(device: u32, reads: usize) -> ExitCode {
    let path = wide(&format!(r"\\.\StageDrv{device}"));
    let handle = match ops::open(&path, true) {
        Ok(h) => h,
        Err(status) => {
            println!("error open {status}");
            return ExitCode::FAILURE;
        }
    };
    let mut pending = 0;
    // Take what the ring holds first, so that the reads below pend; a draining read
    // that pends counts as pending too.
    let mut lengths = vec![crate::scenarios::DRAIN_BYTES];
    lengths.extend(std::iter::repeat_n(RECORD_SIZE, reads));
    for length in lengths {
        match ops::read(handle, length, true) {
            Ok(Raw::Pending(_)) => pending += 1,
            Ok(Raw::Done(_)) => {}
            Err(fail) => {
                println!("error read {fail}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("pending {pending}");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    // ExitProcess with the reads still pending (no destructors, no waiting).
    std::process::exit(0)
}
