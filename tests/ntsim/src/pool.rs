//! Tagged pool: ExAllocatePool2 / ExFreePool(WithTag), with leak and double-free checks.

use std::alloc::Layout;
use std::collections::{HashMap, HashSet};

/// Pool counters a test can read (for example: allocations per read on the hot path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub allocations: u64,
    pub frees: u64,
    pub failed: u64,
    pub live_blocks: usize,
    pub live_bytes: usize,
}

/// A pool block still allocated, as the leak report lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leak {
    pub tag: String,
    pub blocks: usize,
    pub bytes: usize,
}

struct Block {
    layout: Layout,
    tag: u32,
}

#[derive(Default)]
pub(crate) struct Pool {
    live: HashMap<usize, Block>,
    /// Addresses freed and not reused since, to tell a double free from a wild one.
    freed: HashSet<usize>,
    /// Freed blocks are kept allocated for a while, as Driver Verifier's special pool
    /// does, so a use after free reads stale memory instead of crashing the host and
    /// the checker can still report the mistake it leads to.
    quarantine: std::collections::VecDeque<(usize, Layout)>,
    stats: Stats,
}

/// Pool tags read as four characters, first byte first.
pub fn tag_text(tag: u32) -> String {
    tag.to_le_bytes().iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '.' }).collect()
}

/// Freed blocks kept allocated (see `Pool::quarantine`).
const QUARANTINE: usize = 4096;

pub(crate) enum FreeError {
    Unknown,
    Twice,
}

impl Pool {
    /// Zeroed, 16-byte aligned memory, as ExAllocatePool2 returns.
    pub(crate) fn allocate(&mut self, size: usize, tag: u32) -> *mut u8 {
        let layout = Layout::from_size_align(size.max(1), 16).expect("pool layout");
        // SAFETY: the layout has non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "host out of memory");
        let addr = ptr as usize;
        self.freed.remove(&addr);
        self.live.insert(addr, Block { layout, tag });
        self.stats.allocations += 1;
        self.stats.live_blocks += 1;
        self.stats.live_bytes += size;
        ptr
    }

    pub(crate) fn note_failure(&mut self) {
        self.stats.failed += 1;
    }

    pub(crate) fn free(&mut self, ptr: *mut u8) -> Result<(), FreeError> {
        let addr = ptr as usize;
        let Some(block) = self.live.remove(&addr) else {
            return Err(if self.freed.contains(&addr) { FreeError::Twice } else { FreeError::Unknown });
        };
        self.quarantine.push_back((addr, block.layout));
        if self.quarantine.len() > QUARANTINE {
            let (old, layout) = self.quarantine.pop_front().expect("non-empty");
            self.freed.remove(&old);
            // SAFETY: allocated by `allocate` with this layout, freed by the driver, and
            // out of quarantine now.
            unsafe { std::alloc::dealloc(old as *mut u8, layout) };
        }
        self.freed.insert(addr);
        self.stats.frees += 1;
        self.stats.live_blocks -= 1;
        self.stats.live_bytes -= block.layout.size();
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
            entry.1 += block.layout.size();
        }
        by_tag.into_iter().map(|(tag, (blocks, bytes))| Leak { tag, blocks, bytes }).collect()
    }
}
