//! What the hardware profile's ISR and CustomDpc do: the ISR acknowledges the virtual
//! device and latches its sample; the DPC takes the latched samples under the
//! interrupt lock and appends them to the devices' rings.
//!
//! The virtual device's registers (32-bit): STATUS (bit 0: a sample is ready), DATA,
//! CONTROL (bit 1: interrupts enabled), CHANNEL (the device the sample is for).

use crate::context::DriverContext;
use crate::device::DriverDevices;
use crate::kernel::interrupt::{AtDirql, Connected, InterruptService, Serviced};
use crate::kernel::irql;
use crate::kernel::resources::RegisterWindow;
use crate::kernel::sync::AtDispatch;

const STATUS: usize = 0;
const DATA: usize = 1;
const CONTROL: usize = 2;
const CHANNEL: usize = 3;
const DATA_READY: u32 = 1;
const INTERRUPTS_ENABLED: u32 = 2;

/// Samples latched by the ISR for the DPC.
const LATCH: usize = 8;

/// The controller extension's context: what the ISR and its DPC share.
pub struct ControllerExtension {
    /// The devices the DPC delivers to, and the context whose event wakes the
    /// consumer; the driver-wide state they are in outlives the controller.
    context: &'static DriverContext,
    devices: &'static DriverDevices,
    /// Mapped after the claim, before the interrupt is connected; unmapped in stage 3.
    pub registers: Option<RegisterWindow>,
}

/// (channel, value) pairs the ISR read, waiting for the DPC.
#[derive(Clone, Copy, Default)]
pub struct Latch {
    samples: [(u32, u32); LATCH],
    count: usize,
    lost: u64,
}

impl Latch {
    fn push(&mut self, sample: (u32, u32)) {
        match self.samples.get_mut(self.count) {
            Some(slot) => {
                *slot = sample;
                self.count = self.count.saturating_add(1);
            }
            None => self.lost = self.lost.wrapping_add(1),
        }
    }

    /// The latched samples, leaving the latch empty.
    fn take(&mut self) -> Self {
        let taken = *self;
        self.count = 0;
        taken
    }

    fn samples(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.samples.iter().copied().take(self.count)
    }
}

impl ControllerExtension {
    pub fn new(context: &'static DriverContext, devices: &'static DriverDevices) -> Self {
        Self { context, devices, registers: None }
    }

    fn read(&self, register: usize) -> u32 {
        self.registers.as_ref().and_then(|registers| registers.read(register)).unwrap_or(0)
    }

    fn write(&self, register: usize, value: u32) {
        if let Some(registers) = self.registers.as_ref() {
            let written = registers.write(register, value);
            debug_assert!(written, "register {register} is in the window");
        }
    }

    /// After IoConnectInterrupt: the device may interrupt.
    pub fn enable_interrupts(&self) {
        self.write(CONTROL, INTERRUPTS_ENABLED);
    }

    /// Stage 1, under the interrupt lock: the device interrupts no more.
    pub fn disable_interrupts(&self) {
        irql::assert_device_irql();
        self.write(CONTROL, 0);
    }
}

impl InterruptService for ControllerExtension {
    type Locked = Latch;

    /// The ISR, at the device IRQL under the interrupt spin lock: acknowledge the
    /// device, latch the sample, queue the CustomDpc.
    fn service(&self, latch: &mut Latch, _: &AtDirql) -> Serviced {
        irql::assert_device_irql();
        if self.read(STATUS) & DATA_READY == 0 {
            return Serviced::NotOurs;
        }
        let sample = (self.read(CHANNEL), self.read(DATA));
        self.write(STATUS, 0);
        latch.push(sample);
        Serviced::QueueDpc
    }

    /// The CustomDpc: moves the ISR's samples into the devices' rings. DISPATCH_LEVEL.
    fn deferred(&self, interrupt: &Connected<'_, Self>, at_dispatch: &AtDispatch) {
        irql::assert_dispatch();
        let mut latched = Latch::default();
        interrupt.synchronize(|_, latch, _| {
            irql::assert_device_irql();
            latched = latch.take();
        });
        deliver(self.context, self.devices, &latched, at_dispatch);
    }
}

/// Appends each sample to its channel's device ring; wakes the consumer if reads wait.
/// DISPATCH_LEVEL.
fn deliver(context: &DriverContext, devices: &DriverDevices, latched: &Latch, at_dispatch: &AtDispatch) {
    let now = crate::kernel::time::performance_counter().ticks;
    let devices = devices.borrow();
    let device_count = devices.iter().count();
    let mut wake = false;
    for (channel, value) in latched.samples() {
        let Some(device) = (channel as usize).checked_rem(device_count).and_then(|k| devices.iter().nth(k)) else {
            continue;
        };
        let mut state = device.extension().state.lock_at_dpc_level(at_dispatch);
        if state.stopping {
            continue;
        }
        if let Some(ring) = state.ring.as_mut() {
            ring.push(now, u64::from(value));
        }
        wake |= state.stats.reads_pending() > 0;
    }
    if wake {
        context.data_ready.set();
    }
}
