//! The command line. Platform-neutral, so the host's `cargo test` checks it.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

pub const USAGE: &str = "\
stageguest [--scenario NAME]... [--threads N] [--reads M] [--seed S] [--wait-ms MS] [--scenario-timeout S]
stageguest --list
stageguest --bench PART... (cleanup, cancel, throughput) [--bench-pending N] [--bench-rounds R] [--bench-seconds S]
stageguest --supervise SECONDS ARGS...   (runs stageguest ARGS; exit 124 if it has not exited by then)
stageguest --sleep-ms MS   (a pause for guest scripts)
stageguest --wait-stopped SERVICE SECONDS   (until the service is STOPPED; exit 1 if not)
stageguest --child-reader DEVICE READS READY-EVENT EXIT-EVENT   (started by process-kill/process-exit)";

/// What the run does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Scenarios,
    List,
    /// `--bench PART`, repeatable (see bench.rs).
    Bench,
    /// Runs this program with `args` as a child and waits at most `seconds` for it: a
    /// process whose request never completes cannot exit, and the guest script must
    /// go on to `sc stop` and report.
    Supervise {
        seconds: u32,
        args: Vec<String>,
    },
    /// Sleeps (guest scripts have no portable pause command).
    Sleep(u32),
    /// Waits until a service is STOPPED (guest scripts, after `sc stop`).
    WaitStopped {
        service: String,
        seconds: u32,
    },
    /// The child process of process-kill/process-exit; the events are inherited handles.
    ChildReader {
        device: u32,
        reads: usize,
        ready: usize,
        exit: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    /// `--scenario NAME`, repeatable; empty means all.
    pub only: Vec<String>,
    /// `--bench PART`, repeatable.
    pub bench: Vec<String>,
    pub threads: usize,
    pub reads: u32,
    pub seed: u64,
    /// How long one request may take to complete once it should.
    pub wait_ms: u32,
    /// Wall-clock limit of one scenario; the run stops at the first scenario past it.
    pub scenario_timeout_s: u32,
    /// Benchmarks: the large number of pending reads (N of "0 vs N").
    pub bench_pending: usize,
    pub bench_rounds: usize,
    /// Benchmarks: seconds per throughput measurement.
    pub bench_seconds: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Scenarios,
            only: Vec::new(),
            bench: Vec::new(),
            threads: 4,
            reads: 200,
            seed: 1,
            wait_ms: 10_000,
            scenario_timeout_s: 180,
            bench_pending: 10_000,
            bench_rounds: 15,
            bench_seconds: 5,
        }
    }
}

fn number<T: core::str::FromStr>(flag: &str, value: Option<&String>) -> Result<T, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    value.parse().map_err(|_| format!("{flag}: not a number: {value}"))
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--scenario" => o.only.push(it.next().ok_or("--scenario needs a name")?.clone()),
            "--threads" => o.threads = number(flag, it.next())?,
            "--reads" => o.reads = number(flag, it.next())?,
            "--seed" => o.seed = number(flag, it.next())?,
            "--wait-ms" => o.wait_ms = number(flag, it.next())?,
            "--scenario-timeout" => o.scenario_timeout_s = number(flag, it.next())?,
            "--list" => o.mode = Mode::List,
            "--sleep-ms" => o.mode = Mode::Sleep(number(flag, it.next())?),
            "--supervise" => {
                let seconds = number(flag, it.next())?;
                o.mode = Mode::Supervise { seconds, args: it.cloned().collect() };
                break;
            }
            "--wait-stopped" => {
                let service = it.next().ok_or("--wait-stopped needs a service name")?.clone();
                o.mode = Mode::WaitStopped { service, seconds: number(flag, it.next())? };
            }
            "--bench" => {
                o.mode = Mode::Bench;
                o.bench.push(it.next().ok_or("--bench needs a part: cleanup, cancel or throughput")?.clone());
            }
            "--bench-pending" => o.bench_pending = number(flag, it.next())?,
            "--bench-rounds" => o.bench_rounds = number(flag, it.next())?,
            "--bench-seconds" => o.bench_seconds = number(flag, it.next())?,
            "--child-reader" => {
                o.mode = Mode::ChildReader {
                    device: number(flag, it.next())?,
                    reads: number(flag, it.next())?,
                    ready: number(flag, it.next())?,
                    exit: number(flag, it.next())?,
                };
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if o.threads == 0 || o.bench_rounds == 0 || o.bench_pending < 10 {
        return Err("--threads and --bench-rounds must be at least 1, --bench-pending at least 10".to_string());
    }
    Ok(o)
}

/// Splits a Windows command line into words: blanks separate words, double quotes
/// group (enough for what the VM scripts pass: a quoted program path, plain words).
pub fn split_command_line(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut in_word) = (false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' | '\t' if !quoted => {
                if in_word {
                    words.push(core::mem::take(&mut word));
                    in_word = false;
                }
            }
            _ => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split_command_line(line)
    }

    #[test]
    fn command_lines_split_on_blanks_and_quotes_group() {
        assert_eq!(
            words(r#""C:\a b\stageguest.exe" --scenario  close-pending"#),
            [r"C:\a b\stageguest.exe", "--scenario", "close-pending"]
        );
        assert_eq!(words("x.exe\t--list "), ["x.exe", "--list"]);
        assert_eq!(words(r#"x.exe """#), ["x.exe", ""]);
        assert!(words("   ").is_empty());
    }

    #[test]
    fn options_parse_and_reject_bad_input() {
        let args = |s: &str| words(s);
        let o = parse(&args("--scenario a --scenario b --threads 2 --wait-ms 500")).unwrap();
        assert_eq!((o.only.len(), o.threads, o.wait_ms, &o.mode), (2, 2, 500, &Mode::Scenarios));
        let o = parse(&args("--child-reader 1 4 100 104")).unwrap();
        assert_eq!(o.mode, Mode::ChildReader { device: 1, reads: 4, ready: 100, exit: 104 });
        assert_eq!(parse(&args("--bench cleanup --bench-pending 2000")).unwrap().bench_pending, 2000);
        assert_eq!(parse(&args("--bench cleanup --bench cancel")).unwrap().bench, ["cleanup", "cancel"]);
        assert!(parse(&args("--bench")).is_err());
        assert_eq!(parse(&args("--sleep-ms 250")).unwrap().mode, Mode::Sleep(250));
        assert_eq!(
            parse(&args("--supervise 30 --scenario x --threads 0")).unwrap().mode,
            Mode::Supervise { seconds: 30, args: words("--scenario x --threads 0") }
        );
        assert_eq!(
            parse(&args("--wait-stopped stagedrv 30")).unwrap().mode,
            Mode::WaitStopped { service: "stagedrv".into(), seconds: 30 }
        );
        assert!(parse(&args("--threads")).unwrap_err().contains("needs a value"));
        assert!(parse(&args("--threads x")).unwrap_err().contains("not a number"));
        assert!(parse(&args("--threads 0")).is_err());
        assert!(parse(&args("--child-reader 1 2 3")).is_err());
        assert!(parse(&args("--frobnicate")).unwrap_err().contains("unknown argument"));
    }
}
