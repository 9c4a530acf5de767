//! Violations, reported the way Driver Verifier reports them: bug-check code, four
//! parameters, and a sentence a driver developer understands.
//!
//! Codes follow Microsoft's bug-check reference (0xC4 DRIVER_VERIFIER_DETECTED_VIOLATION,
//! 0xC9 DRIVER_VERIFIER_IOMANAGER_VIOLATION, 0x44, 0x11B, 0xC7, 0xCE, ...). Where
//! Verifier has no rule for a mistake ntsim can still see (a symbolic link left pointing
//! at a deleted device), the code is in ntsim's own range, 0x4E540000 ("NT").

use std::fmt;

use crate::trace::{Call, Routine};

/// A driver bug found by ntsim. The simulated machine stops when one is found.
#[derive(Clone, Debug)]
pub struct Violation {
    pub code: u32,
    pub params: [u64; 4],
    /// The bug check's symbolic name, e.g. `MULTIPLE_IRP_COMPLETE_REQUESTS`.
    pub name: &'static str,
    pub explanation: String,
    /// The simulated thread and driver routine that made the offending call.
    pub thread: String,
    pub routine: Routine,
    /// The last kernel calls before the violation, oldest first.
    pub trace_tail: Vec<Call>,
}

impl Violation {
    pub(crate) fn new(code: u32, params: [u64; 4], name: &'static str, explanation: impl Into<String>) -> Self {
        Violation {
            code,
            params,
            name,
            explanation: explanation.into(),
            thread: String::new(),
            routine: Routine::Kernel,
            trace_tail: Vec::new(),
        }
    }

    /// The first bug-check parameter, which names the rule for 0xC4 and 0xC9.
    pub fn p1(&self) -> u64 {
        self.params[0]
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bug check {:#x} {} ({:#x}, {:#x}, {:#x}, {:#x})",
            self.code, self.name, self.params[0], self.params[1], self.params[2], self.params[3]
        )?;
        writeln!(f, "  {}", self.explanation)?;
        writeln!(f, "  in {} on thread {}", self.routine, self.thread)?;
        writeln!(f, "  last kernel calls:")?;
        for call in &self.trace_tail {
            writeln!(f, "    {call}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Violation {}

/// Bug-check codes ntsim reports.
pub mod code {
    pub const IRQL_NOT_LESS_OR_EQUAL: u32 = 0x0A;
    pub const MAXIMUM_WAIT_OBJECTS_EXCEEDED: u32 = 0x0C;
    pub const KMODE_EXCEPTION_NOT_HANDLED: u32 = 0x1E;
    pub const MULTIPLE_IRP_COMPLETE_REQUESTS: u32 = 0x44;
    pub const PAGE_FAULT_IN_NONPAGED_AREA: u32 = 0x50;
    pub const DRIVER_VERIFIER_DETECTED_VIOLATION: u32 = 0xC4;
    pub const TIMER_OR_DPC_INVALID: u32 = 0xC7;
    pub const DRIVER_VERIFIER_IOMANAGER_VIOLATION: u32 = 0xC9;
    pub const DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS: u32 = 0xCE;
    pub const DRIVER_RETURNED_HOLDING_CANCEL_LOCK: u32 = 0x11B;
    pub const BAD_POOL_CALLER: u32 = 0xC2;
    pub const INVALID_KERNEL_HANDLE: u32 = 0x93;
    pub const WORKER_INVALID: u32 = 0xE4;
    pub const DPC_WATCHDOG_VIOLATION: u32 = 0x133;
    /// ntsim's own rules, where Verifier has none.
    pub const NTSIM_RULE: u32 = 0x4E54_0000;
}

/// Rule numbers (first parameter) under [`code::DRIVER_VERIFIER_DETECTED_VIOLATION`].
pub mod c4 {
    pub const ZERO_SIZE_ALLOCATION: u64 = 0x00;
    pub const FREE_UNKNOWN_POOL: u64 = 0x10;
    pub const FREE_PAGED_POOL_IRQL: u64 = 0x11;
    pub const DOUBLE_FREE: u64 = 0x14;
    pub const SPIN_LOCK_RELEASE_IRQL: u64 = 0x32;
    pub const SPIN_LOCK_AT_DPC_BELOW_DISPATCH: u64 = 0x35;
    pub const REFERENCE_COUNT_BELOW_ZERO: u64 = 0x3F;
    pub const SPIN_LOCK_ACQUIRE_ABOVE_DISPATCH: u64 = 0x40;
    pub const POOL_LEAK_AT_UNLOAD: u64 = 0x62;
    pub const SET_EVENT_IRQL: u64 = 0x80;
    pub const WAIT_ABOVE_DISPATCH: u64 = 0x120;
    pub const WAIT_AT_DISPATCH_WITH_TIMEOUT: u64 = 0x121;
    pub const WAIT_AT_DISPATCH_INFINITE: u64 = 0x122;
    pub const SLOW_CANCEL: u64 = 0x135;
    pub const NULL_HANDLE: u64 = 0xF5;
    pub const USER_HANDLE_AS_KERNEL_MODE: u64 = 0xF6;
    pub const KERNEL_HANDLE_AS_USER_MODE: u64 = 0xF7;
    pub const RECURSIVE_SPIN_LOCK: u64 = 0x1000;
    /// DDI compliance (additional): QueuedSpinLockRelease and SpinLockRelease.
    pub const QUEUED_SPIN_LOCK_RELEASE: u64 = 0x40007;
    pub const SPIN_LOCK_RELEASE_RULE: u64 = 0x4000B;
    /// A DDI called above the highest IRQL its documentation allows.
    pub const DDI_IRQL: u64 = 0x2001B;
}

/// Rule numbers (first parameter) under [`code::DRIVER_VERIFIER_IOMANAGER_VIOLATION`].
pub mod c9 {
    pub const IRQL_CHANGED_BY_DISPATCH: u64 = 0x05;
    pub const COMPLETED_WITH_PENDING_STATUS: u64 = 0x06;
    pub const COMPLETED_WITH_CANCEL_ROUTINE: u64 = 0x07;
    pub const TIMER_ALREADY_INITIALIZED: u64 = 0x0A;
    pub const COMPLETED_ABOVE_DISPATCH: u64 = 0x0E;
    pub const RETURNED_STATUS_MISMATCH: u64 = 0x224;
    pub const NEITHER_COMPLETED_NOR_PENDING: u64 = 0x226;
    pub const PENDING_NOT_MARKED: u64 = 0x23D;
    pub const MARKED_BUT_NOT_PENDING: u64 = 0x23E;
    pub const DEVICE_DELETED_TWICE: u64 = 0x240;
    pub const INFORMATION_TOO_LARGE: u64 = 0x312;
}

/// Rule numbers (first parameter) under [`code::WORKER_INVALID`].
pub mod e4 {
    pub const ACTIVE_ITEM_QUEUED: u64 = 0x1;
    pub const QUEUED_IO_ITEM_FREED: u64 = 0x2;
    pub const INVALID_ROUTINE: u64 = 0x7;
}

/// Resource kinds (first parameter) under [`code::DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS`]
/// and ntsim's own unload rules.
pub mod unload {
    pub const WORK_ITEM: u64 = 1;
    pub const SYSTEM_THREAD: u64 = 2;
    pub const DEVICE_OBJECT: u64 = 3;
    pub const SYMBOLIC_LINK: u64 = 4;
    pub const OBJECT_REFERENCE: u64 = 5;
    pub const INTERRUPT: u64 = 6;
    pub const IO_SPACE_MAPPING: u64 = 7;
    pub const REGISTRY_KEY: u64 = 8;
    pub const CONTROLLER_OBJECT: u64 = 10;
    pub const RESOURCE_CLAIM: u64 = 11;
}

/// ntsim's own rules (first parameter) under [`code::NTSIM_RULE`].
pub mod ntsim_rule {
    pub const LINK_TO_DELETED_DEVICE: u64 = 1;
    pub const HANDLE_NOT_FOUND: u64 = 2;
    pub const SPIN_LOCK_HELD_AT_RETURN: u64 = 3;
    pub const BAD_OBJECT: u64 = 4;
    pub const KERNEL_CALL_OFF_MACHINE: u64 = 5;
}
