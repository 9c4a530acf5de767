//! The service's `Parameters` key: read once in DriverEntry, typed and bounded.
//!
//! Every value is optional. A value of the wrong type or size is ignored with a log
//! line (the default applies); a DWORD outside its range is clamped with a log line.

use crate::kernel::error::{NtError, NtResult};
use crate::kernel::irql;
use crate::kernel::name::{Name, RegistryPath};
use crate::kernel::registry::{Access, Key, Value};

/// A bounded DWORD parameter.
pub struct Bounded {
    pub name: &'static str,
    pub default: u32,
    pub min: u32,
    pub max: u32,
}

pub const DEVICE_COUNT: Bounded = Bounded { name: "DeviceCount", default: 2, min: 1, max: 8 };
pub const SAMPLE_PERIOD_MS: Bounded = Bounded { name: "SamplePeriodMs", default: 100, min: 1, max: 60_000 };
/// 0 turns the watchdog's read timeout off.
pub const READ_TIMEOUT_S: Bounded = Bounded { name: "ReadTimeoutSeconds", default: 0, min: 0, max: 3600 };
pub const MAX_PENDING_READS: Bounded = Bounded { name: "MaxPendingReadsPerHandle", default: 64, min: 1, max: 100_000 };
/// Records per device ring.
pub const RING_CAPACITY: Bounded = Bounded { name: "RingCapacity", default: 256, min: 8, max: 65_536 };
/// Producer ticks between two statistics work items.
pub const STATS_EVERY: Bounded = Bounded { name: "StatisticsEveryTicks", default: 10, min: 1, max: 100_000 };
/// 1 widens the device DACL to Everyone (read/write); default SYSTEM and Administrators.
pub const OPEN_TO_EVERYONE: Bounded = Bounded { name: "OpenToEveryone", default: 0, min: 0, max: 1 };
/// Hardware profile, bus-relative (raw) values that the HAL translates: interrupt
/// vector (0 = no hardware, the default profile) and level (the IRQ line).
pub const INTERRUPT_VECTOR: Bounded = Bounded { name: "InterruptVector", default: 0, min: 0, max: 255 };
pub const INTERRUPT_LEVEL: Bounded = Bounded { name: "InterruptLevel", default: 5, min: 0, max: 255 };
/// Bus address of the register window (low and high DWORD).
pub const REGISTER_BASE_LOW: Bounded = Bounded { name: "RegisterBaseLow", default: 0, min: 0, max: u32::MAX };
pub const REGISTER_BASE_HIGH: Bounded = Bounded { name: "RegisterBaseHigh", default: 0, min: 0, max: u32::MAX };
/// On Windows a legacy driver cannot obtain an interrupt; the profile must be opted into.
pub const HARDWARE_OPT_IN: Bounded = Bounded { name: "HardwareProfileOptIn", default: 0, min: 0, max: 1 };

/// The virtual device's register window, in bytes.
pub const REGISTER_WINDOW: usize = 16;

/// The hardware profile's raw resources, when the key describes them.
#[derive(Clone, Copy)]
pub struct HardwareProfile {
    pub vector: u32,
    pub level: u32,
    pub register_base: u64,
}

pub struct Config {
    pub device_count: u32,
    pub sample_period_ms: u32,
    pub read_timeout_s: u32,
    pub max_pending_reads: u32,
    pub ring_capacity: u32,
    pub stats_every: u32,
    pub open_to_everyone: bool,
    pub hardware: Option<HardwareProfile>,
}

impl Config {
    /// Reads `<RegistryPath>\Parameters`. A missing key gives the defaults.
    /// PASSIVE_LEVEL.
    ///
    /// # Errors
    /// STATUS_INVALID_PARAMETER for a hardware profile without a register window;
    /// STATUS_NOT_SUPPORTED for one on Windows without `HardwareProfileOptIn=1`.
    pub fn read(registry_path: &[u16]) -> NtResult<Self> {
        irql::assert_passive();
        let key = open_parameters(registry_path);
        let get = |b: &Bounded| key.as_ref().map_or(b.default, |k| dword(k, b));
        let vector = get(&INTERRUPT_VECTOR);
        let hardware = (vector != 0).then(|| HardwareProfile {
            vector,
            level: get(&INTERRUPT_LEVEL),
            register_base: u64::from(get(&REGISTER_BASE_HIGH)) << 32 | u64::from(get(&REGISTER_BASE_LOW)),
        });
        if let Some(hw) = &hardware {
            if hw.register_base == 0 {
                log!(Error, "Parameters: InterruptVector is set but RegisterBaseLow/High is not");
                return Err(NtError::INVALID_PARAMETER);
            }
            if cfg!(target_os = "windows") && get(&HARDWARE_OPT_IN) == 0 {
                log!(
                    Error,
                    "Parameters: the hardware profile needs HardwareProfileOptIn=1 (legacy drivers get no interrupt on x64 Windows)"
                );
                return Err(NtError::NOT_SUPPORTED);
            }
        }
        Ok(Config {
            device_count: get(&DEVICE_COUNT),
            sample_period_ms: get(&SAMPLE_PERIOD_MS),
            read_timeout_s: get(&READ_TIMEOUT_S),
            max_pending_reads: get(&MAX_PENDING_READS),
            ring_capacity: get(&RING_CAPACITY),
            stats_every: get(&STATS_EVERY),
            open_to_everyone: get(&OPEN_TO_EVERYONE) != 0,
            hardware,
        })
    }
}

/// The `Parameters` key, opened for reading; `None` (the defaults apply) if it is
/// missing or its path does not fit.
fn open_parameters(registry_path: &[u16]) -> Option<Key> {
    let mut path = RegistryPath::new();
    if !path.push_units(registry_path) || !path.push_str("\\Parameters") {
        log!(Warning, "Parameters: registry path too long, using defaults");
        return None;
    }
    Key::open(&path, Access::Read).inspect_err(|error| log!(Info, "Parameters: no key ({error}), using defaults")).ok()
}

/// The DWORD `b.name`, checked for type and size, clamped to its range.
fn dword(key: &Key, b: &Bounded) -> u32 {
    let value = match key.query(&Name::from_ascii(b.name)) {
        Ok(None) => return b.default,
        Ok(Some(Value::Dword(value))) => value,
        Ok(Some(Value::Other { kind, length })) => {
            log!(
                Warning,
                "Parameters: {} is not a REG_DWORD (type {kind}, {length} bytes); using {}",
                b.name,
                b.default
            );
            return b.default;
        }
        Err(error) => {
            log!(Warning, "Parameters: {} could not be read ({error}); using {}", b.name, b.default);
            return b.default;
        }
    };
    let clamped = value.clamp(b.min, b.max);
    if clamped != value {
        log!(Warning, "Parameters: {}={value} is outside {}..={}; using {clamped}", b.name, b.min, b.max);
    }
    clamped
}
