//! Nonpaged pool owned by the driver, tagged so leaks show by tag in `!verifier 3` /
//! `!poolused`. Freeing is an explicit call made by the stage that owns the memory.

use core::ptr::NonNull;

use crate::sys::{ExAllocatePool2, ExFreePoolWithTag, POOL_FLAG_NON_PAGED, ULONG};

/// Pool tags, written so that debuggers show them as the quoted text.
pub mod tag {
    use crate::sys::ULONG;
    /// "SdRg": record rings.
    pub const RING: ULONG = u32::from_le_bytes(*b"SdRg");
    /// "SdHc": per-handle contexts.
    pub const HANDLE: ULONG = u32::from_le_bytes(*b"SdHc");
}

/// `count` zeroed values of `T` in nonpaged pool.
pub struct PoolBuf<T> {
    ptr: NonNull<T>,
    count: usize,
    tag: ULONG,
}

impl<T> PoolBuf<T> {
    /// ExAllocatePool2 (zeroed). `T` must be valid when all-zero. IRQL <= DISPATCH_LEVEL.
    pub fn zeroed(count: usize, tag: ULONG) -> Option<Self> {
        let bytes = size_of::<T>().checked_mul(count)?;
        // SAFETY: nonpaged pool may be allocated at <= DISPATCH_LEVEL; size is non-zero
        // for every caller (count >= 1 and T is not zero-sized).
        let raw = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, bytes as u64, tag) };
        NonNull::new(raw.cast::<T>()).map(|ptr| Self { ptr, count, tag })
    }

    pub fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// ExFreePoolWithTag.
    pub fn free(self) {
        // SAFETY: allocated by `zeroed` with this tag and freed once (self is consumed).
        unsafe { ExFreePoolWithTag(self.ptr.as_ptr().cast(), self.tag) };
    }
}

// SAFETY: the buffer is plain memory; who may touch it is decided by the owner's lock.
unsafe impl<T> Send for PoolBuf<T> {}
