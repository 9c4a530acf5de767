//! The device's DACL: SYSTEM and Administrators get full access, and Everyone gets
//! read/write only when `OpenToEveryone=1`. `IoCreateDeviceSecure` would do this, but
//! it lives in the static library wdmsec.lib, so the descriptor is built here and
//! applied through a kernel handle while the device is still initialising.

use crate::kernel::error::{NtResult, to_result};
use crate::kernel::sys::{
    _MODE::KernelMode, ACL_REVISION, DACL_SECURITY_INFORMATION, GENERIC_ALL, GENERIC_READ, GENERIC_WRITE, HANDLE,
    NTSTATUS, OBJ_KERNEL_HANDLE, ObOpenObjectByPointer, PDEVICE_OBJECT, RtlAddAccessAllowedAce, RtlCreateAcl,
    RtlCreateSecurityDescriptor, RtlSetDaclSecurityDescriptor, SECURITY_DESCRIPTOR, SECURITY_DESCRIPTOR_REVISION,
    WRITE_DAC, ZwClose, ZwSetSecurityObject, device_object_type,
};

/// A SID with up to two sub-authorities, laid out as `SID` is.
#[repr(C)]
struct Sid {
    revision: u8,
    sub_authority_count: u8,
    identifier_authority: [u8; 6],
    sub_authority: [u32; 2],
}

const fn sid(authority: u8, count: u8, sub_authority: [u32; 2]) -> Sid {
    Sid { revision: 1, sub_authority_count: count, identifier_authority: [0, 0, 0, 0, 0, authority], sub_authority }
}

/// S-1-5-18
const LOCAL_SYSTEM: Sid = sid(5, 1, [18, 0]);
/// S-1-5-32-544
const ADMINISTRATORS: Sid = sid(5, 2, [32, 544]);
/// S-1-1-0
const EVERYONE: Sid = sid(1, 1, [0, 0]);

/// Builds the DACL and sets it on `device`. PASSIVE_LEVEL, before
/// DO_DEVICE_INITIALIZING is cleared.
pub fn apply(device: PDEVICE_OBJECT, open_to_everyone: bool) -> NtResult {
    let mut descriptor = SECURITY_DESCRIPTOR::default();
    // Room for an ACL header and three ACEs with their SIDs.
    let mut acl = [0u64; 16];
    let acl_ptr = acl.as_mut_ptr().cast();
    let mut entries =
        [(&LOCAL_SYSTEM, GENERIC_ALL), (&ADMINISTRATORS, GENERIC_ALL), (&EVERYONE, GENERIC_READ | GENERIC_WRITE)];
    let count = if open_to_everyone { 3 } else { 2 };
    // SAFETY: the ACL buffer is writable for its full size.
    check("RtlCreateAcl", unsafe { RtlCreateAcl(acl_ptr, size_of_val(&acl) as u32, ACL_REVISION) })?;
    for (sid, mask) in entries.iter_mut().take(count) {
        // SAFETY: the ACL was created above and the SID is a valid, constant SID.
        check("RtlAddAccessAllowedAce", unsafe {
            RtlAddAccessAllowedAce(acl_ptr, ACL_REVISION, *mask, core::ptr::from_ref(*sid).cast_mut().cast())
        })?;
    }
    // SAFETY: the descriptor is a local we own.
    check("RtlCreateSecurityDescriptor", unsafe {
        RtlCreateSecurityDescriptor((&raw mut descriptor).cast(), SECURITY_DESCRIPTOR_REVISION)
    })?;
    // SAFETY: descriptor and ACL are valid locals that outlive ZwSetSecurityObject.
    check("RtlSetDaclSecurityDescriptor", unsafe {
        RtlSetDaclSecurityDescriptor((&raw mut descriptor).cast(), 1, acl_ptr, 0)
    })?;
    let mut handle: HANDLE = core::ptr::null_mut();
    // SAFETY: our own device object, checked to be one; a kernel handle with WRITE_DAC.
    check("ObOpenObjectByPointer", unsafe {
        ObOpenObjectByPointer(
            device.cast(),
            OBJ_KERNEL_HANDLE,
            core::ptr::null_mut(),
            WRITE_DAC,
            device_object_type(),
            KernelMode as i8,
            &raw mut handle,
        )
    })?;
    // SAFETY: the handle is open; the descriptor is absolute and valid.
    let status = unsafe { ZwSetSecurityObject(handle, DACL_SECURITY_INFORMATION, (&raw mut descriptor).cast()) };
    // SAFETY: opened above, closed once.
    let _ = unsafe { ZwClose(handle) };
    check("ZwSetSecurityObject", status)
}

fn check(what: &str, status: NTSTATUS) -> NtResult {
    to_result(status).inspect_err(|error| log!(Error, "{what} failed: {error}"))
}
