//! Virtual interrupt lines, interrupt objects, controller objects, mapped register
//! windows and resource claims — the hardware a legacy driver's "hardware profile"
//! talks to. A test describes a device (a register window at a bus address), writes
//! its registers and raises its bus interrupt line; the line reaches the system vector
//! the HAL assigns to it (`hal.rs`), and ntsim runs the ISR connected there, at its
//! IRQL under the interrupt spin lock.

use std::collections::{HashMap, VecDeque};
use std::mem::offset_of;

use crate::checker::{Violation, code};
use crate::hal;
use crate::machine::{Ctx, KResult, Machine, Stopped, kcall};
use crate::trace::Routine;
use crate::wdk_sys::{
    BOOLEAN, CM_FULL_RESOURCE_DESCRIPTOR, CM_PARTIAL_RESOURCE_DESCRIPTOR, CM_PARTIAL_RESOURCE_LIST, CM_RESOURCE_LIST,
    CONTROLLER_OBJECT, CmResourceTypeInterrupt, CmResourceTypeMemory, KAFFINITY, KINTERRUPT_MODE, KIRQL,
    MEMORY_CACHING_TYPE, NTSTATUS, PBOOLEAN, PCM_RESOURCE_LIST, PCONTROLLER_OBJECT, PDEVICE_OBJECT, PDRIVER_OBJECT,
    PHYSICAL_ADDRESS, PKINTERRUPT, PKSERVICE_ROUTINE, PKSPIN_LOCK, PKSYNCHRONIZE_ROUTINE, PVOID, SIZE_T,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_SUCCESS, ULONG,
};

/// A connected interrupt object (the I/O manager's IO_INTERRUPT block on Windows).
struct Connection {
    isr: PKSERVICE_ROUTINE,
    context: usize,
    irql: u8,
    synchronize_irql: u8,
    /// The processors the ISR may run on: ProcessorEnableMask & the active processors.
    affinity: u64,
    memory: Box<[u64; 16]>,
}

/// A device's register window: `bus` is its bus-relative (raw) address; MmMapIoSpace
/// takes the translated one, [`hal::system_address`] of it.
struct Window {
    bus: u64,
    memory: Box<[u32]>,
    mapped_at: Option<usize>,
}

/// One resource of a claim, as the driver reported it to IoReportResourceForDetection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// A CmResourceTypeMemory range.
    Memory {
        /// Its first (translated) address.
        start: u64,
        /// Its length in bytes.
        length: u32,
    },
    /// A CmResourceTypeInterrupt.
    Interrupt {
        /// Its level (the IRQL the ISR runs at).
        level: u32,
        /// Its vector.
        vector: u32,
        /// The processors it may be delivered to.
        affinity: u64,
    },
    /// Another CM_RESOURCE_TYPE, by number.
    Other(u8),
}

/// Interrupt objects freed by IoDisconnectInterrupt kept here (poisoned) for a while,
/// so that a later use is recognised as the use after free it is.
const FREED_KEPT: usize = 64;
const POISON: u64 = 0xDEAD_0B1E_C7ED_F4EE;

#[derive(Default)]
pub(crate) struct Interrupts {
    /// Interrupt object address → connection.
    connections: HashMap<usize, Connection>,
    /// System vector → interrupt object.
    vectors: HashMap<u32, usize>,
    freed: VecDeque<(usize, Box<[u64; 16]>)>,
    windows: Vec<Window>,
    controllers: HashMap<usize, (Box<CONTROLLER_OBJECT>, Box<[u128]>)>,
    /// Driver object → the resources it claims in the resource map.
    claims: HashMap<usize, Vec<Resource>>,
    /// The processor the next interrupt goes to, among those its object allows.
    next_cpu: usize,
}

// SAFETY: the ISR pointers are plain function pointers into driver code; everything is
// accessed under the machine lock.
unsafe impl Send for Interrupts {}

/// The lock key interrupt objects use in the spin-lock owner table.
fn lock_key(interrupt: usize) -> usize {
    interrupt | 1
}

impl Interrupts {
    pub(crate) fn connected(&self) -> usize {
        self.connections.len()
    }
    pub(crate) fn mapped(&self) -> usize {
        self.windows.iter().filter(|w| w.mapped_at.is_some()).count()
    }
    pub(crate) fn controllers(&self) -> usize {
        self.controllers.len()
    }
    pub(crate) fn claims(&self) -> usize {
        self.claims.len()
    }
    /// Whether bus address `bus` falls in a register window (what the bus decodes).
    pub(crate) fn decodes(&self, bus: u64) -> bool {
        self.windows.iter().any(|w| (w.bus..w.bus + 4 * w.memory.len() as u64).contains(&bus))
    }
    fn was_freed(&self, object: usize) -> bool {
        self.freed.iter().any(|(address, _)| *address == object)
    }
}

fn violation(ctx: &Ctx<'_>, p1: u64, text: String) -> crate::machine::Stop {
    ctx.violation(Violation::new(
        code::NTSIM_RULE,
        [crate::checker::ntsim_rule::BAD_OBJECT, p1, 0, 0],
        "NTSIM_BAD_HARDWARE_CALL",
        text,
    ))
}

/// A read of an interrupt object IoDisconnectInterrupt freed. On Windows the I/O
/// manager frees the IO_INTERRUPT block holding it there (ReactOS
/// ntoskrnl/io/iomgr/irq.c ends IoDisconnectInterrupt with ExFreePool), so the next
/// KeSynchronizeExecution or IoDisconnectInterrupt reads freed pool: bug check 0x50
/// PAGE_FAULT_IN_NONPAGED_AREA once the page is gone (P2 0: a read), or a hang on a
/// stale spin lock, or silent corruption. ntsim reports the bug check.
fn use_after_free(ctx: &Ctx<'_>, object: usize) -> crate::machine::Stop {
    let api = ctx.api;
    ctx.violation(Violation::new(
        code::PAGE_FAULT_IN_NONPAGED_AREA,
        [object as u64, 0, 0, 0],
        "PAGE_FAULT_IN_NONPAGED_AREA",
        format!(
            "{api} on interrupt object {object:#x}, which IoDisconnectInterrupt freed: disconnect only after \
             the ISR can no longer queue its DPC and the DPC has been removed and flushed."
        ),
    ))
}

/// IoConnectInterrupt: one interrupt object on `Vector` for the processors in
/// ProcessorEnableMask. Fails with STATUS_INVALID_PARAMETER when the mask names no active
/// processor (ReactOS ntoskrnl/io/iomgr/irq.c), the vector is taken (no sharing), the
/// IRQL is not a device IRQL, or SynchronizeIrql < Irql (KeConnectInterrupt's checks).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoConnectInterrupt(
    InterruptObject: *mut PKINTERRUPT,
    ServiceRoutine: PKSERVICE_ROUTINE,
    ServiceContext: PVOID,
    _SpinLock: PKSPIN_LOCK,
    Vector: ULONG,
    Irql: KIRQL,
    SynchronizeIrql: KIRQL,
    _InterruptMode: KINTERRUPT_MODE,
    _ShareVector: BOOLEAN,
    ProcessorEnableMask: KAFFINITY,
    _FloatingSave: BOOLEAN,
) -> NTSTATUS {
    kcall("IoConnectInterrupt", |ctx| {
        // SAFETY: the driver passed a writable pointer; it is NULL unless we succeed.
        unsafe { *InterruptObject = std::ptr::null_mut() };
        if ctx.should_fail() {
            return Ok(STATUS_INSUFFICIENT_RESOURCES);
        }
        let active: u64 = (1 << ctx.cpus.len()) - 1;
        let affinity = ProcessorEnableMask & active;
        if affinity == 0
            || ctx.ke.interrupts.vectors.contains_key(&Vector)
            || SynchronizeIrql < Irql
            || Irql <= crate::irql::DISPATCH_LEVEL
        {
            return Ok(STATUS_INVALID_PARAMETER);
        }
        let mut memory = Box::new([0u64; 16]);
        let object = memory.as_mut_ptr() as usize;
        let connection = Connection {
            isr: ServiceRoutine,
            context: ServiceContext as usize,
            irql: Irql,
            synchronize_irql: SynchronizeIrql,
            affinity,
            memory,
        };
        ctx.ke.interrupts.connections.insert(object, connection);
        ctx.ke.interrupts.vectors.insert(Vector, object);
        // SAFETY: as above.
        unsafe { *InterruptObject = object as PKINTERRUPT };
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::IoConnectInterrupt = IoConnectInterrupt;

/// IoDisconnectInterrupt: waits for a running ISR (KeDisconnectInterrupt runs on the
/// interrupt's processor, so it cannot overlap its ISR: ReactOS ntoskrnl/ke/i386/irqobj.c),
/// disconnects, and frees the interrupt object.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoDisconnectInterrupt(InterruptObject: PKINTERRUPT) {
    kcall("IoDisconnectInterrupt", |ctx| {
        let object = InterruptObject as usize;
        if ctx.ke.interrupts.was_freed(object) {
            return Err(use_after_free(ctx, object));
        }
        if !ctx.ke.interrupts.connections.contains_key(&object) {
            return Err(violation(
                ctx,
                object as u64,
                format!("IoDisconnectInterrupt on {object:#x}, which is not a connected interrupt object."),
            ));
        }
        crate::ke::spinlock::acquire(ctx, lock_key(object))?;
        let interrupts = &mut ctx.ke.interrupts;
        let mut connection = interrupts.connections.remove(&object).expect("connected");
        interrupts.vectors.retain(|_, o| *o != object);
        connection.memory.fill(POISON);
        interrupts.freed.push_back((object, connection.memory));
        if interrupts.freed.len() > FREED_KEPT {
            interrupts.freed.pop_front();
        }
        crate::ke::spinlock::release(ctx, lock_key(object))
    });
}
const _: crate::wdk_sys::fnsig::IoDisconnectInterrupt = IoDisconnectInterrupt;

/// Raises to the interrupt's synchronize IRQL, takes its spin lock, runs `routine`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeSynchronizeExecution(
    Interrupt: PKINTERRUPT,
    SynchronizeRoutine: PKSYNCHRONIZE_ROUTINE,
    SynchronizeContext: PVOID,
) -> BOOLEAN {
    kcall("KeSynchronizeExecution", |ctx| {
        let object = Interrupt as usize;
        if ctx.ke.interrupts.was_freed(object) {
            return Err(use_after_free(ctx, object));
        }
        let Some(irql) = ctx.ke.interrupts.connections.get(&object).map(|c| c.synchronize_irql) else {
            return Err(violation(
                ctx,
                object as u64,
                format!("KeSynchronizeExecution with {object:#x}, which is not a connected interrupt object."),
            ));
        };
        let old = ctx.irql();
        if old > irql {
            return Err(violation(
                ctx,
                object as u64,
                format!("KeSynchronizeExecution at IRQL {old}, above the interrupt's synchronize IRQL {irql}."),
            ));
        }
        ctx.set_irql(irql);
        crate::ke::spinlock::acquire(ctx, lock_key(object))?;
        let result = match SynchronizeRoutine {
            // SAFETY: the driver's synchronize routine with its context.
            Some(routine) => ctx.call_driver(Routine::SynchronizeRoutine, || unsafe { routine(SynchronizeContext) }),
            // KeSynchronizeExecution calls the routine without checking it (ReactOS
            // KeSynchronizeExecution): a fetch from address 0 at the synchronize IRQL.
            None => return Err(crate::ke::dpc::null_routine_called(ctx, "synchronize")),
        };
        crate::ke::spinlock::release(ctx, lock_key(object))?;
        ctx.set_irql(old);
        ctx.signal();
        Ok(result)
    })
}
const _: crate::wdk_sys::fnsig::KeSynchronizeExecution = KeSynchronizeExecution;

/// MmMapIoSpace of a register window's translated (system) address; NULL for any other
/// address (there is no memory there).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn MmMapIoSpace(
    PhysicalAddress: PHYSICAL_ADDRESS,
    NumberOfBytes: SIZE_T,
    _CacheType: MEMORY_CACHING_TYPE,
) -> PVOID {
    kcall("MmMapIoSpace", |ctx| {
        if ctx.should_fail() {
            return Ok(std::ptr::null_mut());
        }
        // SAFETY: PHYSICAL_ADDRESS is a plain 64-bit union.
        let physical = unsafe { PhysicalAddress.QuadPart } as u64;
        let Some(window) = ctx.ke.interrupts.windows.iter_mut().find(|w| {
            hal::system_address(w.bus) == physical
                && NumberOfBytes as usize <= w.memory.len() * 4
                && w.mapped_at.is_none()
        }) else {
            return Ok(std::ptr::null_mut());
        };
        let address = window.memory.as_mut_ptr() as usize;
        window.mapped_at = Some(address);
        Ok(address as PVOID)
    })
}
const _: crate::wdk_sys::fnsig::MmMapIoSpace = MmMapIoSpace;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn MmUnmapIoSpace(BaseAddress: PVOID, NumberOfBytes: SIZE_T) {
    kcall("MmUnmapIoSpace", |ctx| {
        let address = BaseAddress as usize;
        // The DDI page allows DISPATCH_LEVEL, but Verifier flags MmUnmapIoSpace above
        // APC_LEVEL: 0xC4/0x7B [IRQL, address, bytes] (0xC4's page).
        let irql = ctx.irql();
        if irql > crate::irql::APC_LEVEL {
            return Err(ctx.violation(Violation::new(
                code::DRIVER_VERIFIER_DETECTED_VIOLATION,
                [crate::checker::c4::UNMAP_IO_SPACE_IRQL, u64::from(irql), address as u64, NumberOfBytes],
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format!("MmUnmapIoSpace was called at IRQL {irql}; Driver Verifier allows at most APC_LEVEL."),
            )));
        }
        match ctx.ke.interrupts.windows.iter_mut().find(|w| w.mapped_at == Some(address)) {
            Some(window) => {
                window.mapped_at = None;
                Ok(())
            }
            None => Err(violation(
                ctx,
                address as u64,
                format!("MmUnmapIoSpace on {address:#x}, which MmMapIoSpace did not return."),
            )),
        }
    });
}
const _: crate::wdk_sys::fnsig::MmUnmapIoSpace = MmUnmapIoSpace;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoCreateController(Size: ULONG) -> PCONTROLLER_OBJECT {
    kcall("IoCreateController", |ctx| {
        if ctx.should_fail() {
            return Ok(std::ptr::null_mut());
        }
        // SAFETY: CONTROLLER_OBJECT is plain data.
        let mut object: Box<CONTROLLER_OBJECT> = Box::new(unsafe { std::mem::zeroed() });
        let mut extension = vec![0u128; (Size as usize).div_ceil(16).max(1)].into_boxed_slice();
        object.Type = 2;
        object.Size = i16::try_from(size_of::<CONTROLLER_OBJECT>()).expect("small");
        object.ControllerExtension = extension.as_mut_ptr().cast();
        let address = std::ptr::from_mut(object.as_mut()) as usize;
        ctx.ke.interrupts.controllers.insert(address, (object, extension));
        Ok(address as PCONTROLLER_OBJECT)
    })
}
const _: crate::wdk_sys::fnsig::IoCreateController = IoCreateController;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoDeleteController(ControllerObject: PCONTROLLER_OBJECT) {
    kcall("IoDeleteController", |ctx| {
        let address = ControllerObject as usize;
        if ctx.ke.interrupts.controllers.remove(&address).is_none() {
            return Err(violation(
                ctx,
                address as u64,
                format!("IoDeleteController on {address:#x}, which is not a live controller object."),
            ));
        }
        Ok(())
    });
}
const _: crate::wdk_sys::fnsig::IoDeleteController = IoDeleteController;

/// The resources of a CM_RESOURCE_LIST of `size` bytes, or `None` if the list does not
/// fit in its size (ntsim's choice: Windows does not document a malformed list).
///
/// # Safety
/// `list` points to at least `size` readable bytes.
unsafe fn read_resource_list(list: *const u8, size: usize) -> Option<Vec<Resource>> {
    // SAFETY: every read below is checked against `size`; the layout is pack(4), so
    // unaligned reads.
    let read_u32 = |at: usize| (at + 4 <= size).then(|| unsafe { list.add(at).cast::<u32>().read_unaligned() });
    let full_header = offset_of!(CM_FULL_RESOURCE_DESCRIPTOR, PartialResourceList)
        + offset_of!(CM_PARTIAL_RESOURCE_LIST, PartialDescriptors);
    let partial_count_at =
        offset_of!(CM_FULL_RESOURCE_DESCRIPTOR, PartialResourceList) + offset_of!(CM_PARTIAL_RESOURCE_LIST, Count);
    let mut resources = Vec::new();
    let mut at = offset_of!(CM_RESOURCE_LIST, List);
    for _ in 0..read_u32(0)? {
        let partials = read_u32(at + partial_count_at)? as usize;
        at += full_header;
        for _ in 0..partials {
            if at + size_of::<CM_PARTIAL_RESOURCE_DESCRIPTOR>() > size {
                return None;
            }
            // SAFETY: checked to be inside the list just above.
            let d = unsafe { list.add(at).cast::<CM_PARTIAL_RESOURCE_DESCRIPTOR>().read_unaligned() };
            let kind = u32::from(d.Type);
            // SAFETY: the union member read is the one `Type` names.
            resources.push(unsafe {
                if kind == CmResourceTypeMemory {
                    Resource::Memory { start: d.u.Memory.Start.QuadPart as u64, length: d.u.Memory.Length }
                } else if kind == CmResourceTypeInterrupt {
                    let i = d.u.Interrupt;
                    Resource::Interrupt { level: i.Level, vector: i.Vector, affinity: i.Affinity }
                } else {
                    Resource::Other(d.Type)
                }
            });
            at += size_of::<CM_PARTIAL_RESOURCE_DESCRIPTOR>();
        }
    }
    Some(resources)
}

/// Claims the driver's legacy resources (a list with resources), or releases them (a
/// list whose Count is zero: "calls this routine again with a DriverList or DeviceList
/// with a Count of zero", IoReportResourceForDetection docs, paraphrased). NULL for both
/// lists is STATUS_INVALID_PARAMETER and changes nothing (ReactOS
/// ntoskrnl/io/pnpmgr/pnpreport.c). ntsim detects no conflicts between drivers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoReportResourceForDetection(
    DriverObject: PDRIVER_OBJECT,
    DriverList: PCM_RESOURCE_LIST,
    DriverListSize: ULONG,
    _DeviceObject: PDEVICE_OBJECT,
    DeviceList: PCM_RESOURCE_LIST,
    DeviceListSize: ULONG,
    ConflictDetected: PBOOLEAN,
) -> NTSTATUS {
    kcall("IoReportResourceForDetection", |ctx| {
        if !ConflictDetected.is_null() {
            // SAFETY: the driver passed a writable BOOLEAN.
            unsafe { *ConflictDetected = 0 };
        }
        let (list, size) = match (DriverList.is_null(), DeviceList.is_null()) {
            (true, true) => return Ok(STATUS_INVALID_PARAMETER),
            (false, _) => (DriverList, DriverListSize),
            (true, false) => (DeviceList, DeviceListSize),
        };
        // SAFETY: the driver passed a list of `size` bytes.
        let Some(resources) = (unsafe { read_resource_list(list.cast(), size as usize) }) else {
            return Ok(STATUS_INVALID_PARAMETER);
        };
        // Recording the claim (the registry's resource map on Windows) can fail.
        if ctx.should_fail() {
            return Ok(STATUS_INSUFFICIENT_RESOURCES);
        }
        let driver = DriverObject as usize;
        if resources.is_empty() {
            ctx.ke.interrupts.claims.remove(&driver);
        } else {
            ctx.ke.interrupts.claims.insert(driver, resources);
        }
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::IoReportResourceForDetection = IoReportResourceForDetection;

/// Delivers bus interrupt line `line`, as the interrupt controller would: to the
/// interrupt object connected to the line's system vector, on one of its processors,
/// at its IRQL under its spin lock. `false` if no ISR claimed it (nothing connected
/// there, or the ISR said it was not its device's).
fn deliver(ctx: &mut Ctx<'_>, line: u32) -> KResult<bool> {
    let Some(&object) = hal::vector_of_line(line).and_then(|v| ctx.ke.interrupts.vectors.get(&v)) else {
        return Ok(false);
    };
    let (isr, context, irql, affinity) = {
        let c = &ctx.ke.interrupts.connections[&object];
        (c.isr, c.context, c.irql, c.affinity)
    };
    let cpus = ctx.cpus.len();
    let cpu = (0..cpus).map(|k| (ctx.ke.interrupts.next_cpu + k) % cpus).find(|c| affinity >> c & 1 == 1).unwrap_or(0);
    ctx.ke.interrupts.next_cpu = cpu + 1;
    let tid = ctx.tid;
    ctx.threads[tid].cpu = cpu;
    ctx.set_irql(irql);
    crate::ke::spinlock::acquire(ctx, lock_key(object))?;
    // Disconnected while this interrupt waited for the lock: nobody handles it.
    let claimed = ctx.ke.interrupts.connections.contains_key(&object)
        && isr.is_some_and(|isr| {
            ctx.call_driver(Routine::Isr, || {
                // SAFETY: the driver's ISR with the context it connected.
                unsafe { isr(object as PKINTERRUPT, context as PVOID) }
            }) != 0
        });
    let now = ctx.irql();
    if now != irql {
        // Verifier's 0xC4/0x111, parameters in the order of "Bug Check 0xC4:
        // DRIVER_VERIFIER_DETECTED_VIOLATION" (learn.microsoft.com, windows-hardware/
        // drivers/debugger): the ISR's address, the IRQL before it ran, the IRQL after.
        let routine = isr.map_or(0, |r| r as usize);
        return Err(ctx.violation(Violation::new(
            code::DRIVER_VERIFIER_DETECTED_VIOLATION,
            [crate::checker::c4::ISR_CHANGED_IRQL, routine as u64, u64::from(irql), u64::from(now)],
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format!("the ISR returned at IRQL {now}; it was called at IRQL {irql}."),
        )));
    }
    crate::ke::spinlock::release(ctx, lock_key(object))?;
    ctx.set_irql(0);
    ctx.signal();
    Ok(claimed)
}

/// A register write the device makes before it interrupts: (window's bus address,
/// register index, value).
pub type RegisterWrite = (u64, usize, u32);

fn write_registers(state: &mut crate::machine::State, writes: &[RegisterWrite]) {
    for &(bus, index, value) in writes {
        let window = state.ke.interrupts.windows.iter_mut().find(|w| w.bus == bus).expect("window");
        // SAFETY: volatile write of a register the driver reads.
        unsafe { std::ptr::write_volatile(&raw mut window.memory[index], value) };
    }
}

impl Machine {
    /// Adds a device register window of `words` 32-bit registers at bus address `bus`
    /// (the raw address a driver claims; it maps [`crate::hal::system_address`] of it).
    pub fn add_register_window(&self, bus: u64, words: usize) {
        self.lock().ke.interrupts.windows.push(Window {
            bus,
            memory: vec![0; words].into_boxed_slice(),
            mapped_at: None,
        });
    }

    /// Reads register `index` of the window at bus address `bus`.
    pub fn read_register(&self, bus: u64, index: usize) -> u32 {
        let state = self.lock();
        let window = state.ke.interrupts.windows.iter().find(|w| w.bus == bus).expect("window");
        // SAFETY: volatile read of a register the driver may write concurrently.
        unsafe { std::ptr::read_volatile(&raw const window.memory[index]) }
    }

    /// Writes register `index` of the window at bus address `bus` (the device's side).
    pub fn write_register(&self, bus: u64, index: usize, value: u32) {
        write_registers(&mut self.lock(), &[(bus, index, value)]);
    }

    /// Asserts bus interrupt line `line` once and runs what follows; returns whether an
    /// ISR claimed the interrupt.
    pub fn raise_interrupt(&self, line: u32) -> Result<bool, Stopped> {
        let claimed = self.run_job("interrupt", Routine::Kernel, move || {
            crate::machine::service("interrupt", move |ctx| deliver(ctx, line)).unwrap_or(false)
        })?;
        self.run_until_idle();
        self.verdict()?;
        Ok(claimed)
    }

    /// Posts an interrupt without running it: when the machine next runs, the device
    /// makes `writes` (a sample and its status, say) and asserts bus line `line`, in
    /// whatever order the scheduler interleaves that with the rest of the posted work.
    pub fn post_interrupt(&self, writes: &[RegisterWrite], line: u32) {
        let writes = writes.to_vec();
        let inner = std::sync::Arc::clone(&self.inner);
        let mut state = self.lock();
        let tid = crate::sched::spawn(&inner, &mut state, "interrupt".to_owned(), 0, move || {
            crate::machine::service("interrupt", move |ctx| {
                write_registers(ctx, &writes);
                deliver(ctx, line)
            });
        });
        state.threads[tid].routines.push(Routine::Kernel);
    }

    /// The resources drivers claim in the resource map, per driver, as reported (raw).
    pub fn claimed_resources(&self) -> Vec<Vec<Resource>> {
        self.lock().ke.interrupts.claims.values().cloned().collect()
    }

    /// Drivers with resources claimed in the resource map.
    pub fn resource_claims(&self) -> usize {
        self.lock().ke.interrupts.claims()
    }

    /// (vector, IRQL, affinity) of every connected interrupt object.
    pub fn connected_interrupts(&self) -> Vec<(u32, u8, u64)> {
        let state = self.lock();
        let interrupts = &state.ke.interrupts;
        interrupts
            .vectors
            .iter()
            .map(|(&v, o)| (v, interrupts.connections[o].irql, interrupts.connections[o].affinity))
            .collect()
    }

    /// Whether the register window at bus address `bus` is mapped now.
    pub fn register_window_mapped(&self, bus: u64) -> bool {
        self.lock().ke.interrupts.windows.iter().any(|w| w.bus == bus && w.mapped_at.is_some())
    }
}
