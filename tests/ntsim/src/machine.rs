//! The simulated machine: its state, the kernel-call gateway, and the controller API a
//! test uses (load a driver, move the clock, collect the verdict).

use std::sync::{Arc, Mutex};

use parking_lot::{Condvar, MutexGuard};

use crate::checker::{Violation, code, ntsim_rule};
use crate::sched::{self, Mode, SimThread, Status, Tid, WaitCondition};
use crate::trace::{Routine, Trace};

/// What a machine is built with.
#[derive(Clone, Debug)]
pub struct Config {
    /// How simulated threads take turns: a seeded schedule, PCT, or free-running.
    pub mode: Mode,
    /// Simulated processors, each with its own DPC queue (at least 2 by default).
    pub cpus: usize,
    /// Worker threads serving `IoQueueWorkItem`.
    pub workers: usize,
    /// Kernel calls kept in the trace.
    pub trace_limit: usize,
    /// Options real kernels allow and careless drivers trip on (all off by default).
    pub hostile: Hostile,
    /// A cancelled IRP still outstanding after this long (100 ns units) is reported as
    /// a slow cancel (0xC4/0x135).
    pub slow_cancel: u64,
    /// Routines MmGetSystemRoutineAddress reports as absent (an older kernel, Wine).
    pub missing_exports: Vec<String>,
    /// When a pended IRP's completion APC runs and frees it.
    pub completion_apc: CompletionApc,
    /// The clock tick in 100 ns units (KeQueryTimeIncrement): timers and timeouts expire
    /// on ticks, and the tick-updated times (KeQuerySystemTime, KeQueryInterruptTime,
    /// KeQueryTickCount) move by it.
    pub time_increment: u64,
    /// Let time pass while threads run (off by default): see [`TimePasses`].
    pub time_passes: Option<TimePasses>,
}

/// Time passing at scheduling points. On Windows the clock runs while threads run: a
/// thread that is merely slow (preempted, starved, holding a lock) lets another
/// thread's timeout expire and timers fire in the middle of a request. Without this
/// option ntsim's clock moves only when no thread can run (or the test moves it).
/// With it, in the serial modes, at one scheduling point in `one_in` the clock moves
/// forward by a random step of 1 to `max_step` (100 ns units) drawn from the
/// schedule's seed, so a schedule still replays from its seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimePasses {
    /// The largest step, in 100 ns units.
    pub max_step: u64,
    /// The clock moves at one scheduling point in this many.
    pub one_in: u32,
}

/// When the completion APC of an IRP completed asynchronously runs. IofCompleteRequest
/// queues it to the issuing thread; it frees the IRP. On Windows it may run at once (the
/// thread is at PASSIVE_LEVEL on another processor) or later; until it runs, the
/// driver sees the KAPC in `Irp->Tail`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompletionApc {
    /// The schedule chooses at each completion (in `Mode::Free`: at once).
    #[default]
    Explored,
    /// Before IoCompleteRequest returns.
    AtOnce,
    /// On the issuing thread's next turn.
    Later,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Seeded(1),
            cpus: 2,
            workers: 2,
            trace_limit: 100_000,
            hostile: Hostile::default(),
            slow_cancel: 5 * crate::ke::timer::SECOND,
            missing_exports: Vec::new(),
            completion_apc: CompletionApc::default(),
            time_increment: crate::ke::timer::DEFAULT_TIME_INCREMENT,
            time_passes: None,
        }
    }
}

impl Config {
    /// The default machine with the seeded scheduler at `seed`.
    pub fn seeded(seed: u64) -> Self {
        Config { mode: Mode::Seeded(seed), ..Config::default() }
    }
}

/// Options real kernels allow and careless drivers trip on.
#[derive(Clone, Debug, Default)]
#[allow(clippy::struct_excessive_bools, reason = "independent switches, each named for what it does")]
pub struct Hostile {
    /// Drop the client's file-object reference while the last IRP completes, so that
    /// IRP_MJ_CLOSE arrives from inside `IoCompleteRequest`.
    pub close_inside_completion: bool,
    /// Overwrite the RegistryPath buffer once DriverEntry returns.
    pub poison_registry_path: bool,
    /// Run a re-queued DPC on another processor while it is still running.
    pub dpc_on_two_cpus: bool,
    /// Hand out odd routine addresses (MmGetSystemRoutineAddress, the default
    /// dispatch routines), as a kernel whose functions are not aligned does
    /// (`thunk.rs`).
    pub odd_routine_addresses: bool,
}

/// Why the machine stopped running driver code.
#[derive(Clone, Debug)]
pub(crate) enum Halt {
    BugCheck(Box<Violation>),
    Shutdown,
}

pub(crate) struct Cpu {
    /// Queued work, each with its ticket (queue order on this processor).
    pub(crate) dpcs: std::collections::VecDeque<(u64, crate::ke::dpc::Queued)>,
    /// The next ticket: everything queued here before a KeFlushQueuedDpcs has a lower one.
    pub(crate) queued_total: u64,
    /// The ticket of what this processor's DPC thread is running now.
    pub(crate) running: Option<u64>,
}

pub(crate) struct State {
    pub(crate) sched: sched::Scheduler,
    pub(crate) threads: Vec<SimThread>,
    pub(crate) cpus: Vec<Cpu>,
    /// Simulated time in 100 ns units since boot (the interrupt time, exact).
    pub(crate) clock: u64,
    pub(crate) time_increment: u64,
    pub(crate) time_passes: Option<TimePasses>,
    /// Draws the steps of `time_passes`, apart from the scheduler's choices.
    pub(crate) time_rng: sched::Rng,
    pub(crate) halt: Option<Halt>,
    /// Non-fatal violations, oldest first: they fail the verdict but the machine runs on.
    pub(crate) reports: Vec<Violation>,
    pub(crate) trace: Trace,
    pub(crate) hostile: Hostile,
    pub(crate) slow_cancel: u64,
    pub(crate) missing_exports: Vec<String>,
    pub(crate) completion_apc: CompletionApc,
    pub(crate) pool: crate::pool::Pool,
    pub(crate) ob: crate::ob::Objects,
    pub(crate) ke: crate::ke::Ke,
    pub(crate) io: crate::io::Io,
    pub(crate) registry: crate::registry::Registry,
    pub(crate) faults: crate::faults::Faults,
    /// Jobs posted by the controller to simulated threads, per thread.
    pub(crate) mailboxes: Vec<std::collections::VecDeque<Job>>,
}

pub(crate) type Job = Box<dyn FnOnce() + Send>;

// SAFETY: the state holds raw pointers into kernel objects ntsim owns (boxed device,
// driver and file objects) or the driver owns; every access goes through the machine
// mutex, so moving the state between threads is sound.
unsafe impl Send for State {}

impl State {
    pub(crate) fn halted(&self) -> bool {
        self.halt.is_some()
    }
}

pub(crate) struct Inner {
    /// parking_lot's mutex: a simulated thread that faults inside ntsim while holding
    /// it can have it released by the fault handler (see `crash.rs`).
    pub(crate) state: parking_lot::Mutex<State>,
    pub(crate) cv: Condvar,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }
}

/// Why a kernel call does not return to the driver.
pub(crate) enum Stop {
    Violation(Box<Violation>),
    /// The machine halted while this thread waited.
    Halted,
    /// PsTerminateSystemThread.
    Terminate,
}

impl From<Violation> for Stop {
    fn from(v: Violation) -> Self {
        Stop::Violation(Box::new(v))
    }
}

pub(crate) type KResult<T> = Result<T, Stop>;

/// The state a kernel call works on, locked, plus who is calling.
pub(crate) struct Ctx<'a> {
    pub(crate) inner: &'a Inner,
    guard: Option<MutexGuard<'a, State>>,
    pub(crate) tid: Tid,
    pub(crate) api: &'static str,
}

impl Drop for Ctx<'_> {
    fn drop(&mut self) {
        crate::crash::note_holds_state(false);
    }
}

impl<'a> Ctx<'a> {
    fn locked(inner: &'a Inner, tid: Tid, api: &'static str) -> Ctx<'a> {
        let guard = inner.lock();
        crate::crash::note_holds_state(true);
        Ctx { inner, guard: Some(guard), tid, api }
    }
}

impl std::ops::Deref for Ctx<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        self.guard.as_ref().expect("machine state is locked")
    }
}

impl std::ops::DerefMut for Ctx<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard.as_mut().expect("machine state is locked")
    }
}

impl Ctx<'_> {
    /// Runs `f` (usually a driver routine) with the machine unlocked.
    pub(crate) fn unlocked<R>(&mut self, f: impl FnOnce() -> R) -> R {
        drop(self.guard.take());
        crate::crash::note_holds_state(false);
        self.inner.cv.notify_all();
        let result = f();
        self.guard = Some(self.inner.lock());
        crate::crash::note_holds_state(true);
        result
    }

    /// Runs driver routine `f` marked as `routine` in the trace, unlocked, on its
    /// kernel-stack budget.
    pub(crate) fn call_driver<R>(&mut self, routine: Routine, f: impl FnOnce() -> R) -> R {
        let tid = self.tid;
        self.threads[tid].routines.push(routine);
        if self.irql() >= crate::irql::DISPATCH_LEVEL {
            crate::special_pool::trim_paged();
        }
        let result = self.unlocked(|| crate::stack::driver_routine(f));
        self.threads[tid].routines.pop();
        result
    }

    /// Blocks until `condition` holds.
    pub(crate) fn block(&mut self, condition: WaitCondition) -> KResult<i64> {
        let guard = self.guard.take().expect("locked");
        let (guard, result) = sched::block_on(self.inner, guard, self.tid, condition);
        self.guard = Some(guard);
        result.ok_or(Stop::Halted)
    }

    /// A scheduling point.
    pub(crate) fn yield_point(&mut self) -> KResult<()> {
        let guard = self.guard.take().expect("locked");
        let (guard, alive) = sched::yield_now(self.inner, guard, self.tid);
        self.guard = Some(guard);
        // Other threads ran meanwhile and may have paged paged pool back in.
        if self.irql() >= crate::irql::DISPATCH_LEVEL {
            crate::special_pool::trim_paged();
        }
        if alive { Ok(()) } else { Err(Stop::Halted) }
    }

    /// Wakes threads whose wait conditions now hold.
    pub(crate) fn signal(&mut self) {
        sched::wake_satisfied(self);
        self.inner.cv.notify_all();
    }

    pub(crate) fn irql(&self) -> u8 {
        self.threads[self.tid].irql
    }

    pub(crate) fn set_irql(&mut self, irql: u8) {
        let tid = self.tid;
        self.threads[tid].irql = irql;
        crate::crash::note_irql(irql);
        // Verifier's Force IRQL Checking trims paged memory whenever a driver raises
        // to DISPATCH_LEVEL or above.
        if irql >= crate::irql::DISPATCH_LEVEL {
            crate::special_pool::trim_paged();
        }
    }

    pub(crate) fn routine(&self) -> Routine {
        self.threads[self.tid].routines.last().copied().unwrap_or(Routine::Kernel)
    }

    /// Fills in who and where for a violation found in this call.
    pub(crate) fn violation(&self, mut v: Violation) -> Stop {
        v.thread.clone_from(&self.threads[self.tid].name);
        v.routine = self.routine();
        v.trace_tail = self.trace.tail(12);
        Stop::Violation(Box::new(v))
    }

    /// Records a non-fatal violation (Verifier's non-fatal "WDM DRIVER ERROR"s) and
    /// lets the call go on.
    pub(crate) fn report(&mut self, v: Violation) {
        let Stop::Violation(v) = self.violation(v.non_fatal()) else { unreachable!("violation() makes a Violation") };
        self.reports.push(*v);
    }

    /// Spawns a simulated thread.
    pub(crate) fn spawn(&mut self, name: String, irql: u8, body: impl FnOnce() + Send + 'static) -> Tid {
        let arc = current_arc();
        sched::spawn(&arc, self, name, irql, body)
    }

    /// Is this the `n`th call the fault plan wants to fail?
    pub(crate) fn should_fail(&mut self) -> bool {
        let api = self.api;
        self.faults.should_fail(api)
    }
}

/// Runs ntsim's own work (a processor's DPC loop, a worker thread) on the calling
/// simulated thread. Unlike [`kcall`] it records no trace entry and returns `None`
/// when the machine halted, so the thread can leave its loop.
pub(crate) fn service<R>(api: &'static str, f: impl FnOnce(&mut Ctx<'_>) -> KResult<R>) -> Option<R> {
    crate::stack::ntsim_work(|| service_locked(api, f))
}

fn service_locked<R>(api: &'static str, f: impl FnOnce(&mut Ctx<'_>) -> KResult<R>) -> Option<R> {
    let (arc, tid) = sched::current().expect("simulated thread");
    let inner: &Inner = &arc;
    let mut ctx = Ctx::locked(inner, tid, api);
    match f(&mut ctx) {
        Ok(value) => Some(value),
        Err(stop) => {
            if let Stop::Violation(v) = stop
                && ctx.halt.is_none()
            {
                ctx.halt = Some(Halt::BugCheck(v));
            }
            if ctx.sched.mode.is_serial() {
                ctx.sched.baton = None;
            }
            ctx.inner.cv.notify_all();
            None
        }
    }
}

fn current_arc() -> Arc<Inner> {
    sched::current().expect("simulated thread").0
}

/// The gateway of every kernel export: a scheduling point, the trace record, the IRQL
/// rule for `api`, then `f` on the locked machine. A violation halts the machine and
/// parks the calling thread; the test receives the verdict.
pub(crate) fn kcall<R>(api: &'static str, f: impl FnOnce(&mut Ctx<'_>) -> KResult<R>) -> R {
    let Some((arc, tid)) = sched::current() else { off_machine(api) };
    let (from_driver, overflow) = crate::stack::enter_kernel();
    let outcome = {
        let inner: &Inner = &arc;
        let mut ctx = Ctx::locked(inner, tid, api);
        match overflow {
            Some(overflow) => {
                let stop = stack_overflow(&ctx, &overflow);
                run_call(&mut ctx, |_| Err::<R, Stop>(stop))
            }
            None => run_call(&mut ctx, f),
        }
    };
    match outcome {
        Ok(value) => {
            crate::stack::leave_kernel(from_driver);
            value
        }
        Err(parking) => {
            drop(arc);
            sched::park_forever(parking)
        }
    }
}

fn run_call<R>(
    ctx: &mut Ctx<'_>,
    f: impl FnOnce(&mut Ctx<'_>) -> KResult<R>,
) -> Result<R, Arc<(Mutex<()>, std::sync::Condvar)>> {
    let result = ctx.yield_point().and_then(|()| {
        let (thread, irql, routine, time) = {
            let t = &ctx.threads[ctx.tid];
            (t.name.clone(), t.irql, ctx.routine(), ctx.clock)
        };
        let api = ctx.api;
        ctx.trace.push(api, &thread, irql, routine, time);
        crate::irql::check_ddi(ctx)?;
        f(ctx)
    });
    match result {
        Ok(value) => Ok(value),
        Err(stop) => {
            let tid = ctx.tid;
            if let Stop::Violation(v) = stop
                && ctx.halt.is_none()
            {
                ctx.halt = Some(Halt::BugCheck(v));
            }
            ctx.threads[tid].status = Status::Parked;
            let parking = Arc::clone(&ctx.threads[tid].parking);
            if ctx.sched.mode.is_serial() {
                ctx.sched.baton = None;
            }
            ctx.inner.cv.notify_all();
            Err(parking)
        }
    }
}

/// The driver called the kernel already deeper into its stack than its budget: on
/// Windows the kernel's frames would run off the stack (0x7F, double fault).
fn stack_overflow(ctx: &Ctx<'_>, overflow: &crate::stack::Overflow) -> Stop {
    ctx.violation(Violation::new(
        0x7F,
        [8, 0, 0, 0],
        "UNEXPECTED_KERNEL_MODE_TRAP",
        format!(
            "kernel stack overflow (double fault): the driver called {} {} bytes below the routine's entry; the budget is {} bytes (Windows x64 kernel stacks are {} bytes).",
            ctx.api,
            overflow.used,
            overflow.allowed,
            crate::stack::KERNEL_STACK_SIZE
        ),
    ))
}

/// A kernel export called from a thread ntsim did not create: the test called driver
/// code directly. Rust cannot unwind out of the `extern "C"` export, so say why and stop.
fn off_machine(api: &str) -> ! {
    eprintln!(
        "ntsim: {api} was called from a thread that is not a simulated thread ({:#x}/{}). \
         Call driver code through Machine (load_driver, Process::...) so it runs on the machine.",
        code::NTSIM_RULE,
        ntsim_rule::KERNEL_CALL_OFF_MACHINE
    );
    std::process::abort()
}

/// A simulated NT machine. Dropping it stops its threads.
pub struct Machine {
    pub(crate) inner: Arc<Inner>,
}

/// A test's failure to reach the state it waited for.
#[derive(Clone, Debug)]
pub enum Stopped {
    /// A check fired.
    BugCheck(Box<Violation>),
    /// Nothing can run and no timer is due: the awaited event never happens.
    Hang(String),
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stopped::BugCheck(v) => write!(f, "{v}"),
            Stopped::Hang(what) => write!(f, "hang: {what}"),
        }
    }
}

impl std::error::Error for Stopped {}

impl Machine {
    /// Boots a machine: its processors' DPC threads and the worker threads start.
    pub fn new(config: Config) -> Machine {
        crate::crash::install();
        let cpus = config.cpus.max(1);
        let state = State {
            sched: sched::Scheduler::new(config.mode),
            threads: Vec::new(),
            cpus: (0..cpus).map(|_| Cpu { dpcs: Default::default(), queued_total: 0, running: None }).collect(),
            clock: 0,
            time_increment: config.time_increment.max(1),
            time_passes: config.time_passes,
            time_rng: sched::Rng::new(config.mode.seed() ^ 0x5449_4D45),
            halt: None,
            reports: Vec::new(),
            trace: Trace::new(config.trace_limit),
            hostile: config.hostile.clone(),
            slow_cancel: config.slow_cancel,
            missing_exports: config.missing_exports.clone(),
            completion_apc: config.completion_apc,
            pool: crate::pool::Pool::default(),
            ob: crate::ob::Objects::default(),
            ke: crate::ke::Ke::default(),
            io: crate::io::Io::default(),
            registry: crate::registry::Registry::with_standard_keys(),
            faults: crate::faults::Faults::default(),
            mailboxes: Vec::new(),
        };
        let machine = Machine { inner: Arc::new(Inner { state: parking_lot::Mutex::new(state), cv: Condvar::new() }) };
        {
            let mut state = machine.inner.lock();
            for cpu in 0..cpus {
                crate::ke::dpc::start_processor(&machine.inner, &mut state, cpu);
            }
            for n in 0..config.workers {
                crate::ke::work::start_worker(&machine.inner, &mut state, n);
            }
        }
        machine.run_until_idle();
        machine
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }

    /// Lets simulated threads run until none can.
    pub fn run_until_idle(&self) {
        let guard = self.lock();
        drop(sched::run_until_idle(&self.inner, guard));
    }

    /// Runs until `done` holds, moving the clock to the next timer whenever nothing can
    /// run. Fails with the bug check, or with a hang if nothing is left to happen.
    pub(crate) fn run_until(&self, what: &str, mut done: impl FnMut(&mut State) -> bool) -> Result<(), Stopped> {
        let mut guard = self.lock();
        loop {
            guard = sched::run_until_idle(&self.inner, guard);
            if let Some(halt) = &guard.halt {
                return Err(match halt {
                    Halt::BugCheck(v) => Stopped::BugCheck(v.clone()),
                    Halt::Shutdown => Stopped::Hang(format!("machine shut down before {what}")),
                });
            }
            if done(&mut guard) {
                return Ok(());
            }
            match crate::ke::timer::next_event(&guard) {
                Some(when) => crate::ke::timer::advance_to(&mut guard, when),
                None => {
                    return Err(Stopped::Hang(format!("{what} never happens: no thread can run and no timer is set")));
                }
            }
            self.inner.cv.notify_all();
        }
    }

    /// Moves simulated time forward by `delta_100ns`, firing timers (and their DPCs)
    /// in order, and running whatever becomes runnable at each step.
    pub fn advance(&self, delta_100ns: u64) -> Result<(), Stopped> {
        let target = self.lock().clock + delta_100ns;
        loop {
            let mut guard = sched::run_until_idle(&self.inner, self.lock());
            if let Some(Halt::BugCheck(v)) = &guard.halt {
                return Err(Stopped::BugCheck(v.clone()));
            }
            match crate::ke::timer::next_event(&guard) {
                Some(when) if when <= target => crate::ke::timer::advance_to(&mut guard, when),
                _ => {
                    crate::ke::timer::advance_to(&mut guard, target);
                    drop(guard);
                    self.inner.cv.notify_all();
                    self.run_until_idle();
                    // Only a bug check stops `advance`; non-fatal reports are for the verdict.
                    return match &self.lock().halt {
                        Some(Halt::BugCheck(v)) => Err(Stopped::BugCheck(v.clone())),
                        _ => Ok(()),
                    };
                }
            }
            drop(guard);
            self.inner.cv.notify_all();
        }
    }

    /// Moves the clock by `delta_100ns` and queues what falls due (timer DPCs, IoTimer
    /// ticks) without running anything: the next run interleaves them with whatever
    /// the test posted meanwhile.
    pub fn tick(&self, delta_100ns: u64) {
        let mut guard = self.lock();
        let target = guard.clock + delta_100ns;
        while let Some(when) = crate::ke::timer::next_event(&guard).filter(|&w| w <= target) {
            if when == guard.clock && crate::ke::timer::nothing_due(&guard) {
                break;
            }
            crate::ke::timer::advance_to(&mut guard, when);
        }
        crate::ke::timer::advance_to(&mut guard, target);
    }

    /// Advances by whole milliseconds.
    pub fn advance_ms(&self, ms: u64) -> Result<(), Stopped> {
        self.advance(ms * 10_000)
    }

    /// Simulated time since boot, in 100 ns units.
    pub fn now(&self) -> u64 {
        self.lock().clock
    }

    /// The system time now (KeQuerySystemTimePrecise): 100 ns units since 1601.
    pub fn system_time(&self) -> u64 {
        crate::ke::timer::BOOT_SYSTEM_TIME + self.lock().clock
    }

    /// The bug check that stopped the machine, if any, or else the first non-fatal
    /// report (its `fatal` is false).
    pub fn verdict(&self) -> Result<(), Stopped> {
        let state = self.lock();
        match &state.halt {
            Some(Halt::BugCheck(v)) => Err(Stopped::BugCheck(v.clone())),
            _ => state.reports.first().map_or(Ok(()), |v| Err(Stopped::BugCheck(Box::new(v.clone())))),
        }
    }

    /// The non-fatal violations recorded so far, oldest first (Verifier's non-fatal
    /// I/O errors: the machine kept running after each).
    pub fn reports(&self) -> Vec<Violation> {
        self.lock().reports.clone()
    }

    /// Every kernel call kept so far, oldest first.
    pub fn trace(&self) -> Vec<crate::trace::Call> {
        self.lock().trace.snapshot()
    }

    /// Runs `job` on a fresh simulated thread at PASSIVE_LEVEL and waits for its result.
    pub(crate) fn run_job<R: Send + 'static>(
        &self,
        name: &str,
        routine: Routine,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Stopped> {
        let slot: Arc<Mutex<Option<R>>> = Arc::new(Mutex::new(None));
        let out = Arc::clone(&slot);
        {
            let mut guard = self.lock();
            let tid = sched::spawn(&self.inner, &mut guard, name.to_owned(), 0, move || {
                let value = job();
                *out.lock().expect("job slot") = Some(value);
            });
            guard.threads[tid].routines.push(routine);
        }
        self.run_until(name, |_| slot.lock().expect("job slot").is_some())?;
        let value = slot.lock().expect("job slot").take().expect("job finished");
        Ok(value)
    }

    /// Fault injection plan for this machine.
    pub fn faults(&self) -> crate::faults::FaultHandle<'_> {
        crate::faults::FaultHandle { machine: self }
    }

    /// Pool counters.
    pub fn pool_stats(&self) -> crate::pool::Stats {
        self.lock().pool.stats()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let mut guard = self.lock();
        if guard.halt.is_none() {
            guard.halt = Some(Halt::Shutdown);
        }
        drop(guard);
        self.inner.cv.notify_all();
    }
}
