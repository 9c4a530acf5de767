//! The kernel layer: every wrapper around the kernel's FFI objects and DDIs lives under
//! this module, so that the driver's policy above it can be written in safe Rust.
//!
//! - [`sys`]: the bindings seam (wdk-sys on Windows, ntsim on the host) and the
//!   equivalents of `wdm.h`'s inline DDIs;
//! - [`error`]: NTSTATUS failures as a typed error;
//! - [`irp`]: the owned IRP and the dispatch adapter;
//! - [`irql`]: IRQL contracts as debug assertions;
//! - [`sync`]: spin locks and their guards, the `AtDispatch` token, `LockedBy`, events;
//! - [`list`]: NULL-terminated intrusive lists of `LIST_ENTRY`s;
//! - [`pool`]: owned nonpaged pool, the allocator the kernel offers, pool tags;
//! - [`file_queue`]: per-file-object contexts and their cancel-safe IRP queues;
//! - [`timer`]: a KTIMER with its DPC, and the DPC flush; [`io_timer`]: a device's
//!   IoTimer; [`work_item`]: an I/O work item with the wait Unload needs;
//!   [`thread`]: a system thread that can be waited for; [`time`]: the performance
//!   counter;
//! - [`interrupt`]: a connected interrupt, its ISR and CustomDpc, torn down in order;
//! - [`resources`]: the controller object, the resource claim, the register window;
//! - [`hal`]: the HAL routines that translate bus-relative resources;
//! - [`log`]: `log!` lines through DbgPrintEx;
//! - [`driver`]: the driver object, the driver-wide state's block, and the generated
//!   DriverEntry / DriverUnload;
//! - [`device`]: borrowed and owned device objects, the device table;
//! - [`name`], [`registry`], [`link`], [`security`]: names, registry keys, symbolic
//!   links, a device's DACL;
//! - `layout`: the compile-time layout contract of the structures the driver reads.

#[macro_use]
pub mod log;
#[macro_use]
pub mod driver;

pub mod device;
pub mod error;
pub(crate) mod file_queue;
pub mod hal;
pub mod interrupt;
pub mod io_timer;
pub mod irp;
pub mod irql;
mod layout;
pub mod link;
pub(crate) mod list;
pub mod name;
pub(crate) mod pool;
pub mod registry;
pub mod resources;
pub mod security;
pub mod sync;
pub mod sys;
pub mod thread;
pub mod time;
pub mod timer;
pub mod work_item;
