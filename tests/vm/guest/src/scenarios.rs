//! The scenarios, as stagetest runs them (tests/app/src/scenarios.rs), expressed with
//! the calls an NT 5.2 user mode has: CancelIo everywhere, CancelIoEx only where the
//! system implements it (otherwise the scenario that needs it is SKIP, with the reason).
//!
//! The producer adds a record every tick, so a read meant to stay pending may still
//! get a record between the drain and the cancel or close under test. Each read must
//! end exactly once, cancelled or with whole records, at least one must be cancelled,
//! and the driver's own counters are cross-checked.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::protocol::{IOCTL_STAGEDRV_GET_STATS, RECORD_SIZE, Stats};
use crate::rng::Rng;
use crate::win::{self, AppThread, CancelEx, Device, Fail, Io, Outcome, Read, Status};

/// A read big enough to empty a device's ring (RingCapacity is 256 by default).
pub const DRAIN_BYTES: usize = 1024 * RECORD_SIZE;
/// An IOCTL code of the driver's device type that the driver does not know.
const UNKNOWN_IOCTL: u32 = 0x8337_2000;
/// How long watchdog-timeout waits for its 40 reads to end, by the tick count.
const WATCHDOG_WAIT_MS: u32 = 150_000;
/// The service's Parameters key, as `sc create stagedrv` makes it.
pub const PARAMETERS_KEY: &str = r"SYSTEM\CurrentControlSet\Services\stagedrv\Parameters";

pub enum Problem {
    Fail(String),
    Skip(String),
}

impl From<Fail> for Problem {
    fn from(f: Fail) -> Self {
        Problem::Fail(f.0)
    }
}

pub type Res = Result<String, Problem>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(Problem::Fail(format!($($arg)*)));
        }
    };
}

macro_rules! fail {
    ($($arg:tt)*) => {
        return Err(Problem::Fail(format!($($arg)*)))
    };
}

#[derive(Clone, Copy)]
pub struct Settings {
    pub threads: usize,
    pub reads: u32,
    pub seed: u64,
    pub wait_ms: u32,
    /// `ReadTimeoutSeconds` from the Parameters key (None: absent or 0).
    pub read_timeout_s: Option<u32>,
}

pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&Settings) -> Res,
}

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "basic-read",
        about: "synchronous and overlapped ReadFile return whole records in sequence",
        run: basic_read,
    },
    Scenario { name: "zero-length-read", about: "ReadFile of 0 bytes succeeds with 0 bytes", run: zero_length_read },
    Scenario {
        name: "short-buffer",
        about: "a read shorter than a record and a short stats buffer fail with STATUS_BUFFER_TOO_SMALL",
        run: short_buffer,
    },
    Scenario {
        name: "unknown-ioctl",
        about: "an unknown IOCTL fails with STATUS_INVALID_DEVICE_REQUEST",
        run: unknown_ioctl,
    },
    Scenario {
        name: "sub-path-open",
        about: r"CreateFile(\\.\StageDrv0\x) is refused by the driver",
        run: sub_path_open,
    },
    Scenario {
        name: "close-pending",
        about: "CloseHandle with reads pending: IRP_MJ_CLEANUP cancels them",
        run: close_pending,
    },
    Scenario {
        name: "duplicate-handle",
        about: "closing one of two handles leaves the reads pending; closing the last cancels them",
        run: duplicate_handle,
    },
    Scenario {
        name: "cancel-io",
        about: "CancelIo cancels the calling thread's reads, not another thread's",
        run: cancel_io,
    },
    Scenario {
        name: "cancel-io-ex",
        about: "CancelIoEx with an OVERLAPPED cancels exactly that read",
        run: cancel_io_ex,
    },
    Scenario {
        name: "two-handles",
        about: "closing one handle cancels its reads; the other handle's read still gets a record",
        run: two_handles,
    },
    Scenario {
        name: "thread-exit",
        about: "a thread that exits with reads pending has them cancelled; other threads' reads stay",
        run: thread_exit,
    },
    Scenario { name: "process-kill", about: "a child killed with reads pending: all cancelled", run: process_kill },
    Scenario { name: "process-exit", about: "a child that exits with reads pending: all cancelled", run: process_exit },
    Scenario {
        name: "watchdog-timeout",
        about: "reads older than ReadTimeoutSeconds complete with STATUS_IO_TIMEOUT (IoTimer)",
        run: watchdog_timeout,
    },
    Scenario {
        name: "stress",
        about: "N threads x M reads with random cancels and closes; the driver's counters balance",
        run: stress,
    },
];

// --- helpers -------------------------------------------------------------------------

fn open(device: u32, overlapped: bool) -> Result<Device, Problem> {
    win::open(device, "", overlapped)
        .map_err(|s| Problem::Fail(format!(r"CreateFile(\\.\StageDrv{device}) failed: {s}")))
}

/// IOCTL_STAGEDRV_GET_STATS, decoded field by field (little-endian u64s, in order).
pub fn stats(h: Device) -> Result<Stats, Problem> {
    let o = h.ioctl(IOCTL_STAGEDRV_GET_STATS, &[], size_of::<Stats>())?;
    ensure!(
        o.ok() && o.bytes == size_of::<Stats>() && o.data.len() >= size_of::<Stats>(),
        "IOCTL_STAGEDRV_GET_STATS: {o}"
    );
    let mut v = o.data.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let mut next = || v.next().unwrap_or(0);
    Ok(Stats {
        records_produced: next(),
        records_dropped: next(),
        reads_received: next(),
        reads_completed: next(),
        reads_cancelled: next(),
        reads_timed_out: next(),
        reads_rejected: next(),
        reads_pending: next(),
    })
}

fn balanced(s: &Stats) -> Result<(), Problem> {
    let accounted = s.reads_completed + s.reads_cancelled + s.reads_timed_out + s.reads_rejected + s.reads_pending;
    ensure!(
        s.reads_received == accounted,
        "driver counters do not balance: received {} != completed {} + cancelled {} + timed out {} + rejected {} + pending {}",
        s.reads_received,
        s.reads_completed,
        s.reads_cancelled,
        s.reads_timed_out,
        s.reads_rejected,
        s.reads_pending
    );
    Ok(())
}

fn wait(io: &mut Io, s: &Settings) -> Result<Outcome, Problem> {
    match io.wait(s.wait_ms) {
        Some(o) => Ok(o),
        None => fail!("a read did not complete within {} ms", s.wait_ms),
    }
}

/// Empties the ring through `h` (overlapped, this thread) so that the next reads pend.
pub fn drain(h: Device, s: &Settings) -> Result<(), Problem> {
    match h.read(DRAIN_BYTES)? {
        Read::Done(o) => ensure!(o.ok(), "draining read: {o}"),
        Read::Pending(mut io) => {
            // The ring was empty already: take the read back (the only request of
            // this thread on the handle).
            h.cancel_io()?;
            let o = wait(&mut io, s)?;
            ensure!(o.ok() || o.status == Status::CANCELLED, "draining read: {o}");
        }
    }
    Ok(())
}

/// `n` one-record reads on `h` from the calling thread that pend. A read that
/// completes at once (a record arrived since the drain) is fine and not counted.
pub fn pend(h: Device, n: usize) -> Result<Vec<Io>, Problem> {
    let mut ios = Vec::new();
    let mut tries = 0;
    while ios.len() < n {
        tries += 1;
        ensure!(tries <= n + 20, "reads keep completing at once: could not get {n} pending");
        match h.read(RECORD_SIZE)? {
            Read::Pending(io) => ios.push(io),
            Read::Done(o) => ensure!(o.ok(), "ReadFile failed at once: {o}"),
        }
    }
    Ok(ios)
}

/// `pend` on an application thread.
fn pend_on(t: &AppThread, h: Device, n: usize) -> Result<Vec<Io>, Problem> {
    t.call(move || {
        pend(h, n).map_err(|p| match p {
            Problem::Fail(m) | Problem::Skip(m) => m,
        })
    })?
    .map_err(Problem::Fail)
}

/// Each read must end cancelled or with whole records, at least one cancelled.
/// Returns (cancelled, with records).
fn cancelled_or_data(ios: &mut [Io], what: &str, s: &Settings) -> Result<(usize, usize), Problem> {
    let (mut cancelled, mut data) = (0, 0);
    let total = ios.len();
    for (i, io) in ios.iter_mut().enumerate() {
        let Some(o) = io.wait(s.wait_ms) else {
            fail!("{what}: read {} of {total} did not complete within {} ms", i + 1, s.wait_ms)
        };
        if o.status == Status::CANCELLED {
            cancelled += 1;
        } else if o.ok() && o.bytes > 0 && o.bytes % RECORD_SIZE == 0 {
            data += 1;
        } else {
            fail!("{what}: a read ended with {o}; expected cancelled (or whole records)");
        }
    }
    ensure!(cancelled > 0, "{what}: no read was cancelled ({data} got records first)");
    Ok((cancelled, data))
}

/// Each read must end cancelled or with whole records (clean-up at a scenario's end).
fn ended(ios: &mut [Io], what: &str, s: &Settings) -> Result<(), Problem> {
    for io in ios {
        let o = wait(io, s)?;
        let fine = o.status == Status::CANCELLED || (o.ok() && o.bytes > 0 && o.bytes % RECORD_SIZE == 0);
        ensure!(fine, "{what}: a read ended with {o}");
    }
    Ok(())
}

/// None of `ios` may have been cancelled (records are fine). Returns how many pend.
fn not_cancelled(ios: &mut [Io], what: &str) -> Result<usize, Problem> {
    let mut pending = 0;
    for io in ios {
        match io.poll() {
            None => pending += 1,
            Some(o) if o.ok() && o.bytes > 0 => {}
            Some(o) => fail!("{what}: a read that should still be pending ended with {o}"),
        }
    }
    Ok(pending)
}

/// (sequence, value) of each whole record.
fn records(data: &[u8]) -> Vec<(u64, u64)> {
    let word =
        |r: &[u8], at: usize| u64::from_le_bytes(r.get(at..at + 8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
    data.chunks_exact(RECORD_SIZE).map(|r| (word(r, 0), word(r, 16))).collect()
}

fn extra(data: usize) -> String {
    if data == 0 { String::new() } else { format!(" ({data} got a record first)") }
}

/// Polls the stats until the driver holds at most `pending` reads.
fn settle_pending(h: Device, pending: u64, s: &Settings) -> Result<Stats, Problem> {
    let mut st = stats(h)?;
    let start = win::tick_ms();
    while st.reads_pending > pending && win::tick_ms().wrapping_sub(start) < s.wait_ms {
        win::sleep_ms(20);
        st = stats(h)?;
    }
    ensure!(
        st.reads_pending <= pending,
        "the driver still holds {} pending read(s), expected at most {pending}: {st:?}",
        st.reads_pending
    );
    balanced(&st)?;
    Ok(st)
}

// --- scenarios -------------------------------------------------------------------------

fn basic_read(_: &Settings) -> Res {
    let h = open(0, false)?;
    let o = match h.read(4 * RECORD_SIZE)? {
        Read::Done(o) => o,
        Read::Pending(_) => fail!("a synchronous ReadFile came back pending"),
    };
    ensure!(o.ok(), "synchronous ReadFile: {o}");
    ensure!(
        (RECORD_SIZE..=4 * RECORD_SIZE).contains(&o.bytes) && o.bytes % RECORD_SIZE == 0,
        "synchronous ReadFile returned {} bytes: expected 1 to 4 whole records",
        o.bytes
    );
    let recs = records(&o.data);
    ensure!(recs.windows(2).all(|w| w[1].0 > w[0].0), "sequence numbers do not increase: {recs:?}");
    ensure!(recs.iter().all(|r| r.1 >> 56 == 0), "StageDrv0's samples carry another device index: {recs:?}");
    let st = stats(h)?;
    balanced(&st)?;
    ensure!(st.reads_completed >= 1, "the driver counted no completed read: {st:?}");
    h.close()?;

    let h1 = open(1, true)?;
    let o1 = match h1.read(RECORD_SIZE)? {
        Read::Done(o) => o,
        Read::Pending(mut io) => {
            io.wait(10_000).ok_or(Problem::Fail("the overlapped read on StageDrv1 did not complete".into()))?
        }
    };
    ensure!(o1.ok() && o1.bytes == RECORD_SIZE, "overlapped ReadFile on StageDrv1: {o1}");
    let r1 = records(&o1.data);
    ensure!(r1.iter().all(|r| r.1 >> 56 == 1), "StageDrv1's sample carries another device index: {r1:?}");
    h1.close()?;
    let (first, last) = (recs.first().map_or(0, |r| r.0), recs.last().map_or(0, |r| r.0));
    Ok(format!(
        "synchronous read: {} record(s), sequence {first}..={last}; overlapped read on StageDrv1: 1 record",
        recs.len()
    ))
}

fn zero_length_read(s: &Settings) -> Res {
    let h = open(0, true)?;
    let s0 = stats(h)?;
    let o = match h.read(0)? {
        Read::Done(o) => o,
        Read::Pending(mut io) => wait(&mut io, s)?,
    };
    ensure!(o.ok() && o.bytes == 0, "zero-length ReadFile: {o}; expected success with 0 bytes");
    let s1 = stats(h)?;
    balanced(&s1)?;
    h.close()?;
    let seen = s1.reads_received - s0.reads_received;
    Ok(format!(
        "success, 0 bytes ({})",
        if seen == 1 { "the driver completed it" } else { "answered before it reached the driver" }
    ))
}

fn short_buffer(s: &Settings) -> Res {
    let h = open(0, true)?;
    let s0 = stats(h)?;
    let o = match h.read(RECORD_SIZE - 1)? {
        Read::Done(o) => o,
        Read::Pending(mut io) => wait(&mut io, s)?,
    };
    ensure!(
        o.status == Status::BUFFER_TOO_SMALL,
        "ReadFile of {} bytes: {o}; expected ERROR_INSUFFICIENT_BUFFER",
        RECORD_SIZE - 1
    );
    let small = h.ioctl(IOCTL_STAGEDRV_GET_STATS, &[], 8)?;
    ensure!(small.status == Status::BUFFER_TOO_SMALL, "IOCTL_STAGEDRV_GET_STATS with 8 bytes of output: {small}");
    let s1 = stats(h)?;
    balanced(&s1)?;
    ensure!(s1.reads_rejected - s0.reads_rejected == 1, "the driver did not count the short read as rejected: {s1:?}");
    h.close()?;
    Ok(format!("{}-byte read: {}; 8-byte stats buffer: {}", RECORD_SIZE - 1, o.status, small.status))
}

fn unknown_ioctl(_: &Settings) -> Res {
    let h = open(0, true)?;
    let o = h.ioctl(UNKNOWN_IOCTL, &[1, 2, 3], 16)?;
    h.close()?;
    ensure!(o.status == Status::INVALID_FUNCTION, "IOCTL {UNKNOWN_IOCTL:#x}: {o}; expected ERROR_INVALID_FUNCTION");
    ensure!(o.bytes == 0, "IOCTL {UNKNOWN_IOCTL:#x} failed but reported {} bytes", o.bytes);
    Ok(format!("IOCTL {UNKNOWN_IOCTL:#x}: {}", o.status))
}

fn sub_path_open(_: &Settings) -> Res {
    // The device itself must open, or a refusal below proves nothing.
    open(0, true)?.close()?;
    match win::open(0, r"\x", true) {
        Ok(h) => {
            h.close()?;
            fail!(r"CreateFile(\\.\StageDrv0\x) succeeded; the driver must refuse names below the device")
        }
        Err(status) if status == Status::PATH_NOT_FOUND => Ok(format!(r"CreateFile(\\.\StageDrv0\x): {status}")),
        Err(status) => fail!(r"CreateFile(\\.\StageDrv0\x) refused with {status}; expected ERROR_PATH_NOT_FOUND"),
    }
}

fn close_pending(s: &Settings) -> Res {
    let watch = open(0, true)?;
    drain(watch, s)?;
    let s0 = stats(watch)?;
    let h = open(0, true)?;
    let mut ios = pend(h, 5)?;
    h.close()?;
    let (cancelled, data) = cancelled_or_data(&mut ios, "after CloseHandle", s)?;
    let s1 = stats(watch)?;
    balanced(&s1)?;
    ensure!(
        s1.reads_cancelled - s0.reads_cancelled == cancelled as u64,
        "the app saw {cancelled} cancelled reads, the driver counted {}",
        s1.reads_cancelled - s0.reads_cancelled
    );
    ensure!(s1.reads_pending == s0.reads_pending, "reads left pending in the driver: {s1:?}");
    watch.close()?;
    Ok(format!("5 pending reads, CloseHandle: {cancelled} x {}{}", Status::CANCELLED, extra(data)))
}

fn duplicate_handle(s: &Settings) -> Res {
    let h = open(0, true)?;
    drain(h, s)?;
    let dup = h.duplicate()?;
    let mut ios = pend(h, 3)?;
    h.close()?;
    win::sleep_ms(50);
    let pending = not_cancelled(&mut ios, "after closing one of two handles")?;
    dup.close()?;
    let (cancelled, data) = cancelled_or_data(&mut ios, "after closing the last handle", s)?;
    Ok(format!(
        "first CloseHandle: {pending} of 3 still pending; last CloseHandle: {cancelled} cancelled{}",
        extra(data)
    ))
}

fn cancel_io(s: &Settings) -> Res {
    let h = open(0, true)?;
    drain(h, s)?;
    let worker = AppThread::new()?;
    let mut mine = pend(h, 2)?;
    let mut theirs = pend_on(&worker, h, 2)?;
    h.cancel_io()?;
    let (cancelled, data) = cancelled_or_data(&mut mine, "after CancelIo", s)?;
    let pending = not_cancelled(&mut theirs, "the other thread's reads after CancelIo")?;
    worker.call(move || h.cancel_io())??;
    let (cancelled2, data2) = cancelled_or_data(&mut theirs, "after the other thread's CancelIo", s)?;
    worker.exit()?;
    h.close()?;
    Ok(format!(
        "CancelIo: {cancelled} cancelled{}, the other thread's {pending} still pending; its own CancelIo: {cancelled2} cancelled{}",
        extra(data),
        extra(data2)
    ))
}

fn cancel_io_ex(s: &Settings) -> Res {
    let h = open(0, true)?;
    drain(h, s)?;
    let mut ios = pend(h, 3)?;
    if let CancelEx::Unavailable(why) = h.cancel_io_ex(Some(&ios[1]))? {
        h.cancel_io()?;
        ended(&mut ios, "after CancelIo", s)?;
        h.close()?;
        return Err(Problem::Skip(why));
    }
    let o = wait(&mut ios[1], s)?;
    let lucky = o.ok() && o.bytes > 0;
    ensure!(o.status == Status::CANCELLED || lucky, "the read given to CancelIoEx ended with {o}");
    let mut others: Vec<Io> = ios.into_iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, io)| io).collect();
    let pending = not_cancelled(&mut others, "the other reads after CancelIoEx")?;
    if let CancelEx::Unavailable(why) = h.cancel_io_ex(None)? {
        fail!("CancelIoEx(handle, NULL) unavailable after CancelIoEx(handle, read) worked: {why}");
    }
    let (rest, _) = cancelled_or_data(&mut others, "after CancelIoEx(handle, NULL)", s)?;
    h.close()?;
    Ok(format!(
        "CancelIoEx(h, read 2): read 2 {}, reads 1 and 3 untouched ({pending} pending); CancelIoEx(h, NULL): {rest} cancelled",
        if lucky { "got a record first".to_string() } else { o.status.to_string() }
    ))
}

fn two_handles(s: &Settings) -> Res {
    let a = open(0, true)?;
    let b = open(0, true)?;
    drain(a, s)?;
    let mut on_a = pend(a, 2)?;
    let mut on_b = pend(b, 1)?;
    a.close()?;
    let (cancelled, data) = cancelled_or_data(&mut on_a, "handle A's reads after closing A", s)?;
    not_cancelled(&mut on_b, "handle B's read after closing A")?;
    let o = wait(&mut on_b[0], s)?;
    ensure!(o.ok() && o.bytes == RECORD_SIZE, "handle B's read: {o}; expected one record");
    b.close()?;
    Ok(format!("close A: {cancelled} cancelled{}; B's read then got a record", extra(data)))
}

fn thread_exit(s: &Settings) -> Res {
    let h = open(0, true)?;
    drain(h, s)?;
    let s0 = stats(h)?;
    let worker = AppThread::new()?;
    let mut mine = pend(h, 1)?;
    let mut theirs = pend_on(&worker, h, 2)?;
    worker.exit()?;
    // The driver's side first: the exited thread's reads leave its queue.
    let s1 = settle_pending(h, s0.reads_pending + mine.len() as u64, s)?;
    let driver_cancelled = s1.reads_cancelled - s0.reads_cancelled;
    let (mut cancelled, mut data) = (0u64, 0);
    for io in &mut theirs {
        match io.wait(s.wait_ms) {
            Some(o) if o.status == Status::CANCELLED => cancelled += 1,
            Some(o) if o.ok() && o.bytes > 0 => data += 1,
            Some(o) => fail!("a read of the exited thread ended with {o}; expected cancelled"),
            None => {
                fail!("a read of the exited thread never completed (the driver counted {driver_cancelled} cancelled)")
            }
        }
    }
    ensure!(
        cancelled > 0 && driver_cancelled >= cancelled,
        "the driver cancelled {driver_cancelled} read(s), the app saw {cancelled} cancelled and {data} with records"
    );
    let pending = not_cancelled(&mut mine, "the main thread's read after the other thread exited")?;
    h.close()?;
    ended(&mut mine, "the main thread's read after CloseHandle", s)?;
    Ok(format!(
        "thread exit: {cancelled} cancelled{}; the main thread's read untouched ({pending} pending)",
        extra(data)
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ChildEnd {
    Killed,
    Exits,
}

fn child(end: ChildEnd, s: &Settings) -> Res {
    const READS: usize = 4;
    let h = open(1, true)?;
    drain(h, s)?;
    let s0 = stats(h)?;
    let ready = win::event(true, true)?;
    let exit = win::event(true, true)?;
    let process = win::spawn_self(&format!("--child-reader 1 {READS} {} {}", ready.value(), exit.value()))?;
    if !ready.wait(s.wait_ms) {
        let _ = win::terminate(&process);
        fail!("the child process did not get its reads pending within {} ms", s.wait_ms);
    }
    let with_child = stats(h)?;
    let n = with_child.reads_pending.saturating_sub(s0.reads_pending);
    ensure!(n >= 1, "the child's reads are not pending in the driver: {with_child:?}");
    match end {
        ChildEnd::Killed => win::terminate(&process)?,
        ChildEnd::Exits => exit.set(),
    }
    ensure!(process.wait(30_000), "the child process did not end within 30 s");
    let s1 = settle_pending(h, s0.reads_pending, s)?;
    let cancelled = s1.reads_cancelled - s0.reads_cancelled;
    ensure!(cancelled >= 1, "the driver cancelled none of the child's reads: {s1:?}");
    h.close()?;
    let how = if end == ChildEnd::Killed { "killed (TerminateProcess)" } else { "exited (ExitProcess)" };
    Ok(format!("child {how} with {n} read(s) pending: the driver cancelled {cancelled}, none left pending"))
}

fn process_kill(s: &Settings) -> Res {
    child(ChildEnd::Killed, s)
}

fn process_exit(s: &Settings) -> Res {
    child(ChildEnd::Exits, s)
}

/// The child of process-kill/process-exit: drains, leaves `count` reads pending,
/// signals `ready`, then waits for `exit` (or to be killed) and exits without waiting.
pub fn child_reader(device: u32, count: usize, ready_event: usize, exit_event: usize) -> u32 {
    // SAFETY: the parent passed the values of two inheritable events it created.
    let (ready, exit) = unsafe { (win::Owned::from_value(ready_event), win::Owned::from_value(exit_event)) };
    let Ok(h) = win::open(device, "", true) else { return 2 };
    let mut held = Vec::new();
    for length in core::iter::once(DRAIN_BYTES).chain(core::iter::repeat_n(RECORD_SIZE, count)) {
        match h.read(length) {
            Ok(Read::Pending(io)) => held.push(io),
            Ok(Read::Done(_)) => {}
            Err(_) => return 3,
        }
    }
    ready.set();
    exit.wait(120_000);
    // ExitProcess with the reads still pending: the Io blocks stay allocated.
    core::mem::forget(held);
    0
}

fn watchdog_timeout(s: &Settings) -> Res {
    let Some(timeout) = s.read_timeout_s else {
        return Err(Problem::Skip(
            "ReadTimeoutSeconds is not set in the service's Parameters key: the watchdog has nothing to do".into(),
        ));
    };
    let h = open(1, true)?;
    drain(h, s)?;
    let s0 = stats(h)?;
    // More reads than the producer serves before the timeout (one record a tick).
    let mut ios = pend(h, 40)?;
    // Each read ends with a record or, once older than the timeout, STATUS_IO_TIMEOUT.
    // The driver ages reads by KeQueryPerformanceCounter, so no fixed sleep: wait for
    // the endings (by the tick count, generously) and say how the two clocks compared.
    let (counter0, tick0) = (win::counter(), win::tick_ms());
    let (mut served, mut timed_out) = (0usize, 0u64);
    for io in &mut ios {
        let left = WATCHDOG_WAIT_MS.saturating_sub(win::tick_ms().wrapping_sub(tick0)).max(1);
        let Some(o) = io.wait(left) else {
            fail!("a read neither got a record nor timed out within {} s", WATCHDOG_WAIT_MS / 1000)
        };
        if o.status == Status::IO_TIMEOUT {
            timed_out += 1;
        } else if o.ok() && o.bytes == RECORD_SIZE {
            served += 1;
        } else {
            fail!("a read ended with {o}; expected a record or ERROR_SEM_TIMEOUT (STATUS_IO_TIMEOUT)");
        }
    }
    let clocks = format!(
        "{:.1} s by the performance counter took {:.1} s by the tick count",
        win::seconds(counter0, win::counter()),
        f64::from(win::tick_ms().wrapping_sub(tick0)) / 1000.0
    );
    ensure!(
        timed_out > 0,
        "no read timed out {timeout} s after it was queued (all {served} got records; {clocks}): is the watchdog running?"
    );
    let s1 = stats(h)?;
    balanced(&s1)?;
    ensure!(
        s1.reads_timed_out - s0.reads_timed_out == timed_out,
        "the app saw {timed_out} timeouts, the driver counted {}",
        s1.reads_timed_out - s0.reads_timed_out
    );
    h.close()?;
    Ok(format!("40 reads, timeout {timeout} s: {served} got records, {timed_out} x {} ({clocks})", Status::IO_TIMEOUT))
}

// --- stress -------------------------------------------------------------------------------

/// What the app saw happen to its reads.
#[derive(Clone, Debug, Default)]
struct Tally {
    issued: u64,
    completions: u64,
    success: u64,
    cancelled: u64,
    timed_out: u64,
    rejected: u64,
    odd: Vec<String>,
    /// CancelIoEx was unavailable and CancelIo was used instead.
    without_cancel_io_ex: bool,
}

impl Tally {
    fn record(&mut self, o: &Outcome, immediate: bool) {
        self.completions += 1;
        match o.status {
            Status::SUCCESS => self.success += 1,
            Status::CANCELLED if !immediate => self.cancelled += 1,
            Status::IO_TIMEOUT if !immediate => self.timed_out += 1,
            Status::BUFFER_TOO_SMALL | Status::QUOTA_EXCEEDED | Status::CANCELLED if immediate => self.rejected += 1,
            _ => self.odd.push(o.to_string()),
        }
    }

    fn add(&mut self, other: &Tally) {
        self.issued += other.issued;
        self.completions += other.completions;
        self.success += other.success;
        self.cancelled += other.cancelled;
        self.timed_out += other.timed_out;
        self.rejected += other.rejected;
        self.odd.extend(other.odd.iter().cloned());
        self.without_cancel_io_ex |= other.without_cancel_io_ex;
    }
}

/// One stress thread: its own handle (reopened after each close), up to 8 reads in
/// flight, random cancels and closes.
fn stress_worker(device: u32, seed: u64, reads: u32, wait_ms: u32) -> Result<Tally, String> {
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let mut outstanding: Vec<Io> = Vec::new();
    let mut to_issue = reads;
    let close_and_collect = |h: Device, outstanding: &mut Vec<Io>, tally: &mut Tally| -> Result<(), String> {
        h.close().map_err(|f| f.0)?;
        for mut io in outstanding.drain(..) {
            let o = io.wait(wait_ms).ok_or("stress: a read did not complete after CloseHandle")?;
            tally.record(&o, false);
        }
        Ok(())
    };
    while to_issue > 0 {
        let h = win::open(device, "", true).map_err(|s| format!("stress: CreateFile: {s}"))?;
        loop {
            if to_issue == 0 {
                break;
            }
            let roll = rng.below(100);
            if roll < 55 && outstanding.len() < 8 {
                let length = if rng.chance(5) { RECORD_SIZE - 1 } else { RECORD_SIZE * (1 + rng.below(4)) };
                to_issue -= 1;
                tally.issued += 1;
                match h.read(length).map_err(|f| f.0)? {
                    Read::Done(o) => tally.record(&o, true),
                    Read::Pending(io) => outstanding.push(io),
                }
            } else if roll < 65 && !outstanding.is_empty() {
                let pick = rng.below(outstanding.len());
                if let CancelEx::Unavailable(_) = h.cancel_io_ex(outstanding.get(pick)).map_err(|f| f.0)? {
                    tally.without_cancel_io_ex = true;
                    h.cancel_io().map_err(|f| f.0)?;
                }
            } else if roll < 68 && !outstanding.is_empty() {
                h.cancel_io().map_err(|f| f.0)?;
            } else if roll < 72 {
                break;
            } else if roll < 90 {
                let mut still = Vec::new();
                for mut io in outstanding.drain(..) {
                    match io.poll() {
                        Some(o) => tally.record(&o, false),
                        None => still.push(io),
                    }
                }
                outstanding = still;
            } else if let Some(io) = outstanding.first_mut()
                && let Some(o) = io.wait(200)
            {
                tally.record(&o, false);
                outstanding.remove(0);
            }
        }
        close_and_collect(h, &mut outstanding, &mut tally)?;
    }
    Ok(tally)
}

fn stress(s: &Settings) -> Res {
    let devices = [0u32, 1];
    let mut watch = Vec::new();
    let mut before = Vec::new();
    for d in devices {
        let h = open(d, true)?;
        before.push(stats(h)?);
        watch.push(h);
    }
    let workers: Vec<_> = (0..s.threads)
        .map(|i| {
            let (device, seed, reads, wait_ms) =
                (devices[i % devices.len()], s.seed.wrapping_mul(1000).wrapping_add(i as u64), s.reads, s.wait_ms);
            win::spawn(move || stress_worker(device, seed, reads, wait_ms))
        })
        .collect::<Result<_, _>>()?;
    let mut t = Tally::default();
    for w in workers {
        t.add(&w.join(120_000)?.map_err(Problem::Fail)?);
    }
    let mut delta = Stats::default();
    for (h, b) in watch.iter().zip(&before) {
        let after = stats(*h)?;
        balanced(&after)?;
        ensure!(
            after.reads_pending == b.reads_pending,
            "{} read(s) left pending",
            after.reads_pending - b.reads_pending
        );
        delta.reads_received += after.reads_received - b.reads_received;
        delta.reads_completed += after.reads_completed - b.reads_completed;
        delta.reads_cancelled += after.reads_cancelled - b.reads_cancelled;
        delta.reads_timed_out += after.reads_timed_out - b.reads_timed_out;
        delta.reads_rejected += after.reads_rejected - b.reads_rejected;
        h.close()?;
    }
    let planned = s.threads as u64 * u64::from(s.reads);
    ensure!(t.odd.is_empty(), "unexpected endings: {:?}", t.odd);
    ensure!(t.issued == planned, "issued {} reads, planned {planned}", t.issued);
    ensure!(t.completions == t.issued, "{} reads issued but {} completions seen", t.issued, t.completions);
    let app = (t.issued, t.success, t.cancelled, t.timed_out, t.rejected);
    let driver = (
        delta.reads_received,
        delta.reads_completed,
        delta.reads_cancelled,
        delta.reads_timed_out,
        delta.reads_rejected,
    );
    ensure!(
        app == driver,
        "app (issued, completed, cancelled, timed out, rejected) = {app:?} but driver counted {driver:?}"
    );
    let note = if t.without_cancel_io_ex { "; CancelIoEx unavailable: CancelIo used in its place" } else { "" };
    Ok(format!(
        "{} threads x {} reads: each of {} completed once ({} with records, {} cancelled, {} timed out, {} rejected); driver counters agree and balance{note}",
        s.threads, s.reads, t.issued, t.success, t.cancelled, t.timed_out, t.rejected
    ))
}

/// Runs the selected scenarios, each on its own thread with a time limit, printing
/// `RUN`, then `PASS`/`SKIP`/`FAIL` lines and a summary. Returns the number that failed
/// (a scenario past its time limit stops the run: the driver's state is then unknown).
pub fn run_all(only: &[String], settings: Settings, timeout_s: u32) -> u32 {
    let selected: Vec<&Scenario> =
        ALL.iter().filter(|sc| only.is_empty() || only.iter().any(|n| n == sc.name)).collect();
    for name in only {
        if !ALL.iter().any(|sc| sc.name == name) {
            say!("FAIL {name}: no such scenario");
            return 1;
        }
    }
    let (mut passed, mut skipped, mut failed) = (0u32, 0u32, 0u32);
    for (i, sc) in selected.iter().enumerate() {
        say!("RUN {}: {}", sc.name, sc.about);
        let run = sc.run;
        let start = win::tick_ms();
        let outcome = win::spawn(move || run(&settings)).and_then(|t| t.join(timeout_s.saturating_mul(1000)));
        let took = f64::from(win::tick_ms().wrapping_sub(start)) / 1000.0;
        match outcome {
            Ok(Ok(detail)) => {
                passed += 1;
                say!("PASS {} ({took:.1}s): {detail}", sc.name);
            }
            Ok(Err(Problem::Skip(why))) => {
                skipped += 1;
                say!("SKIP {}: {why}", sc.name);
            }
            Ok(Err(Problem::Fail(why))) => {
                failed += 1;
                say!("FAIL {} ({took:.1}s): {why}", sc.name);
            }
            Err(Fail(why)) => {
                failed += 1;
                say!(
                    "FAIL {}: did not finish within {timeout_s} s ({why}); the remaining scenarios are not run",
                    sc.name
                );
                for rest in &selected[i + 1..] {
                    say!("NOTRUN {}", rest.name);
                }
                break;
            }
        }
    }
    say!("summary: {passed} passed, {skipped} skipped, {failed} failed");
    failed
}

/// Boxed so the list of scenarios can be printed by `--list` without running anything.
pub fn list() -> Box<[(&'static str, &'static str)]> {
    ALL.iter().map(|s| (s.name, s.about)).collect()
}
