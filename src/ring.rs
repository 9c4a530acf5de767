//! The per-device ring of sample records, in nonpaged pool. When full, the oldest
//! record is overwritten and counted as dropped.

use crate::kernel::pool::{Allocator, PoolBuf, tag};
use stagedrv_protocol::Record;

pub struct Ring {
    slots: PoolBuf<Record>,
    /// Index of the oldest record.
    head: usize,
    len: usize,
    next_sequence: u64,
    pub dropped: u64,
}

impl Ring {
    /// Allocates `capacity` (>= 1) slots. IRQL <= DISPATCH_LEVEL.
    pub fn new(allocator: Allocator, capacity: usize) -> Option<Self> {
        crate::kernel::irql::assert_at_most_dispatch();
        Some(Self {
            slots: PoolBuf::zeroed(allocator, capacity.max(1), tag::RING)?,
            head: 0,
            len: 0,
            next_sequence: 0,
            dropped: 0,
        })
    }

    /// Frees the slots (Unload stage 3).
    pub fn free(self) {
        self.slots.free();
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn produced(&self) -> u64 {
        self.next_sequence
    }

    /// `head + offset`, wrapped to the capacity.
    fn index(&self, offset: usize) -> usize {
        self.head.wrapping_add(offset).checked_rem(self.slots.len()).unwrap_or(0)
    }

    /// The slot at `index` (an `index()` result, so below the capacity).
    fn slot(&mut self, index: usize) -> Option<&mut Record> {
        self.slots.as_mut_slice().get_mut(index)
    }

    /// Appends a record stamped with the next sequence number.
    pub fn push(&mut self, timestamp: i64, value: u64) {
        let record = Record { sequence: self.next_sequence, timestamp, value };
        self.next_sequence = self.next_sequence.wrapping_add(1);
        if self.len >= self.slots.len() {
            self.head = self.index(1);
            self.len = self.len.saturating_sub(1);
            self.dropped = self.dropped.wrapping_add(1);
        }
        let tail = self.index(self.len);
        if let Some(slot) = self.slot(tail) {
            *slot = record;
        }
        self.len = self.len.saturating_add(1);
    }

    /// Removes the oldest record.
    pub fn pop(&mut self) -> Option<Record> {
        if self.len == 0 {
            return None;
        }
        let head = self.head;
        let record = *self.slot(head)?;
        self.head = self.index(1);
        self.len = self.len.saturating_sub(1);
        Some(record)
    }
}
