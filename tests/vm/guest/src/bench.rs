//! Benchmarks on the real kernel (`--bench PART`, repeatable), each reported as a ratio
//! measured in one run: medians of per-round ratios, so both sides of a ratio saw the
//! same moment's load. Nothing here asserts on time.
//!
//! - `cleanup`: CloseHandle of a handle with 16 pending reads while other handles of
//!   the device hold 0 vs N pending reads;
//! - `cancel`: cancelling one read out of 10 vs N pending on the handle (CancelIoEx
//!   of that read where it exists; else CancelIo from the one thread that issued it);
//! - `throughput`: records/s through synchronous 16-record ReadFile calls with 1 and 4
//!   reader threads, each on its own handle (the producer's rate is printed beside it:
//!   on a real kernel the timer, not the read path, can be the limit); and zero-length
//!   ReadFile calls/s with 1 and 4 readers, the read path without the producer.
//!
//! Run with a slow producer for `cleanup`/`cancel` (SamplePeriodMs=60000) so no record
//! completes a read under measurement, MaxPendingReadsPerHandle >= N, and a fast one
//! (SamplePeriodMs=1, a large RingCapacity) for `throughput`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::args::Options;
use crate::protocol::RECORD_SIZE;
use crate::ratio::{median, paired_ratios};
use crate::scenarios::{DRAIN_BYTES, stats};
use crate::win::{self, AppThread, CancelEx, Device, Fail, Io, Read, Status};

fn fail(p: crate::scenarios::Problem) -> Fail {
    match p {
        crate::scenarios::Problem::Fail(m) | crate::scenarios::Problem::Skip(m) => Fail(m),
    }
}

fn open(device: u32) -> Result<Device, Fail> {
    win::open(device, "", true).map_err(|s| Fail(format!(r"CreateFile(\\.\StageDrv{device}): {s}")))
}

/// `n` pending one-record reads on `h` without events (polled), from this thread.
fn pend(h: Device, n: usize) -> Result<Vec<Io>, Fail> {
    let mut ios = Vec::with_capacity(n);
    for _ in 0..n {
        match h.read_with(RECORD_SIZE, false)? {
            Read::Pending(io) => ios.push(io),
            Read::Done(o) => return Err(Fail(format!("a read meant to pend completed at once: {o}"))),
        }
    }
    Ok(ios)
}

/// Waits for every read to end (cancelled, or with a record).
fn settle(ios: &mut [Io]) -> Result<(), Fail> {
    for io in ios {
        let o = io.wait(60_000).ok_or("a read did not complete within 60 s")?;
        if !(o.status == Status::CANCELLED || o.ok()) {
            return Err(Fail(format!("a read ended with {o}")));
        }
    }
    Ok(())
}

fn drain(h: Device) -> Result<(), Fail> {
    if let Read::Pending(mut io) = h.read(DRAIN_BYTES)? {
        h.cancel_io()?;
        io.wait(10_000).ok_or("the draining read did not come back")?;
    }
    Ok(())
}

/// One CloseHandle of a handle holding 16 pending reads, while `others` reads pend on
/// other handles of device 0. Seconds.
fn close_with_16(others: usize) -> Result<f64, Fail> {
    let mut other_handles = Vec::new();
    let mut other_reads = Vec::new();
    if others > 0 {
        let h = open(0)?;
        other_reads = pend(h, others)?;
        other_handles.push(h);
    }
    let h = open(0)?;
    let mut mine = pend(h, 16)?;
    let start = win::counter();
    h.close()?;
    let took = win::seconds(start, win::counter());
    settle(&mut mine)?;
    for h in other_handles {
        h.close()?;
    }
    settle(&mut other_reads)?;
    Ok(took)
}

/// Cancelling one read while `pending - 1` others pend on the same handle. Seconds.
fn cancel_one_of(pending: usize, use_ex: bool) -> Result<f64, Fail> {
    let h = open(0)?;
    let mut others = pend(h, pending - 1)?;
    let took = if use_ex {
        let mut one = pend(h, 1)?;
        let start = win::counter();
        let done = h.cancel_io_ex(one.first())?;
        let took = win::seconds(start, win::counter());
        if let CancelEx::Unavailable(why) = done {
            return Err(Fail(why));
        }
        settle(&mut one)?;
        took
    } else {
        // CancelIo cancels the calling thread's requests on the handle: the one read
        // is the only one its thread issued.
        let thread = AppThread::new()?;
        let took = thread.call(move || -> Result<f64, Fail> {
            let mut one = pend(h, 1)?;
            let start = win::counter();
            h.cancel_io()?;
            let took = win::seconds(start, win::counter());
            settle(&mut one)?;
            Ok(took)
        })??;
        thread.exit()?;
        took
    };
    h.close()?;
    settle(&mut others)?;
    Ok(took)
}

fn us(seconds: f64) -> f64 {
    seconds * 1e6
}

fn report(what: &str, small: &[f64], large: &[f64], n: usize) {
    let (mut a, mut b) = (small.to_vec(), large.to_vec());
    let mut r = paired_ratios(small, large);
    say!(
        "BENCH {what}: {:.1} us -> {:.1} us (medians of {} rounds), N = {n}: ratio {:.2}",
        us(median(&mut a)),
        us(median(&mut b)),
        small.len(),
        median(&mut r)
    );
}

/// With `readers` threads each on its own synchronous handle for `seconds` (tick
/// count): (records/s through 16-record reads, the producer's records/s) when
/// `length` is 16 records, or (ReadFile calls/s, 0) for zero-length reads, which the
/// driver completes at once: the read path alone, whatever the producer's rate.
fn throughput(readers: usize, seconds: u32, length: usize) -> Result<(f64, f64), Fail> {
    let watch = open(0)?;
    drain(watch)?;
    let before = stats(watch).map_err(fail)?;
    let start = win::tick_ms();
    let threads: Vec<_> = (0..readers)
        .map(|_| {
            win::spawn(move || -> Result<u64, Fail> {
                let h = win::open(0, "", false).map_err(|s| Fail(format!("CreateFile: {s}")))?;
                let mut count = 0u64;
                let begin = win::tick_ms();
                while win::tick_ms().wrapping_sub(begin) < seconds * 1000 {
                    match h.read(length)? {
                        Read::Done(o) if o.ok() && length == 0 => count += 1,
                        Read::Done(o) if o.ok() => count += (o.bytes / RECORD_SIZE) as u64,
                        Read::Done(o) => return Err(Fail(format!("ReadFile: {o}"))),
                        Read::Pending(_) => return Err("a synchronous read pended".into()),
                    }
                }
                h.close()?;
                Ok(count)
            })
        })
        .collect::<Result<_, _>>()?;
    let mut count = 0u64;
    for t in threads {
        count += t.join(seconds * 1000 + 30_000)??;
    }
    let elapsed = f64::from(win::tick_ms().wrapping_sub(start)).max(1.0) / 1000.0;
    let after = stats(watch).map_err(fail)?;
    watch.close()?;
    #[allow(clippy::cast_precision_loss)]
    let rates = (count as f64 / elapsed, (after.records_produced - before.records_produced) as f64 / elapsed);
    Ok(rates)
}

fn run_part(part: &str, o: &Options) -> Result<(), Fail> {
    let n = o.bench_pending;
    match part {
        "cleanup" => {
            let (mut small, mut large) = (Vec::new(), Vec::new());
            for _ in 0..o.bench_rounds {
                small.push(close_with_16(0)?);
                large.push(close_with_16(n)?);
            }
            report("CloseHandle with 16 pending, other handles holding 0 -> N pending", &small, &large, n);
        }
        "cancel" => {
            let use_ex = open(0).and_then(|h| {
                let mut probe = pend(h, 1)?;
                let available = matches!(h.cancel_io_ex(probe.first())?, CancelEx::Done);
                h.cancel_io()?;
                settle(&mut probe)?;
                h.close()?;
                Ok(available)
            })?;
            let how = if use_ex { "CancelIoEx of one read" } else { "CancelIo of the one read its thread issued" };
            let (mut small, mut large) = (Vec::new(), Vec::new());
            for _ in 0..o.bench_rounds {
                small.push(cancel_one_of(10, use_ex)?);
                large.push(cancel_one_of(n, use_ex)?);
            }
            report(&format!("{how}, 10 -> N pending on the handle"), &small, &large, n);
        }
        "throughput" => {
            let (one, produced1) = throughput(1, o.bench_seconds, 16 * RECORD_SIZE)?;
            let (four, produced4) = throughput(4, o.bench_seconds, 16 * RECORD_SIZE)?;
            say!(
                "BENCH records/s through ReadFile (16-record reads): 1 reader {one:.0}, 4 readers {four:.0}: ratio {:.2} (the producer made {produced1:.0} and {produced4:.0} records/s meanwhile)",
                four / one.max(1e-9)
            );
            let (one, _) = throughput(1, o.bench_seconds, 0)?;
            let (four, _) = throughput(4, o.bench_seconds, 0)?;
            say!(
                "BENCH zero-length ReadFile calls/s (completed at once by the driver): 1 reader {one:.0}, 4 readers {four:.0}: ratio {:.2}",
                four / one.max(1e-9)
            );
        }
        other => return Err(Fail(format!("unknown benchmark part {other} (cleanup, cancel, throughput)"))),
    }
    Ok(())
}

/// Runs the parts named by `--bench`; returns the exit code.
pub fn run(o: &Options) -> u32 {
    let mut failed = 0;
    for part in &o.bench {
        say!("RUN bench {part}");
        let (counter_start, tick_start) = (win::counter(), win::tick_ms());
        match run_part(part, o) {
            Ok(()) => {
                // The times above are by the performance counter; say how it kept pace
                // with the tick count (under QEMU TCG its rate is off, see README).
                let seconds = f64::from(win::tick_ms().wrapping_sub(tick_start)).max(1.0) / 1000.0;
                let by_counter = win::seconds(counter_start, win::counter());
                say!(
                    "PASS bench {part} ({seconds:.1}s; the performance counter, {} Hz, ran at {:.2}x the tick count meanwhile)",
                    win::counter_frequency(),
                    by_counter / seconds
                );
            }
            Err(Fail(why)) => {
                failed += 1;
                say!("FAIL bench {part}: {why}");
            }
        }
    }
    let parts: Vec<String> = o.bench.clone();
    say!("summary: bench {} part(s), {failed} failed", parts.len());
    u32::from(failed > 0)
}
