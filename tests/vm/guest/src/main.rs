//! stageguest: stagedrv's scenarios (and benchmarks) inside a VM guest — ReactOS, or a
//! Windows 10/11 test VM — driving the installed driver through Win32.
//!
//! Why not stagetest's Win32 backend: a Rust program built with the standard library
//! for x86_64 Windows imports Windows 7/10 user-mode APIs (SRW locks, WaitOnAddress,
//! ProcessPrng...) that ReactOS's NT 5.2 user mode lacks, and the scenarios need
//! CancelIoEx, which ReactOS does not implement. So this program has no standard
//! library: it imports only kernel32/advapi32 calls NT 5.2 has, looks CancelIoEx up at
//! run time, and reports each scenario as PASS, SKIP (with the reason) or FAIL through
//! OutputDebugStringA (the kernel's debug port) and standard output.
//!
//! On other hosts it is built only so that the workspace builds; its platform-neutral
//! parts (the command line, benchmark arithmetic) are unit-tested there.

#![cfg_attr(windows, no_std, no_main)]

extern crate alloc;

#[cfg_attr(not(windows), allow(dead_code))]
mod args;
#[cfg_attr(not(windows), allow(dead_code))]
mod ratio;

#[cfg(windows)]
#[macro_use]
mod out;
#[cfg(windows)]
mod bench;
#[cfg(windows)]
use stagedrv_protocol as protocol;
#[cfg(windows)]
#[allow(dead_code)]
#[path = "../../../app/src/rng.rs"]
mod rng;
#[cfg(windows)]
mod rt;
#[cfg(windows)]
mod scenarios;
#[cfg(windows)]
mod win;

/// The program: returns the process exit code (0 when nothing failed).
#[cfg(windows)]
fn run() -> u32 {
    let words = win::command_line();
    let options = match args::parse(words.get(1..).unwrap_or_default()) {
        Ok(o) => o,
        Err(message) => {
            say!("FATAL: {message}");
            return 2;
        }
    };
    match options.mode {
        args::Mode::List => {
            for (name, about) in scenarios::list() {
                say!("{name}: {about}");
            }
            0
        }
        args::Mode::Supervise { seconds, args } => supervise(seconds, &args),
        args::Mode::Sleep(ms) => {
            win::sleep_ms(ms);
            0
        }
        args::Mode::WaitStopped { service, seconds } => wait_stopped(&service, seconds),
        args::Mode::ChildReader { device, reads, ready, exit } => scenarios::child_reader(device, reads, ready, exit),
        args::Mode::Bench => bench::run(&options),
        args::Mode::Scenarios => {
            let read_timeout_s =
                win::registry_dword(scenarios::PARAMETERS_KEY, "ReadTimeoutSeconds").filter(|&t| t > 0);
            let settings = scenarios::Settings {
                threads: options.threads,
                reads: options.reads,
                seed: options.seed,
                wait_ms: options.wait_ms,
                read_timeout_s,
            };
            say!(
                "start: {} scenario(s), wait {} ms, scenario limit {} s, ReadTimeoutSeconds {}, performance counter {} Hz",
                if options.only.is_empty() { scenarios::ALL.len() } else { options.only.len() },
                options.wait_ms,
                options.scenario_timeout_s,
                read_timeout_s.map_or("not set".into(), |t| alloc::format!("{t}")),
                win::counter_frequency()
            );
            u32::from(scenarios::run_all(&options.only, settings, options.scenario_timeout_s) > 0)
        }
    }
}

/// Runs this program with `args` and returns its exit code, or 124 when it has not
/// exited within `seconds` (it is left behind: such a process cannot be ended).
#[cfg(windows)]
fn supervise(seconds: u32, args: &[alloc::string::String]) -> u32 {
    let child = match win::spawn_self(&args.join(" ")) {
        Ok(p) => p,
        Err(win::Fail(why)) => {
            say!("FATAL: supervise: {why}");
            return 2;
        }
    };
    if !child.wait(seconds.saturating_mul(1000)) {
        say!(
            "FATAL: the client has not exited {seconds} s after it started: a request of it never completed, so its process cannot end"
        );
        return 124;
    }
    win::exit_code(&child).unwrap_or(2)
}

/// Polls the service's state until it is STOPPED, printing what it saw.
#[cfg(windows)]
fn wait_stopped(service: &str, seconds: u32) -> u32 {
    let start = win::tick_ms();
    let mut state = win::service_state(service);
    while state != Ok(win::SERVICE_STOPPED) && win::tick_ms().wrapping_sub(start) < seconds * 1000 {
        win::sleep_ms(250);
        state = win::service_state(service);
    }
    let waited = f64::from(win::tick_ms().wrapping_sub(start)) / 1000.0;
    match state {
        Ok(win::SERVICE_STOPPED) => {
            say!("service {service}: STOPPED after {waited:.1} s");
            0
        }
        Ok(other) => {
            say!("service {service}: state {other} (1 is STOPPED, 3 STOP_PENDING, 4 RUNNING) after {waited:.1} s");
            1
        }
        Err(why) => {
            say!("service {service}: {why}");
            1
        }
    }
}

#[cfg(not(windows))]
fn main() {
    let words: Vec<String> = std::env::args().skip(1).collect();
    match args::parse(&words) {
        Ok(_) => eprintln!("stageguest runs inside a Windows or ReactOS guest (see tests/vm/README.md)"),
        Err(message) => eprintln!("stageguest: {message}"),
    }
    std::process::exit(2);
}
