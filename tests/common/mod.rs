//! Shared helpers for the driver's ntsim tests.
#![allow(dead_code)]

pub mod interrupts;
pub mod scenario;

use ntsim::{Config, Driver, Handle, IoResult, Issued, Machine, Process, Value};
pub use stagedrv::protocol::{IOCTL_STAGEDRV_GET_STATS, RECORD_SIZE, Stats};

/// `\Registry\...\Services\stagedrv\Parameters`.
pub fn parameters_key() -> String {
    format!("{}\\Parameters", ntsim::service_key("stagedrv"))
}

/// A machine with `parameters` written to the service key.
pub fn machine_with(seed: u64, parameters: &[(&str, u32)]) -> Machine {
    let machine = Machine::new(Config::seeded(seed));
    for (name, value) in parameters {
        machine.registry().set(&parameters_key(), name, &Value::Dword(*value));
    }
    machine
}

pub fn load(machine: &Machine) -> Driver {
    let (driver, status) = machine.load_driver("stagedrv", stagedrv::driver_entry).expect("DriverEntry runs");
    assert_eq!(status, 0, "DriverEntry status {status:#x}");
    driver
}

pub fn open(process: &Process<'_>, device: u32) -> Handle {
    process.open(&format!(r"\\.\StageDrv{device}"), true).unwrap().expect("open")
}

/// Issues an overlapped read that must pend.
pub fn pending_read(process: &Process<'_>, handle: Handle, records: usize) -> ntsim::PendingIo {
    match process.read(handle, records * RECORD_SIZE).unwrap() {
        Issued::Pending(io) => io,
        Issued::Done(r) => panic!("read did not pend: {r:?}"),
    }
}

pub fn stats(process: &Process<'_>, handle: Handle) -> Stats {
    let result = process
        .ioctl(handle, IOCTL_STAGEDRV_GET_STATS, &[], size_of::<Stats>())
        .unwrap()
        .done()
        .expect("ioctl completes");
    assert_eq!(result.status, 0);
    // SAFETY: Stats is plain repr(C) data and the reply has exactly its size.
    unsafe { std::ptr::read_unaligned(result.data.as_ptr().cast::<Stats>()) }
}

/// Moves the clock in 1 ms steps until the device behind `handle` has produced
/// `records` records in all. Windows expires the producer's timer on clock ticks
/// (15.625 ms by default), not every period on the dot, so tests count producer ticks
/// rather than assume a time for them.
pub fn advance_until_produced(machine: &Machine, process: &Process<'_>, handle: Handle, records: u64) {
    for _ in 0..100_000 {
        if stats(process, handle).records_produced >= records {
            return;
        }
        machine.advance_ms(1).unwrap();
    }
    panic!("{records} records were never produced");
}

/// Every read accounted for exactly once.
pub fn assert_balanced(s: &Stats) {
    assert_eq!(
        s.reads_received,
        s.reads_completed + s.reads_cancelled + s.reads_timed_out + s.reads_rejected + s.reads_pending,
        "{s:?}"
    );
}

pub fn status_of(result: &IoResult) -> u32 {
    result.status as u32
}

/// Stops the driver with nothing open and checks that it unloaded clean.
pub fn unload_clean(machine: &Machine, driver: Driver) {
    assert_eq!(machine.stop_driver(driver).unwrap(), ntsim::DriverState::Unloaded);
    machine.verdict().unwrap();
}

/// The kernel calls Unload made, split into its stages. Each stage logs
/// "Unload: stage N ..." when it ends, so the calls before that line (and after the
/// previous stage's) are the stage's; "final" is what follows stage 6. DbgPrintEx
/// trace entries and debug-output lines are recorded together, so they pair up.
pub fn unload_stages(machine: &ntsim::Machine) -> Vec<(String, Vec<&'static str>)> {
    let trace = machine.trace();
    let mut lines = machine.debug_output().into_iter();
    let mut stages = vec![(String::from("stage 1"), Vec::new())];
    for call in trace.iter().filter(|c| c.routine == ntsim::trace::Routine::Unload || c.api == "DbgPrintEx") {
        if call.api == "DbgPrintEx" {
            let line = lines.next().expect("a line per DbgPrintEx");
            if call.routine != ntsim::trace::Routine::Unload {
                continue;
            }
            if let Some(rest) = line.strip_prefix("stagedrv: Unload: stage ") {
                let n: u32 = rest[..1].parse().unwrap();
                stages.last_mut().unwrap().0 = format!("stage {n}");
                stages.push((if n == 6 { "final".into() } else { format!("stage {}", n + 1) }, Vec::new()));
            }
            continue;
        }
        stages.last_mut().unwrap().1.push(call.api);
    }
    stages
}

/// Asserts that `stage` made each of `expected` calls and none of the calls that
/// belong to other stages (`elsewhere`).
pub fn assert_stage(stages: &[(String, Vec<&'static str>)], stage: &str, expected: &[&str], elsewhere: &[&str]) {
    let calls = &stages.iter().find(|(name, _)| name == stage).unwrap_or_else(|| panic!("no {stage}: {stages:?}")).1;
    for api in expected {
        assert!(calls.contains(api), "{stage} did not call {api}: {calls:?}");
    }
    for api in elsewhere {
        assert!(!calls.contains(api), "{stage} called {api}, which belongs to another stage: {calls:?}");
    }
}
