//! Intrusive lists of `LIST_ENTRY`s that the driver owns (an IRP's
//! `Tail.Overlay.ListEntry` while the driver owns the IRP).
//!
//! Unlike `wdm.h`'s circular lists (`InitializeListHead`, `InsertTailList`,
//! `RemoveEntryList`), a [`RawList`] is NULL-terminated: the head holds the first and
//! last entries and no entry points back to the head, so the head may move (a value
//! built on the stack, a field of a struct moved into place) and needs no in-place
//! initialisation. An entry on no list is self-linked.

use super::sys::{LIST_ENTRY, PLIST_ENTRY};

/// A FIFO of entries.
///
/// # Invariants
/// `first`..`last` is a chain through `Flink` (and back through `Blink`) of `len`
/// entries, NULL-terminated at both ends; both NULL when empty. Each entry stays valid
/// while it is on the list (the caller's contract when it links one).
pub struct RawList {
    first: PLIST_ENTRY,
    last: PLIST_ENTRY,
    len: u32,
}

impl RawList {
    /// An empty list.
    pub const fn new() -> Self {
        Self { first: core::ptr::null_mut(), last: core::ptr::null_mut(), len: 0 }
    }

    /// Whether no entry is linked.
    pub fn is_empty(&self) -> bool {
        self.first.is_null()
    }

    /// Entries linked.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// The oldest entry; NULL when empty.
    pub fn first(&self) -> PLIST_ENTRY {
        self.first
    }

    /// Links `entry` at the tail.
    ///
    /// # Safety
    /// `entry` is valid, on no list, and stays valid until it is removed.
    pub unsafe fn push_back(&mut self, entry: PLIST_ENTRY) {
        // SAFETY: guaranteed by the caller; `last` is on this list (type invariant).
        unsafe {
            (*entry).Flink = core::ptr::null_mut();
            (*entry).Blink = self.last;
            if self.last.is_null() {
                self.first = entry;
            } else {
                (*self.last).Flink = entry;
            }
        }
        // INVARIANT: the entry is the new NULL-terminated tail.
        self.last = entry;
        self.len = self.len.saturating_add(1);
    }

    /// Unlinks `entry` and self-links it. Returns `false`, changing nothing, if it is
    /// self-linked or (as far as the ends show) on another list.
    ///
    /// # Safety
    /// `entry` is valid; if it is linked, its neighbours are valid.
    pub unsafe fn remove(&mut self, entry: PLIST_ENTRY) -> bool {
        // SAFETY: guaranteed by the caller.
        let (next, prev) = unsafe { ((*entry).Flink, (*entry).Blink) };
        if core::ptr::eq(next, entry) {
            return false;
        }
        // An end of a chain must be an end of this list: the head is only ever
        // written for its own entries.
        if (prev.is_null() && self.first != entry) || (next.is_null() && self.last != entry) {
            debug_assert!(false, "an entry removed from a list it is not on");
            return false;
        }
        // SAFETY: linked neighbours are valid (caller), and are on this list.
        unsafe {
            if prev.is_null() {
                self.first = next;
            } else {
                (*prev).Flink = next;
            }
            if next.is_null() {
                self.last = prev;
            } else {
                (*next).Blink = prev;
            }
            self_link(entry);
        }
        self.len = self.len.saturating_sub(1);
        true
    }
}

/// Makes `entry` self-linked: on no list.
///
/// # Safety
/// `entry` is valid for writes and on no list.
pub unsafe fn self_link(entry: PLIST_ENTRY) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        (*entry).Flink = entry;
        (*entry).Blink = entry;
    }
}

/// Whether `entry` is on a list (not self-linked).
///
/// # Safety
/// `entry` is valid for reads, and was linked or self-linked by this module.
pub unsafe fn is_linked(entry: *const LIST_ENTRY) -> bool {
    // SAFETY: guaranteed by the caller.
    unsafe { !core::ptr::eq((*entry).Flink, entry) }
}

/// The entry after `entry`; NULL at the tail.
///
/// # Safety
/// `entry` is valid and on a list.
pub unsafe fn next(entry: *const LIST_ENTRY) -> PLIST_ENTRY {
    // SAFETY: guaranteed by the caller.
    unsafe { (*entry).Flink }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> LIST_ENTRY {
        LIST_ENTRY { Flink: core::ptr::null_mut(), Blink: core::ptr::null_mut() }
    }

    #[test]
    fn fifo_order_harmless_double_remove_and_a_movable_head() {
        let (mut a, mut b, mut c) = (entry(), entry(), entry());
        let mut list = RawList::new();
        // SAFETY: all entries live on this stack frame for the whole test.
        unsafe {
            assert!(list.is_empty());
            list.push_back(&raw mut a);
            list.push_back(&raw mut b);
            list.push_back(&raw mut c);
            let mut list = list; // the head moves; the entries do not point to it
            assert_eq!((list.first(), list.len()), (&raw mut a, 3));
            assert!(list.remove(&raw mut b));
            assert!(!is_linked(&raw const b));
            assert!(!list.remove(&raw mut b));
            assert_eq!(next(&raw const a), &raw mut c);
            assert!(list.remove(&raw mut a));
            assert_eq!(list.first(), &raw mut c);
            assert!(list.remove(&raw mut c));
            assert!(list.is_empty());
            assert_eq!(list.len(), 0);
        }
    }

    #[test]
    #[should_panic(expected = "not on")]
    fn removing_an_end_of_another_list_is_refused() {
        let (mut a, mut b) = (entry(), entry());
        let (mut one, mut other) = (RawList::new(), RawList::new());
        // SAFETY: as above.
        unsafe {
            one.push_back(&raw mut a);
            other.push_back(&raw mut b);
            let _ = one.remove(&raw mut b);
        }
    }
}
