//! The service's `Parameters` key: read once in DriverEntry, typed and bounded.
//!
//! Every value is optional. A value of the wrong type or size is ignored with a log
//! line (the default applies); a DWORD outside its range is clamped with a log line.

use crate::kernel::sys::{
    _KEY_VALUE_INFORMATION_CLASS::KeyValuePartialInformation, HANDLE, KEY_READ, KEY_VALUE_PARTIAL_INFORMATION,
    NTSTATUS, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, OBJECT_ATTRIBUTES, PCUNICODE_STRING, REG_DWORD,
    STATUS_BUFFER_OVERFLOW, STATUS_OBJECT_NAME_NOT_FOUND, UNICODE_STRING, ZwClose, ZwOpenKey, ZwQueryValueKey,
    nt_success,
};
use crate::name::Name;

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
    pub fn read(registry_path: PCUNICODE_STRING) -> Result<Self, NTSTATUS> {
        let key = ParametersKey::open(registry_path);
        let get = |b: &Bounded| key.as_ref().map_or(b.default, |k| k.dword(b));
        let vector = get(&INTERRUPT_VECTOR);
        let hardware = (vector != 0).then(|| HardwareProfile {
            vector,
            level: get(&INTERRUPT_LEVEL),
            register_base: u64::from(get(&REGISTER_BASE_HIGH)) << 32 | u64::from(get(&REGISTER_BASE_LOW)),
        });
        if let Some(hw) = &hardware {
            if hw.register_base == 0 {
                log!(Error, "Parameters: InterruptVector is set but RegisterBaseLow/High is not");
                return Err(crate::kernel::sys::STATUS_INVALID_PARAMETER);
            }
            if cfg!(target_os = "windows") && get(&HARDWARE_OPT_IN) == 0 {
                log!(
                    Error,
                    "Parameters: the hardware profile needs HardwareProfileOptIn=1 (legacy drivers get no interrupt on x64 Windows)"
                );
                return Err(crate::kernel::sys::STATUS_NOT_SUPPORTED);
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

/// What ZwQueryValueKey fills in for one value: KEY_VALUE_PARTIAL_INFORMATION (a DWORD
/// fits its Data) and room to spare, so that a value a little larger is reported as such.
#[repr(C)]
struct ValueBuffer {
    info: KEY_VALUE_PARTIAL_INFORMATION,
    spare: [u8; 16],
}

/// An open `Parameters` key; closed on drop (it never outlives DriverEntry).
struct ParametersKey(HANDLE);

impl ParametersKey {
    fn open(registry_path: PCUNICODE_STRING) -> Option<Self> {
        let mut path = crate::name::PathBuf::new();
        // SAFETY: the I/O manager passes a valid registry path to DriverEntry.
        if !path.push_unicode(unsafe { &*registry_path }) || !path.push_str("\\Parameters") {
            log!(Warning, "Parameters: registry path too long, using defaults");
            return None;
        }
        let mut name = path.as_unicode_string();
        let mut attributes = object_attributes(&raw mut name);
        let mut handle: HANDLE = core::ptr::null_mut();
        // SAFETY: the attributes and the name they point to live across the call.
        let status = unsafe { ZwOpenKey(&raw mut handle, KEY_READ, &raw mut attributes) };
        if nt_success(status) {
            Some(Self(handle))
        } else {
            log!(Info, "Parameters: no key ({status:#x}), using defaults");
            None
        }
    }

    /// The DWORD `b.name`, checked for type and size, clamped to its range.
    fn dword(&self, b: &Bounded) -> u32 {
        let value_name = Name::from_ascii(b.name);
        let mut unicode = value_name.as_unicode_string();
        // SAFETY: plain data; all-zero is a valid value.
        let mut buffer: ValueBuffer = unsafe { core::mem::zeroed() };
        let mut result_length = 0u32;
        // SAFETY: the buffer is writable for its size and the name lives across the call.
        let status = unsafe {
            ZwQueryValueKey(
                self.0,
                &raw mut unicode,
                KeyValuePartialInformation,
                (&raw mut buffer).cast(),
                size_of::<ValueBuffer>() as u32,
                &raw mut result_length,
            )
        };
        if status == STATUS_OBJECT_NAME_NOT_FOUND {
            return b.default;
        }
        // STATUS_BUFFER_OVERFLOW: the value is larger than the buffer, whose fixed part
        // (Type, DataLength) is filled in; the check below reports it.
        if !nt_success(status) && status != STATUS_BUFFER_OVERFLOW {
            log!(Warning, "Parameters: {} could not be read ({status:#x}); using {}", b.name, b.default);
            return b.default;
        }
        let (kind, length) = (buffer.info.Type, buffer.info.DataLength);
        if status == STATUS_BUFFER_OVERFLOW || kind != REG_DWORD || length != 4 {
            log!(
                Warning,
                "Parameters: {} is not a REG_DWORD (type {kind}, {length} bytes); using {}",
                b.name,
                b.default
            );
            return b.default;
        }
        let data = core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Data);
        // SAFETY: DataLength is 4, so the 4 bytes at Data (inside the buffer) hold the
        // DWORD; Data is only byte-aligned in the type.
        let value = unsafe { core::ptr::read_unaligned((&raw const buffer).cast::<u8>().add(data).cast::<u32>()) };
        let clamped = value.clamp(b.min, b.max);
        if clamped != value {
            log!(Warning, "Parameters: {}={value} is outside {}..={}; using {clamped}", b.name, b.min, b.max);
        }
        clamped
    }
}

impl Drop for ParametersKey {
    fn drop(&mut self) {
        // SAFETY: the handle was opened by ZwOpenKey and is closed once.
        let _ = unsafe { ZwClose(self.0) };
    }
}

/// `InitializeObjectAttributes(&a, name, OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE, NULL, NULL)`.
pub fn object_attributes(name: *mut UNICODE_STRING) -> OBJECT_ATTRIBUTES {
    OBJECT_ATTRIBUTES {
        Length: size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: core::ptr::null_mut(),
        ObjectName: name,
        Attributes: OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE,
        SecurityDescriptor: core::ptr::null_mut(),
        SecurityQualityOfService: core::ptr::null_mut(),
    }
}
