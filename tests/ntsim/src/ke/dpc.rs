//! DPCs: one queue and one DISPATCH_LEVEL thread per simulated processor.

use std::collections::HashMap;
use std::sync::Arc;

use crate::checker::{Violation, c8, code, ntsim_rule};
use crate::irql::DISPATCH_LEVEL;
use crate::machine::{Ctx, Inner, KResult, State, kcall, service};
use crate::trace::Routine;
use crate::wdk_sys::{BOOLEAN, KDPC, PKDEFERRED_ROUTINE, PRKDPC, PVOID};

/// What a processor's DPC queue holds.
pub(crate) enum Queued {
    Dpc {
        dpc: usize,
        routine_kind: Routine,
    },
    /// The once-a-second IoTimer tick.
    IoTimerTick,
}

#[derive(Default)]
pub(crate) struct Dpcs {
    /// KDPC address → processor whose queue holds it.
    pub(crate) inserted: HashMap<usize, usize>,
    /// KDPC address → how many processors are running it now.
    pub(crate) running: HashMap<usize, u32>,
    /// KDPC address → the DeferredRoutine it had when it started running (the KDPC
    /// itself may be freed by its own routine).
    pub(crate) running_routine: HashMap<usize, usize>,
    /// The processor the next expired timer's DPC goes to (round robin).
    pub(crate) next_cpu: usize,
}

/// Queues `dpc` on a processor; `false` if it is already queued.
pub(crate) fn insert(state: &mut State, dpc: usize, from_cpu: usize, routine_kind: Routine) -> bool {
    if state.ke.dpcs.inserted.contains_key(&dpc) {
        return false;
    }
    let cpus = state.cpus.len();
    let running = state.ke.dpcs.running.get(&dpc).copied().unwrap_or(0) > 0;
    let cpu = if running && state.hostile.dpc_on_two_cpus { (from_cpu + 1) % cpus } else { from_cpu % cpus };
    state.cpus[cpu].push(Queued::Dpc { dpc, routine_kind });
    state.ke.dpcs.inserted.insert(dpc, cpu);
    true
}

impl crate::machine::Cpu {
    /// Queues `work` with the next ticket.
    pub(crate) fn push(&mut self, work: Queued) {
        self.dpcs.push_back((self.queued_total, work));
        self.queued_total += 1;
    }

    /// Whether everything queued with a ticket below `ticket` has run or was removed.
    fn flushed_below(&self, ticket: u64) -> bool {
        self.running.is_none_or(|t| t >= ticket) && self.dpcs.iter().all(|(t, _)| *t >= ticket)
    }
}

/// Starts processor `cpu`'s DPC thread.
pub(crate) fn start_processor(inner: &Arc<Inner>, state: &mut State, cpu: usize) {
    let tid = crate::sched::spawn(inner, state, format!("cpu{cpu}-dpc"), DISPATCH_LEVEL, move || {
        while let Some(Some(work)) = service("dpc-loop", |ctx| next_work(ctx, cpu)) {
            if service("dpc-run", |ctx| run(ctx, cpu, work)).is_none() {
                break;
            }
        }
    });
    state.threads[tid].cpu = cpu;
}

fn next_work(ctx: &mut Ctx<'_>, cpu: usize) -> KResult<Option<Queued>> {
    ctx.block(Box::new(move |state| if state.cpus[cpu].dpcs.is_empty() { None } else { Some(0) }))?;
    let Some((ticket, work)) = ctx.cpus[cpu].dpcs.pop_front() else { return Ok(None) };
    ctx.cpus[cpu].running = Some(ticket);
    if let Queued::Dpc { dpc, .. } = &work {
        ctx.ke.dpcs.inserted.remove(dpc);
        *ctx.ke.dpcs.running.entry(*dpc).or_default() += 1;
        // SAFETY: a queued KDPC is live (checked when freed and at unload).
        let routine = unsafe { (*(*dpc as *const KDPC)).DeferredRoutine }.map_or(0, |r| r as usize);
        ctx.ke.dpcs.running_routine.insert(*dpc, routine);
    }
    Ok(Some(work))
}

fn run(ctx: &mut Ctx<'_>, cpu: usize, work: Queued) -> KResult<()> {
    match work {
        Queued::Dpc { dpc, routine_kind } => {
            let raw = dpc as *mut KDPC;
            // SAFETY: the DPC was initialised by KeInitializeDpc and the driver keeps it
            // alive while queued (checked at unload).
            let (routine, context, arg1, arg2) = unsafe {
                ((*raw).DeferredRoutine, (*raw).DeferredContext, (*raw).SystemArgument1, (*raw).SystemArgument2)
            };
            // A NULL routine (a KDPC never initialised, or initialised with NULL) is a
            // call to address 0 at DISPATCH_LEVEL.
            let Some(routine) = routine else { return Err(null_routine_called(ctx, "DPC")) };
            // SAFETY: calling the driver's DPC routine with its documented arguments.
            ctx.call_driver(routine_kind, || unsafe { routine(raw, context, arg1, arg2) });
            after_routine(ctx, routine_kind)?;
            if let Some(count) = ctx.ke.dpcs.running.get_mut(&dpc) {
                *count -= 1;
                if *count == 0 {
                    ctx.ke.dpcs.running.remove(&dpc);
                    ctx.ke.dpcs.running_routine.remove(&dpc);
                }
            }
        }
        Queued::IoTimerTick => crate::ke::timer::run_io_timers(ctx)?,
    }
    ctx.cpus[cpu].running = None;
    ctx.signal();
    Ok(())
}

/// The kernel called a NULL routine pointer at the caller's IRQL: an instruction
/// fetch from address 0, bug check 0x0A with P3 = 8 (execute), as the docs' example of
/// a NULL DPC routine shows.
pub(crate) fn null_routine_called(ctx: &Ctx<'_>, what: &str) -> crate::machine::Stop {
    let irql = ctx.irql();
    ctx.violation(Violation::new(
        code::IRQL_NOT_LESS_OR_EQUAL,
        [0, u64::from(irql), 8, 0],
        "IRQL_NOT_LESS_OR_EQUAL",
        format!("the kernel called a NULL {what} routine (never initialised, or initialised with NULL)."),
    ))
}

/// A DISPATCH_LEVEL callback must return at DISPATCH_LEVEL holding no spin lock (an
/// IoTimer routine returns holding only IopTimerLock, which the kernel took).
pub(crate) fn after_routine(ctx: &mut Ctx<'_>, routine: Routine) -> KResult<()> {
    let irql = ctx.irql();
    let me = ctx.tid;
    let held: Vec<usize> = ctx
        .ke
        .lock_owner
        .iter()
        .filter(|(l, t)| **t == me && !(routine == Routine::IoTimer && **l == crate::ke::timer::IO_TIMER_LOCK))
        .map(|(l, _)| *l)
        .collect();
    if let Some(&lock) = held.first() {
        // The IRQL is unchanged (the lock was taken at DISPATCH_LEVEL): Windows has no
        // check for this; ntsim's own rule 3 [3, lock, 0, 0].
        return Err(ctx.violation(Violation::new(
            code::NTSIM_RULE,
            [ntsim_rule::SPIN_LOCK_HELD_AT_RETURN, lock as u64, 0, 0],
            "NTSIM_SPIN_LOCK_HELD_AT_RETURN",
            format!("{routine} returned holding spin lock {lock:#x}."),
        )));
    }
    if irql != DISPATCH_LEVEL {
        let site = if routine == Routine::IoTimer { c8::IO_TIMER_ROUTINE } else { c8::DPC_ROUTINE };
        return Err(ctx.violation(irql_unexpected(
            irql,
            DISPATCH_LEVEL,
            site,
            format!("{routine} returned at IRQL {irql}; it was called at DISPATCH_LEVEL."),
        )));
    }
    Ok(())
}

/// Bug check 0xC8 IRQL_UNEXPECTED_VALUE: P1 = (current << 16) | (expected << 8) | site.
pub(crate) fn irql_unexpected(current: u8, expected: u8, site: u64, text: String) -> Violation {
    let p1 = (u64::from(current) << 16) | (u64::from(expected) << 8) | site;
    Violation::new(code::IRQL_UNEXPECTED_VALUE, [p1, 0, 0, 0], "IRQL_UNEXPECTED_VALUE", text)
}

/// KOBJECTS' DpcObject, the Type KeInitializeDpc writes.
const DPC_OBJECT: u8 = 0x13;
/// MediumImportance.
const MEDIUM_IMPORTANCE: u8 = 1;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeInitializeDpc(Dpc: PRKDPC, DeferredRoutine: PKDEFERRED_ROUTINE, DeferredContext: PVOID) {
    kcall("KeInitializeDpc", |ctx| {
        let dpc = Dpc as usize;
        if ctx.ke.dpcs.inserted.contains_key(&dpc) {
            // Re-initialising a queued KDPC rewrites the links of the processor's DPC
            // queue: Verifier reports the DPC object in memory where it may not be.
            return Err(ctx.violation(Violation::new(
                code::TIMER_OR_DPC_INVALID,
                [1, dpc as u64, dpc as u64, (dpc + size_of::<KDPC>()) as u64],
                "TIMER_OR_DPC_INVALID",
                format!("KeInitializeDpc on {dpc:#x}, which is still queued: KeRemoveQueueDpc (or let it run) first."),
            )));
        }
        // SAFETY: the driver passed a KDPC to initialise; zeroing is a valid state.
        unsafe {
            core::ptr::write_bytes(Dpc, 0, 1);
            (*Dpc).Type = DPC_OBJECT;
            (*Dpc).Importance = MEDIUM_IMPORTANCE;
            (*Dpc).DeferredRoutine = DeferredRoutine;
            (*Dpc).DeferredContext = DeferredContext;
        }
        Ok(())
    });
}
const _: crate::wdk_sys::fnsig::KeInitializeDpc = KeInitializeDpc;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeInsertQueueDpc(Dpc: PRKDPC, SystemArgument1: PVOID, SystemArgument2: PVOID) -> BOOLEAN {
    kcall("KeInsertQueueDpc", |ctx| {
        let cpu = ctx.threads[ctx.tid].cpu;
        if ctx.ke.dpcs.inserted.contains_key(&(Dpc as usize)) {
            return Ok(0);
        }
        // SAFETY: the driver passed an initialised KDPC.
        unsafe {
            (*Dpc).SystemArgument1 = SystemArgument1;
            (*Dpc).SystemArgument2 = SystemArgument2;
        }
        let inserted = insert(ctx, Dpc as usize, cpu, Routine::Dpc);
        ctx.signal();
        Ok(BOOLEAN::from(inserted))
    })
}
const _: crate::wdk_sys::fnsig::KeInsertQueueDpc = KeInsertQueueDpc;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeRemoveQueueDpc(Dpc: PRKDPC) -> BOOLEAN {
    kcall("KeRemoveQueueDpc", |ctx| {
        let dpc = Dpc as usize;
        let Some(cpu) = ctx.ke.dpcs.inserted.remove(&dpc) else { return Ok(0) };
        ctx.cpus[cpu].dpcs.retain(|(_, q)| !matches!(q, Queued::Dpc { dpc: d, .. } if *d == dpc));
        ctx.signal();
        Ok(1)
    })
}
const _: crate::wdk_sys::fnsig::KeRemoveQueueDpc = KeRemoveQueueDpc;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeFlushQueuedDpcs() {
    kcall("KeFlushQueuedDpcs", |ctx| {
        // Waits for what was queued (or running) on every processor before the call; a
        // DPC removed meanwhile no longer counts, and one queued after the call never does.
        let tickets: Vec<u64> = ctx.cpus.iter().map(|c| c.queued_total).collect();
        ctx.block(Box::new(move |state| {
            state.cpus.iter().zip(&tickets).all(|(cpu, &ticket)| cpu.flushed_below(ticket)).then_some(0)
        }))?;
        Ok(())
    });
}
const _: crate::wdk_sys::fnsig::KeFlushQueuedDpcs = KeFlushQueuedDpcs;
