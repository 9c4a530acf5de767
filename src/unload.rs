//! DriverUnload, in the stages of "Releasing Driver-Allocated Resources", then the
//! device and controller objects as "Releasing Device and Controller Objects"
//! describes. DriverEntry's failure path calls the same [`release`].
//!
//! Each stage touches only its own resources and tolerates ones never acquired.

use crate::device::{Device, DeviceExtension};
use crate::kernel::device::OwnedDevice;
use crate::kernel::driver::DriverObject;
use crate::kernel::irql;
use crate::kernel::link::SymbolicLink;
use crate::kernel::timer::flush_queued_dpcs;
use crate::state::DriverResources;
use crate::{consumer, hardware, registry_entries};

/// DriverUnload's policy, called at PASSIVE_LEVEL once no device of the driver is
/// referenced.
pub fn unload(driver: &DriverObject<DeviceExtension>) {
    irql::assert_passive();
    log!(Info, "Unload: begin");
    if let Some(state) = driver.reclaim_state::<DriverResources>() {
        release(&state);
        state.free();
    }
    log!(Info, "Unload: done");
}

/// Releases everything DriverEntry acquired, stage by stage.
pub fn release(state: &DriverResources) {
    irql::assert_passive();
    stage_1_disconnect_interrupts(state);
    stage_2_stop_work(state);
    stage_3_release_device_resources(state);
    stage_4_release_extension_objects(state);
    stage_5_release_hardware_claims(state);
    stage_6_remove_device_names(state);
    delete_device_objects(state);
}

/// Stage 1: quiet the device and mark the interrupt path stopping under the interrupt
/// lock, remove and flush the ISR's DPC, then IoDisconnectInterrupt.
fn stage_1_disconnect_interrupts(state: &DriverResources) {
    hardware::disconnect(&state.hardware);
    log!(Info, "Unload: stage 1 interrupts disconnected");
}

/// Stage 2: make sure no routine is running or can run: stop every source of new
/// work under the guard, cancel timers, wait for their DPCs and the work item, end the
/// thread. (The ISR's DPC is gone already: stage 1.)
fn stage_2_stop_work(state: &DriverResources) {
    for device in state.devices().iter() {
        let extension = device.extension();
        extension.state.lock().stopping = true;
        extension.producer.cancel();
        extension.watchdog.stop();
    }
    // Timer DPCs that were already queued when KeCancelTimer ran, or are running on
    // another processor.
    if FLUSH_DPCS {
        flush_queued_dpcs();
    }
    if WAIT_FOR_WORK_ITEMS {
        for device in state.devices().iter() {
            device.extension().statistics.wait_idle();
        }
    }
    if let Some(thread) = state.thread.take() {
        consumer::stop(thread, &state.context);
    }
    log!(Info, "Unload: stage 2 timers, DPCs, work items and thread stopped");
}

/// Stage 3: device-specific resources: links, rings, work items, mapped registers.
fn stage_3_release_device_resources(state: &DriverResources) {
    for device in state.devices().iter() {
        release_device_resources(device);
    }
    hardware::unmap_registers(&state.hardware);
    log!(Info, "Unload: stage 3 links, pool and mappings released");
}

fn release_device_resources(device: &Device) {
    let extension = device.extension();
    if let Some(Err(error)) = extension.link.take().map(SymbolicLink::delete) {
        log!(Warning, "IoDeleteSymbolicLink failed: {error}");
    }
    if let Some(ring) = extension.state.lock().ring.take() {
        ring.free();
    }
    extension.statistics.free();
}

/// Stage 4: system objects held in extensions: the interrupt object pointer kept in
/// the controller extension (disconnected, and so freed, in stage 1). DPC and timer
/// objects go with their extensions.
fn stage_4_release_extension_objects(state: &DriverResources) {
    hardware::forget_interrupt(&state.hardware);
    log!(Info, "Unload: stage 4 extension objects released");
}

/// Stage 5: hardware resources claimed in the resource map.
fn stage_5_release_hardware_claims(state: &DriverResources) {
    hardware::release_claim(&state.hardware);
    log!(Info, "Unload: stage 5 hardware claims released");
}

/// Stage 6: device names under HARDWARE\DEVICEMAP.
fn stage_6_remove_device_names(state: &DriverResources) {
    if state.context.device_names_published.replace(false) {
        registry_entries::remove_device_names();
    }
    log!(Info, "Unload: stage 6 device names removed");
}

/// Finally: IoDeleteDevice for every device, and IoDeleteController.
fn delete_device_objects(state: &DriverResources) {
    for device in state.take_devices() {
        crate::device::delete(device);
    }
    hardware::delete_controller(&state.hardware);
    log!(Info, "Unload: device and controller objects deleted");
}

/// Releases one device that DriverEntry could not finish, in the same stage order.
pub fn release_device(device: OwnedDevice<DeviceExtension>) {
    let extension = device.extension();
    extension.producer.cancel();
    extension.watchdog.stop();
    release_device_resources(&device);
    crate::device::delete(device);
}

/// Stage 2 flushes DPCs: a timer DPC queued before KeCancelTimer may still run. The
/// `no_dpc_flush` mutant build (tests/mutants.rs) leaves the flush out.
const FLUSH_DPCS: bool = !cfg!(stagedrv_mutant = "no_dpc_flush");

/// Stage 2 waits for the statistics work item: Windows calls DriverUnload even while
/// one is queued (its reference keeps only the device object and the image). The
/// `no_work_item_wait` mutant build (tests/mutants.rs) leaves the wait out.
const WAIT_FOR_WORK_ITEMS: bool = !cfg!(stagedrv_mutant = "no_work_item_wait");
