//! Registry keys: open, create (volatile), set and query values, delete.
//!
//! Which keys and values the driver owns is policy (`config`, `registry_entries`);
//! this module only wraps the Zw routines. Every routine here runs at PASSIVE_LEVEL
//! (the Zw registry routines' documented IRQL).

use super::error::{NtError, NtResult, to_result};
use super::irql;
use super::name::{Name, RegistryPath};
use super::sys::{
    _KEY_VALUE_INFORMATION_CLASS::KeyValuePartialInformation, HANDLE, KEY_ALL_ACCESS, KEY_READ,
    KEY_VALUE_PARTIAL_INFORMATION, REG_BINARY, REG_DWORD, REG_OPTION_VOLATILE, REG_SZ, STATUS_BUFFER_OVERFLOW,
    STATUS_OBJECT_NAME_NOT_FOUND, ZwClose, ZwCreateKey, ZwDeleteKey, ZwOpenKey, ZwQueryValueKey, ZwSetValueKey,
    object_attributes,
};

/// The access a key is opened with.
#[derive(Clone, Copy)]
pub enum Access {
    /// KEY_READ: query values.
    Read,
    /// KEY_ALL_ACCESS: set values and delete the key.
    All,
}

/// A value as `ZwQueryValueKey(KeyValuePartialInformation)` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// A REG_DWORD of exactly 4 bytes.
    Dword(u32),
    /// Any other type or size (`kind` is the REG_* type, `length` the data's bytes).
    Other {
        /// The value's REG_* type.
        kind: u32,
        /// Its data's size in bytes.
        length: u32,
    },
}

/// An open registry key, closed (`ZwClose`) when dropped: a key handle never outlives
/// the function that opened it, so scope is the right lifetime for it.
///
/// # Invariants
/// `handle` is a kernel handle to an open key (OBJ_KERNEL_HANDLE), owned by this value.
pub struct Key {
    handle: HANDLE,
}

impl Key {
    /// `ZwOpenKey`.
    ///
    /// # Errors
    /// The status ZwOpenKey failed with (STATUS_OBJECT_NAME_NOT_FOUND for a missing key).
    pub fn open(path: &RegistryPath, access: Access) -> NtResult<Self> {
        irql::assert_passive();
        let mut name = path.as_unicode_string();
        let mut attributes = object_attributes(&raw mut name);
        let mut handle: HANDLE = core::ptr::null_mut();
        let access = match access {
            Access::Read => KEY_READ,
            Access::All => KEY_ALL_ACCESS,
        };
        // SAFETY: the attributes and the name they point to live across the call.
        to_result(unsafe { ZwOpenKey(&raw mut handle, access, &raw mut attributes) })?;
        // INVARIANT: ZwOpenKey succeeded, so `handle` is an open kernel handle.
        Ok(Self { handle })
    }

    /// `ZwCreateKey(REG_OPTION_VOLATILE)` with KEY_ALL_ACCESS: the key (if new) is gone
    /// at reboot.
    ///
    /// # Errors
    /// The status ZwCreateKey failed with.
    pub fn create_volatile(path: &RegistryPath) -> NtResult<Self> {
        irql::assert_passive();
        let mut name = path.as_unicode_string();
        let mut attributes = object_attributes(&raw mut name);
        let mut handle: HANDLE = core::ptr::null_mut();
        // SAFETY: attributes and name live across the call; class and disposition are
        // optional (NULL).
        let status = unsafe {
            ZwCreateKey(
                &raw mut handle,
                KEY_ALL_ACCESS,
                &raw mut attributes,
                0,
                core::ptr::null_mut(),
                REG_OPTION_VOLATILE,
                core::ptr::null_mut(),
            )
        };
        to_result(status)?;
        // INVARIANT: ZwCreateKey succeeded, so `handle` is an open kernel handle.
        Ok(Self { handle })
    }

    /// `ZwSetValueKey(REG_SZ)`: `text` and a terminating NUL.
    ///
    /// # Errors
    /// The status ZwSetValueKey failed with.
    pub fn set_string(&self, name: &Name, text: &Name) -> NtResult {
        let mut bytes = [0u8; 2 * 49];
        let mut length: usize = 0;
        for (pair, unit) in bytes.chunks_exact_mut(2).zip(text.units().iter().copied().chain([0])) {
            pair.copy_from_slice(&unit.to_le_bytes());
            length = length.saturating_add(2);
        }
        self.set(name, REG_SZ, bytes.as_ptr(), length)
    }

    /// `ZwSetValueKey(REG_BINARY)` with the bytes of `value`. `T` is a `#[repr(C)]`
    /// type without padding (the protocol's counters), so every byte is a value's.
    ///
    /// # Errors
    /// The status ZwSetValueKey failed with.
    pub fn set_binary<T: Copy>(&self, name: &Name, value: &T) -> NtResult {
        self.set(name, REG_BINARY, core::ptr::from_ref(value).cast(), size_of::<T>())
    }

    fn set(&self, name: &Name, kind: u32, data: *const u8, length: usize) -> NtResult {
        irql::assert_passive();
        let mut value_name = name.as_unicode_string();
        let length = u32::try_from(length).map_err(|_| NtError::INVALID_PARAMETER)?;
        // SAFETY: an open key (type invariant); `data` is readable for `length` bytes
        // (both callers pass a live value and its size) and only read; the name lives
        // across the call.
        to_result(unsafe { ZwSetValueKey(self.handle, &raw mut value_name, 0, kind, data.cast_mut().cast(), length) })
    }

    /// `ZwQueryValueKey(KeyValuePartialInformation)`: `None` if the key has no such
    /// value. A value too large for the buffer (STATUS_BUFFER_OVERFLOW, whose fixed
    /// part is still filled in) is reported as [`Value::Other`].
    ///
    /// # Errors
    /// Any other status ZwQueryValueKey failed with.
    pub fn query(&self, name: &Name) -> NtResult<Option<Value>> {
        irql::assert_passive();
        let mut unicode = name.as_unicode_string();
        let mut buffer = ValueBuffer([0; 32]);
        let mut result_length = 0u32;
        // The buffer is a few dozen bytes.
        #[allow(clippy::cast_possible_truncation)]
        let size = size_of::<ValueBuffer>() as u32;
        // SAFETY: an open key (type invariant); the buffer is writable for its size and
        // the name lives across the call.
        let status = unsafe {
            ZwQueryValueKey(
                self.handle,
                &raw mut unicode,
                KeyValuePartialInformation,
                (&raw mut buffer).cast(),
                size,
                &raw mut result_length,
            )
        };
        if status == STATUS_OBJECT_NAME_NOT_FOUND {
            return Ok(None);
        }
        let overflow = status == STATUS_BUFFER_OVERFLOW;
        if !overflow {
            to_result(status)?;
        }
        let (kind, length) = (buffer.field(TYPE), buffer.field(DATA_LENGTH));
        if overflow || kind != REG_DWORD || length != 4 {
            return Ok(Some(Value::Other { kind, length }));
        }
        Ok(Some(Value::Dword(buffer.field(DATA))))
    }

    /// `ZwDeleteKey`, then the handle is closed. The key goes once every handle to it is
    /// closed.
    ///
    /// # Errors
    /// The status ZwDeleteKey failed with (the handle is closed either way).
    pub fn delete(self) -> NtResult {
        irql::assert_passive();
        // SAFETY: an open key (type invariant); opened with DELETE access
        // (KEY_ALL_ACCESS) by the callers that delete.
        to_result(unsafe { ZwDeleteKey(self.handle) })
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: the handle is open (type invariant) and closed once, here.
        let _ = unsafe { ZwClose(self.handle) };
    }
}

/// What ZwQueryValueKey fills in for one value: a KEY_VALUE_PARTIAL_INFORMATION (a
/// DWORD fits its Data) with room to spare, so that a value a little larger is reported
/// as such. Kept as bytes: the DWORD at `Data` is only byte-aligned and runs past the
/// declared one-byte array into what the struct type calls padding.
#[repr(C, align(8))]
struct ValueBuffer([u8; 32]);

const TYPE: usize = core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Type);
const DATA_LENGTH: usize = core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, DataLength);
const DATA: usize = core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Data);

impl ValueBuffer {
    /// The little-endian ULONG at byte `offset` (0 past the end, which the offsets above
    /// never reach).
    fn field(&self, offset: usize) -> u32 {
        let bytes = self.0.get(offset..offset.saturating_add(4)).and_then(|b| <[u8; 4]>::try_from(b).ok());
        bytes.map_or(0, u32::from_le_bytes)
    }
}
