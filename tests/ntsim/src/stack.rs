//! Kernel stacks as small as Windows': a Windows x64 kernel stack is 24 KiB
//! (KERNEL_STACK_SIZE 0x6000; DPCs run on a per-processor DPC stack, ISRs on the
//! interrupted thread's stack — "How do I keep my driver from running out of
//! kernel-mode stack?", Microsoft's driver tips). ntsim's threads keep large host
//! stacks, because ntsim's own frames run on them too, and measure the driver instead:
//!
//! - each entry into driver code (a dispatch, DPC, cancel, IoTimer or work routine, an
//!   ISR, DriverEntry or a system thread's start routine) arms a no-access guard page
//!   just below what its budget allows ([`BUDGET`] from the entry, less what an
//!   enclosing driver routine on the same thread already used);
//! - a driver frame that reaches the guard page faults, and the fault handler reports
//!   bug check 0x7F UNEXPECTED_KERNEL_MODE_TRAP with P1 = 8 (double fault), which is
//!   how a kernel stack overflow ends on Windows;
//! - a kernel call checks the driver's depth at the call as well;
//! - ntsim's own frames are not charged: when ntsim's code reaches the guard page the
//!   handler lifts it, and it is set again when the kernel call returns to the driver.

use std::cell::{Cell, RefCell};

/// Windows x64's kernel stack (KERNEL_STACK_SIZE).
pub const KERNEL_STACK_SIZE: usize = 0x6000;
/// What Windows' own frames take from it around a driver routine: the system-service
/// trap frame and the I/O manager above a dispatch routine, and the kernel's frames
/// below a call the driver makes. An ntsim allowance, not a documented figure.
pub const WINDOWS_FRAMES: usize = 4 * 1024;
/// The stack a driver's own frames may use from a routine's entry.
pub const BUDGET: usize = KERNEL_STACK_SIZE - WINDOWS_FRAMES;

const PAGE: usize = crate::special_pool::PAGE;

struct Entry {
    /// Stack pointer when the driver routine was entered.
    sp: usize,
    /// Stack pointer at the driver's latest kernel call from this routine.
    kernel_call_sp: usize,
    /// What this routine may use: [`BUDGET`] less what enclosing routines used.
    allowed: usize,
}

thread_local! {
    static ENTRIES: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
    /// The armed guard page (0: none) and whether it is no-access now. Read by the
    /// fault handler, so plain cells.
    static GUARD: Cell<usize> = const { Cell::new(0) };
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// The innermost driver entry and its allowance, for the fault report.
    static ENTRY_SP: Cell<usize> = const { Cell::new(0) };
    static ALLOWED: Cell<usize> = const { Cell::new(0) };
    /// This thread's stack: lowest usable address, and the pointer when it started.
    static STACK_LOW: Cell<usize> = const { Cell::new(0) };
    static STACK_TOP: Cell<usize> = const { Cell::new(0) };
    /// The thread is running driver code (not ntsim's).
    static IN_DRIVER: Cell<bool> = const { Cell::new(true) };
}

/// The current stack pointer.
#[inline]
fn sp() -> usize {
    let sp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads the stack pointer register; no memory is touched.
    unsafe {
        std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let marker = 0u8;
        sp = std::ptr::addr_of!(marker) as usize;
    }
    sp
}

fn set_access(page: usize, access: bool) {
    let prot = if access { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_NONE };
    // SAFETY: `page` is a whole page of this thread's own stack, below every live frame
    // when made no-access.
    unsafe { libc::mprotect(page as *mut libc::c_void, PAGE, prot) };
}

/// Moves the guard to `page` (0: none).
fn arm(page: usize) {
    let old = GUARD.get();
    if old == page && (page == 0 || ARMED.get()) {
        return;
    }
    if old != 0 && ARMED.get() && old != page {
        set_access(old, true);
    }
    ARMED.set(false);
    GUARD.set(page);
    if page != 0 {
        set_access(page, false);
        ARMED.set(true);
    }
}

/// The guard page for a routine entered at `sp` that may use `allowed` bytes: the
/// whole page below the limit, so no allowed byte is in it.
fn guard_for(sp: usize, allowed: usize) -> usize {
    let limit = sp.saturating_sub(allowed);
    let page = (limit & !(PAGE - 1)).saturating_sub(PAGE);
    // Never at or below the host's own guard area.
    if page > STACK_LOW.get() + 2 * PAGE { page } else { 0 }
}

fn push(sp: usize, allowed: usize) {
    ENTRIES.with_borrow_mut(|entries| entries.push(Entry { sp, kernel_call_sp: sp, allowed }));
    ENTRY_SP.set(sp);
    ALLOWED.set(allowed);
    arm(guard_for(sp, allowed));
}

/// The allowance of a routine entered now: what the enclosing one had left at its
/// kernel call.
fn nested_allowance() -> usize {
    ENTRIES.with_borrow(|entries| {
        entries.last().map_or(BUDGET, |outer| outer.allowed.saturating_sub(outer.sp - outer.kernel_call_sp))
    })
}

/// A simulated thread starts: note its stack, give it a signal stack large enough for
/// ntsim's fault handler.
pub(crate) fn thread_started() -> AltStack {
    STACK_TOP.set(sp());
    // SAFETY: pthread_getattr_np fills `attr` for the calling thread; it is destroyed
    // after reading the stack bounds.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &raw mut attr) == 0 {
            let mut low: *mut libc::c_void = std::ptr::null_mut();
            let mut size: libc::size_t = 0;
            libc::pthread_attr_getstack(&raw const attr, &raw mut low, &raw mut size);
            libc::pthread_attr_destroy(&raw mut attr);
            STACK_LOW.set(low as usize);
        }
    }
    AltStack::install()
}

/// A simulated thread ends: its stack pages go back to the host as they were.
pub(crate) fn thread_ending() {
    arm(0);
    ENTRIES.with_borrow_mut(Vec::clear);
}

/// Runs driver routine `f` with its stack budget armed.
pub(crate) fn driver_routine<R>(f: impl FnOnce() -> R) -> R {
    let allowed = nested_allowance();
    push(sp(), allowed);
    let was_in_driver = IN_DRIVER.replace(true);
    let result = f();
    IN_DRIVER.set(was_in_driver);
    ENTRIES.with_borrow_mut(|entries| {
        entries.pop();
        if let Some(outer) = entries.last() {
            ENTRY_SP.set(outer.sp);
            ALLOWED.set(outer.allowed);
            arm(guard_for(outer.sp, outer.allowed));
        }
    });
    // The outermost guard stays armed: the next routine entered from the same depth
    // needs no system call, and ntsim's code that reaches it has it lifted.
    result
}

/// A driver's stack use beyond its budget, found at a kernel call.
pub(crate) struct Overflow {
    pub(crate) used: usize,
    pub(crate) allowed: usize,
}

/// Runs ntsim's own work (a processor's DPC loop, a worker, a client job) outside any
/// driver routine's accounting.
pub(crate) fn ntsim_work<R>(f: impl FnOnce() -> R) -> R {
    let was_in_driver = IN_DRIVER.replace(false);
    let result = f();
    IN_DRIVER.set(was_in_driver);
    result
}

/// A kernel call starts. Returns whether the caller was driver code, for
/// [`leave_kernel`], and the overflow if the driver was already deeper than its
/// budget when it called.
pub(crate) fn enter_kernel() -> (bool, Option<Overflow>) {
    let from_driver = IN_DRIVER.replace(false);
    if !from_driver {
        return (false, None);
    }
    let here = sp();
    let overflow = ENTRIES.with_borrow_mut(|entries| {
        if entries.is_empty() {
            // Driver code with no routine entry: a thread whose body is driver code
            // (DriverEntry, a system thread). Its budget counts from the thread's start.
            let top = STACK_TOP.get();
            let entry = Entry { sp: top, kernel_call_sp: top, allowed: BUDGET };
            entries.push(entry);
            ENTRY_SP.set(top);
            ALLOWED.set(BUDGET);
            arm(guard_for(top, BUDGET));
        }
        let entry = entries.last_mut().expect("an entry");
        entry.kernel_call_sp = here;
        let used = entry.sp.saturating_sub(here);
        (used > entry.allowed).then_some(Overflow { used, allowed: entry.allowed })
    });
    (true, overflow)
}

/// Back from ntsim's code to the caller `enter_kernel` saw.
pub(crate) fn leave_kernel(to_driver: bool) {
    IN_DRIVER.set(to_driver);
    if to_driver && GUARD.get() != 0 && !ARMED.get() {
        set_access(GUARD.get(), false);
        ARMED.set(true);
    }
}

/// Runs `f`, ntsim's stand-in for an inline DDI (`wdm.h` code compiled into the
/// driver), as driver code: a fault in it is the driver's.
pub(crate) fn as_driver_code<R>(f: impl FnOnce() -> R) -> R {
    let was_in_driver = IN_DRIVER.replace(true);
    let result = f();
    IN_DRIVER.set(was_in_driver);
    result
}

/// Whether the thread is in driver code, for the fault handler.
pub(crate) fn in_driver() -> bool {
    IN_DRIVER.get()
}

/// What a fault at `address` means for this thread's stack (called by the fault
/// handler).
pub(crate) enum StackFault {
    /// Not a stack guard.
    No,
    /// ntsim's own frames reached the driver's guard page: lifted, retry.
    Lifted,
    /// The driver's frames overflowed: bytes used from the entry, and the allowance.
    Overflow { used: usize, allowed: usize },
}

pub(crate) fn on_fault(address: usize) -> StackFault {
    let guard = GUARD.get();
    if guard != 0 && ARMED.get() && (guard..guard + PAGE).contains(&address) {
        if !IN_DRIVER.get() {
            set_access(guard, true);
            ARMED.set(false);
            return StackFault::Lifted;
        }
        return StackFault::Overflow { used: ENTRY_SP.get().saturating_sub(address), allowed: ALLOWED.get() };
    }
    let low = STACK_LOW.get();
    if low != 0 && address < low && address + 16 * PAGE >= low {
        // The host's own guard below the whole stack.
        return StackFault::Overflow { used: ENTRY_SP.get().saturating_sub(address), allowed: ALLOWED.get() };
    }
    StackFault::No
}

/// A signal stack for the fault handler, larger than the host default (ntsim formats
/// the report on it).
pub(crate) struct AltStack {
    base: usize,
    previous: libc::stack_t,
}

const ALT_STACK: usize = 256 * 1024;

impl AltStack {
    fn install() -> AltStack {
        // SAFETY: a fresh private mapping used only as this thread's signal stack.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ALT_STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        // SAFETY: zeroed stack_t values are valid; sigaltstack reads `new` and writes
        // the previous one.
        let mut previous: libc::stack_t = unsafe { std::mem::zeroed() };
        if base == libc::MAP_FAILED {
            return AltStack { base: 0, previous };
        }
        let new = libc::stack_t { ss_sp: base, ss_flags: 0, ss_size: ALT_STACK };
        // SAFETY: as above.
        unsafe { libc::sigaltstack(&raw const new, &raw mut previous) };
        AltStack { base: base as usize, previous }
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        if self.base == 0 {
            return;
        }
        // SAFETY: restores the signal stack the thread had, then unmaps ours, which is
        // no longer in use (the thread is not in a signal handler here).
        unsafe {
            libc::sigaltstack(&raw const self.previous, std::ptr::null_mut());
            libc::munmap(self.base as *mut libc::c_void, ALT_STACK);
        }
    }
}
