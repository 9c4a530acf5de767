//! Odd code addresses, for `Hostile::odd_routine_addresses`.
//!
//! Nothing in the x64 ABI makes a function start at an even address: MSVC happens to
//! align functions, but an NT kernel built with GCC (ReactOS) packs them, and a routine
//! that MmGetSystemRoutineAddress returns can be odd. A driver that stores a flag in bit
//! 0 of such an address and masks it off before the call jumps one byte early. Under
//! the option, every routine address ntsim hands a driver is that of a thunk starting
//! at an odd address (the second byte of its own page) that jumps to the routine; the
//! byte before it is `hlt`, privileged in user mode, so a call one byte early faults
//! (SIGSEGV, reported as bug check 0x50) where a real kernel would run into the tail of
//! the previous function.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// Routine address → its thunk's (odd) address. Thunks live for the whole process:
/// drivers may keep the addresses, and they are the same for every machine.
static THUNKS: LazyLock<Mutex<HashMap<usize, usize>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// The odd address of a thunk that jumps to `routine`.
pub(crate) fn odd_address(routine: usize) -> usize {
    let mut thunks = THUNKS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    *thunks.entry(routine).or_insert_with(|| make_thunk(routine))
}

#[cfg(target_arch = "x86_64")]
fn make_thunk(routine: usize) -> usize {
    const PAGE: usize = 4096;
    const HLT: u8 = 0xF4;
    // movabs rax, routine; jmp rax. RAX carries no argument in either calling
    // convention, so the routine receives the caller's arguments and returns to it.
    let mut code = vec![0x48, 0xB8];
    code.extend_from_slice(&(routine as u64).to_le_bytes());
    code.extend_from_slice(&[0xFF, 0xE0]);
    // SAFETY: an anonymous private mapping of one page, written before it is made
    // executable and never written again.
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert!(page != libc::MAP_FAILED, "ntsim: mmap for a routine thunk failed");
        let bytes = page.cast::<u8>();
        std::ptr::write_bytes(bytes, HLT, PAGE);
        std::ptr::copy_nonoverlapping(code.as_ptr(), bytes.add(1), code.len());
        let protected = libc::mprotect(page, PAGE, libc::PROT_READ | libc::PROT_EXEC);
        assert!(protected == 0, "ntsim: mprotect for a routine thunk failed");
        bytes.add(1) as usize
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn make_thunk(_routine: usize) -> usize {
    panic!("ntsim: Hostile::odd_routine_addresses needs an x86_64 host (its thunks are x86_64 code)")
}
