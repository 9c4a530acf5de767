//! DriverEntry's stages, parameters, failure unwinding, the registry entries, the
//! Unload stages, and the default profile's DDI set.

mod common;

use common::*;
use ntsim::{Config, Hostile, Machine, Value};

const DEVICEMAP: &str = r"\Registry\Machine\HARDWARE\DEVICEMAP\StageDrv";

#[test]
fn device_count_comes_from_parameters_and_is_bounded() {
    let machine = machine_with(1, &[("DeviceCount", 3)]);
    let driver = load(&machine);
    let process = machine.new_process();
    let last = open(&process, 2);
    assert!(process.open(r"\\.\StageDrv3", true).unwrap().is_err());
    process.close(last).unwrap();
    unload_clean(&machine, driver);

    let machine = machine_with(1, &[("DeviceCount", 99)]);
    let driver = load(&machine);
    assert!(machine.debug_output().iter().any(|l| l.contains("DeviceCount=99 is outside 1..=8; using 8")));
    let process = machine.new_process();
    let h = open(&process, 7);
    process.close(h).unwrap();
    unload_clean(&machine, driver);
}

#[test]
fn a_value_of_the_wrong_type_is_ignored_with_a_log_line() {
    let machine = Machine::new(Config::seeded(2));
    machine.registry().set(&parameters_key(), "DeviceCount", &Value::String("3".into()));
    let driver = load(&machine);
    assert!(machine.debug_output().iter().any(|l| l.contains("DeviceCount is not a REG_DWORD")));
    let process = machine.new_process();
    assert!(process.open(r"\\.\StageDrv2", true).unwrap().is_err(), "default of 2 devices applies");
    unload_clean(&machine, driver);
}

/// A value too large for the query buffer (ZwQueryValueKey: STATUS_BUFFER_OVERFLOW) is
/// ignored with the same log line as any other value of the wrong type or size.
#[test]
fn an_oversize_value_is_ignored_with_a_log_line() {
    let machine = Machine::new(Config::seeded(3));
    machine.registry().set(&parameters_key(), "DeviceCount", &Value::Binary(vec![3; 64]));
    machine.registry().set(&parameters_key(), "RingCapacity", &Value::Binary(vec![0, 1, 0, 0, 0]));
    let driver = load(&machine);
    let log = machine.debug_output();
    let logged = |line: &str| log.iter().any(|l| l.contains(line));
    assert!(logged("DeviceCount is not a REG_DWORD (type 3, 64 bytes); using 2"), "{log:#?}");
    assert!(logged("RingCapacity is not a REG_DWORD (type 3, 5 bytes); using 256"), "{log:#?}");
    let process = machine.new_process();
    assert!(process.open(r"\\.\StageDrv2", true).unwrap().is_err(), "default of 2 devices applies");
    unload_clean(&machine, driver);
}

#[test]
fn device_names_are_published_and_removed() {
    let machine = machine_with(3, &[]);
    let driver = load(&machine);
    assert_eq!(
        machine.registry().get(DEVICEMAP, r"\Device\StageDrv1"),
        Some(Value::String(r"\DosDevices\StageDrv1".into()))
    );
    assert_eq!(machine.registry().is_volatile(DEVICEMAP), Some(true));
    unload_clean(&machine, driver);
    assert!(!machine.registry().key_exists(DEVICEMAP));
}

#[test]
fn statistics_reach_a_volatile_key_through_the_work_item() {
    let machine = Machine::new(Config {
        hostile: Hostile { poison_registry_path: true, ..Hostile::default() },
        ..Config::seeded(4)
    });
    for (name, value) in [("SamplePeriodMs", 10), ("StatisticsEveryTicks", 5)] {
        machine.registry().set(&parameters_key(), name, &Value::Dword(value));
    }
    let driver = load(&machine);
    machine.advance_ms(200).unwrap();
    let key = format!("{}\\Statistics", ntsim::service_key("stagedrv"));
    assert_eq!(machine.registry().is_volatile(&key), Some(true), "written under the copied registry path");
    let Some(Value::Binary(bytes)) = machine.registry().get(&key, "StageDrv0") else { panic!("no statistics") };
    assert_eq!(bytes.len(), size_of::<Stats>());
    let produced = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert!(produced >= 5, "{produced}");
    // One work item per StatisticsEveryTicks ticks of one device's producer at most
    // (a tick that finds the last one still queued waits for the next), and some.
    let process = machine.new_process();
    let handle = open(&process, 0);
    let ticks = stats(&process, handle).records_produced;
    process.close(handle).unwrap();
    let work_items = machine.trace().iter().filter(|c| c.api == "IoQueueWorkItem").count() as u64;
    let devices = 2;
    assert!((2..=devices * ticks / 5).contains(&work_items), "{work_items} work items for {ticks} ticks per device");
    unload_clean(&machine, driver);
}

#[test]
fn unload_runs_the_six_stages_in_order_and_only_then_deletes_devices() {
    let machine = machine_with(5, &[("SamplePeriodMs", 10)]);
    let driver = load(&machine);
    machine.advance_ms(55).unwrap();
    unload_clean(&machine, driver);
    let log = machine.debug_output();
    let position = |needle: &str| {
        log.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} missing: {log:#?}"))
    };
    let order: Vec<usize> = (1..=6).map(|n| position(&format!("Unload: stage {n}"))).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert!(position("device and controller objects deleted") > order[5]);
    let unload_calls: Vec<&'static str> =
        machine.trace().iter().filter(|c| c.routine == ntsim::trace::Routine::Unload).map(|c| c.api).collect();
    let index =
        |api: &str| unload_calls.iter().position(|a| *a == api).unwrap_or_else(|| panic!("{api} not called in Unload"));
    assert!(index("KeCancelTimer") < index("KeFlushQueuedDpcs"));
    assert!(index("KeFlushQueuedDpcs") < index("IoDeleteSymbolicLink"));
    assert!(index("IoDeleteSymbolicLink") < index("IoDeleteDevice"));
    assert!(index("ZwDeleteKey") < index("IoDeleteDevice"));

    let stages = unload_stages(&machine);
    let teardown = [
        "KeCancelTimer",
        "IoStopTimer",
        "KeFlushQueuedDpcs",
        "IoDeleteSymbolicLink",
        "IoFreeWorkItem",
        "ZwDeleteKey",
        "IoDeleteDevice",
    ];
    let not = |keep: &[&str]| teardown.iter().copied().filter(|a| !keep.contains(a)).collect::<Vec<_>>();
    assert_stage(&stages, "stage 1", &[], &teardown);
    let stage2 = [
        "KeCancelTimer",
        "IoStopTimer",
        "KeFlushQueuedDpcs",
        "KeSetEvent",
        "KeWaitForSingleObject",
        "ObfDereferenceObject",
    ];
    assert_stage(&stages, "stage 2", &stage2, &not(&stage2));
    let stage3 = ["IoDeleteSymbolicLink", "ExFreePoolWithTag", "IoFreeWorkItem"];
    assert_stage(&stages, "stage 3", &stage3, &not(&stage3));
    assert_stage(&stages, "stage 4", &[], &teardown);
    assert_stage(&stages, "stage 5", &[], &teardown);
    assert_stage(&stages, "stage 6", &["ZwOpenKey", "ZwDeleteKey", "ZwClose"], &not(&["ZwDeleteKey"]));
    assert_stage(&stages, "final", &["IoDeleteDevice", "ExFreePoolWithTag"], &not(&["IoDeleteDevice"]));
}

/// Every failable call DriverEntry makes is failed once, in turn: DriverEntry must
/// fail (or carry on where the failure is tolerated) and leave nothing behind.
#[test]
fn every_failure_in_driver_entry_is_unwound_without_leaks() {
    let probe = machine_with(6, &[]);
    load(&probe);
    let failable = probe.faults().failable_calls();
    assert!(failable >= 10, "{failable}");
    for nth in 1..=failable {
        let machine = machine_with(6, &[]);
        machine.faults().fail_nth_any(nth);
        let (driver, status) =
            machine.load_driver("stagedrv", stagedrv::driver_entry).unwrap_or_else(|e| panic!("failure {nth}: {e}"));
        let failed = machine.faults().injected();
        println!("failable call {nth}: {failed:?} -> DriverEntry status {status:#x}");
        if status == 0 {
            unload_clean(&machine, driver);
        } else {
            machine.verdict().unwrap_or_else(|e| panic!("failing {failed:?} left: {e}"));
            assert!(!machine.registry().key_exists(DEVICEMAP), "failing {failed:?}");
        }
    }
}

#[test]
fn default_profile_calls_only_wine_safe_ddis() {
    let allowed: Vec<String> = include_str!("wine/wine-safe-ddis.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    // As under Wine 8.0: no ExAllocatePool2 export.
    let machine = Machine::new(Config { missing_exports: vec!["ExAllocatePool2".into()], ..Config::seeded(7) });
    for (name, value) in [("SamplePeriodMs", 20), ("ReadTimeoutSeconds", 1), ("StatisticsEveryTicks", 3)] {
        machine.registry().set(&parameters_key(), name, &Value::Dword(value));
    }
    let driver = load(&machine);
    assert!(machine.debug_output().iter().any(|l| l.contains("pool allocator WithTagDownLevel")));
    let process = machine.new_process();
    let handle = open(&process, 0);
    let first = pending_read(&process, handle, 1);
    let _ = process.main().wait(&first).unwrap();
    let cancelled = pending_read(&process, handle, 1);
    process.cancel_io_ex(handle, Some(&cancelled)).unwrap();
    let _ = stats(&process, handle);
    let other = open(&process, 1);
    let _pending = process.read(other, RECORD_SIZE).unwrap();
    machine.advance_ms(2_500).unwrap();
    process.close(handle).unwrap();
    process.close(other).unwrap();
    unload_clean(&machine, driver);
    let mut called: Vec<&str> =
        machine.trace().iter().map(|c| c.api).filter(|a| !ntsim::inline::INLINE_DDIS.contains(a)).collect();
    called.sort_unstable();
    called.dedup();
    let outside: Vec<&&str> = called.iter().filter(|a| !allowed.iter().any(|w| w == *a)).collect();
    assert!(outside.is_empty(), "not Wine-safe: {outside:?}");
}

/// On kernels with ExAllocatePool2 the driver uses it; without, ExAllocatePoolWithTag
/// (whose memory ntsim fills with 0xCD: the driver must zero it itself). Either way the
/// routine may sit at an odd address (a kernel built with GCC packs its functions), so
/// the driver must call exactly the address it was given.
#[test]
fn both_pool_allocators_work() {
    let kernels = [
        (vec![], false),
        (vec!["ExAllocatePool2".to_owned()], false),
        (vec![], true),
        (vec!["ExAllocatePool2".to_owned()], true),
    ];
    for (missing, odd_routine_addresses) in kernels {
        let down_level = !missing.is_empty();
        let machine = Machine::new(Config {
            missing_exports: missing,
            hostile: Hostile { odd_routine_addresses, ..Hostile::default() },
            ..Config::seeded(8)
        });
        machine.registry().set(&parameters_key(), "SamplePeriodMs", &Value::Dword(10));
        let driver = load(&machine);
        let expected = if down_level { "WithTagDownLevel" } else { "Pool2" };
        assert!(machine.debug_output().iter().any(|l| l.ends_with(&format!("pool allocator {expected}"))));
        let process = machine.new_process();
        let handle = open(&process, 1);
        let first = process.read(handle, RECORD_SIZE).unwrap();
        let result = match first {
            ntsim::Issued::Done(r) => r,
            ntsim::Issued::Pending(io) => process.main().wait(&io).unwrap(),
        };
        assert_eq!(u64::from_le_bytes(result.data[..8].try_into().unwrap()), 0, "sequence starts at 0");
        let s = stats(&process, handle);
        assert_balanced(&s);
        assert_eq!(s.reads_cancelled + s.reads_timed_out, 0, "counters start at zero: {s:?}");
        process.close(handle).unwrap();
        unload_clean(&machine, driver);
        let allocator = if down_level { "ExAllocatePoolWithTag" } else { "ExAllocatePool2" };
        assert!(machine.trace().iter().any(|c| c.api == allocator));
    }
}

/// If the new thread's object cannot be referenced, DriverEntry tells the thread to
/// stop and waits for it through its handle before it frees the events the thread
/// waits on (and before the image could be unloaded under it), whichever runs first.
#[test]
fn a_thread_that_cannot_be_referenced_ends_before_driver_entry_fails() {
    use ntsim::trace::Routine;
    for seed in 0..16 {
        // PCT gives the new thread a low priority in some runs: it is still to run when
        // DriverEntry gives up on it.
        let machine = Machine::new(Config { mode: ntsim::Mode::Pct { seed, depth: 2 }, ..Config::default() });
        machine.faults().fail_nth("ObReferenceObjectByHandle", 1);
        let (_driver, status) = machine
            .load_driver("stagedrv", stagedrv::driver_entry)
            .unwrap_or_else(|e| panic!("seed {seed}: DriverEntry: {e}"));
        assert_eq!(machine.faults().injected(), vec!["ObReferenceObjectByHandle"]);
        assert_eq!(status.cast_unsigned(), 0xC000_0008, "seed {seed}: STATUS_INVALID_HANDLE from the failed reference");
        machine.verdict().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let trace = machine.trace();
        let in_entry = |api: &str| trace.iter().rposition(|c| c.api == api && c.routine == Routine::DriverEntry);
        let exit = trace.iter().position(|c| c.api == "PsTerminateSystemThread");
        let (wait, state_freed) = (in_entry("ZwWaitForSingleObject"), in_entry("ExFreePoolWithTag"));
        assert!(wait.is_some(), "seed {seed}: DriverEntry did not wait for the thread");
        assert!(
            exit.is_some_and(|exit| Some(exit) < state_freed),
            "seed {seed}: thread exit {exit:?}, driver state freed {state_freed:?}"
        );
    }
}

/// The DEVICEMAP key is created, then one value per device is written: a write that
/// fails half-way still leaves a key, which DriverEntry's unwinding deletes.
#[test]
fn a_half_published_devicemap_key_is_removed() {
    let machine = machine_with(10, &[("DeviceCount", 3)]);
    machine.faults().fail_nth("ZwSetValueKey", 2);
    let (_driver, status) =
        machine.load_driver("stagedrv", stagedrv::driver_entry).unwrap_or_else(|e| panic!("DriverEntry: {e}"));
    assert_eq!(machine.faults().injected(), vec!["ZwSetValueKey"]);
    assert_eq!(status.cast_unsigned(), 0xC000_009A, "STATUS_INSUFFICIENT_RESOURCES from the failed write");
    machine.verdict().unwrap();
    assert!(machine.trace().iter().any(|c| c.api == "ZwDeleteKey"), "the key was deleted");
    assert!(!machine.registry().key_exists(DEVICEMAP));
}

/// IoInitializeTimer can fail (it allocates the IO_TIMER). With a ReadTimeoutSeconds
/// configured the driver could not honour it, so DriverEntry fails; without one the
/// watchdog is not needed and the driver loads with a warning.
#[test]
fn a_read_timeout_without_an_io_timer_fails_driver_entry() {
    let machine = machine_with(12, &[("ReadTimeoutSeconds", 1)]);
    machine.faults().fail_nth("IoInitializeTimer", 1);
    let (_driver, status) =
        machine.load_driver("stagedrv", stagedrv::driver_entry).unwrap_or_else(|e| panic!("DriverEntry: {e}"));
    assert_eq!(status.cast_unsigned(), 0xC000_009A, "the IoInitializeTimer failure");
    machine.verdict().unwrap();
    assert!(machine.debug_output().iter().any(|l| l.contains("no watchdog for ReadTimeoutSeconds=1")));
    assert!(!machine.registry().key_exists(DEVICEMAP));

    let machine = machine_with(12, &[]);
    machine.faults().fail_nth("IoInitializeTimer", 1);
    let driver = load(&machine);
    assert!(machine.debug_output().iter().any(|l| l.contains("running without the watchdog")));
    unload_clean(&machine, driver);
}
