//! Security of device objects: the descriptor a driver applies, and the access check
//! an open goes through.

use crate::machine::Ctx;
use crate::wdk_sys::NTSTATUS;

/// `None` admits the open.
pub(crate) fn access_check(_ctx: &Ctx<'_>, _device: usize, _pid: usize) -> Option<NTSTATUS> {
    None
}
