//! Helpers shared by ntsim's own tests: the usual DriverEntry body (a named device,
//! its symbolic link, CREATE/CLEANUP/CLOSE completed), per-device driver state, IRP
//! helpers, and assertions on the machine's verdict.
//!
//! Test drivers are plain `unsafe extern "C"` functions that the tests of one binary
//! share, so they keep no state in globals: each device extension holds a pointer to a
//! [`State`] of its own. The state is leaked on purpose: kernel objects in it (timers,
//! DPCs, events) may still be known to a machine that stopped at a bug check after the
//! device object was freed, and ntsim must never read freed memory through them.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::sync::atomic::{AtomicPtr, AtomicU32};

use ntsim::wdk_sys::ntddk::{
    DbgPrint, IoCreateDevice, IoCreateSymbolicLink, IoDeleteDevice, IoDeleteSymbolicLink, IofCompleteRequest,
    KeWaitForSingleObject,
};
use ntsim::wdk_sys::{
    _IO_WORKITEM, _KWAIT_REASON, _MODE, DO_BUFFERED_IO, DO_DEVICE_INITIALIZING, FILE_DEVICE_SECURE_OPEN,
    FILE_DEVICE_UNKNOWN, HANDLE, IRP, IRP_MJ_CLEANUP, IRP_MJ_CLOSE, IRP_MJ_CREATE, KDPC, KEVENT, KSPIN_LOCK, KTIMER,
    LARGE_INTEGER, NT_SUCCESS, NTSTATUS, PDEVICE_OBJECT, PDRIVER_DISPATCH, PDRIVER_OBJECT, PDRIVER_UNLOAD,
    PIO_STACK_LOCATION, PIRP, PVOID, SL_PENDING_RETURNED, STATUS_SUCCESS, UNICODE_STRING,
};
use ntsim::{Config, Driver, DriverEntry, Machine, Stopped, Violation};

pub const DEVICE: &str = r"\Device\NtsimCheck";
pub const LINK: &str = r"\??\NtsimCheck";
/// What a client opens.
pub const PATH: &str = r"\\.\NtsimCheck";

/// A pool tag, `Chk1` in a debugger.
pub const TAG: u32 = u32::from_le_bytes(*b"Chk1");

/// Per-device driver state; every field starts zeroed (a zeroed KSPIN_LOCK is an
/// initialised one).
#[repr(C)]
pub struct State {
    pub lock: KSPIN_LOCK,
    pub lock2: KSPIN_LOCK,
    pub timer: KTIMER,
    pub dpc: KDPC,
    pub timer2: KTIMER,
    pub dpc2: KDPC,
    pub event: KEVENT,
    pub done: KEVENT,
    pub work_item: AtomicPtr<_IO_WORKITEM>,
    pub thread_handle: HANDLE,
    pub thread: PVOID,
    pub handle: HANDLE,
    /// The IRP the driver holds pending, if any.
    pub pending: AtomicPtr<IRP>,
    pub counter: AtomicU32,
    pub ticks: AtomicU32,
    pub blocks: [PVOID; 4],
}

/// UTF-16 without terminator.
pub fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

/// A UNICODE_STRING over `buffer` (which must outlive it).
pub fn counted(buffer: &mut [u16]) -> UNICODE_STRING {
    let bytes = u16::try_from(buffer.len() * 2).expect("short name");
    UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: buffer.as_mut_ptr() }
}

/// One line of debug output (DbgPrint), which the test reads back with
/// [`Machine::debug_output`]: the channel from a test driver to its test.
pub fn print(text: &str) {
    let mut line = text.as_bytes().to_vec();
    line.push(0);
    // SAFETY: "%s" consumes exactly the one NUL-terminated string passed; both strings
    // live across the call.
    unsafe { DbgPrint(c"%s".as_ptr().cast(), line.as_ptr()) };
}

/// The state of a device made by [`create_device`].
///
/// # Safety
/// `device` was created by [`create_device`] (it may have been deleted since: the
/// pointer is read before deletion by callers that delete).
pub unsafe fn state(device: PDEVICE_OBJECT) -> *mut State {
    // SAFETY: the extension of such a device holds the state pointer.
    unsafe { *(*device).DeviceExtension.cast::<*mut State>() }
}

/// The state of the driver's first (only) device.
///
/// # Safety
/// The driver's first device was created by [`create_device`].
pub unsafe fn driver_state(driver: PDRIVER_OBJECT) -> *mut State {
    // SAFETY: guaranteed by the caller.
    unsafe { state((*driver).DeviceObject) }
}

/// IoCreateDevice for [`DEVICE`] with a fresh [`State`]; no link yet, still
/// initializing.
///
/// # Safety
/// `driver` is the driver object passed to DriverEntry.
pub unsafe fn create_device(driver: PDRIVER_OBJECT) -> Result<PDEVICE_OBJECT, NTSTATUS> {
    let mut name = wide(DEVICE);
    let mut unicode = counted(&mut name);
    let mut device: PDEVICE_OBJECT = std::ptr::null_mut();
    let extension = u32::try_from(size_of::<*mut State>()).expect("small");
    // SAFETY: every pointer is valid for the call.
    let status = unsafe {
        IoCreateDevice(
            driver,
            extension,
            &raw mut unicode,
            FILE_DEVICE_UNKNOWN,
            FILE_DEVICE_SECURE_OPEN,
            0,
            &raw mut device,
        )
    };
    if !NT_SUCCESS(status) {
        return Err(status);
    }
    // SAFETY: State is plain data and atomics, for which all-zero is valid.
    let fresh: *mut State = Box::into_raw(unsafe { Box::<State>::new_zeroed().assume_init() });
    // SAFETY: the new device's extension is pointer-sized and ours.
    unsafe { *(*device).DeviceExtension.cast::<*mut State>() = fresh };
    // SAFETY: the device is not visible to I/O yet; its flags are ours.
    unsafe { (*device).Flags |= DO_BUFFERED_IO };
    Ok(device)
}

/// IoCreateSymbolicLink `link` → `target`.
pub fn create_link(link: &str, target: &str) -> NTSTATUS {
    let (mut l, mut t) = (wide(link), wide(target));
    let (mut lu, mut tu) = (counted(&mut l), counted(&mut t));
    // SAFETY: both names are valid for the call.
    unsafe { IoCreateSymbolicLink(&raw mut lu, &raw mut tu) }
}

/// IoDeleteSymbolicLink.
pub fn delete_link(link: &str) -> NTSTATUS {
    let mut l = wide(link);
    let mut lu = counted(&mut l);
    // SAFETY: the name is valid for the call.
    unsafe { IoDeleteSymbolicLink(&raw mut lu) }
}

/// Lets the I/O manager send requests to `device`.
///
/// # Safety
/// `device` is a device of the calling driver, still in DriverEntry.
pub unsafe fn finish_initializing(device: PDEVICE_OBJECT) {
    // SAFETY: DriverEntry owns the new device's flags.
    unsafe { (*device).Flags &= !DO_DEVICE_INITIALIZING };
}

/// The usual DriverEntry body: [`create_device`], the [`LINK`], CREATE/CLEANUP/CLOSE
/// completed by [`dispatch_basic`], [`unload_clean`] as DriverUnload. Undoes what it
/// did on failure.
///
/// # Safety
/// `driver` is the driver object passed to DriverEntry.
pub unsafe fn setup(driver: PDRIVER_OBJECT) -> Result<PDEVICE_OBJECT, NTSTATUS> {
    // SAFETY: forwarded.
    let device = unsafe { create_device(driver) }?;
    let status = create_link(LINK, DEVICE);
    if !NT_SUCCESS(status) {
        // SAFETY: our device, never exposed.
        unsafe { IoDeleteDevice(device) };
        return Err(status);
    }
    // SAFETY: DriverEntry owns the driver object.
    unsafe {
        (*driver).MajorFunction[IRP_MJ_CREATE as usize] = Some(dispatch_basic);
        (*driver).MajorFunction[IRP_MJ_CLEANUP as usize] = Some(dispatch_basic);
        (*driver).MajorFunction[IRP_MJ_CLOSE as usize] = Some(dispatch_basic);
        (*driver).DriverUnload = Some(unload_clean);
    }
    // SAFETY: still in DriverEntry.
    unsafe { finish_initializing(device) };
    Ok(device)
}

/// A DriverEntry body: [`setup`], then `majors` and `unload` installed.
///
/// # Safety
/// `driver` is the driver object passed to DriverEntry.
pub unsafe fn entry_with(
    driver: PDRIVER_OBJECT,
    majors: &[(u32, PDRIVER_DISPATCH)],
    unload: PDRIVER_UNLOAD,
) -> NTSTATUS {
    // SAFETY: forwarded.
    if let Err(status) = unsafe { setup(driver) } {
        return status;
    }
    for &(major, routine) in majors {
        // SAFETY: DriverEntry owns the driver object.
        unsafe { (*driver).MajorFunction[major as usize] = routine };
    }
    if unload.is_some() {
        // SAFETY: as above.
        unsafe { (*driver).DriverUnload = unload };
    }
    STATUS_SUCCESS
}

/// IoGetCurrentIrpStackLocation.
///
/// # Safety
/// `irp` is a valid IRP.
pub unsafe fn stack(irp: PIRP) -> PIO_STACK_LOCATION {
    // SAFETY: guaranteed by the caller.
    unsafe { (*irp).Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1.CurrentStackLocation }
}

/// IoCompleteRequest with `status` and `information`.
///
/// # Safety
/// The caller owns `irp` (or deliberately does not, in a negative test).
pub unsafe fn complete(irp: PIRP, status: NTSTATUS, information: u64) {
    // SAFETY: guaranteed by the caller; ntsim keeps completed IRPs readable.
    unsafe {
        (*irp).IoStatus.__bindgen_anon_1.Status = status;
        (*irp).IoStatus.Information = information;
        IofCompleteRequest(irp, 0);
    }
}

/// IoMarkIrpPending.
///
/// # Safety
/// The caller owns `irp`.
pub unsafe fn mark_pending(irp: PIRP) {
    // SAFETY: the current stack location of an owned IRP is valid.
    unsafe { (*stack(irp)).Control |= SL_PENDING_RETURNED as u8 };
}

/// Completes CREATE, CLEANUP and CLOSE with success, printing `create`, `cleanup` or
/// `close` first.
pub unsafe extern "C" fn dispatch_basic(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the I/O manager passes a valid IRP.
    let major = u32::from(unsafe { (*stack(irp)).MajorFunction });
    print(match major {
        IRP_MJ_CREATE => "create",
        IRP_MJ_CLEANUP => "cleanup",
        IRP_MJ_CLOSE => "close",
        _ => "other",
    });
    // SAFETY: we own the IRP and leave it alone afterwards.
    unsafe { complete(irp, STATUS_SUCCESS, 0) };
    STATUS_SUCCESS
}

/// A correct DriverUnload for [`setup`]: the link, then the device.
pub unsafe extern "C" fn unload_clean(driver: PDRIVER_OBJECT) {
    delete_link(LINK);
    // SAFETY: the driver's only device, which nothing references anymore.
    unsafe { IoDeleteDevice((*driver).DeviceObject) };
}

/// A relative timeout of `ms` milliseconds.
pub fn relative_ms(ms: i64) -> LARGE_INTEGER {
    LARGE_INTEGER { QuadPart: -ms * 10_000 }
}

/// KeWaitForSingleObject (Executive, KernelMode, not alertable); `None` waits forever.
///
/// # Safety
/// `object` is an initialised dispatcher object that stays valid during the wait.
pub unsafe fn wait(object: PVOID, timeout: Option<i64>) -> NTSTATUS {
    let mut due = LARGE_INTEGER { QuadPart: timeout.unwrap_or(0) };
    let due_ptr = if timeout.is_some() { &raw mut due } else { std::ptr::null_mut() };
    // SAFETY: guaranteed by the caller; `due` outlives the call.
    unsafe { KeWaitForSingleObject(object, _KWAIT_REASON::Executive, _MODE::KernelMode as i8, 0, due_ptr) }
}

/// A machine with the default seeded scheduler.
pub fn machine() -> Machine {
    Machine::new(Config::seeded(1))
}

/// Loads `entry` as driver `chk` and expects DriverEntry to succeed.
#[track_caller]
pub fn load(machine: &Machine, entry: DriverEntry) -> Driver {
    let (driver, status) = machine.load_driver("chk", entry).unwrap_or_else(|e| panic!("DriverEntry: {e}"));
    assert_eq!(status, STATUS_SUCCESS, "DriverEntry status");
    driver
}

/// The bug check that `result` stopped with.
#[track_caller]
pub fn bugcheck<T>(result: Result<T, Stopped>) -> Box<Violation> {
    match result {
        Err(Stopped::BugCheck(v)) => v,
        Err(Stopped::Hang(what)) => panic!("expected a bug check, got a hang: {what}"),
        Ok(_) => panic!("expected a bug check, but the call succeeded"),
    }
}

/// Asserts the bug-check code and first parameter.
#[track_caller]
pub fn assert_check(v: &Violation, code: u32, p1: u64) {
    assert_eq!((v.code, v.params[0]), (code, p1), "wrong bug check:\n{v}");
}

/// The value the driver printed as `key=0x...`.
#[track_caller]
pub fn printed(machine: &Machine, key: &str) -> u64 {
    let prefix = format!("{key}=0x");
    let output = machine.debug_output();
    let line =
        output.iter().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {key}= in {output:#?}"));
    u64::from_str_radix(line.trim(), 16).expect("hex")
}

/// Prints `key=0x...` for `value` (an address, a handle).
pub fn print_value(key: &str, value: u64) {
    print(&format!("{key}={value:#x}"));
}

/// Asserts that the machine's verdict is clean.
#[track_caller]
pub fn assert_clean(machine: &Machine) {
    if let Err(e) = machine.verdict() {
        panic!("unexpected verdict: {e}");
    }
}

/// Starts a system thread running `routine(s)` and keeps a reference to its object in
/// `s.thread` (the kernel handle is closed at once), printing it as "thread".
///
/// # Safety
/// `s` is a live driver state; call at PASSIVE_LEVEL from driver code.
pub unsafe fn start_thread(s: *mut State, routine: unsafe extern "C" fn(PVOID)) {
    use ntsim::wdk_sys::THREAD_ALL_ACCESS;
    use ntsim::wdk_sys::ntddk::{ObReferenceObjectByHandle, PsCreateSystemThread, ZwClose};
    // SAFETY: valid out-pointers; the handle is closed once the object is referenced.
    unsafe {
        let mut handle: HANDLE = std::ptr::null_mut();
        let status = PsCreateSystemThread(
            &raw mut handle,
            THREAD_ALL_ACCESS,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            Some(routine),
            s.cast(),
        );
        if status != STATUS_SUCCESS {
            print("PsCreateSystemThread failed");
            return;
        }
        let _ = ObReferenceObjectByHandle(
            handle,
            THREAD_ALL_ACCESS,
            std::ptr::null_mut(),
            _MODE::KernelMode as i8,
            &raw mut (*s).thread,
            std::ptr::null_mut(),
        );
        let _ = ZwClose(handle);
        print_value("thread", (*s).thread as u64);
    }
}
