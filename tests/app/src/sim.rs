//! The ntsim backend: stagedrv's own code loaded into a simulated NT machine. One
//! machine serves every scenario, as one boot of Windows would: DriverEntry when the
//! backend starts, `sc stop` in [`Sim::unload`] at the end, then ntsim's verdict.
//!
//! Application threads are simulated threads of one client process; time is simulated
//! (waiting moves the machine's clock, so timers, DPCs and the watchdog fire on the way).

use std::collections::BTreeMap;

use ntsim::{
    Config, Driver, DriverState, Handle, IoResult, Issued, Machine, PendingIo, Process, Stopped, Thread, Value,
};

use crate::client::{ChildEnd, Client, Fail, H, Io, Outcome, Read, Status, Tid, Worker};
use crate::rng::Rng;

/// `ReadTimeoutSeconds` written to the service's Parameters key before DriverEntry,
/// so the watchdog (an IoTimer) has something to do.
pub const READ_TIMEOUT_S: u32 = 2;

/// The dwDesiredAccess the win32 backend passes to CreateFileW.
const WIN32_ACCESS: u32 = ntsim::wdk_sys::GENERIC_READ | ntsim::wdk_sys::GENERIC_WRITE;

pub struct Sim {
    machine: &'static Machine,
    driver: Driver,
    seed: u64,
    process: Option<Process<'static>>,
    /// Application thread → ntsim thread of `process` (None once it exited).
    threads: Vec<Option<Thread<'static>>>,
    ios: Vec<PendingIo>,
    /// Trace entries already summarised by [`Client::activity`].
    trace_seen: u64,
    /// The first bug check, as text; every later call fails with a pointer to it.
    halted: Option<String>,
}

fn stopped(what: &str, stop: &Stopped) -> Fail {
    match stop {
        Stopped::BugCheck(v) => Fail(format!("{what}: ntsim stopped the machine: {v}")),
        Stopped::Hang(h) => Fail(format!("{what}: {h}")),
    }
}

fn outcome(result: IoResult) -> Outcome {
    #[allow(clippy::cast_sign_loss)]
    let status = Status::from_nt(result.status as u32);
    Outcome { status, bytes: usize::try_from(result.information).unwrap_or(usize::MAX), data: result.data }
}

impl Sim {
    /// Builds the machine, writes the driver's Parameters and runs DriverEntry.
    pub fn start(seed: u64) -> Result<Sim, Fail> {
        // Leaked on purpose: processes and threads borrow the machine for the life of
        // the program, which ends soon after the machine is no longer needed.
        let machine: &'static Machine = Box::leak(Box::new(Machine::new(Config::seeded(seed))));
        let parameters = format!("{}\\Parameters", ntsim::service_key("stagedrv"));
        machine.registry().set(&parameters, "ReadTimeoutSeconds", &Value::Dword(READ_TIMEOUT_S));
        let (driver, status) =
            machine.load_driver("stagedrv", stagedrv::driver_entry).map_err(|s| stopped("DriverEntry", &s))?;
        if status != 0 {
            return Err(Fail(format!("DriverEntry failed with {:#010x}", status.cast_unsigned())));
        }
        let process = machine.new_process();
        let main = process.main();
        Ok(Sim {
            machine,
            driver,
            seed,
            process: Some(process),
            threads: vec![Some(main)],
            ios: Vec::new(),
            trace_seen: 0,
            halted: None,
        })
    }

    fn check<T>(&mut self, what: &str, result: Result<T, Stopped>) -> Result<T, Fail> {
        result.map_err(|stop| {
            let fail = stopped(what, &stop);
            if matches!(stop, Stopped::BugCheck(_)) && self.halted.is_none() {
                self.halted = Some(fail.0.clone());
            }
            fail
        })
    }

    fn thread(&self, on: Tid) -> Result<Thread<'static>, Fail> {
        if let Some(bug) = &self.halted {
            return Err(Fail(format!("not run: the machine is stopped ({})", bug.lines().next().unwrap_or(""))));
        }
        self.threads
            .get(on)
            .copied()
            .flatten()
            .ok_or_else(|| Fail(format!("application thread {on} does not exist (or exited)")))
    }

    /// The end of the program: the client process exits (closing whatever it still
    /// holds), then `sc stop`, the wait for DriverUnload, and ntsim's verdict. Returns
    /// what happened, for a person to read; `Err` if the unload was not clean.
    pub fn unload(&mut self) -> Result<Vec<String>, Fail> {
        let mut notes = Vec::new();
        if let Some(bug) = &self.halted {
            return Err(Fail(format!("the machine stopped at a bug check earlier; no unload: {bug}")));
        }
        if let Some(process) = self.process.take() {
            let open = process.handle_count();
            if open > 0 {
                notes.push(format!("{open} handle(s) still open at exit"));
            }
            let exited = process.exit();
            self.check("process exit", exited)?;
        }
        let state = self.machine.stop_driver(self.driver);
        let state = self.check("sc stop", state)?;
        notes.push(format!("sc stop: {state:?}"));
        if state != DriverState::Unloaded {
            let waited = self.machine.wait_unloaded(self.driver);
            self.check("waiting for DriverUnload", waited)?;
        }
        let verdict = self.machine.verdict();
        self.check("verdict", verdict)?;
        Ok(notes)
    }

    /// Every DbgPrintEx line the driver printed, in order.
    pub fn debug_output(&self) -> Vec<String> {
        self.machine.debug_output()
    }
}

impl Client for Sim {
    fn open(&mut self, on: Tid, device: u32, suffix: &str, overlapped: bool) -> Result<Result<H, Status>, Fail> {
        let thread = self.thread(on)?;
        let opened = thread.open_with_access(&format!(r"\\.\StageDrv{device}{suffix}"), WIN32_ACCESS, overlapped);
        let opened = self.check("CreateFile", opened)?;
        Ok(opened.map(|h| h.0).map_err(|s| Status::from_nt(s.cast_unsigned())))
    }

    fn read(&mut self, on: Tid, handle: H, length: usize) -> Result<Read, Fail> {
        let thread = self.thread(on)?;
        let issued = thread.read(Handle(handle), length);
        Ok(match self.check("ReadFile", issued)? {
            Issued::Done(result) => Read::Done(outcome(result)),
            Issued::Pending(io) => {
                self.ios.push(io);
                Read::Pending(self.ios.len() - 1)
            }
        })
    }

    fn wait(&mut self, io: Io, timeout_ms: u64) -> Result<Option<Outcome>, Fail> {
        self.thread(0)?;
        let pending = self.ios.get(io).cloned().ok_or("no such request")?;
        // Simulated time, in steps, so that a request that never completes ends the
        // wait instead of running the periodic timer forever.
        let mut waited = 0;
        loop {
            if let Some(result) = pending.result() {
                return Ok(Some(outcome(result)));
            }
            if waited >= timeout_ms {
                return Ok(None);
            }
            let advanced = self.machine.advance_ms(10);
            self.check("waiting for a read", advanced)?;
            waited += 10;
        }
    }

    fn poll(&mut self, io: Io) -> Result<Option<Outcome>, Fail> {
        self.thread(0)?;
        let pending = self.ios.get(io).ok_or("no such request")?;
        Ok(pending.result().map(outcome))
    }

    fn cancel_io(&mut self, on: Tid, handle: H) -> Result<(), Fail> {
        let thread = self.thread(on)?;
        let status = thread.cancel_io(Handle(handle));
        self.check("CancelIo", status).map(drop)
    }

    fn cancel_io_ex(&mut self, on: Tid, handle: H, io: Option<Io>) -> Result<(), Fail> {
        let thread = self.thread(on)?;
        let pending = match io {
            Some(io) => Some(self.ios.get(io).cloned().ok_or("no such request")?),
            None => None,
        };
        let status = thread.cancel_io_ex(Handle(handle), pending.as_ref());
        self.check("CancelIoEx", status).map(drop)
    }

    fn close(&mut self, on: Tid, handle: H) -> Result<(), Fail> {
        let thread = self.thread(on)?;
        let status = thread.close(Handle(handle));
        let status = self.check("CloseHandle", status)?;
        if status == 0 {
            Ok(())
        } else {
            Err(Fail(format!("CloseHandle: {}", Status::from_nt(status.cast_unsigned()))))
        }
    }

    fn ioctl(&mut self, on: Tid, handle: H, code: u32, input: &[u8], output_length: usize) -> Result<Outcome, Fail> {
        let thread = self.thread(on)?;
        let issued = thread.ioctl(Handle(handle), code, input, output_length);
        match self.check("DeviceIoControl", issued)? {
            Issued::Done(result) => Ok(outcome(result)),
            Issued::Pending(io) => {
                let waited = thread.wait(&io);
                self.check("DeviceIoControl", waited).map(outcome)
            }
        }
    }

    fn duplicate(&mut self, on: Tid, handle: H) -> Result<H, Fail> {
        let thread = self.thread(on)?;
        let duplicated = thread.duplicate(Handle(handle));
        self.check("DuplicateHandle", duplicated)?
            .map(|h| h.0)
            .map_err(|s| Fail(format!("DuplicateHandle: {}", Status::from_nt(s.cast_unsigned()))))
    }

    fn spawn_thread(&mut self) -> Result<Tid, Fail> {
        self.thread(0)?;
        let process = self.process.as_ref().ok_or("the process exited")?;
        let thread = process.thread(self.threads.len());
        self.threads.push(Some(thread));
        Ok(self.threads.len() - 1)
    }

    fn exit_thread(&mut self, thread: Tid) -> Result<(), Fail> {
        if thread == 0 {
            return Err("the main thread does not exit before the scenarios end".into());
        }
        let t = self.thread(thread)?;
        let exited = t.exit();
        self.check("thread exit", exited)?;
        self.threads[thread] = None;
        Ok(())
    }

    fn child_with_pending_reads(&mut self, device: u32, reads: usize, _end: ChildEnd) -> Result<usize, Fail> {
        self.thread(0)?;
        // ntsim has one way for a process to end abruptly: every thread's I/O is
        // cancelled, then every handle closed (TerminateProcess and ExitProcess alike).
        let child = self.machine.new_process();
        let opened = child.open_with_access(&format!(r"\\.\StageDrv{device}"), WIN32_ACCESS, true);
        let handle = self
            .check("child CreateFile", opened)?
            .map_err(|s| Fail(format!("child open: {:#x}", s.cast_unsigned())))?;
        // Take what the ring holds, so that the next reads pend.
        let drained = child.read(handle, crate::scenarios::DRAIN_BYTES);
        // If the ring was empty the draining read pends too, and counts.
        let mut pending = usize::from(matches!(self.check("child drain", drained)?, Issued::Pending(_)));
        for _ in 0..reads {
            let issued = child.read(handle, crate::protocol::RECORD_SIZE);
            if let Issued::Pending(_) = self.check("child ReadFile", issued)? {
                pending += 1;
            }
        }
        let exited = child.exit();
        self.check("child exit", exited)?;
        Ok(pending)
    }

    fn sleep_ms(&mut self, ms: u64) -> Result<(), Fail> {
        self.thread(0)?;
        let advanced = self.machine.advance_ms(ms);
        self.check("sleep", advanced)
    }

    fn read_timeout_s(&self) -> Option<u32> {
        Some(READ_TIMEOUT_S)
    }

    fn run_workers(&mut self, workers: Vec<Box<dyn Worker>>) -> Result<(), Fail> {
        // One simulated thread per worker; the steps of all workers are interleaved in
        // an order drawn from the seed (the machine's scheduler interleaves the driver's
        // own threads, DPCs and timers within each step).
        let mut live: Vec<(Tid, Box<dyn Worker>)> = Vec::new();
        for worker in workers {
            live.push((self.spawn_thread()?, worker));
        }
        let mut rng = Rng::new(self.seed ^ 0x5eed);
        while !live.is_empty() {
            let pick = rng.below(live.len());
            let (on, worker) = &mut live[pick];
            let on = *on;
            if !worker.step(self, on)? {
                live.swap_remove(pick);
                self.exit_thread(on)?;
            }
        }
        Ok(())
    }

    fn activity(&mut self) -> Vec<String> {
        let calls = self.machine.trace();
        let fresh: Vec<_> = calls.iter().filter(|c| c.seq >= self.trace_seen).collect();
        if let Some(last) = calls.last() {
            self.trace_seen = last.seq + 1;
        }
        let mut by_routine: BTreeMap<String, usize> = BTreeMap::new();
        for call in fresh.iter().filter(|c| c.api == "IofCompleteRequest") {
            *by_routine.entry(call.routine.to_string()).or_default() += 1;
        }
        let total: usize = by_routine.values().sum();
        if total == 0 {
            return Vec::new();
        }
        let parts: Vec<String> = by_routine.iter().map(|(routine, n)| format!("{n} in {routine}")).collect();
        vec![format!("driver completed {total} IRP(s): {}", parts.join(", "))]
    }
}
