//! The concurrent scenario that schedule exploration runs (and the mutant tests reuse).

use super::*;
use ntsim::{Config, Failure, Machine, Mode, Value};

pub fn config(mode: Mode) -> Config {
    // A cancelled read must be completed within 100 ms of simulated time.
    Config { mode, slow_cancel: 100 * 10_000, ..Config::default() }
}

/// Runs the scenario once; `Err` carries what went wrong.
pub fn scenario(mode: Mode) -> Result<(), Failure> {
    scenario_on(config(mode))
}

/// The scenario on a machine built from `config` (for example with hostile options).
pub fn scenario_on(config: Config) -> Result<(), Failure> {
    let machine = Machine::new(config);
    for (name, value) in [
        ("SamplePeriodMs", 10),
        ("ReadTimeoutSeconds", 1),
        ("StatisticsEveryTicks", 1),
        ("MaxPendingReadsPerHandle", 3),
    ] {
        machine.registry().set(&parameters_key(), name, &Value::Dword(value));
    }
    let (driver, status) = machine.load_driver("stagedrv", stagedrv::driver_entry)?;
    if status != 0 {
        return Err(format!("DriverEntry failed: {status:#x}").into());
    }
    let (p1, p2) = (machine.new_process(), machine.new_process());
    let (t0, t1, u0) = (p1.thread(0), p1.thread(1), p2.thread(0));
    let opened = |p: &ntsim::Process<'_>, device| {
        p.open(&format!(r"\\.\StageDrv{device}"), true)?.map_err(|s| Failure::from(format!("open: {s:#x}")))
    };
    let (h1, h2, h3) = (opened(&p1, 0)?, opened(&p1, 0)?, opened(&p2, 1)?);

    let mut reads = Vec::new();
    // Round 1: reads on three threads race a timer tick on each device: the producer's
    // first expiry, its 10 ms rounded up to the first clock tick.
    machine.tick(ntsim::DEFAULT_TIME_INCREMENT);
    reads.extend([t0.post_read(h1, RECORD_SIZE), t0.post_read(h1, 2 * RECORD_SIZE)]);
    reads.extend([t1.post_read(h2, RECORD_SIZE), t1.post_read(h2, RECORD_SIZE)]);
    reads.extend([u0.post_read(h3, RECORD_SIZE), u0.post_read(h3, RECORD_SIZE)]);
    t1.post_cancel_io(h2);
    // CancelIoEx from another thread races t1's reads while they are being queued.
    t0.post_cancel_io_ex(h2);
    // Time passes (the producer ticks); a cancelled read left queued is a slow cancel.
    machine.advance_ms(150)?;

    // Round 2: cancels, closes, thread and process exit, and `sc stop` race the
    // producer, the consumer, the watchdog and the work item.
    machine.tick(1_000 * 10_000);
    reads.extend([t0.post_read(h1, RECORD_SIZE), t1.post_read(h2, RECORD_SIZE), u0.post_read(h3, RECORD_SIZE)]);
    t0.post_cancel_io_ex(h1);
    // A read on h2 from another thread races its CloseHandle (and so DispatchCleanup).
    reads.push(t0.post_read(h2, RECORD_SIZE));
    t1.post_close(h2);
    u0.post_exit();
    u0.post_close(h3);
    machine.post_stop_driver(driver);
    reads.push(t0.post_read(h1, RECORD_SIZE));
    t0.post_close(h1);
    machine.advance_ms(2_000)?;
    machine.wait_unloaded(driver)?;
    machine.verdict()?;
    for (n, read) in reads.iter().enumerate() {
        if read.completion().is_none() {
            return Err(format!("read #{n} was never completed").into());
        }
    }
    Ok(())
}
