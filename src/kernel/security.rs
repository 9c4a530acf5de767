//! A device object's DACL, set through a kernel handle while the device is still
//! initialising. `IoCreateDeviceSecure` would do this, but it lives in the static
//! library wdmsec.lib, so the descriptor is built here with RtlCreateAcl /
//! RtlAddAccessAllowedAce / RtlCreateSecurityDescriptor and applied with
//! ObOpenObjectByPointer + ZwSetSecurityObject. Who gets which access is policy.

use super::device::DeviceObject;
use super::error::{NtError, NtResult, to_result};
use super::irql;
use super::sys::{
    _MODE::KernelMode, ACCESS_MASK, ACL_REVISION, DACL_SECURITY_INFORMATION, HANDLE, NTSTATUS, OBJ_KERNEL_HANDLE,
    ObOpenObjectByPointer, RtlAddAccessAllowedAce, RtlCreateAcl, RtlCreateSecurityDescriptor,
    RtlSetDaclSecurityDescriptor, SECURITY_DESCRIPTOR, SECURITY_DESCRIPTOR_REVISION, WRITE_DAC, ZwClose,
    ZwSetSecurityObject, device_object_type,
};

/// A SID with up to two sub-authorities, laid out as `SID` is.
#[repr(C)]
pub struct Sid {
    revision: u8,
    sub_authority_count: u8,
    identifier_authority: [u8; 6],
    sub_authority: [u32; 2],
}

const fn sid(authority: u8, count: u8, sub_authority: [u32; 2]) -> Sid {
    Sid { revision: 1, sub_authority_count: count, identifier_authority: [0, 0, 0, 0, 0, authority], sub_authority }
}

/// S-1-5-18
pub const LOCAL_SYSTEM: Sid = sid(5, 1, [18, 0]);
/// S-1-5-32-544
pub const ADMINISTRATORS: Sid = sid(5, 2, [32, 544]);
/// S-1-1-0
pub const EVERYONE: Sid = sid(1, 1, [0, 0]);

/// Most access-allowed entries one DACL holds (the ACL buffer is sized for them).
const MAX_ENTRIES: usize = 3;

/// Sets a DACL of access-allowed entries (`(sid, access)`, at most three) on `device`.
/// PASSIVE_LEVEL, before DO_DEVICE_INITIALIZING is cleared. A failing step is logged by
/// its DDI's name.
///
/// # Errors
/// STATUS_INVALID_PARAMETER for more than three entries; otherwise the status of the
/// first DDI that failed.
pub fn set_dacl<E>(device: &DeviceObject<E>, entries: &[(&Sid, ACCESS_MASK)]) -> NtResult {
    irql::assert_passive();
    if entries.len() > MAX_ENTRIES {
        return Err(NtError::INVALID_PARAMETER);
    }
    let mut descriptor = SECURITY_DESCRIPTOR::default();
    // Room for an ACL header and three ACEs with their SIDs.
    let mut acl = [0u64; 16];
    let acl_ptr = acl.as_mut_ptr().cast();
    // 128 bytes.
    #[allow(clippy::cast_possible_truncation)]
    let acl_size = size_of_val(&acl) as u32;
    // SAFETY: the ACL buffer is writable for its full size.
    check("RtlCreateAcl", unsafe { RtlCreateAcl(acl_ptr, acl_size, ACL_REVISION) })?;
    for &(sid, mask) in entries {
        // SAFETY: the ACL was created above with room for MAX_ENTRIES entries; the SID is
        // a valid SID, only read.
        check("RtlAddAccessAllowedAce", unsafe {
            RtlAddAccessAllowedAce(acl_ptr, ACL_REVISION, mask, core::ptr::from_ref(sid).cast_mut().cast())
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
    // SAFETY: a live device object (the borrow), checked by the object manager to be one;
    // a kernel handle with WRITE_DAC.
    check("ObOpenObjectByPointer", unsafe {
        ObOpenObjectByPointer(
            device.as_raw().cast(),
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
