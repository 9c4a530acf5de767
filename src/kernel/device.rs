//! Device objects: the borrowed [`DeviceObject`], the owned [`OwnedDevice`] whose
//! [`delete`](OwnedDevice::delete) is the only path to IoDeleteDevice, and the
//! [`DeviceTable`] a driver keeps them in.
//!
//! The extension has one initialisation convention: [`OwnedDevice::create`] writes the
//! value its closure returns into the zeroed extension right after IoCreateDevice, and
//! kernel objects inside it that must not move (timers, DPCs, list heads) are then
//! initialised at that final address by their own `init(&self, …)`. There is no
//! `&mut` access to an extension: what changes after creation sits in cells or behind
//! a lock, so every routine sees the extension through `&`.
//!
//! An extension borrowed from a device cannot outlive the device's deletion:
//!
//! ```compile_fail,E0505
//! use stagedrv::kernel::device::OwnedDevice;
//!
//! fn use_after_delete(device: OwnedDevice<u32>) -> u32 {
//!     let extension = device.extension();
//!     device.delete();
//!     *extension
//! }
//! ```
//!
//! and a device is deleted once (the owner is neither `Copy` nor `Clone`):
//!
//! ```compile_fail,E0382
//! use stagedrv::kernel::device::OwnedDevice;
//!
//! fn delete_twice(device: OwnedDevice<u32>) {
//!     let copy = device;
//!     copy.delete();
//!     device.delete();
//! }
//! ```
//!
//! Read first, then delete, compiles:
//!
//! ```
//! use stagedrv::kernel::device::OwnedDevice;
//!
//! fn read_then_delete(device: OwnedDevice<u32>) -> u32 {
//!     let value = *device.extension();
//!     device.delete();
//!     value
//! }
//! ```

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use super::driver::{DriverObject, HasDriverState, StateBox};
use super::error::{NtError, NtResult, to_result};
use super::irql;
use super::name::Name;
use super::sys::{
    DEVICE_OBJECT, DO_BUFFERED_IO, DO_DEVICE_INITIALIZING, FALSE, FILE_DEVICE_SECURE_OPEN, IoCreateDevice,
    IoDeleteDevice, PDEVICE_OBJECT, ULONG,
};

/// A device object of this driver whose extension holds an `E`, borrowed: a
/// `&'a DeviceObject<E>` is valid for `'a`, and the extension it gives out is borrowed
/// from it.
///
/// # Invariants
/// The object was created by [`OwnedDevice::create`] for extension `E` (so its
/// extension holds an initialised `E` and it uses buffered I/O), and it is not deleted
/// while a reference to it exists.
#[repr(transparent)]
pub struct DeviceObject<E> {
    raw: UnsafeCell<DEVICE_OBJECT>,
    _extension: PhantomData<E>,
}

impl<E> DeviceObject<E> {
    /// The device object at `device`, for the kernel's routine adapters (DPC, IoTimer,
    /// work item, dispatch), which receive it as a raw pointer.
    ///
    /// # Safety
    /// `device` was created by [`OwnedDevice::create`] with extension `E` and is not
    /// deleted during `'a`.
    #[must_use]
    pub unsafe fn from_raw<'a>(device: PDEVICE_OBJECT) -> &'a Self {
        // SAFETY: guaranteed by the caller; the type is a transparent wrapper of
        // DEVICE_OBJECT, whose fields the kernel may change (hence the UnsafeCell).
        unsafe { &*device.cast::<Self>() }
    }

    /// The `PDEVICE_OBJECT`, for DDIs that take one.
    #[must_use]
    pub fn as_raw(&self) -> PDEVICE_OBJECT {
        self.raw.get()
    }

    /// The extension, borrowed for as long as the device is.
    #[must_use]
    pub fn extension(&self) -> &E {
        // SAFETY: the extension holds an initialised `E` until `delete` (type invariant),
        // which cannot run while `self` is borrowed; only `&E` is ever handed out.
        unsafe { &*(*self.raw.get()).DeviceExtension.cast::<E>() }
    }

    /// The extension as the context of the kernel routines it owns (its timer DPC,
    /// IoTimer and work item: [`super::timer::Timer`], [`super::io_timer::IoTimer`],
    /// [`super::work_item::WorkItem`]), which the kernel calls with a raw pointer long
    /// after this borrow ends.
    ///
    /// `'static` stands for "until IoDeleteDevice": those routine objects live in the
    /// extension itself, and Unload's stage 2 stops them (cancel + KeFlushQueuedDpcs,
    /// IoStopTimer, the work item's idle wait) before [`OwnedDevice::delete`] runs, so
    /// no routine holds the reference when the extension goes. That order is the
    /// Unload stages' contract, not the type system's; ntsim reports a routine left
    /// armed at delete (0xC7) and any use of the freed extension (special pool).
    #[must_use]
    pub fn routine_context(&self) -> &'static E {
        // SAFETY: as for `extension`; the lifetime is the contract stated above.
        unsafe { &*(*self.raw.get()).DeviceExtension.cast::<E>() }
    }

    /// Lets the I/O manager send requests: clears DO_DEVICE_INITIALIZING. DriverEntry,
    /// PASSIVE_LEVEL, once the device is ready.
    pub fn finish_initializing(&self) {
        irql::assert_passive();
        // SAFETY: a live device (type invariant); until this flag is cleared no request
        // reaches the device, so DriverEntry is the only writer of Flags.
        unsafe { (*self.raw.get()).Flags &= !DO_DEVICE_INITIALIZING };
    }
}

impl<E> DriverObject<E> {
    /// One of the driver's devices (the most recently created), if it has any.
    fn any_device(&self) -> Option<&DeviceObject<E>> {
        // SAFETY: a live driver object (type invariant); its device list changes only in
        // IoCreateDevice/IoDeleteDevice, called from DriverEntry and Unload, never at
        // the same time as the Unload adapter that calls this.
        let first = unsafe { (*self.as_raw()).DeviceObject };
        // SAFETY: every device on the list was created for `E` (the driver object's
        // type invariant); the borrow ends before the caller deletes anything.
        (!first.is_null()).then(|| unsafe { DeviceObject::from_raw(first) })
    }
}

impl<E: HasDriverState> DriverObject<E> {
    /// Takes back the driver-wide state that DriverEntry
    /// [leaked](StateBox::leak), through any device's reference; `None` if the driver
    /// has no device, it was taken already, or the state is not an `S`.
    #[must_use]
    pub fn reclaim_state<S: 'static>(&self) -> Option<StateBox<S>> {
        self.any_device()?.extension().driver_state().reclaim()
    }
}

/// A device object this driver created, owned: neither `Copy` nor `Clone`, and
/// [`delete`](Self::delete) is the only way to IoDeleteDevice. Dropping it without
/// deleting leaves the object in place (teardown is explicit code in the Unload stages).
///
/// # Invariants
/// `raw` points to a live device object created by [`OwnedDevice::create`] for
/// extension `E`; no other `OwnedDevice` for it exists.
pub struct OwnedDevice<E> {
    raw: NonNull<DEVICE_OBJECT>,
    _extension: PhantomData<E>,
}

impl<E> OwnedDevice<E> {
    /// `IoCreateDevice(name, device_type, FILE_DEVICE_SECURE_OPEN)` with an extension of
    /// `size_of::<E>()` bytes, initialised with what `extension` returns (called once,
    /// after IoCreateDevice succeeded); then DO_BUFFERED_IO. PASSIVE_LEVEL.
    ///
    /// # Errors
    /// The status IoCreateDevice failed with; STATUS_INSUFFICIENT_RESOURCES for an
    /// extension type too large for IoCreateDevice's ULONG.
    pub fn create(
        driver: &DriverObject<E>,
        name: &Name,
        device_type: ULONG,
        extension: impl FnOnce() -> E,
    ) -> NtResult<Self> {
        irql::assert_passive();
        let extension_size = ULONG::try_from(size_of::<E>()).map_err(|_| NtError::INSUFFICIENT_RESOURCES)?;
        let mut unicode = name.as_unicode_string();
        let mut object: PDEVICE_OBJECT = core::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; the name is read, not kept.
        let status = unsafe {
            IoCreateDevice(
                driver.as_raw(),
                extension_size,
                &raw mut unicode,
                device_type,
                FILE_DEVICE_SECURE_OPEN,
                FALSE as u8,
                &raw mut object,
            )
        };
        to_result(status)?;
        let raw = NonNull::new(object).ok_or(NtError::INSUFFICIENT_RESOURCES)?;
        // SAFETY: IoCreateDevice succeeded: the object and its zeroed, aligned (pool)
        // extension of `size_of::<E>()` bytes are ours, unread until DO_DEVICE_INITIALIZING
        // is cleared, so writing initialises it in place; Flags is ours while initialising.
        unsafe {
            (*object).DeviceExtension.cast::<E>().write(extension());
            (*object).Flags |= DO_BUFFERED_IO;
        }
        // INVARIANT: created for `E`, extension initialised, buffered I/O; the only owner.
        Ok(Self { raw, _extension: PhantomData })
    }

    /// `IoDeleteDevice`, after the extension is dropped in place. PASSIVE_LEVEL. Every
    /// kernel resource in the extension must already be released by its stage; the
    /// extension's storage goes with the object.
    pub fn delete(self) {
        irql::assert_passive();
        let object = self.raw.as_ptr();
        // SAFETY: the extension holds an initialised `E` (type invariant) that nothing
        // borrows: `self` is consumed, and every `&DeviceObject` is borrowed from an
        // owner (this value or the table that held it).
        unsafe { core::ptr::drop_in_place((*object).DeviceExtension.cast::<E>()) };
        // SAFETY: we created the object and delete it once (`self` is consumed).
        unsafe { IoDeleteDevice(object) };
    }
}

impl<E> core::ops::Deref for OwnedDevice<E> {
    type Target = DeviceObject<E>;
    fn deref(&self) -> &DeviceObject<E> {
        // SAFETY: live and created for `E` (type invariant); not deleted while `self`
        // is borrowed, since `delete` consumes it.
        unsafe { DeviceObject::from_raw(self.raw.as_ptr()) }
    }
}

/// Up to `N` owned devices, reachable by shared reference from every context of the
/// driver (dispatch, DPCs, the consumer thread) and taken back once by Unload.
///
/// Borrowing is counted: [`DeviceTable::borrow`] returns a guard whose devices are
/// borrowed from it, and [`DeviceTable::take_all`] closes the table only when no guard
/// exists, so no `&DeviceObject` from the table can outlive its IoDeleteDevice (a take
/// while a guard is alive is a driver bug: it takes nothing, and says so in a debug build).
///
/// # Invariants
/// Each non-null slot holds the object of an `OwnedDevice<E>` the table owns. While
/// `users` counts a live guard, no slot is emptied. Once `users` has its CLOSED bit set
/// the slots are only emptied, never filled.
pub struct DeviceTable<E, const N: usize> {
    slots: [AtomicPtr<DEVICE_OBJECT>; N],
    users: AtomicUsize,
    _extension: PhantomData<E>,
}

/// The `users` bit that marks a table taken apart.
const CLOSED: usize = 1 << (usize::BITS - 1);

impl<E, const N: usize> DeviceTable<E, N> {
    /// An empty table.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            slots: [const { AtomicPtr::new(core::ptr::null_mut()) }; N],
            users: AtomicUsize::new(0),
            _extension: PhantomData,
        }
    }

    /// Keeps `device` in slot `index`.
    ///
    /// # Errors
    /// The device back if the slot is taken or out of range, or the table is closed.
    pub fn insert(&self, index: usize, device: OwnedDevice<E>) -> Result<(), OwnedDevice<E>> {
        if self.users.load(Ordering::Acquire) & CLOSED != 0 {
            return Err(device);
        }
        let Some(slot) = self.slots.get(index) else { return Err(device) };
        let object = device.raw.as_ptr();
        match slot.compare_exchange(core::ptr::null_mut(), object, Ordering::AcqRel, Ordering::Acquire) {
            // INVARIANT: the table now owns the device (the value has no Drop).
            Ok(_) => Ok(()),
            Err(_) => Err(device),
        }
    }

    /// Shared access to the devices, for as long as the guard lives. Empty once the
    /// table is closed.
    pub fn borrow(&self) -> Devices<'_, E, N> {
        let before = self.users.fetch_add(1, Ordering::AcqRel);
        Devices { table: self, open: before & CLOSED == 0 }
    }

    /// Closes the table and takes every device back, in slot order; nothing if a guard
    /// is alive (a bug, asserted in debug builds).
    pub fn take_all(&self) -> impl Iterator<Item = OwnedDevice<E>> + '_ {
        let closed = self.users.compare_exchange(0, CLOSED, Ordering::AcqRel, Ordering::Acquire).is_ok()
            || self.users.load(Ordering::Acquire) == CLOSED;
        debug_assert!(closed, "DeviceTable::take_all while its devices are borrowed");
        self.slots.iter().filter(move |_| closed).filter_map(|slot| {
            let object = slot.swap(core::ptr::null_mut(), Ordering::AcqRel);
            // INVARIANT: the slot owned this device; ownership moves to the value.
            NonNull::new(object).map(|raw| OwnedDevice { raw, _extension: PhantomData })
        })
    }
}

impl<E, const N: usize> Default for DeviceTable<E, N> {
    fn default() -> Self {
        Self::new()
    }
}

/// A counted borrow of a [`DeviceTable`]'s devices.
#[must_use = "the devices are borrowed from the guard"]
pub struct Devices<'a, E, const N: usize> {
    table: &'a DeviceTable<E, N>,
    /// The table was open when the guard was made.
    open: bool,
}

impl<E, const N: usize> Devices<'_, E, N> {
    /// Every device, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &DeviceObject<E>> + '_ {
        self.table.slots.iter().filter(|_| self.open).filter_map(|slot| {
            let object = slot.load(Ordering::Acquire);
            // SAFETY: a non-null slot holds an owned device created for `E`; it is not
            // emptied (so not deleted) while this guard is counted in `users`.
            (!object.is_null()).then(|| unsafe { DeviceObject::from_raw(object) })
        })
    }
}

impl<E, const N: usize> Drop for Devices<'_, E, N> {
    fn drop(&mut self) {
        self.table.users.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_table_yields_nothing_and_closes() {
        let table = DeviceTable::<u32, 2>::new();
        assert_eq!(table.borrow().iter().count(), 0);
        assert_eq!(table.take_all().count(), 0);
        assert_eq!(table.borrow().iter().count(), 0, "closed");
    }

    #[test]
    #[should_panic(expected = "while its devices are borrowed")]
    fn taking_while_borrowed_is_refused() {
        let table = DeviceTable::<u32, 2>::new();
        let guard = table.borrow();
        let _ = table.take_all().count();
        drop(guard);
    }
}
