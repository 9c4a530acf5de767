//! Special pool: every block ntsim hands a driver (pool, IRPs and their system
//! buffers, file and device objects) is placed at the end of its own pages, against a
//! no-access guard page, and a freed block's pages become no-access until they are
//! reused much later. This is what Driver Verifier's Special Pool option does
//! ("Special Pool", Driver Verifier docs): an overrun or a use after free faults at
//! the instruction that makes it, and the fault handler (`crash.rs`) reports it the
//! way the kernel reclassifies such a page fault: 0xD5/0xCC for freed special pool,
//! 0xD6/0xCD beyond the end of an allocation.
//!
//! Paged pool is modelled as Verifier's Force IRQL Checking does it: whenever a
//! thread is at DISPATCH_LEVEL or above, all paged blocks are trimmed (no-access), so
//! a touch at raised IRQL faults; a touch at PASSIVE or APC level pages the block
//! back in.
//!
//! The address space is one process-wide arena (tests run many machines at once), so
//! the fault handler can classify any address without the machine's lock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The x64 page size.
pub const PAGE: usize = 4096;
/// Pool blocks are 16-byte aligned on x64 (MEMORY_ALLOCATION_ALIGNMENT).
const ALIGN: usize = 16;
/// Address space reserved from the host at a time.
const CHUNK: usize = 1 << 30;
/// Freed blocks kept no-access before their pages may be handed out again.
const QUARANTINE: usize = 4096;
/// What fills a block's page around it: the head (page start to the block) and the
/// slop between its end and the 16-byte boundary before the guard page. Verifier's
/// special pool fills and checks the same bytes when the block is freed (bug check
/// 0xC1's parameter 4 0x23 and 0x24); the value is ntsim's own.
const SLOP_PATTERN: u8 = 0x5B;

/// What a block holds, for the bug-check text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Pool,
    Irp,
    SystemBuffer,
    FileObject,
    DeviceObject,
}

impl Kind {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Kind::Pool => "a pool block",
            Kind::Irp => "an IRP",
            Kind::SystemBuffer => "an IRP's system buffer",
            Kind::FileObject => "a file object",
            Kind::DeviceObject => "a device object and its extension",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Live {
        paged: bool,
        resident: bool,
    },
    Freed,
    /// Out of quarantine, waiting in a free list.
    Unused,
}

struct Slot {
    /// Data pages (the guard page follows them).
    pages: usize,
    data: usize,
    size: usize,
    kind: Kind,
    state: State,
}

impl Slot {
    fn data_pages(start: usize, pages: usize) -> (usize, usize) {
        (start, pages * PAGE)
    }
}

struct Arena {
    chunks: Vec<(usize, usize)>,
    bump: usize,
    bump_end: usize,
    /// Every slot ever carved, by start address.
    slots: BTreeMap<usize, Slot>,
    /// Data-page count → unused slots of that size.
    free: BTreeMap<usize, Vec<usize>>,
    quarantine: VecDeque<usize>,
    /// Paged blocks currently accessible (slot starts).
    resident_paged: BTreeSet<usize>,
}

static ARENA: Mutex<Arena> = Mutex::new(Arena {
    chunks: Vec::new(),
    bump: 0,
    bump_end: 0,
    slots: BTreeMap::new(),
    free: BTreeMap::new(),
    quarantine: VecDeque::new(),
    resident_paged: BTreeSet::new(),
});

/// How many paged blocks are resident, so the common case (none) trims without the
/// arena's lock.
static RESIDENT_PAGED: AtomicUsize = AtomicUsize::new(0);

fn arena() -> std::sync::MutexGuard<'static, Arena> {
    ARENA.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn protect(start: usize, len: usize, access: bool) {
    let prot = if access { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_NONE };
    // SAFETY: the range is whole pages of the arena, which ntsim owns.
    let rc = unsafe { libc::mprotect(start as *mut libc::c_void, len, prot) };
    assert_eq!(
        rc,
        0,
        "mprotect of special pool pages failed ({}): each live block costs the process two \
         mappings, so more blocks than vm.max_map_count allows cannot be protected; keep fewer \
         allocations outstanding or raise vm.max_map_count",
        std::io::Error::last_os_error()
    );
}

impl Arena {
    fn carve(&mut self, pages: usize) -> usize {
        if let Some(start) = self.free.get_mut(&pages).and_then(Vec::pop) {
            return start;
        }
        let span = (pages + 1) * PAGE;
        if self.bump + span > self.bump_end {
            let len = CHUNK.max(span);
            // SAFETY: a fresh private reservation; no-access until carved.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            assert!(base != libc::MAP_FAILED, "cannot reserve special pool address space");
            self.chunks.push((base as usize, len));
            self.bump = base as usize;
            self.bump_end = base as usize + len;
        }
        let start = self.bump;
        self.bump += span;
        start
    }

    fn slot_at(&self, address: usize) -> Option<(usize, &Slot)> {
        let (&start, slot) = self.slots.range(..=address).next_back()?;
        (address < start + (slot.pages + 1) * PAGE).then_some((start, slot))
    }

    fn in_arena(&self, address: usize) -> bool {
        self.chunks.iter().any(|&(base, len)| address >= base && address < base + len)
    }
}

/// A block of `size` bytes (at least 1), zeroed, ending 16-byte aligned right before a
/// guard page. Paged blocks start resident.
pub(crate) fn allocate(size: usize, kind: Kind, paged: bool) -> *mut u8 {
    let rounded = size.max(1).next_multiple_of(ALIGN);
    let pages = rounded.div_ceil(PAGE);
    let mut arena = arena();
    let start = arena.carve(pages);
    let (first, len) = Slot::data_pages(start, pages);
    protect(first, len, true);
    let data = start + pages * PAGE - rounded;
    // SAFETY: the head and the slop are inside the block's pages, just made writable.
    unsafe {
        std::ptr::write_bytes(first as *mut u8, SLOP_PATTERN, data - first);
        std::ptr::write_bytes((data + size) as *mut u8, SLOP_PATTERN, rounded - size);
    }
    arena.slots.insert(start, Slot { pages, data, size, kind, state: State::Live { paged, resident: true } });
    if paged {
        arena.resident_paged.insert(start);
        RESIDENT_PAGED.store(arena.resident_paged.len(), Ordering::Release);
    }
    data as *mut u8
}

/// Where a live block's pattern bytes were overwritten: the first such byte, and
/// whether it lies after the block's end (else before its start, in its page).
pub(crate) fn corrupted_slop(pointer: *const u8) -> Option<(usize, bool)> {
    let mut arena = arena();
    let (start, slot) = arena.slot_at(pointer as usize)?;
    if slot.data != pointer as usize {
        return None;
    }
    let (pages, data, size) = (slot.pages, slot.data, slot.size);
    match slot.state {
        State::Live { paged: true, resident: false } => {
            // A trimmed paged block is freed at PASSIVE or APC level: page it back in.
            let (first, len) = Slot::data_pages(start, pages);
            protect(first, len, true);
            arena.slots.get_mut(&start).expect("found").state = State::Live { paged: true, resident: true };
            arena.resident_paged.insert(start);
            RESIDENT_PAGED.store(arena.resident_paged.len(), Ordering::Release);
        }
        State::Live { .. } => {}
        State::Freed | State::Unused => return None,
    }
    let end = start + pages * PAGE;
    // The head runs from the first page's start to the block (the block starts in its
    // first page); the slop from the block's end to the guard page.
    let differs = |from: usize, to: usize| {
        // SAFETY: the block's pages are accessible (live and resident).
        (from..to).find(|&a| unsafe { *(a as *const u8) } != SLOP_PATTERN)
    };
    differs(start, data).map(|a| (a, false)).or_else(|| differs(data + size, end).map(|a| (a, true)))
}

/// Why a block could not be freed.
pub(crate) enum FreeError {
    /// Not the start of a block ntsim handed out.
    Unknown,
    /// Freed already.
    Twice,
}

/// Whether `pointer` is the start of a block freed since (still in quarantine).
pub(crate) fn was_freed(pointer: *const u8) -> bool {
    let arena = arena();
    arena.slot_at(pointer as usize).is_some_and(|(_, slot)| slot.data == pointer as usize && slot.state == State::Freed)
}

/// Frees the block at `pointer`: its pages lose their contents and become
/// no-access, and stay so for the next [`QUARANTINE`] frees.
pub(crate) fn free(pointer: *mut u8) -> Result<(), FreeError> {
    let address = pointer as usize;
    let mut arena = arena();
    let Some((start, slot)) = arena.slot_at(address) else { return Err(FreeError::Unknown) };
    if slot.data != address {
        return Err(FreeError::Unknown);
    }
    match slot.state {
        State::Live { .. } => {}
        State::Freed => return Err(FreeError::Twice),
        State::Unused => return Err(FreeError::Unknown),
    }
    let (first, len) = Slot::data_pages(start, slot.pages);
    // SAFETY: whole arena pages; dropping their contents is what freeing means here.
    unsafe { libc::madvise(first as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    protect(first, len, false);
    arena.slots.get_mut(&start).expect("found").state = State::Freed;
    arena.resident_paged.remove(&start);
    RESIDENT_PAGED.store(arena.resident_paged.len(), Ordering::Release);
    arena.quarantine.push_back(start);
    if arena.quarantine.len() > QUARANTINE {
        let old = arena.quarantine.pop_front().expect("non-empty");
        let slot = arena.slots.get_mut(&old).expect("quarantined slot");
        slot.state = State::Unused;
        let pages = slot.pages;
        arena.free.entry(pages).or_default().push(old);
    }
    Ok(())
}

/// Verifier's Force IRQL Checking: a thread reached DISPATCH_LEVEL, so every paged
/// block is trimmed from the working set.
pub(crate) fn trim_paged() {
    if RESIDENT_PAGED.load(Ordering::Acquire) == 0 {
        return;
    }
    let mut arena = arena();
    let resident = std::mem::take(&mut arena.resident_paged);
    RESIDENT_PAGED.store(0, Ordering::Release);
    for start in resident {
        let slot = arena.slots.get_mut(&start).expect("resident slot");
        if let State::Live { paged: true, resident } = &mut slot.state {
            *resident = false;
            let (first, len) = Slot::data_pages(start, slot.pages);
            protect(first, len, false);
        }
    }
}

/// What a faulting address is, as far as special pool knows.
pub(crate) enum Fault {
    /// Not in special pool.
    Elsewhere,
    /// In a freed block (or one not handed out since).
    Freed { block: usize, size: usize, kind: Kind },
    /// Past the end of a live block (its guard page).
    BeyondEnd { block: usize, size: usize, kind: Kind },
    /// A trimmed paged block touched at raised IRQL.
    PagedOut { block: usize, kind: Kind },
    /// A trimmed paged block touched at PASSIVE or APC level: paged back in; retry.
    PagedIn,
}

/// Classifies a fault at `address`. At `irql_allows_paging` (PASSIVE/APC level) a
/// trimmed paged block is made accessible again.
///
/// Called from the fault handler: it takes only the arena's lock, which no thread
/// holds while it touches a block.
pub(crate) fn fault(address: usize, irql_allows_paging: bool) -> Fault {
    let mut arena = arena();
    let Some((start, slot)) = arena.slot_at(address) else {
        return if arena.in_arena(address) {
            Fault::Freed { block: address, size: 0, kind: Kind::Pool }
        } else {
            Fault::Elsewhere
        };
    };
    let (block, size, kind, pages) = (slot.data, slot.size, slot.kind, slot.pages);
    match slot.state {
        State::Freed | State::Unused => Fault::Freed { block, size, kind },
        State::Live { .. } if address >= start + pages * PAGE => Fault::BeyondEnd { block, size, kind },
        State::Live { paged: true, resident: false } if irql_allows_paging => {
            let (first, len) = Slot::data_pages(start, pages);
            protect(first, len, true);
            arena.slots.get_mut(&start).expect("found").state = State::Live { paged: true, resident: true };
            arena.resident_paged.insert(start);
            RESIDENT_PAGED.store(arena.resident_paged.len(), Ordering::Release);
            Fault::PagedIn
        }
        State::Live { paged: true, resident: false } => Fault::PagedOut { block, kind },
        // A live, accessible block does not fault: the access was elsewhere on a
        // page boundary race, or a protection ntsim did not set.
        State::Live { .. } => Fault::Elsewhere,
    }
}

/// An owned special-pool block, freed when dropped (ntsim's own objects: IRPs, file
/// and device objects).
pub(crate) struct Block {
    data: *mut u8,
    size: usize,
}

// SAFETY: the block is plain memory owned by this value; every access to its
// contents goes through the machine lock or the driver.
unsafe impl Send for Block {}

impl Block {
    pub(crate) fn new(size: usize, kind: Kind) -> Block {
        Block { data: allocate(size, kind, false), size }
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.data
    }

    pub(crate) fn address(&self) -> usize {
        self.data as usize
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }
}

/// A `T` in special pool, zero-initialised (for plain-data kernel structures such as
/// FILE_OBJECT, for which all-zero is a valid value).
pub(crate) struct Object<T> {
    block: Block,
    _type: std::marker::PhantomData<T>,
}

impl<T> Object<T> {
    pub(crate) fn zeroed(kind: Kind) -> Object<T> {
        const { assert!(align_of::<T>() <= ALIGN) };
        Object { block: Block::new(size_of::<T>(), kind), _type: std::marker::PhantomData }
    }

    pub(crate) fn as_ptr(&self) -> *mut T {
        self.block.as_ptr().cast()
    }
}

impl<T> std::ops::Deref for Object<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the block holds a T (zeroed or written since) and lives as long as self.
        unsafe { &*self.as_ptr() }
    }
}

impl<T> std::ops::DerefMut for Object<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above; `&mut self` gives exclusive access.
        unsafe { &mut *self.as_ptr() }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // A Block is freed only here, so this cannot fail.
        let _ = free(self.data);
    }
}
