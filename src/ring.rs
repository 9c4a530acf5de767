//! The per-device ring of sample records, in nonpaged pool. When full, the oldest
//! record is overwritten and counted as dropped.

use crate::pool::{PoolBuf, tag};
use crate::protocol::Record;

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
    pub fn new(capacity: usize) -> Option<Self> {
        Some(Self { slots: PoolBuf::zeroed(capacity.max(1), tag::RING)?, head: 0, len: 0, next_sequence: 0, dropped: 0 })
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

    fn slot(&mut self, index: usize) -> &mut Record {
        let index = index % self.slots.len();
        // SAFETY: `index` is within the allocation, whose records are initialised (zeroed
        // Records are valid) and owned by this ring.
        unsafe { &mut *self.slots.as_ptr().add(index) }
    }

    /// Appends a record stamped with the next sequence number.
    pub fn push(&mut self, timestamp: i64, value: u64) {
        let record = Record { sequence: self.next_sequence, timestamp, value };
        self.next_sequence += 1;
        if self.len == self.slots.len() {
            self.head = (self.head + 1) % self.slots.len();
            self.len -= 1;
            self.dropped += 1;
        }
        let tail = self.head + self.len;
        *self.slot(tail) = record;
        self.len += 1;
    }

    /// Moves up to `out.len()` oldest records into `out`; returns how many.
    pub fn pop_into(&mut self, out: &mut [Record]) -> usize {
        let count = out.len().min(self.len);
        for record in out.iter_mut().take(count) {
            let head = self.head;
            *record = *self.slot(head);
            self.head = (self.head + 1) % self.slots.len();
        }
        self.len -= count;
        count
    }
}
