//! The exploration finds real bugs: each `stagedrv_mutant` build re-introduces a
//! classic race in the driver, and the exploration must catch it with the expected
//! verdict. Built and run by tests/mutants.sh (one build per mutant):
//!
//! - `complete_after_null`: the dequeue helper completes an IRP even though
//!   IoSetCancelRoutine(NULL) returned NULL (the cancel routine owns it) — the IRP is
//!   completed twice, 0x44 MULTIPLE_IRP_COMPLETE_REQUESTS, or the cancel routine runs
//!   after the handle was closed and faults on its freed context (special pool: 0xD5,
//!   0xD1 at DISPATCH_LEVEL);
//! - `skip_cancel_recheck`: the read path does not re-check `Irp->Cancel` after setting
//!   its cancel routine, so a read cancelled while being queued stays queued: 0xC4/0x135,
//!   a cancelled IRP not completed in time;
//! - `no_dpc_flush`: Unload skips KeFlushQueuedDpcs, so a timer DPC queued before
//!   KeCancelTimer survives the unload — 0xC7 TIMER_OR_DPC_INVALID: /1 when the device
//!   extension holding the queued KDPC is freed, /2 when the image goes with the DPC
//!   routine still due (or its routine touches freed memory: 0xD5/0xD1);
//! - `link_after_complete`: the completion chain reads an IRP's next link after
//!   completing it. The IRP is freed by its completion APC (0xD5
//!   DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL), or the APC's KAPC already overwrote the
//!   link with NULL and the rest of the chain is never completed (a hang, or 0xC4/0x135
//!   for cancelled reads);
//! - `disconnect_before_dpc_flush`: stage 1 calls IoDisconnectInterrupt before removing
//!   and flushing the ISR's DPC (the old order), so a DPC already past its stopping
//!   check synchronizes with the freed interrupt object — 0x50 (the hardware scenario);
//! - `no_work_item_wait`: Unload does not wait for the statistics work item, which
//!   Windows leaves queued when it calls DriverUnload, and frees it — 0xE4
//!   WORKER_INVALID (a queued I/O work item freed), or, when the item was running
//!   rather than queued at that moment, 0xD5 (its routine touches the ring Unload
//!   freed under it);
//! - `stop_timer_in_routine`: the watchdog's IoTimer routine calls IoStopTimer, which
//!   spins on the IopTimerLock the routine runs under — 0x133 DPC_WATCHDOG_VIOLATION.
#![cfg(any(
    stagedrv_mutant = "complete_after_null",
    stagedrv_mutant = "skip_cancel_recheck",
    stagedrv_mutant = "no_dpc_flush",
    stagedrv_mutant = "disconnect_before_dpc_flush",
    stagedrv_mutant = "link_after_complete",
    stagedrv_mutant = "no_work_item_wait",
    stagedrv_mutant = "stop_timer_in_routine"
))]

mod common;

use common::scenario::{config, scenario};
use ntsim::Mode;

/// The scenario that exercises the mutant's code.
fn run(mode: Mode) -> Result<(), ntsim::Failure> {
    if cfg!(stagedrv_mutant = "disconnect_before_dpc_flush") {
        common::interrupts::interrupts_during_unload(config(mode))
    } else {
        scenario(mode)
    }
}

fn first_failure() -> (u64, String) {
    for seed in 0..2000 {
        for mode in [Mode::Seeded(seed), Mode::Pct { seed, depth: 3 }] {
            if let Err(error) = run(mode) {
                return (seed, error.to_string());
            }
        }
    }
    panic!("the exploration did not catch the re-introduced bug in 2000 seeds per mode");
}

#[test]
fn exploration_catches_the_reintroduced_bug() {
    let (seed, error) = first_failure();
    // A touch of freed memory is 0xD5 (special pool) below DISPATCH_LEVEL, 0xD1 at it,
    // 0x50 through a pointer that was never pool.
    let bad_access =
        ["DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL", "DRIVER_IRQL_NOT_LESS_OR_EQUAL", "PAGE_FAULT_IN_NONPAGED_AREA"];
    let expected: &[&str] = if cfg!(stagedrv_mutant = "complete_after_null") {
        &["MULTIPLE_IRP_COMPLETE_REQUESTS", bad_access[0], bad_access[1], bad_access[2]]
    } else if cfg!(stagedrv_mutant = "no_dpc_flush") {
        &["TIMER_OR_DPC_INVALID", bad_access[0], bad_access[1], bad_access[2]]
    } else if cfg!(stagedrv_mutant = "disconnect_before_dpc_flush") {
        &["which IoDisconnectInterrupt freed"]
    } else if cfg!(stagedrv_mutant = "link_after_complete") {
        &[
            "DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL",
            "DRIVER_IRQL_NOT_LESS_OR_EQUAL",
            "hang",
            "never completed",
            "was cancelled",
        ]
    } else if cfg!(stagedrv_mutant = "no_work_item_wait") {
        &["WORKER_INVALID", "DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL"]
    } else if cfg!(stagedrv_mutant = "stop_timer_in_routine") {
        &["DPC_WATCHDOG_VIOLATION"]
    } else {
        &["was cancelled"]
    };
    println!("caught at seed {seed}: {}", error.lines().next().unwrap_or_default());
    assert!(expected.iter().any(|e| error.contains(e)), "seed {seed}: expected one of {expected:?}, got: {error}");
}
