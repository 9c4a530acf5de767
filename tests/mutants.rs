//! The exploration finds real bugs: each `stagedrv_mutant` build re-introduces a
//! classic race in the driver, and the exploration must catch it with the expected
//! verdict. Built and run by tests/mutants.sh (one build per mutant):
//!
//! - `complete_after_null`: the dequeue helper completes an IRP even though
//!   IoSetCancelRoutine(NULL) returned NULL (the cancel routine owns it) — the IRP is
//!   completed twice, 0x44 MULTIPLE_IRP_COMPLETE_REQUESTS, or the cancel routine runs
//!   after the handle was closed and faults on its freed context, 0x50;
//! - `skip_cancel_recheck`: the read path does not re-check `Irp->Cancel` after setting
//!   its cancel routine, so a read cancelled while being queued stays queued: 0xC4/0x135,
//!   a cancelled IRP not completed in time;
//! - `no_dpc_flush`: Unload skips KeFlushQueuedDpcs, so a timer DPC queued before
//!   KeCancelTimer survives the unload — 0xC7 TIMER_OR_DPC_INVALID;
//! - `no_work_item_wait`: Unload does not wait for the statistics work item, which
//!   Windows leaves queued when it calls DriverUnload, and frees it — 0xE4
//!   WORKER_INVALID (a queued I/O work item freed);
//! - `stop_timer_in_routine`: the watchdog's IoTimer routine calls IoStopTimer, which
//!   spins on the IopTimerLock the routine runs under — 0x133 DPC_WATCHDOG_VIOLATION.
#![cfg(any(
    stagedrv_mutant = "complete_after_null",
    stagedrv_mutant = "skip_cancel_recheck",
    stagedrv_mutant = "no_dpc_flush",
    stagedrv_mutant = "no_work_item_wait",
    stagedrv_mutant = "stop_timer_in_routine"
))]

mod common;

use common::scenario::scenario;
use ntsim::Mode;

fn first_failure() -> (u64, String) {
    for seed in 0..2000 {
        for mode in [Mode::Seeded(seed), Mode::Pct { seed, depth: 3 }] {
            if let Err(error) = scenario(mode) {
                return (seed, error);
            }
        }
    }
    panic!("the exploration did not catch the re-introduced bug in 2000 seeds per mode");
}

#[test]
fn exploration_catches_the_reintroduced_bug() {
    let (seed, error) = first_failure();
    let expected: &[&str] = if cfg!(stagedrv_mutant = "complete_after_null") {
        &["MULTIPLE_IRP_COMPLETE_REQUESTS", "PAGE_FAULT_IN_NONPAGED_AREA"]
    } else if cfg!(stagedrv_mutant = "no_dpc_flush") {
        &["TIMER_OR_DPC_INVALID", "PAGE_FAULT_IN_NONPAGED_AREA"]
    } else if cfg!(stagedrv_mutant = "no_work_item_wait") {
        &["WORKER_INVALID"]
    } else if cfg!(stagedrv_mutant = "stop_timer_in_routine") {
        &["DPC_WATCHDOG_VIOLATION"]
    } else {
        &["was cancelled"]
    };
    println!("caught at seed {seed}: {}", error.lines().next().unwrap_or_default());
    assert!(expected.iter().any(|e| error.contains(e)), "seed {seed}: expected one of {expected:?}, got: {error}");
}
