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
    /// The bug-check code ([`code`]).
    pub code: u32,
    /// The four bug-check parameters, as the bug check's reference page defines them.
    pub params: [u64; 4],
    /// The bug check's symbolic name, e.g. `MULTIPLE_IRP_COMPLETE_REQUESTS`.
    pub name: &'static str,
    /// What the driver did, in a sentence, and what to do instead.
    pub explanation: String,
    /// The simulated thread and driver routine that made the offending call.
    pub thread: String,
    /// The driver routine it was running.
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
    /// 0x0A: the kernel touched bad memory at DISPATCH_LEVEL or above, or called a NULL routine.
    pub const IRQL_NOT_LESS_OR_EQUAL: u32 = 0x0A;
    /// 0x0C: KeWaitForMultipleObjects of too many objects.
    pub const MAXIMUM_WAIT_OBJECTS_EXCEEDED: u32 = 0x0C;
    /// 0x1E: an exception a DDI raises, not handled (KeReleaseSemaphore past its limit).
    pub const KMODE_EXCEPTION_NOT_HANDLED: u32 = 0x1E;
    /// 0x44: an IRP completed twice.
    pub const MULTIPLE_IRP_COMPLETE_REQUESTS: u32 = 0x44;
    /// 0x50: a bad access below DISPATCH_LEVEL (NULL, wild pointer, a freed interrupt object).
    pub const PAGE_FAULT_IN_NONPAGED_AREA: u32 = 0x50;
    /// 0xC4: a Driver Verifier rule; the rule is the first parameter ([`super::c4`]).
    pub const DRIVER_VERIFIER_DETECTED_VIOLATION: u32 = 0xC4;
    /// 0xC7: a set KTIMER or queued KDPC re-initialised, freed, or left at unload.
    pub const TIMER_OR_DPC_INVALID: u32 = 0xC7;
    /// 0xC9: an I/O Verification rule; the rule is the first parameter ([`super::c9`]).
    pub const DRIVER_VERIFIER_IOMANAGER_VIOLATION: u32 = 0xC9;
    /// 0xCE: a resource left at unload; its kind is the first parameter ([`super::unload`]).
    pub const DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS: u32 = 0xCE;
    /// 0x11B: a cancel routine returned holding the cancel spin lock.
    pub const DRIVER_RETURNED_HOLDING_CANCEL_LOCK: u32 = 0x11B;
    /// 0xC2: pool freed with a tag other than the one it was allocated with.
    pub const BAD_POOL_CALLER: u32 = 0xC2;
    /// 0x93: ZwClose of a handle not in the caller's table.
    pub const INVALID_KERNEL_HANDLE: u32 = 0x93;
    /// 0xE4: a work item misused; the rule is the first parameter ([`super::e4`]).
    pub const WORKER_INVALID: u32 = 0xE4;
    /// 0x133: a spin-lock deadlock (Windows spins until the DPC watchdog fires).
    pub const DPC_WATCHDOG_VIOLATION: u32 = 0x133;
    /// ntsim's own rules, where Verifier has none.
    pub const NTSIM_RULE: u32 = 0x4E54_0000;
}

/// Rule numbers (first parameter) under [`code::DRIVER_VERIFIER_DETECTED_VIOLATION`].
pub mod c4 {
    /// A pool allocation of zero bytes.
    pub const ZERO_SIZE_ALLOCATION: u64 = 0x00;
    /// A free of an address that is not a pool block.
    pub const FREE_UNKNOWN_POOL: u64 = 0x10;
    /// Paged pool freed above APC_LEVEL.
    pub const FREE_PAGED_POOL_IRQL: u64 = 0x11;
    /// A pool block freed twice.
    pub const DOUBLE_FREE: u64 = 0x14;
    /// A spin lock released at, or asked to return to, the wrong IRQL.
    pub const SPIN_LOCK_RELEASE_IRQL: u64 = 0x32;
    /// An `AtDpcLevel` spin-lock call below DISPATCH_LEVEL.
    pub const SPIN_LOCK_AT_DPC_BELOW_DISPATCH: u64 = 0x35;
    /// An object dereferenced more often than referenced.
    pub const REFERENCE_COUNT_BELOW_ZERO: u64 = 0x3F;
    /// A spin lock acquired above DISPATCH_LEVEL.
    pub const SPIN_LOCK_ACQUIRE_ABOVE_DISPATCH: u64 = 0x40;
    /// Pool still allocated when the driver unloaded.
    pub const POOL_LEAK_AT_UNLOAD: u64 = 0x62;
    /// KeSetEvent above DISPATCH_LEVEL; reserved: no check raises it.
    pub const SET_EVENT_IRQL: u64 = 0x80;
    /// A wait above DISPATCH_LEVEL.
    pub const WAIT_ABOVE_DISPATCH: u64 = 0x120;
    /// A wait with a non-zero timeout at DISPATCH_LEVEL.
    pub const WAIT_AT_DISPATCH_WITH_TIMEOUT: u64 = 0x121;
    /// A wait without a timeout at DISPATCH_LEVEL.
    pub const WAIT_AT_DISPATCH_INFINITE: u64 = 0x122;
    /// A cancelled IRP not completed in time (`Config::slow_cancel`), or a lost cancel.
    pub const SLOW_CANCEL: u64 = 0x135;
    /// ObReferenceObjectByHandle of a NULL handle.
    pub const NULL_HANDLE: u64 = 0xF5;
    /// A user-mode handle referenced as KernelMode outside the System process.
    pub const USER_HANDLE_AS_KERNEL_MODE: u64 = 0xF6;
    /// A kernel handle referenced as UserMode in the System process.
    pub const KERNEL_HANDLE_AS_USER_MODE: u64 = 0xF7;
    /// A spin lock acquired by the thread that already holds it.
    pub const RECURSIVE_SPIN_LOCK: u64 = 0x1000;
    /// DDI compliance (additional): QueuedSpinLockRelease and SpinLockRelease.
    pub const QUEUED_SPIN_LOCK_RELEASE: u64 = 0x40007;
    /// DDI compliance SpinLockRelease: KeReleaseSpinLock of a lock taken queued.
    pub const SPIN_LOCK_RELEASE_RULE: u64 = 0x4000B;
    /// A DDI called above the highest IRQL its documentation allows.
    pub const DDI_IRQL: u64 = 0x2001B;
}

/// Rule numbers (first parameter) under [`code::DRIVER_VERIFIER_IOMANAGER_VIOLATION`].
pub mod c9 {
    /// A dispatch routine returned at another IRQL than it was called at.
    pub const IRQL_CHANGED_BY_DISPATCH: u64 = 0x05;
    /// An IRP completed with STATUS_PENDING.
    pub const COMPLETED_WITH_PENDING_STATUS: u64 = 0x06;
    /// An IRP completed with its cancel routine still set.
    pub const COMPLETED_WITH_CANCEL_ROUTINE: u64 = 0x07;
    /// IoInitializeTimer on a device whose timer is already initialised.
    pub const TIMER_ALREADY_INITIALIZED: u64 = 0x0A;
    /// An IRP completed above DISPATCH_LEVEL.
    pub const COMPLETED_ABOVE_DISPATCH: u64 = 0x0E;
    /// A dispatch routine returned another status than the IRP was completed with.
    pub const RETURNED_STATUS_MISMATCH: u64 = 0x224;
    /// A dispatch routine returned an IRP neither completed nor pending.
    pub const NEITHER_COMPLETED_NOR_PENDING: u64 = 0x226;
    /// STATUS_PENDING returned without IoMarkIrpPending.
    pub const PENDING_NOT_MARKED: u64 = 0x23D;
    /// IoMarkIrpPending, but the routine returned another status.
    pub const MARKED_BUT_NOT_PENDING: u64 = 0x23E;
    /// IoDeleteDevice of a device already deleted.
    pub const DEVICE_DELETED_TWICE: u64 = 0x240;
    /// `IoStatus.Information` larger than the buffer.
    pub const INFORMATION_TOO_LARGE: u64 = 0x312;
}

/// Rule numbers (first parameter) under [`code::WORKER_INVALID`].
pub mod e4 {
    /// A work item queued again while still queued.
    pub const ACTIVE_ITEM_QUEUED: u64 = 0x1;
    /// A queued work item freed.
    pub const QUEUED_IO_ITEM_FREED: u64 = 0x2;
    /// IoQueueWorkItem with a NULL routine.
    pub const INVALID_ROUTINE: u64 = 0x7;
}

/// Resource kinds (first parameter) under [`code::DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS`]
/// and ntsim's own unload rules.
pub mod unload {
    /// A work item queued or running.
    pub const WORK_ITEM: u64 = 1;
    /// A system thread still running.
    pub const SYSTEM_THREAD: u64 = 2;
    /// A device object not deleted.
    pub const DEVICE_OBJECT: u64 = 3;
    /// A symbolic link not deleted.
    pub const SYMBOLIC_LINK: u64 = 4;
    /// An object reference the driver took and did not drop, or a handle it did not close.
    pub const OBJECT_REFERENCE: u64 = 5;
    /// An interrupt still connected.
    pub const INTERRUPT: u64 = 6;
    /// An MmMapIoSpace mapping not unmapped.
    pub const IO_SPACE_MAPPING: u64 = 7;
    /// A registry key handle not closed.
    pub const REGISTRY_KEY: u64 = 8;
    /// A controller object not deleted.
    pub const CONTROLLER_OBJECT: u64 = 10;
    /// A resource claim not released.
    pub const RESOURCE_CLAIM: u64 = 11;
}

/// ntsim's own rules (first parameter) under [`code::NTSIM_RULE`].
pub mod ntsim_rule {
    /// IoDeleteDevice while a symbolic link still points at the device.
    pub const LINK_TO_DELETED_DEVICE: u64 = 1;
    /// A handle the kernel call cannot find; reserved: no check raises it.
    pub const HANDLE_NOT_FOUND: u64 = 2;
    /// A driver routine returned holding a spin lock; reserved: no check raises it (such a return is 0x0A).
    pub const SPIN_LOCK_HELD_AT_RETURN: u64 = 3;
    /// A kernel object that is not what the call expects (a bad work item, interrupt).
    pub const BAD_OBJECT: u64 = 4;
    /// A kernel export called from a thread ntsim did not create.
    pub const KERNEL_CALL_OFF_MACHINE: u64 = 5;
}
