//! `LIST_ENTRY` helpers (`InitializeListHead`, `InsertTailList`, `RemoveEntryList` are
//! inline in `wdm.h`). The caller holds the lock guarding the list.

use crate::kernel::sys::{LIST_ENTRY, PLIST_ENTRY};

/// `InitializeListHead`: an empty list, or an entry linked to nothing.
///
/// # Safety
/// `entry` must be valid for writes.
pub unsafe fn init(entry: PLIST_ENTRY) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        (*entry).Flink = entry;
        (*entry).Blink = entry;
    }
}

/// `IsListEmpty`; for an entry: whether it is linked to nothing (self-linked).
///
/// # Safety
/// `head` must be an initialised list head or entry.
pub unsafe fn is_empty(head: *const LIST_ENTRY) -> bool {
    // SAFETY: guaranteed by the caller.
    unsafe { core::ptr::eq((*head).Flink, head) }
}

/// `InsertTailList`.
///
/// # Safety
/// `head` is an initialised list; `entry` is not on any list.
pub unsafe fn insert_tail(head: PLIST_ENTRY, entry: PLIST_ENTRY) {
    // SAFETY: guaranteed by the caller; the four writes relink a consistent list.
    unsafe {
        let last = (*head).Blink;
        (*entry).Flink = head;
        (*entry).Blink = last;
        (*last).Flink = entry;
        (*head).Blink = entry;
    }
}

/// `RemoveEntryList`, then self-links the entry so that removing it again is harmless.
///
/// # Safety
/// `entry` is on a list, or self-linked.
pub unsafe fn remove(entry: PLIST_ENTRY) {
    // SAFETY: guaranteed by the caller; neighbours of a linked entry are valid.
    unsafe {
        let (next, prev) = ((*entry).Flink, (*entry).Blink);
        (*prev).Flink = next;
        (*next).Blink = prev;
        init(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> LIST_ENTRY {
        LIST_ENTRY { Flink: core::ptr::null_mut(), Blink: core::ptr::null_mut() }
    }

    #[test]
    fn fifo_order_and_harmless_double_remove() {
        let (mut head, mut a, mut b) = (entry(), entry(), entry());
        // SAFETY: all entries live on this stack frame for the whole test.
        unsafe {
            init(&raw mut head);
            assert!(is_empty(&raw const head));
            insert_tail(&raw mut head, &raw mut a);
            insert_tail(&raw mut head, &raw mut b);
            assert_eq!(head.Flink, &raw mut a);
            remove(&raw mut a);
            assert!(is_empty(&raw const a));
            remove(&raw mut a);
            assert_eq!(head.Flink, &raw mut b);
            remove(&raw mut b);
            assert!(is_empty(&raw const head));
        }
    }
}
