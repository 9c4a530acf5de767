//! Who may open the device and what a handle may do, under ntsim's model of the I/O
//! manager's checks: the DACL (src/security.rs), FILE_DEVICE_SECURE_OPEN and the
//! CREATE FileName check (src/device.rs, src/dispatch/create.rs), and the access bits
//! of IOCTL_STAGEDRV_GET_STATS (src/protocol.rs: FILE_READ_ACCESS).

mod common;

use common::*;
use ntsim::wdk_sys::{
    FILE_READ_ATTRIBUTES, GENERIC_READ, GENERIC_WRITE, STATUS_ACCESS_DENIED, STATUS_OBJECT_PATH_NOT_FOUND,
};
use ntsim::{Handle, Process};
use stagedrv::protocol::Stats;

const DEVICE: &str = r"\\.\StageDrv0";
const BELOW: &str = r"\\.\StageDrv0\x";

fn open_as(process: &Process<'_>, path: &str, access: u32) -> Result<Handle, i32> {
    process.open_with_access(path, access, true).unwrap()
}

fn get_stats_status(process: &Process<'_>, handle: Handle) -> i32 {
    process.ioctl(handle, IOCTL_STAGEDRV_GET_STATS, &[], size_of::<Stats>()).unwrap().done().unwrap().status
}

#[test]
fn a_standard_user_is_refused_the_device_and_every_name_below_it() {
    let machine = machine_with(21, &[]);
    let driver = load(&machine);
    let user = machine.new_process_as(false);
    for access in [GENERIC_READ | GENERIC_WRITE, GENERIC_READ, 0, FILE_READ_ATTRIBUTES] {
        assert_eq!(open_as(&user, DEVICE, access).unwrap_err(), STATUS_ACCESS_DENIED, "access {access:#x}");
        // FILE_DEVICE_SECURE_OPEN: the DACL guards the namespace too.
        assert_eq!(open_as(&user, BELOW, access).unwrap_err(), STATUS_ACCESS_DENIED, "access {access:#x}");
    }
    unload_clean(&machine, driver);
}

#[test]
fn a_name_below_the_device_is_refused_by_create_when_the_dacl_admits_the_caller() {
    let machine = machine_with(22, &[("OpenToEveryone", 1)]);
    let driver = load(&machine);
    // The DACL admits both; CREATE's own FileName check refuses the name.
    for process in [machine.new_process_as(false), machine.new_process()] {
        assert_eq!(open_as(&process, BELOW, GENERIC_READ | GENERIC_WRITE).unwrap_err(), STATUS_OBJECT_PATH_NOT_FOUND);
    }
    unload_clean(&machine, driver);
}

#[test]
fn a_handle_with_no_data_access_cannot_get_stats_or_read() {
    let machine = machine_with(23, &[("OpenToEveryone", 1)]);
    let driver = load(&machine);
    let user = machine.new_process_as(false);
    let bare = open_as(&user, DEVICE, 0).expect("Everyone may open");
    assert_eq!(get_stats_status(&user, bare), STATUS_ACCESS_DENIED);
    assert_eq!(user.read(bare, RECORD_SIZE).unwrap().done().unwrap().status, STATUS_ACCESS_DENIED);
    let writer = open_as(&user, DEVICE, GENERIC_WRITE).expect("Everyone may write");
    assert_eq!(get_stats_status(&user, writer), STATUS_ACCESS_DENIED);
    // A handle with read access gets the counters: the refused read never reached the
    // driver.
    let reader = open_as(&user, DEVICE, GENERIC_READ).expect("Everyone may read");
    let s = stats(&user, reader);
    assert_eq!(s.reads_received, 0, "{s:?}");
    // An administrator's handle is limited by what it asked for, too.
    let admin = machine.new_process();
    let admin_bare = open_as(&admin, DEVICE, FILE_READ_ATTRIBUTES).expect("administrators may open");
    assert_eq!(get_stats_status(&admin, admin_bare), STATUS_ACCESS_DENIED);
    for handle in [bare, writer, reader] {
        user.close(handle).unwrap();
    }
    admin.close(admin_bare).unwrap();
    unload_clean(&machine, driver);
}
