//! Requests from kernel-mode callers. Another driver that holds a device object (from
//! IoGetDeviceObjectPointer) builds its own IRP (IoBuildSynchronousFsdRequest,
//! IoAllocateIrp) and sends it with IoCallDriver, and nothing makes it fill in the stack
//! location's FileObject the way an open handle's requests have it: the FileObject can
//! be NULL, or a file object that no IRP_MJ_CREATE reached (a stream file object from
//! IoCreateStreamFileObject), whose FsContext is NULL.

use std::sync::Arc;

use super::irp::{self, IoResult, Request};
use crate::machine::{Machine, Stopped, service};
use crate::ob::Kind;
use crate::trace::Routine;
use crate::wdk_sys::{FILE_OBJECT, IRP_MJ_READ, NTSTATUS, PDEVICE_OBJECT, PIRP, STATUS_OBJECT_NAME_NOT_FOUND};

/// The file object a kernel-mode request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFile {
    /// `IrpSp->FileObject` is NULL.
    None,
    /// A file object of the device that no IRP_MJ_CREATE reached, so its FsContext is
    /// NULL. The caller drops it after the request, which sends IRP_MJ_CLOSE.
    Unopened,
}

impl Machine {
    /// Sends `major` to the device object named `device` (`\Device\...`) as a
    /// kernel-mode caller would, and waits for the request to complete. IRP_MJ_READ
    /// gets a `length`-byte buffer; other majors get no parameters. Fails with
    /// STATUS_OBJECT_NAME_NOT_FOUND if no device has that name.
    pub fn kernel_request(
        &self,
        device: &str,
        major: u32,
        file: KernelFile,
        length: usize,
    ) -> Result<Result<IoResult, NTSTATUS>, Stopped> {
        let name = device.to_owned();
        let outcome = self.run_job("kernel-caller", Routine::Kernel, move || {
            service("kernel-request", move |ctx| {
                let Some((device, rest)) = super::device::resolve(ctx, &name) else {
                    return Ok(Err(STATUS_OBJECT_NAME_NOT_FOUND));
                };
                if !rest.is_empty() {
                    return Ok(Err(STATUS_OBJECT_NAME_NOT_FOUND));
                }
                // IoGetDeviceObjectPointer's reference, held for the request.
                crate::ob::reference(ctx, device);
                let file = match file {
                    KernelFile::None => 0,
                    KernelFile::Unopened => unopened_file(ctx, device),
                };
                let len = u32::try_from(length).unwrap_or(u32::MAX);
                let is_read = major == IRP_MJ_READ;
                let request = Request {
                    major: u8::try_from(major).expect("IRP_MJ code"),
                    file,
                    device,
                    buffer_len: if is_read { length } else { 0 },
                    input: Vec::new(),
                    max_information: if is_read { u64::from(len) } else { 0 },
                    holds_file_ref: false,
                    fill: Box::new(move |stack| {
                        if is_read {
                            stack.Parameters.Read.Length = len;
                        }
                    }),
                };
                let (irp, result) = irp::build(ctx, request);
                // SAFETY: the IRP was just built and is not yet sent.
                unsafe { (*(irp as PIRP)).RequestorMode = 0 };
                irp::send(ctx, irp)?;
                let slot = Arc::clone(&result);
                ctx.block(Box::new(move |_| slot.lock().expect("slot").is_some().then_some(0)))?;
                if file != 0 {
                    crate::ob::dereference(ctx, file)?;
                }
                crate::ob::dereference(ctx, device)?;
                let done = result.lock().expect("slot").clone().expect("completed");
                Ok(Ok(done))
            })
        })?;
        self.verdict()?;
        Ok(outcome.expect("the machine stopped, so the verdict above reported it"))
    }
}

/// A file object for `device` that no IRP_MJ_CREATE reached, referenced once by the
/// caller (its last reference sends IRP_MJ_CLOSE, as for a stream file object).
fn unopened_file(ctx: &mut crate::machine::Ctx<'_>, device: usize) -> usize {
    let mut object = crate::special_pool::Object::<FILE_OBJECT>::zeroed(crate::special_pool::Kind::FileObject);
    object.Type = 5;
    object.Size = i16::try_from(size_of::<FILE_OBJECT>()).expect("small");
    object.DeviceObject = device as PDEVICE_OBJECT;
    let file = object.as_ptr() as usize;
    ctx.io.files.insert(
        file,
        super::file::FileInfo {
            device,
            handles: 0,
            outstanding: 0,
            overlapped: false,
            sync_owner: None,
            _object: object,
            _name: Vec::new(),
        },
    );
    ctx.ob.insert(file, Kind::File, 1);
    crate::ob::reference(ctx, device);
    // A stream file object counts as an open of its device: ReferenceCount goes up
    // when it is made and down when it is deleted (WRK IoCreateStreamFileObjectEx,
    // IopDeleteFile), so it too defers DriverUnload.
    super::device::add_open(ctx, device);
    file
}
