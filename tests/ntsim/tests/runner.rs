//! The exploration runner (`ntsim::check`) on a deliberately racy driver: a read that
//! finds another read waiting completes both, otherwise it waits. The racy version
//! looks at the waiting slot, makes kernel calls (DbgPrint: scheduling points), then
//! takes the slot, so two readers can both see the same waiting read and both complete
//! it: 0x44, or 0xD5 when the first completion's APC already freed the IRP. Only the
//! schedules that switch between the readers inside that window hit it. The runner
//! must find such a schedule and print it with its replay command, and that command
//! must reproduce it.
//!
//! PCT's priority-change points fall anywhere in the first 2000 scheduling steps, and
//! this scenario takes far fewer, so PCT needs a wider window (32 calls) to meet it
//! often; the random scheduler meets a window of one call in about half its schedules.

#![allow(clippy::doc_markdown, reason = "kernel names in docs")]

mod common;

use std::panic::{UnwindSafe, catch_unwind};
use std::process::Command;
use std::sync::atomic::Ordering;

use common::{PATH, State, complete, entry_with, load, mark_pending, print, state};
use ntsim::check::{Counterexample, explore, schedules};
use ntsim::wdk_sys::{
    IRP_MJ_READ, NTSTATUS, PCUNICODE_STRING, PDEVICE_OBJECT, PDRIVER_OBJECT, PIRP, STATUS_PENDING, STATUS_SUCCESS,
};
use ntsim::{Config, DriverState, Failure, Machine, Mode, Stopped, check_free, check_pct, check_random, replay};

/// What completing the waiting read twice is reported as.
const DOUBLE_COMPLETION: [&str; 2] = ["MULTIPLE_IRP_COMPLETE_REQUESTS", "DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL"];

/// Pairs reads: completes the waiting one with this one, or makes this one wait.
/// With `window` > 0 the slot is read, `window` kernel calls are made, then it is
/// taken (the race); with 0 it is swapped atomically (the fix).
///
/// # Safety
/// A dispatch routine of a device made by `common::setup`.
unsafe fn pair_reads(device: PDEVICE_OBJECT, irp: PIRP, window: usize) -> NTSTATUS {
    // SAFETY: the device's own state, which outlives the device.
    let s: *mut State = unsafe { state(device) };
    // SAFETY: as above; `pending` is only touched by this routine.
    let slot = unsafe { &(*s).pending };
    let waiting = if window == 0 {
        slot.swap(std::ptr::null_mut(), Ordering::SeqCst)
    } else {
        let seen = slot.load(Ordering::SeqCst);
        for _ in 0..window {
            print("read");
        }
        slot.store(std::ptr::null_mut(), Ordering::SeqCst);
        seen
    };
    if waiting.is_null() {
        // SAFETY: the IRP is ours until it is completed; marked before it is published.
        unsafe { mark_pending(irp) };
        slot.store(irp, Ordering::SeqCst);
        return STATUS_PENDING;
    }
    // SAFETY: the racy version may complete `waiting` a second time: that is the bug.
    unsafe {
        complete(waiting, STATUS_SUCCESS, 0);
        complete(irp, STATUS_SUCCESS, 0);
    }
    STATUS_SUCCESS
}

/// A DriverEntry whose read routine is [`pair_reads`] with `$window`.
macro_rules! pairing_driver {
    ($entry:ident, $read:ident, $window:expr) => {
        unsafe extern "C" fn $read(device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
            // SAFETY: forwarded from the I/O manager.
            unsafe { pair_reads(device, irp, $window) }
        }
        unsafe extern "C" fn $entry(driver: PDRIVER_OBJECT, _path: PCUNICODE_STRING) -> NTSTATUS {
            // SAFETY: DriverEntry's driver object.
            unsafe { entry_with(driver, &[(IRP_MJ_READ, Some($read))], None) }
        }
    };
}

pairing_driver!(entry_fixed, read_fixed, 0);
pairing_driver!(entry_racy, read_racy, 1);
pairing_driver!(entry_racy_wide, read_racy_wide, 32);

/// One read waits; two threads' reads race for it; a fourth pairs with whatever is
/// left. Every read must complete and the driver unload clean.
fn pairing(mode: Mode, entry: ntsim::DriverEntry) -> Result<(), Failure> {
    let machine = Machine::new(Config { mode, ..Config::default() });
    let driver = load(&machine, entry);
    let process = machine.new_process();
    let handle = process.open(PATH, true)?.map_err(|status| format!("open: {status:#x}"))?;
    let (t0, t1, t2) = (process.thread(0), process.thread(1), process.thread(2));
    let mut reads = vec![t0.post_read(handle, 4)];
    machine.run_until_idle();
    reads.extend([t1.post_read(handle, 4), t2.post_read(handle, 4)]);
    machine.run_until_idle();
    machine.verdict()?;
    reads.push(t0.post_read(handle, 4));
    machine.run_until_idle();
    machine.verdict()?;
    if let Some(n) = reads.iter().position(|read| read.completion().is_none()) {
        return Err(format!("read #{n} was never completed").into());
    }
    process.close(handle)?;
    if machine.stop_driver(driver)? != DriverState::Unloaded {
        return Err("the driver did not unload".into());
    }
    Ok(machine.verdict()?)
}

fn fixed(mode: Mode) -> Result<(), Failure> {
    pairing(mode, entry_fixed)
}

fn racy(mode: Mode) -> Result<(), Failure> {
    pairing(mode, entry_racy)
}

fn racy_wide(mode: Mode) -> Result<(), Failure> {
    pairing(mode, entry_racy_wide)
}

/// The message `explorer` panicked with, which must report the double completion.
fn found_by(explorer: impl FnOnce() -> u64 + UnwindSafe) -> String {
    let payload = catch_unwind(explorer).map(|ran| panic!("{ran} schedules passed")).unwrap_err();
    let text = payload.downcast_ref::<String>().cloned().expect("a formatted panic message");
    assert!(DOUBLE_COMPLETION.iter().any(|name| text.contains(name)), "{text}");
    assert!(text.contains("in Dispatch(IRP_MJ_READ)"), "{text}");
    text
}

/// What identifies a failure across runs: the bug check's code and name, where it
/// happened, and the kernel calls before it. (Its parameters and explanation hold
/// addresses, which differ from run to run.)
fn identity(found: &Counterexample) -> (u32, &'static str, String, String, Vec<String>) {
    let v = found.failure.violation().unwrap_or_else(|| panic!("not a bug check:\n{found}"));
    let calls = v.trace_tail.iter().map(|c| format!("{} {} {} {}", c.seq, c.api, c.thread, c.routine)).collect();
    (v.code, v.name, v.thread.clone(), v.routine.to_string(), calls)
}

/// The same, from a printed failure: the bug-check line up to its parameters, and
/// every line after the explanation up to the replay command.
fn printed_identity(text: &str) -> Vec<String> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with("bug check "));
    let first = lines.next().unwrap_or_else(|| panic!("no bug check in:\n{text}"));
    let head = first.split(" (").next().unwrap_or(first).to_owned();
    std::iter::once(head).chain(lines.skip(1).take_while(|l| !l.starts_with("replay it:")).map(str::to_owned)).collect()
}

#[test]
fn the_fixed_driver_passes_every_schedule() {
    assert_eq!(check_random(0..40, fixed), 40);
    assert_eq!(check_pct(3, 0..40, fixed), 40);
    assert_eq!(check_free(5, fixed), 5);
    replay(Mode::Pct { seed: 7, depth: 3 }, fixed);
}

/// The bug is schedule-dependent: both modes have schedules that pass and schedules
/// that fail, so finding it says something about the exploration.
#[test]
fn only_some_schedules_hit_the_race() {
    let random = (0..40).filter(|&seed| racy(Mode::Seeded(seed)).is_err()).count();
    assert!(0 < random && random < 40, "random: {random} of 40 schedules failed");
    let pct = (0..400).filter(|&seed| racy_wide(Mode::Pct { seed, depth: 3 }).is_err()).count();
    assert!(0 < pct && pct < 400, "PCT: {pct} of 400 schedules failed");
}

#[test]
fn check_random_finds_the_race() {
    let text = found_by(|| check_random(0..200, racy));
    assert!(text.contains("schedule Mode::Seeded("), "{text}");
}

#[test]
fn check_pct_finds_the_race() {
    let text = found_by(|| check_pct(3, 0..400, racy_wide));
    assert!(text.contains("schedule Mode::Pct {"), "{text}");
}

#[test]
fn replay_reproduces_the_counterexample() {
    let random: Vec<_> = (0..200).map(Mode::Seeded).collect();
    let pct: Vec<_> = (0..400).map(|seed| Mode::Pct { seed, depth: 3 }).collect();
    for (schedules, scenario) in [(random, racy as fn(Mode) -> Result<(), Failure>), (pct, racy_wide)] {
        let found = explore(schedules, scenario).expect_err("the race is found");
        assert!(DOUBLE_COMPLETION.contains(&identity(&found).1), "{found}");
        for _ in 0..3 {
            let again = explore([found.schedule], scenario).expect_err("the schedule fails again");
            assert_eq!((again.passed, identity(&again)), (0, identity(&found)), "{found}\nreplayed as\n{again}");
        }
        let text = found_by(|| {
            replay(found.schedule, scenario);
            0
        });
        assert!(text.contains(&format!("schedule Mode::{:?} failed", found.schedule)), "{text}");
    }
}

/// The failure kinds a scenario can return or raise, and how they read.
#[test]
fn failures_are_typed() {
    let found = explore([Mode::Seeded(1)], |_| Err::<(), _>("read #2 was never completed")).unwrap_err();
    assert!(matches!(&found.failure, Failure::Assertion(m) if m == "read #2 was never completed"));
    let found = explore([Mode::Seeded(1)], |_| Err::<(), _>(Stopped::Hang("the read never completes".into())));
    assert_eq!(found.unwrap_err().failure.to_string(), "hang: the read never completes");
    let found = explore([Mode::Seeded(4), Mode::Seeded(5)], |mode| {
        assert_ne!(mode, Mode::Seeded(5), "a check of the scenario's own");
        Ok::<(), Failure>(())
    })
    .unwrap_err();
    assert_eq!((found.schedule, found.passed), (Mode::Seeded(5), 1));
    assert!(matches!(&found.failure, Failure::Panic(m) if m.contains("a check of the scenario's own")), "{found}");
    let free = explore([Mode::Free], |_| Err::<(), _>("x")).unwrap_err();
    assert_eq!(free.seed(), None);
    assert!(free.to_string().contains("no schedule to replay"), "{free}");
}

/// `NTSIM_SCHEDULES` sets what [`schedules`] returns; a test that asks runs that many.
#[test]
fn schedule_count_from_the_environment() {
    let ran = check_random(0..schedules(12), fixed);
    println!("ran {ran}");
}

/// This test binary, run again on one test with `env`.
fn run_self(test: &str, env: &[(&str, &str)]) -> String {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command.args(["--exact", test, "--nocapture", "--test-threads=1"]);
    command.env_remove("NTSIM_SEED").env_remove("NTSIM_SCHEDULES").envs(env.iter().copied());
    let output = command.output().expect("run the test binary");
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// The printed command works: run alone, each finder prints its replay command, and
/// `NTSIM_SEED` from it replays exactly the failing schedule (the first and only one
/// run, with the same bug check). `NTSIM_SCHEDULES` sets the count a test asks for.
#[test]
fn the_printed_seed_replays_through_the_environment() {
    for (test, schedule) in [
        ("check_random_finds_the_race", "Seeded({seed})"),
        ("check_pct_finds_the_race", "Pct {{ seed: {seed}, depth: 3 }}"),
    ] {
        let first = run_self(test, &[]);
        assert!(first.contains(&format!("-p ntsim --test runner -- --exact {test}\n")), "{first}");
        let seed = first
            .split("replay it: NTSIM_SEED=")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("no replay command in:\n{first}"));
        let again = run_self(test, &[("NTSIM_SEED", seed)]);
        let schedule = schedule.replace("{seed}", seed).replace("{{", "{").replace("}}", "}");
        assert!(again.contains(&format!("schedule Mode::{schedule} failed after 0 passing schedules")), "{again}");
        assert_eq!(printed_identity(&again), printed_identity(&first), "{first}\n----\n{again}");
    }
    let counted = run_self("schedule_count_from_the_environment", &[("NTSIM_SCHEDULES", "3")]);
    assert!(counted.contains("ntsim: 3 random schedules passed"), "{counted}");
    let default = run_self("schedule_count_from_the_environment", &[]);
    assert!(default.contains("ntsim: 12 random schedules passed"), "{default}");
}
