//! The object manager: reference counts, per-process handle tables and the System
//! table (kernel handles), object types, and the namespace of device objects and
//! symbolic links.

use std::collections::{BTreeMap, HashMap};

use crate::checker::{Violation, c4, code};
use crate::machine::{Ctx, KResult, kcall};
use crate::wdk_sys::{
    ACCESS_MASK, HANDLE, KPROCESSOR_MODE, LONG_PTR, NTSTATUS, OBJ_KERNEL_HANDLE, PACCESS_STATE, PHANDLE,
    POBJECT_HANDLE_INFORMATION, POBJECT_TYPE, PVOID, STATUS_INVALID_HANDLE, STATUS_OBJECT_TYPE_MISMATCH,
    STATUS_SUCCESS, ULONG,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Device,
    File,
    Thread,
}

pub(crate) struct Object {
    pub(crate) kind: Kind,
    pub(crate) refs: i64,
}

/// A name in the object namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Named {
    Device(usize),
    /// A symbolic link and the name it points to.
    Link(String),
}

/// Whose handle table a handle is in: the System process's (kernel handles, and
/// handles made in system threads) or a client process's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Owner {
    System,
    Process(usize),
}

/// What a handle refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Object(usize),
    /// A registry key, by its upper-cased path (keys are not objects in ntsim).
    Key(String),
}

#[derive(Default)]
pub(crate) struct HandleTable {
    pub(crate) entries: BTreeMap<u64, Target>,
    /// The access granted to a client's file handle (handle values are not reused).
    granted: BTreeMap<u64, ACCESS_MASK>,
    next: u64,
}

/// On x64 a kernel handle is a System-table handle with the top bits set
/// (`KERNEL_HANDLE_MASK`); OBJ_KERNEL_HANDLE asks for one.
pub(crate) const KERNEL_HANDLE_BITS: u64 = 0xFFFF_FFFF_8000_0000;

pub(crate) fn is_kernel_handle(handle: u64) -> bool {
    handle & KERNEL_HANDLE_BITS == KERNEL_HANDLE_BITS
}

#[derive(Default)]
pub(crate) struct Objects {
    pub(crate) objects: HashMap<usize, Object>,
    /// One handle table per process, and the System process's.
    pub(crate) tables: BTreeMap<Owner, HandleTable>,
    /// Upper-cased full name → entry.
    pub(crate) names: HashMap<String, Named>,
}

impl Objects {
    pub(crate) fn insert(&mut self, address: usize, kind: Kind, refs: i64) {
        self.objects.insert(address, Object { kind, refs });
    }

    pub(crate) fn refs(&self, address: usize) -> i64 {
        self.objects.get(&address).map_or(0, |o| o.refs)
    }

    /// A new handle to `target` in `owner`'s table, or a kernel handle in the System
    /// table; a handle to an object holds a reference on it.
    pub(crate) fn open_handle(&mut self, owner: Owner, kernel: bool, target: Target) -> u64 {
        let owner = if kernel { Owner::System } else { owner };
        if let Target::Object(address) = &target
            && let Some(object) = self.objects.get_mut(address)
        {
            object.refs += 1;
        }
        let table = self.tables.entry(owner).or_default();
        table.next += 4;
        let handle = if kernel { KERNEL_HANDLE_BITS | table.next } else { table.next };
        table.entries.insert(handle, target);
        handle
    }

    /// A client's handle to a file object with the access its open granted.
    pub(crate) fn open_file_handle(&mut self, owner: Owner, file: usize, granted: ACCESS_MASK) -> u64 {
        let handle = self.open_handle(owner, false, Target::Object(file));
        self.tables.entry(owner).or_default().granted.insert(handle, granted);
        handle
    }

    /// The access granted to a client's file handle (`None` for other handles).
    pub(crate) fn granted(&self, owner: Owner, handle: u64) -> Option<ACCESS_MASK> {
        self.tables.get(&owner)?.granted.get(&handle).copied()
    }

    /// The table `handle` is looked up in by a caller in `owner`'s context: kernel
    /// handles are in the System table and valid only for kernel-mode callers.
    fn table_of(owner: Owner, handle: u64, kernel_mode: bool) -> Option<Owner> {
        if is_kernel_handle(handle) { kernel_mode.then_some(Owner::System) } else { Some(owner) }
    }

    pub(crate) fn find(&self, owner: Owner, handle: u64, kernel_mode: bool) -> Option<&Target> {
        self.tables.get(&Self::table_of(owner, handle, kernel_mode)?)?.entries.get(&handle)
    }

    /// Removes the handle; its object reference is the caller's to drop.
    pub(crate) fn take(&mut self, owner: Owner, handle: u64, kernel_mode: bool) -> Option<Target> {
        let table = self.tables.get_mut(&Self::table_of(owner, handle, kernel_mode)?)?;
        table.granted.remove(&handle);
        table.entries.remove(&handle)
    }

    pub(crate) fn handles_of(&self, owner: Owner) -> Vec<(u64, Target)> {
        self.tables.get(&owner).map(|t| t.entries.iter().map(|(h, t)| (*h, t.clone())).collect()).unwrap_or_default()
    }

    /// Registry key handles open in any table.
    pub(crate) fn key_handles(&self) -> usize {
        self.tables.values().flat_map(|t| t.entries.values()).filter(|t| matches!(t, Target::Key(_))).count()
    }
}

/// The process whose context the calling thread runs in: a client thread's process,
/// otherwise (DriverEntry, DriverUnload, system and worker threads, DPCs) the System
/// process.
pub(crate) fn current_owner(ctx: &Ctx<'_>) -> Owner {
    let tid = ctx.tid;
    ctx.io.processes.iter().position(|p| p.threads.contains(&tid)).map_or(Owner::System, Owner::Process)
}

/// The object a handle names for a kernel-mode caller (ZwXxx, AccessMode KernelMode).
pub(crate) fn kernel_handle_object(ctx: &Ctx<'_>, handle: u64) -> Option<usize> {
    match ctx.ob.find(current_owner(ctx), handle, true)? {
        Target::Object(address) => Some(*address),
        Target::Key(_) => None,
    }
}

/// Adds one reference.
pub(crate) fn reference(ctx: &mut Ctx<'_>, address: usize) {
    if let Some(object) = ctx.ob.objects.get_mut(&address) {
        object.refs += 1;
    }
}

/// Drops one reference; at zero the object's kind decides what happens.
pub(crate) fn dereference(ctx: &mut Ctx<'_>, address: usize) -> KResult<i64> {
    release(ctx, address, false)
}

/// ObDereferenceObjectDeferDelete (the I/O manager's completion uses it for the file
/// object): at zero the deletion always runs on a worker thread.
pub(crate) fn dereference_defer_delete(ctx: &mut Ctx<'_>, address: usize) -> KResult<i64> {
    release(ctx, address, true)
}

fn release(ctx: &mut Ctx<'_>, address: usize, defer: bool) -> KResult<i64> {
    let Some(object) = ctx.ob.objects.get_mut(&address) else {
        return Err(ctx.violation(Violation::new(
            code::DRIVER_VERIFIER_DETECTED_VIOLATION,
            [c4::REFERENCE_COUNT_BELOW_ZERO, address as u64, u64::MAX, 0],
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format!("{} on {address:#x}, which is not a live object (already dereferenced to zero?).", ctx.api),
        )));
    };
    object.refs -= 1;
    let (refs, kind) = (object.refs, object.kind);
    if refs < 0 {
        return Err(ctx.violation(Violation::new(
            code::DRIVER_VERIFIER_DETECTED_VIOLATION,
            [c4::REFERENCE_COUNT_BELOW_ZERO, address as u64, refs as u64, 0],
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format!("{}: the reference count of {address:#x} went below zero.", ctx.api),
        )));
    }
    if refs == 0 {
        ctx.ob.objects.remove(&address);
        // Above PASSIVE_LEVEL the object manager queues the deletion to a worker thread
        // (ReactOS `obref.c`, ObpDeferObjectDeletion); so does DeferDelete.
        if defer || ctx.irql() > crate::irql::PASSIVE_LEVEL {
            crate::ke::work::defer_deletion(ctx, address, kind);
        } else {
            delete(ctx, address, kind)?;
        }
    }
    Ok(refs)
}

/// The object's last reference went: IRP_MJ_CLOSE for a file object, the memory for
/// a device or thread object. At PASSIVE_LEVEL.
pub(crate) fn delete(ctx: &mut Ctx<'_>, address: usize, kind: Kind) -> KResult<()> {
    match kind {
        Kind::Thread => crate::ke::thread::delete_object(ctx, address),
        Kind::File => crate::io::file::last_reference(ctx, address)?,
        Kind::Device => crate::io::device::last_reference(ctx, address)?,
    }
    Ok(())
}

/// Defines a type object and the kernel's variable holding its address. Only the
/// type object's address matters.
macro_rules! type_object {
    ($object:ident, $variable:ident) => {
        static mut $object: u64 = 0;
        static mut $variable: POBJECT_TYPE = (&raw mut $object).cast();
    };
}
type_object!(THREAD_TYPE_OBJECT, THREAD_TYPE);
type_object!(FILE_TYPE_OBJECT, FILE_TYPE);
type_object!(DEVICE_TYPE_OBJECT, DEVICE_TYPE);
type_object!(EVENT_TYPE_OBJECT, EVENT_TYPE);
type_object!(KEY_TYPE_OBJECT, KEY_TYPE);

// The exported data symbols, as the WDK's import libraries present them: the symbol is
// the import-table slot, which holds the address of the kernel's variable, so drivers
// write `*PsThreadType` (wdm.h: `extern POBJECT_TYPE *PsThreadType;`).
/// `PsThreadType`.
#[unsafe(no_mangle)]
pub static mut PsThreadType: *mut POBJECT_TYPE = &raw mut THREAD_TYPE;
/// `IoFileObjectType`.
#[unsafe(no_mangle)]
pub static mut IoFileObjectType: *mut POBJECT_TYPE = &raw mut FILE_TYPE;
/// `IoDeviceObjectType`, exported by ntoskrnl though declared in no WDK header.
#[unsafe(no_mangle)]
pub static mut IoDeviceObjectType: *mut POBJECT_TYPE = &raw mut DEVICE_TYPE;
/// `ExEventObjectType`.
#[unsafe(no_mangle)]
pub static mut ExEventObjectType: *mut POBJECT_TYPE = &raw mut EVENT_TYPE;
/// `CmKeyObjectType`.
#[unsafe(no_mangle)]
pub static mut CmKeyObjectType: *mut POBJECT_TYPE = &raw mut KEY_TYPE;

impl Kind {
    /// The address of this kind's type object (what `*PsThreadType` ... yields).
    fn type_object(self) -> usize {
        match self {
            Kind::Device => (&raw const DEVICE_TYPE_OBJECT) as usize,
            Kind::File => (&raw const FILE_TYPE_OBJECT) as usize,
            Kind::Thread => (&raw const THREAD_TYPE_OBJECT) as usize,
        }
    }
}

/// The type object of what a handle names.
fn type_of(ctx: &Ctx<'_>, target: &Target) -> usize {
    match target {
        Target::Key(_) => (&raw const KEY_TYPE_OBJECT) as usize,
        Target::Object(address) => ctx.ob.objects.get(address).map_or(0, |o| o.kind.type_object()),
    }
}

/// Whether an object of `kind` may be used where the caller asked for `wanted`: a NULL
/// type accepts any object, as ReactOS's ObReferenceObjectByHandle and
/// ObOpenObjectByPointer (ntoskrnl/ob/obref.c, obhandle.c) compare the object header's
/// type only when one is given; Windows documents STATUS_OBJECT_TYPE_MISMATCH for the
/// other case.
fn type_matches(actual: usize, wanted: POBJECT_TYPE) -> bool {
    wanted.is_null() || wanted as usize == actual
}

/// The object behind a handle for a kernel-mode caller (a ZwXxx routine) and its kind.
pub(crate) fn by_handle(ctx: &Ctx<'_>, handle: HANDLE) -> Option<(usize, Kind)> {
    let address = kernel_handle_object(ctx, handle as u64)?;
    Some((address, ctx.ob.objects.get(&address)?.kind))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ObfDereferenceObject(Object: PVOID) -> LONG_PTR {
    kcall("ObfDereferenceObject", |ctx| dereference(ctx, Object as usize))
}
const _: crate::wdk_sys::fnsig::ObfDereferenceObject = ObfDereferenceObject;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ObfReferenceObject(Object: PVOID) -> LONG_PTR {
    kcall("ObfReferenceObject", |ctx| {
        reference(ctx, Object as usize);
        Ok(ctx.ob.refs(Object as usize))
    })
}
const _: crate::wdk_sys::fnsig::ObfReferenceObject = ObfReferenceObject;

fn c4(ctx: &Ctx<'_>, params: [u64; 4], text: String) -> crate::machine::Stop {
    ctx.violation(Violation::new(
        code::DRIVER_VERIFIER_DETECTED_VIOLATION,
        params,
        "DRIVER_VERIFIER_DETECTED_VIOLATION",
        text,
    ))
}

/// Looks the handle up in the caller's table (a kernel handle in the System table,
/// for a kernel-mode caller only), checks the object type, and references the object.
/// Verifier's handle rules: 0xC4/0xF5 a NULL handle, 0xF6 a user-mode handle
/// referenced as kernel mode outside the System process, 0xF7 a kernel handle
/// referenced as user mode in the System process. DesiredAccess is not checked:
/// ntsim's handles carry no granted access.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ObReferenceObjectByHandle(
    Handle: HANDLE,
    _DesiredAccess: ACCESS_MASK,
    ObjectType: POBJECT_TYPE,
    AccessMode: KPROCESSOR_MODE,
    Object: *mut PVOID,
    _HandleInformation: POBJECT_HANDLE_INFORMATION,
) -> NTSTATUS {
    kcall("ObReferenceObjectByHandle", |ctx| {
        let handle = Handle as u64;
        let kernel_mode = AccessMode == 0;
        let owner = current_owner(ctx);
        if handle == 0 {
            return Err(c4(
                ctx,
                [c4::NULL_HANDLE, 0, ObjectType as u64, 0],
                "ObReferenceObjectByHandle with a NULL handle.".to_owned(),
            ));
        }
        if is_kernel_handle(handle) && !kernel_mode && owner == Owner::System {
            return Err(c4(
                ctx,
                [c4::KERNEL_HANDLE_AS_USER_MODE, handle, ObjectType as u64, u64::from(AccessMode.cast_unsigned())],
                format!("ObReferenceObjectByHandle({handle:#x}, UserMode) of a kernel handle in the System process."),
            ));
        }
        if !is_kernel_handle(handle)
            && kernel_mode
            && let Owner::Process(pid) = owner
        {
            return Err(c4(
                ctx,
                [c4::USER_HANDLE_AS_KERNEL_MODE, handle, pid as u64, 0],
                format!(
                    "ObReferenceObjectByHandle({handle:#x}, KernelMode) of a user-mode handle of process {pid}: a handle from user space is referenced with UserMode, a driver's own handle is made with OBJ_KERNEL_HANDLE."
                ),
            ));
        }
        // Fault injection: a failed lookup, as for a handle closed meanwhile.
        if ctx.should_fail() {
            return Ok(STATUS_INVALID_HANDLE);
        }
        let Some(target) = ctx.ob.find(owner, handle, kernel_mode).cloned() else {
            return Ok(STATUS_INVALID_HANDLE);
        };
        if !type_matches(type_of(ctx, &target), ObjectType) {
            return Ok(STATUS_OBJECT_TYPE_MISMATCH);
        }
        let Target::Object(address) = target else {
            // Keys are not objects in ntsim.
            return Ok(crate::wdk_sys::STATUS_NOT_SUPPORTED);
        };
        reference(ctx, address);
        // SAFETY: the driver passed a writable pointer.
        unsafe { *Object = address as PVOID };
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::ObReferenceObjectByHandle = ObReferenceObjectByHandle;

/// Opens a handle to an object the caller already references (used to set a device's
/// security descriptor): a kernel handle with OBJ_KERNEL_HANDLE (and KernelMode),
/// otherwise one in the caller's process. A non-NULL type must be the object's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ObOpenObjectByPointer(
    Object: PVOID,
    HandleAttributes: ULONG,
    _PassedAccessState: PACCESS_STATE,
    _DesiredAccess: ACCESS_MASK,
    ObjectType: POBJECT_TYPE,
    AccessMode: KPROCESSOR_MODE,
    Handle: PHANDLE,
) -> NTSTATUS {
    kcall("ObOpenObjectByPointer", |ctx| {
        let Some(object) = ctx.ob.objects.get(&(Object as usize)) else {
            return Ok(crate::wdk_sys::STATUS_INVALID_PARAMETER);
        };
        if !type_matches(object.kind.type_object(), ObjectType) {
            return Ok(STATUS_OBJECT_TYPE_MISMATCH);
        }
        let kernel = HandleAttributes & OBJ_KERNEL_HANDLE != 0 && AccessMode == 0;
        let owner = current_owner(ctx);
        let handle = ctx.ob.open_handle(owner, kernel, Target::Object(Object as usize));
        // SAFETY: the driver passed a writable HANDLE.
        unsafe { *Handle = handle as HANDLE };
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::ObOpenObjectByPointer = ObOpenObjectByPointer;

/// NtClose from kernel mode. A handle not in the caller's table is bug check 0x93
/// INVALID_KERNEL_HANDLE, P2 = 1 (Windows raises it for kernel-mode callers when a
/// debugger is attached or handle exceptions are on, which Verifier setups have).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ZwClose(Handle: HANDLE) -> NTSTATUS {
    kcall("ZwClose", |ctx| {
        let handle = Handle as u64;
        let owner = current_owner(ctx);
        match ctx.ob.take(owner, handle, true) {
            Some(Target::Key(_)) => Ok(STATUS_SUCCESS),
            Some(Target::Object(address)) => {
                crate::io::client::close_object_handle(ctx, address)?;
                Ok(STATUS_SUCCESS)
            }
            None => {
                let table = match owner {
                    Owner::Process(pid) if !is_kernel_handle(handle) => format!("process {pid}'s handle table"),
                    _ => "the System handle table".to_owned(),
                };
                Err(ctx.violation(Violation::new(
                    code::INVALID_KERNEL_HANDLE,
                    [handle, 1, 0, 0],
                    "INVALID_KERNEL_HANDLE",
                    format!("ZwClose({handle:#x}): no such handle in {table} (closed already, or made in another process's context without OBJ_KERNEL_HANDLE)."),
                )))
            }
        }
    })
}
const _: crate::wdk_sys::fnsig::ZwClose = ZwClose;
