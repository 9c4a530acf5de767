//! Tagged pool: ExAllocatePool2 / ExFreePool(WithTag), with leak and double-free
//! checks. Every block comes from special pool (`special_pool.rs`), so an overrun or
//! a use after free faults at once; the checks Verifier makes when a block is freed
//! (IRQL by pool type, live timers and DPCs inside it) are here.

use std::collections::HashMap;

use crate::checker::{Violation, c4, code};
use crate::irql::APC_LEVEL;
use crate::machine::{Ctx, KResult};
use crate::special_pool::{self, Kind};
use crate::wdk_sys::{KDPC, KTIMER};

/// Pool counters a test can read (for example: allocations per read on the hot path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Allocations that succeeded.
    pub allocations: u64,
    /// Frees.
    pub frees: u64,
    /// Allocations that failed (fault injection).
    pub failed: u64,
    /// Blocks allocated now.
    pub live_blocks: usize,
    /// Bytes allocated now.
    pub live_bytes: usize,
}

/// A pool block still allocated, as the leak report lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leak {
    /// The pool tag, as four characters.
    pub tag: String,
    /// How many blocks with that tag are still allocated.
    pub blocks: usize,
    /// Their total size in bytes.
    pub bytes: usize,
}

/// POOL_TYPE values (wdm.h) as Verifier reports them in its parameters.
pub(crate) mod pool_type {
    pub const NON_PAGED: u32 = 0;
    pub const PAGED: u32 = 1;
    pub const NON_PAGED_NX: u32 = 512;
}

struct Block {
    size: usize,
    tag: u32,
    pool_type: u32,
}

impl Block {
    fn paged(&self) -> bool {
        self.pool_type & 1 == pool_type::PAGED
    }
}

#[derive(Default)]
pub(crate) struct Pool {
    live: HashMap<usize, Block>,
    stats: Stats,
}

/// Pool tags read as four characters, first byte first.
pub fn tag_text(tag: u32) -> String {
    tag.to_le_bytes().iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '.' }).collect()
}

pub(crate) enum FreeError {
    Unknown,
    Twice,
}

impl Pool {
    /// Zeroed, 16-byte aligned memory, as ExAllocatePool2 returns. `pool_type` is the
    /// POOL_TYPE value (paged when its low bit is set).
    pub(crate) fn allocate(&mut self, size: usize, tag: u32, pool_type: u32) -> *mut u8 {
        let paged = pool_type & 1 == pool_type::PAGED;
        let ptr = special_pool::allocate(size, Kind::Pool, paged);
        self.live.insert(ptr as usize, Block { size, tag, pool_type });
        self.stats.allocations += 1;
        self.stats.live_blocks += 1;
        self.stats.live_bytes += size;
        ptr
    }

    pub(crate) fn note_failure(&mut self) {
        self.stats.failed += 1;
    }

    pub(crate) fn free(&mut self, ptr: *mut u8) -> Result<(), FreeError> {
        let Some(block) = self.live.remove(&(ptr as usize)) else {
            return Err(if special_pool::was_freed(ptr) { FreeError::Twice } else { FreeError::Unknown });
        };
        // A block of this pool's live set is a special-pool block: this cannot fail.
        let _ = special_pool::free(ptr);
        self.stats.frees += 1;
        self.stats.live_blocks -= 1;
        self.stats.live_bytes -= block.size;
        Ok(())
    }

    pub(crate) fn tag_of(&self, ptr: *mut u8) -> Option<u32> {
        self.live.get(&(ptr as usize)).map(|b| b.tag)
    }

    pub(crate) fn stats(&self) -> Stats {
        self.stats
    }

    /// Live blocks grouped by tag, sorted by tag.
    pub(crate) fn leaks(&self) -> Vec<Leak> {
        let mut by_tag: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        for block in self.live.values() {
            let entry = by_tag.entry(tag_text(block.tag)).or_default();
            entry.0 += 1;
            entry.1 += block.size;
        }
        by_tag.into_iter().map(|(tag, (blocks, bytes))| Leak { tag, blocks, bytes }).collect()
    }
}

impl Drop for Pool {
    /// The machine is gone: its blocks go back to special pool (no-access).
    fn drop(&mut self) {
        for &address in self.live.keys() {
            let _ = special_pool::free(address as *mut u8);
        }
    }
}

/// The checks Verifier makes on ExFreePool(WithTag) before the block goes: paged pool
/// freed above APC_LEVEL (0xC4/0x11: P2 IRQL, P3 pool type, P4 address, in bug check
/// 0xC4's parameter table), then a timer or DPC still live inside the block (0xC7).
/// Above DISPATCH_LEVEL the DDI's own IRQL rule (`irql.rs`) fires first.
pub(crate) fn check_free(ctx: &Ctx<'_>, api: &str, pointer: *mut u8) -> KResult<()> {
    let Some(block) = ctx.pool.live.get(&(pointer as usize)) else { return Ok(()) };
    let irql = ctx.irql();
    if block.paged() && irql > APC_LEVEL {
        return Err(ctx.violation(Violation::new(
            code::DRIVER_VERIFIER_DETECTED_VIOLATION,
            [c4::FREE_PAGED_POOL_IRQL, u64::from(irql), u64::from(block.pool_type), pointer as u64],
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format!("{api} of paged pool {pointer:p} at IRQL {irql}: paged pool may be freed at IRQL <= APC_LEVEL."),
        )));
    }
    if let Some((corrupted, after)) = special_pool::corrupted_slop(pointer) {
        // Bug check 0xC1: [address freed, address of the corrupted byte, reserved, 0x24
        // for bytes after the block / 0x23 for bytes before it in its page].
        let (rule, place) = if after {
            (crate::checker::c1::BYTES_AFTER_CORRUPTED, "after its end")
        } else {
            (crate::checker::c1::BYTES_BEFORE_CORRUPTED, "before its start, in its page")
        };
        return Err(ctx.violation(Violation::new(
            code::SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION,
            [pointer as u64, corrupted as u64, 0, rule],
            "SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION",
            format!("{api} of {pointer:p}: the byte at {corrupted:#x}, {place}, was overwritten."),
        )));
    }
    check_timers_and_dpcs(ctx, pointer as usize, block.size, api)
}

/// Verifier's timer check on memory being freed (bug check 0xC7 TIMER_OR_DPC_INVALID:
/// P1 0 for a timer, 1 for a DPC, P2 the object, P3/P4 the range): a set KTIMER, the
/// KDPC a set timer will queue, or a queued KDPC that overlaps `[start, start + size)`.
/// A DPC whose routine is running is not checked: Windows no longer touches it, and a
/// routine may free its own KDPC; if it touches freed memory, special pool faults.
pub(crate) fn check_timers_and_dpcs(ctx: &Ctx<'_>, start: usize, size: usize, what: &str) -> KResult<()> {
    let end = start + size;
    let overlaps = |object: usize, object_size: usize| object + object_size > start && object < end;
    let mut timers: Vec<(usize, usize)> = ctx.ke.timers.set.iter().map(|(&t, s)| (t, s.dpc)).collect();
    timers.sort_unstable();
    let found = timers
        .iter()
        .find_map(|&(timer, _)| overlaps(timer, size_of::<KTIMER>()).then_some((0, timer, "a set KTIMER")))
        .or_else(|| {
            timers.iter().find_map(|&(_, dpc)| {
                (dpc != 0 && overlaps(dpc, size_of::<KDPC>())).then_some((1, dpc, "the KDPC of a set KTIMER"))
            })
        })
        .or_else(|| {
            let mut queued: Vec<usize> = ctx.ke.dpcs.inserted.keys().copied().collect();
            queued.sort_unstable();
            queued.into_iter().find(|&d| overlaps(d, size_of::<KDPC>())).map(|d| (1, d, "a queued KDPC"))
        });
    let Some((kind, object, text)) = found else { return Ok(()) };
    Err(ctx.violation(Violation::new(
        code::TIMER_OR_DPC_INVALID,
        [kind, object as u64, start as u64, end as u64],
        "TIMER_OR_DPC_INVALID",
        format!(
            "{what} frees {start:#x}..{end:#x}, which holds {text} at {object:#x}: KeCancelTimer / KeRemoveQueueDpc (and KeFlushQueuedDpcs) before freeing its memory."
        ),
    )))
}
