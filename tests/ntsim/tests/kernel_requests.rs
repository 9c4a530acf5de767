//! `Machine::kernel_request`: IRPs from a kernel-mode caller, with no file object or
//! with one that no IRP_MJ_CREATE reached.

mod common;

use common::{DEVICE, complete, entry_with, load, machine, print, print_value, printed, stack};
use ntsim::KernelFile;
use ntsim::wdk_sys::{
    IRP_MJ_CLEANUP, IRP_MJ_READ, NTSTATUS, PCUNICODE_STRING, PDEVICE_OBJECT, PDRIVER_OBJECT, PIRP,
    STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS,
};

/// Prints what the request carries, then completes it with the whole buffer.
unsafe extern "C" fn read_reports_file(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the I/O manager passes a valid IRP; the file object is checked for NULL.
    let (file, context, mode, length) = unsafe {
        let s = stack(irp);
        let file = (*s).FileObject;
        let context = if file.is_null() { 0 } else { (*file).FsContext as u64 };
        (file as u64, context, (*irp).RequestorMode, (*s).Parameters.Read.Length)
    };
    print_value("file", file);
    print_value("context", context);
    print_value("mode", u64::from(mode.cast_unsigned()));
    print("read");
    // SAFETY: we own the IRP.
    unsafe { complete(irp, STATUS_SUCCESS, u64::from(length)) };
    STATUS_SUCCESS
}

unsafe extern "C" fn entry(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    unsafe { entry_with(driver, &[(IRP_MJ_READ, Some(read_reports_file))], None) }
}

#[test]
fn a_kernel_request_without_a_file_object() {
    let machine = machine();
    let driver = load(&machine, entry);
    let result = machine.kernel_request(DEVICE, IRP_MJ_READ, KernelFile::None, 16).unwrap().unwrap();
    assert_eq!((result.status, result.information, result.data.len()), (STATUS_SUCCESS, 16, 16));
    assert_eq!(printed(&machine, "file"), 0, "no FileObject");
    assert_eq!(printed(&machine, "mode"), 0, "RequestorMode is KernelMode");
    machine.stop_driver(driver).unwrap();
    machine.verdict().unwrap();
}

#[test]
fn a_kernel_request_with_a_file_object_no_create_reached() {
    let machine = machine();
    let driver = load(&machine, entry);
    let result = machine.kernel_request(DEVICE, IRP_MJ_READ, KernelFile::Unopened, 8).unwrap().unwrap();
    assert_eq!(result.status, STATUS_SUCCESS);
    assert_ne!(printed(&machine, "file"), 0);
    assert_eq!(printed(&machine, "context"), 0, "FsContext is NULL");
    let output = machine.debug_output();
    assert!(!output.iter().any(|l| l == "create"), "no IRP_MJ_CREATE: {output:?}");
    let read = output.iter().position(|l| l == "read").expect("read");
    let close = output.iter().position(|l| l == "close").expect("the caller's dereference sends IRP_MJ_CLOSE");
    assert!(read < close, "{output:?}");
    // Other majors carry no parameters; the basic driver completes CLEANUP.
    let cleanup = machine.kernel_request(DEVICE, IRP_MJ_CLEANUP, KernelFile::Unopened, 0).unwrap().unwrap();
    assert_eq!(cleanup.status, STATUS_SUCCESS);
    machine.stop_driver(driver).unwrap();
    machine.verdict().unwrap();
}

#[test]
fn a_kernel_request_to_a_missing_device_fails() {
    let machine = machine();
    let status = machine.kernel_request(r"\Device\NoSuchDevice", IRP_MJ_READ, KernelFile::None, 8).unwrap();
    assert_eq!(status, Err(STATUS_OBJECT_NAME_NOT_FOUND));
}
