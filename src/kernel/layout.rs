//! The layout contract: the size and offset of every structure field the driver reads
//! or writes, with the Windows x64 values, checked when the crate compiles.
//!
//! The bindings come from three header sets — mingw-w64's (ntsim on the host, the Linux
//! cross-build) and the WDK's (wdk-sys in a native Windows build) — and nothing else
//! would notice if one of them laid a structure out differently: the driver would read
//! and write the wrong bytes of kernel objects. So a header set that disagrees with
//! Windows fails the build here instead.
//!
//! Where the values come from: the structure definitions in the WDK's `wdm.h` and
//! `ntddk.h` (10.0.22621 and later) with the x64 ABI (8-byte pointers, natural
//! alignment, `#pragma pack(4)` for the CM_* resource descriptors), cross-checked with
//! `offsetof`/`sizeof` compiled by `x86_64-w64-mingw32-gcc` over mingw-w64 10's DDK
//! headers, which give the same numbers. Each group below says which structure page of
//! the DDI reference documents it.
//!
//! Not asserted on purpose: `sizeof(DEVICE_OBJECT)`, which is 0x150 with the WDK (the
//! structure is declared `DECLSPEC_ALIGN(MEMORY_ALLOCATION_ALIGNMENT)`) and 0x148 with
//! mingw-w64 — the driver never depends on it, only on the two offsets below. And the
//! width of `CM_PARTIAL_RESOURCE_DESCRIPTOR.u.Interrupt.Level`, a USHORT followed by a
//! USHORT Group when `NT_PROCESSOR_GROUPS` is defined and a ULONG otherwise: both start
//! at the same offset and the Vector after them does not move.
//!
//! `--cfg stagedrv_layout_selftest` expects a wrong IRP size on purpose, to show that a
//! disagreement stops the build (tests/check-layout-negative.sh).

use crate::kernel::sys::{
    CM_FULL_RESOURCE_DESCRIPTOR, CM_PARTIAL_RESOURCE_DESCRIPTOR, CM_PARTIAL_RESOURCE_LIST, CM_RESOURCE_LIST,
    CONTROLLER_OBJECT, DEVICE_OBJECT, DRIVER_OBJECT, FILE_OBJECT, IO_STACK_LOCATION, IO_STATUS_BLOCK, IRP, KDPC,
    KEVENT, KEY_VALUE_PARTIAL_INFORMATION, KSPIN_LOCK, KTIMER, LARGE_INTEGER, LIST_ENTRY, OBJECT_ATTRIBUTES,
    SECURITY_DESCRIPTOR, UNICODE_STRING,
};

/// The size of what `pointer` points to (a field, projected from uninitialised memory).
const fn pointee_size<T>(_pointer: *const T) -> usize {
    size_of::<T>()
}

/// `size!(TYPE = BYTES)`: the structure's size.
macro_rules! size {
    ($ty:ty = $bytes:expr) => {
        const _: () = assert!(size_of::<$ty>() == $bytes, concat!("layout: size of ", stringify!($ty)));
    };
}

/// `field!(TYPE, PATH: BYTES @ OFFSET)`: a field's size and its offset in the structure
/// (`PATH` goes through bindgen's anonymous unions by field name, as the driver does).
macro_rules! field {
    ($ty:ty, $($path:ident).+ : $bytes:expr, @ $offset:expr) => {
        const _: () = {
            let object = core::mem::MaybeUninit::<$ty>::uninit();
            // SAFETY: a raw place projection into the uninitialised object: nothing is
            // read, only the field's type is taken.
            let bytes = pointee_size(unsafe { &raw const (*object.as_ptr()).$($path).+ });
            assert!(
                bytes == $bytes && core::mem::offset_of!($ty, $($path).+) == $offset,
                concat!("layout: ", stringify!($ty), ".", stringify!($($path).+))
            );
        };
    };
}

/// Windows x64 `sizeof(IRP)` (wrong on purpose in the self-test build).
const IRP_SIZE: usize = if cfg!(stagedrv_layout_selftest) { 0xD8 } else { 0xD0 };

// IRP ("IRP structure", ns-wdm-_irp): the queue links and completes it, the cancel
// protocol exchanges CancelRoutine and reads Cancel/CancelIrql, reads and IOCTLs use
// the system buffer.
size!(IRP = IRP_SIZE);
field!(IRP, AssociatedIrp.SystemBuffer: 8, @ 0x18);
field!(IRP, IoStatus.__bindgen_anon_1.Status: 4, @ 0x30);
field!(IRP, IoStatus.Information: 8, @ 0x38);
field!(IRP, Cancel: 1, @ 0x44);
field!(IRP, CancelIrql: 1, @ 0x45);
field!(IRP, CancelRoutine: 8, @ 0x68);
field!(IRP, Tail.Overlay.__bindgen_anon_1.__bindgen_anon_1.DriverContext: 32, @ 0x78);
field!(IRP, Tail.Overlay.__bindgen_anon_2.ListEntry: 16, @ 0xA8);
field!(IRP, Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1.CurrentStackLocation: 8, @ 0xB8);
size!(IO_STATUS_BLOCK = 0x10);

// IO_STACK_LOCATION (ns-wdm-_io_stack_location): IoMarkIrpPending sets Control; the
// read and IOCTL parameters; the file object of every request.
size!(IO_STACK_LOCATION = 0x48);
field!(IO_STACK_LOCATION, Control: 1, @ 0x03);
field!(IO_STACK_LOCATION, Parameters.Read.Length: 4, @ 0x08);
field!(IO_STACK_LOCATION, Parameters.DeviceIoControl.OutputBufferLength: 4, @ 0x08);
field!(IO_STACK_LOCATION, Parameters.DeviceIoControl.IoControlCode: 4, @ 0x18);
field!(IO_STACK_LOCATION, FileObject: 8, @ 0x30);

// FILE_OBJECT (ns-wdm-_file_object): the per-handle context and the opened sub-path.
size!(FILE_OBJECT = 0xD8);
field!(FILE_OBJECT, FsContext: 8, @ 0x18);
field!(FILE_OBJECT, FileName: 0x10, @ 0x58);

// DEVICE_OBJECT (ns-wdm-_device_object): DO_* flags and the extension.
field!(DEVICE_OBJECT, Flags: 4, @ 0x30);
field!(DEVICE_OBJECT, DeviceExtension: 8, @ 0x40);

// DRIVER_OBJECT (ns-wdm-_driver_object): the device list, Unload and the dispatch table
// (IRP_MJ_MAXIMUM_FUNCTION + 1 = 28 entries).
size!(DRIVER_OBJECT = 0x150);
field!(DRIVER_OBJECT, DeviceObject: 8, @ 0x08);
field!(DRIVER_OBJECT, DriverUnload: 8, @ 0x68);
field!(DRIVER_OBJECT, MajorFunction: 28 * 8, @ 0x70);

// CONTROLLER_OBJECT (ntddk.h): the controller extension of the hardware profile.
field!(CONTROLLER_OBJECT, ControllerExtension: 8, @ 0x08);

// Dispatcher objects the driver embeds in its own memory ("KDPC", "KTIMER", "KEVENT":
// opaque, so only their sizes matter) and the spin lock, list and time types.
size!(KDPC = 0x40);
size!(KTIMER = 0x40);
size!(KEVENT = 0x18);
size!(KSPIN_LOCK = 8);
size!(LARGE_INTEGER = 8);
size!(LIST_ENTRY = 0x10);
field!(LIST_ENTRY, Flink: 8, @ 0);
field!(LIST_ENTRY, Blink: 8, @ 8);

// UNICODE_STRING (ns-ntdef-_unicode_string) and OBJECT_ATTRIBUTES
// (ns-wudfwdm-_object_attributes), which the driver builds itself.
size!(UNICODE_STRING = 0x10);
field!(UNICODE_STRING, Length: 2, @ 0);
field!(UNICODE_STRING, MaximumLength: 2, @ 2);
field!(UNICODE_STRING, Buffer: 8, @ 8);
size!(OBJECT_ATTRIBUTES = 0x30);
field!(OBJECT_ATTRIBUTES, Length: 4, @ 0);
field!(OBJECT_ATTRIBUTES, RootDirectory: 8, @ 0x08);
field!(OBJECT_ATTRIBUTES, ObjectName: 8, @ 0x10);
field!(OBJECT_ATTRIBUTES, Attributes: 4, @ 0x18);
field!(OBJECT_ATTRIBUTES, SecurityDescriptor: 8, @ 0x20);
field!(OBJECT_ATTRIBUTES, SecurityQualityOfService: 8, @ 0x28);

// SECURITY_DESCRIPTOR (ns-ntifs-_security_descriptor): an absolute descriptor on the
// stack, filled by RtlCreateSecurityDescriptor.
size!(SECURITY_DESCRIPTOR = 0x28);

// KEY_VALUE_PARTIAL_INFORMATION (ns-wdm-_key_value_partial_information), read back
// from ZwQueryValueKey.
size!(KEY_VALUE_PARTIAL_INFORMATION = 0x10);
field!(KEY_VALUE_PARTIAL_INFORMATION, Type: 4, @ 0x04);
field!(KEY_VALUE_PARTIAL_INFORMATION, DataLength: 4, @ 0x08);
field!(KEY_VALUE_PARTIAL_INFORMATION, Data: 1, @ 0x0C);

// The resource list of the hardware claim (ns-wdm-_cm_resource_list,
// _cm_full_resource_descriptor, _cm_partial_resource_list,
// _cm_partial_resource_descriptor; packed to 4 bytes).
size!(CM_RESOURCE_LIST = 0x28);
field!(CM_RESOURCE_LIST, Count: 4, @ 0);
field!(CM_RESOURCE_LIST, List: 0x24, @ 0x04);
size!(CM_FULL_RESOURCE_DESCRIPTOR = 0x24);
field!(CM_FULL_RESOURCE_DESCRIPTOR, InterfaceType: 4, @ 0);
field!(CM_FULL_RESOURCE_DESCRIPTOR, BusNumber: 4, @ 0x04);
field!(CM_FULL_RESOURCE_DESCRIPTOR, PartialResourceList: 0x1C, @ 0x08);
size!(CM_PARTIAL_RESOURCE_LIST = 0x1C);
field!(CM_PARTIAL_RESOURCE_LIST, Version: 2, @ 0);
field!(CM_PARTIAL_RESOURCE_LIST, Revision: 2, @ 0x02);
field!(CM_PARTIAL_RESOURCE_LIST, Count: 4, @ 0x04);
field!(CM_PARTIAL_RESOURCE_LIST, PartialDescriptors: 0x14, @ 0x08);
size!(CM_PARTIAL_RESOURCE_DESCRIPTOR = 0x14);
field!(CM_PARTIAL_RESOURCE_DESCRIPTOR, Type: 1, @ 0);
field!(CM_PARTIAL_RESOURCE_DESCRIPTOR, ShareDisposition: 1, @ 0x01);
field!(CM_PARTIAL_RESOURCE_DESCRIPTOR, Flags: 2, @ 0x02);
field!(CM_PARTIAL_RESOURCE_DESCRIPTOR, u.Memory.Start: 8, @ 0x04);
field!(CM_PARTIAL_RESOURCE_DESCRIPTOR, u.Memory.Length: 4, @ 0x0C);
const _: () = assert!(
    core::mem::offset_of!(CM_PARTIAL_RESOURCE_DESCRIPTOR, u.Interrupt.Level) == 0x04,
    "layout: CM_PARTIAL_RESOURCE_DESCRIPTOR.u.Interrupt.Level"
);
field!(CM_PARTIAL_RESOURCE_DESCRIPTOR, u.Interrupt.Vector: 4, @ 0x08);
field!(CM_PARTIAL_RESOURCE_DESCRIPTOR, u.Interrupt.Affinity: 8, @ 0x0C);
