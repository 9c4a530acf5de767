//! DriverEntry: acquires resources in stage order. On failure it releases exactly
//! what it acquired, with the same stage functions Unload uses.

use core::cell::Cell;

use crate::config::Config;
use crate::device::Device;
use crate::link::SymbolicLink;
use crate::name::PathBuf;
use crate::sync::Event;
use crate::sys::{
    DRIVER_OBJECT, IoAllocateDriverObjectExtension, IoGetDriverObjectExtension, NTSTATUS, PCUNICODE_STRING,
    PDRIVER_OBJECT, PVOID, STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS, nt_success,
};
use crate::thread::ConsumerThread;
use crate::{dispatch, hardware, registry, security, unload};

/// Most devices one driver instance creates (`Parameters\DeviceCount` is bounded by it).
pub const MAX_DEVICES: usize = 8;

/// Driver-wide state, in the driver object extension (the I/O manager frees it with
/// the driver object; everything it points to is released by Unload's stages).
pub struct DriverState {
    pub config: Config,
    /// Copy of the service key path: DriverEntry's RegistryPath is freed after it returns.
    pub registry_path: PathBuf,
    devices: [Cell<Option<Device>>; MAX_DEVICES],
    /// Producers signal it when reads are waiting (synchronization event).
    pub data_ready: Event,
    /// Unload signals it to end the consumer thread (notification event).
    pub stop: Event,
    pub thread: Cell<Option<ConsumerThread>>,
    pub device_names_published: Cell<bool>,
    pub hardware: hardware::Hardware,
}

/// The address that identifies this driver's object extension.
static STATE_ID: u8 = 0;

impl DriverState {
    /// The state DriverEntry stored in the driver object extension.
    pub fn of(driver: PDRIVER_OBJECT) -> Option<&'static DriverState> {
        // SAFETY: a valid driver object; the id is our static's address.
        let raw = unsafe { IoGetDriverObjectExtension(driver, core::ptr::from_ref(&STATE_ID).cast_mut().cast()) };
        // SAFETY: DriverEntry initialised the extension before any other routine runs.
        (!raw.is_null()).then(|| unsafe { &*raw.cast::<DriverState>() })
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
    let state = match allocate_state(driver_object, registry_path) {
        Ok(state) => state,
        Err(status) => {
            log!(Error, "DriverEntry: no driver state: {status:#x}");
            return status;
        }
    };
    match acquire(driver_object, state) {
        Ok(()) => {
            log!(Info, "DriverEntry: done, {} device(s)", state.devices().count());
            STATUS_SUCCESS
        }
        Err(status) => {
            log!(Error, "DriverEntry: failed with {status:#x}; releasing what was acquired");
            unload::release(state);
            status
        }
    }
}

/// Stage 0: the driver object extension, the registry path copy and the parameters.
fn allocate_state(driver: &mut DRIVER_OBJECT, registry_path: PCUNICODE_STRING) -> Result<&'static DriverState, NTSTATUS> {
    let config = Config::read(registry_path)?;
    let mut copy = PathBuf::new();
    // SAFETY: DriverEntry's RegistryPath is valid during DriverEntry.
    if !copy.push_unicode(unsafe { &*registry_path }) {
        log!(Error, "DriverEntry: registry path too long");
        return Err(crate::sys::STATUS_NAME_TOO_LONG);
    }
    let mut raw: PVOID = core::ptr::null_mut();
    // SAFETY: our driver object; the id is our static's address.
    let status = unsafe {
        IoAllocateDriverObjectExtension(
            driver,
            core::ptr::from_ref(&STATE_ID).cast_mut().cast(),
            size_of::<DriverState>() as u32,
            &raw mut raw,
        )
    };
    if !nt_success(status) || raw.is_null() {
        return Err(if nt_success(status) { STATUS_INSUFFICIENT_RESOURCES } else { status });
    }
    let state = raw.cast::<DriverState>();
    // SAFETY: the extension is fresh, suitably aligned memory of the right size.
    unsafe {
        state.write(DriverState {
            config,
            registry_path: copy,
            devices: Default::default(),
            data_ready: Event::uninit(),
            stop: Event::uninit(),
            thread: Cell::new(None),
            device_names_published: Cell::new(false),
            hardware: hardware::Hardware::new(),
        });
    }
    // SAFETY: initialised above; it lives as long as the driver object.
    let state = unsafe { &*state };
    state.data_ready.init(true, false);
    state.stop.init(false, false);
    Ok(state)
}

/// Stages 1..: hardware claims, devices, names, the thread, the interrupt, then start.
fn acquire(driver: &mut DRIVER_OBJECT, state: &'static DriverState) -> Result<(), NTSTATUS> {
    hardware::claim(driver, state)?;
    for index in 0..state.config.device_count {
        let device = create_device(driver, index, state)?;
        if let Some(slot) = state.devices.get(index as usize) {
            slot.set(Some(device));
        }
    }
    registry::publish_device_names(state)?;
    state.device_names_published.set(true);
    state.thread.set(Some(ConsumerThread::start(state)?));
    hardware::connect(state)?;
    for device in state.devices() {
        let extension = device.extension();
        extension.producer.start(state.config.sample_period_ms);
        extension.watchdog.start(device.as_raw());
        device.finish_initializing();
    }
    Ok(())
}

/// One device with everything in its extension and its link. On failure nothing of
/// it remains.
fn create_device(driver: &mut DRIVER_OBJECT, index: u32, state: &DriverState) -> Result<Device, NTSTATUS> {
    let device = Device::create(driver, index, state)?;
    let result = (|| {
        security::apply(device.as_raw(), state.config.open_to_everyone)?;
        let extension = device.extension();
        extension.producer.init(device.as_raw());
        extension.watchdog.init(device.as_raw());
        if !extension.statistics.allocate(device.as_raw()) {
            return Err(STATUS_INSUFFICIENT_RESOURCES);
        }
        let link = SymbolicLink::create(index, &extension.device_name)?;
        device.extension_mut().link = Some(link);
        Ok(())
    })();
    if let Err(status) = result {
        unload::release_device(device);
        return Err(status);
    }
    Ok(device)
}
