//! stagedrv loaded into ntsim: DriverEntry, opens and closes, Unload, with the
//! checker's verdict.

use ntsim::{Config, DriverState, Machine};

fn load(machine: &Machine) -> ntsim::Driver {
    let (driver, status) = machine.load_driver("stagedrv", stagedrv::driver_entry).expect("DriverEntry runs");
    assert_eq!(status, 0, "DriverEntry status");
    driver
}

#[test]
fn loads_serves_create_close_and_unloads_clean() {
    let machine = Machine::new(Config::seeded(7));
    let driver = load(&machine);
    let process = machine.new_process();
    let handle = process.open(r"\\.\StageDrv0", false).unwrap().expect("open succeeds");
    assert_eq!(process.close(handle).unwrap(), 0);
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    machine.verdict().unwrap();
    let log = machine.debug_output();
    assert!(log.iter().any(|l| l.contains("Unload: done")), "{log:#?}");
}

#[test]
fn sub_path_open_is_refused() {
    let machine = Machine::new(Config::seeded(1));
    load(&machine);
    let process = machine.new_process();
    let status = process.open(r"\\.\StageDrv0\x", false).unwrap().unwrap_err();
    assert_eq!(status, ntsim::wdk_sys::STATUS_OBJECT_PATH_NOT_FOUND);
}

#[test]
fn stop_with_open_handle_defers_unload_until_close() {
    let machine = Machine::new(Config::seeded(3));
    let driver = load(&machine);
    let process = machine.new_process();
    let handle = process.open(r"\\.\StageDrv0", true).unwrap().unwrap();
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::UnloadPending);
    let second = machine.new_process();
    assert_eq!(second.open(r"\\.\StageDrv0", true).unwrap().unwrap_err(), ntsim::wdk_sys::STATUS_NO_SUCH_DEVICE);
    process.close(handle).unwrap();
    machine.wait_unloaded(driver).unwrap();
    assert_eq!(machine.driver_state(driver), DriverState::Unloaded);
}

#[test]
fn read_returns_records_produced_by_the_timer() {
    let machine = Machine::new(Config::seeded(11));
    let driver = load(&machine);
    let process = machine.new_process();
    let handle = process.open(r"\\.\StageDrv1", false).unwrap().unwrap();
    let result = process.read(handle, 24 * 4).unwrap().done().expect("synchronous read");
    assert_eq!(result.status, 0);
    assert_eq!(result.information, 24, "one record per tick, read as soon as it exists");
    let sequence = u64::from_le_bytes(result.data[..8].try_into().unwrap());
    let value = u64::from_le_bytes(result.data[16..24].try_into().unwrap());
    assert_eq!(sequence, 0);
    assert_eq!(value >> 56, 1, "device index in the sample");
    process.close(handle).unwrap();
    assert_eq!(machine.stop_driver(driver).unwrap(), DriverState::Unloaded);
    let stages: Vec<String> = machine.debug_output().into_iter().filter(|l| l.contains("Unload: stage")).collect();
    assert_eq!(stages.len(), 6, "{stages:#?}");
}
