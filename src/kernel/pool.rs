//! Nonpaged pool owned by the driver, tagged so leaks show by tag in `!verifier 3` /
//! `!poolused`. Freeing is an explicit call made by the stage that owns the memory.
//!
//! The allocator is resolved once in DriverEntry with MmGetSystemRoutineAddress:
//! `ExAllocatePool2` (Windows 10 2004 and later) when the kernel exports it, otherwise
//! `ExAllocatePoolWithTag(NonPagedPoolNx)` followed by zeroing — the down-level path
//! Microsoft's `ExInitializeDriverRuntime` takes, and what runs under Wine 8.0, whose
//! ntoskrnl has no `ExAllocatePool2`. Importing either by name would make the image
//! fail to load on the kernels that lack it.

use core::ptr::NonNull;

use super::irql;
use super::name::Name;
use super::sys::{ExFreePoolWithTag, MmGetSystemRoutineAddress, POOL_FLAG_NON_PAGED, POOL_FLAGS, PVOID, SIZE_T, ULONG};

/// Pool tags, written so that debuggers show them as the quoted text.
pub mod tag {
    use crate::kernel::sys::ULONG;
    /// "SdRg": record rings.
    pub const RING: ULONG = u32::from_le_bytes(*b"SdRg");
    /// "SdHc": per-handle contexts.
    pub const HANDLE: ULONG = u32::from_le_bytes(*b"SdHc");
    /// "SdDs": the driver-wide state.
    pub const STATE: ULONG = u32::from_le_bytes(*b"SdDs");
}

type AllocatePool2 = unsafe extern "C" fn(POOL_FLAGS, SIZE_T, ULONG) -> PVOID;
/// `ExAllocatePoolWithTag(POOL_TYPE, SIZE_T, ULONG)`; POOL_TYPE is a C enum (i32).
type AllocatePoolWithTag = unsafe extern "C" fn(i32, SIZE_T, ULONG) -> PVOID;

/// `NonPagedPoolNx` of the POOL_TYPE enumeration.
const NON_PAGED_POOL_NX: i32 = 512;

/// The pool allocator this kernel offers, as MmGetSystemRoutineAddress returned it. The
/// kind is the variant, never a bit of the address: nothing makes x64 code addresses
/// even (a kernel built with GCC packs its functions). Kept in the driver state, not in
/// a global, so that every loaded instance uses what its own kernel offered.
#[derive(Clone, Copy)]
pub enum Allocator {
    /// `ExAllocatePool2` (Windows 10 2004 and later).
    Pool2(AllocatePool2),
    /// `ExAllocatePoolWithTag(NonPagedPoolNx)`, then zeroing.
    WithTagDownLevel(AllocatePoolWithTag),
}

impl Allocator {
    /// Looks the allocator up with MmGetSystemRoutineAddress. PASSIVE_LEVEL, DriverEntry.
    pub fn resolve() -> Option<Self> {
        irql::assert_passive();
        let lookup = |name: &str| {
            let name = Name::from_ascii(name);
            let mut unicode = name.as_unicode_string();
            // SAFETY: PASSIVE_LEVEL; the name lives across the call.
            unsafe { MmGetSystemRoutineAddress(&raw mut unicode) }
        };
        let pool2 = lookup("ExAllocatePool2");
        if !pool2.is_null() {
            // SAFETY: the kernel's ExAllocatePool2, which has this signature.
            return Some(Self::Pool2(unsafe { core::mem::transmute::<PVOID, AllocatePool2>(pool2) }));
        }
        let with_tag = lookup("ExAllocatePoolWithTag");
        if with_tag.is_null() {
            return None;
        }
        // SAFETY: the kernel's ExAllocatePoolWithTag, which has this signature.
        Some(Self::WithTagDownLevel(unsafe { core::mem::transmute::<PVOID, AllocatePoolWithTag>(with_tag) }))
    }

    /// For the log.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pool2(_) => "Pool2",
            Self::WithTagDownLevel(_) => "WithTagDownLevel",
        }
    }

    /// Zeroed nonpaged pool. IRQL <= DISPATCH_LEVEL. NULL if exhausted.
    fn allocate_zeroed(self, bytes: usize, tag: ULONG) -> PVOID {
        irql::assert_at_most_dispatch();
        if bytes == 0 {
            return core::ptr::null_mut();
        }
        match self {
            // SAFETY: nonpaged pool at <= DISPATCH_LEVEL; ExAllocatePool2 zeroes.
            Self::Pool2(allocate) => unsafe { allocate(POOL_FLAG_NON_PAGED, bytes as u64, tag) },
            Self::WithTagDownLevel(allocate) => {
                // SAFETY: nonpaged pool at <= DISPATCH_LEVEL.
                let block = unsafe { allocate(NON_PAGED_POOL_NX, bytes as u64, tag) };
                if !block.is_null() {
                    // SAFETY: a fresh block of `bytes` bytes; ExAllocatePoolWithTag does not zero.
                    unsafe { core::ptr::write_bytes(block.cast::<u8>(), 0, bytes) };
                }
                block
            }
        }
    }
}

/// `count` zeroed values of `T` in nonpaged pool.
pub struct PoolBuf<T> {
    ptr: NonNull<T>,
    count: usize,
    tag: ULONG,
}

impl<T> PoolBuf<T> {
    /// Zeroed pool; `T` must be valid when all-zero. IRQL <= DISPATCH_LEVEL.
    pub fn zeroed(allocator: Allocator, count: usize, tag: ULONG) -> Option<Self> {
        let bytes = size_of::<T>().checked_mul(count)?;
        NonNull::new(allocator.allocate_zeroed(bytes, tag).cast::<T>()).map(|ptr| Self { ptr, count, tag })
    }

    /// Takes back ownership of a block made by [`PoolBuf::zeroed`] and then leaked with
    /// [`PoolBuf::into_raw`].
    ///
    /// # Safety
    /// `ptr` came from `into_raw` of a `PoolBuf<T>` with this count and tag, once.
    pub unsafe fn from_raw(ptr: NonNull<T>, count: usize, tag: ULONG) -> Self {
        Self { ptr, count, tag }
    }

    /// Gives up ownership; the block stays allocated.
    pub fn into_raw(self) -> NonNull<T> {
        self.ptr
    }

    /// The first value.
    pub fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// How many values.
    pub fn len(&self) -> usize {
        self.count
    }

    /// The values, in place.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: `count` values of `T`, zeroed at allocation (valid when all-zero, the
        // promise of `zeroed`) and owned by this buffer; `&mut self` is unique.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.count) }
    }

    /// ExFreePoolWithTag.
    pub fn free(self) {
        // SAFETY: allocated by `zeroed` with this tag and freed once (self is consumed).
        unsafe { ExFreePoolWithTag(self.ptr.as_ptr().cast(), self.tag) };
    }
}

// SAFETY: the buffer is plain memory; who may touch it is decided by the owner's lock.
unsafe impl<T> Send for PoolBuf<T> {}
