//! The registry parts drivers use: keys (persistent or volatile), typed values, and
//! handles to keys (in the object manager's handle tables).

use std::collections::BTreeMap;

use crate::io::device::read_unicode;
use crate::machine::{Ctx, Machine, kcall};
use crate::ob::Target;
use crate::wdk_sys::{
    ACCESS_MASK, HANDLE, KEY_VALUE_INFORMATION_CLASS, NTSTATUS, OBJ_KERNEL_HANDLE, PHANDLE, POBJECT_ATTRIBUTES, PULONG,
    PUNICODE_STRING, PVOID, REG_BINARY, REG_CREATED_NEW_KEY, REG_DWORD, REG_OPENED_EXISTING_KEY, REG_OPTION_VOLATILE,
    REG_SZ, STATUS_BUFFER_OVERFLOW, STATUS_BUFFER_TOO_SMALL, STATUS_CHILD_MUST_BE_VOLATILE,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER, STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_SUCCESS, ULONG,
};

/// A registry value as tests write and read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// REG_DWORD.
    Dword(u32),
    /// REG_SZ (stored UTF-16, NUL-terminated).
    String(String),
    /// REG_BINARY.
    Binary(Vec<u8>),
    /// Any other type, raw.
    Raw(u32, Vec<u8>),
}

impl Value {
    fn encode(&self) -> (u32, Vec<u8>) {
        match self {
            Value::Dword(v) => (REG_DWORD, v.to_le_bytes().to_vec()),
            Value::String(s) => (REG_SZ, s.encode_utf16().chain([0]).flat_map(u16::to_le_bytes).collect()),
            Value::Binary(b) => (REG_BINARY, b.clone()),
            Value::Raw(t, b) => (*t, b.clone()),
        }
    }
    fn decode(kind: u32, data: &[u8]) -> Value {
        match kind {
            REG_DWORD if data.len() == 4 => Value::Dword(u32::from_le_bytes(data.try_into().expect("4 bytes"))),
            REG_SZ => {
                let units: Vec<u16> =
                    data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
                Value::String(String::from_utf16_lossy(&units))
            }
            REG_BINARY => Value::Binary(data.to_vec()),
            other => Value::Raw(other, data.to_vec()),
        }
    }
}

struct Key {
    volatile: bool,
    values: BTreeMap<String, (u32, Vec<u8>)>,
}

/// The keys; handles to them live in the object manager's handle tables.
#[derive(Default)]
pub(crate) struct Registry {
    /// Upper-cased full path → key.
    keys: BTreeMap<String, Key>,
}

impl Registry {
    /// The keys every Windows machine has that drivers write under.
    pub(crate) fn with_standard_keys() -> Self {
        let mut registry = Registry::default();
        for key in [
            "\\Registry",
            "\\Registry\\Machine",
            "\\Registry\\Machine\\HARDWARE",
            "\\Registry\\Machine\\HARDWARE\\DEVICEMAP",
            "\\Registry\\Machine\\HARDWARE\\RESOURCEMAP",
            "\\Registry\\Machine\\System",
            "\\Registry\\Machine\\System\\CurrentControlSet",
            "\\Registry\\Machine\\System\\CurrentControlSet\\Services",
        ] {
            // HARDWARE is a volatile hive, rebuilt at every boot.
            let volatile = key.to_uppercase().starts_with("\\REGISTRY\\MACHINE\\HARDWARE");
            registry.create_key(key, volatile);
        }
        registry
    }

    pub(crate) fn create_key(&mut self, path: &str, volatile: bool) -> bool {
        let key = path.to_uppercase();
        if self.keys.contains_key(&key) {
            return false;
        }
        self.keys.insert(key, Key { volatile, values: BTreeMap::new() });
        true
    }
}

/// A handle to the key at `path`: a kernel handle with OBJ_KERNEL_HANDLE, otherwise
/// one in the calling process's table.
fn open(ctx: &mut Ctx<'_>, attributes: POBJECT_ATTRIBUTES, path: String) -> u64 {
    // SAFETY: `path_of` already read these valid OBJECT_ATTRIBUTES.
    let kernel = unsafe { (*attributes).Attributes } & OBJ_KERNEL_HANDLE != 0;
    let owner = crate::ob::current_owner(ctx);
    ctx.ob.open_handle(owner, kernel, Target::Key(path))
}

/// The path of the key a handle names for a kernel-mode caller.
fn key_of(ctx: &Ctx<'_>, handle: HANDLE) -> Option<String> {
    match ctx.ob.find(crate::ob::current_owner(ctx), handle as u64, true)? {
        Target::Key(path) => Some(path.clone()),
        Target::Object(_) => None,
    }
}

/// The full, upper-cased path an OBJECT_ATTRIBUTES names.
fn path_of(ctx: &Ctx<'_>, attributes: POBJECT_ATTRIBUTES) -> Option<String> {
    if attributes.is_null() {
        return None;
    }
    // SAFETY: the driver passed a valid OBJECT_ATTRIBUTES.
    let (root, name) = unsafe { ((*attributes).RootDirectory, read_unicode((*attributes).ObjectName)?) };
    let full = if root.is_null() {
        name
    } else {
        let parent = key_of(ctx, root)?;
        format!("{parent}\\{name}")
    };
    Some(full.to_uppercase())
}

/// ZwOpenKey: opens an existing key (STATUS_OBJECT_NAME_NOT_FOUND otherwise).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ZwOpenKey(
    KeyHandle: PHANDLE,
    _DesiredAccess: ACCESS_MASK,
    ObjectAttributes: POBJECT_ATTRIBUTES,
) -> NTSTATUS {
    kcall("ZwOpenKey", |ctx| {
        if ctx.should_fail() {
            return Ok(STATUS_INSUFFICIENT_RESOURCES);
        }
        let Some(path) = path_of(ctx, ObjectAttributes) else { return Ok(STATUS_INVALID_PARAMETER) };
        if !ctx.registry.keys.contains_key(&path) {
            return Ok(STATUS_OBJECT_NAME_NOT_FOUND);
        }
        let handle = open(ctx, ObjectAttributes, path);
        // SAFETY: the driver passed a writable HANDLE.
        unsafe { *KeyHandle = handle as HANDLE };
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::ZwOpenKey = ZwOpenKey;

/// ZwCreateKey: opens a key, creating it (volatile with REG_OPTION_VOLATILE) if it is absent.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ZwCreateKey(
    KeyHandle: PHANDLE,
    _DesiredAccess: ACCESS_MASK,
    ObjectAttributes: POBJECT_ATTRIBUTES,
    _TitleIndex: ULONG,
    _Class: PUNICODE_STRING,
    CreateOptions: ULONG,
    Disposition: PULONG,
) -> NTSTATUS {
    kcall("ZwCreateKey", |ctx| {
        if ctx.should_fail() {
            return Ok(STATUS_INSUFFICIENT_RESOURCES);
        }
        let Some(path) = path_of(ctx, ObjectAttributes) else { return Ok(STATUS_INVALID_PARAMETER) };
        let parent = path.rsplit_once('\\').map(|(p, _)| p.to_owned()).unwrap_or_default();
        if !ctx.registry.keys.contains_key(&parent) {
            return Ok(STATUS_OBJECT_NAME_NOT_FOUND);
        }
        let volatile = CreateOptions & REG_OPTION_VOLATILE != 0;
        if !volatile && !ctx.registry.keys.contains_key(&path) && ctx.registry.keys[&parent].volatile {
            // A volatile key can have only volatile subkeys (ZwCreateKey's documentation).
            return Ok(STATUS_CHILD_MUST_BE_VOLATILE);
        }
        let created = ctx.registry.create_key(&path, volatile);
        let handle = open(ctx, ObjectAttributes, path);
        // SAFETY: the driver passed writable out-parameters (Disposition is optional).
        unsafe {
            *KeyHandle = handle as HANDLE;
            if !Disposition.is_null() {
                *Disposition = if created { REG_CREATED_NEW_KEY } else { REG_OPENED_EXISTING_KEY };
            }
        }
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::ZwCreateKey = ZwCreateKey;

/// ZwQueryValueKey: one value, as KEY_VALUE_PARTIAL_INFORMATION (the only class ntsim implements).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ZwQueryValueKey(
    KeyHandle: HANDLE,
    ValueName: PUNICODE_STRING,
    KeyValueInformationClass: KEY_VALUE_INFORMATION_CLASS,
    KeyValueInformation: PVOID,
    Length: ULONG,
    ResultLength: PULONG,
) -> NTSTATUS {
    kcall("ZwQueryValueKey", |ctx| {
        let Some(path) = key_of(ctx, KeyHandle) else {
            return Ok(STATUS_INVALID_HANDLE);
        };
        // KeyValuePartialInformation is 2; ntsim implements only that class.
        if KeyValueInformationClass != 2 {
            return Ok(STATUS_INVALID_PARAMETER);
        }
        // SAFETY: the driver passed a valid name.
        let Some(name) = (unsafe { read_unicode(ValueName) }) else { return Ok(STATUS_INVALID_PARAMETER) };
        let Some((kind, data)) = ctx.registry.keys.get(&path).and_then(|k| k.values.get(&name.to_uppercase())).cloned()
        else {
            return Ok(STATUS_OBJECT_NAME_NOT_FOUND);
        };
        const HEADER: usize = 12;
        let needed = HEADER + data.len();
        // SAFETY: ResultLength is a writable ULONG.
        unsafe { *ResultLength = u32::try_from(needed).unwrap_or(u32::MAX) };
        let length = Length as usize;
        if length < HEADER {
            return Ok(STATUS_BUFFER_TOO_SMALL);
        }
        let out = KeyValueInformation.cast::<u8>();
        // SAFETY: the driver passed `Length` writable bytes; we write at most that.
        unsafe {
            std::ptr::write_bytes(out, 0, 4);
            std::ptr::copy_nonoverlapping(kind.to_le_bytes().as_ptr(), out.add(4), 4);
            std::ptr::copy_nonoverlapping(u32::try_from(data.len()).unwrap_or(0).to_le_bytes().as_ptr(), out.add(8), 4);
            let fits = data.len().min(length - HEADER);
            std::ptr::copy_nonoverlapping(data.as_ptr(), out.add(HEADER), fits);
        }
        Ok(if length < needed { STATUS_BUFFER_OVERFLOW } else { STATUS_SUCCESS })
    })
}
const _: crate::wdk_sys::fnsig::ZwQueryValueKey = ZwQueryValueKey;

/// ZwSetValueKey: writes one value.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ZwSetValueKey(
    KeyHandle: HANDLE,
    ValueName: PUNICODE_STRING,
    _TitleIndex: ULONG,
    Type: ULONG,
    Data: PVOID,
    DataSize: ULONG,
) -> NTSTATUS {
    kcall("ZwSetValueKey", |ctx| {
        if ctx.should_fail() {
            return Ok(STATUS_INSUFFICIENT_RESOURCES);
        }
        let Some(path) = key_of(ctx, KeyHandle) else {
            return Ok(STATUS_INVALID_HANDLE);
        };
        // SAFETY: the driver passed a valid name and DataSize readable bytes.
        let (Some(name), data) = (unsafe { read_unicode(ValueName) }, unsafe {
            std::slice::from_raw_parts(Data.cast::<u8>(), DataSize as usize).to_vec()
        }) else {
            return Ok(STATUS_INVALID_PARAMETER);
        };
        let Some(key) = ctx.registry.keys.get_mut(&path) else { return Ok(STATUS_OBJECT_NAME_NOT_FOUND) };
        key.values.insert(name.to_uppercase(), (Type, data));
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::ZwSetValueKey = ZwSetValueKey;

/// ZwDeleteKey: deletes a key that has no subkeys.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ZwDeleteKey(KeyHandle: HANDLE) -> NTSTATUS {
    kcall("ZwDeleteKey", |ctx| {
        let Some(path) = key_of(ctx, KeyHandle) else {
            return Ok(STATUS_INVALID_HANDLE);
        };
        let prefix = format!("{path}\\");
        if ctx.registry.keys.keys().any(|k| k.starts_with(&prefix)) {
            return Ok(crate::wdk_sys::STATUS_CANNOT_DELETE);
        }
        ctx.registry.keys.remove(&path);
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::ZwDeleteKey = ZwDeleteKey;

/// Test access to the machine's registry.
pub struct RegistryHandle<'m> {
    machine: &'m Machine,
}

impl Machine {
    /// The machine's registry, for a test to set up parameters and check what the driver left.
    pub fn registry(&self) -> RegistryHandle<'_> {
        RegistryHandle { machine: self }
    }
}

impl RegistryHandle<'_> {
    /// Creates `path` (and is a no-op if it exists).
    pub fn create_key(&self, path: &str) {
        self.machine.lock().registry.create_key(path, false);
    }
    /// Writes value `name` under `path`, creating the key if needed.
    pub fn set(&self, path: &str, name: &str, value: &Value) {
        let mut state = self.machine.lock();
        state.registry.create_key(path, false);
        let key = state.registry.keys.get_mut(&path.to_uppercase()).expect("created");
        key.values.insert(name.to_uppercase(), value.encode());
    }
    /// Reads value `name` under `path`.
    pub fn get(&self, path: &str, name: &str) -> Option<Value> {
        let state = self.machine.lock();
        let (kind, data) = state.registry.keys.get(&path.to_uppercase())?.values.get(&name.to_uppercase())?;
        Some(Value::decode(*kind, data))
    }
    /// Whether key `path` exists.
    pub fn key_exists(&self, path: &str) -> bool {
        self.machine.lock().registry.keys.contains_key(&path.to_uppercase())
    }
    /// Whether key `path` is volatile; `None` if it does not exist.
    pub fn is_volatile(&self, path: &str) -> Option<bool> {
        self.machine.lock().registry.keys.get(&path.to_uppercase()).map(|k| k.volatile)
    }
    /// Names of the values under `path`, upper-cased.
    pub fn value_names(&self, path: &str) -> Vec<String> {
        self.machine
            .lock()
            .registry
            .keys
            .get(&path.to_uppercase())
            .map(|k| k.values.keys().cloned().collect())
            .unwrap_or_default()
    }
}
