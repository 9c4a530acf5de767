//! The driver object, the driver-wide state's pool block, and the DriverEntry /
//! DriverUnload exports.
//!
//! [`driver_entry_points!`] (invoked once, from the crate root, in the manner of
//! Rust-for-Linux's `module!`) generates the two `extern "C"` routines. They do the raw
//! unpacking once and call the policy's safe functions:
//! `entry(&mut DriverObject<E>, registry_path: &[u16]) -> NtResult` and
//! `unload(&DriverObject<E>)`, both at PASSIVE_LEVEL.
//!
//! The driver-wide state lives in a [`StateBox`] (pool) that every device extension
//! references with a [`StateRef`]: Unload reaches it through the driver's devices
//! (IoAllocateDriverObjectExtension would be the textbook place, but Wine 8.0 does not
//! implement it), and the block is freed only once no reference is left. A reference
//! is typed by the part of the state it points to, so an extension need not name the
//! whole state's type (which names the devices); the block records that type, and
//! Unload gets the box back only as it.

use core::any::TypeId;
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::error::{NtError, NtResult};
use super::irp::{DispatchRoutine, dispatch_routine};
use super::irql;
use super::pool::{Allocator, PoolBuf};
use super::sys::{DRIVER_OBJECT, NTSTATUS, PCUNICODE_STRING, PDRIVER_OBJECT, PDRIVER_UNLOAD, STATUS_SUCCESS};

/// This driver's driver object, whose devices all carry an extension of type `E`.
///
/// # Invariants
/// A live DRIVER_OBJECT of this driver, reached only through the entry points this
/// module generates; every device object on its list was created by
/// [`OwnedDevice::create`](super::device::OwnedDevice::create) for `E`, which is the
/// only way this driver creates devices.
#[repr(transparent)]
pub struct DriverObject<E> {
    raw: UnsafeCell<DRIVER_OBJECT>,
    _extension: PhantomData<E>,
}

impl<E> DriverObject<E> {
    /// The `PDRIVER_OBJECT`, for DDIs that take one.
    #[must_use]
    pub fn as_raw(&self) -> PDRIVER_OBJECT {
        self.raw.get()
    }

    /// Sends the major function `major` to `R`. Majors never set keep the I/O
    /// manager's default (STATUS_INVALID_DEVICE_REQUEST); an out-of-range major is
    /// ignored (and asserted in debug builds).
    pub fn set_dispatch<R: DispatchRoutine<Extension = E>>(&mut self, major: u32) {
        // SAFETY: every device of this driver holds an initialised `E` and uses buffered
        // I/O for as long as it can receive IRPs (type invariant; `OwnedDevice::create`
        // sets DO_BUFFERED_IO and the extension lives until IoDeleteDevice).
        let routine = unsafe { dispatch_routine::<R>() };
        let slot = self.raw.get_mut().MajorFunction.get_mut(major as usize);
        debug_assert!(slot.is_some(), "major function {major} out of range");
        if let Some(slot) = slot {
            *slot = routine;
        }
    }
}

/// An extension that references the driver-wide state, so Unload can find it.
pub trait HasDriverState {
    /// The part of the driver-wide state the extension sees.
    type Context;
    /// The extension's reference to it.
    fn driver_state(&self) -> &StateRef<Self::Context>;
}

/// What a [`StateRef`] reaches without knowing the state's type: the pool tag, the
/// reference count, and the type of the state that follows it.
struct Header {
    /// The pool tag the block was allocated with.
    tag: u32,
    references: AtomicUsize,
    /// DriverEntry leaked the box; Unload reclaims it once.
    leaked: AtomicBool,
    /// The type of `StateBlock::value`.
    state_type: TypeId,
}

/// The driver-wide state and its header, in one pool block (the header first, so a
/// pointer to the block is one to the header).
#[repr(C)]
struct StateBlock<S> {
    header: Header,
    value: S,
}

/// The driver-wide state in nonpaged pool, owned. [`free`](Self::free) releases it.
///
/// # Invariants
/// `block` holds an initialised `StateBlock<S>` allocated as a one-element `PoolBuf`
/// with its header's `tag`, and `state_type` is `S`'s; it is freed only by `free`,
/// and only once no [`StateRef`] to it is left. At most one `StateBox` for a block
/// exists.
pub struct StateBox<S: 'static> {
    block: NonNull<StateBlock<S>>,
}

impl<S: 'static> StateBox<S> {
    /// Moves `value` into a fresh pool block tagged `tag`. IRQL <= DISPATCH_LEVEL.
    ///
    /// # Errors
    /// STATUS_INSUFFICIENT_RESOURCES when the pool is exhausted.
    pub fn new(allocator: Allocator, tag: u32, value: S) -> NtResult<Self> {
        let buffer = PoolBuf::<StateBlock<S>>::zeroed(allocator, 1, tag).ok_or(NtError::INSUFFICIENT_RESOURCES)?;
        let block = buffer.into_raw();
        // SAFETY: a fresh block of the right size, aligned (pool is 16-byte aligned);
        // writing initialises it.
        unsafe {
            block.write(StateBlock {
                header: Header {
                    tag,
                    references: AtomicUsize::new(0),
                    leaked: AtomicBool::new(false),
                    state_type: TypeId::of::<S>(),
                },
                value,
            });
        }
        // INVARIANT: initialised above, allocated as PoolBuf with `tag`.
        Ok(Self { block })
    }

    /// A reference for a device extension to the part of the state `part` picks (a
    /// function, so the part is inside the state or `'static`).
    #[must_use]
    pub fn reference<C>(&self, part: for<'a> fn(&'a S) -> &'a C) -> StateRef<C> {
        self.inner().header.references.fetch_add(1, Ordering::AcqRel);
        // INVARIANT: counted above; the part lives as long as the state.
        StateRef { header: self.block.cast(), part: NonNull::from(part(&self.inner().value)) }
    }

    /// Keeps the state allocated after DriverEntry returns; Unload takes it back with
    /// [`DriverObject::reclaim_state`].
    pub fn leak(self) {
        // No Drop: the value goes, the block stays.
        self.inner().header.leaked.store(true, Ordering::Release);
    }

    /// Drops the state and frees its block (`ExFreePoolWithTag`). If references are
    /// left (a device not deleted: a bug), the block is leaked instead and the error
    /// logged, since something may still use it.
    pub fn free(self) {
        let left = self.inner().header.references.load(Ordering::Acquire);
        if left != 0 {
            log!(Error, "driver state still referenced {left} time(s); not freed");
            debug_assert!(left == 0, "driver state freed while referenced");
            return;
        }
        let block = self.block;
        let tag = self.inner().header.tag;
        // SAFETY: initialised (type invariant) and no reference is left: nothing else
        // can reach the value, which is dropped once, here.
        unsafe { core::ptr::drop_in_place(block.as_ptr()) };
        // SAFETY: allocated as `PoolBuf` with one element and `tag`, given back once.
        unsafe { PoolBuf::from_raw(block, 1, tag) }.free();
    }

    /// The state as the context of the kernel routines that run on it (the system
    /// thread, the interrupt's ISR and DPC), which the kernel calls with a raw pointer.
    ///
    /// `'static` stands for "until [`free`](Self::free)": Unload's stages 1 and 2 end
    /// those routines (disconnect the interrupt after flushing its DPC, wait on the
    /// thread object) before the state is freed. That order is the Unload stages'
    /// contract, not the type system's; ntsim reports any use of the freed block.
    #[must_use]
    pub fn routine_context(&self) -> &'static S {
        // SAFETY: allocated and initialised until `free` (type invariant); the lifetime
        // is the contract stated above.
        unsafe { &(*self.block.as_ptr()).value }
    }

    fn inner(&self) -> &StateBlock<S> {
        // SAFETY: allocated and initialised until `free` (type invariant).
        unsafe { self.block.as_ref() }
    }
}

impl<S: 'static> core::ops::Deref for StateBox<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.inner().value
    }
}

/// A counted reference to a part of the driver-wide state, held by a device extension
/// (dropped with it, by IoDeleteDevice's stage). It does not name the whole state's
/// type, so the extension's type need not know it.
///
/// # Invariants
/// `header` is a [`StateBox`]'s block, counted in its `references`; the block stays
/// allocated while this value lives, and `part` points into it (or to a `'static`).
pub struct StateRef<C> {
    header: NonNull<Header>,
    part: NonNull<C>,
}

impl<C> StateRef<C> {
    /// The part of the state.
    #[must_use]
    pub fn get(&self) -> &C {
        // SAFETY: the block is allocated while this reference is counted, and `part`
        // lives as long as it (type invariant).
        unsafe { self.part.as_ref() }
    }

    fn header(&self) -> &Header {
        // SAFETY: allocated while this reference is counted (type invariant).
        unsafe { self.header.as_ref() }
    }

    /// The box DriverEntry leaked, once, if its state is an `S`.
    pub(super) fn reclaim<S: 'static>(&self) -> Option<StateBox<S>> {
        let header = self.header();
        if header.state_type != TypeId::of::<S>() {
            debug_assert!(false, "driver state reclaimed as another type");
            return None;
        }
        // INVARIANT: the block holds an `S` (its recorded type), the header is its
        // first field; `leaked` was set by `leak`, which gave up the only box, and the
        // swap lets exactly one caller rebuild it.
        header.leaked.swap(false, Ordering::AcqRel).then_some(StateBox { block: self.header.cast() })
    }
}

impl<C> Drop for StateRef<C> {
    fn drop(&mut self) {
        self.header().references.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs DriverEntry: installs `unload` as DriverUnload, then calls the policy's
/// `entry` with typed arguments. For [`driver_entry_points!`] only.
///
/// # Safety
/// Called by the I/O manager (through the generated `DriverEntry`) with this driver's
/// object and a valid registry path, at PASSIVE_LEVEL; `E` is the extension type of
/// every device the driver creates.
#[doc(hidden)]
pub unsafe fn run_entry<E>(
    driver: PDRIVER_OBJECT,
    registry_path: PCUNICODE_STRING,
    entry: fn(&mut DriverObject<E>, &[u16]) -> NtResult,
    unload: PDRIVER_UNLOAD,
) -> NTSTATUS {
    irql::assert_passive();
    // SAFETY: the I/O manager's valid driver object, ours during DriverEntry;
    // DriverObject is a transparent wrapper of it.
    let driver = unsafe { &mut *driver.cast::<DriverObject<E>>() };
    driver.raw.get_mut().DriverUnload = unload;
    // SAFETY: the I/O manager passes a valid counted string, alive during DriverEntry.
    let path = unsafe { &*registry_path };
    let units = if path.Length == 0 {
        &[][..]
    } else if path.Buffer.is_null() {
        return NtError::INVALID_PARAMETER.into();
    } else {
        // SAFETY: a valid UNICODE_STRING has Length bytes at Buffer.
        unsafe { core::slice::from_raw_parts(path.Buffer, usize::from(path.Length >> 1)) }
    };
    match entry(driver, units) {
        Ok(()) => STATUS_SUCCESS,
        Err(error) => error.into(),
    }
}

/// Runs DriverUnload: calls the policy's `unload`. For [`driver_entry_points!`] only.
///
/// # Safety
/// Called by the I/O manager (through the generated DriverUnload) with the driver
/// object DriverEntry received, at PASSIVE_LEVEL.
#[doc(hidden)]
pub unsafe fn run_unload<E>(driver: PDRIVER_OBJECT, unload: fn(&DriverObject<E>)) {
    irql::assert_passive();
    // SAFETY: the driver object DriverEntry received, still valid during Unload.
    unload(unsafe { &*driver.cast::<DriverObject<E>>() });
}

/// `driver_entry_points! { extension: E, entry: path, unload: path }` defines
/// `pub unsafe extern "C" fn driver_entry` (exported as `DriverEntry` on Windows) and
/// the DriverUnload routine, around the policy's safe functions.
macro_rules! driver_entry_points {
    (extension: $extension:ty, entry: $entry:path, unload: $unload:path $(,)?) => {
        /// The driver's entry point, called once at PASSIVE_LEVEL when the service
        /// starts.
        ///
        /// # Safety
        /// Called by the I/O manager with a valid driver object and registry path.
        #[cfg_attr(target_os = "windows", unsafe(export_name = "DriverEntry"))]
        pub unsafe extern "C" fn driver_entry(
            driver: $crate::kernel::sys::PDRIVER_OBJECT,
            registry_path: $crate::kernel::sys::PCUNICODE_STRING,
        ) -> $crate::kernel::sys::NTSTATUS {
            // SAFETY: the I/O manager's arguments; `$extension` is what the policy's
            // devices carry (its `OwnedDevice::create` calls are typed by it).
            unsafe {
                $crate::kernel::driver::run_entry::<$extension>(driver, registry_path, $entry, Some(driver_unload))
            }
        }

        /// DriverUnload, called at PASSIVE_LEVEL once no device of the driver is
        /// referenced.
        unsafe extern "C" fn driver_unload(driver: $crate::kernel::sys::PDRIVER_OBJECT) {
            // SAFETY: the driver object DriverEntry received.
            unsafe { $crate::kernel::driver::run_unload::<$extension>(driver, $unload) }
        }
    };
}
