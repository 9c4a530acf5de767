//! Evidence of the IRQL a routine runs at.
//!
//! Code outside the kernel layer cannot make the token; it only receives one:
//!
//! ```compile_fail,E0624
//! // SAFETY: (none can be given: the constructor is the kernel layer's)
//! let at_dispatch = unsafe { stagedrv::kernel::sync::AtDispatch::new() };
//! ```

use core::marker::PhantomData;

/// Evidence that the holder runs at DISPATCH_LEVEL: only the kernel layer's routine
/// adapters make one, for routines the kernel calls at that level (a DPC, an IoTimer
/// routine), and lend it to the routine for its duration.
///
/// # Invariants
/// While an `AtDispatch` is reachable, the current processor runs at DISPATCH_LEVEL (or
/// above). It is `!Send` and `!Sync` (the level belongs to one processor), zero-sized,
/// and only `unsafe` code in this crate can make one.
pub struct AtDispatch {
    _this_processor: PhantomData<*mut ()>,
}

impl AtDispatch {
    /// The token for a routine the kernel called at DISPATCH_LEVEL.
    ///
    /// # Safety
    /// The current processor runs at DISPATCH_LEVEL for as long as the token lives.
    pub(crate) unsafe fn new() -> Self {
        super::irql::assert_dispatch();
        // INVARIANT: guaranteed by the caller, checked in debug builds.
        Self { _this_processor: PhantomData }
    }
}
