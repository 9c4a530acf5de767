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
    /// False for Verifier's non-fatal I/O errors ("WDM DRIVER ERROR" 0x23D, 0x23E,
    /// 0x312): recorded and failing the verdict, but the machine keeps running.
    pub fatal: bool,
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
            fatal: true,
        }
    }

    /// A report that does not stop the machine (see [`Violation::fatal`]).
    pub(crate) fn non_fatal(mut self) -> Self {
        self.fatal = false;
        self
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

/// Bug-check codes ntsim reports. Each one's page in Microsoft's bug-check reference
/// (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0x..) is named.
pub mod code {
    /// "Bug Check 0xA IRQL_NOT_LESS_OR_EQUAL": P1 address, P2 IRQL, P3 0 read / 1 write / 8 execute, P4 instruction.
    pub const IRQL_NOT_LESS_OR_EQUAL: u32 = 0x0A;
    /// "Bug Check 0xC MAXIMUM_WAIT_OBJECTS_EXCEEDED".
    pub const MAXIMUM_WAIT_OBJECTS_EXCEEDED: u32 = 0x0C;
    /// "Bug Check 0x1E KMODE_EXCEPTION_NOT_HANDLED": P1 the exception code.
    pub const KMODE_EXCEPTION_NOT_HANDLED: u32 = 0x1E;
    /// "Bug Check 0x44 MULTIPLE_IRP_COMPLETE_REQUESTS": P1 the IRP.
    pub const MULTIPLE_IRP_COMPLETE_REQUESTS: u32 = 0x44;
    /// "Bug Check 0x50 PAGE_FAULT_IN_NONPAGED_AREA".
    pub const PAGE_FAULT_IN_NONPAGED_AREA: u32 = 0x50;
    /// "Bug Check 0xC1 SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION": P4 names the rule.
    pub const SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION: u32 = 0xC1;
    /// "Bug Check 0xC4 DRIVER_VERIFIER_DETECTED_VIOLATION": P1 names the rule ([`super::c4`]).
    pub const DRIVER_VERIFIER_DETECTED_VIOLATION: u32 = 0xC4;
    /// "Bug Check 0xC7 TIMER_OR_DPC_INVALID": P1 0 timer / 1 DPC object / 2 DPC routine
    /// found in the range P3..P4 being checked, P2 that object or routine.
    pub const TIMER_OR_DPC_INVALID: u32 = 0xC7;
    /// "Bug Check 0xC8 IRQL_UNEXPECTED_VALUE": P1 = (current IRQL << 16) |
    /// (expected IRQL << 8) | a value naming the site ([`super::c8`]); P2-P4 0 (the
    /// APC pointers are given only for sites 0 and 1, APC delivery).
    pub const IRQL_UNEXPECTED_VALUE: u32 = 0xC8;
    /// "Bug Check 0xC9 DRIVER_VERIFIER_IOMANAGER_VIOLATION": P1 names the rule ([`super::c9`]).
    pub const DRIVER_VERIFIER_IOMANAGER_VIOLATION: u32 = 0xC9;
    /// "Bug Check 0x11B DRIVER_RETURNED_HOLDING_CANCEL_LOCK".
    pub const DRIVER_RETURNED_HOLDING_CANCEL_LOCK: u32 = 0x11B;
    /// "Bug Check 0xC2 BAD_POOL_CALLER".
    pub const BAD_POOL_CALLER: u32 = 0xC2;
    /// "Bug Check 0x93 INVALID_KERNEL_HANDLE": P1 the handle, P2 1 (not a valid handle).
    pub const INVALID_KERNEL_HANDLE: u32 = 0x93;
    /// "Bug Check 0xE1 WORKER_THREAD_RETURNED_AT_BAD_IRQL": P1 the worker routine,
    /// P2 the IRQL it returned at, P3 its parameter, P4 the work item.
    pub const WORKER_THREAD_RETURNED_AT_BAD_IRQL: u32 = 0xE1;
    /// "Bug Check 0xE4 WORKER_INVALID": P1 names the rule ([`super::e4`]).
    pub const WORKER_INVALID: u32 = 0xE4;
    /// "Bug Check 0x133 DPC_WATCHDOG_VIOLATION".
    pub const DPC_WATCHDOG_VIOLATION: u32 = 0x133;
    /// ntsim's own rules, where Verifier has none: P1 names the rule ([`super::ntsim_rule`]).
    pub const NTSIM_RULE: u32 = 0x4E54_0000;
    /// ntsim's own unload checks: something of the driver's left behind that Windows
    /// does not bug-check for (a leak, a failed next load, an image that never
    /// unloads). P1 the kind ([`super::unload`]), P2 the object when there is one.
    pub const NTSIM_UNLOAD_LEAK: u32 = 0x4E54_00CE;
}

/// Rule numbers (first parameter) under [`code::DRIVER_VERIFIER_DETECTED_VIOLATION`],
/// with P2-P4 as the 0xC4 page documents them.
pub mod c4 {
    /// [current IRQL, pool type, 0].
    pub const ZERO_SIZE_ALLOCATION: u64 = 0x00;
    /// Paged allocation above APC_LEVEL: [current IRQL, pool type, size].
    pub const PAGED_ALLOCATION_IRQL: u64 = 0x01;
    /// Nonpaged allocation above DISPATCH_LEVEL: [current IRQL, pool type, size].
    pub const NONPAGED_ALLOCATION_IRQL: u64 = 0x02;
    /// [bad address, 0, 0].
    pub const FREE_UNKNOWN_POOL: u64 = 0x10;
    /// [current IRQL, pool type, address].
    pub const FREE_PAGED_POOL_IRQL: u64 = 0x11;
    /// Already freed: [reserved, pool header, header contents] (0x13 or 0x14).
    pub const DOUBLE_FREE: u64 = 0x14;
    /// KeRaiseIrql to a lower IRQL or above HIGH_LEVEL: [current IRQL, requested IRQL, 0].
    pub const RAISE_IRQL_INVALID: u64 = 0x30;
    /// KeLowerIrql to a higher IRQL (also a spin-lock release asked to return above
    /// DISPATCH_LEVEL): [current IRQL, requested IRQL, 0].
    pub const LOWER_IRQL_INVALID: u64 = 0x31;
    /// KeReleaseSpinLock at an IRQL other than DISPATCH_LEVEL: [current IRQL, lock, 0].
    pub const SPIN_LOCK_RELEASE_IRQL: u64 = 0x32;
    /// [object, new reference count (-1 dereference, 1 reference), 0].
    pub const REFERENCE_COUNT_BELOW_ZERO: u64 = 0x3F;
    /// KeAcquireSpinLockAtDpcLevel below DISPATCH_LEVEL: [current IRQL, lock, 0].
    pub const ACQUIRE_AT_DPC_LEVEL_IRQL: u64 = 0x40;
    /// KeReleaseSpinLockFromDpcLevel below DISPATCH_LEVEL: [current IRQL, lock, 0].
    pub const RELEASE_FROM_DPC_LEVEL_IRQL: u64 = 0x41;
    /// KeAcquireSpinLock above DISPATCH_LEVEL: [current IRQL, lock, 0].
    pub const SPIN_LOCK_ACQUIRE_ABOVE_DISPATCH: u64 = 0x42;
    /// Pool left at unload (Pool Tracking): [driver name, reserved, allocations].
    pub const POOL_LEAK_AT_UNLOAD: u64 = 0x62;
    /// MmUnmapIoSpace above APC_LEVEL: [current IRQL, address, bytes].
    pub const UNMAP_IO_SPACE_IRQL: u64 = 0x7B;
    /// KeSetEvent above DISPATCH_LEVEL: [current IRQL, event, 0].
    pub const SET_EVENT_IRQL: u64 = 0x80;
    /// An ISR returned at another IRQL: [ISR, IRQL before, IRQL after] (0xC4's reference
    /// lists them in this order: the ISR's address, the IRQL before it ran, after).
    pub const ISR_CHANGED_IRQL: u64 = 0x111;
    /// Waits: [address of the IRQL value, object, address of the timeout].
    /// Above DISPATCH_LEVEL.
    pub const WAIT_ABOVE_DISPATCH: u64 = 0x120;
    /// At DISPATCH_LEVEL with a NULL Timeout (an infinite wait).
    pub const WAIT_AT_DISPATCH_INFINITE: u64 = 0x121;
    /// At DISPATCH_LEVEL with a non-zero Timeout.
    pub const WAIT_AT_DISPATCH_WITH_TIMEOUT: u64 = 0x122;
    /// A cancelled IRP not completed in time: [IRP, milliseconds allowed, 0].
    pub const SLOW_CANCEL: u64 = 0x135;
    /// [address of the NULL handle (0), object type, reserved].
    pub const NULL_HANDLE: u64 = 0xF5;
    /// [handle, current process, address in the driver].
    pub const USER_HANDLE_AS_KERNEL_MODE: u64 = 0xF6;
    /// [handle, object type, access mode].
    pub const KERNEL_HANDLE_AS_USER_MODE: u64 = 0xF7;
    /// Deadlock detection, self-deadlock: [lock, reserved, reserved].
    pub const RECURSIVE_SPIN_LOCK: u64 = 0x1000;
    /// Deadlock detection, release by the wrong thread: [lock, owner thread, current thread].
    pub const RELEASE_BY_NON_OWNER: u64 = 0x1004;
    /// DDI compliance rules: [rule text, rule state, supplemental state]; ntsim gives
    /// the text (a NUL-terminated string naming the rule) and 0, 0.
    /// QueuedSpinLockRelease.
    pub const QUEUED_SPIN_LOCK_RELEASE: u64 = 0x40007;
    /// SpinlockRelease.
    pub const SPIN_LOCK_RELEASE_RULE: u64 = 0x4000B;
    /// IrqlIoPassive1 (IoCreateDevice).
    pub const IRQL_IO_PASSIVE1: u64 = 0x2000A;
    /// IrqlIoPassive2 (IoConnectInterrupt, IoCreateController).
    pub const IRQL_IO_PASSIVE2: u64 = 0x2000B;
    /// IrqlIoPassive4 (IoCreateSymbolicLink, IoDeleteSymbolicLink, IoDeleteController,
    /// IoDisconnectInterrupt).
    pub const IRQL_IO_PASSIVE4: u64 = 0x2000D;
    /// IrqlIoPassive5 (IoInitializeTimer).
    pub const IRQL_IO_PASSIVE5: u64 = 0x2000E;
    /// IrqlKeDispatchLte (KeCancelTimer, KeClearEvent, KeReadStateEvent/Timer,
    /// KeResetEvent, KeSetTimer(Ex)).
    pub const IRQL_KE_DISPATCH_LTE: u64 = 0x20011;
    /// IrqlObPassive (ObReferenceObjectByHandle).
    pub const IRQL_OB_PASSIVE: u64 = 0x2001B;
    /// IrqlPsPassive (PsCreateSystemThread, PsTerminateSystemThread).
    pub const IRQL_PS_PASSIVE: u64 = 0x2001C;
    /// IrqlZwPassive (ZwClose and the Zw registry routines).
    pub const IRQL_ZW_PASSIVE: u64 = 0x2001F;
}

/// Sites (the low byte of P1) of [`code::IRQL_UNEXPECTED_VALUE`]. Windows does not
/// document its values beyond 0 and 1 (APC delivery); these are ntsim's.
pub mod c8 {
    /// A DPC routine returned at another IRQL than DISPATCH_LEVEL.
    pub const DPC_ROUTINE: u64 = 2;
    /// An IoTimer routine returned at another IRQL than DISPATCH_LEVEL.
    pub const IO_TIMER_ROUTINE: u64 = 3;
    /// A cancel routine returned at another IRQL than the one IoCancelIrp was called at
    /// (`Irp->CancelIrql`, which releasing the cancel spin lock restores).
    pub const CANCEL_ROUTINE: u64 = 4;
}

/// Rule numbers (first parameter) under [`code::DRIVER_VERIFIER_IOMANAGER_VIOLATION`]
/// (the 0xC9 page). The bug checks proper (below 0x200) have their own layouts; the
/// "WDM DRIVER ERROR" codes (0x200 and up) are [code, address in the driver, IRP,
/// device object], and some of those are non-fatal.
pub mod c9 {
    /// A dispatch routine returned at another IRQL than it was called at: [device object, IRQL before, IRQL after].
    pub const IRQL_CHANGED_BY_DISPATCH: u64 = 0x05;
    /// An IRP completed with STATUS_PENDING: [IRP status, IRP, 0].
    pub const COMPLETED_WITH_PENDING_STATUS: u64 = 0x06;
    /// An IRP completed with its cancel routine still set: [cancel routine, IRP, 0].
    pub const COMPLETED_WITH_CANCEL_ROUTINE: u64 = 0x07;
    /// IoInitializeTimer on a device whose timer is already initialised: [device object, 0, 0].
    pub const TIMER_ALREADY_INITIALIZED: u64 = 0x0A;
    /// An IRP completed above DISPATCH_LEVEL: [current IRQL, IRP, 0].
    pub const COMPLETED_ABOVE_DISPATCH: u64 = 0x0E;
    /// A dispatch routine returned another status than the IRP was completed with. Fatal.
    pub const RETURNED_STATUS_MISMATCH: u64 = 0x224;
    /// A dispatch routine returned an IRP neither completed nor pending. Fatal.
    pub const NEITHER_COMPLETED_NOR_PENDING: u64 = 0x226;
    /// STATUS_PENDING returned without IoMarkIrpPending. Non-fatal.
    pub const PENDING_NOT_MARKED: u64 = 0x23D;
    /// IoMarkIrpPending, but the routine returned another status. Non-fatal.
    pub const MARKED_BUT_NOT_PENDING: u64 = 0x23E;
    /// IoDeleteDevice of a device already deleted. Fatal.
    pub const DEVICE_DELETED_TWICE: u64 = 0x240;
    /// `IoStatus.Information` larger than the buffer. Non-fatal.
    pub const INFORMATION_TOO_LARGE: u64 = 0x312;
}

/// Rules (fourth parameter) under [`code::SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION`]:
/// [address freed, address of the corrupted byte, reserved, rule].
pub mod c1 {
    /// Bytes before the block, in its page, were overwritten.
    pub const BYTES_BEFORE_CORRUPTED: u64 = 0x23;
    /// Bytes after the end of the block were overwritten.
    pub const BYTES_AFTER_CORRUPTED: u64 = 0x24;
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

/// Kinds (first parameter) under [`code::NTSIM_UNLOAD_LEAK`].
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
    /// A KTIMER set, or a KDPC queued or running, whose routine is not the driver's.
    pub const TIMER_OR_DPC: u64 = 12;
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
    /// A DDI called above its documented IRQL where Verifier has no rule for it:
    /// [6, IRQL, highest IRQL allowed, 0].
    pub const DDI_IRQL: u64 = 6;
}

/// The text a DDI compliance rule's P2 points to (NUL-terminated, static).
pub(crate) fn rule_text(rule: u64) -> u64 {
    let text: &'static [u8] = match rule {
        c4::QUEUED_SPIN_LOCK_RELEASE => {
            b"QueuedSpinLockRelease: KeReleaseInStackQueuedSpinLock on a lock not taken queued\0"
        }
        c4::SPIN_LOCK_RELEASE_RULE => b"SpinlockRelease: KeReleaseSpinLock on a lock taken queued\0",
        c4::IRQL_IO_PASSIVE1 => b"IrqlIoPassive1: called at IRQL > PASSIVE_LEVEL\0",
        c4::IRQL_IO_PASSIVE2 => b"IrqlIoPassive2: called at IRQL > PASSIVE_LEVEL\0",
        c4::IRQL_IO_PASSIVE4 => b"IrqlIoPassive4: called at IRQL > PASSIVE_LEVEL\0",
        c4::IRQL_IO_PASSIVE5 => b"IrqlIoPassive5: called at IRQL > PASSIVE_LEVEL\0",
        c4::IRQL_KE_DISPATCH_LTE => b"IrqlKeDispatchLte: called at IRQL > DISPATCH_LEVEL\0",
        c4::IRQL_OB_PASSIVE => b"IrqlObPassive: called at IRQL > PASSIVE_LEVEL\0",
        c4::IRQL_PS_PASSIVE => b"IrqlPsPassive: called at IRQL > PASSIVE_LEVEL\0",
        c4::IRQL_ZW_PASSIVE => b"IrqlZwPassive: called at IRQL > PASSIVE_LEVEL\0",
        _ => return 0,
    };
    text.as_ptr() as u64
}
