//! The kernel layer: every wrapper around the kernel's FFI objects and DDIs lives under
//! this module, so that the driver's policy above it can be written in safe Rust.
//!
//! - [`sys`]: the bindings seam (wdk-sys on Windows, ntsim on the host) and the
//!   equivalents of `wdm.h`'s inline DDIs;
//! - [`error`]: NTSTATUS failures as a typed error;
//! - [`irp`]: the owned IRP and the dispatch adapter;
//! - [`irql`]: IRQL contracts as debug assertions;
//! - [`interrupt`]: a connected interrupt, its ISR and CustomDpc, torn down in order;
//! - [`resources`]: the controller object, the resource claim, the register window;
//! - [`hal`]: the HAL routines that translate bus-relative resources;
//! - `layout`: the compile-time layout contract of the structures the driver reads.

pub mod error;
pub mod hal;
pub mod interrupt;
pub mod irp;
pub mod irql;
mod layout;
pub mod resources;
pub mod sys;
