//! Work items: IoAllocateWorkItem / IoQueueWorkItem / IoFreeWorkItem, run at
//! PASSIVE_LEVEL on worker threads. A queued item holds an object reference on its
//! device until its routine returns (ReactOS `iowork.c`): that keeps the device
//! object and the driver image, but does not defer DriverUnload. Misuse is bug check
//! 0xE4 WORKER_INVALID with the documented P1.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::checker::{Violation, code, e4, ntsim_rule};
use crate::irql::PASSIVE_LEVEL;
use crate::machine::{Ctx, Inner, KResult, State, kcall, service};
use crate::trace::Routine;
use crate::wdk_sys::{PDEVICE_OBJECT, PIO_WORKITEM, PIO_WORKITEM_ROUTINE, PVOID, WORK_QUEUE_TYPE};

pub(crate) struct Item {
    pub(crate) device: usize,
    pub(crate) queued: bool,
    _memory: Box<[u64; 8]>,
}

struct Queued {
    item: usize,
    device: usize,
    routine: PIO_WORKITEM_ROUTINE,
    context: usize,
}

// SAFETY: the routine is a plain function pointer into driver code.
unsafe impl Send for Queued {}

/// What a worker thread runs: a driver's work item, or an object deletion the object
/// manager deferred (ObpDeferObjectDeletion queues it to a system worker too).
enum Work {
    Item(Queued),
    Delete { object: usize, kind: crate::ob::Kind },
}

#[derive(Default)]
pub(crate) struct WorkQueue {
    pub(crate) items: HashMap<usize, Item>,
    queue: VecDeque<Work>,
    /// Devices of the work items whose routines are running now.
    pub(crate) running: Vec<usize>,
}

impl WorkQueue {
    /// Driver work items queued or running.
    pub(crate) fn outstanding(&self) -> usize {
        self.queue.iter().filter(|w| matches!(w, Work::Item(_))).count() + self.running.len()
    }

    /// The routine `item` is queued with (0 if it is not queued).
    fn routine_of(&self, item: usize) -> usize {
        self.queue
            .iter()
            .find_map(|w| match w {
                Work::Item(q) if q.item == item => Some(q.routine.map_or(0, |r| r as usize)),
                _ => None,
            })
            .unwrap_or(0)
    }
}

pub(crate) fn start_worker(inner: &Arc<Inner>, state: &mut State, n: usize) {
    crate::sched::spawn(inner, state, format!("worker-{n}"), PASSIVE_LEVEL, move || {
        while let Some(Some(work)) = service("worker-loop", next_work) {
            if service("worker-run", |ctx| run(ctx, work)).is_none() {
                break;
            }
        }
    });
}

fn next_work(ctx: &mut Ctx<'_>) -> KResult<Option<Work>> {
    ctx.block(Box::new(|state| if state.ke.work.queue.is_empty() { None } else { Some(0) }))?;
    let work = ctx.ke.work.queue.pop_front();
    if let Some(Work::Item(w)) = &work {
        ctx.ke.work.running.push(w.device);
        if let Some(item) = ctx.ke.work.items.get_mut(&w.item) {
            item.queued = false;
        }
    }
    Ok(work)
}

/// Queues the deletion of an object whose last reference went above PASSIVE_LEVEL.
pub(crate) fn defer_deletion(ctx: &mut Ctx<'_>, object: usize, kind: crate::ob::Kind) {
    ctx.ke.work.queue.push_back(Work::Delete { object, kind });
    ctx.signal();
}

fn run(ctx: &mut Ctx<'_>, work: Work) -> KResult<()> {
    match work {
        Work::Item(item) => run_item(ctx, item),
        Work::Delete { object, kind } => {
            crate::ob::delete(ctx, object, kind)?;
            ctx.signal();
            Ok(())
        }
    }
}

fn run_item(ctx: &mut Ctx<'_>, work: Queued) -> KResult<()> {
    let device = work.device;
    if let Some(routine) = work.routine {
        // SAFETY: the driver's work routine with the arguments it queued.
        ctx.call_driver(Routine::WorkItem, || unsafe {
            routine(device as PDEVICE_OBJECT, work.context as PVOID);
        });
    }
    let irql = ctx.irql();
    if irql != PASSIVE_LEVEL {
        // The worker thread's check after each item (0xE1's page): [routine, IRQL,
        // parameter, work item]. For IoQueueWorkItem Windows names its own wrapper
        // routine and the IO_WORKITEM; ntsim names the driver's routine and context.
        let routine = work.routine.map_or(0, |r| r as usize);
        return Err(ctx.violation(Violation::new(
            code::WORKER_THREAD_RETURNED_AT_BAD_IRQL,
            [routine as u64, u64::from(irql), work.context as u64, work.item as u64],
            "WORKER_THREAD_RETURNED_AT_BAD_IRQL",
            format!("a work item routine returned at IRQL {irql}; it was called at PASSIVE_LEVEL."),
        )));
    }
    if let Some(at) = ctx.ke.work.running.iter().position(|&d| d == device) {
        ctx.ke.work.running.remove(at);
    }
    crate::ob::dereference(ctx, device)?;
    ctx.signal();
    Ok(())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoAllocateWorkItem(DeviceObject: PDEVICE_OBJECT) -> PIO_WORKITEM {
    kcall("IoAllocateWorkItem", |ctx| {
        if ctx.should_fail() {
            return Ok(core::ptr::null_mut());
        }
        let mut memory = Box::new([0u64; 8]);
        let address = memory.as_mut_ptr() as usize;
        ctx.ke.work.items.insert(address, Item { device: DeviceObject as usize, queued: false, _memory: memory });
        Ok(address as PIO_WORKITEM)
    })
}
const _: crate::wdk_sys::fnsig::IoAllocateWorkItem = IoAllocateWorkItem;

/// Bug check 0xE4 WORKER_INVALID, whose P1 says what was wrong with the work item.
fn worker_invalid(ctx: &Ctx<'_>, params: [u64; 4], text: String) -> crate::machine::Stop {
    ctx.violation(Violation::new(code::WORKER_INVALID, params, "WORKER_INVALID", text))
}

fn work_item_rule(ctx: &Ctx<'_>, item: usize, text: String) -> crate::machine::Stop {
    ctx.violation(Violation::new(
        code::NTSIM_RULE,
        [ntsim_rule::BAD_OBJECT, item as u64, 0, 0],
        "NTSIM_BAD_WORK_ITEM",
        text,
    ))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoQueueWorkItem(
    IoWorkItem: PIO_WORKITEM,
    WorkerRoutine: PIO_WORKITEM_ROUTINE,
    QueueType: WORK_QUEUE_TYPE,
    Context: PVOID,
) {
    kcall("IoQueueWorkItem", |ctx| {
        let item = IoWorkItem as usize;
        let device = match ctx.ke.work.items.get(&item) {
            None => {
                return Err(work_item_rule(
                    ctx,
                    item,
                    format!("IoQueueWorkItem on {item:#x}, which IoAllocateWorkItem did not return (or was freed)."),
                ));
            }
            Some(i) if i.queued => {
                let queue = u64::from(QueueType.cast_unsigned());
                return Err(worker_invalid(
                    ctx,
                    [e4::ACTIVE_ITEM_QUEUED, item as u64, queue, 0],
                    format!("IoQueueWorkItem on {item:#x}, which is already queued."),
                ));
            }
            Some(i) => i.device,
        };
        if WorkerRoutine.is_none() {
            let queue = u64::from(QueueType.cast_unsigned());
            return Err(worker_invalid(
                ctx,
                [e4::INVALID_ROUTINE, item as u64, queue, 0],
                format!("IoQueueWorkItem on {item:#x} with a NULL worker routine."),
            ));
        }
        crate::ob::reference(ctx, device);
        ctx.ke.work.items.get_mut(&item).expect("checked").queued = true;
        let queued = Queued { item, device, routine: WorkerRoutine, context: Context as usize };
        ctx.ke.work.queue.push_back(Work::Item(queued));
        ctx.signal();
        Ok(())
    });
}
const _: crate::wdk_sys::fnsig::IoQueueWorkItem = IoQueueWorkItem;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoFreeWorkItem(IoWorkItem: PIO_WORKITEM) {
    kcall("IoFreeWorkItem", |ctx| {
        let item = IoWorkItem as usize;
        match ctx.ke.work.items.get(&item) {
            None => Err(work_item_rule(
                ctx,
                item,
                format!("IoFreeWorkItem on {item:#x}, which is not an allocated work item (freed twice?)."),
            )),
            Some(i) if i.queued => {
                let routine = ctx.ke.work.routine_of(item);
                Err(worker_invalid(
                    ctx,
                    [e4::QUEUED_IO_ITEM_FREED, item as u64, routine as u64, 0],
                    format!("IoFreeWorkItem on {item:#x} while it is still queued: wait for its routine first."),
                ))
            }
            Some(_) => {
                ctx.ke.work.items.remove(&item);
                Ok(())
            }
        }
    });
}
const _: crate::wdk_sys::fnsig::IoFreeWorkItem = IoFreeWorkItem;
