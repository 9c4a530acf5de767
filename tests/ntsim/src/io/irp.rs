//! IRPs: building them, sending them to a dispatch routine with the I/O verification
//! checks, IofCompleteRequest, and the IoCancelIrp protocol.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::checker::{Violation, c9, code};
use crate::irql::DISPATCH_LEVEL;
use crate::ke::spinlock::{self, CANCEL_LOCK};
use crate::machine::{CompletionApc, Ctx, KResult, kcall, service};
use crate::special_pool::{Block, Kind};
use crate::trace::Routine;
use crate::wdk_sys::{
    CCHAR, IO_STACK_LOCATION, IRP, IRP_MJ_CLEANUP, IRP_MJ_CLOSE, IRP_MJ_CREATE, IRP_MJ_DEVICE_CONTROL, IRP_MJ_READ,
    IRP_MJ_WRITE, KAPC, NTSTATUS, PDEVICE_OBJECT, PDRIVER_CANCEL, PIRP, PKNORMAL_ROUTINE, PVOID, SL_PENDING_RETURNED,
    STATUS_PENDING,
};

/// What the client gets back for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoResult {
    /// The final `IoStatus.Status`.
    pub status: NTSTATUS,
    /// The final `IoStatus.Information` (bytes transferred for reads and IOCTLs).
    pub information: u64,
    /// For reads and IOCTLs: the first `information` bytes of the system buffer.
    pub data: Vec<u8>,
}

/// Where a completed IRP's result goes.
pub(crate) type ResultSlot = Arc<Mutex<Option<IoResult>>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// In a dispatch routine or queued by the driver.
    Outstanding,
    Completed,
}

#[allow(clippy::struct_excessive_bools, reason = "independent facts about one request")]
pub(crate) struct IrpInfo {
    pub(crate) phase: Phase,
    pub(crate) major: u8,
    pub(crate) file: usize,
    pub(crate) device: usize,
    /// Simulated thread that issued it (for CancelIo and thread exit).
    pub(crate) thread: usize,
    /// Bytes the driver may report in Information (the read or output length).
    pub(crate) max_information: u64,
    pub(crate) result: ResultSlot,
    /// Issue order, for deterministic iteration.
    pub(crate) seq: u64,
    /// Reads and IOCTLs hold a reference on their file object until completion
    /// (CREATE, CLEANUP and CLOSE do not).
    pub(crate) holds_file_ref: bool,
    /// When IoCancelIrp was called for it (simulated time).
    pub(crate) cancelled_at: Option<u64>,
    /// Its dispatch routine is running.
    in_dispatch: bool,
    /// SL_PENDING_RETURNED at completion (IofCompleteRequest's Irp->PendingReturned).
    pending_returned: bool,
    /// Completed inside its own dispatch routine without being marked pending: the I/O
    /// manager finishes it (and frees it) once the routine returns.
    free_after_dispatch: bool,
    /// The IRP with its stack location, and its system buffer, in special pool; `None`
    /// once freed, as Windows frees them in the completion APC.
    memory: Option<Block>,
    buffer: Option<Block>,
    buffer_len: usize,
}

impl IrpInfo {
    fn buffer(&self) -> &[u8] {
        match &self.buffer {
            // SAFETY: the block holds `buffer_len` bytes and is live while owned here.
            Some(block) => unsafe { std::slice::from_raw_parts(block.as_ptr(), self.buffer_len) },
            None => &[],
        }
    }
}

/// What a read's system buffer holds before the driver writes it: Windows gives the
/// driver uninitialised nonpaged pool, not zeros, so stale bytes a driver reports in
/// Information show up to the caller.
pub const SYSTEM_BUFFER_FILL: u8 = 0xCD;

/// KOBJECTS' ApcObject, the Type of an initialised KAPC.
const APC_OBJECT: u8 = 0x12;

/// The completion APC's KernelRoutine: ntsim's stand-in for IopCompleteRequest. Its
/// address marks a completed IRP's Tail; ntsim never calls it.
unsafe extern "C" fn complete_request_apc(
    _apc: *mut KAPC,
    _normal_routine: *mut PKNORMAL_ROUTINE,
    _normal_context: *mut PVOID,
    _argument1: *mut PVOID,
    _argument2: *mut PVOID,
) {
}

/// Completed IRPs' bookkeeping is kept (up to a bound) so that a second completion is
/// still recognised.
const QUARANTINE: usize = 4096;

#[derive(Default)]
pub(crate) struct Irps {
    pub(crate) live: HashMap<usize, IrpInfo>,
    /// Issue number → address, for IRPs still in `live` (CancelIoEx of one request
    /// finds it without a scan).
    pub(crate) by_seq: HashMap<u64, usize>,
    /// Completed IRPs whose records are kept, oldest first: address and issue number.
    quarantine: VecDeque<(usize, u64)>,
    pub(crate) completed_total: u64,
    pub(crate) issued_total: u64,
}

/// IRP_MJ_* code → name, for messages.
pub fn major_name(major: u8) -> &'static str {
    match u32::from(major) {
        IRP_MJ_CREATE => "IRP_MJ_CREATE",
        IRP_MJ_CLOSE => "IRP_MJ_CLOSE",
        IRP_MJ_READ => "IRP_MJ_READ",
        IRP_MJ_WRITE => "IRP_MJ_WRITE",
        IRP_MJ_DEVICE_CONTROL => "IRP_MJ_DEVICE_CONTROL",
        IRP_MJ_CLEANUP => "IRP_MJ_CLEANUP",
        _ => "IRP_MJ_(other)",
    }
}

/// A request to build.
pub(crate) struct Request {
    pub(crate) major: u8,
    pub(crate) file: usize,
    pub(crate) device: usize,
    /// System buffer size (0: none).
    pub(crate) buffer_len: usize,
    pub(crate) input: Vec<u8>,
    pub(crate) max_information: u64,
    pub(crate) holds_file_ref: bool,
    pub(crate) fill: Box<dyn FnOnce(&mut IO_STACK_LOCATION)>,
}

/// Allocates an IRP with one stack location, set up for the device's driver.
pub(crate) fn build(ctx: &mut Ctx<'_>, request: Request) -> (usize, ResultSlot) {
    let irp_size = size_of::<IRP>() + size_of::<IO_STACK_LOCATION>();
    // I/O Verification allocates IRPs from special pool; system buffers come from
    // (special) nonpaged pool too.
    let memory = Block::new(irp_size, Kind::Irp);
    #[allow(clippy::cast_ptr_alignment, reason = "special pool blocks are 16-byte aligned")]
    let irp = memory.as_ptr().cast::<IRP>();
    let buffer_len = request.buffer_len.max(request.input.len());
    let buffer = (buffer_len > 0).then(|| {
        let block = Block::new(buffer_len, Kind::SystemBuffer);
        // SAFETY: a fresh block of `buffer_len` bytes.
        unsafe {
            std::ptr::write_bytes(block.as_ptr(), SYSTEM_BUFFER_FILL, buffer_len);
            std::ptr::copy_nonoverlapping(request.input.as_ptr(), block.as_ptr(), request.input.len());
        }
        block
    });
    let result: ResultSlot = Arc::new(Mutex::new(None));
    // SAFETY: `memory` is zeroed and large enough for the IRP and its stack location.
    unsafe {
        let stack = irp.add(1).cast::<IO_STACK_LOCATION>();
        (*irp).Type = 6;
        (*irp).Size = u16::try_from(irp_size).expect("small");
        (*irp).StackCount = 1;
        (*irp).CurrentLocation = 1;
        (*irp).RequestorMode = 1;
        (*irp).Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1.CurrentStackLocation = stack;
        (*irp).Tail.Overlay.OriginalFileObject = request.file as _;
        if let Some(buffer) = &buffer {
            (*irp).AssociatedIrp.SystemBuffer = buffer.as_ptr().cast();
        }
        (*stack).MajorFunction = request.major;
        (*stack).DeviceObject = request.device as PDEVICE_OBJECT;
        (*stack).FileObject = request.file as _;
        (request.fill)(&mut *stack);
    }
    let address = irp as usize;
    let thread = ctx.tid;
    let seq = ctx.io.irps.issued_total;
    ctx.io.irps.issued_total += 1;
    ctx.io.irps.by_seq.insert(seq, irp as usize);
    if request.holds_file_ref {
        crate::ob::reference(ctx, request.file);
        if let Some(f) = ctx.io.files.get_mut(&request.file) {
            f.outstanding += 1;
        }
    }
    // A completed IRP's record at a reused address gives way to the new IRP's.
    let replaced = ctx.io.irps.live.insert(
        address,
        IrpInfo {
            phase: Phase::Outstanding,
            major: request.major,
            file: request.file,
            device: request.device,
            thread,
            max_information: request.max_information,
            result: Arc::clone(&result),
            seq,
            holds_file_ref: request.holds_file_ref,
            cancelled_at: None,
            in_dispatch: false,
            pending_returned: false,
            free_after_dispatch: false,
            memory: Some(memory),
            buffer,
            buffer_len,
        },
    );
    if let Some(old) = replaced {
        ctx.io.irps.by_seq.remove(&old.seq);
    }
    (address, result)
}

fn c9(params: [u64; 4], text: String) -> Violation {
    Violation::new(code::DRIVER_VERIFIER_IOMANAGER_VIOLATION, params, "DRIVER_VERIFIER_IOMANAGER_VIOLATION", text)
}

/// Calls the driver's dispatch routine for `irp` (IoCallDriver) and applies the I/O
/// verification rules to what it returns.
pub(crate) fn send(ctx: &mut Ctx<'_>, irp: usize) -> KResult<NTSTATUS> {
    let (major, device, seq, result) = {
        let info = &ctx.io.irps.live[&irp];
        (info.major, info.device, info.seq, Arc::clone(&info.result))
    };
    let dispatch = crate::io::device::dispatch_routine(ctx, device, major);
    let before = ctx.irql();
    let raw = irp as PIRP;
    let Some(routine) = dispatch else {
        complete(ctx, irp, crate::wdk_sys::STATUS_INVALID_DEVICE_REQUEST, 0)?;
        return Ok(crate::wdk_sys::STATUS_INVALID_DEVICE_REQUEST);
    };
    ctx.io.irps.live.get_mut(&irp).expect("outstanding").in_dispatch = true;
    let returned = ctx.call_driver(Routine::Dispatch(major), || {
        // SAFETY: calling the driver's dispatch routine with its device and a valid IRP.
        unsafe { routine(device as PDEVICE_OBJECT, raw) }
    });
    // The record is kept while the routine runs (see `forget_oldest_completed`), but a
    // request marked pending and completed meanwhile is freed by its completion, and
    // special pool may hand its pages to a newer IRP before the routine returns.
    let record = ctx.io.irps.live.get_mut(&irp).filter(|i| i.seq == seq);
    let (completed, pending_returned) = match record {
        Some(info) => {
            info.in_dispatch = false;
            if info.free_after_dispatch {
                // The I/O manager's own completion of a request completed inline.
                free_memory(info);
            }
            (info.phase == Phase::Completed, info.pending_returned)
        }
        None => (true, true),
    };
    let after = ctx.irql();
    let name = major_name(major);
    if after != before {
        let v = c9(
            [c9::IRQL_CHANGED_BY_DISPATCH, device as u64, u64::from(before), u64::from(after)],
            format!("the {name} dispatch routine returned at IRQL {after}; it was called at IRQL {before}."),
        );
        return Err(ctx.violation(v));
    }
    // A completed IRP may be freed already: what IofCompleteRequest saw is kept.
    // SAFETY: an outstanding IRP's memory is live.
    let marked = if completed { pending_returned } else { unsafe { pending_marked(raw) } };
    // The "WDM DRIVER ERROR" layout: [code, address in the driver, IRP, device].
    let wdm_error = [routine as usize as u64, irp as u64, device as u64];
    if returned == STATUS_PENDING {
        if !marked {
            // Non-fatal for Verifier: the request stays pending.
            let v = c9(
                [c9::PENDING_NOT_MARKED, wdm_error[0], wdm_error[1], wdm_error[2]],
                format!("the {name} dispatch routine returned STATUS_PENDING without calling IoMarkIrpPending."),
            );
            ctx.report(v);
        }
        // SAFETY: read only while outstanding, so live.
        let routine_set = !completed && unsafe { (*raw).CancelRoutine.is_some() };
        // Outstanding, so its record is the one at this address.
        if routine_set && ctx.io.irps.live[&irp].cancelled_at.is_some() {
            return Err(ctx.violation(Violation::new(
                code::DRIVER_VERIFIER_DETECTED_VIOLATION,
                [crate::checker::c4::SLOW_CANCEL, irp as u64, ctx.slow_cancel / 10_000, 0],
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format!("the {name} IRP {irp:#x} was cancelled while its dispatch routine ran, before the cancel routine was set, and the routine pended it anyway: re-check Irp->Cancel after IoSetCancelRoutine, or the cancel is lost."),
            )));
        }
    } else if marked {
        // Non-fatal for Verifier: the caller gets the status returned.
        let v = c9(
            [c9::MARKED_BUT_NOT_PENDING, wdm_error[0], wdm_error[1], wdm_error[2]],
            format!(
                "the {name} dispatch routine marked the IRP pending but returned {returned:#x}, not STATUS_PENDING."
            ),
        );
        ctx.report(v);
    } else if !completed {
        let v = c9(
            [c9::NEITHER_COMPLETED_NOR_PENDING, wdm_error[0], wdm_error[1], wdm_error[2]],
            format!(
                "the {name} dispatch routine returned {returned:#x} without completing the IRP or returning STATUS_PENDING (the IRP would be lost)."
            ),
        );
        return Err(ctx.violation(v));
    } else {
        let final_status = result.lock().expect("slot").as_ref().map(|r| r.status);
        if final_status != Some(returned) {
            let v = c9(
                [c9::RETURNED_STATUS_MISMATCH, wdm_error[0], wdm_error[1], wdm_error[2]],
                format!(
                    "the {name} dispatch routine returned {returned:#x} but completed the IRP with {:#x}.",
                    final_status.unwrap_or_default()
                ),
            );
            return Err(ctx.violation(v));
        }
    }
    Ok(returned)
}

/// Completes `irp` as IofCompleteRequest does, with every completion rule checked.
pub(crate) fn complete(ctx: &mut Ctx<'_>, irp: usize, status: NTSTATUS, information: u64) -> KResult<()> {
    let Some(info) = ctx.io.irps.live.get(&irp) else {
        return Err(ctx.violation(Violation::new(
            code::MULTIPLE_IRP_COMPLETE_REQUESTS,
            [irp as u64, 0, 0, 0],
            "MULTIPLE_IRP_COMPLETE_REQUESTS",
            format!("IoCompleteRequest on {irp:#x}, which is not an outstanding IRP."),
        )));
    };
    if info.phase == Phase::Completed {
        return Err(ctx.violation(Violation::new(
            code::MULTIPLE_IRP_COMPLETE_REQUESTS,
            [irp as u64, 0, 0, 0],
            "MULTIPLE_IRP_COMPLETE_REQUESTS",
            format!("IoCompleteRequest was called twice for the same {} IRP {irp:#x}.", major_name(info.major)),
        )));
    }
    let raw = irp as PIRP;
    // SAFETY: an outstanding IRP's memory is valid.
    let cancel_routine = unsafe { (*raw).CancelRoutine };
    if let Some(routine) = cancel_routine {
        let v = c9(
            [c9::COMPLETED_WITH_CANCEL_ROUTINE, routine as usize as u64, irp as u64, 0],
            format!(
                "IoCompleteRequest on {irp:#x} while its cancel routine is still set: call IoSetCancelRoutine(Irp, NULL) first (and only complete if it returned non-NULL)."
            ),
        );
        return Err(ctx.violation(v));
    }
    if status == STATUS_PENDING || status == -1 {
        let v = c9(
            [c9::COMPLETED_WITH_PENDING_STATUS, u64::from(status.cast_unsigned()), irp as u64, 0],
            format!("IoCompleteRequest on {irp:#x} with status {status:#x}, which is not a final status."),
        );
        return Err(ctx.violation(v));
    }
    let irql = ctx.irql();
    if irql > DISPATCH_LEVEL {
        let v = c9(
            [c9::COMPLETED_ABOVE_DISPATCH, u64::from(irql), irp as u64, 0],
            format!("IoCompleteRequest at IRQL {irql}, above DISPATCH_LEVEL."),
        );
        return Err(ctx.violation(v));
    }
    // Verifier checks Information against the buffer whatever the status.
    let max = info.max_information;
    if information > max {
        // Non-fatal for Verifier. P2, the driver address that completed, is 0: ntsim
        // does not know its caller's return address. The copy-back stops at the buffer.
        let device = info.device;
        let v = c9(
            [c9::INFORMATION_TOO_LARGE, 0, irp as u64, device as u64],
            format!(
                "IoCompleteRequest on {irp:#x} reports {information} bytes in IoStatus.Information, more than the {max}-byte buffer."
            ),
        );
        ctx.report(v);
    }
    let apc_now = match ctx.completion_apc {
        CompletionApc::AtOnce => true,
        CompletionApc::Later => false,
        CompletionApc::Explored => !ctx.sched.mode.is_serial() || ctx.sched.rng.below(2) == 0,
    };
    let info = ctx.io.irps.live.get_mut(&irp).expect("checked");
    info.phase = Phase::Completed;
    // IopCompleteRequest copies Information bytes back unless the status is an error:
    // warnings such as STATUS_BUFFER_OVERFLOW return data too (ReactOS `irp.c`).
    let take = usize::try_from(information).unwrap_or(usize::MAX).min(info.buffer_len);
    let data = if crate::wdk_sys::NT_ERROR(status) { Vec::new() } else { info.buffer()[..take].to_vec() };
    *info.result.lock().expect("slot") = Some(IoResult { status, information, data });
    // SAFETY: the IRP is still live: it is freed below at the earliest.
    info.pending_returned = unsafe { pending_marked(raw) };
    let file = if info.holds_file_ref { info.file } else { 0 };
    let thread = info.thread;
    let seq = info.seq;
    if info.in_dispatch && !info.pending_returned {
        // Completed inline: the I/O manager finishes it after the dispatch routine
        // returns (IRP_DEFER_IO_COMPLETION, ReactOS IofCompleteRequest).
        info.free_after_dispatch = true;
    } else if info.holds_file_ref {
        // IofCompleteRequest queues the completion APC to the issuing thread, reusing
        // Irp->Tail for the KAPC (ReactOS IofCompleteRequest: KeInitializeApc and
        // KeInsertQueueApc on Irp->Tail.Apc); the APC frees the IRP. It may run at once
        // (the thread is at PASSIVE_LEVEL on another processor) or later: the schedule
        // decides.
        // SAFETY: the IRP is live until the APC runs.
        unsafe { queue_completion_apc(raw) };
        if apc_now {
            free_memory(info);
        } else {
            ctx.mailboxes[thread].push_back(Box::new(move || {
                service("completion-apc", |ctx| {
                    if let Some(info) = ctx.io.irps.live.get_mut(&irp).filter(|i| i.seq == seq) {
                        free_memory(info);
                    }
                    Ok(())
                });
            }));
        }
    } else {
        // CREATE, CLEANUP and CLOSE: the waiting I/O manager frees it.
        free_memory(info);
    }
    ctx.io.irps.completed_total += 1;
    ctx.io.irps.quarantine.push_back((irp, seq));
    if ctx.io.irps.quarantine.len() > QUARANTINE {
        forget_oldest_completed(&mut ctx.io.irps);
    }
    if let Some(f) = ctx.io.files.get_mut(&file) {
        f.outstanding -= 1;
    }
    ctx.signal();
    // The IRP's reference on its file object: dropped here under the hostile option
    // (IRP_MJ_CLOSE from inside IoCompleteRequest), otherwise by the issuing thread
    // as Windows' completion APC does.
    if file != 0 {
        // Only at PASSIVE_LEVEL: completed at DISPATCH_LEVEL (from a DPC), Windows
        // never delivers the completion APC, or IRP_MJ_CLOSE, at that IRQL.
        if ctx.hostile.close_inside_completion && ctx.irql() == crate::irql::PASSIVE_LEVEL {
            crate::ob::dereference(ctx, file)?;
        } else {
            crate::io::client::post_apc(ctx, thread, file);
        }
    }
    Ok(())
}

/// Drops the record of the longest-completed IRP in the quarantine, unless it is gone
/// or its dispatch routine still runs.
///
/// The record stands for what the I/O manager knows of the request. On Windows a request
/// completed on another processor while its dispatch routine runs is still the I/O
/// manager's when IoCallDriver returns: the caller reads the routine's status and,
/// for STATUS_PENDING, leaves the rest to the completion (ReactOS `iofunc.c`
/// IopSynchronousServiceTail, `irp.c` IofCompleteRequest). So such a record goes back
/// to the end of the quarantine. An address in the quarantine may also belong to a
/// newer IRP by now (special pool reuses freed IRP pages after its own quarantine):
/// only the record of the IRP that was quarantined, by issue number, is dropped.
fn forget_oldest_completed(irps: &mut Irps) {
    let Some((address, seq)) = irps.quarantine.pop_front() else { return };
    let Some(info) = irps.live.get(&address).filter(|i| i.seq == seq) else { return };
    if info.in_dispatch {
        irps.quarantine.push_back((address, seq));
        return;
    }
    irps.live.remove(&address);
    irps.by_seq.remove(&seq);
}

/// Whether the IRP's (only) stack location is marked SL_PENDING_RETURNED.
///
/// # Safety
/// `irp` is an IRP built by [`build`] whose memory is live.
unsafe fn pending_marked(irp: PIRP) -> bool {
    // SAFETY: guaranteed by the caller; the stack location follows the IRP.
    unsafe { (*irp.add(1).cast::<IO_STACK_LOCATION>()).Control & (SL_PENDING_RETURNED as u8) != 0 }
}

/// Writes the completion KAPC over `Irp->Tail` as KeInitializeApc and KeInsertQueueApc
/// do: KernelRoutine lands on Tail.Overlay.Thread, NormalRoutine (NULL) on
/// ListEntry.Flink, SystemArgument1 (the file object) on CurrentStackLocation, and
/// Type/Size/Thread/ApcListEntry on DriverContext.
///
/// # Safety
/// `irp` is a live IRP built by [`build`].
unsafe fn queue_completion_apc(irp: PIRP) {
    // SAFETY: guaranteed by the caller; Tail is a union of Overlay and Apc.
    unsafe {
        let thread = (*irp).Tail.Overlay.Thread;
        let file = (*irp).Tail.Overlay.OriginalFileObject;
        let apc = &raw mut (*irp).Tail.Apc;
        (*apc).Type = APC_OBJECT;
        (*apc).SpareByte0 = 0;
        (*apc).Size = u8::try_from(size_of::<KAPC>()).expect("small");
        (*apc).SpareByte1 = 0;
        (*apc).SpareLong0 = 0;
        (*apc).Thread = thread.cast();
        // Inserted in the thread's APC queue; ntsim has none, so it links to itself.
        let entry = &raw mut (*apc).ApcListEntry;
        (*entry).Flink = entry;
        (*entry).Blink = entry;
        (*apc).KernelRoutine = Some(complete_request_apc);
        (*apc).RundownRoutine = None;
        (*apc).NormalRoutine = None;
        (*apc).NormalContext = std::ptr::null_mut();
        (*apc).SystemArgument1 = file.cast();
        (*apc).SystemArgument2 = std::ptr::null_mut();
        (*apc).ApcStateIndex = 0;
        (*apc).ApcMode = 0;
        (*apc).Inserted = 1;
    }
}

/// The completion APC ran (or the I/O manager finished the request): the IRP and its
/// system buffer go back to special pool, no-access from now on.
fn free_memory(info: &mut IrpInfo) {
    info.memory = None;
    info.buffer = None;
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IofCompleteRequest(Irp: PIRP, _PriorityBoost: CCHAR) {
    kcall("IofCompleteRequest", |ctx| {
        let irp = Irp as usize;
        let outstanding = ctx.io.irps.live.get(&irp).is_some_and(|i| i.phase == Phase::Outstanding);
        let (status, information) = if outstanding {
            // SAFETY: an outstanding IRP's memory is live; any other is reported by
            // `complete` before anything is touched.
            unsafe { ((*Irp).IoStatus.__bindgen_anon_1.Status, (*Irp).IoStatus.Information) }
        } else {
            (0, 0)
        };
        complete(ctx, irp, status, information)
    });
}
const _: crate::wdk_sys::fnsig::IofCompleteRequest = IofCompleteRequest;

/// IoCancelIrp: sets `Irp->Cancel`, takes the cancel routine with an exchange and, if
/// there was one, calls it holding the cancel spin lock, which it must release.
pub(crate) fn cancel(ctx: &mut Ctx<'_>, irp: usize) -> KResult<bool> {
    if ctx.io.irps.live.get(&irp).is_none_or(|i| i.phase == Phase::Completed) {
        return Ok(false);
    }
    let raw = irp as PIRP;
    let now = ctx.clock;
    if let Some(info) = ctx.io.irps.live.get_mut(&irp) {
        info.cancelled_at.get_or_insert(now);
    }
    let old_irql = ctx.irql();
    ctx.set_irql(DISPATCH_LEVEL);
    spinlock::acquire(ctx, CANCEL_LOCK)?;
    // Waiting for the lock let other threads run: the IRP may have completed. On
    // Windows the canceller keeps it from being freed meanwhile (CancelIo runs at
    // APC_LEVEL, so the completion APC waits); IoCancelIrp then finds no routine.
    if ctx.io.irps.live.get(&irp).is_none_or(|i| i.phase == Phase::Completed) {
        spinlock::release(ctx, CANCEL_LOCK)?;
        ctx.set_irql(old_irql);
        return Ok(false);
    }
    // SAFETY: the IRP is outstanding, so its memory is valid.
    let routine: PDRIVER_CANCEL = unsafe {
        (*raw).CancelIrql = old_irql;
        (*raw).Cancel = 1;
        std::mem::take(&mut (*raw).CancelRoutine)
    };
    ctx.signal();
    let Some(routine) = routine else {
        spinlock::release(ctx, CANCEL_LOCK)?;
        ctx.set_irql(old_irql);
        return Ok(false);
    };
    let device = ctx.io.irps.live[&irp].device;
    // SAFETY: the driver's cancel routine, called as IoCancelIrp calls it.
    ctx.call_driver(Routine::CancelRoutine, || unsafe { routine(device as PDEVICE_OBJECT, raw) });
    if ctx.ke.lock_owner.get(&CANCEL_LOCK) == Some(&ctx.tid) {
        return Err(ctx.violation(Violation::new(
            code::DRIVER_RETURNED_HOLDING_CANCEL_LOCK,
            [irp as u64, routine as usize as u64, 0, 0],
            "DRIVER_RETURNED_HOLDING_CANCEL_LOCK",
            "the cancel routine returned without calling IoReleaseCancelSpinLock(Irp->CancelIrql).".to_owned(),
        )));
    }
    let irql = ctx.irql();
    if irql != old_irql {
        return Err(ctx.violation(crate::ke::dpc::irql_unexpected(
            irql,
            old_irql,
            crate::checker::c8::CANCEL_ROUTINE,
            format!("the cancel routine returned at IRQL {irql}; it must return at Irp->CancelIrql ({old_irql})."),
        )));
    }
    Ok(true)
}

/// Driver Verifier's slow-cancel rule (0xC4/0x135): an IRP cancelled more than
/// `limit` ago that is still outstanding. Checked whenever the clock moves.
pub(crate) fn check_slow_cancel(state: &mut crate::machine::State, limit: u64) {
    let now = state.clock;
    let Some((irp, major, since)) = state
        .io
        .irps
        .live
        .iter()
        .filter(|(_, i)| i.phase == Phase::Outstanding)
        .filter_map(|(a, i)| i.cancelled_at.filter(|&t| now.saturating_sub(t) > limit).map(|t| (i.seq, *a, i.major, t)))
        .min()
        .map(|(_, a, m, t)| (a, m, t))
    else {
        return;
    };
    if state.halt.is_none() {
        let mut v = Violation::new(
            code::DRIVER_VERIFIER_DETECTED_VIOLATION,
            [crate::checker::c4::SLOW_CANCEL, irp as u64, limit / 10_000, 0],
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format!(
                "the {} IRP {irp:#x} was cancelled {} ms ago and is still not completed (its cancel routine was lost or the driver ignored Irp->Cancel).",
                major_name(major),
                (now - since) / 10_000
            ),
        );
        v.trace_tail = state.trace.tail(12);
        state.halt = Some(crate::machine::Halt::BugCheck(Box::new(v)));
    }
}

/// Outstanding IRPs matching `filter`.
pub(crate) fn outstanding(ctx: &Ctx<'_>, filter: impl Fn(&IrpInfo) -> bool) -> Vec<usize> {
    let mut irps: Vec<(u64, usize)> = ctx
        .io
        .irps
        .live
        .iter()
        .filter(|(_, i)| i.phase == Phase::Outstanding && filter(i))
        .map(|(a, i)| (i.seq, *a))
        .collect();
    irps.sort_unstable();
    irps.into_iter().map(|(_, a)| a).collect()
}
