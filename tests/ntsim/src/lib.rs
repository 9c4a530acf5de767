#![doc = include_str!("../README.md")]
#![allow(non_snake_case, reason = "kernel exports keep their Windows names")]
#![allow(clippy::missing_safety_doc, reason = "exports follow their documented Windows contracts")]
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss, clippy::cast_lossless)]
#![allow(clippy::similar_names, clippy::too_many_lines, clippy::module_name_repetitions, clippy::missing_panics_doc)]
#![allow(clippy::missing_errors_doc, clippy::must_use_candidate, clippy::too_many_arguments)]

pub mod check;
pub mod checker;
mod crash;
pub(crate) mod faults;
pub mod hal;
pub mod inline;
pub mod io;
pub mod irql;
pub(crate) mod ke;
pub mod machine;
pub(crate) mod ob;
pub mod pool;
pub mod registry;
pub mod sched;
pub mod se;
pub(crate) mod special_pool;
pub(crate) mod stack;
mod thunk;
pub mod trace;
#[allow(clippy::all, clippy::pedantic, clippy::undocumented_unsafe_blocks, clippy::multiple_unsafe_ops_per_block)]
#[allow(missing_docs, unsafe_op_in_unsafe_fn, unused, non_upper_case_globals, non_camel_case_types, improper_ctypes)]
pub mod wdk_sys;

pub use check::{Failure, check_free, check_pct, check_random, replay};
pub use checker::Violation;
pub use faults::FaultHandle;
pub use io::client::{Handle, Issued, Outcome, PendingIo, Posted, Process, READ_WRITE, Thread};
pub use io::driver::{Driver, DriverEntry, DriverState, service_key};
pub use io::irp::IoResult;
pub use io::kernel::KernelFile;
pub use ke::clock::PERFORMANCE_FREQUENCY;
pub use ke::interrupt::{RegisterWrite, Resource};
pub use ke::timer::{BOOT_SYSTEM_TIME, DEFAULT_TIME_INCREMENT, SECOND};
pub use machine::{CompletionApc, Config, Hostile, Machine, Stopped, TimePasses};
pub use registry::Value;
pub use sched::Mode;
