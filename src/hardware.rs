//! The hardware profile: a register window (MmMapIoSpace), an interrupt connected
//! with IoConnectInterrupt whose ISR queues a CustomDpc, resources claimed with
//! IoReportResourceForDetection, and a controller object shared by the devices whose
//! extension holds the interrupt object, as "Releasing Device and Controller Objects"
//! describes. Only used when `Parameters` names an interrupt; the default profile
//! calls none of these DDIs (several kill Wine's driver host).
//!
//! The virtual device's registers (32-bit): STATUS (bit 0: a sample is ready), DATA,
//! CONTROL (bit 1: interrupts enabled), CHANNEL (the device the sample is for).

use core::cell::{Cell, UnsafeCell};

use crate::config::REGISTER_WINDOW;
use crate::driver::DriverState;
use crate::sys::{
    _INTERFACE_TYPE::Internal, _KINTERRUPT_MODE::Latched, _MEMORY_CACHING_TYPE::MmNonCached, BOOLEAN,
    CM_PARTIAL_RESOURCE_DESCRIPTOR, CM_RESOURCE_LIST, CmResourceTypeInterrupt, CmResourceTypeMemory, DRIVER_OBJECT,
    IoConnectInterrupt, IoCreateController, IoDeleteController, IoDisconnectInterrupt, IoReportResourceForDetection,
    KDPC, KeInitializeDpc, KeInsertQueueDpc, KeRemoveQueueDpc, KeSynchronizeExecution, MmMapIoSpace, MmUnmapIoSpace,
    NTSTATUS, PCONTROLLER_OBJECT, PDRIVER_OBJECT, PHYSICAL_ADDRESS, PKDPC, PKINTERRUPT, PVOID,
    STATUS_CONFLICTING_ADDRESSES, STATUS_INSUFFICIENT_RESOURCES, nt_success,
};

const STATUS: usize = 0;
const DATA: usize = 1;
const CONTROL: usize = 2;
const CHANNEL: usize = 3;
const DATA_READY: u32 = 1;
const INTERRUPTS_ENABLED: u32 = 2;

/// Samples latched by the ISR for the DPC.
const LATCH: usize = 8;

/// The controller extension: state shared by all devices and the ISR.
#[repr(C)]
struct ControllerExtension {
    interrupt: PKINTERRUPT,
    dpc: KDPC,
    registers: *mut u32,
    /// (channel, value) pairs, guarded by the interrupt spin lock.
    latched: [(u32, u32); LATCH],
    latched_count: usize,
    lost: u64,
}

/// What the hardware profile acquired (nothing in the default profile).
pub struct Hardware {
    driver: Cell<PDRIVER_OBJECT>,
    controller: Cell<PCONTROLLER_OBJECT>,
    claimed: Cell<bool>,
    connected: Cell<bool>,
}

impl Hardware {
    pub const fn new() -> Self {
        Self {
            driver: Cell::new(core::ptr::null_mut()),
            controller: Cell::new(core::ptr::null_mut()),
            claimed: Cell::new(false),
            connected: Cell::new(false),
        }
    }

    fn extension(&self) -> Option<&UnsafeCell<ControllerExtension>> {
        let controller = self.controller.get();
        // SAFETY: a live controller object created by `claim`; its extension was sized and
        // initialised for ControllerExtension.
        (!controller.is_null())
            .then(|| unsafe { &*(*controller).ControllerExtension.cast::<UnsafeCell<ControllerExtension>>() })
    }

    fn registers(&self) -> *mut u32 {
        // SAFETY: only DriverEntry and Unload change `registers`.
        self.extension().map_or(core::ptr::null_mut(), |e| unsafe { (*e.get()).registers })
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

/// Controller object, register mapping and the resource claim. PASSIVE_LEVEL.
pub fn claim(driver: &mut DRIVER_OBJECT, state: &DriverState) -> Result<(), NTSTATUS> {
    let Some(hardware) = state.config.hardware else { return Ok(()) };
    let hw = &state.hardware;
    hw.driver.set(driver);
    // SAFETY: PASSIVE_LEVEL; the size is our extension's.
    let controller = unsafe { IoCreateController(size_of::<ControllerExtension>() as u32) };
    if controller.is_null() {
        return Err(STATUS_INSUFFICIENT_RESOURCES);
    }
    hw.controller.set(controller);
    let Some(extension) = hw.extension() else { return Err(STATUS_INSUFFICIENT_RESOURCES) };
    let extension = extension.get();
    // SAFETY: the fresh, zeroed extension is ours; the DPC is initialised in place.
    unsafe {
        KeInitializeDpc(&raw mut (*extension).dpc, Some(hardware_dpc), core::ptr::from_ref(state).cast_mut().cast())
    };
    let base = PHYSICAL_ADDRESS { QuadPart: hardware.register_base as i64 };
    // SAFETY: maps the window the Parameters key describes.
    let registers = unsafe { MmMapIoSpace(base, REGISTER_WINDOW as u64, MmNonCached) };
    if registers.is_null() {
        log!(Error, "hardware profile: MmMapIoSpace({:#x}) failed", hardware.register_base);
        return Err(STATUS_INSUFFICIENT_RESOURCES);
    }
    // SAFETY: as above.
    unsafe { (*extension).registers = registers.cast() };
    let mut list = ResourceList::new(hardware.register_base, hardware.vector, hardware.level);
    let mut conflict: BOOLEAN = 0;
    // SAFETY: a well-formed resource list of the size given.
    let status = unsafe {
        IoReportResourceForDetection(
            driver,
            list.as_mut_ptr(),
            ResourceList::SIZE,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            0,
            &raw mut conflict,
        )
    };
    if !nt_success(status) {
        return Err(status);
    }
    hw.claimed.set(true);
    if conflict != 0 {
        log!(Error, "hardware profile: resources conflict with another driver");
        return Err(STATUS_CONFLICTING_ADDRESSES);
    }
    Ok(())
}

/// A CM_RESOURCE_LIST with one full descriptor holding two partial ones.
#[repr(C)]
struct ResourceList {
    list: CM_RESOURCE_LIST,
    second: CM_PARTIAL_RESOURCE_DESCRIPTOR,
}

impl ResourceList {
    const SIZE: u32 = size_of::<ResourceList>() as u32;

    fn new(base: u64, vector: u32, level: u32) -> Self {
        // SAFETY: plain data; all-zero is a valid starting point.
        let mut this: Self = unsafe { core::mem::zeroed() };
        this.list.Count = 1;
        let full = &mut this.list.List[0];
        full.InterfaceType = Internal;
        full.PartialResourceList.Version = 1;
        full.PartialResourceList.Revision = 1;
        full.PartialResourceList.Count = 2;
        let memory = &mut full.PartialResourceList.PartialDescriptors[0];
        memory.Type = CmResourceTypeMemory as u8;
        memory.ShareDisposition = crate::sys::_CM_SHARE_DISPOSITION::CmResourceShareDeviceExclusive as u8;
        memory.u.Memory.Start = PHYSICAL_ADDRESS { QuadPart: base as i64 };
        memory.u.Memory.Length = REGISTER_WINDOW as u32;
        this.second.Type = CmResourceTypeInterrupt as u8;
        this.second.ShareDisposition = crate::sys::_CM_SHARE_DISPOSITION::CmResourceShareDeviceExclusive as u8;
        this.second.u.Interrupt.Level = level;
        this.second.u.Interrupt.Vector = vector;
        this.second.u.Interrupt.Affinity = 1;
        this
    }

    fn as_mut_ptr(&mut self) -> *mut CM_RESOURCE_LIST {
        &raw mut self.list
    }
}

/// IoConnectInterrupt, then enable interrupts at the device. PASSIVE_LEVEL.
pub fn connect(state: &DriverState) -> Result<(), NTSTATUS> {
    let (Some(hardware), Some(extension)) = (state.config.hardware, state.hardware.extension()) else { return Ok(()) };
    let extension = extension.get();
    // Bounded to 3..=12 by the configuration.
    #[allow(clippy::cast_possible_truncation)]
    let irql = hardware.level as u8;
    // SAFETY: the extension outlives the connection (deleted after stage 1 disconnects).
    let status = unsafe {
        IoConnectInterrupt(
            &raw mut (*extension).interrupt,
            Some(isr),
            extension.cast(),
            core::ptr::null_mut(),
            hardware.vector,
            irql,
            irql,
            Latched,
            0,
            1,
            0,
        )
    };
    if !nt_success(status) {
        log!(Error, "hardware profile: IoConnectInterrupt failed: {status:#x}");
        return Err(status);
    }
    state.hardware.connected.set(true);
    write_register(state.hardware.registers(), CONTROL, INTERRUPTS_ENABLED);
    Ok(())
}

/// Stage 1: disable interrupts at the device, then IoDisconnectInterrupt.
pub fn disconnect(state: &DriverState) {
    if state.hardware.connected.replace(false) {
        write_register(state.hardware.registers(), CONTROL, 0);
        if let Some(extension) = state.hardware.extension() {
            // SAFETY: connected by `connect`, disconnected once; the pointer is forgotten in
            // stage 4.
            unsafe { IoDisconnectInterrupt((*extension.get()).interrupt) };
        }
    }
}

/// Stage 2: a CustomDpc the ISR queued.
pub fn remove_queued_dpc(state: &DriverState) {
    if let Some(extension) = state.hardware.extension() {
        // SAFETY: the DPC was initialised in `claim`; any IRQL.
        unsafe { KeRemoveQueueDpc(&raw mut (*extension.get()).dpc) };
    }
}

/// Stage 3: MmUnmapIoSpace.
pub fn unmap_registers(state: &DriverState) {
    if let Some(extension) = state.hardware.extension() {
        let extension = extension.get();
        // SAFETY: Unload owns the extension now (interrupt disconnected, DPCs flushed).
        let registers = unsafe { core::mem::replace(&mut (*extension).registers, core::ptr::null_mut()) };
        if !registers.is_null() {
            // SAFETY: mapped by `claim` with this size, unmapped once.
            unsafe { MmUnmapIoSpace(registers.cast(), REGISTER_WINDOW as u64) };
        }
    }
}

/// Stage 4: the interrupt object pointer kept in the controller extension.
pub fn forget_interrupt(state: &DriverState) {
    if let Some(extension) = state.hardware.extension() {
        // SAFETY: as above.
        unsafe { (*extension.get()).interrupt = core::ptr::null_mut() };
    }
}

/// Stage 5: report an empty resource list.
pub fn release_claim(state: &DriverState) {
    if state.hardware.claimed.replace(false) {
        let mut conflict: BOOLEAN = 0;
        // SAFETY: our driver object; an empty list releases the claim.
        let status = unsafe {
            IoReportResourceForDetection(
                state.hardware.driver.get(),
                core::ptr::null_mut(),
                0,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                0,
                &raw mut conflict,
            )
        };
        if !nt_success(status) {
            log!(Warning, "releasing the resource claim failed: {status:#x}");
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
/// device, latch the sample, queue the CustomDpc.
unsafe extern "C" fn isr(_interrupt: PKINTERRUPT, context: PVOID) -> BOOLEAN {
    let extension = context.cast::<ControllerExtension>();
    // SAFETY: the context is the controller extension; the interrupt lock serialises us
    // with KeSynchronizeExecution callers.
    let extension = unsafe { &mut *extension };
    let registers = extension.registers;
    if read_register(registers, STATUS) & DATA_READY == 0 {
        return 0;
    }
    let sample = (read_register(registers, CHANNEL), read_register(registers, DATA));
    write_register(registers, STATUS, 0);
    match extension.latched.get_mut(extension.latched_count) {
        Some(slot) => {
            *slot = sample;
            extension.latched_count = extension.latched_count.saturating_add(1);
        }
        None => extension.lost = extension.lost.wrapping_add(1),
    }
    // SAFETY: the DPC was initialised in `claim`; KeInsertQueueDpc is callable at DIRQL.
    unsafe { KeInsertQueueDpc(&raw mut extension.dpc, core::ptr::null_mut(), core::ptr::null_mut()) };
    1
}

/// Moves latched samples to the caller's buffer; run by KeSynchronizeExecution.
unsafe extern "C" fn take_latched(context: PVOID) -> BOOLEAN {
    // SAFETY: `context` is a (extension, output) pair prepared by `hardware_dpc`.
    let (extension, out) = unsafe { &mut *context.cast::<(*mut ControllerExtension, Latched)>() };
    // SAFETY: the interrupt lock is held, so the ISR is not running.
    let extension = unsafe { &mut **extension };
    out.count = extension.latched_count;
    out.samples = extension.latched;
    extension.latched_count = 0;
    1
}

#[derive(Clone, Copy)]
struct Latched {
    samples: [(u32, u32); LATCH],
    count: usize,
}

/// The CustomDpc: moves the ISR's samples into the devices' rings. DISPATCH_LEVEL.
unsafe extern "C" fn hardware_dpc(_dpc: PKDPC, context: PVOID, _arg1: PVOID, _arg2: PVOID) {
    // SAFETY: the DPC's context is the driver state, alive until Unload flushed DPCs.
    let state = unsafe { &*context.cast::<DriverState>() };
    let Some(extension) = state.hardware.extension() else { return };
    let extension = extension.get();
    let mut exchange = (extension, Latched { samples: [(0, 0); LATCH], count: 0 });
    // SAFETY: the interrupt is connected while DPCs can run (stage 1 disconnects, stage 2
    // removes and flushes this DPC before anything is freed).
    unsafe { KeSynchronizeExecution((*extension).interrupt, Some(take_latched), (&raw mut exchange).cast()) };
    let (now, _) = crate::timer::performance_counter();
    let device_count = state.devices().count();
    let mut wake = false;
    for &(channel, value) in exchange.1.samples.iter().take(exchange.1.count) {
        let Some(device) = (channel as usize).checked_rem(device_count).and_then(|k| state.devices().nth(k)) else {
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
