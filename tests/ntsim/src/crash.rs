//! A driver's wild memory access becomes a bug check, not a host crash.
//!
//! A SIGSEGV or SIGBUS on a simulated thread is what a page fault in kernel mode is:
//! ntsim records bug check 0x50 PAGE_FAULT_IN_NONPAGED_AREA (faulting address in P1)
//! and parks the thread inside the signal handler — driver frames cannot be unwound.
//! Faults on threads ntsim does not know keep the default behaviour.

use std::sync::Once;

use crate::checker::Violation;
use crate::machine::Halt;
use crate::sched::{self, Status};

static INSTALL: Once = Once::new();

/// Installs the handler once per process.
pub(crate) fn install() {
    INSTALL.call_once(|| {
        for signal in [libc::SIGSEGV, libc::SIGBUS] {
            // SAFETY: a zeroed sigaction is a valid starting point; the handler has the
            // three-argument form SA_SIGINFO requires, and runs on the alternate stack
            // Rust gives every thread.
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

extern "C" fn on_fault(signal: libc::c_int, info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let address = unsafe { (*info).si_addr() } as u64;
    let Some((machine, tid)) = sched::current() else {
        // Not a simulated thread: restore the default action and let the fault recur.
        // SAFETY: resetting a signal disposition is async-signal-safe.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
        return;
    };
    // try_lock: if this thread faulted inside ntsim while holding the lock, do not
    // deadlock; the machine then just stops making progress and the test sees a hang.
    if let Some(mut state) = machine.state.try_lock() {
        let thread = &state.threads[tid];
        let mut violation = Violation::new(
            0x50,
            [address, 0, 0, 0],
            "PAGE_FAULT_IN_NONPAGED_AREA",
            format!(
                "the driver touched invalid memory at {address:#x} (a use after free, or a NULL or stale pointer)."
            ),
        );
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
    }
    drop(machine);
    loop {
        // SAFETY: pause is async-signal-safe; the thread stays here for good.
        unsafe { libc::pause() };
    }
}
