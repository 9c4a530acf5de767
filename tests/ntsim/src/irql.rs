//! IRQL levels and the one table of DDI → highest IRQL its documentation allows.

use crate::checker::{Violation, c4, code, ntsim_rule, rule_text};
use crate::machine::{Ctx, KResult};

/// Threads, DriverEntry, dispatch routines of top-level requests.
pub const PASSIVE_LEVEL: u8 = 0;
/// APC_LEVEL: completion APCs; paged memory is still accessible.
pub const APC_LEVEL: u8 = 1;
/// DPCs, spin locks held, IoTimer routines: no paging, no waiting.
pub const DISPATCH_LEVEL: u8 = 2;
/// The device IRQL ntsim's virtual interrupt lines use.
pub const DEVICE_IRQL: u8 = 5;
/// The highest IRQL.
pub const HIGH_LEVEL: u8 = 15;

/// The highest IRQL at which `api` may be called, from Microsoft's DDI reference.
/// Every export ntsim implements is listed (a unit test checks it).
pub fn max_irql(api: &str) -> Option<u8> {
    Some(match api {
        // Object manager, registry, devices, names, threads: PASSIVE_LEVEL.
        "IoCreateDevice"
        | "IoDeleteDevice"
        | "IoCreateSymbolicLink"
        | "IoDeleteSymbolicLink"
        | "IoInitializeTimer"
        | "PsCreateSystemThread"
        | "PsTerminateSystemThread"
        | "ZwClose"
        | "ZwOpenKey"
        | "ZwCreateKey"
        | "ZwQueryValueKey"
        | "ZwSetValueKey"
        | "ZwDeleteKey"
        | "ZwSetSecurityObject"
        | "ObOpenObjectByPointer"
        | "ObReferenceObjectByHandle"
        | "ZwWaitForSingleObject"
        | "KeFlushQueuedDpcs"
        | "IoConnectInterrupt"
        | "IoDisconnectInterrupt"
        | "IoReportResourceForDetection"
        | "IoCreateController"
        | "IoDeleteController"
        | "IoAllocateDriverObjectExtension"
        | "RtlCreateSecurityDescriptor"
        | "RtlCreateAcl"
        | "RtlAddAccessAllowedAce"
        | "RtlLengthSid"
        | "RtlInitializeSid"
        | "RtlSubAuthoritySid"
        | "RtlLengthRequiredSid"
        | "RtlSetDaclSecurityDescriptor"
        | "MmGetSystemRoutineAddress"
        | "HalGetInterruptVector" => PASSIVE_LEVEL,
        // KeDelayExecutionThread: at most APC_LEVEL.
        "KeDelayExecutionThread" => APC_LEVEL,
        // Up to DISPATCH_LEVEL.
        "ExAllocatePool2"
        | "ExAllocatePoolWithTag"
        | "ExFreePool"
        | "ExFreePoolWithTag"
        | "IofCompleteRequest"
        | "IoAcquireCancelSpinLock"
        | "IoReleaseCancelSpinLock"
        | "IoAllocateWorkItem"
        | "IoQueueWorkItem"
        | "IoFreeWorkItem"
        | "IoStartTimer"
        | "IoStopTimer"
        | "KeSetTimerEx"
        | "KeSetTimer"
        | "KeCancelTimer"
        | "KeReadStateTimer"
        | "KeSetEvent"
        | "KeResetEvent"
        | "KeClearEvent"
        | "KeReleaseSemaphore"
        | "KeAcquireSpinLockRaiseToDpc"
        | "KeReleaseSpinLock"
        | "KeAcquireSpinLockAtDpcLevel"
        | "KeReleaseSpinLockFromDpcLevel"
        | "KeAcquireInStackQueuedSpinLock"
        | "KeReleaseInStackQueuedSpinLock"
        | "ObfDereferenceObject"
        | "ObfReferenceObject"
        | "IoGetDriverObjectExtension"
        | "MmMapIoSpace"
        | "KeWaitForSingleObject"
        | "KeWaitForMultipleObjects"
        | "KeReadStateEvent"
        | "MmUnmapIoSpace"
        | "HalTranslateBusAddress" => DISPATCH_LEVEL,
        // Any IRQL.
        "KeInitializeDpc"
        | "KeInsertQueueDpc"
        | "KeInitializeTimerEx"
        | "KeInitializeTimer"
        | "KeInitializeEvent"
        | "KeInitializeSemaphore"
        | "KeRemoveQueueDpc"
        | "KeQueryPerformanceCounter"
        | "KeQueryTimeIncrement"
        | "KeQuerySystemTimePrecise"
        | "KeQueryInterruptTimePrecise"
        | "KeQueryUnbiasedInterruptTime"
        | "KeQuerySystemTime"
        | "KeQueryInterruptTime"
        | "KeQueryTickCount"
        | "KeBugCheckEx"
        | "DbgPrint"
        | "DbgPrintEx"
        | "KeSynchronizeExecution"
        | "KeGetCurrentIrql"
        | "KfRaiseIrql"
        | "KeLowerIrql"
        | "IoSetCancelRoutine"
        | "Irp->Cancel"
        | "KeStallExecutionProcessor"
        | "KeGetCurrentProcessorNumberEx" => HIGH_LEVEL,
        _ => return None,
    })
}

/// DDIs whose own check reports Verifier's specific rule for a call above their limit
/// (spin-lock acquire 0x42, wait 0x120, pool 0x02, KeSetEvent 0x80, MmUnmapIoSpace
/// 0x7B, IoCompleteRequest 0xC9/0x0E); the generic rule would hide it.
fn has_own_irql_rule(api: &str) -> bool {
    matches!(
        api,
        "KeAcquireSpinLockRaiseToDpc"
            | "KeAcquireInStackQueuedSpinLock"
            | "IoAcquireCancelSpinLock"
            | "KeWaitForSingleObject"
            | "KeWaitForMultipleObjects"
            | "ExAllocatePool2"
            | "KeSetEvent"
            | "MmUnmapIoSpace"
            | "IofCompleteRequest"
    )
}

/// The DDI compliance rule (0xC4 P1) that covers `api`'s IRQL, from each rule's page
/// in Microsoft's "DDI compliance rules" reference (IrqlIoPassive1..5, IrqlKeDispatchLte,
/// IrqlObPassive, IrqlPsPassive, IrqlZwPassive). None: no Verifier rule names it.
fn ddi_rule(api: &str) -> Option<u64> {
    Some(match api {
        "IoCreateDevice" => c4::IRQL_IO_PASSIVE1,
        "IoConnectInterrupt" | "IoCreateController" => c4::IRQL_IO_PASSIVE2,
        "IoCreateSymbolicLink" | "IoDeleteSymbolicLink" | "IoDeleteController" | "IoDisconnectInterrupt" => {
            c4::IRQL_IO_PASSIVE4
        }
        "IoInitializeTimer" => c4::IRQL_IO_PASSIVE5,
        "KeCancelTimer" | "KeClearEvent" | "KeReadStateEvent" | "KeReadStateTimer" | "KeResetEvent" | "KeSetTimer"
        | "KeSetTimerEx" => c4::IRQL_KE_DISPATCH_LTE,
        "ObReferenceObjectByHandle" => c4::IRQL_OB_PASSIVE,
        "PsCreateSystemThread" | "PsTerminateSystemThread" => c4::IRQL_PS_PASSIVE,
        "ZwClose" | "ZwCreateKey" | "ZwDeleteKey" | "ZwOpenKey" | "ZwQueryValueKey" | "ZwSetValueKey" => {
            c4::IRQL_ZW_PASSIVE
        }
        _ => return None,
    })
}

/// Checks the caller's IRQL against `max_irql` for the current API: Verifier's DDI
/// compliance rule where there is one ([rule, rule text, 0, 0]), else ntsim's own rule
/// ([6, IRQL, highest allowed, 0] under 0x4E540000).
pub(crate) fn check_ddi(ctx: &mut Ctx<'_>) -> KResult<()> {
    let irql = ctx.irql();
    let Some(max) = max_irql(ctx.api) else { return Ok(()) };
    if irql > max && !has_own_irql_rule(ctx.api) {
        let api = ctx.api;
        let text = format!("{api} was called at IRQL {irql}; its documentation allows at most IRQL {max}.");
        let v = match ddi_rule(api) {
            Some(rule) => Violation::new(
                code::DRIVER_VERIFIER_DETECTED_VIOLATION,
                [rule, rule_text(rule), 0, 0],
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                text,
            ),
            None => Violation::new(
                code::NTSIM_RULE,
                [ntsim_rule::DDI_IRQL, u64::from(irql), u64::from(max), 0],
                "NTSIM_DDI_IRQL",
                text,
            ),
        };
        return Err(ctx.violation(v));
    }
    Ok(())
}
