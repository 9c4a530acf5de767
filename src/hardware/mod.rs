//! The hardware profile: a register window (MmMapIoSpace), an interrupt connected
//! with IoConnectInterrupt whose ISR queues a CustomDpc, resources claimed with
//! IoReportResourceForDetection, and a controller object shared by the devices whose
//! extension holds the interrupt object, as "Releasing Device and Controller Objects"
//! describes. Only used when `Parameters` names an interrupt; the default profile
//! calls none of these DDIs (several kill Wine's driver host).
//!
//! `Parameters` gives bus-relative (raw) resources. The claim reports them raw, as
//! IoReportResourceForDetection requires; IoConnectInterrupt and MmMapIoSpace take the
//! translated ones (`translate.rs`). What the ISR and its DPC do is in `isr.rs`.

mod isr;
mod translate;

use core::cell::Cell;

use crate::config::{HardwareProfile, REGISTER_WINDOW};
use crate::context::DriverContext;
use crate::device::{DeviceExtension, DriverDevices};
use crate::kernel::driver::DriverObject;
use crate::kernel::error::{NtError, NtResult};
use crate::kernel::interrupt::{Interrupt, InterruptResources};
use crate::kernel::irql;
use crate::kernel::resources::{Controller, RawResources, RegisterWindow, ResourceClaim};
use crate::kernel::sys::{KAFFINITY, STATUS_CONFLICTING_ADDRESSES};
use isr::ControllerExtension;
use translate::Translated;

/// What the hardware profile acquired (nothing in the default profile). Touched only
/// by DriverEntry and Unload; the ISR and its DPC reach the controller extension on
/// their own.
pub struct HardwareResources {
    translated: Cell<Option<Translated>>,
    controller: Cell<Option<Controller<ControllerExtension>>>,
    claim: Cell<Option<ResourceClaim>>,
    interrupt: Cell<Option<Interrupt<ControllerExtension>>>,
}

impl HardwareResources {
    pub const fn new() -> Self {
        Self {
            translated: Cell::new(None),
            controller: Cell::new(None),
            claim: Cell::new(None),
            interrupt: Cell::new(None),
        }
    }

    /// Runs `f` on the controller, if there is one.
    fn with_controller<R>(&self, f: impl FnOnce(&mut Controller<ControllerExtension>) -> R) -> Option<R> {
        let mut controller = self.controller.take()?;
        let result = f(&mut controller);
        self.controller.set(Some(controller));
        Some(result)
    }
}

/// The raw resources the profile claims: the register window and the interrupt.
fn raw_resources(profile: &HardwareProfile) -> RawResources {
    RawResources {
        bus: translate::BUS,
        bus_number: translate::BUS_NUMBER,
        memory_start: profile.register_base,
        memory_length: REGISTER_WINDOW as u32,
        interrupt_level: profile.level,
        interrupt_vector: profile.vector,
        // Raw interrupts name no processors yet: any.
        interrupt_affinity: KAFFINITY::MAX,
    }
}

/// Translation, the controller object, the resource claim and the register mapping,
/// for the profile `context`'s parameters name; the ISR's DPC will deliver to
/// `devices`. PASSIVE_LEVEL.
pub fn claim(
    driver: &DriverObject<DeviceExtension>,
    resources: &HardwareResources,
    context: &'static DriverContext,
    devices: &'static DriverDevices,
) -> NtResult {
    irql::assert_passive();
    let Some(profile) = context.config.hardware else { return Ok(()) };
    let translated = translate::translate(&profile)?;
    resources.translated.set(Some(translated));
    resources.controller.set(Some(Controller::create(ControllerExtension::new(context, devices))?));

    let claim = ResourceClaim::report(driver, &raw_resources(&profile)).inspect_err(|error| {
        log!(Error, "hardware profile: IoReportResourceForDetection failed: {:#x}", error.status());
    })?;
    let conflicting = claim.conflicting();
    resources.claim.set(Some(claim));
    if conflicting {
        log!(Error, "hardware profile: resources conflict with another driver");
        return Err(NtError::from_failed(STATUS_CONFLICTING_ADDRESSES));
    }

    let registers = RegisterWindow::map(translated.registers, REGISTER_WINDOW)
        .inspect_err(|_| log!(Error, "hardware profile: MmMapIoSpace({:#x}) failed", translated.registers))?;
    let unused = resources.with_controller(|controller| match controller.context_mut() {
        Some(extension) => extension.registers = Some(registers),
        None => registers.unmap(),
    });
    debug_assert!(unused.is_some(), "the controller was created above");
    Ok(())
}

/// IoConnectInterrupt with the translated vector, IRQL and affinity, then enable
/// interrupts at the device. PASSIVE_LEVEL.
pub fn connect(resources: &HardwareResources) -> NtResult {
    irql::assert_passive();
    let Some(translated) = resources.translated.get() else { return Ok(()) };
    let system = InterruptResources { vector: translated.vector, irql: translated.irql, affinity: translated.affinity };
    let Some(connected) = resources.with_controller(|controller| controller.connect(system)) else {
        return Ok(());
    };
    let interrupt = connected.inspect_err(|error| {
        log!(Error, "hardware profile: IoConnectInterrupt failed: {:#x}", error.status());
    })?;
    interrupt.context().enable_interrupts();
    resources.interrupt.set(Some(interrupt));
    Ok(())
}

/// Stage 1, on a multiprocessor: quiet the device and mark the interrupt path stopping
/// under the interrupt lock, so no ISR queues the DPC again; then remove a queued DPC
/// and wait for one running elsewhere; only then IoDisconnectInterrupt, which frees the
/// interrupt object the DPC synchronizes with. PASSIVE_LEVEL.
pub fn disconnect(resources: &HardwareResources) {
    irql::assert_passive();
    let Some(interrupt) = resources.interrupt.take() else { return };
    let stopped = interrupt.stop(|extension, _, _| extension.disable_interrupts());
    let quiesced = stopped.remove_and_flush_dpc();
    quiesced.disconnect();
}

/// Stage 3: MmUnmapIoSpace (the interrupt is disconnected and no DPC is left, so
/// nothing reads the registers). PASSIVE_LEVEL.
pub fn unmap_registers(resources: &HardwareResources) {
    irql::assert_passive();
    let registers = resources.with_controller(|controller| controller.context_mut()?.registers.take());
    if let Some(registers) = registers.flatten() {
        registers.unmap();
    }
}

/// Stage 4: the interrupt object pointer kept in the controller extension.
pub fn forget_interrupt(resources: &HardwareResources) {
    resources.with_controller(|controller| controller.forget_interrupt());
}

/// Stage 5: release the resource claim. PASSIVE_LEVEL.
pub fn release_claim(resources: &HardwareResources) {
    irql::assert_passive();
    if let Some(claim) = resources.claim.take()
        && let Err(error) = claim.release()
    {
        log!(Error, "releasing the resource claim failed: {:#x}; the claim stays in the resource map", error.status());
    }
}

/// Last: IoDeleteController. PASSIVE_LEVEL.
pub fn delete_controller(resources: &HardwareResources) {
    irql::assert_passive();
    if let Some(controller) = resources.controller.take() {
        controller.delete();
    }
}
