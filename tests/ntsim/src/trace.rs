//! The API trace: every kernel call in order, with thread, IRQL and the driver routine
//! it came from.

use std::fmt;

/// The driver routine a simulated thread is executing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routine {
    /// DriverEntry.
    DriverEntry,
    /// A dispatch routine, by IRP_MJ_* code.
    Dispatch(u8),
    /// A cancel routine.
    CancelRoutine,
    /// A DPC routine (KeInsertQueueDpc).
    Dpc,
    /// The DPC of a KTIMER.
    CustomTimerDpc,
    /// An IoTimer routine.
    IoTimer,
    /// A work item's routine.
    WorkItem,
    /// A system thread's start routine.
    SystemThread,
    /// An interrupt service routine.
    Isr,
    /// A KeSynchronizeExecution routine.
    SynchronizeRoutine,
    /// DriverUnload.
    Unload,
    /// No driver routine: ntsim itself (a client call, the I/O manager).
    Kernel,
}

impl fmt::Display for Routine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Routine::Dispatch(major) => write!(f, "Dispatch({})", crate::io::irp::major_name(*major)),
            other => write!(f, "{other:?}"),
        }
    }
}

/// One kernel call.
#[derive(Clone, Debug)]
pub struct Call {
    /// Position in the machine's kernel calls, from 0.
    pub seq: u64,
    /// The export's name.
    pub api: &'static str,
    /// The simulated thread that called it.
    pub thread: String,
    /// The caller's IRQL.
    pub irql: u8,
    /// The driver routine the call was made from.
    pub routine: Routine,
    /// Simulated time of the call, in 100 ns units.
    pub time: u64,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{:<5} {:<28} irql {} in {:<16} on {}",
            self.seq,
            self.api,
            self.irql,
            self.routine.to_string(),
            self.thread
        )
    }
}

/// The machine's trace. Bounded so that long explorations do not grow without end;
/// the most recent calls are kept.
pub(crate) struct Trace {
    calls: std::collections::VecDeque<Call>,
    next_seq: u64,
    limit: usize,
}

impl Trace {
    pub(crate) fn new(limit: usize) -> Self {
        Trace { calls: std::collections::VecDeque::new(), next_seq: 0, limit }
    }
    pub(crate) fn push(&mut self, api: &'static str, thread: &str, irql: u8, routine: Routine, time: u64) {
        if self.calls.len() == self.limit {
            self.calls.pop_front();
        }
        self.calls.push_back(Call { seq: self.next_seq, api, thread: thread.to_owned(), irql, routine, time });
        self.next_seq += 1;
    }
    pub(crate) fn snapshot(&self) -> Vec<Call> {
        self.calls.iter().cloned().collect()
    }
    pub(crate) fn tail(&self, n: usize) -> Vec<Call> {
        self.calls.iter().skip(self.calls.len().saturating_sub(n)).cloned().collect()
    }
}
