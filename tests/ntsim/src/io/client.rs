//! A user-mode-like client: processes with handle tables and threads that issue
//! CreateFile, ReadFile (synchronous or overlapped), DeviceIoControl, CancelIo(Ex),
//! DuplicateHandle and CloseHandle, and that can exit abruptly.
//!
//! Each client thread is a simulated thread; a call made by the test runs on it, so
//! driver code never runs on the test's own thread.

use std::sync::{Arc, Mutex};

use super::ErrorLogEntry;
use super::irp::{self, IoResult, Request, ResultSlot};
use crate::machine::{Ctx, KResult, Machine, Stopped, service};
use crate::ob::{Kind, Owner, Target};
use crate::sched::Tid;
use crate::wdk_sys::{
    ACCESS_MASK, DO_DEVICE_INITIALIZING, DO_EXCLUSIVE, FILE_ALL_ACCESS, FILE_APPEND_DATA, FILE_DEVICE_CD_ROM,
    FILE_DEVICE_DISK, FILE_DEVICE_SECURE_OPEN, FILE_OBJECT, FILE_READ_ATTRIBUTES, FILE_READ_DATA, FILE_TRAVERSE,
    FILE_WRITE_DATA, GENERIC_READ, GENERIC_WRITE, IO_DRIVER_CANCEL_TIMEOUT, IO_SECURITY_CONTEXT, IRP_MJ_CREATE,
    IRP_MJ_DEVICE_CONTROL, IRP_MJ_READ, MAXIMUM_ALLOWED, NTSTATUS, PDEVICE_OBJECT, STATUS_ACCESS_DENIED,
    STATUS_INVALID_HANDLE, STATUS_NO_SUCH_DEVICE, STATUS_NOT_FOUND, STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_OBJECT_TYPE_MISMATCH, STATUS_PENDING, STATUS_SUCCESS, SYNCHRONIZE, UNICODE_STRING,
};

/// The access [`Process::open`] asks for: what most callers of CreateFile pass.
pub const READ_WRITE: ACCESS_MASK = GENERIC_READ | GENERIC_WRITE;

pub(crate) struct ProcessInfo {
    pub(crate) threads: Vec<Tid>,
    /// The token holds Administrators (true) or Users.
    pub(crate) admin: bool,
}

/// A handle in one process's handle table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(pub u64);

/// A request that returned STATUS_PENDING to an overlapped caller.
#[derive(Clone)]
pub struct PendingIo {
    /// The IRP's issue number (addresses are reused once IRPs are freed).
    pub(crate) seq: u64,
    result: ResultSlot,
}

impl PendingIo {
    /// The final result, if the IRP completed.
    pub fn result(&self) -> Option<IoResult> {
        self.result.lock().expect("slot").clone()
    }
}

/// What ReadFile/DeviceIoControl returned to the caller.
#[derive(Clone)]
pub enum Issued {
    /// The request finished before the call returned.
    Done(IoResult),
    /// The request pended (STATUS_PENDING): wait for it or poll it.
    Pending(PendingIo),
}

impl Issued {
    /// The result of a request that did not pend.
    pub fn done(self) -> Option<IoResult> {
        match self {
            Issued::Done(r) => Some(r),
            Issued::Pending(_) => None,
        }
    }
}

/// A process of the simulated machine.
pub struct Process<'m> {
    machine: &'m Machine,
    pid: usize,
}

/// One thread of a [`Process`]; requests it issues belong to it (CancelIo, exit).
#[derive(Clone, Copy)]
pub struct Thread<'m> {
    machine: &'m Machine,
    pid: usize,
    tid: Tid,
}

/// Completion's "APC": drop an IRP's file-object reference on the issuing thread, with
/// ObDereferenceObjectDeferDelete as IopCompleteRequest does (ReactOS `irp.c`): if it
/// was the last one, IRP_MJ_CLOSE comes from a worker thread.
pub(crate) fn post_apc(ctx: &mut Ctx<'_>, thread: Tid, file: usize) {
    ctx.mailboxes[thread].push_back(Box::new(move || {
        service("completion-apc", |ctx| crate::ob::dereference_defer_delete(ctx, file).map(|_| ()));
    }));
    ctx.signal();
}

fn client_loop(tid: Tid) {
    loop {
        let job = service("client-wait", |ctx| {
            ctx.block(Box::new(move |state| (!state.mailboxes[tid].is_empty()).then_some(0)))?;
            Ok(ctx.mailboxes[tid].pop_front())
        });
        match job {
            Some(Some(job)) => job(),
            Some(None) => {}
            None => return,
        }
    }
}

impl Machine {
    /// Starts a new process with one thread, running as an administrator.
    pub fn new_process(&self) -> Process<'_> {
        self.new_process_as(true)
    }

    /// Starts a new process whose token is an administrator's or a standard user's.
    pub fn new_process_as(&self, admin: bool) -> Process<'_> {
        let pid = {
            let mut state = self.lock();
            state.io.processes.push(ProcessInfo { threads: Vec::new(), admin });
            state.io.processes.len() - 1
        };
        let process = Process { machine: self, pid };
        process.spawn_thread();
        process
    }

    /// Runs `op` on client thread `tid` and waits (moving the clock if needed) for it.
    fn on_thread<R: Send + 'static>(
        &self,
        tid: Tid,
        what: &str,
        op: impl FnOnce(&mut Ctx<'_>) -> KResult<R> + Send + 'static,
    ) -> Result<R, Stopped> {
        let slot: Arc<Mutex<Option<R>>> = Arc::new(Mutex::new(None));
        let out = Arc::clone(&slot);
        {
            let mut state = self.lock();
            state.mailboxes[tid].push_back(Box::new(move || {
                if let Some(value) = service("client-call", op) {
                    *out.lock().expect("slot") = Some(value);
                }
            }));
        }
        self.inner.cv.notify_all();
        self.run_until(what, |_| slot.lock().expect("slot").is_some())?;
        Ok(slot.lock().expect("slot").take().expect("finished"))
    }
}

impl<'m> Process<'m> {
    fn spawn_thread(&self) -> Thread<'m> {
        let tid = {
            let mut state = self.machine.lock();
            let n = state.io.processes[self.pid].threads.len();
            let name = format!("p{}-t{n}", self.pid);
            let inner = Arc::clone(&self.machine.inner);
            let tid_slot = Arc::new(Mutex::new(0usize));
            let tid_for_thread = Arc::clone(&tid_slot);
            let tid = crate::sched::spawn(&inner, &mut state, name, 0, move || {
                let tid = *tid_for_thread.lock().expect("tid");
                client_loop(tid);
            });
            *tid_slot.lock().expect("tid") = tid;
            state.io.processes[self.pid].threads.push(tid);
            tid
        };
        self.machine.run_until_idle();
        Thread { machine: self.machine, pid: self.pid, tid }
    }

    /// The process's `n`th thread, creating threads up to it.
    pub fn thread(&self, n: usize) -> Thread<'m> {
        loop {
            let existing = self.machine.lock().io.processes[self.pid].threads.get(n).copied();
            if let Some(tid) = existing {
                return Thread { machine: self.machine, pid: self.pid, tid };
            }
            self.spawn_thread();
        }
    }

    /// The main thread.
    pub fn main(&self) -> Thread<'m> {
        self.thread(0)
    }

    /// CreateFile on the main thread ([`Thread::open`]).
    pub fn open(&self, path: &str, overlapped: bool) -> Result<Result<Handle, NTSTATUS>, Stopped> {
        self.main().open(path, overlapped)
    }
    /// CreateFile with a desired access on the main thread ([`Thread::open_with_access`]).
    pub fn open_with_access(
        &self,
        path: &str,
        access: ACCESS_MASK,
        overlapped: bool,
    ) -> Result<Result<Handle, NTSTATUS>, Stopped> {
        self.main().open_with_access(path, access, overlapped)
    }
    /// ReadFile on the main thread ([`Thread::read`]).
    pub fn read(&self, handle: Handle, length: usize) -> Result<Issued, Stopped> {
        self.main().read(handle, length)
    }
    /// DeviceIoControl on the main thread ([`Thread::ioctl`]).
    pub fn ioctl(&self, handle: Handle, code: u32, input: &[u8], output_length: usize) -> Result<Issued, Stopped> {
        self.main().ioctl(handle, code, input, output_length)
    }
    /// CloseHandle on the main thread ([`Thread::close`]).
    pub fn close(&self, handle: Handle) -> Result<NTSTATUS, Stopped> {
        self.main().close(handle)
    }
    /// CancelIoEx on the main thread ([`Thread::cancel_io_ex`]).
    pub fn cancel_io_ex(&self, handle: Handle, io: Option<&PendingIo>) -> Result<NTSTATUS, Stopped> {
        self.main().cancel_io_ex(handle, io)
    }
    /// DuplicateHandle within the process, on the main thread ([`Thread::duplicate`]).
    pub fn duplicate(&self, handle: Handle) -> Result<Result<Handle, NTSTATUS>, Stopped> {
        self.main().duplicate(handle)
    }
    /// DuplicateHandle into `target`, on the main thread ([`Thread::duplicate_into`]).
    pub fn duplicate_into(&self, handle: Handle, target: &Process<'_>) -> Result<Result<Handle, NTSTATUS>, Stopped> {
        self.main().duplicate_into(handle, target)
    }
    /// WriteFile on the main thread ([`Thread::write`]).
    pub fn write(&self, handle: Handle, data: &[u8]) -> Result<Issued, Stopped> {
        self.main().write(handle, data)
    }

    /// Ends the process abruptly: every thread's pending I/O is cancelled, then every
    /// handle is closed (IRP_MJ_CLEANUP for each file object whose last handle it was).
    pub fn exit(self) -> Result<(), Stopped> {
        let threads = self.machine.lock().io.processes[self.pid].threads.clone();
        for tid in threads {
            Thread { machine: self.machine, pid: self.pid, tid }.exit()?;
        }
        let pid = self.pid;
        let main = self.machine.lock().io.processes[pid].threads[0];
        self.machine.on_thread(main, "process exit", move |ctx| {
            for (handle, _) in ctx.ob.handles_of(Owner::Process(pid)) {
                close(ctx, pid, handle)?;
            }
            Ok(())
        })
    }

    /// Handles open in this process.
    pub fn handle_count(&self) -> usize {
        self.machine.lock().ob.handles_of(Owner::Process(self.pid)).len()
    }
}

impl Thread<'_> {
    /// CreateFile on `\\.\NAME` (or any `\??\` path) for [`READ_WRITE`] access. Returns
    /// the open's status as the client would see it.
    pub fn open(&self, path: &str, overlapped: bool) -> Result<Result<Handle, NTSTATUS>, Stopped> {
        self.open_with_access(path, READ_WRITE, overlapped)
    }

    /// CreateFile with `access` as dwDesiredAccess (any ACCESS_MASK, 0 included). As
    /// CreateFileW does, SYNCHRONIZE | FILE_READ_ATTRIBUTES are added to what reaches
    /// NtCreateFile (ReactOS kernel32 `create.c`); the handle keeps the access the open
    /// granted, which ReadFile, WriteFile and DeviceIoControl check.
    pub fn open_with_access(
        &self,
        path: &str,
        access: ACCESS_MASK,
        overlapped: bool,
    ) -> Result<Result<Handle, NTSTATUS>, Stopped> {
        let pid = self.pid;
        let path = path.to_owned();
        let desired = access | SYNCHRONIZE | FILE_READ_ATTRIBUTES;
        self.machine.on_thread(self.tid, "CreateFile", move |ctx| open(ctx, pid, &path, desired, overlapped))
    }

    /// ReadFile of `length` bytes. On a synchronous handle it waits for the result;
    /// on an overlapped handle a pending read returns [`Issued::Pending`]. A handle
    /// without FILE_READ_DATA gets STATUS_ACCESS_DENIED.
    pub fn read(&self, handle: Handle, length: usize) -> Result<Issued, Stopped> {
        self.issue("ReadFile", issue_op(self.pid, handle, Needs::Read, read_request(length)))
    }

    /// WriteFile of `data` (buffered I/O). A handle without FILE_WRITE_DATA or
    /// FILE_APPEND_DATA gets STATUS_ACCESS_DENIED.
    pub fn write(&self, handle: Handle, data: &[u8]) -> Result<Issued, Stopped> {
        self.issue("WriteFile", issue_op(self.pid, handle, Needs::Write, write_request(data.to_vec())))
    }

    /// DuplicateHandle into `target` (another process): the file object gains a handle
    /// there, so cleanup waits for that process's close too.
    pub fn duplicate_into(&self, handle: Handle, target: &Process<'_>) -> Result<Result<Handle, NTSTATUS>, Stopped> {
        let (pid, to) = (self.pid, target.pid);
        self.machine.on_thread(self.tid, "DuplicateHandle", move |ctx| {
            let file = match file_of(ctx, pid, handle) {
                Ok(file) => file,
                Err(status) => return Ok(Err(status)),
            };
            // DUPLICATE_SAME_ACCESS.
            let granted = ctx.ob.granted(Owner::Process(pid), handle.0).unwrap_or(0);
            Ok(Ok(insert_handle(ctx, to, file, granted)))
        })
    }

    /// DeviceIoControl with METHOD_BUFFERED semantics. A code whose required access
    /// (`(code >> 14) & 3`) the handle lacks gets STATUS_ACCESS_DENIED without reaching
    /// the driver.
    pub fn ioctl(&self, handle: Handle, code: u32, input: &[u8], output_length: usize) -> Result<Issued, Stopped> {
        let request = ioctl_request(code, input.to_vec(), output_length);
        self.issue("DeviceIoControl", issue_op(self.pid, handle, Needs::Ioctl(code), request))
    }

    fn issue(&self, what: &'static str, op: IssueOp) -> Result<Issued, Stopped> {
        let (seq, result, pending) = match self.machine.on_thread(self.tid, what, op)? {
            Err(status) => return Ok(Issued::Done(IoResult { status, information: 0, data: Vec::new() })),
            Ok(x) => x,
        };
        if pending {
            return Ok(Issued::Pending(PendingIo { seq, result }));
        }
        // Synchronous: the caller waits for the final status.
        let slot = Arc::clone(&result);
        self.machine.run_until(what, move |_| slot.lock().expect("slot").is_some())?;
        Ok(Issued::Done(result.lock().expect("slot").clone().expect("completed")))
    }

    /// Posts an overlapped ReadFile to this thread without waiting: it runs when the
    /// machine next runs (`run_until_idle`, `advance`, any other call), interleaved
    /// with everything else by the scheduler.
    pub fn post_read(&self, handle: Handle, length: usize) -> Posted<Outcome> {
        self.post(issue_op(self.pid, handle, Needs::Read, read_request(length)))
    }

    /// Posts CancelIo(handle), which returns once the cancelled requests completed.
    pub fn post_cancel_io(&self, handle: Handle) -> Posted<NTSTATUS> {
        let (pid, me) = (self.pid, self.tid);
        self.post(move |ctx| cancel_io(ctx, pid, handle, me))
    }

    /// Posts CancelIoEx(handle, NULL): every request of the process on the handle.
    pub fn post_cancel_io_ex(&self, handle: Handle) -> Posted<NTSTATUS> {
        let pid = self.pid;
        self.post(move |ctx| cancel_io_ex(ctx, pid, handle, None))
    }

    /// Posts CloseHandle.
    pub fn post_close(&self, handle: Handle) -> Posted<NTSTATUS> {
        let pid = self.pid;
        self.post(move |ctx| close(ctx, pid, handle.0))
    }

    /// Posts this thread's abrupt exit: its pending requests are cancelled and waited
    /// for, up to Windows' limit (see [`Thread::exit`]). A synchronous request the
    /// thread is blocked in is interrupted at once.
    pub fn post_exit(&self) -> Posted<()> {
        let me = self.tid;
        self.machine.lock().io.exiting.insert(me);
        self.post(move |ctx| thread_exit(ctx, me))
    }

    fn post<R: Send + 'static>(&self, op: impl FnOnce(&mut Ctx<'_>) -> KResult<R> + Send + 'static) -> Posted<R> {
        let slot: Arc<Mutex<Option<R>>> = Arc::new(Mutex::new(None));
        let out = Arc::clone(&slot);
        self.machine.lock().mailboxes[self.tid].push_back(Box::new(move || {
            if let Some(value) = service("client-call", op) {
                *out.lock().expect("slot") = Some(value);
            }
        }));
        Posted { slot }
    }

    /// Waits (moving the clock as needed) for an overlapped request's result.
    pub fn wait(&self, io: &PendingIo) -> Result<IoResult, Stopped> {
        let slot = Arc::clone(&io.result);
        self.machine.run_until("the pending I/O to complete", move |_| slot.lock().expect("slot").is_some())?;
        Ok(io.result().expect("completed"))
    }

    /// CancelIo: cancels this thread's requests on `handle` and, as NtCancelIoFile
    /// does, waits until they completed, with no time limit (ReactOS `file.c` polls
    /// every 10 ms). A cancel the driver loses keeps this thread here.
    pub fn cancel_io(&self, handle: Handle) -> Result<NTSTATUS, Stopped> {
        let (pid, me) = (self.pid, self.tid);
        self.machine.on_thread(self.tid, "CancelIo", move |ctx| cancel_io(ctx, pid, handle, me))
    }

    /// CancelIoEx: cancels `io`, or every request of this process on `handle`, without
    /// waiting. STATUS_NOT_FOUND (ERROR_NOT_FOUND) when no request matched.
    pub fn cancel_io_ex(&self, handle: Handle, io: Option<&PendingIo>) -> Result<NTSTATUS, Stopped> {
        let pid = self.pid;
        let only = io.map(|p| p.seq);
        self.machine.on_thread(self.tid, "CancelIoEx", move |ctx| cancel_io_ex(ctx, pid, handle, only))
    }

    /// CancelSynchronousIo(`target`): cancels the synchronous request `target` is
    /// blocked in (a thread blocked in ReadFile on a synchronous handle cannot call
    /// CancelIo itself). STATUS_NOT_FOUND when it is not blocked in one.
    pub fn cancel_synchronous_io(&self, target: &Thread<'_>) -> Result<NTSTATUS, Stopped> {
        let victim = target.tid;
        self.machine.on_thread(self.tid, "CancelSynchronousIo", move |ctx| {
            let blocked_on: Vec<usize> = ctx
                .io
                .files
                .iter()
                .filter(|(_, f)| f.sync_owner == Some(victim))
                .map(|(address, _)| *address)
                .collect();
            let irps = irp::outstanding(ctx, |i| i.thread == victim && blocked_on.contains(&i.file));
            if irps.is_empty() {
                return Ok(STATUS_NOT_FOUND);
            }
            for irp in irps {
                irp::cancel(ctx, irp)?;
            }
            Ok(STATUS_SUCCESS)
        })
    }

    /// CloseHandle: IRP_MJ_CLEANUP when the last handle of the file object closes,
    /// IRP_MJ_CLOSE when its last reference goes.
    pub fn close(&self, handle: Handle) -> Result<NTSTATUS, Stopped> {
        let pid = self.pid;
        self.machine.on_thread(self.tid, "CloseHandle", move |ctx| close(ctx, pid, handle.0))
    }

    /// DuplicateHandle within the process: a second handle to the same file object.
    pub fn duplicate(&self, handle: Handle) -> Result<Result<Handle, NTSTATUS>, Stopped> {
        let pid = self.pid;
        self.machine.on_thread(self.tid, "DuplicateHandle", move |ctx| {
            let file = match file_of(ctx, pid, handle) {
                Ok(file) => file,
                Err(status) => return Ok(Err(status)),
            };
            // DUPLICATE_SAME_ACCESS.
            let granted = ctx.ob.granted(Owner::Process(pid), handle.0).unwrap_or(0);
            Ok(Ok(insert_handle(ctx, pid, file, granted)))
        })
    }

    /// The thread ends abruptly: as IoCancelThreadIo does, its pending requests are
    /// cancelled and waited for, 100 ms at a time up to 3000 times (five minutes of
    /// simulated time). Requests still outstanding then are disassociated from the
    /// thread with an IO_DRIVER_CANCEL_TIMEOUT error-log entry (ReactOS `irp.c`,
    /// IopDisassociateThreadIrp) and the thread exits anyway. A synchronous request
    /// the thread is blocked in is interrupted at once.
    pub fn exit(&self) -> Result<(), Stopped> {
        let me = self.tid;
        self.machine.lock().io.exiting.insert(me);
        self.machine.on_thread(self.tid, "thread exit", move |ctx| thread_exit(ctx, me))
    }
}

/// What an issued request returned: its issue number, its result slot, whether it
/// pended on an overlapped handle; or the status it failed with before reaching the
/// driver (a bad handle).
type IssueResult = Result<(u64, ResultSlot, bool), NTSTATUS>;
type IssueOp = Box<dyn FnOnce(&mut Ctx<'_>) -> KResult<IssueResult> + Send>;
type MakeRequest = Box<dyn FnOnce(usize, usize) -> Request + Send>;

/// The request a posted read or IOCTL produced.
pub type Outcome = IssueResult;

/// The result of a posted operation, once the machine ran it.
pub struct Posted<R> {
    slot: Arc<Mutex<Option<R>>>,
}

impl<R: Clone> Posted<R> {
    /// `None` until the operation ran.
    pub fn get(&self) -> Option<R> {
        self.slot.lock().expect("slot").clone()
    }
}

impl Posted<Outcome> {
    /// The request's final result: `None` until it ran and completed.
    pub fn completion(&self) -> Option<IoResult> {
        match self.get()? {
            Err(status) => Some(IoResult { status, information: 0, data: Vec::new() }),
            Ok((_, result, _)) => result.lock().expect("slot").clone(),
        }
    }
}

fn read_request(length: usize) -> MakeRequest {
    let len = u32::try_from(length).unwrap_or(u32::MAX);
    Box::new(move |file, device| Request {
        major: u8::try_from(IRP_MJ_READ).expect("code"),
        file,
        device,
        buffer_len: length,
        input: Vec::new(),
        max_information: u64::from(len),
        holds_file_ref: true,
        fill: Box::new(move |stack| {
            // Writing a union field is safe; the driver reads the Read member.
            stack.Parameters.Read.Length = len;
        }),
    })
}

fn write_request(data: Vec<u8>) -> MakeRequest {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    Box::new(move |file, device| Request {
        major: u8::try_from(crate::wdk_sys::IRP_MJ_WRITE).expect("code"),
        file,
        device,
        buffer_len: data.len(),
        input: data,
        max_information: u64::from(len),
        holds_file_ref: true,
        fill: Box::new(move |stack| {
            stack.Parameters.Write.Length = len;
        }),
    })
}

fn ioctl_request(code: u32, input: Vec<u8>, output_length: usize) -> MakeRequest {
    let in_len = u32::try_from(input.len()).unwrap_or(u32::MAX);
    let out_len = u32::try_from(output_length).unwrap_or(u32::MAX);
    Box::new(move |file, device| Request {
        major: u8::try_from(IRP_MJ_DEVICE_CONTROL).expect("code"),
        file,
        device,
        buffer_len: output_length.max(input.len()),
        input,
        max_information: u64::from(out_len),
        holds_file_ref: true,
        fill: Box::new(move |stack| {
            stack.Parameters.DeviceIoControl.OutputBufferLength = out_len;
            stack.Parameters.DeviceIoControl.InputBufferLength = in_len;
            stack.Parameters.DeviceIoControl.IoControlCode = code;
        }),
    })
}

/// The access a request needs on its handle, checked before any IRP is built.
#[derive(Clone, Copy)]
enum Needs {
    /// NtReadFile references the handle for FILE_READ_DATA.
    Read,
    /// NtWriteFile's ObReferenceFileObjectForWrite wants FILE_WRITE_DATA or
    /// FILE_APPEND_DATA.
    Write,
    /// NtDeviceIoControlFile from user mode: the code's required access,
    /// `(code >> 14) & 3` (FILE_READ_ACCESS is FILE_READ_DATA, FILE_WRITE_ACCESS is
    /// FILE_WRITE_DATA), all of it granted (ReactOS `iofunc.c` IopDeviceFsIoControl).
    Ioctl(u32),
}

impl Needs {
    fn allowed(self, granted: ACCESS_MASK) -> bool {
        match self {
            Needs::Read => granted & FILE_READ_DATA != 0,
            Needs::Write => granted & (FILE_WRITE_DATA | FILE_APPEND_DATA) != 0,
            Needs::Ioctl(code) => {
                let required = (code >> 14) & 3;
                granted & required == required
            }
        }
    }
}

/// Looks up the handle (holding a reference on the file object for the call, as
/// ObReferenceObjectByHandle does), checks its granted access, builds the IRP and
/// sends it to the driver.
fn issue_op(pid: usize, handle: Handle, needs: Needs, make: MakeRequest) -> IssueOp {
    Box::new(move |ctx| {
        let file = match file_of(ctx, pid, handle) {
            Ok(file) => file,
            Err(status) => return Ok(Err(status)),
        };
        if !needs.allowed(ctx.ob.granted(Owner::Process(pid), handle.0).unwrap_or(0)) {
            return Ok(Err(STATUS_ACCESS_DENIED));
        }
        crate::ob::reference(ctx, file);
        let issued = issue_on(ctx, file, make)?;
        crate::ob::dereference(ctx, file)?;
        Ok(Ok(issued))
    })
}

/// The request on `file`. A file object opened without FILE_FLAG_OVERLAPPED
/// (FO_SYNCHRONOUS_IO) serves one request at a time: the caller takes the file
/// object's lock, and keeps it while it waits for the request to complete (ReactOS
/// `IopLockFileObject`, `IopSynchronousServiceTail`).
fn issue_on(ctx: &mut Ctx<'_>, file: usize, make: MakeRequest) -> KResult<(u64, ResultSlot, bool)> {
    let (device, overlapped) = {
        let f = &ctx.io.files[&file];
        (f.device, f.overlapped)
    };
    if !overlapped {
        lock_file(ctx, file)?;
    }
    let (irp, result) = irp::build(ctx, make(file, device));
    let seq = ctx.io.irps.live[&irp].seq;
    let returned = irp::send(ctx, irp)?;
    if !overlapped {
        wait_synchronous(ctx, &result)?;
        unlock_file(ctx, file);
    }
    Ok((seq, result, returned == STATUS_PENDING && overlapped))
}

/// IopLockFileObject: waits while another thread's request holds the file object.
fn lock_file(ctx: &mut Ctx<'_>, file: usize) -> KResult<()> {
    let me = ctx.tid;
    ctx.block(Box::new(move |state| {
        let f = state.io.files.get_mut(&file)?;
        if f.sync_owner.is_some() {
            return None;
        }
        f.sync_owner = Some(me);
        Some(0)
    }))?;
    Ok(())
}

fn unlock_file(ctx: &mut Ctx<'_>, file: usize) {
    if let Some(f) = ctx.io.files.get_mut(&file) {
        f.sync_owner = None;
    }
    ctx.signal();
}

/// The caller of a synchronous request waits for its completion. Thread termination
/// interrupts the wait: the thread then cancels its I/O as it exits.
fn wait_synchronous(ctx: &mut Ctx<'_>, result: &ResultSlot) -> KResult<()> {
    let me = ctx.tid;
    let slot = Arc::clone(result);
    let completed = ctx.block(Box::new(move |state| {
        if slot.lock().expect("slot").is_some() { Some(1) } else { state.io.exiting.contains(&me).then_some(0) }
    }))?;
    if completed == 0 {
        thread_exit_io(ctx, me)?;
    }
    Ok(())
}

/// The calling thread's requests that still belong to it (not disassociated).
fn own_requests(ctx: &Ctx<'_>, thread: Tid, keep: impl Fn(&irp::IrpInfo) -> bool) -> Vec<usize> {
    irp::outstanding(ctx, |i| i.thread == thread && !ctx.io.disassociated.contains(&i.seq) && keep(i))
}

/// NtCancelIoFile: cancels the caller's requests on the file, then waits for them.
fn cancel_io(ctx: &mut Ctx<'_>, pid: usize, handle: Handle, me: Tid) -> KResult<NTSTATUS> {
    let file = match file_of(ctx, pid, handle) {
        Ok(file) => file,
        Err(status) => return Ok(status),
    };
    for irp in own_requests(ctx, me, |i| i.file == file) {
        irp::cancel(ctx, irp)?;
    }
    ctx.block(Box::new(move |state| {
        let left = state.io.irps.live.values().any(|i| {
            i.phase == irp::Phase::Outstanding
                && i.thread == me
                && i.file == file
                && !state.io.disassociated.contains(&i.seq)
        });
        (!left).then_some(0)
    }))?;
    Ok(STATUS_SUCCESS)
}

/// NtCancelIoFileEx: cancels `only` (by issue number), or every request of the
/// process on the file; STATUS_NOT_FOUND when none matched. It does not wait.
fn cancel_io_ex(ctx: &mut Ctx<'_>, pid: usize, handle: Handle, only: Option<u64>) -> KResult<NTSTATUS> {
    let file = match file_of(ctx, pid, handle) {
        Ok(file) => file,
        Err(status) => return Ok(status),
    };
    let threads = ctx.io.processes[pid].threads.clone();
    let matches = |i: &irp::IrpInfo| i.file == file && threads.contains(&i.thread);
    let targets = match only {
        // One request: found by its issue number, no scan of the others.
        Some(seq) => ctx
            .io
            .irps
            .by_seq
            .get(&seq)
            .copied()
            .filter(|irp| {
                ctx.io
                    .irps
                    .live
                    .get(irp)
                    .is_some_and(|i| i.seq == seq && i.phase == irp::Phase::Outstanding && matches(i))
            })
            .into_iter()
            .collect(),
        None => irp::outstanding(ctx, matches),
    };
    if targets.is_empty() {
        return Ok(STATUS_NOT_FOUND);
    }
    for irp in targets {
        irp::cancel(ctx, irp)?;
    }
    Ok(STATUS_SUCCESS)
}

/// IoCancelThreadIo waits 100 ms at a time, up to 3000 times.
const THREAD_EXIT_IO_TIMEOUT: u64 = 3000 * 100 * 10_000;

/// IoCancelThreadIo: cancels the thread's requests, waits for them up to
/// [`THREAD_EXIT_IO_TIMEOUT`], then disassociates those still outstanding.
fn thread_exit_io(ctx: &mut Ctx<'_>, me: Tid) -> KResult<()> {
    for irp in own_requests(ctx, me, |_| true) {
        irp::cancel(ctx, irp)?;
    }
    let deadline = ctx.clock + THREAD_EXIT_IO_TIMEOUT;
    ctx.ke.timers.add_deadline(deadline);
    let finished = ctx.block(Box::new(move |state| {
        let left =
            state.io.irps.live.values().any(|i| {
                i.phase == irp::Phase::Outstanding && i.thread == me && !state.io.disassociated.contains(&i.seq)
            });
        if left { (state.clock >= deadline).then_some(0) } else { Some(1) }
    }))?;
    ctx.ke.timers.forget_deadline(deadline);
    if finished == 0 {
        for irp in own_requests(ctx, me, |_| true) {
            let (seq, device) = (ctx.io.irps.live[&irp].seq, ctx.io.irps.live[&irp].device);
            ctx.io.disassociated.insert(seq);
            ctx.io.error_log.push(ErrorLogEntry { code: IO_DRIVER_CANCEL_TIMEOUT, device });
        }
    }
    Ok(())
}

/// The whole of a thread's exit as far as I/O goes.
fn thread_exit(ctx: &mut Ctx<'_>, me: Tid) -> KResult<()> {
    thread_exit_io(ctx, me)?;
    ctx.io.exiting.remove(&me);
    Ok(())
}

/// The file object a client handle names: STATUS_INVALID_HANDLE if none (kernel
/// handles are not a user-mode caller's), STATUS_OBJECT_TYPE_MISMATCH for another
/// kind of object (a handle a driver made in this process).
fn file_of(ctx: &Ctx<'_>, pid: usize, handle: Handle) -> Result<usize, NTSTATUS> {
    match ctx.ob.find(Owner::Process(pid), handle.0, false) {
        Some(Target::Object(address)) if ctx.io.files.contains_key(address) => Ok(*address),
        Some(_) => Err(STATUS_OBJECT_TYPE_MISMATCH),
        None => Err(STATUS_INVALID_HANDLE),
    }
}

fn insert_handle(ctx: &mut Ctx<'_>, pid: usize, file: usize, granted: ACCESS_MASK) -> Handle {
    ctx.io.files.get_mut(&file).expect("file").handles += 1;
    Handle(ctx.ob.open_file_handle(Owner::Process(pid), file, granted))
}

/// The security check of a user-mode open, as IopParseDevice makes it (ReactOS
/// `file.c`; "Controlling Device Namespace Access"). An open of the device itself is
/// checked against the device's DACL. An open of a name below it (`\\.\Dev0\x`) is
/// checked only for traverse access, which the bypass-traverse privilege every token
/// holds grants except on disks and CD-ROMs; then, if the device has
/// FILE_DEVICE_SECURE_OPEN, against the DACL as well, and otherwise the driver's
/// IRP_MJ_CREATE alone decides. Returns the access the handle gets: what the check
/// granted, or, where no check ran, all that was asked for.
fn open_access(
    ctx: &Ctx<'_>,
    device: usize,
    pid: usize,
    remainder: &str,
    desired: ACCESS_MASK,
) -> Result<ACCESS_MASK, NTSTATUS> {
    let dacl = ctx.io.devices[&device].dacl.as_deref();
    let groups = crate::se::groups(ctx.io.processes[pid].admin);
    // SAFETY: the device object is live.
    let (device_type, characteristics) = unsafe {
        let object = device as PDEVICE_OBJECT;
        ((*object).DeviceType, (*object).Characteristics)
    };
    if remainder.is_empty() {
        return crate::se::access_check(dacl, groups, desired);
    }
    if matches!(device_type, FILE_DEVICE_DISK | FILE_DEVICE_CD_ROM) {
        crate::se::access_check(dacl, groups, FILE_TRAVERSE)?;
    }
    if characteristics & FILE_DEVICE_SECURE_OPEN != 0 {
        return crate::se::access_check(dacl, groups, desired);
    }
    let asked = crate::se::map_generic(desired & !MAXIMUM_ALLOWED);
    Ok(if desired & MAXIMUM_ALLOWED != 0 { asked | FILE_ALL_ACCESS } else { asked })
}

fn open(
    ctx: &mut Ctx<'_>,
    pid: usize,
    path: &str,
    desired: ACCESS_MASK,
    overlapped: bool,
) -> KResult<Result<Handle, NTSTATUS>> {
    let nt_path = path.strip_prefix("\\\\.\\").map_or_else(|| path.to_owned(), |rest| format!("\\??\\{rest}"));
    let Some((device, remainder)) = super::device::resolve(ctx, &nt_path) else {
        return Ok(Err(STATUS_OBJECT_NAME_NOT_FOUND));
    };
    let Some(info) = ctx.io.devices.get(&device) else { return Ok(Err(STATUS_OBJECT_NAME_NOT_FOUND)) };
    if info.deleted || super::driver::is_stopping(ctx, info.driver) {
        return Ok(Err(STATUS_NO_SUCH_DEVICE));
    }
    // SAFETY: the device object is live.
    let flags = unsafe { (*(device as PDEVICE_OBJECT)).Flags };
    if flags & DO_DEVICE_INITIALIZING != 0 {
        return Ok(Err(STATUS_NO_SUCH_DEVICE));
    }
    if flags & DO_EXCLUSIVE != 0 && ctx.io.files.values().any(|f| f.device == device) {
        return Ok(Err(STATUS_ACCESS_DENIED));
    }
    let granted = match open_access(ctx, device, pid, &remainder, desired) {
        Ok(granted) => granted,
        Err(denied) => return Ok(Err(denied)),
    };
    let mut object = crate::special_pool::Object::<FILE_OBJECT>::zeroed(crate::special_pool::Kind::FileObject);
    let mut name: Vec<u16> = remainder.encode_utf16().collect();
    object.Type = 5;
    object.Size = i16::try_from(size_of::<FILE_OBJECT>()).expect("small");
    object.DeviceObject = device as PDEVICE_OBJECT;
    let bytes = u16::try_from(name.len() * 2).unwrap_or(u16::MAX);
    object.FileName = UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: if name.is_empty() { std::ptr::null_mut() } else { name.as_mut_ptr() },
    };
    let file = object.as_ptr() as usize;
    ctx.io.files.insert(
        file,
        super::file::FileInfo {
            device,
            handles: 0,
            outstanding: 0,
            overlapped,
            sync_owner: None,
            _object: object,
            _name: name,
        },
    );
    ctx.ob.insert(file, Kind::File, 0);
    crate::ob::reference(ctx, device);
    super::device::add_open(ctx, device);
    // The driver sees the access asked for (mapped) in Parameters.Create.SecurityContext;
    // ntsim has no ACCESS_STATE to give (AccessState is NULL). The context lives until
    // the CREATE completed, which this thread waits for below.
    let mut security = Box::new(IO_SECURITY_CONTEXT {
        SecurityQos: std::ptr::null_mut(),
        AccessState: std::ptr::null_mut(),
        DesiredAccess: crate::se::map_generic(desired),
        FullCreateOptions: 0,
    });
    let security_context = std::ptr::from_mut(security.as_mut());
    let request = Request {
        major: u8::try_from(IRP_MJ_CREATE).expect("code"),
        file,
        device,
        buffer_len: 0,
        input: Vec::new(),
        max_information: u64::MAX,
        holds_file_ref: false,
        fill: Box::new(move |stack| stack.Parameters.Create.SecurityContext = security_context),
    };
    let (irp, result) = irp::build(ctx, request);
    irp::send(ctx, irp)?;
    let slot = Arc::clone(&result);
    ctx.block(Box::new(move |_| slot.lock().expect("slot").is_some().then_some(0)))?;
    let status = result.lock().expect("slot").as_ref().map_or(0, |r| r.status);
    drop(security);
    if !crate::wdk_sys::NT_SUCCESS(status) {
        // A failed open gets neither CLEANUP nor CLOSE.
        ctx.io.files.remove(&file);
        ctx.ob.objects.remove(&file);
        super::device::drop_open(ctx, device);
        crate::ob::dereference(ctx, device)?;
        return Ok(Err(status));
    }
    Ok(Ok(insert_handle(ctx, pid, file, granted)))
}

/// CloseHandle from user mode: its process's table only.
fn close(ctx: &mut Ctx<'_>, pid: usize, handle: u64) -> KResult<NTSTATUS> {
    match ctx.ob.take(Owner::Process(pid), handle, false) {
        None => Ok(STATUS_INVALID_HANDLE),
        Some(Target::Key(_)) => Ok(STATUS_SUCCESS),
        Some(Target::Object(object)) => {
            close_object_handle(ctx, object)?;
            Ok(STATUS_SUCCESS)
        }
    }
}

/// A handle to `object` was removed from its table: drops the handle's reference,
/// after IRP_MJ_CLEANUP if it was a file object's last handle.
pub(crate) fn close_object_handle(ctx: &mut Ctx<'_>, object: usize) -> KResult<()> {
    if ctx.io.files.contains_key(&object) {
        close_file_handle(ctx, object)
    } else {
        crate::ob::dereference(ctx, object).map(|_| ())
    }
}

fn close_file_handle(ctx: &mut Ctx<'_>, file: usize) -> KResult<()> {
    let info = ctx.io.files.get_mut(&file).expect("file of a handle");
    info.handles -= 1;
    if info.handles == 0 {
        // IopCloseFile locks a synchronous file object before IRP_MJ_CLEANUP: the close
        // waits for a synchronous request another thread is blocked in.
        let synchronous = !info.overlapped;
        if synchronous {
            lock_file(ctx, file)?;
        }
        super::file::cleanup(ctx, file)?;
        if synchronous {
            unlock_file(ctx, file);
        }
    }
    crate::ob::dereference(ctx, file)?;
    Ok(())
}
