//! The scenarios, written once against [`Client`].
//!
//! The driver's producer adds one record per tick (100 ms by default) and a read that
//! finds records completes at once, so a scenario that needs reads to *stay* pending
//! first drains the ring ([`drain`]). On real Windows and under Wine a tick can still
//! land between the drain and the cancel or close under test; a read may then finish
//! with a record instead of being cancelled. Scenarios accept that (each read must end
//! exactly once, cancelled or with whole records) but require at least one cancel, and
//! they cross-check the driver's own counters. In ntsim time only moves while a
//! scenario waits, so there every read under test is cancelled.

use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{ChildEnd, Client, Fail, H, Io, Kind, Outcome, Read, Tid, Worker};
use crate::protocol::{IOCTL_STAGEDRV_GET_STATS, RECORD_SIZE, Stats};
use crate::rng::Rng;

/// A read big enough to empty a device's ring (RingCapacity is 256 by default).
pub const DRAIN_BYTES: usize = 1024 * RECORD_SIZE;
/// How long any single request may take to complete once it should.
const WAIT_MS: u64 = 10_000;
/// An IOCTL code of the driver's device type that the driver does not know.
const UNKNOWN_IOCTL: u32 = 0x8337_2000;

/// Why a scenario did not pass.
pub enum Problem {
    Fail(String),
    Skip(String),
}

impl From<Fail> for Problem {
    fn from(f: Fail) -> Self {
        Problem::Fail(f.0)
    }
}

/// A scenario's result: the detail line of a pass, or why not.
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

/// Knobs from the command line.
pub struct Settings {
    pub threads: usize,
    pub reads: u32,
    pub seed: u64,
    pub progress: bool,
    /// Running under Wine (Win32 backend).
    pub wine: bool,
    /// Wall-clock limit per scenario.
    pub timeout: std::time::Duration,
    pub json: bool,
}

pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    /// Why Wine cannot run it, if it cannot.
    pub wine_skip: Option<&'static str>,
    pub run: fn(&mut dyn Client, &Settings) -> Res,
}

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "basic-read",
        about: "synchronous and overlapped ReadFile return whole records in sequence",
        wine_skip: None,
        run: basic_read,
    },
    Scenario {
        name: "zero-length-read",
        about: "ReadFile of 0 bytes succeeds with 0 bytes",
        wine_skip: None,
        run: zero_length_read,
    },
    Scenario {
        name: "short-buffer",
        about: "a read shorter than one record (24 bytes) and a short stats buffer fail with STATUS_BUFFER_TOO_SMALL",
        wine_skip: None,
        run: short_buffer,
    },
    Scenario {
        name: "unknown-ioctl",
        about: "an IOCTL the driver does not know fails with STATUS_INVALID_DEVICE_REQUEST",
        wine_skip: None,
        run: unknown_ioctl,
    },
    Scenario {
        name: "sub-path-open",
        about: r"CreateFile(\\.\StageDrv0\x) is refused: the device has no namespace",
        wine_skip: None,
        run: sub_path_open,
    },
    Scenario {
        name: "close-pending",
        about: "CloseHandle with reads pending cancels them (STATUS_CANCELLED)",
        wine_skip: None,
        run: close_pending,
    },
    Scenario {
        name: "duplicate-handle",
        about: "closing one of two handles to a file object leaves its reads pending; closing the last cancels them",
        wine_skip: None,
        run: duplicate_handle,
    },
    Scenario {
        name: "cancel-io",
        about: "CancelIo cancels the calling thread's reads on the handle, not another thread's",
        wine_skip: None,
        run: cancel_io,
    },
    Scenario {
        name: "cancel-io-ex",
        about: "CancelIoEx with an OVERLAPPED cancels exactly that read",
        wine_skip: None,
        run: cancel_io_ex,
    },
    Scenario {
        name: "two-handles",
        about: "closing one handle cancels its reads; the other handle's read still gets a record",
        wine_skip: None,
        run: two_handles,
    },
    Scenario {
        name: "thread-exit",
        about: "a thread that exits with reads pending has them cancelled; other threads' reads stay",
        wine_skip: None,
        run: thread_exit,
    },
    Scenario {
        name: "process-kill",
        about: "a child process killed (TerminateProcess) with reads pending: all cancelled, nothing left",
        wine_skip: None,
        run: process_kill,
    },
    Scenario {
        name: "process-exit",
        about: "a child process that exits (ExitProcess) with reads pending: all cancelled, nothing left",
        wine_skip: None,
        run: process_exit,
    },
    Scenario {
        name: "watchdog-timeout",
        about: "reads older than ReadTimeoutSeconds complete with STATUS_IO_TIMEOUT (the IoTimer watchdog)",
        wine_skip: Some(
            "Wine has no IoTimer (IoInitializeTimer returns STATUS_NOT_IMPLEMENTED): the driver runs without its watchdog",
        ),
        run: watchdog_timeout,
    },
    Scenario {
        name: "stress",
        about: "N threads x M reads with random CancelIo/CancelIoEx/CloseHandle; the driver's counters must balance",
        wine_skip: None,
        run: stress,
    },
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

// --- helpers ---------------------------------------------------------------------------

fn open(c: &mut dyn Client, on: Tid, device: u32, overlapped: bool) -> Result<H, Problem> {
    match c.open(on, device, "", overlapped)? {
        Ok(h) => Ok(h),
        Err(status) => Err(Problem::Fail(crate::client::open_failed(device, status))),
    }
}

/// IOCTL_STAGEDRV_GET_STATS, decoded field by field (little-endian u64s, in order).
fn stats(c: &mut dyn Client, h: H) -> Result<Stats, Problem> {
    let o = c.ioctl(0, h, IOCTL_STAGEDRV_GET_STATS, &[], size_of::<Stats>())?;
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

fn wait(c: &mut dyn Client, io: Io) -> Result<Outcome, Problem> {
    match c.wait(io, WAIT_MS)? {
        Some(o) => Ok(o),
        None => fail!("a read did not complete within {} s", WAIT_MS / 1000),
    }
}

/// Empties the device's ring through `h` (overlapped), so that the next reads pend.
fn drain(c: &mut dyn Client, h: H) -> Result<(), Problem> {
    match c.read(0, h, DRAIN_BYTES)? {
        Read::Done(o) => ensure!(o.ok(), "draining read: {o}"),
        Read::Pending(io) => {
            // The ring was empty already: take the read back.
            c.cancel_io_ex(0, h, Some(io))?;
            let o = wait(c, io)?;
            ensure!(o.ok() || o.status.is(Kind::Cancelled), "draining read: {o}");
        }
    }
    Ok(())
}

/// `n` one-record reads on `h` from thread `on` that pend. A read that completes at
/// once (a record arrived since the drain) is fine and not counted.
fn pend(c: &mut dyn Client, on: Tid, h: H, n: usize) -> Result<Vec<Io>, Problem> {
    let mut ios = Vec::new();
    let mut tries = 0;
    while ios.len() < n {
        tries += 1;
        ensure!(tries <= n + 20, "reads keep completing at once: could not get {n} pending");
        match c.read(on, h, RECORD_SIZE)? {
            Read::Pending(io) => ios.push(io),
            Read::Done(o) => ensure!(o.ok(), "ReadFile failed at once: {o}"),
        }
    }
    Ok(ios)
}

/// Waits for each read and checks it ended cancelled, or with whole records (a
/// producer tick got there first). Returns (cancelled, with records, the cancel status
/// as the caller saw it).
fn cancelled_or_data(c: &mut dyn Client, ios: &[Io], what: &str) -> Result<(usize, usize, String), Problem> {
    let (mut cancelled, mut data, mut name) = (0, 0, String::new());
    for (i, &io) in ios.iter().enumerate() {
        let Some(o) = c.wait(io, WAIT_MS)? else {
            fail!("{what}: read {} of {} did not complete within {} s", i + 1, ios.len(), WAIT_MS / 1000)
        };
        if o.status.is(Kind::Cancelled) {
            cancelled += 1;
            name = o.status.to_string();
        } else if o.ok() && o.bytes > 0 && o.bytes % RECORD_SIZE == 0 {
            data += 1;
        } else {
            fail!("{what}: a read ended with {o}; expected cancelled (or whole records)");
        }
    }
    ensure!(cancelled > 0, "{what}: no read was cancelled ({data} got records first)");
    Ok((cancelled, data, name))
}

/// Waits for each read: it must end cancelled or with whole records (no cancel
/// required: for clean-up at the end of a scenario).
fn ended(c: &mut dyn Client, ios: &[Io], what: &str) -> Result<(), Problem> {
    for &io in ios {
        let o = wait(c, io)?;
        let fine = o.status.is(Kind::Cancelled) || (o.ok() && o.bytes > 0 && o.bytes % RECORD_SIZE == 0);
        ensure!(fine, "{what}: a read ended with {o}");
    }
    Ok(())
}

/// Checks that none of `ios` was cancelled (they may have received records). Returns
/// how many are still pending.
fn not_cancelled(c: &mut dyn Client, ios: &[Io], what: &str) -> Result<usize, Problem> {
    let mut pending = 0;
    for &io in ios {
        match c.poll(io)? {
            None => pending += 1,
            Some(o) if o.ok() && o.bytes > 0 => {}
            Some(o) => fail!("{what}: a read that should still be pending ended with {o}"),
        }
    }
    Ok(pending)
}

fn records(data: &[u8]) -> Vec<(u64, u64)> {
    data.chunks_exact(RECORD_SIZE)
        .map(|r| {
            let word = |at: usize| u64::from_le_bytes(r[at..at + 8].try_into().unwrap_or([0; 8]));
            (word(0), word(16))
        })
        .collect()
}

fn extra(data: usize) -> String {
    if data == 0 { String::new() } else { format!(" ({data} got a record first)") }
}

// --- scenarios -----------------------------------------------------------------------------

fn basic_read(c: &mut dyn Client, _: &Settings) -> Res {
    let h = open(c, 0, 0, false)?;
    let o = match c.read(0, h, 4 * RECORD_SIZE)? {
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
    let s = stats(c, h)?;
    balanced(&s)?;
    ensure!(s.reads_completed >= 1, "the driver counted no completed read: {s:?}");
    c.close(0, h)?;

    let h1 = open(c, 0, 1, true)?;
    let o1 = match c.read(0, h1, RECORD_SIZE)? {
        Read::Done(o) => o,
        Read::Pending(io) => wait(c, io)?,
    };
    ensure!(o1.ok() && o1.bytes == RECORD_SIZE, "overlapped ReadFile on StageDrv1: {o1}");
    let r1 = records(&o1.data);
    ensure!(r1.iter().all(|r| r.1 >> 56 == 1), "StageDrv1's sample carries another device index: {r1:?}");
    c.close(0, h1)?;
    let (first, last) = (recs[0].0, recs[recs.len() - 1].0);
    Ok(format!(
        "synchronous read: {} record(s), sequence {first}..={last}; overlapped read on StageDrv1: 1 record",
        recs.len()
    ))
}

fn zero_length_read(c: &mut dyn Client, _: &Settings) -> Res {
    let h = open(c, 0, 0, true)?;
    let s0 = stats(c, h)?;
    let o = match c.read(0, h, 0)? {
        Read::Done(o) => o,
        Read::Pending(io) => wait(c, io)?,
    };
    ensure!(o.ok() && o.bytes == 0, "zero-length ReadFile: {o}; expected success with 0 bytes");
    let s1 = stats(c, h)?;
    balanced(&s1)?;
    c.close(0, h)?;
    let seen = s1.reads_received - s0.reads_received;
    Ok(format!(
        "success, 0 bytes ({})",
        if seen == 1 { "the driver completed it" } else { "answered before it reached the driver" }
    ))
}

fn short_buffer(c: &mut dyn Client, _: &Settings) -> Res {
    let h = open(c, 0, 0, true)?;
    let s0 = stats(c, h)?;
    let o = match c.read(0, h, RECORD_SIZE - 1)? {
        Read::Done(o) => o,
        Read::Pending(io) => wait(c, io)?,
    };
    ensure!(
        o.status.is(Kind::BufferTooSmall),
        "ReadFile of {} bytes: {o}; expected STATUS_BUFFER_TOO_SMALL",
        RECORD_SIZE - 1
    );
    let small = c.ioctl(0, h, IOCTL_STAGEDRV_GET_STATS, &[], 8)?;
    ensure!(
        small.status.is(Kind::BufferTooSmall),
        "IOCTL_STAGEDRV_GET_STATS with 8 bytes of output: {small}; expected STATUS_BUFFER_TOO_SMALL"
    );
    let s1 = stats(c, h)?;
    balanced(&s1)?;
    ensure!(s1.reads_rejected - s0.reads_rejected == 1, "the driver did not count the short read as rejected: {s1:?}");
    c.close(0, h)?;
    Ok(format!("{}-byte read: {}; 8-byte stats buffer: {}", RECORD_SIZE - 1, o.status, small.status))
}

fn unknown_ioctl(c: &mut dyn Client, _: &Settings) -> Res {
    let h = open(c, 0, 0, true)?;
    let o = c.ioctl(0, h, UNKNOWN_IOCTL, &[1, 2, 3], 16)?;
    c.close(0, h)?;
    ensure!(
        o.status.is(Kind::InvalidDeviceRequest),
        "IOCTL {UNKNOWN_IOCTL:#x}: {o}; expected STATUS_INVALID_DEVICE_REQUEST"
    );
    ensure!(o.bytes == 0, "IOCTL {UNKNOWN_IOCTL:#x} failed but reported {} bytes", o.bytes);
    Ok(format!("IOCTL {UNKNOWN_IOCTL:#x}: {}", o.status))
}

fn sub_path_open(c: &mut dyn Client, s: &Settings) -> Res {
    let wine = s.wine;
    // The device itself must open, or a refusal below proves nothing.
    let h = open(c, 0, 0, true)?;
    c.close(0, h)?;
    match c.open(0, 0, r"\x", true)? {
        Ok(h) => {
            c.close(0, h)?;
            fail!(r"CreateFile(\\.\StageDrv0\x) succeeded; the driver must refuse names below the device")
        }
        Err(status) if status.is(Kind::PathNotFound) => Ok(format!(r"CreateFile(\\.\StageDrv0\x): {status}")),
        // Wine's object manager has no names below a device: it answers the open itself,
        // so the driver's own check (IRP_MJ_CREATE with a FileName) is never reached.
        Err(status) if wine && status.is(Kind::NoSuchDevice) => Err(Problem::Skip(format!(
            r"Wine refuses CreateFile(\\.\StageDrv0\x) itself ({status}) before any IRP_MJ_CREATE: the driver's check is not reached"
        ))),
        Err(status) => {
            fail!(r"CreateFile(\\.\StageDrv0\x) refused with {status}; expected STATUS_OBJECT_PATH_NOT_FOUND")
        }
    }
}

fn close_pending(c: &mut dyn Client, _: &Settings) -> Res {
    let watch = open(c, 0, 0, true)?;
    drain(c, watch)?;
    let s0 = stats(c, watch)?;
    let h = open(c, 0, 0, true)?;
    let ios = pend(c, 0, h, 5)?;
    c.close(0, h)?;
    let (cancelled, data, name) = cancelled_or_data(c, &ios, "after CloseHandle")?;
    let s1 = stats(c, watch)?;
    balanced(&s1)?;
    ensure!(
        s1.reads_cancelled - s0.reads_cancelled == cancelled as u64,
        "the app saw {cancelled} cancelled reads, the driver counted {}",
        s1.reads_cancelled - s0.reads_cancelled
    );
    ensure!(s1.reads_pending == s0.reads_pending, "reads left pending in the driver: {s1:?}");
    c.close(0, watch)?;
    Ok(format!("5 pending reads, CloseHandle: {cancelled} x {name}{}", extra(data)))
}

fn duplicate_handle(c: &mut dyn Client, _: &Settings) -> Res {
    let h = open(c, 0, 0, true)?;
    drain(c, h)?;
    let dup = c.duplicate(0, h)?;
    let ios = pend(c, 0, h, 3)?;
    c.close(0, h)?;
    c.sleep_ms(50)?;
    let pending = not_cancelled(c, &ios, "after closing one of two handles")?;
    c.close(0, dup)?;
    let (cancelled, data, name) = cancelled_or_data(c, &ios, "after closing the last handle")?;
    Ok(format!(
        "first CloseHandle: {pending} of 3 still pending; last CloseHandle: {cancelled} x {name}{}",
        extra(data)
    ))
}

fn cancel_io(c: &mut dyn Client, _: &Settings) -> Res {
    let h = open(c, 0, 0, true)?;
    drain(c, h)?;
    let worker = c.spawn_thread()?;
    let mine = pend(c, 0, h, 2)?;
    let theirs = pend(c, worker, h, 2)?;
    c.cancel_io(0, h)?;
    let (cancelled, data, name) = cancelled_or_data(c, &mine, "after CancelIo")?;
    let pending = not_cancelled(c, &theirs, "the other thread's reads after CancelIo")?;
    c.cancel_io(worker, h)?;
    let (cancelled2, data2, _) = cancelled_or_data(c, &theirs, "after the other thread's CancelIo")?;
    c.exit_thread(worker)?;
    c.close(0, h)?;
    Ok(format!(
        "CancelIo: {cancelled} x {name}{}, the other thread's {pending} still pending; its own CancelIo: {cancelled2} cancelled{}",
        extra(data),
        extra(data2)
    ))
}

fn cancel_io_ex(c: &mut dyn Client, _: &Settings) -> Res {
    let h = open(c, 0, 0, true)?;
    drain(c, h)?;
    let ios = pend(c, 0, h, 3)?;
    c.cancel_io_ex(0, h, Some(ios[1]))?;
    let o = wait(c, ios[1])?;
    let lucky = o.ok() && o.bytes > 0;
    ensure!(o.status.is(Kind::Cancelled) || lucky, "the read given to CancelIoEx ended with {o}");
    let others = [ios[0], ios[2]];
    let pending = not_cancelled(c, &others, "the other reads after CancelIoEx")?;
    c.cancel_io_ex(0, h, None)?;
    let (rest, _, _) = cancelled_or_data(c, &others, "after CancelIoEx(handle, NULL)")?;
    c.close(0, h)?;
    Ok(format!(
        "CancelIoEx(h, read 2): read 2 {}, reads 1 and 3 untouched ({pending} pending); CancelIoEx(h, NULL): {rest} cancelled",
        if lucky { "got a record first".to_owned() } else { o.status.to_string() }
    ))
}

fn two_handles(c: &mut dyn Client, _: &Settings) -> Res {
    let a = open(c, 0, 0, true)?;
    let b = open(c, 0, 0, true)?;
    drain(c, a)?;
    let on_a = pend(c, 0, a, 2)?;
    let on_b = pend(c, 0, b, 1)?;
    c.close(0, a)?;
    let (cancelled, data, name) = cancelled_or_data(c, &on_a, "handle A's reads after closing A")?;
    not_cancelled(c, &on_b, "handle B's read after closing A")?;
    let o = wait(c, on_b[0])?;
    ensure!(o.ok() && o.bytes == RECORD_SIZE, "handle B's read: {o}; expected one record");
    c.close(0, b)?;
    Ok(format!("close A: {cancelled} x {name}{}; B's read then got a record", extra(data)))
}

fn thread_exit(c: &mut dyn Client, s: &Settings) -> Res {
    let h = open(c, 0, 0, true)?;
    drain(c, h)?;
    let s0 = stats(c, h)?;
    let worker = c.spawn_thread()?;
    let mine = pend(c, 0, h, 1)?;
    let theirs = pend(c, worker, h, 2)?;
    c.exit_thread(worker)?;
    // The driver's side first: the exited thread's reads leave its queue (the main
    // thread's read may have been served meanwhile).
    let s1 = settle_pending(c, h, s0.reads_pending + mine.len() as u64)?;
    let driver_cancelled = s1.reads_cancelled - s0.reads_cancelled;
    // Then what the application sees.
    let (mut cancelled, mut data, mut lost, mut name) = (0u64, 0, 0u64, String::new());
    for &io in &theirs {
        match c.wait(io, if s.wine { 2_000 } else { WAIT_MS })? {
            Some(o) if o.status.is(Kind::Cancelled) => {
                cancelled += 1;
                name = o.status.to_string();
            }
            Some(o) if o.ok() && o.bytes > 0 => data += 1,
            Some(o) => fail!("a read of the exited thread ended with {o}; expected cancelled"),
            None if s.wine => lost += 1,
            None => {
                fail!("a read of the exited thread never completed (the driver counted {driver_cancelled} cancelled)")
            }
        }
    }
    ensure!(
        cancelled + lost > 0 && driver_cancelled >= cancelled + lost,
        "the driver cancelled {driver_cancelled} read(s), the app saw {cancelled} cancelled and {data} with records"
    );
    let pending = not_cancelled(c, &mine, "the main thread's read after the other thread exited")?;
    c.close(0, h)?;
    ended(c, &mine, "the main thread's read after CloseHandle")?;
    let wine_note = if lost > 0 {
        format!(
            " [Wine never reported {lost} of these completions to the app: the issuing thread was gone; the driver's counters show them cancelled]"
        )
    } else {
        String::new()
    };
    Ok(format!(
        "thread exit: {cancelled} x {name}{}; the main thread's read untouched ({pending} pending){wine_note}",
        extra(data)
    ))
}

/// Polls the stats until the driver holds at most `pending` reads (or the wait runs out).
fn settle_pending(c: &mut dyn Client, h: H, pending: u64) -> Result<Stats, Problem> {
    let mut s = stats(c, h)?;
    let mut waited = 0;
    while s.reads_pending > pending && waited < WAIT_MS {
        c.sleep_ms(20)?;
        waited += 20;
        s = stats(c, h)?;
    }
    ensure!(
        s.reads_pending <= pending,
        "the driver still holds {} pending read(s), expected at most {pending}: {s:?}",
        s.reads_pending
    );
    balanced(&s)?;
    Ok(s)
}

fn child(c: &mut dyn Client, end: ChildEnd) -> Res {
    let h = open(c, 0, 1, true)?;
    drain(c, h)?;
    let s0 = stats(c, h)?;
    let n = c.child_with_pending_reads(1, 4, end)?;
    ensure!(n >= 1, "the child could not get a read pending");
    // The system completes a dead process's requests as it tears it down.
    let mut s1 = stats(c, h)?;
    let mut waited = 0;
    while s1.reads_pending != s0.reads_pending && waited < WAIT_MS {
        c.sleep_ms(50)?;
        waited += 50;
        s1 = stats(c, h)?;
    }
    ensure!(
        s1.reads_pending == s0.reads_pending,
        "{} read(s) of the dead child are still pending in the driver after {} s",
        s1.reads_pending - s0.reads_pending,
        WAIT_MS / 1000
    );
    balanced(&s1)?;
    let cancelled = s1.reads_cancelled - s0.reads_cancelled;
    ensure!(cancelled >= 1, "the driver cancelled none of the child's reads: {s1:?}");
    c.close(0, h)?;
    let how = match end {
        ChildEnd::Killed => "killed",
        ChildEnd::Exits => "exited",
    };
    Ok(format!("child {how} with {n} read(s) pending: the driver cancelled {cancelled}, none left pending"))
}

fn process_kill(c: &mut dyn Client, _: &Settings) -> Res {
    child(c, ChildEnd::Killed)
}

fn process_exit(c: &mut dyn Client, _: &Settings) -> Res {
    child(c, ChildEnd::Exits)
}

fn watchdog_timeout(c: &mut dyn Client, _: &Settings) -> Res {
    let Some(timeout) = c.read_timeout_s().filter(|&t| t > 0) else {
        return Err(Problem::Skip(
            "ReadTimeoutSeconds is not set in the service's Parameters key: the watchdog has nothing to do".into(),
        ));
    };
    let h = open(c, 0, 1, true)?;
    drain(c, h)?;
    let s0 = stats(c, h)?;
    // More reads than the producer can serve before the timeout (one record a tick).
    let ios = pend(c, 0, h, 40)?;
    c.sleep_ms((u64::from(timeout) + 2) * 1000)?;
    let (mut served, mut timed_out) = (0usize, 0u64);
    let mut name = String::new();
    for &io in &ios {
        let o = wait(c, io)?;
        if o.status.is(Kind::IoTimeout) {
            timed_out += 1;
            name = o.status.to_string();
        } else if o.ok() && o.bytes == RECORD_SIZE {
            served += 1;
        } else {
            fail!("a read ended with {o}; expected a record or STATUS_IO_TIMEOUT");
        }
    }
    ensure!(
        timed_out > 0,
        "no read timed out {timeout} s after it was queued ({served} got records): is the watchdog running?"
    );
    let s1 = stats(c, h)?;
    balanced(&s1)?;
    ensure!(
        s1.reads_timed_out - s0.reads_timed_out == timed_out,
        "the app saw {timed_out} timeouts, the driver counted {}",
        s1.reads_timed_out - s0.reads_timed_out
    );
    c.close(0, h)?;
    Ok(format!("40 reads, timeout {timeout} s: {served} got records, {timed_out} x {name}"))
}

// --- stress ------------------------------------------------------------------------------------

/// What the app saw happen to its reads.
#[derive(Clone, Debug, Default)]
struct Tally {
    issued: u64,
    completions: u64,
    /// Completed with records (the driver's reads_completed).
    success: u64,
    cancelled: u64,
    timed_out: u64,
    /// Failed at once (the driver's reads_rejected).
    rejected: u64,
    /// Endings the driver has no counter for.
    odd: Vec<String>,
}

impl Tally {
    fn record(&mut self, o: &Outcome, immediate: bool) {
        self.completions += 1;
        match o.status.kind {
            Kind::Success => self.success += 1,
            Kind::Cancelled if !immediate => self.cancelled += 1,
            Kind::IoTimeout if !immediate => self.timed_out += 1,
            Kind::BufferTooSmall | Kind::QuotaExceeded | Kind::DeletePending | Kind::Cancelled if immediate => {
                self.rejected += 1
            }
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
    }
}

/// One stress thread: its own handle (reopened after each close), up to 8 reads in
/// flight, random cancels and closes.
struct StressWorker {
    device: u32,
    rng: Rng,
    handle: Option<H>,
    outstanding: Vec<Io>,
    to_issue: u32,
    tally: Tally,
    total: Arc<Mutex<Tally>>,
    bar: ProgressBar,
}

impl StressWorker {
    fn done(&mut self, o: &Outcome, immediate: bool) {
        self.tally.record(o, immediate);
        self.bar.inc(1);
    }

    fn close_and_collect(&mut self, c: &mut dyn Client, on: Tid, h: H) -> Result<(), Fail> {
        c.close(on, h)?;
        self.handle = None;
        for io in std::mem::take(&mut self.outstanding) {
            let o = c.wait(io, WAIT_MS)?.ok_or("stress: a read did not complete after CloseHandle")?;
            self.done(&o, false);
        }
        Ok(())
    }
}

impl Worker for StressWorker {
    fn step(&mut self, c: &mut dyn Client, on: Tid) -> Result<bool, Fail> {
        let Some(h) = self.handle else {
            if self.to_issue == 0 {
                self.total.lock().map_err(|_| "stress: tally lock")?.add(&self.tally);
                return Ok(false);
            }
            match c.open(on, self.device, "", true)? {
                Ok(h) => self.handle = Some(h),
                Err(s) => return Err(Fail(format!("stress: CreateFile: {s}"))),
            }
            return Ok(true);
        };
        if self.to_issue == 0 {
            self.close_and_collect(c, on, h)?;
            return Ok(true);
        }
        let roll = self.rng.below(100);
        if roll < 55 && self.outstanding.len() < 8 {
            // Mostly whole records; now and then a buffer too short for one.
            let length = if self.rng.chance(5) { RECORD_SIZE - 1 } else { RECORD_SIZE * (1 + self.rng.below(4)) };
            self.to_issue -= 1;
            self.tally.issued += 1;
            match c.read(on, h, length)? {
                Read::Done(o) => self.done(&o, true),
                Read::Pending(io) => self.outstanding.push(io),
            }
        } else if roll < 65 && !self.outstanding.is_empty() {
            let io = self.outstanding[self.rng.below(self.outstanding.len())];
            c.cancel_io_ex(on, h, Some(io))?;
        } else if roll < 68 && !self.outstanding.is_empty() {
            c.cancel_io(on, h)?;
        } else if roll < 72 {
            self.close_and_collect(c, on, h)?;
        } else if roll < 90 {
            let mut still = Vec::new();
            for io in std::mem::take(&mut self.outstanding) {
                match c.poll(io)? {
                    Some(o) => self.done(&o, false),
                    None => still.push(io),
                }
            }
            self.outstanding = still;
        } else if !self.outstanding.is_empty() {
            let io = self.outstanding[0];
            if let Some(o) = c.wait(io, 200)? {
                self.outstanding.remove(0);
                self.done(&o, false);
            }
        }
        Ok(true)
    }
}

fn stress(c: &mut dyn Client, s: &Settings) -> Res {
    let devices = [0u32, 1];
    let mut watch = Vec::new();
    let mut before = Vec::new();
    for d in devices {
        let h = open(c, 0, d, true)?;
        before.push(stats(c, h)?);
        watch.push(h);
    }
    let total = Arc::new(Mutex::new(Tally::default()));
    let planned = s.threads as u64 * u64::from(s.reads);
    let bar = if s.progress { ProgressBar::new(planned) } else { ProgressBar::hidden() };
    if let Ok(style) = ProgressStyle::with_template("  stress [{bar:40}] {pos}/{len} reads completed ({elapsed})") {
        bar.set_style(style.progress_chars("=> "));
    }
    let workers: Vec<Box<dyn Worker>> = (0..s.threads)
        .map(|i| {
            Box::new(StressWorker {
                device: devices[i % devices.len()],
                rng: Rng::new(s.seed.wrapping_mul(1000).wrapping_add(i as u64)),
                handle: None,
                outstanding: Vec::new(),
                to_issue: s.reads,
                tally: Tally::default(),
                total: Arc::clone(&total),
                bar: bar.clone(),
            }) as Box<dyn Worker>
        })
        .collect();
    let ran = c.run_workers(workers);
    bar.finish_and_clear();
    ran?;
    let t = total.lock().map_err(|_| Problem::Fail("stress: tally lock".into()))?.clone();
    let mut delta = Stats::default();
    for (i, &h) in watch.iter().enumerate() {
        let after = stats(c, h)?;
        balanced(&after)?;
        let b = &before[i];
        ensure!(
            after.reads_pending == b.reads_pending,
            "StageDrv{i}: {} read(s) left pending",
            after.reads_pending - b.reads_pending
        );
        delta.reads_received += after.reads_received - b.reads_received;
        delta.reads_completed += after.reads_completed - b.reads_completed;
        delta.reads_cancelled += after.reads_cancelled - b.reads_cancelled;
        delta.reads_timed_out += after.reads_timed_out - b.reads_timed_out;
        delta.reads_rejected += after.reads_rejected - b.reads_rejected;
        c.close(0, h)?;
    }
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
    Ok(format!(
        "{} threads x {} reads: each of {} completed once ({} with records, {} cancelled, {} timed out, {} rejected); driver counters agree and balance",
        s.threads, s.reads, t.issued, t.success, t.cancelled, t.timed_out, t.rejected
    ))
}
