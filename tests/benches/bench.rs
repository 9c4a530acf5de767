//! Benchmarks of stagedrv, printed as ratios measured in one run:
//!
//! ```text
//! cargo bench --bench bench
//! ```
//!
//! Nothing here asserts on time; the table at the end shows each ratio beside the
//! bound it is meant to stay under. What is measured where:
//!
//! - **real driver in ntsim**: stagedrv's own code loaded into an ntsim machine.
//!   Wall-clock rows use `Mode::Free` (simulated threads run for real, no seeded
//!   scheduler hand-offs); the allocation and unload rows use `Mode::Seeded` (they count
//!   events or simulated time, not wall time).
//! - **pure model**: plain Rust data structures in this file, no ntsim: stagedrv's
//!   design (one FIFO per handle) and the design of Microsoft's general/cancel sample
//!   (one shared queue that cleanup scans from the head for the file object's IRPs,
//!   restarting from the head after each removal), timed on the same cleanup.
//! - **no-op driver**: a minimal driver in this file that completes every read at
//!   once with zeroed data: the ntsim baseline for the throughput rows.
//!
//! To time stagedrv's own part of a request, [`timed_stagedrv_entry`] loads stagedrv
//! unchanged and wraps two of its routines: IRP_MJ_CLEANUP (wall time inside
//! DispatchCleanup) and the cancel routine of each queued read (wall time inside the
//! cancel routine, which is all the driver does for a CancelIoEx). The kernel calls
//! made inside those routines are counted from ntsim's trace: unlike wall time they
//! do not depend on the load of the host. The consumer thread's delivery passes are
//! wrapped through `stagedrv::probe::observe_delivery` (wall time inside the pass),
//! and the driver's own count of the handle-list nodes it visited is the
//! load-independent figure there.
//!
//! Ratios between two sizes N come from rounds that alternate between one machine per
//! N; the ratio printed is the median of the per-round ratios, so both sides saw the
//! same load on the host. Medians and 10th percentiles are printed beside them.
//!
//! N stops at 10,000 pending reads: every IRP and buffer is special pool (two
//! mappings each), and the host's vm.max_map_count (65,530 by default) bounds the
//! mappings a process may have.
//!
//! Exploration hooks (not part of the table): `BENCH_EXPLORE_CANCEL=10,1000,10000`,
//! `BENCH_EXPLORE_CLEANUP=0,1000,10000` and `BENCH_EXPLORE_DELIVERY=0,1000,10000`
//! print the sample distributions per N;
//! `BENCH_EXPLORE_UNLOAD=<seeds>` (with `BENCH_LAST_ONLY=1`, `BENCH_DUMP_UNLOAD=1`)
//! runs only the busy-unload schedules.

// Bench code: counts and times are small, shown as floats or cast between integer
// widths that cannot overflow here.
#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss, clippy::cast_sign_loss)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ntsim::trace::Routine;
use ntsim::wdk_sys::ntddk::{
    IoCreateDevice, IoCreateSymbolicLink, IoDeleteDevice, IoDeleteSymbolicLink, IofCompleteRequest,
};
use ntsim::wdk_sys::{
    DO_BUFFERED_IO, FILE_DEVICE_UNKNOWN, IRP_MJ_CLEANUP, IRP_MJ_CLOSE, IRP_MJ_CREATE, IRP_MJ_READ, NT_SUCCESS,
    NTSTATUS, PCUNICODE_STRING, PDEVICE_OBJECT, PDRIVER_OBJECT, PIRP, STATUS_CANCELLED, STATUS_PENDING, STATUS_SUCCESS,
    UNICODE_STRING,
};
use ntsim::{
    Config, Driver, DriverEntry, DriverState, Handle, Issued, Machine, Mode, PendingIo, Process, Value, service_key,
};
use stagedrv::protocol::RECORD_SIZE;

// --- helpers ------------------------------------------------------------------------

/// A machine whose clock ticks every 0.5 ms, Windows' finest timer resolution, so the
/// 1 ms producer the rounds drive expires every millisecond as the figures assume (at
/// the default 15.625 ms tick it would expire once per tick).
fn machine(mode: Mode, trace_limit: usize, parameters: &[(&str, u32)]) -> Machine {
    let machine = Machine::new(Config { mode, trace_limit, time_increment: 5_000, ..Config::default() });
    let key = format!("{}\\Parameters", service_key("stagedrv"));
    for &(name, value) in parameters {
        machine.registry().set(&key, name, &Value::Dword(value));
    }
    machine
}

fn load(machine: &Machine, name: &str, entry: DriverEntry) -> Driver {
    let (driver, status) = machine.load_driver(name, entry).expect("DriverEntry runs");
    assert_eq!(status, STATUS_SUCCESS, "DriverEntry of {name}");
    driver
}

fn open(process: &Process<'_>, name: &str) -> Handle {
    process.open(&format!(r"\\.\{name}"), true).expect("machine runs").expect("open")
}

fn pending_read(process: &Process<'_>, handle: Handle, bytes: usize) -> PendingIo {
    match process.read(handle, bytes).expect("machine runs") {
        Issued::Pending(io) => io,
        Issued::Done(r) => panic!("read did not pend: {r:?}"),
    }
}

/// Stops the driver once everything is closed and checks the verdict.
fn unload_clean(machine: &Machine, driver: Driver) {
    assert_eq!(machine.stop_driver(driver).expect("machine runs"), DriverState::Unloaded);
    machine.verdict().expect("clean unload");
}

fn median(samples: Vec<Duration>) -> Duration {
    quantile(samples, 0.5)
}

/// Median of the ratios of samples taken in the same round (`a[i] / b[i]`).
fn paired_ratio(a: &[Duration], b: &[Duration]) -> f64 {
    let mut ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a.as_secs_f64() / b.as_secs_f64()).collect();
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}

fn quantile(mut samples: Vec<Duration>, q: f64) -> Duration {
    samples.sort_unstable();
    let index = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[index]
}

fn us(d: Duration) -> String {
    if d < Duration::from_micros(1) {
        format!("{} ns", d.as_nanos())
    } else {
        format!("{:.1} us", d.as_secs_f64() * 1e6)
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// One line of the final table.
struct Row {
    what: String,
    measured: String,
    ratio: String,
    bound: String,
}

fn row(
    table: &mut Vec<Row>,
    what: impl Into<String>,
    measured: impl Into<String>,
    ratio: impl Into<String>,
    bound: impl Into<String>,
) {
    table.push(Row { what: what.into(), measured: measured.into(), ratio: ratio.into(), bound: bound.into() });
}

// --- stagedrv with timed routines -----------------------------------------------------

type Dispatch = unsafe extern "C" fn(PDEVICE_OBJECT, PIRP) -> NTSTATUS;
type Cancel = unsafe extern "C" fn(PDEVICE_OBJECT, PIRP);

static STAGEDRV_READ: OnceLock<Dispatch> = OnceLock::new();
static STAGEDRV_CLEANUP: OnceLock<Dispatch> = OnceLock::new();
static STAGEDRV_CANCEL: OnceLock<Cancel> = OnceLock::new();
/// Wall time of each wrapped call, in the order they ran.
static INSIDE: Mutex<Vec<Duration>> = Mutex::new(Vec::new());

fn take_inside() -> Vec<Duration> {
    std::mem::take(&mut *INSIDE.lock().expect("timings"))
}

/// stagedrv's DriverEntry, then its IRP_MJ_READ and IRP_MJ_CLEANUP entries wrapped.
///
/// Bench precondition: no record is produced while it is used (SamplePeriodMs = 60 s
/// and the clock never moves), so a read that returns STATUS_PENDING is queued with
/// its cancel routine set and nothing else touches it until the bench cancels it.
///
/// # Safety
/// Called by ntsim's I/O manager as a DriverEntry.
unsafe extern "C" fn timed_stagedrv_entry(driver: PDRIVER_OBJECT, registry_path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: forwarded unchanged from the I/O manager.
    let status = unsafe { stagedrv::driver_entry(driver, registry_path) };
    if NT_SUCCESS(status) {
        // SAFETY: DriverEntry has returned and no request has been sent yet; the
        // major-function table of this driver object is ours to patch.
        let table = unsafe { &mut (*driver).MajorFunction };
        if let Some(read) = table[IRP_MJ_READ as usize].replace(timed_read) {
            let _ = STAGEDRV_READ.set(read);
        }
        if let Some(cleanup) = table[IRP_MJ_CLEANUP as usize].replace(timed_cleanup) {
            let _ = STAGEDRV_CLEANUP.set(cleanup);
        }
    }
    status
}

/// stagedrv's DispatchRead; a read it queued gets [`timed_cancel`] as its cancel
/// routine (the original is called from it).
unsafe extern "C" fn timed_read(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    let read = *STAGEDRV_READ.get().expect("wrapped at DriverEntry");
    // SAFETY: forwarded unchanged from the I/O manager.
    let status = unsafe { read(device, irp) };
    if status == STATUS_PENDING {
        // SAFETY: by the bench precondition the IRP is queued and outstanding; the
        // exchange is IoSetCancelRoutine's (atomic with IoCancelIrp in ntsim).
        let original = unsafe { ntsim::inline::IoSetCancelRoutine(irp, Some(timed_cancel)) };
        match original {
            Some(routine) => {
                let _ = STAGEDRV_CANCEL.set(routine);
            }
            // SAFETY: not reached under the precondition; undo the exchange.
            None => unsafe {
                ntsim::inline::IoSetCancelRoutine(irp, None);
            },
        }
    }
    status
}

/// stagedrv's cancel routine, timed.
unsafe extern "C" fn timed_cancel(device: PDEVICE_OBJECT, irp: PIRP) {
    let cancel = *STAGEDRV_CANCEL.get().expect("set when the read was queued");
    let start = Instant::now();
    // SAFETY: called by IoCancelIrp exactly as the original would have been.
    unsafe { cancel(device, irp) };
    let took = start.elapsed();
    INSIDE.lock().expect("timings").push(took);
}

/// stagedrv's DispatchCleanup, timed.
unsafe extern "C" fn timed_cleanup(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    let cleanup = *STAGEDRV_CLEANUP.get().expect("wrapped at DriverEntry");
    let start = Instant::now();
    // SAFETY: forwarded unchanged from the I/O manager.
    let status = unsafe { cleanup(device, irp) };
    let took = start.elapsed();
    INSIDE.lock().expect("timings").push(took);
    status
}

// --- the no-op driver (throughput baseline) -------------------------------------------

const NOOP_DEVICE: &str = r"\Device\NoopDrv0";
const NOOP_LINK: &str = r"\DosDevices\NoopDrv0";

/// A counted string over `buffer` (which must outlive its use).
fn unicode(buffer: &mut [u16]) -> UNICODE_STRING {
    let bytes = u16::try_from(buffer.len() * 2).expect("short name");
    UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: buffer.as_mut_ptr() }
}

/// One device and its link; reads complete at once with zeroed data.
unsafe extern "C" fn noop_entry(driver: PDRIVER_OBJECT, _registry_path: PCUNICODE_STRING) -> NTSTATUS {
    let mut device_name: Vec<u16> = NOOP_DEVICE.encode_utf16().collect();
    let mut link_name: Vec<u16> = NOOP_LINK.encode_utf16().collect();
    let (mut device_name, mut link_name) = (unicode(&mut device_name), unicode(&mut link_name));
    let mut device: PDEVICE_OBJECT = std::ptr::null_mut();
    // SAFETY: the names live across the calls; ntsim copies them.
    let status = unsafe { IoCreateDevice(driver, 0, &raw mut device_name, FILE_DEVICE_UNKNOWN, 0, 0, &raw mut device) };
    if !NT_SUCCESS(status) {
        return status;
    }
    // SAFETY: the new device is ours and not yet visible to I/O.
    unsafe { (*device).Flags |= DO_BUFFERED_IO };
    // SAFETY: as above.
    let status = unsafe { IoCreateSymbolicLink(&raw mut link_name, &raw mut device_name) };
    if !NT_SUCCESS(status) {
        // SAFETY: created above, deleted once.
        unsafe { IoDeleteDevice(device) };
        return status;
    }
    // SAFETY: our driver object, during DriverEntry.
    let driver = unsafe { &mut *driver };
    for major in [IRP_MJ_CREATE, IRP_MJ_CLEANUP, IRP_MJ_CLOSE] {
        driver.MajorFunction[major as usize] = Some(noop_complete);
    }
    driver.MajorFunction[IRP_MJ_READ as usize] = Some(noop_read);
    driver.DriverUnload = Some(noop_unload);
    STATUS_SUCCESS
}

unsafe extern "C" fn noop_complete(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: an IRP the I/O manager handed us; completed once, never touched again.
    unsafe {
        (*irp).IoStatus.__bindgen_anon_1.Status = STATUS_SUCCESS;
        (*irp).IoStatus.Information = 0;
        IofCompleteRequest(irp, 0);
    }
    STATUS_SUCCESS
}

unsafe extern "C" fn noop_read(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: a buffered read: SystemBuffer holds Parameters.Read.Length bytes (or is
    // NULL for zero bytes); completed once, never touched again.
    unsafe {
        let stack = (*irp).Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1.CurrentStackLocation;
        let length = (*stack).Parameters.Read.Length;
        let buffer = (*irp).AssociatedIrp.SystemBuffer.cast::<u8>();
        if !buffer.is_null() {
            std::ptr::write_bytes(buffer, 0, length as usize);
        }
        (*irp).IoStatus.__bindgen_anon_1.Status = STATUS_SUCCESS;
        (*irp).IoStatus.Information = u64::from(length);
        IofCompleteRequest(irp, 0);
    }
    STATUS_SUCCESS
}

unsafe extern "C" fn noop_unload(driver: PDRIVER_OBJECT) {
    let mut link_name: Vec<u16> = NOOP_LINK.encode_utf16().collect();
    let mut link_name = unicode(&mut link_name);
    // SAFETY: the link and the one device created in DriverEntry, released once.
    unsafe {
        let _ = IoDeleteSymbolicLink(&raw mut link_name);
        IoDeleteDevice((*driver).DeviceObject);
    }
}

// --- 1. cleanup of one handle's 16 reads beside N others -----------------------------

const CLEANUP_ITERATIONS: usize = 501;
const PER_HANDLE: usize = 1_000;

/// Posts `count` one-record reads spread over handles of `PER_HANDLE` reads each on
/// `\\.\StageDrv0`; returns the handles. All must pend.
fn background_reads<'m>(machine: &'m Machine, process: &Process<'m>, count: usize) -> Vec<Handle> {
    let mut handles = Vec::new();
    let mut posted = Vec::with_capacity(count);
    for chunk in 0..count.div_ceil(PER_HANDLE) {
        let handle = open(process, "StageDrv0");
        for _ in 0..PER_HANDLE.min(count - chunk * PER_HANDLE) {
            posted.push(process.main().post_read(handle, RECORD_SIZE));
        }
        machine.run_until_idle();
        handles.push(handle);
    }
    let pended = posted.iter().filter(|p| matches!(p.get(), Some(Ok((_, _, true))))).count();
    assert_eq!(pended, count, "every background read pends");
    handles
}

fn timed_machine() -> Machine {
    machine(
        Mode::Free,
        4_096,
        &[
            ("SamplePeriodMs", 60_000),
            ("MaxPendingReadsPerHandle", PER_HANDLE as u32),
            ("StatisticsEveryTicks", 100_000),
        ],
    )
}

/// Per round: wall time of the whole call, wall time of stagedrv's routine inside it,
/// and the kernel calls that routine made (from ntsim's trace).
type Samples = (Vec<Duration>, Vec<Duration>, Vec<usize>);

/// The last trace sequence number, and how many calls after `since` ran in `routine`.
fn trace_calls(machine: &Machine, since: u64, routine: Routine) -> (u64, usize) {
    let trace = machine.trace();
    let last = trace.last().map_or(since, |c| c.seq);
    (last, trace.iter().filter(|c| c.seq > since && c.routine == routine).count())
}

/// Real driver in ntsim (Free mode), one machine per N in `backgrounds`, measured in
/// turns (so that noise from the rest of the host hits every N alike): wall time of
/// CloseHandle on a handle with 16 pending reads, and of stagedrv's DispatchCleanup
/// inside it.
fn cleanup_real(backgrounds: &[usize]) -> Vec<Samples> {
    let machines: Vec<Machine> = backgrounds.iter().map(|_| timed_machine()).collect();
    let drivers: Vec<Driver> = machines.iter().map(|m| load(m, "stagedrv", timed_stagedrv_entry)).collect();
    let processes: Vec<Process<'_>> = machines.iter().map(Machine::new_process).collect();
    for ((machine, process), &n) in machines.iter().zip(&processes).zip(backgrounds) {
        background_reads(machine, process, n);
    }
    let mut samples = vec![(Vec::new(), Vec::new(), Vec::new()); backgrounds.len()];
    let cleanup = Routine::Dispatch(IRP_MJ_CLEANUP as u8);
    for _ in 0..CLEANUP_ITERATIONS {
        for ((machine, process), (close, inside, calls)) in machines.iter().zip(&processes).zip(&mut samples) {
            let handle = open(process, "StageDrv0");
            let reads: Vec<PendingIo> = (0..16).map(|_| pending_read(process, handle, RECORD_SIZE)).collect();
            take_inside();
            let (since, _) = trace_calls(machine, 0, cleanup);
            let start = Instant::now();
            process.close(handle).expect("machine runs");
            close.push(start.elapsed());
            let timed = take_inside();
            assert_eq!(timed.len(), 1, "one IRP_MJ_CLEANUP");
            inside.push(timed[0]);
            calls.push(trace_calls(machine, since, cleanup).1);
            assert!(reads.iter().all(|r| r.result().is_some_and(|r| r.status == STATUS_CANCELLED)));
        }
    }
    for ((machine, process), driver) in machines.iter().zip(processes).zip(drivers) {
        process.exit().expect("machine runs");
        unload_clean(machine, driver);
    }
    samples
}

// --- 1b. the same cleanup in a pure model of both queue designs -----------------------

/// Doubly linked lists in one arena, like LIST_ENTRY chains through IRPs: list heads
/// are nodes too. A node carries the file object it was queued for.
struct Arena {
    next: Vec<u32>,
    prev: Vec<u32>,
    file: Vec<u32>,
}

impl Arena {
    fn with_nodes(count: usize) -> Self {
        let all = (0..count as u32).collect::<Vec<_>>();
        Arena { next: all.clone(), prev: all, file: vec![u32::MAX; count] }
    }
    fn insert_tail(&mut self, head: u32, node: u32, file: u32) {
        let last = self.prev[head as usize];
        self.file[node as usize] = file;
        self.next[node as usize] = head;
        self.prev[node as usize] = last;
        self.next[last as usize] = node;
        self.prev[head as usize] = node;
    }
    fn remove(&mut self, node: u32) {
        let (next, prev) = (self.next[node as usize], self.prev[node as usize]);
        self.next[prev as usize] = next;
        self.prev[next as usize] = prev;
        self.next[node as usize] = node;
        self.prev[node as usize] = node;
    }
}

/// Which design a [`QueueModel`] follows.
#[derive(Clone, Copy, PartialEq)]
enum Design {
    /// stagedrv: one FIFO per handle; cleanup pops its own list.
    PerHandle,
    /// general/cancel sample: one device queue; cleanup looks for the next IRP of the
    /// file object from the head of the queue, removes it, and starts again from the
    /// head (the lock is dropped to complete each IRP).
    SharedRescan,
}

struct QueueModel {
    design: Design,
    arena: Arena,
    /// Head node per file object (PerHandle) or the one head at index 0 (SharedRescan).
    heads: Vec<u32>,
    /// The target handle's 16 nodes.
    target: Vec<u32>,
    completed: Vec<u32>,
}

const TARGET_FILE: u32 = 0;

impl QueueModel {
    /// `background` nodes of other handles (`PER_HANDLE` per handle), queued first and
    /// placed at random arena slots (IRPs are scattered in pool); the target's 16 go
    /// to the tail by `enqueue_target`.
    fn new(design: Design, background: usize) -> Self {
        let files = 1 + background.div_ceil(PER_HANDLE);
        let heads: Vec<u32> = (0..files as u32).collect();
        let first_node = files;
        let mut arena = Arena::with_nodes(files + background + 16);
        let mut slots: Vec<u32> = (first_node as u32..(first_node + background) as u32).collect();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for i in (1..slots.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            slots.swap(i, (state % (i as u64 + 1)) as usize);
        }
        for (i, &slot) in slots.iter().enumerate() {
            let file = 1 + (i / PER_HANDLE) as u32;
            let head = if design == Design::PerHandle { heads[file as usize] } else { heads[0] };
            arena.insert_tail(head, slot, file);
        }
        let target = ((first_node + background) as u32..(first_node + background + 16) as u32).collect();
        QueueModel { design, arena, heads, target, completed: Vec::with_capacity(16) }
    }

    fn enqueue_target(&mut self) {
        let head = self.heads[0];
        for i in 0..self.target.len() {
            self.arena.insert_tail(head, self.target[i], TARGET_FILE);
        }
    }

    fn cleanup_target(&mut self) {
        self.completed.clear();
        let head = self.heads[TARGET_FILE as usize];
        match self.design {
            Design::PerHandle => loop {
                let first = self.arena.next[head as usize];
                if first == head {
                    break;
                }
                self.arena.remove(first);
                self.completed.push(first);
            },
            Design::SharedRescan => loop {
                let mut node = self.arena.next[head as usize];
                while node != head && self.arena.file[node as usize] != TARGET_FILE {
                    node = self.arena.next[node as usize];
                }
                if node == head {
                    break;
                }
                self.arena.remove(node);
                self.completed.push(node);
            },
        }
        assert_eq!(self.completed.len(), 16);
        black_box(&self.completed);
    }
}

/// Per-iteration times of each of `jobs`, in alternating batches (15 rounds; the
/// batch size of each job calibrated to ~10 ms).
fn per_iteration(jobs: &mut [Box<dyn FnMut() + '_>]) -> Vec<Vec<Duration>> {
    let batches: Vec<u32> = jobs
        .iter_mut()
        .map(|job| {
            let mut batch = 1u32;
            loop {
                let start = Instant::now();
                for _ in 0..batch {
                    job();
                }
                if start.elapsed() >= Duration::from_millis(10) || batch >= 1 << 20 {
                    break batch;
                }
                batch *= 2;
            }
        })
        .collect();
    let mut samples = vec![Vec::new(); jobs.len()];
    for _ in 0..15 {
        for ((job, &batch), out) in jobs.iter_mut().zip(&batches).zip(&mut samples) {
            let start = Instant::now();
            for _ in 0..batch {
                job();
            }
            out.push(start.elapsed() / batch);
        }
    }
    samples
}

/// Pure model: time of (queue 16 at the tail + cleanup of those 16) with each of
/// `backgrounds` other IRPs queued, measured in turns.
fn cleanup_model(design: Design, backgrounds: &[usize]) -> Vec<Vec<Duration>> {
    let mut models: Vec<QueueModel> = backgrounds.iter().map(|&n| QueueModel::new(design, n)).collect();
    let mut jobs: Vec<Box<dyn FnMut() + '_>> = models
        .iter_mut()
        .map(|model| {
            Box::new(move || {
                model.enqueue_target();
                model.cleanup_target();
            }) as Box<dyn FnMut()>
        })
        .collect();
    per_iteration(&mut jobs)
}

// --- 2. CancelIoEx of one read out of N ----------------------------------------------

const CANCEL_ITERATIONS: usize = 501;

/// Real driver in ntsim (Free mode), one machine per N in `counts`, measured in
/// turns: wall time of CancelIoEx(handle, one read) and of stagedrv's cancel routine
/// inside it, with N reads queued (the target handle holds up to `PER_HANDLE`
/// of them, the rest sit on other handles). Each cancelled read is replaced, so N
/// stays the same.
fn cancel_real(counts: &[usize]) -> Vec<Samples> {
    let machines: Vec<Machine> = counts.iter().map(|_| timed_machine()).collect();
    let drivers: Vec<Driver> = machines.iter().map(|m| load(m, "stagedrv", timed_stagedrv_entry)).collect();
    let processes: Vec<Process<'_>> = machines.iter().map(Machine::new_process).collect();
    let mut targets = Vec::new();
    for ((machine, process), &n) in machines.iter().zip(&processes).zip(counts) {
        let own = n.min(PER_HANDLE);
        let target = open(process, "StageDrv0");
        let queue: VecDeque<PendingIo> = (0..own).map(|_| pending_read(process, target, RECORD_SIZE)).collect();
        background_reads(machine, process, n - own);
        targets.push((target, queue));
    }
    let mut samples = vec![(Vec::new(), Vec::new(), Vec::new()); counts.len()];
    for _ in 0..CANCEL_ITERATIONS {
        for (((machine, process), (target, queue)), (wall, inside, calls)) in
            machines.iter().zip(&processes).zip(&mut targets).zip(&mut samples)
        {
            let victim = queue.remove(queue.len() / 2).expect("reads queued");
            take_inside();
            let (since, _) = trace_calls(machine, 0, Routine::CancelRoutine);
            let start = Instant::now();
            process.cancel_io_ex(*target, Some(&victim)).expect("machine runs");
            wall.push(start.elapsed());
            let timed = take_inside();
            assert_eq!(timed.len(), 1, "one cancel routine call");
            inside.push(timed[0]);
            calls.push(trace_calls(machine, since, Routine::CancelRoutine).1);
            assert_eq!(victim.result().map(|r| r.status), Some(STATUS_CANCELLED));
            queue.push_back(pending_read(process, *target, RECORD_SIZE));
        }
    }
    for ((machine, process), driver) in machines.iter().zip(processes).zip(drivers) {
        process.exit().expect("machine runs");
        unload_clean(machine, driver);
    }
    samples
}

// --- 3. delivery of one record beside N idle handles ---------------------------------

const DELIVERY_ITERATIONS: usize = 501;

/// The device object (as an address) of the driver [`probed_stagedrv_entry`] loaded last.
static PROBED_DEVICE: Mutex<Option<usize>> = Mutex::new(None);

/// stagedrv's DriverEntry, remembering its (only) device object for
/// `stagedrv::probe::handle_nodes_visited`.
unsafe extern "C" fn probed_stagedrv_entry(driver: PDRIVER_OBJECT, registry_path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: forwarded unchanged from the I/O manager.
    let status = unsafe { stagedrv::driver_entry(driver, registry_path) };
    if NT_SUCCESS(status) {
        // SAFETY: DriverEntry succeeded, so the driver object lists its devices.
        let device = unsafe { (*driver).DeviceObject };
        *PROBED_DEVICE.lock().expect("device") = Some(device as usize);
    }
    status
}

/// One delivery pass of the consumer thread, timed.
fn timed_delivery(pass: &mut dyn FnMut()) {
    let start = Instant::now();
    pass();
    let took = start.elapsed();
    INSIDE.lock().expect("timings").push(took);
}

/// Real driver in ntsim (Free mode), one machine per N in `idle`, measured in turns:
/// a reader posts a one-record read (it pends: the ring is empty), then one producer
/// period passes, so the timer DPC appends a record and wakes the consumer thread,
/// which hands it to the read. Wall time of that tick, wall time of the consumer's
/// delivery pass inside it, and the handle-list nodes the pass visited, with N other
/// handles open and idle (opened before the reader, so a scan from the head of a list
/// of all handles would pass them all).
fn delivery_real(idle: &[usize]) -> Vec<Samples> {
    let parameters = [("DeviceCount", 1), ("SamplePeriodMs", 1), ("StatisticsEveryTicks", 100_000)];
    let machines: Vec<Machine> = idle.iter().map(|_| machine(Mode::Free, 64, &parameters)).collect();
    let mut loaded = Vec::new();
    for (machine, &n) in machines.iter().zip(idle) {
        let driver = load(machine, "stagedrv", probed_stagedrv_entry);
        let device = PROBED_DEVICE.lock().expect("device").take().expect("DriverEntry recorded its device");
        let process = machine.new_process();
        let idle_handles: Vec<Handle> = (0..n).map(|_| open(&process, "StageDrv0")).collect();
        let reader = open(&process, "StageDrv0");
        loaded.push((driver, device as PDEVICE_OBJECT, process, idle_handles, reader));
    }
    let visited = |device| stagedrv::probe::handle_nodes_visited(device).expect("a live stagedrv device");
    stagedrv::probe::observe_delivery(Some(timed_delivery));
    let mut samples = vec![(Vec::new(), Vec::new(), Vec::new()); idle.len()];
    for _ in 0..DELIVERY_ITERATIONS {
        for ((machine, (_, device, process, _, reader)), (tick, inside, nodes)) in
            machines.iter().zip(&loaded).zip(&mut samples)
        {
            let read = pending_read(process, *reader, RECORD_SIZE);
            take_inside();
            let before = visited(*device);
            let start = Instant::now();
            machine.advance_ms(1).expect("machine runs");
            tick.push(start.elapsed());
            let timed = take_inside();
            assert_eq!(timed.len(), 1, "one delivery pass per tick");
            inside.push(timed[0]);
            nodes.push((visited(*device) - before) as usize);
            assert_eq!(read.result().map(|r| (r.status, r.information)), Some((STATUS_SUCCESS, RECORD_SIZE as u64)));
        }
    }
    stagedrv::probe::observe_delivery(None);
    for (machine, (driver, _, process, idle_handles, reader)) in machines.iter().zip(loaded) {
        for handle in idle_handles.into_iter().chain([reader]) {
            process.close(handle).expect("machine runs");
        }
        unload_clean(machine, driver);
    }
    samples
}

// --- 4. pool allocations per read ------------------------------------------------------

/// Real driver in ntsim (Seeded): pool allocations per read on each read path, after
/// the handle is open (create and close excluded), and per producer tick.
fn allocations() -> Vec<(&'static str, f64)> {
    const N: u64 = 500;
    let machine = machine(
        Mode::Seeded(1),
        64,
        &[("SamplePeriodMs", 1), ("RingCapacity", 4_096), ("StatisticsEveryTicks", 100_000), ("ReadTimeoutSeconds", 1)],
    );
    let driver = load(&machine, "stagedrv", stagedrv::driver_entry);
    let process = machine.new_process();
    let handle = open(&process, "StageDrv0");
    let allocations = || machine.pool_stats().allocations;
    let mut out = Vec::new();

    let before = allocations();
    machine.advance_ms(N).expect("machine runs");
    out.push(("producer tick (timer DPC, no reader)", (allocations() - before) as f64 / N as f64));

    // The ring now holds N records: reads complete in DispatchRead.
    let before = allocations();
    for _ in 0..N {
        let r = process.read(handle, RECORD_SIZE).expect("machine runs").done().expect("completes at once");
        assert_eq!((r.status, r.information), (STATUS_SUCCESS, RECORD_SIZE as u64));
    }
    out.push(("read completed at once (ring has data)", (allocations() - before) as f64 / N as f64));

    // Empty ring: each read pends, the next tick's record completes it (consumer).
    let before = allocations();
    for _ in 0..N {
        let read = pending_read(&process, handle, RECORD_SIZE);
        machine.advance_ms(1).expect("machine runs");
        assert_eq!(read.result().map(|r| r.status), Some(STATUS_SUCCESS));
    }
    out.push(("read pended, completed by the consumer thread", (allocations() - before) as f64 / N as f64));

    process.close(handle).expect("machine runs");
    unload_clean(&machine, driver);

    // No records at all (60 s period): reads pend and are cancelled or time out.
    let machine = self::machine(
        Mode::Seeded(2),
        64,
        &[("SamplePeriodMs", 60_000), ("StatisticsEveryTicks", 100_000), ("ReadTimeoutSeconds", 1)],
    );
    let driver = load(&machine, "stagedrv", stagedrv::driver_entry);
    let process = machine.new_process();
    let handle = open(&process, "StageDrv0");
    let allocations = || machine.pool_stats().allocations;

    let before = allocations();
    for _ in 0..N {
        let read = pending_read(&process, handle, RECORD_SIZE);
        process.cancel_io_ex(handle, Some(&read)).expect("machine runs");
        assert_eq!(read.result().map(|r| r.status), Some(STATUS_CANCELLED));
    }
    out.push(("read pended, cancelled (CancelIoEx)", (allocations() - before) as f64 / N as f64));

    let before = allocations();
    // 25 x 2 s stays below the first record at 60 s.
    let timed_out = 25;
    for _ in 0..timed_out {
        let read = pending_read(&process, handle, RECORD_SIZE);
        machine.advance_ms(2_000).expect("machine runs");
        assert_eq!(read.result().map(|r| r.status), Some(ntsim::wdk_sys::STATUS_IO_TIMEOUT));
    }
    out.push(("read pended, timed out (watchdog)", (allocations() - before) as f64 / f64::from(timed_out)));

    process.close(handle).expect("machine runs");
    unload_clean(&machine, driver);
    out
}

// --- 5. unload latency with everything busy --------------------------------------------

const UNLOAD_PERIOD_MS: u64 = 100;
const UNLOAD_SCHEDULES: u64 = 60;

/// What one schedule of the busy unload showed.
#[allow(clippy::struct_excessive_bools, clippy::struct_field_names, reason = "one flag per observation")]
struct Unload {
    /// Simulated time from posting `sc stop` and the last closes to Unloaded.
    latency: u64,
    wall: Duration,
    /// Driver activity interleaved with DriverUnload (from the trace).
    work_item_during_unload: bool,
    consumer_during_unload: bool,
    dpc_during_unload: bool,
    /// A work item ran between the last IRP_MJ_CLOSE and DriverUnload: ntsim held
    /// DriverUnload back while the item referenced the device.
    deferred_by_work_item: bool,
}

/// Real driver in ntsim (Seeded(seed)): eight devices, one handle each owned by its
/// own client thread, reads pending on every device, every producer DPC and the
/// IoTimer tick queued (not yet run), the statistics work item due on every tick.
/// Then, posted together: `sc stop`, one more read per handle, a CancelIo, and every
/// close (`last_only`: the other seven handles were closed beforehand, so only the last
/// close is posted and DriverUnload starts while the DPCs, work items and consumer
/// thread are still busy); the machine runs until the driver is unloaded.
fn unload_busy(seed: u64, last_only: bool) -> Unload {
    const DEVICES: usize = 8;
    let machine = machine(
        Mode::Seeded(seed),
        100_000,
        &[
            ("DeviceCount", DEVICES as u32),
            ("SamplePeriodMs", UNLOAD_PERIOD_MS as u32),
            ("StatisticsEveryTicks", 1),
            ("ReadTimeoutSeconds", 1),
        ],
    );
    let driver = load(&machine, "stagedrv", stagedrv::driver_entry);
    let process = machine.new_process();
    let threads: Vec<_> = (0..DEVICES).map(|n| process.thread(n)).collect();
    // Just before a whole second: each ring holds the records of 9 ticks.
    machine.advance_ms(995).expect("machine runs");
    let mut reads = Vec::new();
    let mut handles = Vec::new();
    for (device, thread) in threads.iter().enumerate() {
        let handle = thread.open(&format!(r"\\.\StageDrv{device}"), true).expect("machine runs").expect("open");
        let drained = thread.read(handle, 256 * RECORD_SIZE).expect("machine runs").done().expect("ring has data");
        assert_eq!(drained.status, STATUS_SUCCESS);
        for records in [1, 2] {
            match thread.read(handle, records * RECORD_SIZE).expect("machine runs") {
                Issued::Pending(io) => reads.push(io),
                Issued::Done(r) => panic!("read did not pend: {r:?}"),
            }
        }
        handles.push(handle);
    }
    let open_now = if last_only {
        for (thread, &handle) in threads.iter().zip(&handles).skip(1) {
            thread.close(handle).expect("machine runs");
        }
        1
    } else {
        DEVICES
    };
    // To 1000 ms: every producer DPC and the IoTimer tick are queued, not yet run.
    machine.tick(5 * 10_000);
    let posted: Vec<_> = threads
        .iter()
        .zip(&handles)
        .take(open_now)
        .map(|(thread, &handle)| thread.post_read(handle, RECORD_SIZE))
        .collect();
    threads[0].post_cancel_io(handles[0]);
    machine.post_stop_driver(driver);
    for (thread, &handle) in threads.iter().zip(&handles).take(open_now) {
        thread.post_close(handle);
    }
    let (start, wall) = (machine.now(), Instant::now());
    machine.wait_unloaded(driver).expect("unloads clean");
    let (latency, wall) = (machine.now() - start, wall.elapsed());
    machine.verdict().expect("clean verdict");
    assert!(reads.iter().all(|r| r.result().is_some()), "every queued read completed");
    assert!(posted.iter().all(|p| p.completion().is_some()), "every posted read completed");
    let trace = machine.trace();
    let unload_start = trace.iter().position(|c| c.routine == Routine::Unload).expect("DriverUnload ran");
    if std::env::var_os("BENCH_DUMP_UNLOAD").is_some() {
        let begin = trace.iter().position(|c| c.time >= start).unwrap_or(0);
        for c in &trace[begin..] {
            println!("{c} [{}]", c.routine);
        }
    }
    let last_close =
        trace[..unload_start].iter().rposition(|c| c.routine == Routine::Dispatch(IRP_MJ_CLOSE as u8)).unwrap_or(0);
    let deferred_by_work_item = trace[last_close..unload_start].iter().any(|c| c.routine == Routine::WorkItem);
    let after = &trace[unload_start..];
    let during = |routine: Routine| after.iter().any(|c| c.routine == routine);
    Unload {
        latency,
        wall,
        work_item_during_unload: during(Routine::WorkItem),
        // Delivering records (any call but its wait and its exit).
        consumer_during_unload: after.iter().any(|c| {
            c.routine == Routine::SystemThread
                && !matches!(c.api, "KeWaitForMultipleObjects" | "PsTerminateSystemThread")
        }),
        dpc_during_unload: during(Routine::CustomTimerDpc) || during(Routine::IoTimer),
        deferred_by_work_item,
    }
}

// --- 6. records through ReadFile ----------------------------------------------------------

const RECORDS_PER_READ: usize = 16;
const RECORDS_PER_ROUND: usize = 8_192;
const ROUNDS: usize = 15;

/// A machine with one reader thread and handle per reader, on stagedrv or the no-op
/// driver.
struct Readers<'m> {
    machine: &'m Machine,
    driver: Driver,
    process: Process<'m>,
    handles: Vec<Handle>,
}

impl<'m> Readers<'m> {
    fn new(machine: &'m Machine, noop: bool, readers: usize) -> Self {
        let (driver, name) = if noop {
            (load(machine, "noopdrv", noop_entry), "NoopDrv0")
        } else {
            (load(machine, "stagedrv", stagedrv::driver_entry), "StageDrv0")
        };
        let process = machine.new_process();
        let handles = (0..readers).map(|_| open(&process, name)).collect();
        Readers { machine, driver, process, handles }
    }

    /// Posts `RECORDS_PER_ROUND` records' worth of 16-record reads, spread over the
    /// reader threads, and times the machine running them all.
    fn round(&self) -> Duration {
        let reads_per_thread = RECORDS_PER_ROUND / RECORDS_PER_READ / self.handles.len();
        let mut posted = Vec::new();
        for (n, &handle) in self.handles.iter().enumerate() {
            let thread = self.process.thread(n);
            for _ in 0..reads_per_thread {
                posted.push(thread.post_read(handle, RECORDS_PER_READ * RECORD_SIZE));
            }
        }
        let start = Instant::now();
        self.machine.run_until_idle();
        let took = start.elapsed();
        for p in &posted {
            let r = p.completion().expect("completed");
            assert_eq!((r.status, r.information), (STATUS_SUCCESS, (RECORDS_PER_READ * RECORD_SIZE) as u64));
        }
        took
    }

    fn finish(self) {
        for handle in self.handles {
            self.process.close(handle).expect("machine runs");
        }
        unload_clean(self.machine, self.driver);
    }
}

/// Records through ReadFile, ntsim Free mode, `readers` threads each on its own handle,
/// reads of 16 records that all complete at once: stagedrv (its ring refilled by the
/// producer before each round, untimed) and the no-op driver (zeroed data), in
/// alternating rounds. Returns the per-round times (stagedrv, no-op).
fn throughput(readers: usize) -> (Vec<Duration>, Vec<Duration>) {
    let parameters = [
        ("DeviceCount", 1),
        ("SamplePeriodMs", 1),
        ("RingCapacity", RECORDS_PER_ROUND as u32),
        ("StatisticsEveryTicks", 100_000),
    ];
    let (real_machine, noop_machine) = (machine(Mode::Free, 64, &parameters), machine(Mode::Free, 64, &[]));
    let (real, noop) = (Readers::new(&real_machine, false, readers), Readers::new(&noop_machine, true, readers));
    let (mut real_times, mut noop_times) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        real_machine.advance_ms(RECORDS_PER_ROUND as u64).expect("machine runs");
        real_times.push(real.round());
        noop_times.push(noop.round());
    }
    real.finish();
    noop.finish();
    (real_times, noop_times)
}

/// Kernel calls each driver makes per read in its read dispatch routine (Seeded, from
/// the trace): what the throughput ratio mostly reflects, since every kernel call
/// costs ntsim a lock round trip and wake-ups.
fn kernel_calls_per_read(noop: bool) -> f64 {
    const READS: usize = 100;
    let ring = (READS * RECORDS_PER_READ) as u32;
    let machine = machine(
        Mode::Seeded(3),
        100_000,
        &[("DeviceCount", 1), ("SamplePeriodMs", 1), ("RingCapacity", ring), ("StatisticsEveryTicks", 100_000)],
    );
    let readers = Readers::new(&machine, noop, 1);
    if !noop {
        machine.advance_ms((READS * RECORDS_PER_READ) as u64).expect("machine runs");
    }
    let read = Routine::Dispatch(IRP_MJ_READ as u8);
    let (since, _) = trace_calls(&machine, 0, read);
    for _ in 0..READS {
        let r = readers
            .process
            .read(readers.handles[0], RECORDS_PER_READ * RECORD_SIZE)
            .expect("machine runs")
            .done()
            .expect("at once");
        assert_eq!(r.information, (RECORDS_PER_READ * RECORD_SIZE) as u64);
    }
    let (_, calls) = trace_calls(&machine, since, read);
    readers.finish();
    calls as f64 / READS as f64
}

// --- main ---------------------------------------------------------------------------------

/// `BENCH_EXPLORE_CANCEL=10,1000,...` / `_CLEANUP=0,...` / `_DELIVERY=0,...`: the sample
/// distribution per N, and paired ratios against the first N.
fn explore(counts: &[usize], samples: &[Samples], counted: &str) {
    let q = |v: &Vec<Duration>| [0.0, 0.1, 0.25, 0.5, 0.9].map(|q| us(quantile(v.clone(), q)));
    for (n, (whole, inside, calls)) in counts.iter().zip(samples) {
        println!(
            "N = {n:>6}: call min/p10/p25/p50/p90 {:?}; inside {:?}; {counted} {:?}",
            q(whole),
            q(inside),
            calls.iter().min()..=calls.iter().max()
        );
        println!(
            "           paired median ratio vs N = {}: call {:.2}, inside {:.2}",
            counts[0],
            paired_ratio(whole, &samples[0].0),
            paired_ratio(inside, &samples[0].1)
        );
    }
}

/// The table rows of one real-driver measurement: medians, and ratios of the last N
/// against the first (median of the per-round ratios: rounds alternate between the
/// machines, so both sides of a ratio saw the same load on the host).
#[allow(clippy::too_many_arguments, reason = "the labels of one measurement")]
fn real_rows(
    table: &mut Vec<Row>,
    what: &str,
    call: &str,
    inside: &str,
    counted: &str,
    counts: &[usize],
    samples: &[Samples],
    bound_call: &str,
) {
    let (first, last) = (&samples[0], &samples[samples.len() - 1]);
    let span = format!("N {} -> {}", counts[0], counts[counts.len() - 1]);
    for (n, (whole, within, calls)) in counts.iter().zip(samples) {
        println!(
            "   N = {n:>6}: {call} median {} (p10 {}); {inside} median {} (p10 {}), {}..={} {counted}",
            us(median(whole.clone())),
            us(quantile(whole.clone(), 0.1)),
            us(median(within.clone())),
            us(quantile(within.clone(), 0.1)),
            calls.iter().min().unwrap_or(&0),
            calls.iter().max().unwrap_or(&0),
        );
    }
    let p10 = |s: &Vec<Duration>| quantile(s.clone(), 0.1);
    println!(
        "   ratios {span}: {call} {:.2} (p10 {:.2}), {inside} {:.2} (p10 {:.2})",
        paired_ratio(&last.0, &first.0),
        ratio(p10(&last.0), p10(&first.0)),
        paired_ratio(&last.1, &first.1),
        ratio(p10(&last.1), p10(&first.1)),
    );
    row(
        table,
        format!("{what}: {call} wall, real driver in ntsim"),
        format!("{} -> {} ({span})", us(median(first.0.clone())), us(median(last.0.clone()))),
        format!("{:.2}", paired_ratio(&last.0, &first.0)),
        bound_call,
    );
    row(
        table,
        format!("{what}: {inside}, real driver in ntsim"),
        format!("{} -> {} ({span})", us(median(first.1.clone())), us(median(last.1.clone()))),
        format!("{:.2}", paired_ratio(&last.1, &first.1)),
        "<= 1.5",
    );
    let calls = |s: &Samples| s.2.iter().max().copied().unwrap_or(0);
    row(
        table,
        format!("{what}: {counted} {inside}"),
        format!("{} -> {} ({span})", calls(first), calls(last)),
        format!("{:.2}", calls(last) as f64 / calls(first).max(1) as f64),
        "== 1 (no scan)",
    );
}

#[allow(clippy::too_many_lines, reason = "one section per measurement, in print order")]
fn main() {
    if let Ok(list) = std::env::var("BENCH_EXPLORE_CANCEL") {
        let counts: Vec<usize> = list.split(',').map(|n| n.parse().expect("N")).collect();
        explore(&counts, &cancel_real(&counts), "kernel calls inside");
        return;
    }
    if let Ok(list) = std::env::var("BENCH_EXPLORE_CLEANUP") {
        let counts: Vec<usize> = list.split(',').map(|n| n.parse().expect("N")).collect();
        explore(&counts, &cleanup_real(&counts), "kernel calls inside");
        return;
    }
    if let Ok(list) = std::env::var("BENCH_EXPLORE_DELIVERY") {
        let counts: Vec<usize> = list.split(',').map(|n| n.parse().expect("N")).collect();
        explore(&counts, &delivery_real(&counts), "handle-list nodes visited");
        return;
    }
    if let Ok(seeds) = std::env::var("BENCH_EXPLORE_UNLOAD") {
        let last_only = std::env::var_os("BENCH_LAST_ONLY").is_some();
        let runs: Vec<Unload> = (0..seeds.parse().expect("seeds")).map(|seed| unload_busy(seed, last_only)).collect();
        let count = |f: fn(&Unload) -> bool| runs.iter().filter(|r| f(r)).count();
        println!(
            "worst latency {} x 100 ns; overlapped work item {}, consumer {}, DPC {}; deferred behind a work item {}",
            runs.iter().map(|r| r.latency).max().unwrap_or(0),
            count(|r| r.work_item_during_unload),
            count(|r| r.consumer_during_unload),
            count(|r| r.dpc_during_unload),
            count(|r| r.deferred_by_work_item)
        );
        return;
    }
    let started = Instant::now();
    let mut table = Vec::new();

    println!("1. CloseHandle of a handle with 16 pending reads, other handles holding N pending reads");
    let counts = [0, 1_000, 10_000];
    real_rows(
        &mut table,
        "cleanup",
        "CloseHandle",
        "inside DispatchCleanup",
        "kernel calls made",
        &counts,
        &cleanup_real(&counts),
        "<= 1.5",
    );
    for (design, label) in [
        (Design::PerHandle, "per-handle FIFO (stagedrv's design)"),
        (Design::SharedRescan, "shared queue, rescan from head (cancel sample)"),
    ] {
        let samples = cleanup_model(design, &counts);
        let times: Vec<Duration> = samples.iter().map(|s| median(s.clone())).collect();
        println!("   pure model, {label}: N = 0 {}, 1k {}, 10k {}", us(times[0]), us(times[1]), us(times[2]));
        row(
            &mut table,
            format!("cleanup: pure model, {label}"),
            format!("{} -> {} (N 0 -> 10000)", us(times[0]), us(times[2])),
            format!("{:.2}", paired_ratio(&samples[2], &samples[0])),
            if design == Design::PerHandle { "<= 1.5" } else { "(contrast)" },
        );
    }

    println!("2. CancelIoEx of one read out of N pending");
    let counts = [10, 10_000];
    real_rows(
        &mut table,
        "cancel one",
        "CancelIoEx",
        "inside stagedrv's cancel routine",
        "kernel calls made",
        &counts,
        &cancel_real(&counts),
        "<= 1.5",
    );

    println!("3. One record delivered by the consumer thread, N idle open handles beside the reader");
    let counts = [0, 10_000];
    real_rows(
        &mut table,
        "delivery",
        "producer tick",
        "inside the consumer's delivery pass",
        "handle-list nodes visited",
        &counts,
        &delivery_real(&counts),
        "<= 1.5",
    );

    println!("4. Pool allocations per read (handle open; create/close excluded), real driver in ntsim (Seeded)");
    for (path, per) in allocations() {
        println!("   {path}: {per}");
        row(&mut table, format!("allocations per {path}"), format!("{per}"), "", "== 0");
    }

    println!(
        "5. Unload with every resource busy, real driver in ntsim (Seeded, {UNLOAD_SCHEDULES} schedules per variant, producer period {UNLOAD_PERIOD_MS} ms)"
    );
    let period = UNLOAD_PERIOD_MS * 10_000;
    for (last_only, variant) in [(false, "stop + all 8 closes posted"), (true, "stop + last close posted")] {
        let runs: Vec<Unload> = (0..UNLOAD_SCHEDULES).map(|seed| unload_busy(seed, last_only)).collect();
        let worst = runs.iter().map(|r| r.latency).max().unwrap_or(0);
        let count = |f: fn(&Unload) -> bool| runs.iter().filter(|r| f(r)).count();
        let (work, consumer, dpc) =
            (count(|r| r.work_item_during_unload), count(|r| r.consumer_during_unload), count(|r| r.dpc_during_unload));
        let deferred = count(|r| r.deferred_by_work_item);
        let wall = median(runs.iter().map(|r| r.wall).collect());
        println!(
            "   {variant}: worst simulated latency {worst} x 100 ns = {:.2} periods; DriverUnload overlapped the work item in {work}, the consumer delivering in {consumer}, a timer DPC/IoTimer in {dpc} schedules; ntsim deferred DriverUnload behind a work item after the last close in {deferred}; median wall {}",
            worst as f64 / period as f64,
            us(wall)
        );
        row(
            &mut table,
            format!("unload latency (simulated), {variant}"),
            format!(
                "worst {:.1} ms, {UNLOAD_SCHEDULES} seeds; overlaps w{work}/c{consumer}/d{dpc}",
                worst as f64 / 10_000.0
            ),
            format!("{:.2} per.", worst as f64 / period as f64),
            "<= ~2 periods",
        );
    }

    println!(
        "6. Records through ReadFile (reads of {RECORDS_PER_READ} records, {RECORDS_PER_ROUND} records a round, {ROUNDS} rounds), ntsim Free mode"
    );
    let (real_calls, noop_calls) = (kernel_calls_per_read(false), kernel_calls_per_read(true));
    println!(
        "   kernel calls per read inside the read dispatch routine: stagedrv {real_calls}, no-op driver {noop_calls}"
    );
    row(
        &mut table,
        "throughput: kernel calls per read in DispatchRead",
        format!("stagedrv {real_calls} vs no-op {noop_calls}"),
        format!("{:.2}", real_calls / noop_calls),
        "(explains)",
    );
    for readers in [1, 2, 4] {
        let (real, noop) = throughput(readers);
        let rate = |times: &Vec<Duration>| RECORDS_PER_ROUND as f64 / median(times.clone()).as_secs_f64();
        let (real_rate, noop_rate) = (rate(&real), rate(&noop));
        println!(
            "   {readers} reader thread(s): stagedrv {real_rate:.0} records/s, no-op driver {noop_rate:.0} records/s (medians)"
        );
        row(
            &mut table,
            format!("throughput, {readers} reader(s): stagedrv vs no-op driver"),
            format!("{real_rate:.0} vs {noop_rate:.0} records/s"),
            format!("{:.2}", paired_ratio(&real, &noop)),
            "(overhead)",
        );
    }

    println!("7. Release image");
    let sys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cross/stagedrv.sys");
    if let Ok(m) = std::fs::metadata(&sys) {
        println!("   {}: {} bytes", sys.display(), m.len());
        row(&mut table, "release stagedrv.sys size", format!("{} bytes", m.len()), "", "");
    } else {
        println!("   {} is missing (tests/cross/build-sys.sh builds it)", sys.display());
        row(&mut table, "release stagedrv.sys size", "missing (run tests/cross/build-sys.sh)", "", "");
    }

    println!();
    println!("Summary (cargo bench --bench bench; {:.0} s)", started.elapsed().as_secs_f64());
    println!("  {:<58} {:<44} {:>10}  bound", "measurement", "values", "ratio");
    for r in &table {
        println!("  {:<58} {:<44} {:>10}  {}", r.what, r.measured, r.ratio, r.bound);
    }
}
