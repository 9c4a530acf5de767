//! The hardware-profile scenario that schedule exploration runs (and the
//! `disconnect_before_dpc_flush` mutant test reuses): device interrupts, on both
//! processors, race reads, handle closes and the whole of Unload, so the ISR's DPC can
//! be queued or running while stage 1 tears the interrupt path down.

use super::*;
use ntsim::{Config, Failure, Machine, Value};

/// The device: its bus address and bus interrupt line.
const BASE_LOW: u32 = 0xFED0_0000;
pub const BASE: u64 = BASE_LOW as u64;
pub const IRQ: u32 = 5;
const STATUS: usize = 0;
const DATA: usize = 1;
const CHANNEL: usize = 3;

/// A sample for device `channel`, and its interrupt.
fn post_sample(machine: &Machine, channel: u32, value: u32) {
    machine.post_interrupt(&[(BASE, DATA, value), (BASE, CHANNEL, channel), (BASE, STATUS, 1)], IRQ);
}

/// Runs the scenario once on a machine built from `config`; `Err` says what went wrong.
pub fn interrupts_during_unload(config: Config) -> Result<(), Failure> {
    let machine = Machine::new(config);
    for (name, value) in
        [("SamplePeriodMs", 10), ("InterruptVector", IRQ), ("InterruptLevel", IRQ), ("RegisterBaseLow", BASE_LOW)]
    {
        machine.registry().set(&parameters_key(), name, &Value::Dword(value));
    }
    machine.add_register_window(BASE, 4);
    let (driver, status) = machine.load_driver("stagedrv", stagedrv::driver_entry)?;
    if status != 0 {
        return Err(format!("DriverEntry failed: {status:#x}").into());
    }
    let process = machine.new_process();
    let (t0, t1) = (process.thread(0), process.thread(1));
    let opened = |device| {
        process.open(&format!(r"\\.\StageDrv{device}"), true)?.map_err(|s| Failure::from(format!("open: {s:#x}")))
    };
    let (h0, h1) = (opened(0)?, opened(1)?);

    // Round 1: interrupts race reads and a producer tick (its 10 ms rounded up to the
    // first clock tick).
    machine.tick(ntsim::DEFAULT_TIME_INCREMENT);
    let mut reads = vec![t0.post_read(h0, RECORD_SIZE), t1.post_read(h1, RECORD_SIZE)];
    for value in 0..3 {
        post_sample(&machine, value % 2, value);
    }
    machine.advance_ms(20)?;

    // Round 2: interrupts keep coming while the handles close and `sc stop` runs
    // Unload, interrupt path first.
    reads.extend([t0.post_read(h0, RECORD_SIZE), t1.post_read(h1, RECORD_SIZE)]);
    post_sample(&machine, 0, 10);
    t0.post_close(h0);
    post_sample(&machine, 1, 11);
    t1.post_close(h1);
    machine.post_stop_driver(driver);
    for value in 12..16 {
        post_sample(&machine, value % 2, value);
    }
    machine.advance_ms(200)?;
    machine.wait_unloaded(driver)?;
    machine.verdict()?;
    for (n, read) in reads.iter().enumerate() {
        if read.completion().is_none() {
            return Err(format!("read #{n} was never completed").into());
        }
    }
    Ok(())
}
