//! File objects: created by an open, cleaned up when their last handle closes, closed
//! when their last reference goes.

use crate::machine::{Ctx, KResult};
use crate::wdk_sys::{FILE_OBJECT, IRP_MJ_CLEANUP, IRP_MJ_CLOSE};

pub(crate) struct FileInfo {
    pub(crate) device: usize,
    pub(crate) handles: u32,
    /// IRPs holding a reference on this file object.
    pub(crate) outstanding: u32,
    pub(crate) overlapped: bool,
    /// A synchronous file object's lock: the thread whose request it serves now.
    pub(crate) sync_owner: Option<crate::sched::Tid>,
    /// The file object (in special pool: no-access once freed) and its FileName.
    pub(crate) _object: crate::special_pool::Object<FILE_OBJECT>,
    pub(crate) _name: Vec<u16>,
}

/// Sends IRP_MJ_CLEANUP or IRP_MJ_CLOSE for `file` and waits for its completion.
pub(crate) fn send_sync(ctx: &mut Ctx<'_>, file: usize, major: u32) -> KResult<crate::wdk_sys::NTSTATUS> {
    let device = ctx.io.files[&file].device;
    let request = crate::io::irp::Request {
        major: u8::try_from(major).expect("IRP_MJ code"),
        file,
        device,
        buffer_len: 0,
        input: Vec::new(),
        max_information: 0,
        holds_file_ref: false,
        fill: Box::new(|_| {}),
    };
    let (irp, result) = crate::io::irp::build(ctx, request);
    crate::io::irp::send(ctx, irp)?;
    let slot = std::sync::Arc::clone(&result);
    ctx.block(Box::new(move |_| slot.lock().expect("slot").is_some().then_some(0)))?;
    let status = result.lock().expect("slot").as_ref().map_or(0, |r| r.status);
    Ok(status)
}

/// The last handle to `file` closed: IRP_MJ_CLEANUP, in the closing thread's context.
pub(crate) fn cleanup(ctx: &mut Ctx<'_>, file: usize) -> KResult<()> {
    send_sync(ctx, file, IRP_MJ_CLEANUP)?;
    Ok(())
}

/// The file object's last reference is gone: IRP_MJ_CLOSE, then it is freed and its
/// reference on the device dropped.
pub(crate) fn last_reference(ctx: &mut Ctx<'_>, file: usize) -> KResult<()> {
    send_sync(ctx, file, IRP_MJ_CLOSE)?;
    let info = ctx.io.files.remove(&file);
    let device = info.as_ref().map_or(0, |f| f.device);
    // Freed, as the object manager frees it after IRP_MJ_CLOSE.
    drop(info);
    super::device::drop_open(ctx, device);
    crate::ob::dereference(ctx, device)?;
    Ok(())
}
