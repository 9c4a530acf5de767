//! The user-visible name `\DosDevices\StageDrvK` for `\Device\StageDrvK`.

use crate::kernel::error::{NtResult, to_result};
use crate::kernel::sys::{IoCreateSymbolicLink, IoDeleteSymbolicLink};
use crate::name::Name;

/// Object-manager prefix of every link name.
pub const LINK_PREFIX: &str = "\\DosDevices\\StageDrv";

/// A symbolic link this driver created. Deleting it is an explicit call made by Unload's
/// stage 3 (or DriverEntry's unwinding).
pub struct SymbolicLink {
    name: Name,
}

impl SymbolicLink {
    /// `IoCreateSymbolicLink`. PASSIVE_LEVEL.
    pub fn create(index: u32, device_name: &Name) -> NtResult<Self> {
        let name = Name::indexed(LINK_PREFIX, index);
        let mut link = name.as_unicode_string();
        let mut target = device_name.as_unicode_string();
        // SAFETY: both strings are valid for the call and only read.
        let status = unsafe { IoCreateSymbolicLink(&raw mut link, &raw mut target) };
        to_result(status).inspect_err(|error| log!(Error, "IoCreateSymbolicLink({index}) failed: {error}"))?;
        Ok(Self { name })
    }

    /// `IoDeleteSymbolicLink`. PASSIVE_LEVEL.
    pub fn delete(self) {
        let mut link = self.name.as_unicode_string();
        // SAFETY: the name is valid for the call; the link exists because we created it.
        let status = unsafe { IoDeleteSymbolicLink(&raw mut link) };
        if let Err(error) = to_result(status) {
            log!(Warning, "IoDeleteSymbolicLink failed: {error}");
        }
    }
}
