//! What the standard library would otherwise provide: the process entry point, a heap
//! allocator over the process heap, and the panic handler.

use core::alloc::{GlobalAlloc, Layout};

use windows_sys::Win32::System::Memory::{GetProcessHeap, HEAP_ZERO_MEMORY, HeapAlloc, HeapFree, HeapReAlloc};
use windows_sys::Win32::System::Threading::ExitProcess;

/// HeapAlloc's blocks are aligned to MEMORY_ALLOCATION_ALIGNMENT, 16 bytes on x64.
const HEAP_ALIGNMENT: usize = 16;

struct ProcessHeap;

// SAFETY: HeapAlloc/HeapReAlloc/HeapFree on the process heap are thread-safe (the heap
// is serialized) and honour the size; larger alignments are refused with NULL.
unsafe impl GlobalAlloc for ProcessHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() > HEAP_ALIGNMENT {
            return core::ptr::null_mut();
        }
        // SAFETY: the process heap exists for the life of the process.
        unsafe { HeapAlloc(GetProcessHeap(), 0, layout.size()).cast() }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() > HEAP_ALIGNMENT {
            return core::ptr::null_mut();
        }
        // SAFETY: as in `alloc`.
        unsafe { HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, layout.size()).cast() }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the GlobalAlloc contract).
        unsafe { HeapFree(GetProcessHeap(), 0, ptr.cast()) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, _layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`, whose alignment the heap
        // already satisfies; HeapReAlloc keeps the contents.
        unsafe { HeapReAlloc(GetProcessHeap(), 0, ptr.cast(), new_size).cast() }
    }
}

#[global_allocator]
static HEAP: ProcessHeap = ProcessHeap;

/// The MSVC toolchain's marker that the program uses floating point (normally from
/// the C runtime, which this image does not link).
#[allow(non_upper_case_globals)]
#[unsafe(no_mangle)]
pub static _fltused: i32 = 0;

// __chkstk: the stack probe the compiler calls before a frame larger than a page (RAX =
// the frame's size). Windows commits a thread's stack one guard page at a time, so each
// page between the current stack pointer and the frame's end is touched in order. It
// preserves every register (only R10/R11 and flags may change) and leaves RSP alone;
// the caller subtracts RAX itself. Normally from the C runtime, not linked here.
core::arch::global_asm!(
    ".globl __chkstk",
    "__chkstk:",
    "push rcx",
    "push rax",
    // The caller's RSP: above the two pushes and the return address.
    "lea rcx, [rsp + 24]",
    "2:",
    "cmp rax, 0x1000",
    "jb 3f",
    "sub rcx, 0x1000",
    "test qword ptr [rcx], rcx",
    "sub rax, 0x1000",
    "jmp 2b",
    "3:",
    "sub rcx, rax",
    "test qword ptr [rcx], rcx",
    "pop rax",
    "pop rcx",
    "ret",
);

/// The image's entry point (`/ENTRY:mainCRTStartup`, see build.rs).
#[unsafe(no_mangle)]
pub extern "system" fn mainCRTStartup() -> ! {
    let code = crate::run();
    // SAFETY: ends the process; nothing runs after it.
    unsafe { ExitProcess(code) }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::out::say(&alloc::format!("FATAL: panic: {info}"));
    // SAFETY: ends the process; nothing runs after it.
    unsafe { ExitProcess(3) }
}
