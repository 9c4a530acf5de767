//! DriverEntry: acquires resources in stage order. On failure it releases exactly
//! what it acquired, with the same stage functions Unload uses.

use crate::config::Config;
use crate::context::DriverContext;
use crate::device::{self, Device, DeviceExtension, LINK_PREFIX};
use crate::kernel::device::OwnedDevice;
use crate::kernel::driver::{DriverObject, StateBox};
use crate::kernel::error::{NtError, NtResult};
use crate::kernel::irql;
use crate::kernel::link::SymbolicLink;
use crate::kernel::name::{Name, RegistryPath};
use crate::kernel::pool::{Allocator, tag};
use crate::kernel::security::{self, ADMINISTRATORS, EVERYONE, LOCAL_SYSTEM};
use crate::kernel::sys::{GENERIC_ALL, GENERIC_READ, GENERIC_WRITE};
use crate::kernel::thread::SystemThread;
use crate::state::DriverResources;
use crate::{dispatch, hardware, producer, registry_entries, statistics, unload, watchdog};

/// DriverEntry's policy (the kernel's `DriverEntry` adapter calls it at PASSIVE_LEVEL
/// with DriverUnload already set).
pub fn entry(driver: &mut DriverObject<DeviceExtension>, registry_path: &[u16]) -> NtResult {
    irql::assert_passive();
    log!(Info, "DriverEntry: begin");
    dispatch::install(driver);
    let Some(allocator) = Allocator::resolve() else {
        log!(Error, "DriverEntry: the kernel exports no pool allocator");
        return Err(NtError::NOT_SUPPORTED);
    };
    log!(Info, "DriverEntry: pool allocator {}", allocator.name());
    let state = allocate_state(registry_path, allocator).inspect_err(|error| {
        log!(Error, "DriverEntry: no driver state: {error}");
    })?;
    match acquire(driver, &state) {
        Ok(()) => {
            log!(Info, "DriverEntry: done, {} device(s)", state.devices().iter().count());
            // Unload takes it back through the devices.
            state.leak();
            Ok(())
        }
        Err(error) => {
            log!(Error, "DriverEntry: failed with {error}; releasing what was acquired");
            unload::release(&state);
            state.free();
            Err(error)
        }
    }
}

/// Stage 0: the driver state in pool, the registry path copy and the parameters.
fn allocate_state(registry_path: &[u16], allocator: Allocator) -> NtResult<StateBox<DriverResources>> {
    let config = Config::read(registry_path)?;
    let mut copy = RegistryPath::new();
    if !copy.push_units(registry_path) {
        log!(Error, "DriverEntry: registry path too long");
        return Err(NtError::NAME_TOO_LONG);
    }
    let context = DriverContext::new(allocator, config, copy);
    let state = StateBox::new(allocator, tag::STATE, DriverResources::new(context))?;
    // The events are at their final address in the pool block.
    state.context.init_events();
    Ok(state)
}

/// Stages 1..: hardware claims, devices, names, the thread, the interrupt, then start.
fn acquire(driver: &DriverObject<DeviceExtension>, state: &StateBox<DriverResources>) -> NtResult {
    let routine_state = state.routine_context();
    hardware::claim(driver, &state.hardware, &routine_state.context, routine_state.device_table())?;
    for index in 0..state.context.config.device_count {
        let device = create_device(driver, index, state)?;
        if let Err(device) = state.device_table().insert(index as usize, device) {
            unload::release_device(device);
            return Err(NtError::INVALID_PARAMETER);
        }
    }
    registry_entries::publish_device_names(&state.context, state.device_table())?;
    // The consumer thread (`consumer.rs`) runs on the whole state.
    state.thread.set(Some(SystemThread::start(routine_state)?));
    hardware::connect(&state.hardware)?;
    for device in state.devices().iter() {
        let extension = device.extension();
        producer::start(extension, state.context.config.sample_period_ms);
        extension.watchdog.start();
        device.finish_initializing();
    }
    Ok(())
}

/// One device with everything in its extension and its link. On failure nothing of
/// it remains.
fn create_device(
    driver: &DriverObject<DeviceExtension>,
    index: u32,
    state: &StateBox<DriverResources>,
) -> NtResult<OwnedDevice<DeviceExtension>> {
    let device = device::create(driver, index, state.reference(|state| &state.context))?;
    if let Err(error) = set_up_device(&device, index, state.context.config.open_to_everyone) {
        unload::release_device(device);
        return Err(error);
    }
    Ok(device)
}

/// The DACL, the timer and DPC, the IoTimer, the work item, the link.
fn set_up_device(device: &Device, index: u32, open_to_everyone: bool) -> NtResult {
    // SYSTEM and Administrators; Everyone (read/write) only with OpenToEveryone=1.
    let entries =
        [(&LOCAL_SYSTEM, GENERIC_ALL), (&ADMINISTRATORS, GENERIC_ALL), (&EVERYONE, GENERIC_READ | GENERIC_WRITE)];
    let admitted = entries.get(..if open_to_everyone { 3 } else { 2 }).unwrap_or(&entries);
    security::set_dacl(device, admitted)?;
    let extension = device.routine_context();
    extension.producer.init(extension);
    watchdog::init(device, extension)?;
    statistics::allocate(device, extension)?;
    let link = SymbolicLink::create(Name::indexed(LINK_PREFIX, index), &extension.device_name)
        .inspect_err(|error| log!(Error, "IoCreateSymbolicLink({index}) failed: {error}"))?;
    extension.link.set(Some(link));
    Ok(())
}
