//! The part of the driver-wide state every device sees (through its extension's
//! counted reference): the allocator, the parameters, the service key path, the
//! consumer's events. The rest of the driver-wide state (devices, hardware, the
//! thread) is in `state.rs`, above the modules that use this one.

use core::cell::Cell;

use crate::config::Config;
use crate::kernel::name::RegistryPath;
use crate::kernel::pool::Allocator;
use crate::kernel::sync::{Event, EventKind, EventState};

/// What devices and the routines that run on them read of the driver-wide state.
pub struct DriverContext {
    /// The pool allocator DriverEntry resolved.
    pub allocator: Allocator,
    pub config: Config,
    /// Copy of the service key path: DriverEntry's RegistryPath is freed after it returns.
    pub registry_path: RegistryPath,
    /// Producers signal it when reads are waiting (synchronization event).
    pub data_ready: Event,
    /// Unload signals it to end the consumer thread (notification event).
    pub stop: Event,
    /// The DEVICEMAP key exists (set as soon as it is created).
    pub device_names_published: Cell<bool>,
}

impl DriverContext {
    /// The context with its events not yet initialised: [`init_events`](Self::init_events)
    /// does that once it is at its final address.
    pub fn new(allocator: Allocator, config: Config, registry_path: RegistryPath) -> Self {
        Self {
            allocator,
            config,
            registry_path,
            data_ready: Event::uninit(),
            stop: Event::uninit(),
            device_names_published: Cell::new(false),
        }
    }

    /// KeInitializeEvent for both events, in place.
    pub fn init_events(&self) {
        self.data_ready.init(EventKind::Synchronization, EventState::NotSignalled);
        self.stop.init(EventKind::Notification, EventState::NotSignalled);
    }
}
