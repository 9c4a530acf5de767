//! Schedule exploration: one scenario where reads, CancelIo/CancelIoEx, CloseHandle
//! and cleanup, thread and process exit, timer DPCs on two processors, the work item,
//! the consumer thread, the watchdog and Unload all overlap, run under many seeds of
//! ntsim's serial scheduler (uniform random and PCT). Every kernel call is a
//! scheduling point. Each schedule must end with zero violations, every read
//! completed exactly once, and a clean unload. A second scenario does the same for the
//! hardware profile: interrupts racing Unload.
//!
//! `STAGEDRV_SCHEDULES=N` sets how many schedules each mode explores (CI default: 1000
//! each); `STAGEDRV_SEED=S` replays one seed (both modes).

mod common;

use common::scenario::scenario;
use ntsim::Mode;

fn schedules() -> u64 {
    std::env::var("STAGEDRV_SCHEDULES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

fn explore(make_mode: impl Fn(u64) -> Mode) {
    if let Some(seed) = std::env::var("STAGEDRV_SEED").ok().and_then(|v| v.parse().ok()) {
        scenario(make_mode(seed)).unwrap_or_else(|e| panic!("{:?}: {e}", make_mode(seed)));
        return;
    }
    for seed in 0..schedules() {
        if let Err(error) = scenario(make_mode(seed)) {
            panic!(
                "schedule {:?} failed; replay with STAGEDRV_SEED={seed} cargo test --test explore\n{error}",
                make_mode(seed)
            );
        }
    }
}

#[test]
fn random_schedules() {
    explore(Mode::Seeded);
}

#[test]
fn pct_schedules() {
    explore(|seed| Mode::Pct { seed, depth: 3 });
}

/// ntsim's hostile options on: IRP_MJ_CLOSE from inside IoCompleteRequest, the
/// RegistryPath buffer poisoned after DriverEntry, DPCs re-queued onto another CPU,
/// odd routine addresses; and time passing at scheduling points, so timer DPCs and the
/// watchdog fire in the middle of requests.
#[test]
fn hostile_schedules() {
    let hostile = ntsim::Hostile {
        close_inside_completion: true,
        poison_registry_path: true,
        dpc_on_two_cpus: true,
        odd_routine_addresses: true,
    };
    for seed in 0..schedules() / 4 {
        let time_passes = Some(ntsim::TimePasses { max_step: 20_000, one_in: 4 });
        let config =
            ntsim::Config { hostile: hostile.clone(), time_passes, ..common::scenario::config(Mode::Seeded(seed)) };
        if let Err(error) = common::scenario::scenario_on(config) {
            panic!("hostile schedule {seed} failed:\n{error}");
        }
    }
}

/// The hardware profile: device interrupts on both processors race reads, closes and
/// Unload, whose stage 1 must not free the interrupt object while the ISR's DPC can
/// still use it.
#[test]
fn interrupts_during_unload() {
    use common::interrupts::interrupts_during_unload;
    let only = std::env::var("STAGEDRV_SEED").ok().and_then(|v| v.parse().ok());
    for seed in only.map_or(0..schedules(), |s| s..s + 1) {
        let hostile = ntsim::Hostile { dpc_on_two_cpus: true, ..ntsim::Hostile::default() };
        let plain = [Mode::Seeded(seed), Mode::Pct { seed, depth: 3 }].map(common::scenario::config);
        // A quarter of the seeds again with the ISR's DPC re-queued onto the other CPU.
        let hostile =
            (seed % 4 == 0).then(|| ntsim::Config { hostile, ..common::scenario::config(Mode::Seeded(seed)) });
        for config in plain.into_iter().chain(hostile) {
            let what = format!("{:?}{}", config.mode, if config.hostile.dpc_on_two_cpus { " (hostile)" } else { "" });
            if let Err(error) = interrupts_during_unload(config) {
                panic!("schedule {what} failed; replay with STAGEDRV_SEED={seed} cargo test --test explore\n{error}");
            }
        }
    }
}

/// The same scenario with the threads running for real, several times.
#[test]
fn free_running_threads() {
    for _ in 0..20 {
        scenario(Mode::Free).unwrap();
    }
}
