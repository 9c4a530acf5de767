//! The exploration runner: run one scenario under many schedules and report the
//! first one that fails, with what to type to replay it.
//!
//! A scenario is a function from a [`Mode`] to `Result<(), E>`: it builds a
//! [`Machine`](crate::Machine) with that mode, drives the driver, and returns what went
//! wrong (anything that converts into a [`Failure`]: ntsim's [`Stopped`], or a message
//! of its own). The serial modes are deterministic, so a schedule is named by its mode
//! alone (`Mode::Pct { seed: 17, depth: 3 }`) and replays exactly.
//!
//! - [`check_random`] runs [`Mode::Seeded`] for each seed;
//! - [`check_pct`] runs [`Mode::Pct`] with a depth for each seed;
//! - [`check_free`] runs [`Mode::Free`] a number of times (real threads: not replayable);
//! - [`replay`] runs one schedule;
//! - [`explore`] is the core the others share: it returns the first failure instead of
//!   panicking, for tests that inspect it.
//!
//! Environment: `NTSIM_SCHEDULES=N` is what [`schedules`] returns (how many seeds a
//! test explores, when it asks); `NTSIM_SEED=S` makes every [`check_random`] and
//! [`check_pct`] call run seed `S` only, which is how a printed failure is replayed.

use std::fmt::{self, Write as _};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::{Mode, Stopped, Violation};

/// Why one run of a scenario failed.
#[derive(Clone, Debug)]
pub enum Failure {
    /// A check fired: the machine stopped with this bug check.
    BugCheck(Box<Violation>),
    /// What the scenario waited for can never happen (nothing can run, no timer is set).
    Hang(String),
    /// The scenario's own check failed: a read never completed, a wrong status.
    Assertion(String),
    /// The scenario panicked (an `assert!` or `unwrap` in it); the panic's message.
    Panic(String),
}

impl Failure {
    /// The bug check, if that is what stopped the run.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            Failure::BugCheck(v) => Some(v),
            _ => None,
        }
    }
}

impl From<Stopped> for Failure {
    fn from(stopped: Stopped) -> Self {
        match stopped {
            Stopped::BugCheck(v) => Failure::BugCheck(v),
            Stopped::Hang(what) => Failure::Hang(what),
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Assertion(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::Assertion(message.to_owned())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::BugCheck(v) => write!(f, "{v}"),
            Failure::Hang(what) => write!(f, "hang: {what}"),
            Failure::Assertion(message) => write!(f, "{message}"),
            Failure::Panic(message) => write!(f, "panicked: {message}"),
        }
    }
}

impl std::error::Error for Failure {}

/// The first schedule that failed, and why.
#[derive(Clone, Debug)]
pub struct Counterexample {
    /// The schedule: pass it to [`replay`], or its seed as `NTSIM_SEED`.
    pub schedule: Mode,
    /// What went wrong.
    pub failure: Failure,
    /// How many schedules passed before this one.
    pub passed: u64,
}

impl Counterexample {
    /// The seed to replay, `None` for a free-running run.
    pub fn seed(&self) -> Option<u64> {
        match self.schedule {
            Mode::Seeded(seed) | Mode::Pct { seed, .. } => Some(seed),
            Mode::Free => None,
        }
    }
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "ntsim: schedule Mode::{:?} failed after {} passing schedules:", self.schedule, self.passed)?;
        writeln!(f, "{}", self.failure.to_string().trim_end())?;
        match self.seed() {
            Some(seed) => {
                writeln!(f, "replay it: {}", replay_command(seed))?;
                write!(f, "  or in code: ntsim::check::replay(Mode::{:?}, <the scenario>)", self.schedule)
            }
            None => write!(f, "(free-running threads: no schedule to replay; run it again or explore serial modes)"),
        }
    }
}

/// How many seeds to explore: `NTSIM_SCHEDULES` if it is set to a number, else
/// `default`.
pub fn schedules(default: u64) -> u64 {
    env_number("NTSIM_SCHEDULES").unwrap_or(default)
}

/// Runs `scenario` under [`Mode::Seeded`] for every seed in `seeds` (or only
/// `NTSIM_SEED`, when set). Returns how many schedules ran, and prints it.
///
/// # Panics
/// On the first failing schedule, with the failure and the command that replays it.
pub fn check_random<E: Into<Failure>>(
    seeds: impl IntoIterator<Item = u64>,
    scenario: impl Fn(Mode) -> Result<(), E>,
) -> u64 {
    check("random", chosen(seeds).map(Mode::Seeded), scenario)
}

/// Runs `scenario` under [`Mode::Pct`] of `depth` for every seed in `seeds` (or only
/// `NTSIM_SEED`, when set). Returns how many schedules ran, and prints it.
///
/// # Panics
/// On the first failing schedule, with the failure and the command that replays it.
pub fn check_pct<E: Into<Failure>>(
    depth: u32,
    seeds: impl IntoIterator<Item = u64>,
    scenario: impl Fn(Mode) -> Result<(), E>,
) -> u64 {
    check(&format!("PCT (depth {depth})"), chosen(seeds).map(|seed| Mode::Pct { seed, depth }), scenario)
}

/// Runs `scenario` under [`Mode::Free`] (the threads run for real) `runs` times.
/// Returns `runs`, and prints it.
///
/// # Panics
/// On the first failing run.
pub fn check_free<E: Into<Failure>>(runs: u64, scenario: impl Fn(Mode) -> Result<(), E>) -> u64 {
    check("free-running", (0..runs).map(|_| Mode::Free), scenario)
}

/// Runs `scenario` once under `schedule`, as a failure printed by [`check_random`] or
/// [`check_pct`] names it.
///
/// # Panics
/// If the schedule fails, with the failure.
pub fn replay<E: Into<Failure>>(schedule: Mode, scenario: impl Fn(Mode) -> Result<(), E>) {
    if let Err(found) = explore([schedule], scenario) {
        panic!("{found}");
    }
}

/// Runs `scenario` under each schedule in turn and stops at the first that fails.
/// Returns how many ran, or the failing one. Reads no environment and never panics
/// itself: a panic inside `scenario` is caught and returned as [`Failure::Panic`].
pub fn explore<E: Into<Failure>>(
    schedules: impl IntoIterator<Item = Mode>,
    scenario: impl Fn(Mode) -> Result<(), E>,
) -> Result<u64, Counterexample> {
    let mut passed = 0;
    for schedule in schedules {
        let outcome = catch_unwind(AssertUnwindSafe(|| scenario(schedule).map_err(Into::into)))
            .unwrap_or_else(|payload| Err(Failure::Panic(panic_message(payload.as_ref()))));
        if let Err(failure) = outcome {
            return Err(Counterexample { schedule, failure, passed });
        }
        passed += 1;
    }
    Ok(passed)
}

fn check<E: Into<Failure>>(
    kind: &str,
    schedules: impl Iterator<Item = Mode>,
    scenario: impl Fn(Mode) -> Result<(), E>,
) -> u64 {
    match explore(schedules, scenario) {
        Ok(ran) => {
            println!("ntsim: {ran} {kind} schedules passed");
            ran
        }
        Err(found) => panic!("{found}"),
    }
}

/// `seeds`, or only `NTSIM_SEED` when it is set.
fn chosen<'a, I>(seeds: I) -> Box<dyn Iterator<Item = u64> + 'a>
where
    I: IntoIterator<Item = u64>,
    I::IntoIter: 'a,
{
    match env_number("NTSIM_SEED") {
        Some(seed) => Box::new(std::iter::once(seed)),
        None => Box::new(seeds.into_iter()),
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| String::from("(a panic without a message)"))
}

/// `NTSIM_SEED=<seed> cargo test ...` for the test running now: the package and test
/// target come from what cargo sets for a test binary (`CARGO_PKG_NAME`, the binary's
/// name), the test from the thread libtest runs it on.
fn replay_command(seed: u64) -> String {
    let mut command = format!("NTSIM_SEED={seed} cargo test");
    if !cfg!(debug_assertions) {
        command.push_str(" --release");
    }
    let package = std::env::var("CARGO_PKG_NAME").ok();
    if let Some(package) = &package {
        let _ = write!(command, " -p {package}");
    }
    if let Some(binary) = test_binary() {
        let is_lib = package.is_some_and(|p| p.replace('-', "_") == binary);
        let _ = if is_lib { write!(command, " --lib") } else { write!(command, " --test {binary}") };
    }
    if let Some(test) = std::thread::current().name().filter(|name| *name != "main") {
        let _ = write!(command, " -- --exact {test}");
    }
    command
}

/// The test binary's target name: cargo names it `<target>-<16 hex digits>`.
fn test_binary() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let stem = exe.file_stem()?.to_str()?;
    let (target, hash) = stem.rsplit_once('-')?;
    (hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then(|| target.to_owned())
}
