//! The hardware profile: a register window (MmMapIoSpace), an interrupt connected
//! with IoConnectInterrupt whose ISR queues a CustomDpc, resources claimed with
//! IoReportResourceForDetection, and a controller object shared by the devices whose
//! extension holds the interrupt object, as "Releasing Device and Controller Objects"
//! describes. Only used when `Parameters` names an interrupt; the default profile
//! calls none of these DDIs (several kill Wine's driver host).
//!
//! `Parameters` gives bus-relative (raw) resources. The claim reports them raw, as
//! IoReportResourceForDetection requires; IoConnectInterrupt and MmMapIoSpace take the
//! translated ones (`translate.rs`).
//!
//! The virtual device's registers (32-bit): STATUS (bit 0: a sample is ready), DATA,
//! CONTROL (bit 1: interrupts enabled), CHANNEL (the device the sample is for).

mod translate;

use core::cell::{Cell, UnsafeCell};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::config::REGISTER_WINDOW;
use crate::device::DeviceExtension;
use crate::driver::DriverState;
use crate::kernel::driver::DriverObject;
use crate::kernel::sys::{
    _KINTERRUPT_MODE::Latched, _MEMORY_CACHING_TYPE::MmNonCached, BOOLEAN, CM_PARTIAL_RESOURCE_DESCRIPTOR,
    CM_RESOURCE_LIST, CmResourceTypeInterrupt, CmResourceTypeMemory, IoConnectInterrupt, IoCreateController,
    IoDeleteController, IoDisconnectInterrupt, IoReportResourceForDetection, KAFFINITY, KDPC, KeFlushQueuedDpcs,
    KeInitializeDpc, KeInsertQueueDpc, KeRemoveQueueDpc, KeSynchronizeExecution, MmMapIoSpace, MmUnmapIoSpace,
    NTSTATUS, PCONTROLLER_OBJECT, PDRIVER_OBJECT, PHYSICAL_ADDRESS, PKDPC, PKINTERRUPT, PVOID,
    STATUS_CONFLICTING_ADDRESSES, STATUS_INSUFFICIENT_RESOURCES, nt_success,
};
use translate::Translated;

const STATUS: usize = 0;
const DATA: usize = 1;
const CONTROL: usize = 2;
const CHANNEL: usize = 3;
const DATA_READY: u32 = 1;
const INTERRUPTS_ENABLED: u32 = 2;

/// Samples latched by the ISR for the DPC.
const LATCH: usize = 8;

/// The controller extension: state shared by all devices, the ISR and its DPC. All-zero
/// is its initial state (IoCreateController zeroes it).
#[repr(C)]
struct ControllerExtension {
    /// Written by IoConnectInterrupt (through `as_ptr`); cleared in stage 4.
    interrupt: Cell<PKINTERRUPT>,
    dpc: UnsafeCell<KDPC>,
    /// Set in DriverEntry before the interrupt is connected, cleared in stage 3.
    registers: Cell<*mut u32>,
    /// Touched only under the interrupt spin lock (ISR, KeSynchronizeExecution).
    latch: UnsafeCell<Latch>,
    /// Set under the interrupt spin lock in stage 1: the ISR no longer queues the DPC,
    /// and the DPC no longer touches the interrupt object.
    stopping: AtomicBool,
}

/// (channel, value) pairs the ISR read, waiting for the DPC.
#[derive(Clone, Copy)]
struct Latch {
    samples: [(u32, u32); LATCH],
    count: usize,
    lost: u64,
}

/// What the hardware profile acquired (nothing in the default profile).
pub struct Hardware {
    driver: Cell<PDRIVER_OBJECT>,
    controller: Cell<PCONTROLLER_OBJECT>,
    translated: Cell<Option<Translated>>,
    claimed: Cell<bool>,
    connected: Cell<bool>,
}

impl Hardware {
    pub const fn new() -> Self {
        Self {
            driver: Cell::new(core::ptr::null_mut()),
            controller: Cell::new(core::ptr::null_mut()),
            translated: Cell::new(None),
            claimed: Cell::new(false),
            connected: Cell::new(false),
        }
    }

    fn extension(&self) -> Option<&ControllerExtension> {
        let controller = self.controller.get();
        // SAFETY: a live controller object created by `claim`; its zeroed extension was
        // sized for ControllerExtension, for which all-zero is valid.
        (!controller.is_null()).then(|| unsafe { &*(*controller).ControllerExtension.cast::<ControllerExtension>() })
    }
}

fn write_register(registers: *mut u32, index: usize, value: u32) {
    // SAFETY: `registers` maps REGISTER_WINDOW bytes; device registers need volatile access.
    unsafe { core::ptr::write_volatile(registers.add(index), value) };
}

fn read_register(registers: *mut u32, index: usize) -> u32 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(registers.add(index)) }
}

/// Translation, the controller object, the resource claim and the register mapping.
/// PASSIVE_LEVEL.
pub fn claim(driver: &DriverObject<DeviceExtension>, state: &DriverState) -> Result<(), NTSTATUS> {
    let Some(raw) = state.config.hardware else { return Ok(()) };
    let hw = &state.hardware;
    let translated = translate::translate(&raw)?;
    hw.translated.set(Some(translated));
    hw.driver.set(driver.as_raw());
    // SAFETY: PASSIVE_LEVEL; the size is our extension's.
    let controller = unsafe { IoCreateController(size_of::<ControllerExtension>() as u32) };
    if controller.is_null() {
        return Err(STATUS_INSUFFICIENT_RESOURCES);
    }
    hw.controller.set(controller);
    let Some(extension) = hw.extension() else { return Err(STATUS_INSUFFICIENT_RESOURCES) };
    // SAFETY: the fresh extension is ours; the DPC is initialised in place.
    unsafe { KeInitializeDpc(extension.dpc.get(), Some(hardware_dpc), core::ptr::from_ref(state).cast_mut().cast()) };

    let mut list = ResourceList::raw(&raw);
    let mut conflict: BOOLEAN = 0;
    // SAFETY: PASSIVE_LEVEL (DriverEntry runs in a system thread); a well-formed list of
    // the size given.
    let status = unsafe {
        IoReportResourceForDetection(
            driver.as_raw(),
            list.as_mut_ptr(),
            ResourceList::SIZE,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            0,
            &raw mut conflict,
        )
    };
    if !nt_success(status) {
        log!(Error, "hardware profile: IoReportResourceForDetection failed: {status:#x}");
        return Err(status);
    }
    hw.claimed.set(true);
    if conflict != 0 {
        log!(Error, "hardware profile: resources conflict with another driver");
        return Err(STATUS_CONFLICTING_ADDRESSES);
    }

    let system = PHYSICAL_ADDRESS { QuadPart: translated.registers as i64 };
    // SAFETY: maps the claimed window at its translated address.
    let registers = unsafe { MmMapIoSpace(system, REGISTER_WINDOW as u64, MmNonCached) };
    if registers.is_null() {
        log!(Error, "hardware profile: MmMapIoSpace({:#x}) failed", translated.registers);
        return Err(STATUS_INSUFFICIENT_RESOURCES);
    }
    extension.registers.set(registers.cast());
    Ok(())
}

/// A CM_RESOURCE_LIST with one full descriptor holding two partial ones (pack(4): the
/// second partial descriptor follows the first directly).
#[repr(C)]
struct ResourceList {
    list: CM_RESOURCE_LIST,
    second: CM_PARTIAL_RESOURCE_DESCRIPTOR,
}

impl ResourceList {
    const SIZE: u32 = size_of::<ResourceList>() as u32;

    /// The raw (bus-relative) register window and interrupt.
    fn raw(raw: &crate::config::Hardware) -> Self {
        // SAFETY: plain data; all-zero is a valid starting point.
        let mut this: Self = unsafe { core::mem::zeroed() };
        this.list.Count = 1;
        let full = &mut this.list.List[0];
        full.InterfaceType = translate::BUS;
        full.BusNumber = translate::BUS_NUMBER;
        full.PartialResourceList.Version = 1;
        full.PartialResourceList.Revision = 1;
        full.PartialResourceList.Count = 2;
        let memory = &mut full.PartialResourceList.PartialDescriptors[0];
        memory.Type = CmResourceTypeMemory as u8;
        memory.ShareDisposition = crate::kernel::sys::_CM_SHARE_DISPOSITION::CmResourceShareDeviceExclusive as u8;
        memory.u.Memory.Start = PHYSICAL_ADDRESS { QuadPart: raw.register_base as i64 };
        memory.u.Memory.Length = REGISTER_WINDOW as u32;
        this.second.Type = CmResourceTypeInterrupt as u8;
        this.second.ShareDisposition = crate::kernel::sys::_CM_SHARE_DISPOSITION::CmResourceShareDeviceExclusive as u8;
        this.second.u.Interrupt.Level = raw.level;
        this.second.u.Interrupt.Vector = raw.vector;
        // Raw interrupts name no processors yet: any.
        this.second.u.Interrupt.Affinity = KAFFINITY::MAX;
        this
    }

    fn as_mut_ptr(&mut self) -> *mut CM_RESOURCE_LIST {
        &raw mut self.list
    }
}

/// IoConnectInterrupt with the translated vector, IRQL and affinity, then enable
/// interrupts at the device. PASSIVE_LEVEL.
pub fn connect(state: &DriverState) -> Result<(), NTSTATUS> {
    let hw = &state.hardware;
    let (Some(translated), Some(extension)) = (hw.translated.get(), hw.extension()) else { return Ok(()) };
    // The I/O manager stores the object before the ISR can first run, so the DPC that
    // ISR queues always finds it in the extension.
    // SAFETY: the extension outlives the connection (deleted after stage 1 disconnects).
    let status = unsafe {
        IoConnectInterrupt(
            extension.interrupt.as_ptr(),
            Some(isr),
            core::ptr::from_ref(extension).cast_mut().cast(),
            core::ptr::null_mut(),
            translated.vector,
            translated.irql,
            translated.irql,
            Latched,
            0,
            translated.affinity,
            0,
        )
    };
    if !nt_success(status) {
        log!(Error, "hardware profile: IoConnectInterrupt failed: {status:#x}");
        return Err(status);
    }
    hw.connected.set(true);
    write_register(extension.registers.get(), CONTROL, INTERRUPTS_ENABLED);
    Ok(())
}

/// Stage 1, on a multiprocessor: quiet the device and mark the interrupt path stopping
/// under the interrupt lock, so no ISR queues the DPC again; then remove a queued DPC
/// and wait for one running elsewhere; only then IoDisconnectInterrupt, which frees the
/// interrupt object the DPC synchronizes with.
pub fn disconnect(state: &DriverState) {
    let Some(extension) = state.hardware.extension() else { return };
    if !state.hardware.connected.replace(false) {
        return;
    }
    let interrupt = extension.interrupt.get();
    // SAFETY: connected by `connect`; PASSIVE_LEVEL, below the interrupt's IRQL.
    unsafe { KeSynchronizeExecution(interrupt, Some(quiet), core::ptr::from_ref(extension).cast_mut().cast()) };
    if DISCONNECT_BEFORE_DPC_FLUSH {
        disconnect_interrupt(interrupt);
    }
    // SAFETY: the DPC was initialised in `claim`; any IRQL.
    unsafe { KeRemoveQueueDpc(extension.dpc.get()) };
    // SAFETY: PASSIVE_LEVEL; waits for a DPC the ISR queued before `quiet` ran, which may
    // be running on another processor.
    unsafe { KeFlushQueuedDpcs() };
    if !DISCONNECT_BEFORE_DPC_FLUSH {
        disconnect_interrupt(interrupt);
    }
}

fn disconnect_interrupt(interrupt: PKINTERRUPT) {
    // SAFETY: connected by `connect`, disconnected once; the pointer is forgotten in
    // stage 4.
    unsafe { IoDisconnectInterrupt(interrupt) };
}

/// Run by KeSynchronizeExecution in stage 1: interrupts off at the device, and the
/// stopping mark the ISR and the DPC check.
unsafe extern "C" fn quiet(context: PVOID) -> BOOLEAN {
    // SAFETY: the context is the controller extension; the interrupt lock is held.
    let extension = unsafe { &*context.cast::<ControllerExtension>() };
    write_register(extension.registers.get(), CONTROL, 0);
    extension.stopping.store(true, Ordering::Release);
    1
}

/// Stage 3: MmUnmapIoSpace.
pub fn unmap_registers(state: &DriverState) {
    if let Some(extension) = state.hardware.extension() {
        let registers = extension.registers.replace(core::ptr::null_mut());
        if !registers.is_null() {
            // SAFETY: mapped by `claim` with this size, unmapped once; the interrupt is
            // disconnected and no DPC is left, so nothing reads the registers.
            unsafe { MmUnmapIoSpace(registers.cast(), REGISTER_WINDOW as u64) };
        }
    }
}

/// Stage 4: the interrupt object pointer kept in the controller extension.
pub fn forget_interrupt(state: &DriverState) {
    if let Some(extension) = state.hardware.extension() {
        extension.interrupt.set(core::ptr::null_mut());
    }
}

/// Stage 5: report a resource list whose Count is zero, which releases the claim
/// (IoReportResourceForDetection docs; NULL lists are refused, and the claim would stay).
pub fn release_claim(state: &DriverState) {
    if state.hardware.claimed.replace(false) {
        // SAFETY: plain data; all-zero is a list with Count 0.
        let mut empty: CM_RESOURCE_LIST = unsafe { core::mem::zeroed() };
        let mut conflict: BOOLEAN = 0;
        // SAFETY: our driver object; PASSIVE_LEVEL; a list of the size given.
        let status = unsafe {
            IoReportResourceForDetection(
                state.hardware.driver.get(),
                &raw mut empty,
                size_of::<CM_RESOURCE_LIST>() as u32,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                0,
                &raw mut conflict,
            )
        };
        if !nt_success(status) {
            log!(Error, "releasing the resource claim failed: {status:#x}; the claim stays in the resource map");
        }
    }
}

/// Last: IoDeleteController.
pub fn delete_controller(state: &DriverState) {
    let controller = state.hardware.controller.replace(core::ptr::null_mut());
    if !controller.is_null() {
        // SAFETY: created by `claim`, deleted once, after the devices.
        unsafe { IoDeleteController(controller) };
    }
}

/// The ISR, at the device IRQL under the interrupt spin lock: acknowledge the
/// device, latch the sample, queue the CustomDpc (unless stage 1 has begun).
unsafe extern "C" fn isr(_interrupt: PKINTERRUPT, context: PVOID) -> BOOLEAN {
    // SAFETY: the context is the controller extension, alive while connected.
    let extension = unsafe { &*context.cast::<ControllerExtension>() };
    let registers = extension.registers.get();
    if read_register(registers, STATUS) & DATA_READY == 0 {
        return 0;
    }
    let sample = (read_register(registers, CHANNEL), read_register(registers, DATA));
    write_register(registers, STATUS, 0);
    if extension.stopping.load(Ordering::Acquire) {
        return 1;
    }
    // SAFETY: the interrupt spin lock is held, which serialises every user of the latch.
    let latch = unsafe { &mut *extension.latch.get() };
    match latch.samples.get_mut(latch.count) {
        Some(slot) => {
            *slot = sample;
            latch.count = latch.count.saturating_add(1);
        }
        None => latch.lost = latch.lost.wrapping_add(1),
    }
    // SAFETY: the DPC was initialised in `claim`; KeInsertQueueDpc is callable at DIRQL.
    unsafe { KeInsertQueueDpc(extension.dpc.get(), core::ptr::null_mut(), core::ptr::null_mut()) };
    1
}

/// Moves the latched samples out; run by KeSynchronizeExecution from the DPC.
unsafe extern "C" fn take_latched(context: PVOID) -> BOOLEAN {
    // SAFETY: `context` is an (extension, output) pair prepared by `hardware_dpc`.
    let (extension, out) = unsafe { &mut *context.cast::<(&ControllerExtension, Latch)>() };
    // SAFETY: the interrupt spin lock is held, so the ISR is not running.
    let latch = unsafe { &mut *extension.latch.get() };
    *out = *latch;
    latch.count = 0;
    1
}

/// The CustomDpc: moves the ISR's samples into the devices' rings. DISPATCH_LEVEL.
unsafe extern "C" fn hardware_dpc(_dpc: PKDPC, context: PVOID, _arg1: PVOID, _arg2: PVOID) {
    // SAFETY: the DPC's context is the driver state, alive until Unload flushed DPCs.
    let state = unsafe { &*context.cast::<DriverState>() };
    let Some(extension) = state.hardware.extension() else { return };
    // Stage 1 has begun: the interrupt object is about to go.
    if extension.stopping.load(Ordering::Acquire) {
        return;
    }
    let mut exchange = (extension, Latch { samples: [(0, 0); LATCH], count: 0, lost: 0 });
    // SAFETY: the interrupt is still connected: stage 1 disconnects only after
    // KeFlushQueuedDpcs has waited for this routine.
    unsafe {
        KeSynchronizeExecution(extension.interrupt.get(), Some(take_latched), (&raw mut exchange).cast());
    }
    let latched = exchange.1;
    let (now, _) = crate::timer::performance_counter();
    let devices = state.devices();
    let device_count = devices.iter().count();
    let mut wake = false;
    for &(channel, value) in latched.samples.iter().take(latched.count) {
        let Some(device) = (channel as usize).checked_rem(device_count).and_then(|k| devices.iter().nth(k)) else {
            continue;
        };
        let mut shared = device.extension().shared.lock_at_dpc_level();
        if shared.stopping {
            continue;
        }
        if let Some(ring) = shared.ring.as_mut() {
            ring.push(now, u64::from(value));
        }
        wake |= shared.stats.reads_pending > 0;
    }
    if wake {
        state.data_ready.set();
    }
}

/// Mutant build `disconnect_before_dpc_flush` (tests/mutants.rs): the old stage 1, which
/// disconnected the interrupt while the ISR's DPC could still be queued or running.
const DISCONNECT_BEFORE_DPC_FLUSH: bool = cfg!(stagedrv_mutant = "disconnect_before_dpc_flush");
