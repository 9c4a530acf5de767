//! The object manager: reference counts, kernel handles, and the namespace of device
//! objects and symbolic links.

use std::collections::HashMap;

use crate::checker::{Violation, c4, code};
use crate::machine::{Ctx, KResult, kcall};
use crate::wdk_sys::{
    ACCESS_MASK, HANDLE, KPROCESSOR_MODE, LONG_PTR, NTSTATUS, PACCESS_STATE, PHANDLE, POBJECT_HANDLE_INFORMATION,
    POBJECT_TYPE, PVOID, STATUS_INVALID_HANDLE, STATUS_SUCCESS, ULONG,
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

#[derive(Default)]
pub(crate) struct Objects {
    pub(crate) objects: HashMap<usize, Object>,
    pub(crate) kernel_handles: HashMap<u64, usize>,
    next_handle: u64,
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

    pub(crate) fn open_kernel_handle(&mut self, address: usize) -> u64 {
        self.next_handle += 4;
        // Kernel handles have the top bit set, as on Windows.
        let handle = 0xFFFF_FFFF_8000_0000 | self.next_handle;
        self.kernel_handles.insert(handle, address);
        if let Some(object) = self.objects.get_mut(&address) {
            object.refs += 1;
        }
        handle
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
    let Some(object) = ctx.ob.objects.get_mut(&address) else {
        return Err(ctx.violation(Violation::new(
            code::DRIVER_VERIFIER_DETECTED_VIOLATION,
            [c4::REFERENCE_COUNT_BELOW_ZERO, address as u64, 0, 0],
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format!("{} on {address:#x}, which is not a live object (already dereferenced to zero?).", ctx.api),
        )));
    };
    object.refs -= 1;
    let (refs, kind) = (object.refs, object.kind);
    if refs < 0 {
        return Err(ctx.violation(Violation::new(
            code::DRIVER_VERIFIER_DETECTED_VIOLATION,
            [c4::REFERENCE_COUNT_BELOW_ZERO, address as u64, 0, 0],
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format!("{}: the reference count of {address:#x} went below zero.", ctx.api),
        )));
    }
    if refs == 0 {
        ctx.ob.objects.remove(&address);
        match kind {
            Kind::Thread => crate::ke::thread::delete_object(ctx, address),
            Kind::File => crate::io::file::last_reference(ctx, address)?,
            Kind::Device => crate::io::device::last_reference(ctx, address)?,
        }
    }
    Ok(refs)
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

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ObReferenceObjectByHandle(
    Handle: HANDLE,
    _DesiredAccess: ACCESS_MASK,
    _ObjectType: POBJECT_TYPE,
    _AccessMode: KPROCESSOR_MODE,
    Object: *mut PVOID,
    _HandleInformation: POBJECT_HANDLE_INFORMATION,
) -> NTSTATUS {
    kcall("ObReferenceObjectByHandle", |ctx| {
        let Some(&address) = ctx.ob.kernel_handles.get(&(Handle as u64)) else {
            return Ok(STATUS_INVALID_HANDLE);
        };
        reference(ctx, address);
        // SAFETY: the driver passed a writable pointer.
        unsafe { *Object = address as PVOID };
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::ObReferenceObjectByHandle = ObReferenceObjectByHandle;

/// Opens a kernel handle to an object the caller already references (used to set a
/// device's security descriptor).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ObOpenObjectByPointer(
    Object: PVOID,
    _HandleAttributes: ULONG,
    _PassedAccessState: PACCESS_STATE,
    _DesiredAccess: ACCESS_MASK,
    _ObjectType: POBJECT_TYPE,
    _AccessMode: KPROCESSOR_MODE,
    Handle: PHANDLE,
) -> NTSTATUS {
    kcall("ObOpenObjectByPointer", |ctx| {
        if !ctx.ob.objects.contains_key(&(Object as usize)) {
            return Ok(crate::wdk_sys::STATUS_INVALID_PARAMETER);
        }
        let handle = ctx.ob.open_kernel_handle(Object as usize);
        // SAFETY: the driver passed a writable HANDLE.
        unsafe { *Handle = handle as HANDLE };
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::ObOpenObjectByPointer = ObOpenObjectByPointer;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ZwClose(Handle: HANDLE) -> NTSTATUS {
    kcall("ZwClose", |ctx| {
        if let Some(key) = crate::registry::close_key(ctx, Handle as u64) {
            return Ok(key);
        }
        let Some(address) = ctx.ob.kernel_handles.remove(&(Handle as u64)) else {
            return Ok(STATUS_INVALID_HANDLE);
        };
        dereference(ctx, address)?;
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::ZwClose = ZwClose;
