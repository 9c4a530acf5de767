//! Symbolic links in the object manager's namespace (`\DosDevices\…` → `\Device\…`).

use super::error::{NtResult, to_result};
use super::irql;
use super::name::Name;
use super::sys::{IoCreateSymbolicLink, IoDeleteSymbolicLink};

/// A symbolic link this driver created. [`SymbolicLink::delete`] is the only way to
/// remove it; dropping the value leaves the link in place (teardown is explicit code in
/// the Unload stages, never an accident of drop order).
///
/// # Invariants
/// `name` names a link that `IoCreateSymbolicLink` created and nothing deleted yet.
pub struct SymbolicLink {
    name: Name,
}

impl SymbolicLink {
    /// `IoCreateSymbolicLink(name → target)`. PASSIVE_LEVEL.
    ///
    /// # Errors
    /// The status IoCreateSymbolicLink failed with (STATUS_OBJECT_NAME_COLLISION if the
    /// name is taken).
    pub fn create(name: Name, target: &Name) -> NtResult<Self> {
        irql::assert_passive();
        let mut link = name.as_unicode_string();
        let mut target = target.as_unicode_string();
        // SAFETY: both strings are valid for the call and only read.
        to_result(unsafe { IoCreateSymbolicLink(&raw mut link, &raw mut target) })?;
        // INVARIANT: the link was just created.
        Ok(Self { name })
    }

    /// The link's name.
    #[must_use]
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// `IoDeleteSymbolicLink`. PASSIVE_LEVEL.
    ///
    /// # Errors
    /// The status IoDeleteSymbolicLink failed with; the link is forgotten either way.
    pub fn delete(self) -> NtResult {
        irql::assert_passive();
        let mut link = self.name.as_unicode_string();
        // SAFETY: the name is valid for the call; the link exists (type invariant).
        to_result(unsafe { IoDeleteSymbolicLink(&raw mut link) })
    }
}
