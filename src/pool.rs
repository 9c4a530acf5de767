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
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::name::Name;
use crate::sys::{ExFreePoolWithTag, MmGetSystemRoutineAddress, POOL_FLAG_NON_PAGED, POOL_FLAGS, PVOID, SIZE_T, ULONG};

/// Pool tags, written so that debuggers show them as the quoted text.
pub mod tag {
    use crate::sys::ULONG;
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

/// The resolved allocator: 0 = not resolved, else the routine's address, with the low
/// bit set for the down-level `ExAllocatePoolWithTag`. The one global of the driver:
/// like the kernel it describes, it is the same for every instance.
static ALLOCATOR: AtomicUsize = AtomicUsize::new(0);
const DOWN_LEVEL: usize = 1;

/// Which pool allocator this kernel offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocator {
    Pool2,
    WithTagDownLevel,
}

/// Resolves the allocator (MmGetSystemRoutineAddress). PASSIVE_LEVEL, DriverEntry.
pub fn resolve() -> Option<Allocator> {
    let lookup = |name: &str| {
        let name = Name::from_ascii(name);
        let mut unicode = name.as_unicode_string();
        // SAFETY: PASSIVE_LEVEL; the name lives across the call.
        unsafe { MmGetSystemRoutineAddress(&raw mut unicode) }
    };
    let pool2 = lookup("ExAllocatePool2");
    let (address, kind) = if pool2.is_null() {
        let with_tag = lookup("ExAllocatePoolWithTag");
        if with_tag.is_null() {
            return None;
        }
        (with_tag as usize | DOWN_LEVEL, Allocator::WithTagDownLevel)
    } else {
        (pool2 as usize, Allocator::Pool2)
    };
    ALLOCATOR.store(address, Ordering::Release);
    Some(kind)
}

/// Zeroed nonpaged pool. IRQL <= DISPATCH_LEVEL. NULL if unresolved or exhausted.
fn allocate_zeroed(bytes: usize, tag: ULONG) -> PVOID {
    let address = ALLOCATOR.load(Ordering::Acquire);
    if address == 0 || bytes == 0 {
        return core::ptr::null_mut();
    }
    if address & DOWN_LEVEL == 0 {
        // SAFETY: the address MmGetSystemRoutineAddress returned for ExAllocatePool2,
        // which has this signature.
        let allocate: AllocatePool2 = unsafe { core::mem::transmute::<usize, AllocatePool2>(address) };
        // SAFETY: nonpaged pool at <= DISPATCH_LEVEL; ExAllocatePool2 zeroes.
        unsafe { allocate(POOL_FLAG_NON_PAGED, bytes as u64, tag) }
    } else {
        // SAFETY: as above, for ExAllocatePoolWithTag (the marker bit removed).
        let allocate: AllocatePoolWithTag =
            unsafe { core::mem::transmute::<usize, AllocatePoolWithTag>(address & !DOWN_LEVEL) };
        // SAFETY: nonpaged pool at <= DISPATCH_LEVEL.
        let block = unsafe { allocate(NON_PAGED_POOL_NX, bytes as u64, tag) };
        if !block.is_null() {
            // SAFETY: a fresh block of `bytes` bytes; ExAllocatePoolWithTag does not zero.
            unsafe { core::ptr::write_bytes(block.cast::<u8>(), 0, bytes) };
        }
        block
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
    pub fn zeroed(count: usize, tag: ULONG) -> Option<Self> {
        let bytes = size_of::<T>().checked_mul(count)?;
        NonNull::new(allocate_zeroed(bytes, tag).cast::<T>()).map(|ptr| Self { ptr, count, tag })
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
