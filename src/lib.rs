//! stagedrv — a legacy (non-PnP) WDM driver that owns every kind of resource the
//! "Releasing Driver-Allocated Resources" documents describe and releases them in the
//! documented stages.
//!
//! The same source builds as `stagedrv.sys` for Windows (on the windows-drivers-rs
//! crates) and, on a Linux host, as a library that the `ntsim` kernel simulator loads
//! in `cargo test`. [`kernel::sys`] is the only module that knows which one it is.

#![no_std]
// C constants arrive from the bindings as u32/i32 while the DDIs take UCHAR, CCHAR,
// KPROCESSOR_MODE or ULONG sizes; every such cast in this crate is of a small constant
// or a bounded size.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]
// Kernel code must not panic: a panic is a bug check.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

#[cfg(target_os = "windows")]
extern crate wdk_panic;

#[macro_use]
pub mod kernel;

mod config;
mod consumer;
mod context;
mod device;
mod dispatch;
mod driver;
mod hardware;
#[cfg(not(target_os = "windows"))]
pub mod probe;
mod producer;
mod queue;
mod registry_entries;
mod ring;
mod state;
mod statistics;
mod unload;
mod watchdog;

driver_entry_points! {
    extension: device::DeviceExtension,
    entry: driver::entry,
    unload: unload::unload,
}
/// The user-mode interface (`stagedrv-protocol`), re-exported for the host tests.
pub use stagedrv_protocol as protocol;
