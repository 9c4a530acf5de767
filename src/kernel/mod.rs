//! The kernel layer: every wrapper around the kernel's FFI objects and DDIs lives under
//! this module, so that the driver's policy above it can be written in safe Rust.
//!
//! - [`sys`]: the bindings seam (wdk-sys on Windows, ntsim on the host) and the
//!   equivalents of `wdm.h`'s inline DDIs;
//! - [`error`]: NTSTATUS failures as a typed error;
//! - [`irp`]: the owned IRP and the dispatch adapter;
//! - [`irql`]: IRQL contracts as debug assertions;
//! - [`sync`]: evidence of the IRQL a routine runs at;
//! - [`timer`]: a KTIMER with its DPC, and the DPC flush; [`io_timer`]: a device's
//!   IoTimer; [`work_item`]: an I/O work item with the wait Unload needs;
//!   [`thread`]: a system thread that can be waited for; [`time`]: the performance
//!   counter;
//! - `layout`: the compile-time layout contract of the structures the driver reads.

pub mod error;
pub mod io_timer;
pub mod irp;
pub mod irql;
mod layout;
pub mod sync;
pub mod sys;
pub mod thread;
pub mod time;
pub mod timer;
pub mod work_item;
