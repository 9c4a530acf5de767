//! The hardware profile against ntsim's virtual device: raw resources translated by the
//! HAL routines (found at run time), register window, interrupt, ISR → CustomDpc →
//! ring, controller object, resource claim, and their release in Unload stages 1–5.

mod common;

use common::*;
use ntsim::trace::Routine;
use ntsim::wdk_sys::STATUS_NOT_SUPPORTED;
use ntsim::{Config, Resource};

/// The device's bus address and bus interrupt line (level and vector), as a legacy
/// driver's Parameters name them.
const BASE_LOW: u32 = 0xFED0_0000;
const BASE: u64 = BASE_LOW as u64;
const IRQ: u32 = 5;
const STATUS: usize = 0;
const DATA: usize = 1;
const CONTROL: usize = 2;
const CHANNEL: usize = 3;
const DPFLTR_ERROR_LEVEL: u32 = 0;

fn parameters(level: u32, base: u32) -> Vec<(&'static str, u32)> {
    vec![("SamplePeriodMs", 60_000), ("InterruptVector", IRQ), ("InterruptLevel", level), ("RegisterBaseLow", base)]
}

fn hardware_machine_on(config: Config, parameters: &[(&str, u32)]) -> ntsim::Machine {
    let machine = ntsim::Machine::new(config);
    for (name, value) in parameters {
        machine.registry().set(&parameters_key(), name, &ntsim::Value::Dword(*value));
    }
    machine.add_register_window(BASE, 4);
    machine
}

fn hardware_machine(seed: u64) -> ntsim::Machine {
    hardware_machine_on(Config::seeded(seed), &parameters(IRQ, BASE_LOW))
}

fn sample(machine: &ntsim::Machine, channel: u32, value: u32) -> bool {
    machine.write_register(BASE, DATA, value);
    machine.write_register(BASE, CHANNEL, channel);
    machine.write_register(BASE, STATUS, 1);
    machine.raise_interrupt(IRQ).unwrap()
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
    assert!(!machine.raise_interrupt(IRQ).unwrap(), "nothing pending: not our interrupt");
    let isr_calls = machine.trace().iter().filter(|c| c.routine == Routine::Isr).count();
    assert!(isr_calls >= 1);
    process.close(handle).unwrap();
    unload_clean(&machine, driver);
    assert_eq!(machine.read_register(BASE, CONTROL), 0, "disabled at the device before disconnecting");
    assert!(!machine.register_window_mapped(BASE));
    assert_eq!(machine.resource_claims(), 0);
}

#[test]
fn the_claim_is_raw_and_the_connection_and_mapping_are_translated() {
    let machine = hardware_machine(4);
    let driver = load(&machine);
    assert_eq!(
        machine.claimed_resources(),
        vec![vec![
            Resource::Memory { start: BASE, length: 16 },
            Resource::Interrupt { level: IRQ, vector: IRQ, affinity: u64::MAX },
        ]],
        "IoReportResourceForDetection takes the bus-relative resources"
    );
    let vector = ntsim::hal::vector_of_line(IRQ).unwrap();
    assert_ne!(vector, IRQ, "ntsim's HAL translates the vector");
    assert_eq!(
        machine.connected_interrupts(),
        vec![(vector, ntsim::hal::irql_of_vector(vector), 0b11)],
        "IoConnectInterrupt takes HalGetInterruptVector's vector, IRQL and affinity"
    );
    assert!(machine.register_window_mapped(BASE), "MmMapIoSpace of HalTranslateBusAddress's address");
    let entry: Vec<&str> =
        machine.trace().iter().filter(|c| c.routine == Routine::DriverEntry).map(|c| c.api).collect();
    let at = |api: &str| entry.iter().position(|a| *a == api).unwrap_or_else(|| panic!("no {api}: {entry:?}"));
    assert!(at("HalTranslateBusAddress") < at("IoReportResourceForDetection"));
    assert!(at("HalGetInterruptVector") < at("IoReportResourceForDetection"));
    assert!(at("IoReportResourceForDetection") < at("MmMapIoSpace"), "the window is claimed before it is mapped");
    unload_clean(&machine, driver);
}

#[test]
fn unload_releases_hardware_in_the_documented_stages() {
    let machine = hardware_machine(2);
    let driver = load(&machine);
    assert!(sample(&machine, 0, 7));
    unload_clean(&machine, driver);
    let stages = unload_stages(&machine);
    let stage = |name: &str| stages.iter().find(|(n, _)| n == name).map(|(_, c)| c.clone()).unwrap();

    // Stage 1, in this order: quiet and mark under the interrupt lock, remove and flush
    // the ISR's DPC, and only then disconnect (which frees the interrupt object).
    let interrupt_path = ["KeSynchronizeExecution", "KeRemoveQueueDpc", "KeFlushQueuedDpcs", "IoDisconnectInterrupt"];
    let first: Vec<&str> = stage("stage 1").into_iter().filter(|api| interrupt_path.contains(api)).collect();
    assert_eq!(first, interrupt_path, "stage 1 order");

    let hardware = [
        "KeSynchronizeExecution",
        "KeRemoveQueueDpc",
        "IoDisconnectInterrupt",
        "MmUnmapIoSpace",
        "IoReportResourceForDetection",
        "ZwDeleteKey",
        "IoDeleteDevice",
        "IoDeleteController",
    ];
    let not = |keep: &[&str]| hardware.iter().copied().filter(|a| !keep.contains(a)).collect::<Vec<_>>();
    assert_stage(&stages, "stage 2", &["KeFlushQueuedDpcs"], &hardware);
    assert_stage(&stages, "stage 3", &["MmUnmapIoSpace", "IoDeleteSymbolicLink"], &not(&["MmUnmapIoSpace"]));
    assert_stage(&stages, "stage 4", &[], &hardware);
    assert_stage(&stages, "stage 5", &["IoReportResourceForDetection"], &not(&["IoReportResourceForDetection"]));
    assert_stage(&stages, "stage 6", &["ZwDeleteKey"], &not(&["ZwDeleteKey"]));
    assert_stage(
        &stages,
        "final",
        &["IoDeleteDevice", "IoDeleteController"],
        &not(&["IoDeleteDevice", "IoDeleteController"]),
    );
}

/// Loads with the profile refused; returns the error lines about the profile (the
/// other is DriverEntry's own "failed with").
fn refused(machine: &ntsim::Machine) -> Vec<String> {
    let (_, status) = machine.load_driver("stagedrv", stagedrv::driver_entry).unwrap();
    assert_eq!(status, STATUS_NOT_SUPPORTED);
    machine.verdict().unwrap();
    assert_eq!(machine.resource_claims(), 0);
    assert!(!machine.register_window_mapped(BASE));
    assert!(machine.connected_interrupts().is_empty());
    let errors = machine.debug_output_at(DPFLTR_ERROR_LEVEL);
    assert!(
        errors.iter().any(|l| l.contains("DriverEntry: failed with STATUS_NOT_SUPPORTED (0xc00000bb)")),
        "{errors:?}"
    );
    errors.into_iter().filter(|l| l.contains("hardware profile")).collect()
}

#[test]
fn without_the_hal_routines_the_profile_is_refused_and_the_image_loads() {
    for missing in ["HalGetInterruptVector", "HalTranslateBusAddress"] {
        let config = Config { missing_exports: vec![missing.to_owned()], ..Config::seeded(5) };
        let machine = hardware_machine_on(config, &parameters(IRQ, BASE_LOW));
        let errors = refused(&machine);
        assert_eq!(errors.len(), 1, "{missing}: one clear line: {errors:?}");
        assert!(errors[0].contains("hardware profile refused") && errors[0].contains(missing), "{errors:?}");
        let calls: Vec<&str> = machine.trace().iter().map(|c| c.api).collect();
        assert!(!calls.contains(&"HalGetInterruptVector") && !calls.contains(&"HalTranslateBusAddress"));
        assert!(!calls.contains(&"IoCreateController") && !calls.contains(&"IoReportResourceForDetection"));
    }
}

#[test]
fn a_line_the_hal_gives_no_vector_for_is_refused() {
    let line = ntsim::hal::LINES + 6;
    assert_eq!(ntsim::hal::vector_of_line(line), None);
    let machine = hardware_machine_on(Config::seeded(6), &parameters(line, BASE_LOW));
    let errors = refused(&machine);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("HalGetInterruptVector gives no usable vector"), "{errors:?}");
}

#[test]
fn a_bus_address_the_hal_cannot_translate_is_refused() {
    let machine = hardware_machine_on(Config::seeded(7), &parameters(IRQ, BASE_LOW + 0x10_0000));
    let errors = refused(&machine);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("HalTranslateBusAddress gives no memory address"), "{errors:?}");
}

/// Stage 5's release (the first IoReportResourceForDetection after loading) fails: the
/// claim stays, the driver logs an error, and ntsim's unload check sees the claim left.
#[test]
fn a_failed_release_of_the_claim_is_an_error() {
    let machine = hardware_machine(8);
    let driver = load(&machine);
    machine.faults().fail_nth("IoReportResourceForDetection", 1);
    let verdict = machine.stop_driver(driver).expect_err("the claim is left behind");
    let ntsim::Stopped::BugCheck(v) = verdict else { panic!("{verdict}") };
    // ntsim's own unload check (Windows leaves the claim without a bug check).
    let kind = ntsim::checker::unload::RESOURCE_CLAIM;
    assert_eq!((v.code, v.params), (ntsim::checker::code::NTSIM_UNLOAD_LEAK, [kind, 0, 0, 0]), "{v}");
    let errors = machine.debug_output_at(DPFLTR_ERROR_LEVEL);
    assert!(errors.iter().any(|l| l.contains("releasing the resource claim failed: 0xc000009a")), "{errors:?}");
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
