//! The object manager's type checks and waits on handles: ObReferenceObjectByHandle and
//! ObOpenObjectByPointer accept NULL or the object's own type (`*PsThreadType`,
//! `*IoDeviceObjectType`) and refuse another with STATUS_OBJECT_TYPE_MISMATCH;
//! ZwWaitForSingleObject waits for a thread through its handle.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "KPROCESSOR_MODE constants narrowed as wdm.h does"
)]

mod common;

use common::{entry_with, load, machine, print, print_value, printed};
use ntsim::wdk_sys::ntddk::{
    ObOpenObjectByPointer, ObReferenceObjectByHandle, ObfDereferenceObject, PsCreateSystemThread,
    PsTerminateSystemThread, ZwClose, ZwWaitForSingleObject,
};
use ntsim::wdk_sys::{
    _MODE, HANDLE, IoFileObjectType, NTSTATUS, OBJ_KERNEL_HANDLE, PCUNICODE_STRING, PDRIVER_OBJECT, POBJECT_TYPE,
    PVOID, PsThreadType, STATUS_SUCCESS, THREAD_ALL_ACCESS,
};

unsafe extern "C" {
    /// Declared by the driver itself, as no WDK header declares it.
    static IoDeviceObjectType: *mut POBJECT_TYPE;
}

unsafe extern "C" fn thread_ends(_context: PVOID) {
    print("thread ran");
    // SAFETY: a system thread ends itself.
    let _ = unsafe { PsTerminateSystemThread(STATUS_SUCCESS) };
}

/// ObReferenceObjectByHandle on `handle` with `object_type`; prints the status as
/// `name` and drops the reference it got.
///
/// # Safety
/// PASSIVE_LEVEL; `handle` is a kernel handle.
unsafe fn reference_as(name: &str, handle: HANDLE, object_type: POBJECT_TYPE) {
    let mut object: PVOID = std::ptr::null_mut();
    // SAFETY: guaranteed by the caller; the out-pointer is valid.
    let status = unsafe {
        ObReferenceObjectByHandle(
            handle,
            THREAD_ALL_ACCESS,
            object_type,
            _MODE::KernelMode as i8,
            &raw mut object,
            std::ptr::null_mut(),
        )
    };
    print_value(name, u64::from(status.cast_unsigned()));
    if !object.is_null() {
        // SAFETY: the reference just taken.
        unsafe { ObfDereferenceObject(object) };
    }
}

/// ObOpenObjectByPointer on the driver's device with `object_type`; prints the status
/// as `name` and closes the handle it got.
///
/// # Safety
/// PASSIVE_LEVEL; `driver` has a device.
unsafe fn open_device_as(name: &str, driver: PDRIVER_OBJECT, object_type: POBJECT_TYPE) {
    let mut handle: HANDLE = std::ptr::null_mut();
    // SAFETY: guaranteed by the caller; the out-pointer is valid.
    let status = unsafe {
        ObOpenObjectByPointer(
            (*driver).DeviceObject.cast(),
            OBJ_KERNEL_HANDLE,
            std::ptr::null_mut(),
            0,
            object_type,
            _MODE::KernelMode as i8,
            &raw mut handle,
        )
    };
    print_value(name, u64::from(status.cast_unsigned()));
    if !handle.is_null() {
        // SAFETY: the handle just opened.
        let _ = unsafe { ZwClose(handle) };
    }
}

unsafe extern "C" fn entry_checks_types(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: DriverEntry's driver object.
    let status = unsafe { entry_with(driver, &[], None) };
    // SAFETY: PASSIVE_LEVEL in DriverEntry; the type variables are the kernel's.
    unsafe {
        let mut thread: HANDLE = std::ptr::null_mut();
        let created = PsCreateSystemThread(
            &raw mut thread,
            THREAD_ALL_ACCESS,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            Some(thread_ends),
            std::ptr::null_mut(),
        );
        assert_eq!(created, STATUS_SUCCESS);
        reference_as("thread_as_thread", thread, *PsThreadType);
        reference_as("thread_as_any", thread, std::ptr::null_mut());
        reference_as("thread_as_file", thread, *IoFileObjectType);
        open_device_as("device_as_device", driver, *IoDeviceObjectType);
        open_device_as("device_as_thread", driver, *PsThreadType);
        let waited = ZwWaitForSingleObject(thread, 0, std::ptr::null_mut());
        print_value("wait_thread", u64::from(waited.cast_unsigned()));
        let mut device: HANDLE = std::ptr::null_mut();
        let _ = ObOpenObjectByPointer(
            (*driver).DeviceObject.cast(),
            OBJ_KERNEL_HANDLE,
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            _MODE::KernelMode as i8,
            &raw mut device,
        );
        let waited = ZwWaitForSingleObject(device, 0, std::ptr::null_mut());
        print_value("wait_device", u64::from(waited.cast_unsigned()));
        let _ = ZwClose(device);
        let _ = ZwClose(thread);
        let waited = ZwWaitForSingleObject(thread, 0, std::ptr::null_mut());
        print_value("wait_closed", u64::from(waited.cast_unsigned()));
    }
    status
}

#[test]
fn object_types_are_checked_when_given() {
    let machine = machine();
    let driver = load(&machine, entry_checks_types);
    assert_eq!(printed(&machine, "thread_as_thread"), 0, "*PsThreadType for a thread");
    assert_eq!(printed(&machine, "thread_as_any"), 0, "NULL accepts any type");
    assert_eq!(printed(&machine, "thread_as_file"), 0xC000_0024, "STATUS_OBJECT_TYPE_MISMATCH");
    assert_eq!(printed(&machine, "device_as_device"), 0, "*IoDeviceObjectType for a device");
    assert_eq!(printed(&machine, "device_as_thread"), 0xC000_0024, "STATUS_OBJECT_TYPE_MISMATCH");
    machine.stop_driver(driver).unwrap();
    machine.verdict().unwrap();
}

#[test]
fn zw_wait_for_single_object_waits_for_a_thread_through_its_handle() {
    let machine = machine();
    let driver = load(&machine, entry_checks_types);
    assert_eq!(printed(&machine, "wait_thread"), 0, "STATUS_SUCCESS once the thread ended");
    let output = machine.debug_output();
    let ran = output.iter().position(|l| l == "thread ran").expect("the thread ran");
    let waited = output.iter().position(|l| l.starts_with("wait_thread=")).expect("waited");
    assert!(ran < waited, "the wait returned before the thread ran: {output:?}");
    assert_eq!(printed(&machine, "wait_device"), 0xC000_0024, "a device is not waitable");
    assert_eq!(printed(&machine, "wait_closed"), 0xC000_0008, "STATUS_INVALID_HANDLE after ZwClose");
    machine.stop_driver(driver).unwrap();
    machine.verdict().unwrap();
}
