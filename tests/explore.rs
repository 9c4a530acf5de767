//! Schedule exploration: one scenario where reads, CancelIo/CancelIoEx, CloseHandle
//! and cleanup, thread and process exit, timer DPCs on two processors, the work item,
//! the consumer thread, the watchdog and Unload all overlap, run under many seeds of
//! ntsim's serial scheduler (uniform random and PCT). Every kernel call is a
//! scheduling point. Each schedule must end with zero violations, every read
//! completed exactly once, and a clean unload.
//!
//! `STAGEDRV_SCHEDULES=N` sets how many schedules each mode explores (CI default: 1000
//! each); `STAGEDRV_SEED=S` replays one seed (both modes).

mod common;

use common::*;
use ntsim::{Config, Machine, Mode, Value};

fn config(mode: Mode) -> Config {
    Config { mode, ..Config::default() }
}

/// Runs the scenario once; `Err` carries what went wrong.
fn scenario(mode: Mode) -> Result<(), String> {
    let machine = Machine::new(config(mode));
    for (name, value) in [
        ("SamplePeriodMs", 10),
        ("ReadTimeoutSeconds", 1),
        ("StatisticsEveryTicks", 1),
        ("MaxPendingReadsPerHandle", 3),
    ] {
        machine.registry().set(&parameters_key(), name, &Value::Dword(value));
    }
    let (driver, status) = machine.load_driver("stagedrv", stagedrv::driver_entry).map_err(|e| e.to_string())?;
    if status != 0 {
        return Err(format!("DriverEntry failed: {status:#x}"));
    }
    let (p1, p2) = (machine.new_process(), machine.new_process());
    let (t0, t1, u0) = (p1.thread(0), p1.thread(1), p2.thread(0));
    let opened = |p: &ntsim::Process<'_>, device| p.open(&format!(r"\\.\StageDrv{device}"), true).map_err(|e| e.to_string())?.map_err(|s| format!("open: {s:#x}"));
    let (h1, h2, h3) = (opened(&p1, 0)?, opened(&p1, 0)?, opened(&p2, 1)?);

    let mut reads = Vec::new();
    // Round 1: reads on three threads race a timer tick on each device.
    machine.tick(10 * 10_000);
    reads.extend([t0.post_read(h1, RECORD_SIZE), t0.post_read(h1, 2 * RECORD_SIZE)]);
    reads.extend([t1.post_read(h2, RECORD_SIZE), t1.post_read(h2, RECORD_SIZE)]);
    reads.extend([u0.post_read(h3, RECORD_SIZE), u0.post_read(h3, RECORD_SIZE)]);
    t1.post_cancel_io(h2);
    machine.run_until_idle();
    machine.verdict().map_err(|e| e.to_string())?;

    // Round 2: cancels, closes, thread and process exit, and `sc stop` race the
    // producer, the consumer, the watchdog and the work item.
    machine.tick(1_000 * 10_000);
    reads.extend([t0.post_read(h1, RECORD_SIZE), t1.post_read(h2, RECORD_SIZE), u0.post_read(h3, RECORD_SIZE)]);
    t0.post_cancel_io_ex(h1);
    t1.post_close(h2);
    u0.post_exit();
    u0.post_close(h3);
    machine.post_stop_driver(driver);
    reads.push(t0.post_read(h1, RECORD_SIZE));
    t0.post_close(h1);
    machine.advance_ms(2_000).map_err(|e| e.to_string())?;
    machine.wait_unloaded(driver).map_err(|e| e.to_string())?;
    machine.verdict().map_err(|e| e.to_string())?;
    for (n, read) in reads.iter().enumerate() {
        if read.completion().is_none() {
            return Err(format!("read #{n} was never completed"));
        }
    }
    Ok(())
}

fn schedules() -> u64 {
    std::env::var("STAGEDRV_SCHEDULES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

fn explore(make_mode: impl Fn(u64) -> Mode) {
    if let Some(seed) = std::env::var("STAGEDRV_SEED").ok().and_then(|v| v.parse().ok()) {
        scenario(make_mode(seed)).unwrap_or_else(|e| panic!("{:?}: {e}", make_mode(seed)));
        return;
    }
    for seed in 0..schedules() {
        if let Err(error) = scenario(make_mode(seed)) {
            panic!("schedule {:?} failed; replay with STAGEDRV_SEED={seed} cargo test --test explore\n{error}", make_mode(seed));
        }
    }
}

#[test]
fn random_schedules() {
    explore(Mode::Seeded);
}

#[test]
fn pct_schedules() {
    explore(|seed| Mode::Pct { seed, depth: 3 });
}

/// The same scenario with the threads running for real, several times.
#[test]
fn free_running_threads() {
    for _ in 0..20 {
        scenario(Mode::Free).unwrap();
    }
}
