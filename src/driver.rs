//! DriverEntry: acquires resources in stage order. On failure it releases exactly
//! what it acquired, with the same stage functions Unload uses.

use core::cell::Cell;

use crate::config::Config;
use crate::device::Device;
use crate::kernel::error::{NtError, NtResult};
use crate::kernel::pool::{Allocator, PoolBuf, tag};
use crate::kernel::sync::{Event, EventKind, EventState};
use crate::kernel::sys::{DRIVER_OBJECT, NTSTATUS, PCUNICODE_STRING, PDRIVER_OBJECT, STATUS_SUCCESS};
use crate::kernel::thread::SystemThread;
use crate::link::SymbolicLink;
use crate::name::PathBuf;
use crate::{consumer, dispatch, hardware, producer, registry, security, statistics, unload, watchdog};

/// Most devices one driver instance creates (`Parameters\DeviceCount` is bounded by it).
pub const MAX_DEVICES: usize = 8;

/// Driver-wide state, in pool (tag "SdDs"). Every device extension points to it, which
/// is how DriverUnload finds it; it is freed last, after the devices are deleted.
/// (IoAllocateDriverObjectExtension would be the textbook place, but Wine 8.0 does not
/// implement it.)
pub struct DriverState {
    /// The pool allocator DriverEntry resolved.
    pub allocator: Allocator,
    pub config: Config,
    /// Copy of the service key path: DriverEntry's RegistryPath is freed after it returns.
    pub registry_path: PathBuf,
    devices: [Cell<Option<Device>>; MAX_DEVICES],
    /// Producers signal it when reads are waiting (synchronization event).
    pub data_ready: Event,
    /// Unload signals it to end the consumer thread (notification event).
    pub stop: Event,
    /// The consumer thread (`consumer.rs`).
    pub thread: Cell<Option<SystemThread>>,
    /// The DEVICEMAP key exists (set as soon as it is created).
    pub device_names_published: Cell<bool>,
    pub hardware: hardware::HardwareResources,
}

impl DriverState {
    /// The state of a loaded driver: reached through its first device object.
    pub fn of(driver: PDRIVER_OBJECT) -> Option<&'static DriverState> {
        // SAFETY: a valid driver object; its device list is only changed by DriverEntry
        // and Unload, which do not run concurrently with this.
        let first = unsafe { (*driver).DeviceObject };
        if first.is_null() {
            return None;
        }
        // SAFETY: every device of this driver was made by `Device::create`, whose
        // extension points to the driver state.
        Some(unsafe { crate::device::DeviceExtension::of(first) }.driver())
    }

    /// Every created device, in index order.
    pub fn devices(&self) -> impl Iterator<Item = Device> + '_ {
        self.devices.iter().filter_map(Cell::get)
    }

    /// Forgets the devices (they are being deleted).
    pub fn take_devices(&self) -> impl Iterator<Item = Device> + '_ {
        self.devices.iter().filter_map(Cell::take)
    }
}

/// The driver's entry point, called once at PASSIVE_LEVEL when the service starts.
///
/// # Safety
/// Called by the I/O manager with a valid driver object and registry path.
#[cfg_attr(target_os = "windows", unsafe(export_name = "DriverEntry"))]
pub unsafe extern "C" fn driver_entry(driver: PDRIVER_OBJECT, registry_path: PCUNICODE_STRING) -> NTSTATUS {
    log!(Info, "DriverEntry: begin");
    // SAFETY: the driver object is valid and ours for the duration of DriverEntry.
    let driver_object = unsafe { &mut *driver };
    dispatch::install(driver_object);
    driver_object.DriverUnload = Some(unload::driver_unload);
    let Some(allocator) = Allocator::resolve() else {
        log!(Error, "DriverEntry: the kernel exports no pool allocator");
        return NtError::NOT_SUPPORTED.into();
    };
    log!(Info, "DriverEntry: pool allocator {}", allocator.name());
    let state = match allocate_state(registry_path, allocator) {
        Ok(state) => state,
        Err(error) => {
            log!(Error, "DriverEntry: no driver state: {error}");
            return error.into();
        }
    };
    // SAFETY: just allocated and initialised; freed only below or by Unload.
    let state_ref: &'static DriverState = unsafe { &*state.as_ptr() };
    match acquire(driver_object, state_ref) {
        Ok(()) => {
            log!(Info, "DriverEntry: done, {} device(s)", state_ref.devices().count());
            // Unload frees it, reaching it through the devices.
            let _ = state.into_raw();
            STATUS_SUCCESS
        }
        Err(error) => {
            log!(Error, "DriverEntry: failed with {error}; releasing what was acquired");
            unload::release(state_ref);
            state.free();
            error.into()
        }
    }
}

/// Stage 0: the driver state in pool, the registry path copy and the parameters.
fn allocate_state(registry_path: PCUNICODE_STRING, allocator: Allocator) -> NtResult<PoolBuf<DriverState>> {
    let config = Config::read(registry_path).map_err(NtError::from_failed)?;
    let mut copy = PathBuf::new();
    // SAFETY: DriverEntry's RegistryPath is valid during DriverEntry.
    if !copy.push_unicode(unsafe { &*registry_path }) {
        log!(Error, "DriverEntry: registry path too long");
        return Err(NtError::NAME_TOO_LONG);
    }
    let block = PoolBuf::<DriverState>::zeroed(allocator, 1, tag::STATE).ok_or(NtError::INSUFFICIENT_RESOURCES)?;
    let state = block.as_ptr();
    // SAFETY: the block is fresh, suitably aligned (pool is 16-byte aligned) memory of
    // the right size; writing initialises it.
    unsafe {
        state.write(DriverState {
            allocator,
            config,
            registry_path: copy,
            devices: Default::default(),
            data_ready: Event::uninit(),
            stop: Event::uninit(),
            thread: Cell::new(None),
            device_names_published: Cell::new(false),
            hardware: hardware::HardwareResources::new(),
        });
    }
    // SAFETY: initialised above.
    let state_ref = unsafe { &*state };
    state_ref.data_ready.init(EventKind::Synchronization, EventState::NotSignalled);
    state_ref.stop.init(EventKind::Notification, EventState::NotSignalled);
    Ok(block)
}

/// Stages 1..: hardware claims, devices, names, the thread, the interrupt, then start.
fn acquire(driver: &mut DRIVER_OBJECT, state: &'static DriverState) -> NtResult {
    hardware::claim(driver, state)?;
    for index in 0..state.config.device_count {
        let device = create_device(driver, index, state)?;
        if let Some(slot) = state.devices.get(index as usize) {
            slot.set(Some(device));
        }
    }
    registry::publish_device_names(state).map_err(NtError::from_failed)?;
    state.thread.set(Some(consumer::start(state)?));
    hardware::connect(state)?;
    for device in state.devices() {
        let extension = device.extension();
        producer::start(extension, state.config.sample_period_ms);
        extension.watchdog.start();
        device.finish_initializing();
    }
    Ok(())
}

/// One device with everything in its extension and its link. On failure nothing of
/// it remains.
fn create_device(driver: &mut DRIVER_OBJECT, index: u32, state: &DriverState) -> NtResult<Device> {
    let device = Device::create(driver, index, state)?;
    let result = (|| {
        security::apply(device.as_raw(), state.config.open_to_everyone)?;
        let extension = device.extension();
        extension.producer.init(extension);
        watchdog::init(device, extension)?;
        statistics::allocate(device, extension)?;
        let link = SymbolicLink::create(index, &extension.device_name)?;
        device.extension_mut().link = Some(link);
        Ok(())
    })();
    if let Err(error) = result {
        unload::release_device(device);
        return Err(error);
    }
    Ok(device)
}
