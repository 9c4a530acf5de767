//! The kernel layer: every wrapper around the kernel's FFI objects and DDIs lives under
//! this module, so that the driver's policy above it can be written in safe Rust.
//!
//! - [`sys`]: the bindings seam (wdk-sys on Windows, ntsim on the host) and the
//!   equivalents of `wdm.h`'s inline DDIs;
//! - [`error`]: NTSTATUS failures as a typed error;
//! - [`irp`]: the owned IRP and the dispatch adapter;
//! - [`irql`]: IRQL contracts as debug assertions;
//! - `layout`: the compile-time layout contract of the structures the driver reads;
//! - [`log`]: `log!` lines through DbgPrintEx;
//! - [`driver`]: the driver object, the driver-wide state's block, and the generated
//!   DriverEntry / DriverUnload;
//! - [`device`]: borrowed and owned device objects, the device table;
//! - [`name`], [`registry`], [`link`], [`security`]: names, registry keys, symbolic
//!   links, a device's DACL.

#[macro_use]
pub mod log;
#[macro_use]
pub mod driver;

pub mod device;
pub mod error;
pub mod irp;
pub mod irql;
mod layout;
pub mod link;
pub mod name;
pub mod registry;
pub mod security;
pub mod sys;
