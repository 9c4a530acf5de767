//! Pool, bug checks and debug output.

use crate::checker::{Violation, c4, code};
use crate::machine::kcall;
use crate::pool::FreeError;
use crate::wdk_sys::{
    POOL_FLAG_NON_PAGED, POOL_FLAG_NON_PAGED_EXECUTE, POOL_FLAG_PAGED, POOL_FLAGS, PUNICODE_STRING, PVOID, SIZE_T,
    ULONG, ULONG_PTR,
};

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ExAllocatePool2(Flags: POOL_FLAGS, NumberOfBytes: SIZE_T, Tag: ULONG) -> PVOID {
    kcall("ExAllocatePool2", |ctx| {
        let irql = ctx.irql();
        // 0xC4's pool-type parameter is a POOL_TYPE: the flags' NonPagedPool (0),
        // PagedPool (1) or NonPagedPoolNx (512).
        let pool_type = if Flags & POOL_FLAG_PAGED != 0 {
            1
        } else if Flags & POOL_FLAG_NON_PAGED != 0 {
            512
        } else {
            0
        };
        if NumberOfBytes == 0 {
            return Err(ctx.violation(Violation::new(
                code::DRIVER_VERIFIER_DETECTED_VIOLATION,
                [c4::ZERO_SIZE_ALLOCATION, u64::from(irql), pool_type, 0],
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format!("ExAllocatePool2 (tag {Tag:#x}) was asked for zero bytes."),
            )));
        }
        let limit = if Flags & POOL_FLAG_PAGED != 0 { crate::irql::APC_LEVEL } else { crate::irql::DISPATCH_LEVEL };
        // The pool types ExAllocatePool2 accepts (one must be chosen).
        let pool_types = POOL_FLAG_PAGED | POOL_FLAG_NON_PAGED | POOL_FLAG_NON_PAGED_EXECUTE;
        if irql > limit || Flags & pool_types == 0 {
            let rule =
                if Flags & POOL_FLAG_PAGED != 0 { c4::PAGED_ALLOCATION_IRQL } else { c4::NONPAGED_ALLOCATION_IRQL };
            return Err(ctx.violation(Violation::new(code::DRIVER_VERIFIER_DETECTED_VIOLATION, [rule, u64::from(irql), pool_type, NumberOfBytes], "DRIVER_VERIFIER_DETECTED_VIOLATION", format!("ExAllocatePool2(flags {Flags:#x}) at IRQL {irql}: paged pool needs IRQL <= APC_LEVEL, nonpaged <= DISPATCH_LEVEL, and one of them must be chosen."))));
        }
        if ctx.should_fail() {
            ctx.pool.note_failure();
            return Ok(std::ptr::null_mut());
        }
        let pool_type = if Flags & POOL_FLAG_PAGED != 0 {
            crate::pool::pool_type::PAGED
        } else if Flags & POOL_FLAG_NON_PAGED != 0 {
            crate::pool::pool_type::NON_PAGED_NX
        } else {
            crate::pool::pool_type::NON_PAGED
        };
        Ok(ctx.pool.allocate(usize::try_from(NumberOfBytes).expect("size"), Tag, pool_type).cast())
    })
}
const _: crate::wdk_sys::fnsig::ExAllocatePool2 = ExAllocatePool2;

/// ExAllocatePoolWithTag (not in wdk-sys's bindings: wdk-build blocks it in favour of
/// ExAllocatePool2, but down-level drivers resolve it at run time). Unlike
/// ExAllocatePool2 it does not zero: ntsim fills the block with 0xCD so a driver that
/// relies on zeroed memory sees garbage, as it would on Windows.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ExAllocatePoolWithTag(PoolType: i32, NumberOfBytes: SIZE_T, Tag: ULONG) -> PVOID {
    // NonPagedPool 0, PagedPool 1, NonPagedPoolNx 512 (and their variants' low bits).
    let flags = if PoolType & 1 == 1 { POOL_FLAG_PAGED } else { POOL_FLAG_NON_PAGED };
    kcall("ExAllocatePoolWithTag", |ctx| {
        let irql = ctx.irql();
        if NumberOfBytes == 0 {
            return Err(ctx.violation(Violation::new(
                code::DRIVER_VERIFIER_DETECTED_VIOLATION,
                [c4::ZERO_SIZE_ALLOCATION, u64::from(irql), PoolType as u64, 0],
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format!("ExAllocatePoolWithTag (tag {Tag:#x}) was asked for zero bytes."),
            )));
        }
        let limit = if flags == POOL_FLAG_PAGED { crate::irql::APC_LEVEL } else { crate::irql::DISPATCH_LEVEL };
        if irql > limit {
            let rule = if flags == POOL_FLAG_PAGED { c4::PAGED_ALLOCATION_IRQL } else { c4::NONPAGED_ALLOCATION_IRQL };
            return Err(ctx.violation(Violation::new(
                code::DRIVER_VERIFIER_DETECTED_VIOLATION,
                [rule, u64::from(irql), PoolType as u64, NumberOfBytes],
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format!("ExAllocatePoolWithTag(pool type {PoolType}) at IRQL {irql}."),
            )));
        }
        if ctx.should_fail() {
            ctx.pool.note_failure();
            return Ok(std::ptr::null_mut());
        }
        let size = usize::try_from(NumberOfBytes).expect("size");
        let block = ctx.pool.allocate(size, Tag, PoolType as u32);
        // SAFETY: a fresh block of `size` bytes.
        unsafe { std::ptr::write_bytes(block, 0xCD, size) };
        Ok(block.cast())
    })
}

/// The kernel routines a driver can look up by name, and where they are.
fn routine_address(name: &str) -> Option<PVOID> {
    Some(match name {
        "ExAllocatePool2" => ExAllocatePool2 as *const () as PVOID,
        "ExAllocatePoolWithTag" => ExAllocatePoolWithTag as *const () as PVOID,
        "ExFreePoolWithTag" => ExFreePoolWithTag as *const () as PVOID,
        "ExFreePool" => ExFreePool as *const () as PVOID,
        _ => return crate::hal::routine_address(name),
    })
}

/// Looks up a routine by name. `Config::missing_exports` simulates an older kernel
/// (or Wine) that lacks some; `Hostile::odd_routine_addresses` returns odd addresses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn MmGetSystemRoutineAddress(SystemRoutineName: PUNICODE_STRING) -> PVOID {
    kcall("MmGetSystemRoutineAddress", |ctx| {
        // SAFETY: the driver passed a valid name.
        let Some(name) = (unsafe { crate::io::device::read_unicode(SystemRoutineName) }) else {
            return Ok(std::ptr::null_mut());
        };
        if ctx.missing_exports.contains(&name) {
            return Ok(std::ptr::null_mut());
        }
        let odd = ctx.hostile.odd_routine_addresses;
        Ok(routine_address(&name).map_or(std::ptr::null_mut(), |routine| {
            if odd { crate::thunk::odd_address(routine as usize) as PVOID } else { routine }
        }))
    })
}
const _: crate::wdk_sys::fnsig::MmGetSystemRoutineAddress = MmGetSystemRoutineAddress;

fn free(api: &'static str, pointer: PVOID, tag: Option<ULONG>) {
    kcall(api, |ctx| {
        if let (Some(tag), Some(actual)) = (tag, ctx.pool.tag_of(pointer.cast()))
            && tag != actual
        {
            return Err(ctx.violation(Violation::new(
                code::BAD_POOL_CALLER,
                [0xA, pointer as u64, u64::from(actual), u64::from(tag)],
                "BAD_POOL_CALLER",
                format!(
                    "ExFreePoolWithTag with tag '{}' on a block allocated with tag '{}'.",
                    crate::pool::tag_text(tag),
                    crate::pool::tag_text(actual)
                ),
            )));
        }
        crate::pool::check_free(ctx, api, pointer.cast())?;
        match ctx.pool.free(pointer.cast()) {
            Ok(()) => Ok(()),
            Err(FreeError::Twice) => Err(ctx.violation(Violation::new(
                code::DRIVER_VERIFIER_DETECTED_VIOLATION,
                [c4::DOUBLE_FREE, pointer as u64, 0, 0],
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format!("{api} on {pointer:p}, which was already freed (double free)."),
            ))),
            Err(FreeError::Unknown) => Err(ctx.violation(Violation::new(
                code::DRIVER_VERIFIER_DETECTED_VIOLATION,
                [c4::FREE_UNKNOWN_POOL, pointer as u64, 0, 0],
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format!("{api} on {pointer:p}, which is not a pool allocation."),
            ))),
        }
    });
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ExFreePool(P: PVOID) {
    free("ExFreePool", P, None);
}
const _: crate::wdk_sys::fnsig::ExFreePool = ExFreePool;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ExFreePoolWithTag(P: PVOID, Tag: ULONG) {
    free("ExFreePoolWithTag", P, Some(Tag));
}
const _: crate::wdk_sys::fnsig::ExFreePoolWithTag = ExFreePoolWithTag;

/// The driver bug-checked itself (for example its panic handler did).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeBugCheckEx(
    BugCheckCode: ULONG,
    BugCheckParameter1: ULONG_PTR,
    BugCheckParameter2: ULONG_PTR,
    BugCheckParameter3: ULONG_PTR,
    BugCheckParameter4: ULONG_PTR,
) -> ! {
    kcall("KeBugCheckEx", |ctx| -> crate::machine::KResult<()> {
        Err(ctx.violation(Violation::new(
            BugCheckCode,
            [BugCheckParameter1, BugCheckParameter2, BugCheckParameter3, BugCheckParameter4],
            "KeBugCheckEx",
            "the driver called KeBugCheckEx.".to_owned(),
        )))
    });
    unreachable!("kcall parks the thread after a bug check")
}
const _: crate::wdk_sys::fnsig::KeBugCheckEx = KeBugCheckEx;

/// Receives each DbgPrint/DbgPrintEx line from the C shim.
#[unsafe(no_mangle)]
extern "C" fn ntsim_debug_output(component: u32, level: u32, text: *const core::ffi::c_char) {
    // The shim passes component u32::MAX for DbgPrint, which has no level.
    let level = (component != u32::MAX).then_some(level);
    // SAFETY: the shim passes a NUL-terminated buffer.
    let line = unsafe { std::ffi::CStr::from_ptr(text) }.to_string_lossy().trim_end().to_owned();
    kcall("DbgPrintEx", move |ctx| {
        if std::env::var_os("NTSIM_ECHO").is_some() {
            eprintln!("[{:>10.3} ms] {line}", ctx.clock as f64 / 10_000.0);
        }
        ctx.ke.debug_output.push(line);
        ctx.ke.debug_levels.push(level);
        Ok(())
    });
}

impl crate::machine::Machine {
    /// Every line the drivers printed, in order.
    pub fn debug_output(&self) -> Vec<String> {
        self.lock().ke.debug_output.clone()
    }

    /// The lines printed with DbgPrintEx at `level` (DPFLTR_ERROR_LEVEL is 0).
    pub fn debug_output_at(&self, level: u32) -> Vec<String> {
        let state = self.lock();
        let ke = &state.ke;
        let lines = ke.debug_output.iter().zip(&ke.debug_levels);
        lines.filter(|(_, l)| **l == Some(level)).map(|(text, _)| text.clone()).collect()
    }
}
