//! The hardware profile against ntsim's virtual device: register window, interrupt,
//! ISR → CustomDpc → ring, controller object, resource claim, and their release in
//! Unload stages 1–5.

mod common;

use common::*;
use ntsim::trace::Routine;

const BASE: u64 = 0xFED0_0000;
const VECTOR: u32 = 0x41;
const STATUS: usize = 0;
const DATA: usize = 1;
const CONTROL: usize = 2;
const CHANNEL: usize = 3;

fn hardware_machine(seed: u64) -> ntsim::Machine {
    let machine = machine_with(
        seed,
        &[
            ("SamplePeriodMs", 60_000),
            ("InterruptVector", VECTOR),
            ("InterruptLevel", 5),
            ("RegisterBaseLow", BASE as u32),
        ],
    );
    machine.add_register_window(BASE, 4);
    machine
}

fn sample(machine: &ntsim::Machine, channel: u32, value: u32) -> bool {
    machine.write_register(BASE, DATA, value);
    machine.write_register(BASE, CHANNEL, channel);
    machine.write_register(BASE, STATUS, 1);
    machine.raise_interrupt(VECTOR).unwrap()
}

#[test]
fn interrupt_data_reaches_a_pending_read() {
    let machine = hardware_machine(1);
    let driver = load(&machine);
    assert_eq!(machine.read_register(BASE, CONTROL), 2, "interrupts enabled at the device");
    assert_eq!(machine.resource_claims(), 1);
    let process = machine.new_process();
    let handle = open(&process, 1);
    let read = pending_read(&process, handle, 1);
    assert!(sample(&machine, 1, 0xABCD));
    assert_eq!(machine.read_register(BASE, STATUS), 0, "the ISR acknowledged the device");
    let result = read.result().expect("completed by the consumer thread");
    assert_eq!(result.status, 0);
    assert_eq!(u64::from_le_bytes(result.data[16..24].try_into().unwrap()), 0xABCD);
    assert!(!machine.raise_interrupt(VECTOR).unwrap(), "nothing pending: not our interrupt");
    let isr_calls = machine.trace().iter().filter(|c| c.routine == Routine::Isr).count();
    assert!(isr_calls >= 1);
    process.close(handle).unwrap();
    unload_clean(&machine, driver);
    assert_eq!(machine.read_register(BASE, CONTROL), 0, "disabled at the device before disconnecting");
    assert!(!machine.register_window_mapped(BASE));
    assert_eq!(machine.resource_claims(), 0);
}

#[test]
fn unload_releases_hardware_in_the_documented_stages() {
    let machine = hardware_machine(2);
    let driver = load(&machine);
    assert!(sample(&machine, 0, 7));
    unload_clean(&machine, driver);
    let calls: Vec<&'static str> =
        machine.trace().iter().filter(|c| c.routine == Routine::Unload).map(|c| c.api).collect();
    let at = |api: &str| {
        calls.iter().position(|a| *a == api).unwrap_or_else(|| panic!("{api} not called in Unload: {calls:?}"))
    };
    let order = [
        "IoDisconnectInterrupt",
        "KeRemoveQueueDpc",
        "KeFlushQueuedDpcs",
        "MmUnmapIoSpace",
        "IoReportResourceForDetection",
        "ZwDeleteKey",
        "IoDeleteDevice",
        "IoDeleteController",
    ];
    let positions: Vec<usize> = order.iter().map(|api| at(api)).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{:?}", order.iter().zip(&positions).collect::<Vec<_>>());

    let stages = unload_stages(&machine);
    let not = |keep: &[&str]| order.iter().copied().filter(|a| !keep.contains(a)).collect::<Vec<_>>();
    assert_stage(&stages, "stage 1", &["IoDisconnectInterrupt"], &not(&["IoDisconnectInterrupt"]));
    assert_stage(
        &stages,
        "stage 2",
        &["KeRemoveQueueDpc", "KeFlushQueuedDpcs"],
        &not(&["KeRemoveQueueDpc", "KeFlushQueuedDpcs"]),
    );
    assert_stage(&stages, "stage 3", &["MmUnmapIoSpace", "IoDeleteSymbolicLink"], &not(&["MmUnmapIoSpace"]));
    assert_stage(&stages, "stage 4", &[], &order);
    assert_stage(&stages, "stage 5", &["IoReportResourceForDetection"], &not(&["IoReportResourceForDetection"]));
    assert_stage(&stages, "stage 6", &["ZwDeleteKey"], &not(&["ZwDeleteKey"]));
    assert_stage(
        &stages,
        "final",
        &["IoDeleteDevice", "IoDeleteController"],
        &not(&["IoDeleteDevice", "IoDeleteController"]),
    );
}

#[test]
fn every_failure_in_the_hardware_profile_is_unwound() {
    let probe = hardware_machine(3);
    load(&probe);
    let failable = probe.faults().failable_calls();
    for nth in 1..=failable {
        let machine = hardware_machine(3);
        machine.faults().fail_nth_any(nth);
        let (driver, status) = machine.load_driver("stagedrv", stagedrv::driver_entry).unwrap();
        if status == 0 {
            unload_clean(&machine, driver);
        } else {
            machine.verdict().unwrap_or_else(|e| panic!("failing {:?}: {e}", machine.faults().injected()));
            assert!(!machine.register_window_mapped(BASE));
            assert_eq!(machine.resource_claims(), 0);
        }
    }
}
