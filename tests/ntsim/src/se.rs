//! Security of device objects: the Rtl routines that build a descriptor, applying it
//! with ZwSetSecurityObject, and the access check an open goes through.
//!
//! ACLs, ACEs and SIDs are read and written in their Windows binary formats.

use crate::machine::{Ctx, kcall};
use crate::wdk_sys::{
    ACCESS_MASK, BOOLEAN, HANDLE, NTSTATUS, PACL, PSECURITY_DESCRIPTOR, PSID, SECURITY_DESCRIPTOR,
    SECURITY_INFORMATION, STATUS_ACCESS_DENIED, STATUS_ALLOTTED_SPACE_EXCEEDED, STATUS_BUFFER_TOO_SMALL,
    STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER, STATUS_SUCCESS, ULONG,
};

const GENERIC_READ: u32 = 0x8000_0000;
const GENERIC_WRITE: u32 = 0x4000_0000;
const GENERIC_ALL: u32 = 0x1000_0000;
const SE_DACL_PRESENT: u16 = 0x0004;
const SE_SELF_RELATIVE: u16 = 0x8000;
const ACL_HEADER: usize = 8;

/// One access-allowed entry of a DACL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ace {
    /// The SID in `S-1-5-32-544` form.
    pub sid: String,
    /// The access mask the entry allows.
    pub mask: u32,
}

/// Bytes of a SID at `sid` (8 + 4 per sub-authority).
///
/// # Safety
/// `sid` points to a valid SID.
unsafe fn sid_len(sid: *const u8) -> usize {
    // SAFETY: byte 1 is SubAuthorityCount.
    8 + 4 * usize::from(unsafe { *sid.add(1) })
}

/// # Safety
/// `sid` points to a valid SID.
unsafe fn sid_text(sid: *const u8) -> String {
    // SAFETY: a valid SID has its header and `count` sub-authorities.
    unsafe {
        let count = usize::from(*sid.add(1));
        let authority = (2..8).fold(0u64, |a, i| (a << 8) | u64::from(*sid.add(i)));
        let mut text = format!("S-{}-{authority}", *sid);
        for i in 0..count {
            let sub = std::ptr::read_unaligned(sid.add(8 + 4 * i).cast::<u32>());
            text.push_str(&format!("-{sub}"));
        }
        text
    }
}

/// # Safety
/// `acl` points to a valid ACL.
unsafe fn parse_acl(acl: *const u8) -> Vec<Ace> {
    // SAFETY: a valid ACL has a header and AceCount well-formed ACEs.
    unsafe {
        let count = std::ptr::read_unaligned(acl.add(4).cast::<u16>());
        let mut at = acl.add(ACL_HEADER);
        let mut aces = Vec::new();
        for _ in 0..count {
            let (kind, size) = (*at, std::ptr::read_unaligned(at.add(2).cast::<u16>()));
            if kind == 0 {
                aces.push(Ace { sid: sid_text(at.add(8)), mask: std::ptr::read_unaligned(at.add(4).cast::<u32>()) });
            }
            at = at.add(usize::from(size));
        }
        aces
    }
}

/// RtlCreateSecurityDescriptor: an empty absolute security descriptor.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn RtlCreateSecurityDescriptor(
    SecurityDescriptor: PSECURITY_DESCRIPTOR,
    Revision: ULONG,
) -> NTSTATUS {
    kcall("RtlCreateSecurityDescriptor", |_ctx| {
        if Revision != 1 {
            return Ok(crate::wdk_sys::STATUS_UNKNOWN_REVISION);
        }
        // SAFETY: the caller passed a SECURITY_DESCRIPTOR-sized buffer.
        unsafe {
            std::ptr::write_bytes(SecurityDescriptor.cast::<u8>(), 0, size_of::<SECURITY_DESCRIPTOR>());
            (*SecurityDescriptor.cast::<SECURITY_DESCRIPTOR>()).Revision = 1;
        }
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::RtlCreateSecurityDescriptor = RtlCreateSecurityDescriptor;

/// RtlSetDaclSecurityDescriptor: sets (or clears) the descriptor's DACL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn RtlSetDaclSecurityDescriptor(
    SecurityDescriptor: PSECURITY_DESCRIPTOR,
    DaclPresent: BOOLEAN,
    Dacl: PACL,
    _DaclDefaulted: BOOLEAN,
) -> NTSTATUS {
    kcall("RtlSetDaclSecurityDescriptor", |_ctx| {
        let sd = SecurityDescriptor.cast::<SECURITY_DESCRIPTOR>();
        // SAFETY: an absolute descriptor made by RtlCreateSecurityDescriptor.
        unsafe {
            if (*sd).Control & SE_SELF_RELATIVE != 0 {
                return Ok(crate::wdk_sys::STATUS_INVALID_SECURITY_DESCR);
            }
            if DaclPresent != 0 {
                (*sd).Control |= SE_DACL_PRESENT;
                (*sd).Dacl = Dacl;
            } else {
                (*sd).Control &= !SE_DACL_PRESENT;
                (*sd).Dacl = std::ptr::null_mut();
            }
        }
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::RtlSetDaclSecurityDescriptor = RtlSetDaclSecurityDescriptor;

/// RtlCreateAcl: an empty ACL of the given size and revision.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn RtlCreateAcl(Acl: PACL, AclLength: ULONG, AclRevision: ULONG) -> NTSTATUS {
    kcall("RtlCreateAcl", |_ctx| {
        if (AclLength as usize) < ACL_HEADER {
            return Ok(STATUS_BUFFER_TOO_SMALL);
        }
        if !(2..=4).contains(&AclRevision) {
            return Ok(STATUS_INVALID_PARAMETER);
        }
        let bytes = Acl.cast::<u8>();
        // SAFETY: the caller passed AclLength writable bytes.
        unsafe {
            std::ptr::write_bytes(bytes, 0, ACL_HEADER);
            *bytes = u8::try_from(AclRevision).expect("checked");
            std::ptr::write_unaligned(bytes.add(2).cast::<u16>(), u16::try_from(AclLength).unwrap_or(u16::MAX));
        }
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::RtlCreateAcl = RtlCreateAcl;

/// RtlAddAccessAllowedAce: appends an access-allowed entry.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn RtlAddAccessAllowedAce(
    Acl: PACL,
    _AceRevision: ULONG,
    AccessMask: ACCESS_MASK,
    Sid: PSID,
) -> NTSTATUS {
    kcall("RtlAddAccessAllowedAce", |_ctx| {
        let bytes = Acl.cast::<u8>();
        // SAFETY: a valid ACL made by RtlCreateAcl and a valid SID.
        unsafe {
            let size = usize::from(std::ptr::read_unaligned(bytes.add(2).cast::<u16>()));
            let count = std::ptr::read_unaligned(bytes.add(4).cast::<u16>());
            let mut used = ACL_HEADER;
            for _ in 0..count {
                used += usize::from(std::ptr::read_unaligned(bytes.add(used + 2).cast::<u16>()));
            }
            let sid_bytes = sid_len(Sid.cast());
            let ace_size = 8 + sid_bytes;
            if used + ace_size > size {
                return Ok(STATUS_ALLOTTED_SPACE_EXCEEDED);
            }
            let ace = bytes.add(used);
            *ace = 0;
            *ace.add(1) = 0;
            std::ptr::write_unaligned(ace.add(2).cast::<u16>(), u16::try_from(ace_size).expect("small"));
            std::ptr::write_unaligned(ace.add(4).cast::<u32>(), AccessMask);
            std::ptr::copy_nonoverlapping(Sid.cast::<u8>(), ace.add(8), sid_bytes);
            std::ptr::write_unaligned(bytes.add(4).cast::<u16>(), count + 1);
        }
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::RtlAddAccessAllowedAce = RtlAddAccessAllowedAce;

/// Sets the DACL of the device a kernel handle refers to.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ZwSetSecurityObject(
    Handle: HANDLE,
    SecurityInformation: SECURITY_INFORMATION,
    SecurityDescriptor: PSECURITY_DESCRIPTOR,
) -> NTSTATUS {
    kcall("ZwSetSecurityObject", |ctx| {
        let Some(object) = crate::ob::kernel_handle_object(ctx, Handle as u64) else {
            return Ok(STATUS_INVALID_HANDLE);
        };
        // DACL_SECURITY_INFORMATION is 4.
        if SecurityInformation & 4 == 0 {
            return Ok(STATUS_SUCCESS);
        }
        let sd = SecurityDescriptor.cast::<SECURITY_DESCRIPTOR>();
        // SAFETY: a valid descriptor, absolute or self-relative.
        let dacl = unsafe {
            let control = (*sd).Control;
            if control & SE_DACL_PRESENT == 0 {
                None
            } else if control & SE_SELF_RELATIVE != 0 {
                let offset = std::ptr::read_unaligned(SecurityDescriptor.cast::<u8>().add(16).cast::<u32>());
                Some(parse_acl(SecurityDescriptor.cast::<u8>().add(offset as usize)))
            } else if (*sd).Dacl.is_null() {
                None
            } else {
                Some(parse_acl((*sd).Dacl.cast()))
            }
        };
        match ctx.io.devices.get_mut(&object) {
            Some(device) => {
                device.dacl = dacl;
                Ok(STATUS_SUCCESS)
            }
            None => Ok(STATUS_INVALID_HANDLE),
        }
    })
}
const _: crate::wdk_sys::fnsig::ZwSetSecurityObject = ZwSetSecurityObject;

/// The groups a client process's token holds.
pub(crate) fn groups(admin: bool) -> &'static [&'static str] {
    if admin { &["S-1-1-0", "S-1-5-11", "S-1-5-32-544"] } else { &["S-1-1-0", "S-1-5-11", "S-1-5-32-545"] }
}

/// `None` admits an open for read/write access; a device without a DACL admits all.
pub(crate) fn access_check(ctx: &Ctx<'_>, device: usize, pid: usize) -> Option<NTSTATUS> {
    let dacl = ctx.io.devices.get(&device)?.dacl.as_ref()?;
    let groups = groups(ctx.io.processes[pid].admin);
    let wanted = GENERIC_READ | GENERIC_WRITE;
    let granted = dacl
        .iter()
        .filter(|ace| groups.contains(&ace.sid.as_str()))
        .fold(0, |m, ace| m | if ace.mask & GENERIC_ALL != 0 { wanted } else { ace.mask });
    if granted & wanted == wanted { None } else { Some(STATUS_ACCESS_DENIED) }
}

impl crate::machine::Machine {
    /// The DACL set on the device named `name` (`\Device\...`), if one was set.
    pub fn device_dacl(&self, name: &str) -> Option<Vec<Ace>> {
        let state = self.lock();
        let key = crate::io::device::name_key(name);
        state
            .io
            .devices
            .values()
            .find(|d| d.name.as_deref().map(crate::io::device::name_key) == Some(key.clone()))?
            .dacl
            .clone()
    }
}
