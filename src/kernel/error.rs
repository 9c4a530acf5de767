//! NTSTATUS failures as a Rust error: [`NtError`], [`NtResult`] and [`to_result`].
//!
//! The value stays the NTSTATUS itself (`#[repr(transparent)]`), so converting back at
//! the DriverEntry or dispatch boundary is free and nothing changes on the wire.

use core::fmt;
use core::num::NonZeroI32;

use super::sys::{self, NTSTATUS};

/// A failed NTSTATUS.
///
/// # Invariants
/// The status is negative: `NT_SUCCESS` is false for it (errors and warnings), so it is
/// never STATUS_SUCCESS, STATUS_PENDING or another success or informational code.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct NtError(NonZeroI32);

/// The result of a kernel operation that fails with an NTSTATUS.
pub type NtResult<T = ()> = Result<T, NtError>;

/// `Ok(())` for a status that `NT_SUCCESS` accepts.
///
/// # Errors
/// The status as an [`NtError`] when `NT_SUCCESS` rejects it.
pub fn to_result(status: NTSTATUS) -> NtResult {
    NtError::new(status).map_or(Ok(()), Err)
}

/// A named error constant; a status that is not an error fails the build.
macro_rules! error_constants {
    ($($name:ident = $status:ident),* $(,)?) => {
        impl NtError {
            $(
                #[doc = concat!("`", stringify!($status), "`.")]
                pub const $name: Self = match Self::new(sys::$status) {
                    Some(error) => error,
                    // Evaluated at compile time: a non-error status is a build error.
                    #[allow(clippy::panic)]
                    None => panic!(concat!(stringify!($status), " is not an error status")),
                };
            )*
        }
    };
}

error_constants! {
    BUFFER_TOO_SMALL = STATUS_BUFFER_TOO_SMALL,
    CANCELLED = STATUS_CANCELLED,
    DELETE_PENDING = STATUS_DELETE_PENDING,
    INSUFFICIENT_RESOURCES = STATUS_INSUFFICIENT_RESOURCES,
    INVALID_DEVICE_REQUEST = STATUS_INVALID_DEVICE_REQUEST,
    INVALID_PARAMETER = STATUS_INVALID_PARAMETER,
    NAME_TOO_LONG = STATUS_NAME_TOO_LONG,
    NOT_SUPPORTED = STATUS_NOT_SUPPORTED,
    UNSUCCESSFUL = STATUS_UNSUCCESSFUL,
}

impl NtError {
    /// The error for `status`, or `None` if `NT_SUCCESS(status)`.
    #[must_use]
    pub const fn new(status: NTSTATUS) -> Option<Self> {
        if status >= 0 {
            return None;
        }
        match NonZeroI32::new(status) {
            // INVARIANT: `status` is negative.
            Some(value) => Some(Self(value)),
            None => None,
        }
    }

    /// The error of code that still reports failures as a bare NTSTATUS
    /// (`Result<_, NTSTATUS>`): a success code there is a bug, reported as
    /// STATUS_UNSUCCESSFUL rather than as success.
    #[must_use]
    pub fn from_failed(status: NTSTATUS) -> Self {
        debug_assert!(status < 0, "a success status {status:#x} reported as a failure");
        Self::new(status).unwrap_or(Self::UNSUCCESSFUL)
    }

    /// The NTSTATUS, for the DDI or I/O manager boundary.
    #[must_use]
    pub const fn status(self) -> NTSTATUS {
        self.0.get()
    }

    /// `STATUS_…` for the codes this driver produces or passes on, if it is one of them.
    #[must_use]
    pub fn name(self) -> Option<&'static str> {
        // One arm per code: the kernel's status constants are not a Rust enum.
        let names: [(NTSTATUS, &str); 20] = [
            (sys::STATUS_ACCESS_DENIED, "STATUS_ACCESS_DENIED"),
            (sys::STATUS_BUFFER_OVERFLOW, "STATUS_BUFFER_OVERFLOW"),
            (sys::STATUS_BUFFER_TOO_SMALL, "STATUS_BUFFER_TOO_SMALL"),
            (sys::STATUS_CANCELLED, "STATUS_CANCELLED"),
            (sys::STATUS_CONFLICTING_ADDRESSES, "STATUS_CONFLICTING_ADDRESSES"),
            (sys::STATUS_DELETE_PENDING, "STATUS_DELETE_PENDING"),
            (sys::STATUS_INSUFFICIENT_RESOURCES, "STATUS_INSUFFICIENT_RESOURCES"),
            (sys::STATUS_INVALID_DEVICE_REQUEST, "STATUS_INVALID_DEVICE_REQUEST"),
            (sys::STATUS_INVALID_PARAMETER, "STATUS_INVALID_PARAMETER"),
            (sys::STATUS_IO_TIMEOUT, "STATUS_IO_TIMEOUT"),
            (sys::STATUS_NAME_TOO_LONG, "STATUS_NAME_TOO_LONG"),
            (sys::STATUS_NO_MEMORY, "STATUS_NO_MEMORY"),
            (sys::STATUS_NOT_IMPLEMENTED, "STATUS_NOT_IMPLEMENTED"),
            (sys::STATUS_NOT_SUPPORTED, "STATUS_NOT_SUPPORTED"),
            (sys::STATUS_OBJECT_NAME_COLLISION, "STATUS_OBJECT_NAME_COLLISION"),
            (sys::STATUS_OBJECT_NAME_NOT_FOUND, "STATUS_OBJECT_NAME_NOT_FOUND"),
            (sys::STATUS_OBJECT_PATH_NOT_FOUND, "STATUS_OBJECT_PATH_NOT_FOUND"),
            (sys::STATUS_OBJECT_TYPE_MISMATCH, "STATUS_OBJECT_TYPE_MISMATCH"),
            (sys::STATUS_QUOTA_EXCEEDED, "STATUS_QUOTA_EXCEEDED"),
            (sys::STATUS_UNSUCCESSFUL, "STATUS_UNSUCCESSFUL"),
        ];
        names.iter().find(|(code, _)| *code == self.status()).map(|(_, name)| *name)
    }
}

impl From<NtError> for NTSTATUS {
    fn from(error: NtError) -> Self {
        error.status()
    }
}

/// `STATUS_OBJECT_NAME_COLLISION (0xc0000035)`; an unnamed code prints as hex only.
impl fmt::Display for NtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hex of the NTSTATUS bits, as the DDK headers write them.
        #[allow(clippy::cast_sign_loss)]
        let bits = self.status() as u32;
        match self.name() {
            Some(name) => write!(f, "{name} ({bits:#010x})"),
            None => write!(f, "{bits:#010x}"),
        }
    }
}

impl fmt::Debug for NtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    #[test]
    fn success_and_information_are_not_errors() {
        assert_eq!(to_result(sys::STATUS_SUCCESS), Ok(()));
        assert_eq!(to_result(sys::STATUS_PENDING), Ok(()));
        assert_eq!(NtError::new(0), None);
    }

    #[test]
    fn errors_and_warnings_are_errors_and_keep_their_status() {
        let error = to_result(sys::STATUS_OBJECT_NAME_COLLISION).unwrap_err();
        assert_eq!(NTSTATUS::from(error), sys::STATUS_OBJECT_NAME_COLLISION);
        assert!(to_result(sys::STATUS_BUFFER_OVERFLOW).is_err());
    }

    #[test]
    fn display_names_the_status() {
        let error = NtError::new(sys::STATUS_OBJECT_NAME_COLLISION).unwrap();
        assert_eq!(error.to_string(), "STATUS_OBJECT_NAME_COLLISION (0xc0000035)");
        assert_eq!(NtError::new(0xC0DE_0001_u32 as i32).unwrap().to_string(), "0xc0de0001");
    }
}
