//! Security of device objects: the Rtl routines that build a descriptor, applying it
//! with ZwSetSecurityObject, the descriptor IoCreateDevice gives a named device, and
//! the access check an open goes through.
//!
//! ACLs, ACEs and SIDs are read and written in their Windows binary formats.

use std::fmt::Write as _;

use crate::machine::kcall;
use crate::wdk_sys::{
    ACCESS_MASK, BOOLEAN, DELETE, FILE_ALL_ACCESS, FILE_DEVICE_CD_ROM, FILE_DEVICE_CD_ROM_FILE_SYSTEM,
    FILE_DEVICE_DFS_FILE_SYSTEM, FILE_DEVICE_DISK, FILE_DEVICE_DISK_FILE_SYSTEM, FILE_DEVICE_FILE_SYSTEM,
    FILE_DEVICE_MASS_STORAGE, FILE_DEVICE_NETWORK, FILE_DEVICE_NETWORK_FILE_SYSTEM, FILE_DEVICE_TAPE_FILE_SYSTEM,
    FILE_DEVICE_VIRTUAL_DISK, FILE_GENERIC_EXECUTE, FILE_GENERIC_READ, FILE_GENERIC_WRITE, FILE_REMOVABLE_MEDIA,
    GENERIC_ALL, GENERIC_EXECUTE, GENERIC_READ, GENERIC_WRITE, HANDLE, MAXIMUM_ALLOWED, NTSTATUS, PACL,
    PSECURITY_DESCRIPTOR, PSID, SECURITY_DESCRIPTOR, SECURITY_INFORMATION, STATUS_ACCESS_DENIED,
    STATUS_ALLOTTED_SPACE_EXCEEDED, STATUS_BUFFER_TOO_SMALL, STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER,
    STATUS_SUCCESS, ULONG,
};

const SE_DACL_PRESENT: u16 = 0x0004;
const SE_SELF_RELATIVE: u16 = 0x8000;
const ACL_HEADER: usize = 8;

const ACCESS_ALLOWED_ACE_TYPE: u8 = 0;
const ACCESS_DENIED_ACE_TYPE: u8 = 1;

/// S-1-1-0, S-1-5-18, S-1-5-32-544, S-1-5-12, S-1-5-4.
const EVERYONE: &str = "S-1-1-0";
const LOCAL_SYSTEM: &str = "S-1-5-18";
const ADMINISTRATORS: &str = "S-1-5-32-544";
const RESTRICTED: &str = "S-1-5-12";
const INTERACTIVE: &str = "S-1-5-4";

/// One access-allowed (or access-denied) entry of a DACL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ace {
    /// The SID in `S-1-5-32-544` form.
    pub sid: String,
    /// The access mask the entry allows.
    pub mask: u32,
    /// An access-allowed ACE; `false` for an access-denied one.
    pub allow: bool,
}

impl Ace {
    fn allow(sid: &str, mask: u32) -> Ace {
        Ace { sid: sid.to_owned(), mask, allow: true }
    }
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
            let _ = write!(text, "-{sub}");
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
            if kind == ACCESS_ALLOWED_ACE_TYPE || kind == ACCESS_DENIED_ACE_TYPE {
                aces.push(Ace {
                    sid: sid_text(at.add(8)),
                    mask: std::ptr::read_unaligned(at.add(4).cast::<u32>()),
                    allow: kind == ACCESS_ALLOWED_ACE_TYPE,
                });
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
                // Offset 0: DACL present but NULL.
                (offset != 0).then(|| parse_acl(SecurityDescriptor.cast::<u8>().add(offset as usize)))
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

/// The groups a client process's token holds: an interactive logon's, with
/// Administrators (an elevated administrator) or Users (a standard user).
pub(crate) fn groups(admin: bool) -> &'static [&'static str] {
    if admin {
        &[EVERYONE, "S-1-5-11", INTERACTIVE, "S-1-5-32-545", ADMINISTRATORS]
    } else {
        &[EVERYONE, "S-1-5-11", INTERACTIVE, "S-1-5-32-545"]
    }
}

/// RtlMapGenericMask with the file object type's mapping, which the I/O manager
/// applies to an open's desired access (IopParseDevice maps with
/// `IoFileObjectType->TypeInfo.GenericMapping`; FILE_GENERIC_* in wdm.h).
pub fn map_generic(mask: ACCESS_MASK) -> ACCESS_MASK {
    let mut mapped = mask & !(GENERIC_READ | GENERIC_WRITE | GENERIC_EXECUTE | GENERIC_ALL);
    for (generic, specific) in [
        (GENERIC_READ, FILE_GENERIC_READ),
        (GENERIC_WRITE, FILE_GENERIC_WRITE),
        (GENERIC_EXECUTE, FILE_GENERIC_EXECUTE),
        (GENERIC_ALL, FILE_ALL_ACCESS),
    ] {
        if mask & generic != 0 {
            mapped |= specific;
        }
    }
    mapped
}

/// SeAccessCheck of `desired` (generic bits allowed) against `dacl` for a token with
/// `groups`: the rights granted, or STATUS_ACCESS_DENIED. ACEs are read in order; a
/// denied ACE refuses the rights not yet granted. `None` is a NULL DACL (everything
/// granted). MAXIMUM_ALLOWED asks for whatever the DACL grants. ACCESS_SYSTEM_SECURITY
/// (a privilege, not a DACL right) is never granted.
pub(crate) fn access_check(
    dacl: Option<&[Ace]>,
    groups: &[&str],
    desired: ACCESS_MASK,
) -> Result<ACCESS_MASK, NTSTATUS> {
    let maximum = desired & MAXIMUM_ALLOWED != 0;
    let wanted = map_generic(desired & !MAXIMUM_ALLOWED);
    let Some(dacl) = dacl else {
        return Ok(if maximum { wanted | FILE_ALL_ACCESS } else { wanted });
    };
    let (mut granted, mut denied) = (0, 0);
    for ace in dacl.iter().filter(|ace| groups.contains(&ace.sid.as_str())) {
        let rights = map_generic(ace.mask);
        if ace.allow {
            granted |= rights & !denied;
        } else {
            denied |= rights & !granted;
        }
    }
    let result = if maximum { granted } else { wanted };
    if granted & wanted == wanted && result != 0 { Ok(result) } else { Err(STATUS_ACCESS_DENIED) }
}

/// The DACL IoCreateDevice gives a named device object when the driver supplies none,
/// chosen by device type as Windows' IoCreateDevice does. For most types it is
/// SePublicOpenUnrestrictedDacl: SYSTEM and Administrators GENERIC_ALL, Everyone
/// GENERIC_READ | GENERIC_WRITE | GENERIC_EXECUTE, RESTRICTED GENERIC_READ |
/// GENERIC_EXECUTE ("Controlling Device Access": "For most device types and
/// characteristics, the default security descriptor gives full access (GENERIC_ALL) to
/// administrators, and read, write, and execute access ... to everyone else"; ReactOS
/// `se/acl.c` SepInitDACLs builds the same lists, but with Everyone GENERIC_ALL in
/// this one). Disks, file systems and network
/// devices get SePublicDefaultUnrestrictedDacl, where Everyone has GENERIC_EXECUTE
/// only; a CD-ROM or removable disk adds INTERACTIVE read/write/delete on a
/// workstation (the per-type choice is Windows' own, seen in its IoCreateDevice and
/// IopCreateDefaultDeviceSecurityDescriptor).
pub(crate) fn default_dacl(device_type: u32, characteristics: u32) -> Vec<Ace> {
    let public_default_unrestricted = || {
        vec![
            Ace::allow(EVERYONE, GENERIC_EXECUTE),
            Ace::allow(LOCAL_SYSTEM, GENERIC_ALL),
            Ace::allow(ADMINISTRATORS, GENERIC_ALL),
            Ace::allow(RESTRICTED, GENERIC_EXECUTE),
        ]
    };
    match device_type {
        FILE_DEVICE_CD_ROM => removable(public_default_unrestricted()),
        FILE_DEVICE_DISK if characteristics & FILE_REMOVABLE_MEDIA != 0 => removable(public_default_unrestricted()),
        FILE_DEVICE_DISK
        | FILE_DEVICE_CD_ROM_FILE_SYSTEM
        | FILE_DEVICE_DISK_FILE_SYSTEM
        | FILE_DEVICE_FILE_SYSTEM
        | FILE_DEVICE_NETWORK
        | FILE_DEVICE_NETWORK_FILE_SYSTEM
        | FILE_DEVICE_TAPE_FILE_SYSTEM
        | FILE_DEVICE_VIRTUAL_DISK
        | FILE_DEVICE_MASS_STORAGE
        | FILE_DEVICE_DFS_FILE_SYSTEM => public_default_unrestricted(),
        _ => vec![
            Ace::allow(EVERYONE, GENERIC_READ | GENERIC_WRITE | GENERIC_EXECUTE),
            Ace::allow(LOCAL_SYSTEM, GENERIC_ALL),
            Ace::allow(ADMINISTRATORS, GENERIC_ALL),
            Ace::allow(RESTRICTED, GENERIC_READ | GENERIC_EXECUTE),
        ],
    }
}

/// Removable media on a workstation: the interactive user may read, write and delete.
fn removable(mut dacl: Vec<Ace>) -> Vec<Ace> {
    dacl.push(Ace::allow(INTERACTIVE, GENERIC_READ | GENERIC_WRITE | DELETE));
    dacl
}

impl crate::machine::Machine {
    /// The DACL of the device named `name` (`\Device\...`): the one the driver set with
    /// ZwSetSecurityObject, else the default IoCreateDevice gave it; `None` for a NULL
    /// DACL (or no such device).
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
