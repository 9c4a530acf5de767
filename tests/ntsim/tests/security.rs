//! Security as the I/O manager applies it: the access an open asks for, the device's
//! DACL on an open of the device and (with FILE_DEVICE_SECURE_OPEN) of names below it,
//! the default descriptor of a device the driver secured no further, and the granted
//! access ReadFile, WriteFile and DeviceIoControl check. Each wrong driver here is one
//! that Windows lets a standard user through (or stops), and ntsim must do the same.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "KPROCESSOR_MODE narrowed as wdm.h does"
)]

mod common;

use common::{
    DEVICE, LINK, PATH, counted, create_link, dispatch_basic, load, machine, print, stack, unload_clean, wide,
};
use ntsim::wdk_sys::ntddk::{
    IoCreateDevice, IoDeleteDevice, IofCompleteRequest, ObOpenObjectByPointer, RtlAddAccessAllowedAce, RtlCreateAcl,
    RtlCreateSecurityDescriptor, RtlSetDaclSecurityDescriptor, ZwClose, ZwSetSecurityObject,
};
use ntsim::wdk_sys::{
    _MODE, ACCESS_MASK, ACL, ACL_REVISION, DACL_SECURITY_INFORMATION, DO_BUFFERED_IO, DO_DEVICE_INITIALIZING,
    FILE_ANY_ACCESS, FILE_DEVICE_DISK, FILE_DEVICE_SECURE_OPEN, FILE_DEVICE_UNKNOWN, FILE_GENERIC_READ,
    FILE_READ_ACCESS, FILE_READ_ATTRIBUTES, FILE_READ_DATA, FILE_WRITE_ACCESS, FILE_WRITE_DATA, GENERIC_ALL,
    GENERIC_READ, GENERIC_WRITE, HANDLE, IRP_MJ_CLEANUP, IRP_MJ_CLOSE, IRP_MJ_CREATE, IRP_MJ_DEVICE_CONTROL,
    IRP_MJ_READ, IRP_MJ_WRITE, MAXIMUM_ALLOWED, METHOD_BUFFERED, NT_SUCCESS, NTSTATUS, OBJ_KERNEL_HANDLE,
    PCUNICODE_STRING, PDEVICE_OBJECT, PDRIVER_OBJECT, PIRP, SECURITY_DESCRIPTOR, STATUS_ACCESS_DENIED, STATUS_SUCCESS,
    SYNCHRONIZE, WRITE_DAC,
};
use ntsim::{Machine, Process};

/// A test driver's device: its type and characteristics, and whether DriverEntry
/// restricts its DACL to SYSTEM and Administrators (as a careful driver does).
struct Spec {
    device_type: u32,
    characteristics: u32,
    admins_only: bool,
}

/// A SID of authority 5 (NT AUTHORITY) with up to two sub-authorities, in its binary form.
fn nt_sid(sub: &[u32]) -> Vec<u8> {
    let mut sid = vec![1, u8::try_from(sub.len()).expect("few"), 0, 0, 0, 0, 0, 5];
    for s in sub {
        sid.extend_from_slice(&s.to_le_bytes());
    }
    sid
}

/// Sets a DACL of SYSTEM and Administrators (GENERIC_ALL each) on `device`, through a
/// kernel handle, as a driver without IoCreateDeviceSecure does.
///
/// # Safety
/// `device` is the calling driver's device, still initialising; PASSIVE_LEVEL.
unsafe fn restrict_to_admins(device: PDEVICE_OBJECT) -> NTSTATUS {
    let mut acl = [0u64; 16];
    let acl_ptr = acl.as_mut_ptr().cast::<ACL>();
    let mut descriptor = SECURITY_DESCRIPTOR::default();
    let mut handle: HANDLE = std::ptr::null_mut();
    // SAFETY: every buffer is a local that outlives the calls; the SIDs are well formed.
    unsafe {
        let mut status = RtlCreateAcl(acl_ptr, size_of_val(&acl) as u32, ACL_REVISION);
        for mut sid in [nt_sid(&[18]), nt_sid(&[32, 544])] {
            if NT_SUCCESS(status) {
                status = RtlAddAccessAllowedAce(acl_ptr, ACL_REVISION, GENERIC_ALL, sid.as_mut_ptr().cast());
            }
        }
        if NT_SUCCESS(status) {
            status = RtlCreateSecurityDescriptor((&raw mut descriptor).cast(), 1);
        }
        if NT_SUCCESS(status) {
            status = RtlSetDaclSecurityDescriptor((&raw mut descriptor).cast(), 1, acl_ptr, 0);
        }
        if NT_SUCCESS(status) {
            status = ObOpenObjectByPointer(
                device.cast(),
                OBJ_KERNEL_HANDLE,
                std::ptr::null_mut(),
                WRITE_DAC,
                std::ptr::null_mut(),
                _MODE::KernelMode as i8,
                &raw mut handle,
            );
        }
        if !NT_SUCCESS(status) {
            return status;
        }
        let status = ZwSetSecurityObject(handle, DACL_SECURITY_INFORMATION, (&raw mut descriptor).cast());
        let closed = ZwClose(handle);
        if NT_SUCCESS(status) { closed } else { status }
    }
}

/// CREATE prints the access the I/O manager passed in its security context, then
/// accepts every open, whatever FileName: no namespace check of its own.
unsafe extern "C" fn create_accepts_any_name(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: a create IRP from the I/O manager carries its security context.
    let desired = unsafe { (*(*stack(irp)).Parameters.Create.SecurityContext).DesiredAccess };
    print(&format!("create desired={desired:#x}"));
    // SAFETY: we own the IRP.
    unsafe { finish(irp, STATUS_SUCCESS) }
}

/// Completes READ, WRITE and DEVICE_CONTROL with success, printing `reached`.
unsafe extern "C" fn reached(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    print("reached");
    // SAFETY: we own the IRP.
    unsafe { finish(irp, STATUS_SUCCESS) }
}

/// # Safety
/// The caller owns `irp`.
unsafe fn finish(irp: PIRP, status: NTSTATUS) -> NTSTATUS {
    // SAFETY: guaranteed by the caller.
    unsafe {
        (*irp).IoStatus.__bindgen_anon_1.Status = status;
        (*irp).IoStatus.Information = 0;
        IofCompleteRequest(irp, 0);
    }
    status
}

/// DriverEntry for `spec`: the named device and its link, the dispatch routines above.
///
/// # Safety
/// `driver` is DriverEntry's driver object.
unsafe fn entry(driver: PDRIVER_OBJECT, spec: &Spec) -> NTSTATUS {
    let mut name = wide(DEVICE);
    let mut unicode = counted(&mut name);
    let mut device: PDEVICE_OBJECT = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call.
    let status = unsafe {
        IoCreateDevice(driver, 0, &raw mut unicode, spec.device_type, spec.characteristics, 0, &raw mut device)
    };
    if !NT_SUCCESS(status) {
        return status;
    }
    // SAFETY: our new device, not yet visible to I/O.
    let status = if spec.admins_only { unsafe { restrict_to_admins(device) } } else { STATUS_SUCCESS };
    let status = if NT_SUCCESS(status) { create_link(LINK, DEVICE) } else { status };
    if !NT_SUCCESS(status) {
        // SAFETY: our device, never exposed.
        unsafe { IoDeleteDevice(device) };
        return status;
    }
    // SAFETY: DriverEntry owns the driver object and the new device's flags.
    unsafe {
        (*driver).MajorFunction[IRP_MJ_CREATE as usize] = Some(create_accepts_any_name);
        (*driver).MajorFunction[IRP_MJ_CLEANUP as usize] = Some(dispatch_basic);
        (*driver).MajorFunction[IRP_MJ_CLOSE as usize] = Some(dispatch_basic);
        for major in [IRP_MJ_READ, IRP_MJ_WRITE, IRP_MJ_DEVICE_CONTROL] {
            (*driver).MajorFunction[major as usize] = Some(reached);
        }
        (*driver).DriverUnload = Some(unload_clean);
        (*device).Flags |= DO_BUFFERED_IO;
        (*device).Flags &= !DO_DEVICE_INITIALIZING;
    }
    STATUS_SUCCESS
}

macro_rules! driver {
    ($name:ident, $device_type:expr, $characteristics:expr, $admins_only:expr) => {
        unsafe extern "C" fn $name(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
            let spec = Spec { device_type: $device_type, characteristics: $characteristics, admins_only: $admins_only };
            // SAFETY: DriverEntry's driver object.
            unsafe { entry(driver, &spec) }
        }
    };
}

// The classic namespace hole: the DACL admits only SYSTEM and Administrators, but the
// device lacks FILE_DEVICE_SECURE_OPEN and CREATE accepts a non-empty FileName.
driver!(admins_only_without_secure_open, FILE_DEVICE_UNKNOWN, 0, true);
// The same driver with FILE_DEVICE_SECURE_OPEN.
driver!(admins_only_with_secure_open, FILE_DEVICE_UNKNOWN, FILE_DEVICE_SECURE_OPEN, true);
// No descriptor of its own: IoCreateDevice's default for its type.
driver!(default_unknown_device, FILE_DEVICE_UNKNOWN, FILE_DEVICE_SECURE_OPEN, false);
driver!(default_disk_device, FILE_DEVICE_DISK, 0, false);

const fn ctl_code(function: u32, access: u32) -> u32 {
    (FILE_DEVICE_UNKNOWN << 16) | (access << 14) | (function << 2) | METHOD_BUFFERED
}
const IOCTL_ANY: u32 = ctl_code(0x800, FILE_ANY_ACCESS);
const IOCTL_READ: u32 = ctl_code(0x801, FILE_READ_ACCESS);
const IOCTL_WRITE: u32 = ctl_code(0x802, FILE_WRITE_ACCESS);
const IOCTL_READ_WRITE: u32 = ctl_code(0x803, FILE_READ_ACCESS | FILE_WRITE_ACCESS);

/// The status of an open of `path` by `process` asking for `access`; a handle it got is
/// closed again.
fn open_status(process: &Process<'_>, path: &str, access: ACCESS_MASK) -> NTSTATUS {
    match process.open_with_access(path, access, false).unwrap() {
        Ok(handle) => {
            process.close(handle).unwrap();
            STATUS_SUCCESS
        }
        Err(status) => status,
    }
}

/// How many times the driver printed `line` so far.
fn count(machine: &Machine, line: &str) -> usize {
    machine.debug_output().iter().filter(|l| l.starts_with(line)).count()
}

#[test]
fn without_secure_open_a_standard_user_opens_a_name_below_an_admins_only_device() {
    let machine = machine();
    let driver = load(&machine, admins_only_without_secure_open);
    let user = machine.new_process_as(false);
    // The device itself: the DACL applies.
    assert_eq!(open_status(&user, PATH, GENERIC_READ | GENERIC_WRITE), STATUS_ACCESS_DENIED);
    assert_eq!(count(&machine, "create"), 0, "a denied open never reaches IRP_MJ_CREATE");
    // A name below it: only the driver's CREATE decides, and this one says yes. The
    // handle has all it asked for, so the user can send a read/write IOCTL.
    let below = user.open_with_access(&format!(r"{PATH}\x"), GENERIC_READ | GENERIC_WRITE, false).unwrap();
    let handle = below.expect("Windows grants this open; so must ntsim");
    assert_eq!(count(&machine, "create"), 1);
    let ioctl = user.ioctl(handle, IOCTL_READ_WRITE, &[], 0).unwrap().done().unwrap();
    assert_eq!(ioctl.status, STATUS_SUCCESS);
    assert_eq!(count(&machine, "reached"), 1);
    user.close(handle).unwrap();
    machine.stop_driver(driver).unwrap();
    machine.verdict().unwrap();
}

#[test]
fn with_secure_open_the_dacl_also_guards_names_below_the_device() {
    let machine = machine();
    let driver = load(&machine, admins_only_with_secure_open);
    let user = machine.new_process_as(false);
    assert_eq!(open_status(&user, &format!(r"{PATH}\x"), GENERIC_READ | GENERIC_WRITE), STATUS_ACCESS_DENIED);
    assert_eq!(open_status(&user, PATH, GENERIC_READ | GENERIC_WRITE), STATUS_ACCESS_DENIED);
    assert_eq!(count(&machine, "create"), 0);
    // No data access does not pass an ACL that names nobody the user is: CreateFile
    // still asks for SYNCHRONIZE | FILE_READ_ATTRIBUTES, which the DACL must grant.
    assert_eq!(open_status(&user, PATH, 0), STATUS_ACCESS_DENIED);
    let admin = machine.new_process();
    assert_eq!(open_status(&admin, &format!(r"{PATH}\x"), GENERIC_READ | GENERIC_WRITE), STATUS_SUCCESS);
    assert_eq!(open_status(&admin, PATH, GENERIC_ALL), STATUS_SUCCESS);
    assert_eq!(count(&machine, "create"), 2);
    machine.stop_driver(driver).unwrap();
    machine.verdict().unwrap();
}

#[test]
fn create_sees_the_mapped_desired_access_with_what_create_file_adds() {
    let machine = machine();
    let driver = load(&machine, default_unknown_device);
    let user = machine.new_process_as(false);
    assert_eq!(open_status(&user, PATH, 0), STATUS_SUCCESS);
    assert_eq!(open_status(&user, PATH, GENERIC_READ), STATUS_SUCCESS);
    let seen: Vec<String> = machine.debug_output().into_iter().filter(|l| l.starts_with("create desired=")).collect();
    assert_eq!(
        seen,
        [
            format!("create desired={:#x}", SYNCHRONIZE | FILE_READ_ATTRIBUTES),
            format!("create desired={FILE_GENERIC_READ:#x}"),
        ]
    );
    machine.stop_driver(driver).unwrap();
    machine.verdict().unwrap();
}

#[test]
fn ioctl_access_bits_are_checked_against_the_handle_before_the_driver() {
    let machine = machine();
    let driver = load(&machine, default_unknown_device);
    let user = machine.new_process_as(false);
    let none = user.open_with_access(PATH, 0, false).unwrap().expect("the default DACL admits a no-access open");
    let denied = user.ioctl(none, IOCTL_READ, &[], 0).unwrap().done().unwrap();
    assert_eq!(denied.status, STATUS_ACCESS_DENIED);
    assert_eq!(count(&machine, "reached"), 0, "a refused IOCTL never reaches the driver");
    let any = user.ioctl(none, IOCTL_ANY, &[], 0).unwrap().done().unwrap();
    assert_eq!(any.status, STATUS_SUCCESS);
    assert_eq!(count(&machine, "reached"), 1);
    // A duplicate has the same access.
    let copy = user.duplicate(none).unwrap().unwrap();
    assert_eq!(user.ioctl(copy, IOCTL_READ, &[], 0).unwrap().done().unwrap().status, STATUS_ACCESS_DENIED);

    let reader = user.open_with_access(PATH, FILE_READ_DATA, false).unwrap().unwrap();
    assert_eq!(user.ioctl(reader, IOCTL_READ, &[], 0).unwrap().done().unwrap().status, STATUS_SUCCESS);
    assert_eq!(user.ioctl(reader, IOCTL_WRITE, &[], 0).unwrap().done().unwrap().status, STATUS_ACCESS_DENIED);
    assert_eq!(user.ioctl(reader, IOCTL_READ_WRITE, &[], 0).unwrap().done().unwrap().status, STATUS_ACCESS_DENIED);
    let both = user.open_with_access(PATH, FILE_READ_DATA | FILE_WRITE_DATA, false).unwrap().unwrap();
    assert_eq!(user.ioctl(both, IOCTL_READ_WRITE, &[], 0).unwrap().done().unwrap().status, STATUS_SUCCESS);
    assert_eq!(count(&machine, "reached"), 3);
    for handle in [none, copy, reader, both] {
        user.close(handle).unwrap();
    }
    machine.stop_driver(driver).unwrap();
    machine.verdict().unwrap();
}

#[test]
fn read_and_write_need_data_access_on_the_handle() {
    let machine = machine();
    let driver = load(&machine, default_unknown_device);
    let user = machine.new_process_as(false);
    let attributes = user.open_with_access(PATH, FILE_READ_ATTRIBUTES, false).unwrap().unwrap();
    assert_eq!(user.read(attributes, 8).unwrap().done().unwrap().status, STATUS_ACCESS_DENIED);
    assert_eq!(user.write(attributes, &[1]).unwrap().done().unwrap().status, STATUS_ACCESS_DENIED);
    let reader = user.open_with_access(PATH, GENERIC_READ, false).unwrap().unwrap();
    assert_eq!(user.write(reader, &[1]).unwrap().done().unwrap().status, STATUS_ACCESS_DENIED);
    assert_eq!(count(&machine, "reached"), 0);
    assert_eq!(user.read(reader, 8).unwrap().done().unwrap().status, STATUS_SUCCESS);
    let writer = user.open_with_access(PATH, GENERIC_WRITE, false).unwrap().unwrap();
    assert_eq!(user.write(writer, &[1]).unwrap().done().unwrap().status, STATUS_SUCCESS);
    assert_eq!(user.read(writer, 8).unwrap().done().unwrap().status, STATUS_ACCESS_DENIED);
    assert_eq!(count(&machine, "reached"), 2);
    for handle in [attributes, reader, writer] {
        user.close(handle).unwrap();
    }
    machine.stop_driver(driver).unwrap();
    machine.verdict().unwrap();
}

#[test]
fn a_device_without_a_descriptor_gets_windows_default_for_its_type() {
    let machine = machine();
    let driver = load(&machine, default_unknown_device);
    let dacl = machine.device_dacl(DEVICE).expect("a named device has the default DACL");
    let sids: Vec<&str> = dacl.iter().map(|a| a.sid.as_str()).collect();
    assert_eq!(sids, ["S-1-1-0", "S-1-5-18", "S-1-5-32-544", "S-1-5-12"]);
    let user = machine.new_process_as(false);
    // Everyone may read, write and execute: SePublicOpenUnrestrictedDacl...
    assert_eq!(open_status(&user, PATH, GENERIC_READ | GENERIC_WRITE), STATUS_SUCCESS);
    assert_eq!(open_status(&user, PATH, 0), STATUS_SUCCESS);
    // ...but not own it: full access and changing the DACL are administrators' only. A
    // MAXIMUM_ALLOWED open gets what Everyone has, read and write included.
    assert_eq!(open_status(&user, PATH, GENERIC_ALL), STATUS_ACCESS_DENIED);
    assert_eq!(open_status(&user, PATH, WRITE_DAC), STATUS_ACCESS_DENIED);
    let maximum = user.open_with_access(PATH, MAXIMUM_ALLOWED, false).unwrap().unwrap();
    assert_eq!(user.ioctl(maximum, IOCTL_READ_WRITE, &[], 0).unwrap().done().unwrap().status, STATUS_SUCCESS);
    user.close(maximum).unwrap();
    let admin = machine.new_process();
    assert_eq!(open_status(&admin, PATH, GENERIC_ALL), STATUS_SUCCESS);
    machine.stop_driver(driver).unwrap();
    machine.verdict().unwrap();
}

#[test]
fn a_disk_without_a_descriptor_is_not_readable_by_a_standard_user() {
    let machine = machine();
    let driver = load(&machine, default_disk_device);
    let user = machine.new_process_as(false);
    // SePublicDefaultUnrestrictedDacl: Everyone has GENERIC_EXECUTE only, which covers
    // what a no-access CreateFile asks for, and traverse to names below the device.
    assert_eq!(open_status(&user, PATH, GENERIC_READ), STATUS_ACCESS_DENIED);
    assert_eq!(open_status(&user, PATH, GENERIC_WRITE), STATUS_ACCESS_DENIED);
    assert_eq!(open_status(&user, PATH, 0), STATUS_SUCCESS);
    assert_eq!(open_status(&user, &format!(r"{PATH}\x"), GENERIC_READ), STATUS_SUCCESS);
    let admin = machine.new_process();
    assert_eq!(open_status(&admin, PATH, GENERIC_READ | GENERIC_WRITE), STATUS_SUCCESS);
    machine.stop_driver(driver).unwrap();
    machine.verdict().unwrap();
}
