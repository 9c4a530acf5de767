//! Model-based test of the read path: proptest generates sequences of client
//! operations over several processes, threads and handles (open, overlapped reads of
//! any length, CancelIoEx of one read or of all, CancelIo, CloseHandle,
//! DuplicateHandle within a process and into another one, time passing, thread and
//! process exit, `sc stop`, the statistics IOCTL) and the driver's parameters
//! (producer period, read timeout, ring capacity, per-handle limit). A plain-Rust
//! model of the driver's documented behaviour, with no ntsim in it, predicts every
//! result; the real driver runs the same sequence in ntsim; they must agree after
//! every operation. proptest shrinks a disagreement to a minimal sequence.
//!
//! # Why the model can be exact
//!
//! The controller issues one operation at a time and every ntsim client call runs the
//! machine until it is idle, so an operation never overlaps a timer, the consumer
//! thread or another operation. Time moves only in `Advance`, which ntsim processes
//! one timer instant at a time, each to idle. The parameters keep those instants
//! apart and predictable:
//!
//! - the machine's clock ticks every 0.5 ms, the finest timer resolution Windows
//!   machines offer (KeQuerySystemTimePrecise documentation: a tick is 500 µs to
//!   15.625 ms), and timers expire on ticks counted from the latest one: at the
//!   default 15.625 ms every producer tick would land on a clock tick, and so on the
//!   IoTimer's whole seconds now and then, where Windows orders the two DPCs either way;
//! - the driver is loaded at 0.5 ms and the producer period is a whole number of
//!   milliseconds, so a producer tick (0.5 ms + k·period) never falls on an IoTimer
//!   tick (whole seconds) and reads are never issued on a whole second: the watchdog's
//!   `age >= timeout` comparison never ties;
//! - both devices tick at the same instants, but devices share nothing the outcome
//!   depends on (each has its own ring, handles and counters), so the order of their
//!   two DPCs and of the consumer thread does not matter;
//! - after every instant, each device has an empty ring or no pending read (the
//!   consumer drains one or the other), so a new read either completes at once or
//!   pends behind an empty ring; one record per tick therefore goes to the oldest read
//!   of the handle at the head of the device's active list (handles with reads
//!   pending, in the order their queues became non-empty), and that handle then moves
//!   to the back of the list if it has more (handles take turns).
//!
//! Each case runs under a generated scheduler (`Mode::Seeded` or `Mode::Pct` with any
//! seed, or `Mode::Free`): the results must not depend on it. The model predicts the
//! exact status, byte count and record contents (sequence, timestamp, value) of every
//! read, the result of every other call, the device counters returned by the IOCTL,
//! and the driver's unload state. At the end every process exits and the driver must
//! unload with ntsim's verdict clean and every read completed (exactly once: a second
//! completion is a bug check in ntsim).
//!
//! Not covered, by construction: reads racing timers or each other (the exploration
//! tests cover those), and the consumer's multi-record rounds (one record arrives per
//! tick, so a round never has more than one record to hand out).
//!
//! `PROPTEST_CASES=N` sets the number of generated sequences (default 256, a few
//! seconds in a debug build).

// Test code: small constants cast to u8, times shown in milliseconds as floats.
#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]

mod common;

use std::collections::VecDeque;
use std::fmt::Write as _;

use common::{IOCTL_STAGEDRV_GET_STATS, RECORD_SIZE, Stats, parameters_key};
use ntsim::wdk_sys::{
    NTSTATUS, STATUS_BUFFER_TOO_SMALL, STATUS_CANCELLED, STATUS_INVALID_HANDLE, STATUS_IO_TIMEOUT,
    STATUS_NO_SUCH_DEVICE, STATUS_NOT_FOUND, STATUS_OBJECT_NAME_NOT_FOUND, STATUS_QUOTA_EXCEEDED, STATUS_SUCCESS,
};
use ntsim::{Config, Driver, DriverState, Handle, IoResult, Issued, Machine, Mode, PendingIo, Process, Value};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

// --- parameters (written to the service's Parameters key) --------------------------

const DEVICES: usize = 2;
const PROCESSES: usize = 3;
const THREADS: usize = 2;

/// 100 ns units.
const MS: u64 = 10_000;
const SECOND: u64 = 1_000 * MS;
/// The driver is loaded at 0.5 ms; see the module comment.
const LOAD_AT: u64 = MS / 2;
/// The machine's clock tick: 0.5 ms; see the module comment.
const TICK: u64 = MS / 2;

/// The driver's parameters for one case. Any whole-millisecond period keeps producer
/// ticks off the IoTimer's whole seconds (see the module comment).
#[derive(Clone, Copy, Debug)]
struct Params {
    period_ms: u64,
    timeout_s: u64,
    ring_capacity: usize,
    max_pending: usize,
}

impl Params {
    fn registry(self) -> [(&'static str, u32); 5] {
        let dword = |v: u64| u32::try_from(v).expect("small");
        [
            ("SamplePeriodMs", dword(self.period_ms)),
            ("ReadTimeoutSeconds", dword(self.timeout_s)),
            ("RingCapacity", dword(self.ring_capacity as u64)),
            ("MaxPendingReadsPerHandle", dword(self.max_pending as u64)),
            // The work item runs often; it must not change any result.
            ("StatisticsEveryTicks", 3),
        ]
    }
}

fn params() -> impl Strategy<Value = Params> {
    let period = prop_oneof![Just(300u64), Just(700), Just(1_300), Just(2_500), 50..=2_000u64];
    let timeout = prop_oneof![3 => Just(1u64), 1 => Just(2u64)];
    (period, timeout, prop_oneof![Just(8usize), Just(16)], 1..=4usize).prop_map(
        |(period_ms, timeout_s, ring_capacity, max_pending)| Params {
            period_ms,
            timeout_s,
            ring_capacity,
            max_pending,
        },
    )
}

// --- operations ---------------------------------------------------------------------

/// One client operation. Indices pick among what exists when the operation runs
/// (modulo the count), so every generated sequence is meaningful and shrinks well.
#[derive(Clone, Debug)]
enum Op {
    /// CreateFile(`\\.\StageDrv<device>`, overlapped) in `process`.
    Open {
        process: u8,
        device: u8,
    },
    /// Overlapped ReadFile of `length` bytes on handle #`handle`, from its process's
    /// thread `thread`.
    Read {
        handle: u8,
        thread: u8,
        length: usize,
    },
    /// CancelIoEx(handle, NULL) or CancelIoEx(handle, the `read`th read that pended).
    CancelIoEx {
        handle: u8,
        read: Option<u8>,
    },
    /// CancelIo(handle) from thread `thread` of the handle's process.
    CancelIo {
        handle: u8,
        thread: u8,
    },
    Close {
        handle: u8,
    },
    Duplicate {
        handle: u8,
    },
    /// DuplicateHandle into another process: the file object then has handles in two
    /// processes, and its cleanup waits for both.
    DuplicateInto {
        handle: u8,
        process: u8,
    },
    /// IOCTL_STAGEDRV_GET_STATS on the handle.
    Stats {
        handle: u8,
    },
    /// Simulated time passes.
    Advance {
        ms: u16,
    },
    /// Thread 1 of `process` exits: its I/O is cancelled.
    ExitThread {
        process: u8,
    },
    /// The process exits: its I/O is cancelled, its handles closed.
    ExitProcess {
        process: u8,
    },
    /// `sc stop`: unloads now if nothing is open, else when the last handle goes.
    Stop,
}

fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => (1..=4usize).prop_map(|n| n * RECORD_SIZE),
        1 => Just(0usize),
        1 => 1..RECORD_SIZE,
        1 => (1..=3usize, 1..RECORD_SIZE).prop_map(|(n, extra)| n * RECORD_SIZE + extra),
    ]
}

fn advance_ms() -> impl Strategy<Value = u16> {
    prop_oneof![1..=20u16, 280..=320u16, 950..=1_050u16, 1..=2_500u16]
}

fn op() -> impl Strategy<Value = Op> {
    let process = 0..PROCESSES as u8;
    prop_oneof![
        6 => (process.clone(), 0..DEVICES as u8).prop_map(|(process, device)| Op::Open { process, device }),
        20 => (any::<u8>(), 0..THREADS as u8, length()).prop_map(|(handle, thread, length)| Op::Read { handle, thread, length }),
        3 => (any::<u8>(), proptest::option::of(any::<u8>())).prop_map(|(handle, read)| Op::CancelIoEx { handle, read }),
        2 => (any::<u8>(), 0..THREADS as u8).prop_map(|(handle, thread)| Op::CancelIo { handle, thread }),
        3 => any::<u8>().prop_map(|handle| Op::Close { handle }),
        2 => any::<u8>().prop_map(|handle| Op::Duplicate { handle }),
        2 => (any::<u8>(), process.clone()).prop_map(|(handle, process)| Op::DuplicateInto { handle, process }),
        2 => any::<u8>().prop_map(|handle| Op::Stats { handle }),
        9 => advance_ms().prop_map(|ms| Op::Advance { ms }),
        1 => process.clone().prop_map(|process| Op::ExitThread { process }),
        1 => process.prop_map(|process| Op::ExitProcess { process }),
        1 => Just(Op::Stop),
    ]
}

/// A whole case: the scheduler (any seed must give the same results) and the ops.
#[derive(Clone, Debug)]
struct Case {
    mode: Mode,
    params: Params,
    ops: Vec<Op>,
}

fn case() -> impl Strategy<Value = Case> {
    let mode = prop_oneof![
        any::<u64>().prop_map(Mode::Seeded),
        any::<u64>().prop_map(|seed| Mode::Pct { seed, depth: 3 }),
        Just(Mode::Free),
    ];
    (mode, params(), proptest::collection::vec(op(), 1..48)).prop_map(|(mode, params, ops)| Case { mode, params, ops })
}

// --- the model ----------------------------------------------------------------------

/// A record as the model predicts it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Rec {
    sequence: u64,
    timestamp: u64,
    value: u64,
}

impl std::fmt::Debug for Rec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{} at {} ms value {:#x}", self.sequence, self.timestamp as f64 / MS as f64, self.value)
    }
}

/// A read's predicted state.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Pending,
    Done { status: NTSTATUS, records: Vec<Rec> },
}

struct MRead {
    process: usize,
    thread: usize,
    file: usize,
    length: usize,
    /// Simulated time the driver queued it (for the watchdog).
    queued_at: u64,
    outcome: Outcome,
}

struct MFile {
    device: usize,
    handles: usize,
    /// Pending reads, oldest first.
    pending: VecDeque<usize>,
}

#[derive(Clone, Copy)]
struct MHandle {
    process: usize,
    file: usize,
    open: bool,
}

#[derive(Default)]
struct MDevice {
    ring: VecDeque<Rec>,
    produced: u64,
    dropped: u64,
    stats: Stats,
    /// Open file objects.
    files: Vec<usize>,
    /// File objects with reads pending, in the order the consumer serves them (the
    /// driver's active list).
    active: Vec<usize>,
}

struct Model {
    params: Params,
    now: u64,
    /// Producer ticks so far (both devices tick together).
    ticks: u64,
    devices: Vec<MDevice>,
    files: Vec<MFile>,
    handles: Vec<MHandle>,
    reads: Vec<MRead>,
    /// Reads that pended when issued: what CancelIoEx(handle, read) can name.
    pended: Vec<usize>,
    process_alive: [bool; PROCESSES],
    thread_alive: [[bool; THREADS]; PROCESSES],
    driver: DriverState,
    /// `sc stop` found handles open (coverage only).
    stopped_while_open: bool,
}

impl Model {
    fn new(params: Params) -> Self {
        Model {
            params,
            now: LOAD_AT,
            ticks: 0,
            devices: (0..DEVICES).map(|_| MDevice::default()).collect(),
            files: Vec::new(),
            handles: Vec::new(),
            reads: Vec::new(),
            pended: Vec::new(),
            process_alive: [true; PROCESSES],
            thread_alive: [[true; THREADS]; PROCESSES],
            driver: DriverState::Running,
            stopped_while_open: false,
        }
    }

    fn any_file_open(&self) -> bool {
        self.devices.iter().any(|d| !d.files.is_empty())
    }

    fn open(&mut self, process: usize, device: usize) -> Result<usize, NTSTATUS> {
        match self.driver {
            DriverState::Unloaded => return Err(STATUS_OBJECT_NAME_NOT_FOUND),
            DriverState::Running => {}
            _ => return Err(STATUS_NO_SUCH_DEVICE),
        }
        let file = self.files.len();
        self.files.push(MFile { device, handles: 1, pending: VecDeque::new() });
        self.devices[device].files.push(file);
        self.handles.push(MHandle { process, file, open: true });
        Ok(self.handles.len() - 1)
    }

    /// DuplicateHandle into `process` (the handle's own or another).
    fn duplicate(&mut self, handle: usize, process: usize) -> Result<usize, NTSTATUS> {
        let h = self.handles[handle];
        if !h.open {
            return Err(STATUS_INVALID_HANDLE);
        }
        self.files[h.file].handles += 1;
        self.handles.push(MHandle { open: true, process, ..h });
        Ok(self.handles.len() - 1)
    }

    fn finish(&mut self, read: usize, status: NTSTATUS, records: Vec<Rec>) {
        self.reads[read].outcome = Outcome::Done { status, records };
    }

    /// Takes whole records from the ring for a read of `length` bytes.
    fn fill(&mut self, device: usize, length: usize) -> Vec<Rec> {
        let ring = &mut self.devices[device].ring;
        let count = (length / RECORD_SIZE).min(ring.len());
        ring.drain(..count).collect()
    }

    fn read(&mut self, handle: usize, thread: usize, length: usize) -> usize {
        let h = self.handles[handle];
        let id = self.reads.len();
        self.reads.push(MRead {
            process: h.process,
            thread,
            file: h.file,
            length,
            queued_at: self.now,
            outcome: Outcome::Pending,
        });
        if !h.open {
            // The I/O manager fails it; the driver never sees it.
            self.finish(id, STATUS_INVALID_HANDLE, Vec::new());
            return id;
        }
        let device = self.files[h.file].device;
        let ring_has_data = !self.devices[device].ring.is_empty();
        let queued = self.files[h.file].pending.len();
        let stats = &mut self.devices[device].stats;
        stats.reads_received += 1;
        if length == 0 {
            // Zero bytes succeed at once, whatever is queued.
            stats.reads_completed += 1;
            self.finish(id, STATUS_SUCCESS, Vec::new());
        } else if length < RECORD_SIZE {
            stats.reads_rejected += 1;
            self.finish(id, STATUS_BUFFER_TOO_SMALL, Vec::new());
        } else if queued == 0 && ring_has_data {
            stats.reads_completed += 1;
            let records = self.fill(device, length);
            self.finish(id, STATUS_SUCCESS, records);
        } else if queued >= self.params.max_pending {
            stats.reads_rejected += 1;
            self.finish(id, STATUS_QUOTA_EXCEEDED, Vec::new());
        } else {
            stats.reads_pending += 1;
            if queued == 0 {
                self.devices[device].active.push(h.file);
            }
            self.files[h.file].pending.push_back(id);
            self.pended.push(id);
        }
        id
    }

    /// Cancels pending reads of `file` (any file if `None`) that `keep` accepts.
    /// Cancels the pending reads `keep` selects; returns how many there were.
    fn cancel(&mut self, file: Option<usize>, keep: impl Fn(usize, &MRead) -> bool) -> usize {
        let chosen: Vec<usize> = (0..self.reads.len())
            .filter(|&r| self.reads[r].outcome == Outcome::Pending)
            .filter(|&r| file.is_none_or(|f| self.reads[r].file == f) && keep(r, &self.reads[r]))
            .collect();
        let count = chosen.len();
        for read in chosen {
            let file = self.reads[read].file;
            self.files[file].pending.retain(|&r| r != read);
            self.leave_if_idle(file);
            let stats = &mut self.devices[self.files[file].device].stats;
            stats.reads_pending -= 1;
            stats.reads_cancelled += 1;
            self.finish(read, STATUS_CANCELLED, Vec::new());
        }
        count
    }

    fn cancel_io_ex(&mut self, handle: usize, read: Option<usize>) -> NTSTATUS {
        let h = self.handles[handle];
        if !h.open {
            return STATUS_INVALID_HANDLE;
        }
        // The calling process's requests on the file object (CancelIoEx); none is
        // STATUS_NOT_FOUND (ERROR_NOT_FOUND).
        let cancelled = self.cancel(Some(h.file), |r, m| m.process == h.process && read.is_none_or(|only| r == only));
        if cancelled == 0 { STATUS_NOT_FOUND } else { STATUS_SUCCESS }
    }

    fn close(&mut self, handle: usize) -> NTSTATUS {
        let h = self.handles[handle];
        if !h.open {
            return STATUS_INVALID_HANDLE;
        }
        self.handles[handle].open = false;
        self.files[h.file].handles -= 1;
        if self.files[h.file].handles == 0 {
            // IRP_MJ_CLEANUP cancels what is queued; IRP_MJ_CLOSE follows.
            self.cancel(Some(h.file), |_, _| true);
            let device = self.files[h.file].device;
            self.devices[device].files.retain(|&f| f != h.file);
            if self.driver == DriverState::UnloadPending && !self.any_file_open() {
                self.driver = DriverState::Unloaded;
            }
        }
        STATUS_SUCCESS
    }

    fn exit_thread(&mut self, process: usize, thread: usize) {
        self.cancel(None, |_, r| r.process == process && r.thread == thread);
        self.thread_alive[process][thread] = false;
    }

    fn exit_process(&mut self, process: usize) {
        for thread in 0..THREADS {
            self.cancel(None, |_, r| r.process == process && r.thread == thread);
        }
        for handle in 0..self.handles.len() {
            if self.handles[handle].process == process && self.handles[handle].open {
                self.close(handle);
            }
        }
        self.process_alive[process] = false;
    }

    fn stop(&mut self) -> DriverState {
        if self.driver == DriverState::Running {
            self.stopped_while_open = self.any_file_open();
            self.driver = if self.stopped_while_open { DriverState::UnloadPending } else { DriverState::Unloaded };
        }
        self.driver
    }

    fn device_stats(&self, device: usize) -> Stats {
        let d = &self.devices[device];
        Stats { records_produced: d.produced, records_dropped: d.dropped, ..d.stats }
    }

    /// Time passes: producer ticks at LOAD_AT + k·period, watchdog ticks on whole
    /// seconds, in time order (they never coincide).
    fn advance(&mut self, ms: u64) {
        let target = self.now + ms * MS;
        loop {
            let producer = LOAD_AT + (self.ticks + 1) * self.params.period_ms * MS;
            let watchdog = (self.now / SECOND + 1) * SECOND;
            let next = producer.min(watchdog);
            if next > target {
                break;
            }
            self.now = next;
            let loaded = self.driver != DriverState::Unloaded;
            if next == producer {
                self.ticks += 1;
                if loaded {
                    self.produce();
                }
            } else if loaded {
                self.watchdog();
            }
        }
        self.now = target;
    }

    fn produce(&mut self) {
        for device in 0..DEVICES {
            let d = &mut self.devices[device];
            let record = Rec { sequence: d.produced, timestamp: self.now, value: ((device as u64) << 56) | d.produced };
            d.produced += 1;
            if d.ring.len() == self.params.ring_capacity {
                d.ring.pop_front();
                d.dropped += 1;
            }
            d.ring.push_back(record);
            self.deliver(device);
        }
    }

    /// A file object whose queue emptied leaves its device's active list.
    fn leave_if_idle(&mut self, file: usize) {
        if self.files[file].pending.is_empty() {
            self.devices[self.files[file].device].active.retain(|&f| f != file);
        }
    }

    /// The consumer thread: while records remain, serves the oldest read of the handle
    /// at the head of the active list, and sends that handle to the back if it has
    /// more reads.
    fn deliver(&mut self, device: usize) {
        while !self.devices[device].ring.is_empty() {
            let Some(&file) = self.devices[device].active.first() else { break };
            let read = self.files[file].pending.pop_front().expect("has a pending read");
            let length = self.reads[read].length;
            let records = self.fill(device, length);
            let stats = &mut self.devices[device].stats;
            stats.reads_pending -= 1;
            stats.reads_completed += 1;
            self.finish(read, STATUS_SUCCESS, records);
            let list = &mut self.devices[device].active;
            list.remove(0);
            if !self.files[file].pending.is_empty() {
                list.push(file);
            }
        }
    }

    /// The IoTimer: reads queued at least the timeout ago fail with STATUS_IO_TIMEOUT.
    fn watchdog(&mut self) {
        for device in 0..DEVICES {
            for file in self.devices[device].active.clone() {
                while let Some(&read) = self.files[file].pending.front() {
                    if self.now - self.reads[read].queued_at < self.params.timeout_s * SECOND {
                        break;
                    }
                    self.files[file].pending.pop_front();
                    let stats = &mut self.devices[device].stats;
                    stats.reads_pending -= 1;
                    stats.reads_timed_out += 1;
                    self.finish(read, STATUS_IO_TIMEOUT, Vec::new());
                }
                self.leave_if_idle(file);
            }
        }
    }

    fn cancel_io(&mut self, handle: usize, thread: usize) -> NTSTATUS {
        let h = self.handles[handle];
        if !h.open {
            return STATUS_INVALID_HANDLE;
        }
        self.cancel(Some(h.file), |_, r| r.process == h.process && r.thread == thread);
        STATUS_SUCCESS
    }
}

// --- the real driver in ntsim, checked against the model --------------------------

/// What the client holds for one read.
enum SimRead {
    Done(IoResult),
    Pending(PendingIo),
}

impl SimRead {
    fn result(&self) -> Option<IoResult> {
        match self {
            SimRead::Done(result) => Some(result.clone()),
            SimRead::Pending(io) => io.result(),
        }
    }
}

fn record_bytes(records: &[Rec]) -> Vec<u8> {
    records
        .iter()
        .flat_map(|r| [r.sequence.to_le_bytes(), r.timestamp.to_le_bytes(), r.value.to_le_bytes()])
        .flatten()
        .collect()
}

fn decode(data: &[u8]) -> Vec<Rec> {
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    data.chunks_exact(RECORD_SIZE)
        .map(|r| Rec { sequence: word(&r[..8]), timestamp: word(&r[8..16]), value: word(&r[16..24]) })
        .collect()
}

/// The result the client should hold for `outcome` (`None`: still pending).
fn expected_result(outcome: &Outcome) -> Option<IoResult> {
    match outcome {
        Outcome::Pending => None,
        Outcome::Done { status, records } => Some(IoResult {
            status: *status,
            information: (records.len() * RECORD_SIZE) as u64,
            data: record_bytes(records),
        }),
    }
}

fn show(result: Option<&IoResult>) -> String {
    match result {
        None => "pending".to_owned(),
        Some(r) if r.status == STATUS_SUCCESS => {
            format!("success, {} bytes, records {:?}", r.information, decode(&r.data))
        }
        Some(r) => format!("status {:#010x}, {} bytes", r.status.cast_unsigned(), r.information),
    }
}

#[allow(clippy::needless_pass_by_value, reason = "used as map_err(stopped)")]
fn stopped(e: ntsim::Stopped) -> String {
    format!("ntsim stopped: {e}")
}

struct Run<'m> {
    machine: &'m Machine,
    driver: Driver,
    processes: Vec<Option<Process<'m>>>,
    /// Parallel to `model.handles` and `model.reads`.
    handles: Vec<Handle>,
    reads: Vec<SimRead>,
    model: Model,
}

impl<'m> Run<'m> {
    /// The handle `index` names: one of the open handles of live processes for most
    /// indices (and when shrunk), any handle ever opened (closed ones too) for the top
    /// eighth. `None` (the op is skipped) if there is none or its process exited.
    fn pick_handle(&self, index: u8) -> Option<usize> {
        let live = |h: &&MHandle| self.model.process_alive[h.process];
        let open: Vec<usize> = (0..self.model.handles.len())
            .filter(|&h| self.model.handles[h].open && live(&&self.model.handles[h]))
            .collect();
        let handle = if index < 224 && !open.is_empty() {
            open[usize::from(index) % open.len()]
        } else if self.handles.is_empty() {
            return None;
        } else {
            usize::from(index) % self.handles.len()
        };
        self.model.process_alive[self.model.handles[handle].process].then_some(handle)
    }

    fn process(&self, process: usize) -> &Process<'m> {
        self.processes[process].as_ref().expect("a live process")
    }

    #[allow(clippy::too_many_lines, reason = "one arm per operation, side by side")]
    fn step(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Open { process, device } => {
                let (process, device) = (usize::from(process), usize::from(device));
                if !self.model.process_alive[process] {
                    return Ok(());
                }
                let expected = self.model.open(process, device);
                let actual = self.process(process).open(&format!(r"\\.\StageDrv{device}"), true).map_err(stopped)?;
                match (expected, actual) {
                    (Ok(_), Ok(handle)) => self.handles.push(handle),
                    (Err(e), Err(a)) if e == a => {}
                    (e, a) => return Err(format!("CreateFile: model {e:x?}, driver {a:x?}")),
                }
            }
            Op::Read { handle, thread, length } => {
                let Some(handle) = self.pick_handle(handle) else { return Ok(()) };
                let (process, thread) = (self.model.handles[handle].process, usize::from(thread));
                if !self.model.thread_alive[process][thread] {
                    return Ok(());
                }
                self.model.read(handle, thread, length);
                let issued =
                    self.process(process).thread(thread).read(self.handles[handle], length).map_err(stopped)?;
                self.reads.push(match issued {
                    Issued::Done(result) => SimRead::Done(result),
                    Issued::Pending(io) => SimRead::Pending(io),
                });
            }
            Op::CancelIoEx { handle, read } => {
                let Some(handle) = self.pick_handle(handle) else { return Ok(()) };
                let read = match read {
                    None => None,
                    Some(_) if self.model.pended.is_empty() => return Ok(()),
                    Some(n) => Some(self.model.pended[usize::from(n) % self.model.pended.len()]),
                };
                let expected = self.model.cancel_io_ex(handle, read);
                let io = match read.map(|r| &self.reads[r]) {
                    None => None,
                    Some(SimRead::Pending(io)) => Some(io.clone()),
                    Some(SimRead::Done(_)) => return Err("a read the model saw pend did not pend".to_owned()),
                };
                let process = self.model.handles[handle].process;
                let actual = self.process(process).cancel_io_ex(self.handles[handle], io.as_ref()).map_err(stopped)?;
                if expected != actual {
                    return Err(format!("CancelIoEx returned {actual:#x}, model {expected:#x}"));
                }
            }
            Op::CancelIo { handle, thread } => {
                let Some(handle) = self.pick_handle(handle) else { return Ok(()) };
                let (process, thread) = (self.model.handles[handle].process, usize::from(thread));
                if !self.model.thread_alive[process][thread] {
                    return Ok(());
                }
                let expected = self.model.cancel_io(handle, thread);
                let actual = self.process(process).thread(thread).cancel_io(self.handles[handle]).map_err(stopped)?;
                if expected != actual {
                    return Err(format!("CancelIo returned {actual:#x}, model {expected:#x}"));
                }
            }
            Op::Close { handle } => {
                let Some(handle) = self.pick_handle(handle) else { return Ok(()) };
                let expected = self.model.close(handle);
                let process = self.model.handles[handle].process;
                let actual = self.process(process).close(self.handles[handle]).map_err(stopped)?;
                if expected != actual {
                    return Err(format!("CloseHandle returned {actual:#x}, model {expected:#x}"));
                }
            }
            Op::Duplicate { handle } => {
                let Some(handle) = self.pick_handle(handle) else { return Ok(()) };
                let process = self.model.handles[handle].process;
                let expected = self.model.duplicate(handle, process);
                let actual = self.process(process).duplicate(self.handles[handle]).map_err(stopped)?;
                match (expected, actual) {
                    (Ok(_), Ok(new)) => self.handles.push(new),
                    (Err(e), Err(a)) if e == a => {}
                    (e, a) => return Err(format!("DuplicateHandle: model {e:x?}, driver {a:x?}")),
                }
            }
            Op::DuplicateInto { handle, process: target } => {
                let Some(handle) = self.pick_handle(handle) else { return Ok(()) };
                let target = usize::from(target);
                if !self.model.process_alive[target] {
                    return Ok(());
                }
                let expected = self.model.duplicate(handle, target);
                let source = self.model.handles[handle].process;
                let actual =
                    self.process(source).duplicate_into(self.handles[handle], self.process(target)).map_err(stopped)?;
                match (expected, actual) {
                    (Ok(_), Ok(new)) => self.handles.push(new),
                    (Err(e), Err(a)) if e == a => {}
                    (e, a) => {
                        return Err(format!("DuplicateHandle into process {target}: model {e:x?}, driver {a:x?}"));
                    }
                }
            }
            Op::Stats { handle } => {
                let Some(handle) = self.pick_handle(handle) else { return Ok(()) };
                let h = self.model.handles[handle];
                let result = self
                    .process(h.process)
                    .ioctl(self.handles[handle], IOCTL_STAGEDRV_GET_STATS, &[], size_of::<Stats>())
                    .map_err(stopped)?
                    .done()
                    .ok_or("the statistics IOCTL pended")?;
                if !h.open {
                    if result.status != STATUS_INVALID_HANDLE {
                        return Err(format!("IOCTL on a closed handle: {:#x}", result.status));
                    }
                    return Ok(());
                }
                let expected = self.model.device_stats(self.model.files[h.file].device);
                let actual = parse_stats(&result)?;
                if expected != actual {
                    return Err(format!("statistics differ:\n  driver {actual:?}\n  model  {expected:?}"));
                }
            }
            Op::Advance { ms } => {
                self.model.advance(u64::from(ms));
                self.machine.advance_ms(u64::from(ms)).map_err(stopped)?;
            }
            Op::ExitThread { process } => {
                let process = usize::from(process);
                if !self.model.process_alive[process] || !self.model.thread_alive[process][1] {
                    return Ok(());
                }
                self.model.exit_thread(process, 1);
                self.process(process).thread(1).exit().map_err(stopped)?;
            }
            Op::ExitProcess { process } => {
                let process = usize::from(process);
                if !self.model.process_alive[process] {
                    return Ok(());
                }
                self.model.exit_process(process);
                self.processes[process].take().expect("live").exit().map_err(stopped)?;
            }
            Op::Stop => {
                let expected = self.model.stop();
                let actual = self.machine.stop_driver(self.driver).map_err(stopped)?;
                if expected != actual {
                    return Err(format!("sc stop left the driver {actual:?}, model {expected:?}"));
                }
            }
        }
        self.check()
    }

    /// Every read's result, the clock, the driver's state and the verdict.
    fn check(&self) -> Result<(), String> {
        self.machine.verdict().map_err(stopped)?;
        if self.machine.now() != self.model.now {
            return Err(format!("clock {} != model {}", self.machine.now(), self.model.now));
        }
        let state = self.machine.driver_state(self.driver);
        if state != self.model.driver {
            return Err(format!("driver {state:?}, model {:?}", self.model.driver));
        }
        for (id, (model, sim)) in self.model.reads.iter().zip(&self.reads).enumerate() {
            let expected = expected_result(&model.outcome);
            let actual = sim.result();
            if expected != actual {
                let h = self.model.handles.iter().position(|h| h.file == model.file);
                return Err(format!(
                    "read #{id} (process {}, thread {}, file {} on device {}, first handle #{h:?}, {} bytes, queued at {} ms):\n  driver: {}\n  model:  {}",
                    model.process,
                    model.thread,
                    model.file,
                    self.model.files[model.file].device,
                    model.length,
                    model.queued_at as f64 / MS as f64,
                    show(actual.as_ref()),
                    show(expected.as_ref()),
                ));
            }
        }
        Ok(())
    }

    /// Final statistics through fresh handles, every process exits, the driver
    /// unloads clean, and every read has completed.
    fn finish(mut self) -> Result<(), String> {
        if self.model.driver == DriverState::Running {
            let auditor = self.machine.new_process();
            for device in 0..DEVICES {
                let handle = auditor
                    .open(&format!(r"\\.\StageDrv{device}"), true)
                    .map_err(stopped)?
                    .map_err(|s| format!("final open: {s:#x}"))?;
                let result = auditor
                    .ioctl(handle, IOCTL_STAGEDRV_GET_STATS, &[], size_of::<Stats>())
                    .map_err(stopped)?
                    .done()
                    .ok_or("the statistics IOCTL pended")?;
                let (actual, expected) = (parse_stats(&result)?, self.model.device_stats(device));
                if actual != expected {
                    return Err(format!(
                        "final statistics of device {device} differ:\n  driver {actual:?}\n  model  {expected:?}"
                    ));
                }
                auditor.close(handle).map_err(stopped)?;
            }
        }
        for process in 0..PROCESSES {
            if let Some(p) = self.processes[process].take() {
                self.model.exit_process(process);
                p.exit().map_err(stopped)?;
            }
        }
        self.check().map_err(|e| format!("after every process exited: {e}"))?;
        let expected = self.model.stop();
        let actual = self.machine.stop_driver(self.driver).map_err(stopped)?;
        if (expected, actual) != (DriverState::Unloaded, DriverState::Unloaded) {
            return Err(format!("final sc stop: driver {actual:?}, model {expected:?}"));
        }
        self.check().map_err(|e| format!("after unload: {e}"))?;
        // Every read completed (a second completion would have been a bug check).
        if let Some(id) = self.reads.iter().position(|r| r.result().is_none()) {
            return Err(format!("read #{id} never completed"));
        }
        coverage::record(&self.model);
        let pool = self.machine.pool_stats();
        if pool.live_blocks != 0 {
            return Err(format!("pool blocks left after unload: {pool:?}"));
        }
        Ok(())
    }
}

fn parse_stats(result: &IoResult) -> Result<Stats, String> {
    if result.status != STATUS_SUCCESS || result.data.len() != size_of::<Stats>() {
        return Err(format!("statistics IOCTL: status {:#x}, {} bytes", result.status, result.data.len()));
    }
    // SAFETY: Stats is plain repr(C) data (u64 fields) and the reply has exactly its size.
    Ok(unsafe { std::ptr::read_unaligned(result.data.as_ptr().cast::<Stats>()) })
}

fn run_case(case: &Case) -> Result<(), String> {
    let machine = Machine::new(Config { mode: case.mode, trace_limit: 256, time_increment: TICK, ..Config::default() });
    for (name, value) in case.params.registry() {
        machine.registry().set(&parameters_key(), name, &Value::Dword(value));
    }
    machine.advance(LOAD_AT).map_err(stopped)?;
    let (driver, status) = machine.load_driver("stagedrv", stagedrv::driver_entry).map_err(stopped)?;
    if status != STATUS_SUCCESS {
        return Err(format!("DriverEntry failed: {status:#x}"));
    }
    let processes = (0..PROCESSES).map(|_| Some(machine.new_process())).collect();
    let mut run = Run {
        machine: &machine,
        driver,
        processes,
        handles: Vec::new(),
        reads: Vec::new(),
        model: Model::new(case.params),
    };
    run.check()?;
    for (n, op) in case.ops.iter().enumerate() {
        run.step(op).map_err(|e| {
            let mut text = format!("op #{n} {op:?} at {} ms: {e}\nops so far:", run.model.now as f64 / MS as f64);
            for (i, op) in case.ops[..=n].iter().enumerate() {
                let _ = write!(text, "\n  #{i:<3} {op:?}");
            }
            text
        })?;
    }
    run.finish()
}

/// What the generated cases exercised, printed at the end (`--nocapture`).
mod coverage {
    use std::sync::Mutex;

    use super::{DriverState, Model, Outcome, STATUS_SUCCESS};

    pub const CLASSES: [&str; 10] = [
        "completed with records at once",
        "completed with records by the consumer",
        "completed with 0 bytes",
        "cancelled",
        "timed out",
        "buffer too small",
        "quota exceeded",
        "invalid handle",
        "cases where sc stop waited for a close",
        "records dropped (ring full)",
    ];
    pub static COUNTS: Mutex<[u64; 10]> = Mutex::new([0; 10]);

    pub fn record(model: &Model) {
        let mut counts = COUNTS.lock().expect("coverage");
        for (id, read) in model.reads.iter().enumerate() {
            let Outcome::Done { status, records } = &read.outcome else { continue };
            let class = match *status {
                STATUS_SUCCESS if records.is_empty() => 2,
                STATUS_SUCCESS if model.pended.contains(&id) => 1,
                STATUS_SUCCESS => 0,
                ntsim::wdk_sys::STATUS_CANCELLED => 3,
                ntsim::wdk_sys::STATUS_IO_TIMEOUT => 4,
                ntsim::wdk_sys::STATUS_BUFFER_TOO_SMALL => 5,
                ntsim::wdk_sys::STATUS_QUOTA_EXCEEDED => 6,
                _ => 7,
            };
            counts[class] += 1;
        }
        counts[8] += u64::from(model.stopped_while_open);
        counts[9] += model.devices.iter().map(|d| d.dropped).sum::<u64>();
        let _ = DriverState::Unloaded;
    }
}

#[test]
fn driver_matches_the_model() {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = TestRunner::new(config);
    if let Err(failure) = runner.run(&case(), |case| run_case(&case).map_err(TestCaseError::fail)) {
        panic!("{failure}");
    }
    let counts = coverage::COUNTS.lock().expect("coverage");
    println!("{cases} cases; reads by outcome, summed over the cases:");
    for (name, count) in coverage::CLASSES.iter().zip(counts.iter()) {
        println!("  {count:>7}  {name}");
    }
}
