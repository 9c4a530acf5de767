//! Simulated threads and the one scheduler that runs them.
//!
//! Every simulated thread is a real OS thread. In [`Mode::Seeded`] only the thread
//! holding the baton runs; at every kernel call (a scheduling point) the scheduler
//! hands the baton to a runnable thread chosen from the seed, so a schedule is
//! reproducible from its seed alone. In [`Mode::Free`] the threads run at once and
//! scheduling points only check for a bug check.
//!
//! Blocking is uniform: a thread states a condition over the machine state; whoever
//! changes the state re-evaluates blocked conditions and readies the satisfied threads.
//! When nothing can run, control returns to the test (the controller), which can move
//! the simulated clock or report a hang.

use std::sync::{Arc, Condvar, Mutex};

use parking_lot::MutexGuard;

use crate::machine::{Inner, State};

/// How simulated threads take turns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One thread at a time; uniformly random choice at every scheduling point.
    Seeded(u64),
    /// One thread at a time; PCT: random thread priorities with `depth` random
    /// priority-change points, which finds bugs of small depth with high probability.
    Pct {
        /// Seeds the priorities and change points.
        seed: u64,
        /// How many priority-change points: the bug depth PCT targets.
        depth: u32,
    },
    /// Real concurrency, for stress.
    Free,
}

impl Mode {
    pub(crate) fn is_serial(self) -> bool {
        !matches!(self, Mode::Free)
    }

    /// The schedule's seed (0 for `Free`).
    pub(crate) fn seed(self) -> u64 {
        match self {
            Mode::Seeded(seed) | Mode::Pct { seed, .. } => seed,
            Mode::Free => 0,
        }
    }
}

/// Identifies a simulated thread inside its machine.
pub type Tid = usize;

/// A condition a blocked thread waits for. It returns `Some(result)` when satisfied,
/// consuming what it waited for (an auto-reset event's signal, a semaphore count).
pub(crate) type WaitCondition = Box<dyn FnMut(&mut State) -> Option<i64> + Send>;

pub(crate) enum Status {
    /// Runnable (in serial modes it may be waiting for the baton).
    Ready,
    Blocked(WaitCondition),
    /// Its wait was satisfied with this result; runnable.
    Woken(i64),
    /// Returned to ntsim for good.
    Exited,
    /// Stopped inside driver code for good (after a bug check or
    /// PsTerminateSystemThread).
    Parked,
}

impl Status {
    fn runnable(&self) -> bool {
        matches!(self, Status::Ready | Status::Woken(_))
    }
}

/// Small, seedable, dependency-free PRNG (splitmix64).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % (n as u64)).expect("fits")
    }
}

/// The scheduler's part of the machine state.
pub(crate) struct Scheduler {
    pub(crate) mode: Mode,
    /// Serial modes: the thread allowed to run; `None` hands control to the controller.
    pub(crate) baton: Option<Tid>,
    pub(crate) rng: Rng,
    /// PCT priorities (higher runs first) and the steps at which the running thread's
    /// priority drops.
    priorities: Vec<u64>,
    change_points: Vec<u64>,
    pub(crate) steps: u64,
}

impl Scheduler {
    pub(crate) fn new(mode: Mode) -> Self {
        let mut rng = Rng::new(mode.seed());
        let change_points = match mode {
            Mode::Pct { depth, .. } => (0..depth).map(|_| rng.next_u64() % 2000).collect(),
            _ => Vec::new(),
        };
        Scheduler { mode, baton: None, rng, priorities: Vec::new(), change_points, steps: 0 }
    }

    pub(crate) fn thread_added(&mut self, tid: Tid) {
        let priority = self.rng.next_u64() | (1 << 40);
        if self.priorities.len() <= tid {
            self.priorities.resize(tid + 1, 0);
        }
        self.priorities[tid] = priority;
    }

    /// Picks who runs next among `candidates` (non-empty).
    fn pick(&mut self, current: Option<Tid>, candidates: &[Tid]) -> Tid {
        self.steps += 1;
        match self.mode {
            Mode::Pct { .. } => {
                if let Some(cur) = current
                    && self.change_points.contains(&self.steps)
                {
                    // Drop below every initial priority (those have bit 40 set).
                    self.priorities[cur] = self.steps;
                }
                *candidates.iter().max_by_key(|&&t| self.priorities[t]).expect("non-empty")
            }
            _ => candidates[self.rng.below(candidates.len())],
        }
    }
}

/// Per-thread bookkeeping kept in the machine state.
pub(crate) struct SimThread {
    pub(crate) name: String,
    pub(crate) status: Status,
    pub(crate) irql: u8,
    pub(crate) cpu: usize,
    /// Driver routines this thread is inside, innermost last (for the trace).
    pub(crate) routines: Vec<crate::trace::Routine>,
    /// A private parking place, so a parked thread holds no reference to the machine.
    pub(crate) parking: Arc<(Mutex<()>, Condvar)>,
}

thread_local! {
    static CURRENT: std::cell::RefCell<Option<(Arc<Inner>, Tid)>> = const { std::cell::RefCell::new(None) };
}

/// The machine and thread id of the calling simulated thread.
pub(crate) fn current() -> Option<(Arc<Inner>, Tid)> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Spawns a simulated thread that runs `body`, taking the first turn when scheduled.
pub(crate) fn spawn(
    inner: &Arc<Inner>,
    state: &mut State,
    name: String,
    irql: u8,
    body: impl FnOnce() + Send + 'static,
) -> Tid {
    let tid = state.threads.len();
    let cpu = tid % state.cpus.len();
    state.threads.push(SimThread {
        name: name.clone(),
        status: Status::Ready,
        irql,
        cpu,
        routines: Vec::new(),
        parking: Arc::new((Mutex::new(()), Condvar::new())),
    });
    state.sched.thread_added(tid);
    state.mailboxes.push(std::collections::VecDeque::new());
    let machine = Arc::clone(inner);
    std::thread::Builder::new()
        .name(name)
        .stack_size(512 * 1024)
        .spawn(move || {
            let signal_stack = crate::stack::thread_started();
            crate::crash::note_irql(irql);
            CURRENT.with(|c| *c.borrow_mut() = Some((Arc::clone(&machine), tid)));
            {
                let guard = machine.lock();
                let guard = wait_for_turn(&machine, guard, tid);
                drop(guard);
            }
            body();
            let mut guard = machine.lock();
            guard.threads[tid].status = Status::Exited;
            let guard = hand_off(&machine, guard, tid);
            drop(guard);
            machine.cv.notify_all();
            CURRENT.with(|c| c.borrow_mut().take());
            crate::stack::thread_ending();
            drop(signal_stack);
        })
        .expect("spawn simulated thread");
    tid
}

/// Serial modes: waits until `tid` holds the baton (or the machine stopped).
fn wait_for_turn<'a>(inner: &'a Inner, mut guard: MutexGuard<'a, State>, tid: Tid) -> MutexGuard<'a, State> {
    if !guard.sched.mode.is_serial() {
        return guard;
    }
    while guard.sched.baton != Some(tid) && !guard.halted() {
        inner.cv.wait(&mut guard);
    }
    guard
}

/// Threads that can run now (in free mode: are running).
pub(crate) fn running_threads(state: &State) -> usize {
    state.threads.iter().filter(|t| t.status.runnable()).count()
}

/// Re-evaluates every blocked thread's condition, readying the satisfied ones.
pub(crate) fn wake_satisfied(state: &mut State) {
    for tid in 0..state.threads.len() {
        if let Status::Blocked(_) = state.threads[tid].status {
            let Status::Blocked(mut condition) = std::mem::replace(&mut state.threads[tid].status, Status::Ready)
            else {
                unreachable!()
            };
            match condition(state) {
                Some(result) => state.threads[tid].status = Status::Woken(result),
                None => state.threads[tid].status = Status::Blocked(condition),
            }
        }
    }
}

/// Serial modes: passes the baton from `me` (which stays runnable or not, as its status
/// says) to a runnable thread, or to the controller when none is.
fn hand_off<'a>(inner: &'a Inner, mut guard: MutexGuard<'a, State>, me: Tid) -> MutexGuard<'a, State> {
    if !guard.sched.mode.is_serial() {
        return guard;
    }
    crate::ke::timer::maybe_pass_time(&mut guard);
    wake_satisfied(&mut guard);
    let candidates: Vec<Tid> = (0..guard.threads.len()).filter(|&t| guard.threads[t].status.runnable()).collect();
    guard.sched.baton =
        if candidates.is_empty() || guard.halted() { None } else { Some(guard.sched.pick(Some(me), &candidates)) };
    inner.cv.notify_all();
    guard
}

/// A scheduling point: in serial modes another runnable thread may run before the
/// caller continues. Returns `false` if the machine halted (bug check or shutdown).
pub(crate) fn yield_now<'a>(inner: &'a Inner, guard: MutexGuard<'a, State>, me: Tid) -> (MutexGuard<'a, State>, bool) {
    let guard = hand_off(inner, guard, me);
    let guard = wait_for_turn(inner, guard, me);
    let alive = !guard.halted();
    (guard, alive)
}

/// Blocks `me` until `condition` holds; returns its result, or `None` if the machine
/// halted meanwhile.
pub(crate) fn block_on<'a>(
    inner: &'a Inner,
    mut guard: MutexGuard<'a, State>,
    me: Tid,
    mut condition: WaitCondition,
) -> (MutexGuard<'a, State>, Option<i64>) {
    if let Some(result) = condition(&mut guard) {
        return (guard, Some(result));
    }
    guard.threads[me].status = Status::Blocked(condition);
    inner.cv.notify_all();
    guard = hand_off(inner, guard, me);
    loop {
        if guard.halted() {
            return (guard, None);
        }
        if let Status::Woken(result) = guard.threads[me].status
            && (!guard.sched.mode.is_serial() || guard.sched.baton == Some(me))
        {
            guard.threads[me].status = Status::Ready;
            return (guard, Some(result));
        }
        inner.cv.wait(&mut guard);
    }
}

/// Controller side, serial modes: lets simulated threads run until none is runnable.
/// Free mode: waits until every simulated thread is blocked.
pub(crate) fn run_until_idle<'a>(inner: &'a Inner, mut guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
    loop {
        wake_satisfied(&mut guard);
        inner.cv.notify_all();
        if guard.halted() {
            return guard;
        }
        if guard.sched.mode.is_serial() {
            let candidates: Vec<Tid> =
                (0..guard.threads.len()).filter(|&t| guard.threads[t].status.runnable()).collect();
            if candidates.is_empty() {
                return guard;
            }
            let next = guard.sched.pick(None, &candidates);
            guard.sched.baton = Some(next);
            inner.cv.notify_all();
            while guard.sched.baton.is_some() && !guard.halted() {
                inner.cv.wait(&mut guard);
            }
        } else {
            if running_threads(&guard) == 0 {
                return guard;
            }
            inner.cv.wait(&mut guard);
        }
    }
}

/// Parks the calling simulated thread for good, holding no reference to the machine.
/// Used after a bug check and by PsTerminateSystemThread: driver frames below cannot
/// be unwound (they are `extern "C"`), so the OS thread just stops here.
pub(crate) fn park_forever(parking: Arc<(Mutex<()>, Condvar)>) -> ! {
    CURRENT.with(|c| c.borrow_mut().take());
    let (lock, cv) = &*parking;
    let mut guard = lock.lock().expect("parking lock");
    loop {
        guard = cv.wait(guard).expect("parking lock");
    }
}
