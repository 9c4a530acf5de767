//! Schedule exploration: one scenario where reads, CancelIo/CancelIoEx, CloseHandle
//! and cleanup, thread and process exit, timer DPCs on two processors, the work item,
//! the consumer thread, the watchdog and Unload all overlap, run under many seeds of
//! ntsim's serial scheduler (uniform random and PCT). Every kernel call is a
//! scheduling point. Each schedule must end with zero violations, every read
//! completed exactly once, and a clean unload. A second scenario does the same for the
//! hardware profile: interrupts racing Unload. The scenarios are in `tests/common`.
//!
//! `STAGEDRV_SCHEDULES=N` (or ntsim's `NTSIM_SCHEDULES`) sets how many seeds each mode
//! explores (default 1000); a failure prints the `NTSIM_SEED=S` command that replays it.

mod common;

use common::scenario::{config, scenario, scenario_on};
use ntsim::{Config, Hostile, check_free, check_pct, check_random};

/// Seeds per mode: `STAGEDRV_SCHEDULES` (what tests/all.sh sets), else ntsim's
/// `NTSIM_SCHEDULES`, else 1000.
fn schedules() -> u64 {
    std::env::var("STAGEDRV_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| ntsim::check::schedules(1000))
}

#[test]
fn random_schedules() {
    check_random(0..schedules(), scenario);
}

#[test]
fn pct_schedules() {
    check_pct(3, 0..schedules(), scenario);
}

/// ntsim's hostile options on, for a quarter of the seeds: IRP_MJ_CLOSE from inside
/// IoCompleteRequest, the RegistryPath buffer poisoned after DriverEntry, DPCs
/// re-queued onto another CPU, odd routine addresses; and time passing at scheduling
/// points, so timer DPCs and the watchdog fire in the middle of requests.
#[test]
fn hostile_schedules() {
    let hostile = Hostile {
        close_inside_completion: true,
        poison_registry_path: true,
        dpc_on_two_cpus: true,
        odd_routine_addresses: true,
    };
    let time_passes = Some(ntsim::TimePasses { max_step: 20_000, one_in: 4 });
    check_random(0..schedules() / 4, |mode| {
        scenario_on(Config { hostile: hostile.clone(), time_passes, ..config(mode) })
    });
}

/// The hardware profile: device interrupts on both processors race reads, closes and
/// Unload, whose stage 1 must not free the interrupt object while the ISR's DPC can
/// still use it. A quarter of the seeds again with the ISR's DPC re-queued onto the
/// other CPU.
#[test]
fn interrupts_during_unload() {
    use common::interrupts::interrupts_during_unload as scenario;
    let seeds = 0..schedules();
    check_random(seeds.clone(), |mode| scenario(config(mode)));
    check_pct(3, seeds.clone(), |mode| scenario(config(mode)));
    let hostile = Hostile { dpc_on_two_cpus: true, ..Hostile::default() };
    check_random(seeds.step_by(4), |mode| scenario(Config { hostile: hostile.clone(), ..config(mode) }));
}

/// The same scenario with the threads running for real, several times.
#[test]
fn free_running_threads() {
    check_free(20, scenario);
}
