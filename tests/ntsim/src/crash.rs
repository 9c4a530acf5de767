//! A bad memory access becomes the bug check Windows raises for it, not a host crash.
//!
//! A SIGSEGV or SIGBUS on a simulated thread is a page fault in kernel mode. It is
//! classified the way Windows' page-fault path and KeBugCheck2 do it (the bug-check
//! reference pages; the reclassification is in the Windows Research Kernel's
//! KeBugCheck2):
//!
//! - a driver frame on its stack guard page: 0x7F UNEXPECTED_KERNEL_MODE_TRAP, P1 = 8
//!   (double fault, the end of a kernel stack overflow);
//! - at DISPATCH_LEVEL or above, any fault (freed, beyond the end, paged out, wild):
//!   0xD1 DRIVER_IRQL_NOT_LESS_OR_EQUAL when driver code faulted, 0x0A
//!   IRQL_NOT_LESS_OR_EQUAL when the kernel (ntsim) did — P1 address, P2 IRQL, P3
//!   0 read / 1 write / 8 execute, P4 the faulting instruction;
//! - below it, in special pool: 0xD5 DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL (0xCC for
//!   the kernel) for a freed block, 0xD6 DRIVER_PAGE_FAULT_BEYOND_END_OF_ALLOCATION
//!   (0xCD) past the end of one — P1 address, P2 0 read / 1 write, P3 instruction;
//!   a trimmed paged block is paged back in and the access retried;
//! - anything else: 0x50 PAGE_FAULT_IN_NONPAGED_AREA, P1 address, P2 0/1/8, P3
//!   instruction.
//!
//! The thread is then parked inside the signal handler (driver frames cannot be
//! unwound). If it faulted inside ntsim holding the machine's lock, the handler
//! releases the lock first, so the test still receives the bug check. Faults on
//! threads ntsim does not know keep the default behaviour.

use std::cell::Cell;
use std::sync::Once;

use crate::checker::Violation;
use crate::irql::APC_LEVEL;
use crate::machine::Halt;
use crate::sched::{self, Status};
use crate::special_pool::{self, Fault};
use crate::stack::{self, StackFault};

static INSTALL: Once = Once::new();

thread_local! {
    /// This thread's IRQL, mirrored from the machine state for the handler.
    static IRQL: Cell<u8> = const { Cell::new(0) };
    /// This thread holds the machine's lock.
    static HOLDS_STATE: Cell<bool> = const { Cell::new(false) };
}

pub(crate) fn note_irql(irql: u8) {
    IRQL.set(irql);
}

/// The address of this thread's IRQL value (what 0xC4/0x120-0x122 report as P2).
pub(crate) fn irql_cell() -> usize {
    IRQL.with(|cell| cell.as_ptr() as usize)
}

pub(crate) fn note_holds_state(holds: bool) {
    HOLDS_STATE.set(holds);
}

/// Installs the handler once per process.
pub(crate) fn install() {
    INSTALL.call_once(|| {
        for signal in [libc::SIGSEGV, libc::SIGBUS] {
            // SAFETY: a zeroed sigaction is a valid starting point; the handler has the
            // three-argument form SA_SIGINFO requires, and runs on the signal stack
            // every simulated thread installs (stack.rs).
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_fault as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&raw mut action.sa_mask);
                libc::sigaction(signal, &raw const action, std::ptr::null_mut());
            }
        }
    });
}

/// How the faulting instruction touched memory, from the x86-64 page-fault error code
/// (bit 1 write, bit 4 instruction fetch), and where it is.
#[derive(Clone, Copy)]
struct Access {
    write: bool,
    execute: bool,
    instruction: u64,
}

fn access_of(context: *mut libc::c_void) -> Access {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        // SAFETY: for SA_SIGINFO handlers the third argument is the interrupted
        // context, a ucontext_t.
        let gregs = unsafe { &(*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
        let error = gregs[libc::REG_ERR as usize] as u64;
        Access { write: error & 2 != 0, execute: error & 0x10 != 0, instruction: gregs[libc::REG_RIP as usize] as u64 }
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        let _ = context;
        Access { write: false, execute: false, instruction: 0 }
    }
}

/// The bug check for a fault at `address`, or `None` when the access may be retried.
fn classify(address: u64, access: Access) -> Option<Violation> {
    let driver = stack::in_driver();
    let irql = IRQL.get();
    let rw = u64::from(access.write);
    let rwx = if access.execute { 8 } else { rw };
    let who = if driver { "the driver" } else { "the kernel, on the driver's behalf," };
    match stack::on_fault(address as usize) {
        StackFault::Lifted => return None,
        StackFault::Overflow { used, allowed } => {
            return Some(Violation::new(
                0x7F,
                [8, 0, 0, 0],
                "UNEXPECTED_KERNEL_MODE_TRAP",
                format!(
                    "kernel stack overflow (double fault): the driver's frames reached {used} bytes below the routine's entry; the budget is {allowed} bytes (Windows x64 kernel stacks are {} bytes).",
                    stack::KERNEL_STACK_SIZE
                ),
            ));
        }
        StackFault::No => {}
    }
    let pool = special_pool::fault(address as usize, irql <= APC_LEVEL);
    if matches!(pool, Fault::PagedIn) {
        return None;
    }
    let what = match pool {
        Fault::Freed { block, size, kind } => format!("freed {} at {block:#x} ({size} bytes)", kind.describe()),
        Fault::BeyondEnd { block, size, kind } => {
            format!("past the end of {} at {block:#x} ({size} bytes)", kind.describe())
        }
        Fault::PagedOut { block, kind } => format!("paged pool ({} at {block:#x})", kind.describe()),
        Fault::Elsewhere | Fault::PagedIn => "memory that is not mapped".to_owned(),
    };
    if irql > APC_LEVEL {
        let (code, name) =
            if driver { (0xD1, "DRIVER_IRQL_NOT_LESS_OR_EQUAL") } else { (0x0A, "IRQL_NOT_LESS_OR_EQUAL") };
        return Some(Violation::new(
            code,
            [address, u64::from(irql), rwx, access.instruction],
            name,
            format!("{who} touched {what} at {address:#x} at IRQL {irql}."),
        ));
    }
    let (code, name, text) = match pool {
        Fault::Freed { .. } if driver => (0xD5, "DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL", "a use after free"),
        Fault::Freed { .. } => (0xCC, "PAGE_FAULT_IN_FREED_SPECIAL_POOL", "a use after free"),
        Fault::BeyondEnd { .. } if driver => (0xD6, "DRIVER_PAGE_FAULT_BEYOND_END_OF_ALLOCATION", "an overrun"),
        Fault::BeyondEnd { .. } => (0xCD, "PAGE_FAULT_BEYOND_END_OF_ALLOCATION", "an overrun"),
        _ => {
            return Some(Violation::new(
                0x50,
                [address, rwx, access.instruction, 0],
                "PAGE_FAULT_IN_NONPAGED_AREA",
                format!("{who} touched {what} at {address:#x} (a NULL, wild or stale pointer)."),
            ));
        }
    };
    Some(Violation::new(
        code,
        [address, rw, access.instruction, 0],
        name,
        format!("{who} touched {what} at {address:#x}: {text}."),
    ))
}

extern "C" fn on_fault(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let address = unsafe { (*info).si_addr() } as u64;
    let Some((machine, tid)) = sched::current() else {
        // Not a simulated thread: restore the default action and let the fault recur.
        // SAFETY: resetting a signal disposition is async-signal-safe.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
        return;
    };
    let Some(mut violation) = classify(address, access_of(context)) else { return };
    if HOLDS_STATE.replace(false) {
        // The fault is in ntsim's own code, inside a kernel call: this thread holds
        // the lock and will never run on to release it.
        // SAFETY: the lock is held by this thread, whose guard is never used again.
        unsafe { machine.state.force_unlock() };
    }
    let mut state = machine.state.lock();
    let thread = &state.threads[tid];
    violation.thread.clone_from(&thread.name);
    violation.routine = thread.routines.last().copied().unwrap_or(crate::trace::Routine::Kernel);
    violation.trace_tail = state.trace.tail(12);
    if state.halt.is_none() {
        state.halt = Some(Halt::BugCheck(Box::new(violation)));
    }
    state.threads[tid].status = Status::Parked;
    state.sched.baton = None;
    drop(state);
    machine.cv.notify_all();
    drop(machine);
    loop {
        // SAFETY: pause is async-signal-safe; the thread stays here for good.
        unsafe { libc::pause() };
    }
}
