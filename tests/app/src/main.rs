//! stagetest — drives stagedrv from user mode and says, scenario by scenario, whether
//! it behaved.
//!
//! The scenarios ([`scenarios`]) are written once against a small client trait
//! ([`client::Client`]) with two backends: real Win32 calls ([`win32`], the Windows
//! build, also run under Wine) and ntsim with the driver's own code loaded ([`sim`],
//! the default on every other host: `cargo run -p stagetest`).

// Win32 and NT names (ReadFile, STATUS_CANCELLED, ...) run through the prose.
#![allow(clippy::doc_markdown)]

/// `println!` that ignores a closed stdout (`stagetest | head`).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod client;
use stagedrv_protocol as protocol;
mod rng;
mod scenarios;
#[cfg(not(windows))]
mod sim;
#[cfg(windows)]
mod win32;

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, Command, value_parser};
use serde_json::json;

use client::{Backend, Client};
use scenarios::{ALL, Problem, Scenario, Settings};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackendArg {
    /// stagedrv's own code in the ntsim kernel simulator (non-Windows builds).
    Ntsim,
    /// The installed driver through the real Win32 API (Windows builds; also under Wine).
    Win32,
}

/// The command line. (clap's builder API rather than its derive macros: the derives
/// emit `allow(clippy::restriction)`, which the workspace's `forbid` on undocumented
/// unsafe blocks rejects.)
#[allow(clippy::struct_excessive_bools)]
struct Cli {
    backend: Option<BackendArg>,
    wine: bool,
    json: bool,
    list: bool,
    only: Vec<String>,
    threads: usize,
    reads: u32,
    seed: u64,
    repeat: u64,
    #[cfg_attr(windows, allow(dead_code))]
    quiet: bool,
    scenario_timeout: u64,
    child_reader: bool,
    #[cfg_attr(not(windows), allow(dead_code))]
    device: u32,
    #[cfg_attr(not(windows), allow(dead_code))]
    child_reads: usize,
}

fn command() -> Command {
    let flag = |name: &'static str, help: &'static str| Arg::new(name).long(name).action(ArgAction::SetTrue).help(help);
    let number = |name: &'static str, default: &'static str, help: &'static str| {
        Arg::new(name).long(name).value_name("N").default_value(default).value_parser(value_parser!(u64)).help(help)
    };
    Command::new("stagetest")
        .version(env!("CARGO_PKG_VERSION"))
        // A later --scenario-timeout (say) wins over an earlier one: wrappers add defaults.
        .args_override_self(true)
        .about("Runs stagedrv's user-mode scenarios and reports PASS/FAIL/SKIP for each")
        .arg(
            Arg::new("backend")
                .long("backend")
                .value_parser(["ntsim", "win32"])
                .help("Where the driver runs [default: ntsim on non-Windows hosts, win32 on Windows]"),
        )
        .arg(flag("wine", "Running under Wine: skip what Wine cannot express (detected through ntdll's wine_get_version anyway)"))
        .arg(flag("json", "One JSON document on stdout instead of lines for a person"))
        .arg(flag("list", "List the scenarios and exit"))
        .arg(
            Arg::new("only")
                .long("only")
                .value_name("NAME")
                .value_delimiter(',')
                .action(ArgAction::Append)
                .help("Run only these scenarios (repeat or separate with commas)"),
        )
        .arg(number("threads", "4", "Stress: application threads"))
        .arg(number("reads", "100", "Stress: reads per thread"))
        .arg(number("seed", "1", "Seed for the stress mix and for ntsim's scheduler"))
        .arg(number("repeat", "1", "Run the chosen scenarios N times over (hunting for flakes)"))
        .arg(flag("quiet", "ntsim: do not echo the driver's DbgPrintEx lines and I/O as they happen"))
        .arg(number(
            "scenario-timeout",
            "60",
            "Give up on a scenario (and the run) after N seconds: a driver that never completes a request would hang the app",
        ))
        .arg(flag("child-reader", "Internal (win32): be the child process of process-kill/process-exit").hide(true))
        .arg(number("device", "1", "Internal: the child's device").hide(true))
        .arg(number("child-reads", "4", "Internal: the child's number of pending reads").hide(true))
}

impl Cli {
    fn parse() -> Cli {
        let m = command().get_matches();
        let number = |name: &str| m.get_one::<u64>(name).copied().unwrap_or(0);
        Cli {
            backend: m
                .get_one::<String>("backend")
                .map(|b| if b == "win32" { BackendArg::Win32 } else { BackendArg::Ntsim }),
            wine: m.get_flag("wine"),
            json: m.get_flag("json"),
            list: m.get_flag("list"),
            only: m.get_many::<String>("only").map(|v| v.cloned().collect()).unwrap_or_default(),
            threads: usize::try_from(number("threads")).unwrap_or(usize::MAX),
            reads: u32::try_from(number("reads")).unwrap_or(u32::MAX),
            seed: number("seed"),
            repeat: number("repeat"),
            quiet: m.get_flag("quiet"),
            scenario_timeout: number("scenario-timeout"),
            child_reader: m.get_flag("child-reader"),
            device: u32::try_from(number("device")).unwrap_or(1),
            child_reads: usize::try_from(number("child-reads")).unwrap_or(4),
        }
    }
}

/// One scenario's line.
struct Line {
    name: &'static str,
    result: &'static str,
    detail: String,
    activity: Vec<String>,
    seconds: f64,
}

/// Prints as it goes (people) or collects for one JSON document (machines).
struct Report {
    json: bool,
    lines: Vec<Line>,
}

impl Report {
    fn add(&mut self, line: Line) {
        if !self.json {
            // Ignore write errors (`stagetest | head` closes the pipe early).
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{:<18} {:<4}  {}", line.name, line.result, line.detail);
            for a in &line.activity {
                let _ = writeln!(out, "{:<18}       {a}", "");
            }
            let _ = out.flush();
        }
        self.lines.push(line);
    }

    fn count(&self, result: &str) -> usize {
        self.lines.iter().filter(|l| l.result == result).count()
    }
}

/// Wine's version, when this Windows build runs under Wine.
fn wine_detected() -> Option<String> {
    #[cfg(windows)]
    return win32::wine_version();
    #[cfg(not(windows))]
    None
}

fn default_backend() -> BackendArg {
    if cfg!(windows) { BackendArg::Win32 } else { BackendArg::Ntsim }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.child_reader {
        return child_reader(&cli);
    }
    if cli.list {
        for s in ALL {
            say!("{:<18} {}", s.name, s.about);
            if let Some(why) = s.wine_skip {
                say!("{:<18} (Wine: SKIP, {why})", "");
            }
        }
        return ExitCode::SUCCESS;
    }
    let mut chosen: Vec<&'static Scenario> = Vec::new();
    for name in &cli.only {
        let Some(s) = scenarios::find(name) else {
            let names: Vec<&str> = ALL.iter().map(|s| s.name).collect();
            eprintln!("stagetest: no scenario named {name:?}; the scenarios are: {}", names.join(", "));
            return ExitCode::from(2);
        };
        chosen.push(s);
    }
    if chosen.is_empty() {
        chosen = ALL.iter().collect();
    }
    let once = chosen.clone();
    for _ in 1..cli.repeat {
        chosen.extend(once.iter().copied());
    }
    let backend = cli.backend.unwrap_or_else(default_backend);
    let wine = backend == BackendArg::Win32 && (cli.wine || wine_detected().is_some());
    let settings = Settings {
        threads: cli.threads.max(1),
        reads: cli.reads.max(1),
        seed: cli.seed,
        progress: !cli.json,
        wine,
        timeout: Duration::from_secs(cli.scenario_timeout.max(1)),
        json: cli.json,
    };
    match backend {
        BackendArg::Ntsim => run_ntsim(&cli, &chosen, &settings),
        BackendArg::Win32 => run_win32(&cli, &chosen, &settings),
    }
}

/// Ends the program if a scenario runs longer than allowed: a request the driver never
/// completes blocks the app in a wait nothing else can end.
struct Watchdog {
    current: Arc<Mutex<Option<(&'static str, Instant)>>>,
}

impl Watchdog {
    fn start(limit: Duration, json: bool) -> Watchdog {
        let current: Arc<Mutex<Option<(&'static str, Instant)>>> = Arc::new(Mutex::new(None));
        let watched = Arc::clone(&current);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(250));
                let stuck = watched.lock().ok().and_then(|c| *c).filter(|(_, since)| since.elapsed() > limit);
                if let Some((name, _)) = stuck {
                    let why = format!(
                        "did not finish within {} s (a request the driver never completes?); giving up",
                        limit.as_secs()
                    );
                    if json {
                        say!("{}", json!({"aborted": name, "detail": why, "failed": 1}));
                    } else {
                        say!("{name:<18} FAIL  {why}");
                        say!("stagetest: aborted in {name}");
                    }
                    let _ = std::io::stdout().flush();
                    std::process::exit(1);
                }
            }
        });
        Watchdog { current }
    }

    fn watch(&self, name: Option<&'static str>) {
        if let Ok(mut c) = self.current.lock() {
            *c = name.map(|n| (n, Instant::now()));
        }
    }
}

/// Runs each scenario, turning its result into a line.
fn run_all(client: &mut dyn Client, chosen: &[&'static Scenario], settings: &Settings, report: &mut Report) {
    let watchdog = Watchdog::start(settings.timeout, settings.json);
    for s in chosen {
        watchdog.watch(Some(s.name));
        let started = Instant::now();
        let (result, detail) = match s.wine_skip {
            Some(why) if settings.wine => ("SKIP", why.to_owned()),
            _ => match (s.run)(client, settings) {
                Ok(detail) => ("PASS", detail),
                Err(Problem::Fail(why)) => ("FAIL", why),
                Err(Problem::Skip(why)) => ("SKIP", why),
            },
        };
        watchdog.watch(None);
        let activity = client.activity();
        report.add(Line { name: s.name, result, detail, activity, seconds: started.elapsed().as_secs_f64() });
    }
}

/// The closing lines (people) or the JSON document (machines); the exit code.
fn finish(report: &Report, backend: Backend, environment: &str, verdict: Option<&str>) -> ExitCode {
    let (passed, failed, skipped) = (report.count("PASS"), report.count("FAIL"), report.count("SKIP"));
    if report.json {
        let scenarios: Vec<_> = report
            .lines
            .iter()
            .map(|l| json!({"name": l.name, "result": l.result, "detail": l.detail, "activity": l.activity, "seconds": l.seconds}))
            .collect();
        let doc = json!({
            "backend": backend.name(),
            "environment": environment,
            "scenarios": scenarios,
            "passed": passed,
            "failed": failed,
            "skipped": skipped,
            "verdict": verdict,
        });
        say!("{doc:#}");
    } else if skipped > 0 {
        say!("{passed} passed, {failed} failed ({skipped} skipped)");
    } else {
        say!("{passed} passed, {failed} failed");
    }
    if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

#[cfg(not(windows))]
fn run_ntsim(cli: &Cli, chosen: &[&'static Scenario], settings: &Settings) -> ExitCode {
    use std::fmt::Write as _;
    let live = !cli.json && !cli.quiet;
    if live {
        // SAFETY: no other thread exists yet (the machine is created below), so nothing
        // reads the environment concurrently. ntsim echoes each DbgPrintEx line to
        // stderr, with the simulated time, when NTSIM_ECHO is set.
        unsafe { std::env::set_var("NTSIM_ECHO", "1") };
        say!("stagetest: backend ntsim — stagedrv's own code in a simulated NT machine (seed {})", settings.seed);
        say!(
            "stagetest: Parameters ReadTimeoutSeconds={}; sc start (DriverEntry), then the scenarios, then sc stop (DriverUnload):",
            sim::READ_TIMEOUT_S
        );
        let _ = std::io::stdout().flush();
    }
    let mut report = Report { json: cli.json, lines: Vec::new() };
    let mut sim = match sim::Sim::start(settings.seed) {
        Ok(sim) => sim,
        Err(fail) => {
            report.add(Line {
                name: "driver-load",
                result: "FAIL",
                detail: fail.0,
                activity: Vec::new(),
                seconds: 0.0,
            });
            return finish(&report, Backend::Ntsim, "ntsim", Some("DriverEntry failed"));
        }
    };
    run_all(&mut sim, chosen, settings, &mut report);
    if live {
        say!("stagetest: sc stop — DriverUnload:");
        let _ = std::io::stdout().flush();
    }
    // The unload is checked like a scenario: stopped, unloaded, the six stages in order,
    // and ntsim's verdict (nothing left behind, no rule broken).
    let started = Instant::now();
    let unloaded = sim.unload();
    let log = sim.debug_output();
    let (result, detail, verdict) = match unloaded {
        Ok(notes) => match unload_stages(&log) {
            Ok(stages) => {
                let mut detail =
                    format!("DriverUnload ran: {stages}; ntsim verdict: clean (no bug check, nothing left behind)");
                if !notes.is_empty() {
                    let _ = write!(detail, " [{}]", notes.join("; "));
                }
                ("PASS", detail, "clean".to_owned())
            }
            Err(why) => ("FAIL", why.clone(), why),
        },
        Err(fail) => ("FAIL", fail.0.clone(), fail.0),
    };
    report.add(Line {
        name: "driver-unload",
        result,
        detail,
        activity: Vec::new(),
        seconds: started.elapsed().as_secs_f64(),
    });
    if live {
        say!("ntsim verdict: {}", verdict.lines().next().unwrap_or(""));
        if verdict != "clean" {
            say!("{verdict}");
        }
    }
    finish(&report, Backend::Ntsim, "ntsim", Some(&verdict))
}

/// Checks the driver's Unload lines: "Unload: stage 1" .. "stage 6" in order, then
/// "Unload: done".
#[cfg(not(windows))]
fn unload_stages(log: &[String]) -> Result<String, String> {
    let stages: Vec<u32> = log
        .iter()
        .filter_map(|l| l.split("Unload: stage ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    if stages != [1, 2, 3, 4, 5, 6] {
        return Err(format!("Unload stage lines {stages:?}; expected [1, 2, 3, 4, 5, 6]"));
    }
    if !log.iter().any(|l| l.contains("Unload: done")) {
        return Err("no \"Unload: done\" line".to_owned());
    }
    Ok("stages 1..6 in order, then done".to_owned())
}

#[cfg(windows)]
fn run_ntsim(_: &Cli, _: &[&'static Scenario], _: &Settings) -> ExitCode {
    eprintln!("stagetest: the ntsim backend exists only in non-Windows builds (use --backend win32)");
    ExitCode::from(2)
}

#[cfg(windows)]
fn run_win32(cli: &Cli, chosen: &[&'static Scenario], settings: &Settings) -> ExitCode {
    let detected = win32::wine_version();
    let wine = settings.wine;
    let environment = match (&detected, cli.wine) {
        (Some(v), _) => format!("Wine {v}"),
        (None, true) => "Wine (--wine)".to_owned(),
        (None, false) => "Windows".to_owned(),
    };
    if !cli.json {
        say!("stagetest: backend win32 on {environment}: the installed stagedrv service through the Win32 API");
        if wine {
            say!("stagetest: Wine: scenarios Wine cannot express are skipped, with the reason");
        }
        let _ = std::io::stdout().flush();
    }
    let mut report = Report { json: cli.json, lines: Vec::new() };
    // Every scenario opens \\.\StageDrv0: a shell that is not elevated, or a driver that is
    // not running, is reported once, with what to do.
    if let Err(why) = win32::check_open(0) {
        report.add(Line {
            name: "driver-open",
            result: "FAIL",
            detail: why.clone(),
            activity: Vec::new(),
            seconds: 0.0,
        });
        return finish(&report, Backend::Win32, &environment, Some(&why));
    }
    let mut client = win32::Win32::new(wine);
    run_all(&mut client, chosen, settings, &mut report);
    drop(client);
    finish(&report, Backend::Win32, &environment, None)
}

#[cfg(not(windows))]
fn run_win32(_: &Cli, _: &[&'static Scenario], _: &Settings) -> ExitCode {
    eprintln!(
        "stagetest: the win32 backend exists only in the Windows build (tests/wine/build-app.sh cross-builds it)"
    );
    ExitCode::from(2)
}

#[cfg(windows)]
fn child_reader(cli: &Cli) -> ExitCode {
    win32::child_reader(cli.device, cli.child_reads)
}

#[cfg(not(windows))]
fn child_reader(_: &Cli) -> ExitCode {
    eprintln!("stagetest: --child-reader is the Win32 backend's helper process");
    ExitCode::from(2)
}

/// The app as `cargo run -p stagetest` runs it, minus the process: every scenario on
/// one ntsim machine, then the unload. (Unit tests rather than integration tests: those
/// would build the binary with the dev profile's panic=abort next to the test build of
/// stagedrv, and both write the same libstagedrv file.)
#[cfg(all(test, not(windows)))]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            threads: 3,
            reads: 40,
            seed: 7,
            progress: false,
            wine: false,
            timeout: Duration::from_mins(2),
            json: true,
        }
    }

    #[test]
    fn every_scenario_passes_in_ntsim_and_the_unload_is_clean() {
        let mut sim = sim::Sim::start(7).expect("DriverEntry");
        let mut report = Report { json: true, lines: Vec::new() };
        let all: Vec<&'static Scenario> = ALL.iter().collect();
        run_all(&mut sim, &all, &settings(), &mut report);
        let failed: Vec<String> = report
            .lines
            .iter()
            .filter(|l| l.result != "PASS")
            .map(|l| format!("{} {} {}", l.name, l.result, l.detail))
            .collect();
        assert!(failed.is_empty(), "{failed:#?}");
        assert_eq!(report.count("PASS"), ALL.len());
        sim.unload().expect("clean unload");
        let log = sim.debug_output();
        assert_eq!(unload_stages(&log).as_deref(), Ok("stages 1..6 in order, then done"), "{log:#?}");
        let entry = log.iter().position(|l| l.contains("DriverEntry: done")).expect("DriverEntry ran");
        let unload = log.iter().position(|l| l.contains("Unload: begin")).expect("Unload ran");
        assert!(entry < unload);
    }

    #[test]
    fn unload_stage_lines_must_be_complete_and_in_order() {
        let lines = |stages: &[u32]| -> Vec<String> {
            let mut v: Vec<String> = stages.iter().map(|n| format!("stagedrv: Unload: stage {n} x")).collect();
            v.push("stagedrv: Unload: done".to_owned());
            v
        };
        assert!(unload_stages(&lines(&[1, 2, 3, 4, 5, 6])).is_ok());
        assert!(unload_stages(&lines(&[1, 2, 3, 4, 5])).is_err());
        assert!(unload_stages(&lines(&[1, 2, 4, 3, 5, 6])).is_err());
        assert!(unload_stages(&lines(&[1, 2, 3, 4, 5, 6])[..6]).is_err(), "no done line");
    }

    #[test]
    fn command_line() {
        let m =
            command().try_get_matches_from(["stagetest", "--only", "a,b", "--only", "c", "--json"]).expect("parses");
        let only: Vec<&String> = m.get_many::<String>("only").expect("only").collect();
        assert_eq!(only, ["a", "b", "c"]);
        assert!(m.get_flag("json"));
        let m = command()
            .try_get_matches_from(["stagetest", "--scenario-timeout", "5", "--scenario-timeout", "9"])
            .expect("later wins");
        assert_eq!(m.get_one::<u64>("scenario-timeout"), Some(&9));
        assert!(command().try_get_matches_from(["stagetest", "--backend", "dos"]).is_err());
        assert!(ALL.iter().all(|s| scenarios::find(s.name).is_some()));
    }
}
