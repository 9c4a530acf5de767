//! What a legacy driver acquires for a device: the controller object whose extension
//! holds the interrupt path (IoCreateController), the resource claim in the resource
//! map (IoReportResourceForDetection), and the mapped register window (MmMapIoSpace).
//! Each is an owned value with one consuming release.

use core::marker::PhantomData;
use core::ptr::NonNull;

use super::driver::DriverObject;
use super::error::{NtError, NtResult, to_result};
use super::interrupt::{Interrupt, InterruptPath, InterruptResources, InterruptService};
use super::sys::{
    _CM_SHARE_DISPOSITION::CmResourceShareDeviceExclusive, _MEMORY_CACHING_TYPE::MmNonCached, BOOLEAN,
    CM_PARTIAL_RESOURCE_DESCRIPTOR, CM_RESOURCE_LIST, CONTROLLER_OBJECT, CmResourceTypeInterrupt, CmResourceTypeMemory,
    DRIVER_OBJECT, INTERFACE_TYPE, IoCreateController, IoDeleteController, IoReportResourceForDetection, KAFFINITY,
    MmMapIoSpace, MmUnmapIoSpace, PHYSICAL_ADDRESS,
};

/// A controller object whose extension is the [`InterruptPath`] of context `C`.
///
/// # Invariants
/// `raw` is a live controller object made by [`Controller::create`], its extension an
/// initialised `InterruptPath<C>`; only [`Controller::delete`] frees it, and only while
/// the path is quiet (no interrupt connected).
pub struct Controller<C: InterruptService> {
    raw: NonNull<CONTROLLER_OBJECT>,
    _context: PhantomData<C>,
}

impl<C: InterruptService> Controller<C> {
    /// IoCreateController with room for the interrupt path, which starts with
    /// `context`, nothing connected and its DPC initialised. PASSIVE_LEVEL.
    ///
    /// # Errors
    /// STATUS_INSUFFICIENT_RESOURCES if IoCreateController fails, or if its extension
    /// is not aligned for the path.
    pub fn create(context: C) -> NtResult<Self> {
        // The size of a kernel object header and a KDPC: far below ULONG's range.
        let size = size_of::<InterruptPath<C>>() as u32;
        // SAFETY: PASSIVE_LEVEL.
        let raw = NonNull::new(unsafe { IoCreateController(size) }).ok_or(NtError::INSUFFICIENT_RESOURCES)?;
        // SAFETY: a live controller object; its header is plain data.
        let extension = unsafe { (*raw.as_ptr()).ControllerExtension }.cast::<InterruptPath<C>>();
        let Some(slot) = NonNull::new(extension).filter(|slot| slot.as_ptr().is_aligned()) else {
            // SAFETY: created above, deleted once; nothing uses it.
            unsafe { IoDeleteController(raw.as_ptr()) };
            return Err(NtError::INSUFFICIENT_RESOURCES);
        };
        // SAFETY: the extension is nonpaged memory of `size` bytes, aligned (checked),
        // ours alone, and stays in place until IoDeleteController.
        unsafe { InterruptPath::init_in(slot, context) };
        // INVARIANT: created, and its extension is an initialised path.
        Ok(Self { raw, _context: PhantomData })
    }

    /// The extension, as the kernel's pointer to it (not derived from a reference, so
    /// it may be written through).
    fn path_ptr(&self) -> *mut InterruptPath<C> {
        // SAFETY: a live controller object (type invariant); its header is plain data.
        unsafe { (*self.raw.as_ptr()).ControllerExtension.cast() }
    }

    pub(super) fn path(&self) -> &InterruptPath<C> {
        // SAFETY: an initialised path, freed only by `delete(self)` (type invariant).
        unsafe { &*self.path_ptr() }
    }

    /// The driver's context.
    #[must_use]
    pub fn context(&self) -> &C {
        self.path().context()
    }

    /// The driver's context for changes; `None` while an interrupt is connected (its
    /// ISR and DPC read the context).
    pub fn context_mut(&mut self) -> Option<&mut C> {
        let path = NonNull::new(self.path_ptr())?;
        // SAFETY: an initialised path (type invariant); `&mut self` is the only access
        // to it besides the interrupt's own routines, for as long as the result lives.
        unsafe { InterruptPath::context_mut(path) }
    }

    /// IoConnectInterrupt of `resources` to the ISR of this controller's interrupt
    /// path (see [`Interrupt`]). PASSIVE_LEVEL.
    ///
    /// # Errors
    /// IoConnectInterrupt's status; STATUS_UNSUCCESSFUL if the path was connected
    /// before.
    pub fn connect(&self, resources: InterruptResources) -> NtResult<Interrupt<C>> {
        Interrupt::connect(self.path(), resources)
    }

    /// Forgets the interrupt object pointer the extension keeps, once disconnected.
    pub fn forget_interrupt(&self) {
        self.path().forget_object();
    }

    /// IoDeleteController. PASSIVE_LEVEL. While an interrupt is still connected (its
    /// connection was never disconnected) the object is left allocated instead: its ISR
    /// and DPC still use the extension.
    pub fn delete(self) {
        let quiet = self.path().is_quiet();
        debug_assert!(quiet, "IoDeleteController while the interrupt is connected");
        if quiet {
            // SAFETY: created by `create`, deleted once (`self` is consumed); no routine
            // uses the extension any more.
            unsafe { IoDeleteController(self.raw.as_ptr()) };
        }
    }
}

/// The bus-relative (raw) resources of one device: one memory window and one
/// interrupt, as IoReportResourceForDetection takes them.
#[derive(Clone, Copy)]
pub struct RawResources {
    /// The bus the device sits on.
    pub bus: INTERFACE_TYPE,
    /// Which bus of that type.
    pub bus_number: u32,
    /// Bus address of the register window.
    pub memory_start: u64,
    /// Its length in bytes.
    pub memory_length: u32,
    /// The bus interrupt level (the IRQ line).
    pub interrupt_level: u32,
    /// The bus interrupt vector.
    pub interrupt_vector: u32,
    /// The processors the interrupt may go to.
    pub interrupt_affinity: KAFFINITY,
}

/// A CM_RESOURCE_LIST with one full descriptor holding two partial ones (pack(4): the
/// second partial descriptor follows the first directly).
#[repr(C)]
struct ResourceList {
    list: CM_RESOURCE_LIST,
    second: CM_PARTIAL_RESOURCE_DESCRIPTOR,
}

impl ResourceList {
    // 60 bytes.
    const SIZE: u32 = size_of::<ResourceList>() as u32;

    fn new(resources: &RawResources) -> Self {
        let exclusive = CmResourceShareDeviceExclusive as u8;
        // SAFETY: plain data; all-zero is a valid starting point.
        let mut this: Self = unsafe { core::mem::zeroed() };
        this.list.Count = 1;
        let full = &mut this.list.List[0];
        full.InterfaceType = resources.bus;
        full.BusNumber = resources.bus_number;
        full.PartialResourceList.Version = 1;
        full.PartialResourceList.Revision = 1;
        full.PartialResourceList.Count = 2;
        let memory = &mut full.PartialResourceList.PartialDescriptors[0];
        memory.Type = CmResourceTypeMemory as u8;
        memory.ShareDisposition = exclusive;
        memory.u.Memory.Start = PHYSICAL_ADDRESS { QuadPart: resources.memory_start as i64 };
        memory.u.Memory.Length = resources.memory_length;
        this.second.Type = CmResourceTypeInterrupt as u8;
        this.second.ShareDisposition = exclusive;
        this.second.u.Interrupt.Level = resources.interrupt_level;
        this.second.u.Interrupt.Vector = resources.interrupt_vector;
        this.second.u.Interrupt.Affinity = resources.interrupt_affinity;
        this
    }
}

/// Resources claimed in the resource map with IoReportResourceForDetection.
///
/// # Invariants
/// `driver` is the driver object the claim was reported for, which lives until its
/// driver unloads; the claim is released at most once, by [`ResourceClaim::release`].
pub struct ResourceClaim {
    driver: NonNull<DRIVER_OBJECT>,
    conflicting: bool,
}

impl ResourceClaim {
    /// IoReportResourceForDetection of `resources` as the driver's own (a DriverList).
    /// PASSIVE_LEVEL, in a system thread (DriverEntry).
    ///
    /// # Errors
    /// The routine's status.
    pub fn report<E>(driver: &DriverObject<E>, resources: &RawResources) -> NtResult<Self> {
        let mut list = ResourceList::new(resources);
        let mut conflict: BOOLEAN = 0;
        // SAFETY: PASSIVE_LEVEL; our driver object and a well-formed list of the size given.
        let status = unsafe {
            IoReportResourceForDetection(
                driver.as_raw(),
                &raw mut list.list,
                ResourceList::SIZE,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                0,
                &raw mut conflict,
            )
        };
        to_result(status)?;
        // INVARIANT: reported for `driver`, which outlives its driver's claims.
        let driver = NonNull::new(driver.as_raw()).ok_or(NtError::INVALID_PARAMETER)?;
        Ok(Self { driver, conflicting: conflict != 0 })
    }

    /// Whether IoReportResourceForDetection said another driver claims them too.
    #[must_use]
    pub fn conflicting(&self) -> bool {
        self.conflicting
    }

    /// IoReportResourceForDetection with a list whose Count is zero, which releases the
    /// claim (its docs; NULL lists are refused, and the claim would stay). PASSIVE_LEVEL.
    ///
    /// # Errors
    /// The routine's status: the claim then stays in the resource map.
    pub fn release(self) -> NtResult {
        // SAFETY: plain data; all-zero is a list with Count 0.
        let mut empty: CM_RESOURCE_LIST = unsafe { core::mem::zeroed() };
        let mut conflict: BOOLEAN = 0;
        // SAFETY: the claim's live driver object (type invariant); PASSIVE_LEVEL; a list
        // of the size given.
        let status = unsafe {
            IoReportResourceForDetection(
                self.driver.as_ptr(),
                &raw mut empty,
                size_of::<CM_RESOURCE_LIST>() as u32,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                0,
                &raw mut conflict,
            )
        };
        to_result(status)
    }
}

/// A device's 32-bit registers mapped with MmMapIoSpace (non-cached), read and written
/// by index with volatile accesses.
///
/// # Invariants
/// `base` maps `words` 32-bit registers until [`RegisterWindow::unmap`], the only way
/// to unmap them.
pub struct RegisterWindow {
    base: NonNull<u32>,
    words: usize,
}

// SAFETY: device registers may be read and written from any processor; every access
// is a single volatile 32-bit read or write.
unsafe impl Send for RegisterWindow {}
// SAFETY: as above.
unsafe impl Sync for RegisterWindow {}

impl RegisterWindow {
    /// MmMapIoSpace of `bytes` of registers at the translated (system) `address`.
    /// PASSIVE_LEVEL.
    ///
    /// # Errors
    /// STATUS_INSUFFICIENT_RESOURCES if MmMapIoSpace fails.
    pub fn map(address: u64, bytes: usize) -> NtResult<Self> {
        // Whole registers only: the window maps and unmaps the same length.
        let words = bytes.checked_div(size_of::<u32>()).unwrap_or(0);
        let bytes = words.saturating_mul(size_of::<u32>());
        let physical = PHYSICAL_ADDRESS { QuadPart: address as i64 };
        // SAFETY: maps device memory that the driver claimed, at its translated address.
        let base = unsafe { MmMapIoSpace(physical, bytes as u64, MmNonCached) };
        let base = NonNull::new(base.cast::<u32>()).ok_or(NtError::INSUFFICIENT_RESOURCES)?;
        // INVARIANT: `words` registers are mapped at `base`.
        Ok(Self { base, words })
    }

    /// Register `index`; `None` outside the window.
    #[must_use]
    pub fn read(&self, index: usize) -> Option<u32> {
        (index < self.words).then(|| {
            // SAFETY: inside the mapped window (type invariant); registers need volatile
            // access.
            unsafe { core::ptr::read_volatile(self.base.as_ptr().add(index)) }
        })
    }

    /// Writes register `index`; `false` (nothing written) outside the window.
    #[must_use]
    pub fn write(&self, index: usize, value: u32) -> bool {
        if index >= self.words {
            return false;
        }
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile(self.base.as_ptr().add(index), value) };
        true
    }

    /// MmUnmapIoSpace. PASSIVE_LEVEL.
    pub fn unmap(self) {
        // SAFETY: mapped by `map` with this size; `self` is consumed, so once.
        unsafe { MmUnmapIoSpace(self.base.as_ptr().cast(), (self.words.saturating_mul(size_of::<u32>())) as u64) };
    }
}
