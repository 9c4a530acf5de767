//! Virtual interrupt lines, interrupt objects, controller objects, mapped register
//! windows and resource claims — the hardware a legacy driver's "hardware profile"
//! talks to. A test describes a device (a register window at a physical address),
//! writes its registers and raises its interrupt line; ntsim runs the connected ISR
//! at the line's IRQL under the interrupt spin lock.

use std::collections::HashMap;

use crate::checker::{Violation, code};
use crate::machine::{Ctx, KResult, Machine, Stopped, kcall};
use crate::trace::Routine;
use crate::wdk_sys::{
    BOOLEAN, CONTROLLER_OBJECT, KAFFINITY, KINTERRUPT_MODE, KIRQL, MEMORY_CACHING_TYPE, NTSTATUS, PBOOLEAN,
    PCM_RESOURCE_LIST, PCONTROLLER_OBJECT, PDEVICE_OBJECT, PDRIVER_OBJECT, PHYSICAL_ADDRESS, PKINTERRUPT,
    PKSERVICE_ROUTINE, PKSPIN_LOCK, PKSYNCHRONIZE_ROUTINE, PVOID, SIZE_T, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_PARAMETER, STATUS_SUCCESS, ULONG,
};

struct Line {
    isr: PKSERVICE_ROUTINE,
    context: usize,
    irql: u8,
    synchronize_irql: u8,
    connected: bool,
    _memory: Box<[u64; 16]>,
}

struct Window {
    physical: u64,
    memory: Box<[u32]>,
    mapped_at: Option<usize>,
}

#[derive(Default)]
pub(crate) struct Interrupts {
    /// Interrupt object address → line.
    lines: HashMap<usize, Line>,
    /// Vector → interrupt object.
    vectors: HashMap<u32, usize>,
    windows: Vec<Window>,
    controllers: HashMap<usize, (Box<CONTROLLER_OBJECT>, Box<[u128]>)>,
    /// Drivers with a resource claim in the resource map.
    claims: HashMap<usize, usize>,
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
        self.lines.values().filter(|l| l.connected).count()
    }
    pub(crate) fn mapped(&self) -> usize {
        self.windows.iter().filter(|w| w.mapped_at.is_some()).count()
    }
    pub(crate) fn controllers(&self) -> usize {
        self.controllers.len()
    }
    pub(crate) fn claims(&self) -> usize {
        self.claims.values().filter(|&&n| n > 0).count()
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
    _ProcessorEnableMask: KAFFINITY,
    _FloatingSave: BOOLEAN,
) -> NTSTATUS {
    kcall("IoConnectInterrupt", |ctx| {
        if ctx.should_fail() {
            return Ok(STATUS_INSUFFICIENT_RESOURCES);
        }
        if ctx.ke.interrupts.vectors.contains_key(&Vector)
            || SynchronizeIrql < Irql
            || Irql <= crate::irql::DISPATCH_LEVEL
        {
            return Ok(STATUS_INVALID_PARAMETER);
        }
        let mut memory = Box::new([0u64; 16]);
        let object = memory.as_mut_ptr() as usize;
        ctx.ke.interrupts.lines.insert(
            object,
            Line {
                isr: ServiceRoutine,
                context: ServiceContext as usize,
                irql: Irql,
                synchronize_irql: SynchronizeIrql,
                connected: true,
                _memory: memory,
            },
        );
        ctx.ke.interrupts.vectors.insert(Vector, object);
        // SAFETY: the driver passed a writable pointer.
        unsafe { *InterruptObject = object as PKINTERRUPT };
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::IoConnectInterrupt = IoConnectInterrupt;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoDisconnectInterrupt(InterruptObject: PKINTERRUPT) {
    kcall("IoDisconnectInterrupt", |ctx| {
        let object = InterruptObject as usize;
        match ctx.ke.interrupts.lines.get_mut(&object) {
            Some(line) if line.connected => {
                line.connected = false;
                ctx.ke.interrupts.vectors.retain(|_, o| *o != object);
                Ok(())
            }
            _ => Err(violation(
                ctx,
                object as u64,
                format!("IoDisconnectInterrupt on {object:#x}, which is not a connected interrupt object."),
            )),
        }
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
        let Some(irql) = ctx.ke.interrupts.lines.get(&object).filter(|l| l.connected).map(|l| l.synchronize_irql)
        else {
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
            None => 0,
        };
        crate::ke::spinlock::release(ctx, lock_key(object))?;
        ctx.set_irql(old);
        ctx.signal();
        Ok(result)
    })
}
const _: crate::wdk_sys::fnsig::KeSynchronizeExecution = KeSynchronizeExecution;

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
        let Some(window) =
            ctx.ke.interrupts.windows.iter_mut().find(|w| {
                w.physical == physical && NumberOfBytes as usize <= w.memory.len() * 4 && w.mapped_at.is_none()
            })
        else {
            return Ok(std::ptr::null_mut());
        };
        let address = window.memory.as_mut_ptr() as usize;
        window.mapped_at = Some(address);
        Ok(address as PVOID)
    })
}
const _: crate::wdk_sys::fnsig::MmMapIoSpace = MmMapIoSpace;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn MmUnmapIoSpace(BaseAddress: PVOID, _NumberOfBytes: SIZE_T) {
    kcall("MmUnmapIoSpace", |ctx| {
        let address = BaseAddress as usize;
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

/// Claims (a non-empty list) or releases (an empty one) the driver's legacy resources.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoReportResourceForDetection(
    DriverObject: PDRIVER_OBJECT,
    DriverList: PCM_RESOURCE_LIST,
    DriverListSize: ULONG,
    _DeviceObject: PDEVICE_OBJECT,
    _DeviceList: PCM_RESOURCE_LIST,
    _DeviceListSize: ULONG,
    ConflictDetected: PBOOLEAN,
) -> NTSTATUS {
    kcall("IoReportResourceForDetection", |ctx| {
        if !ConflictDetected.is_null() {
            // SAFETY: the driver passed a writable BOOLEAN.
            unsafe { *ConflictDetected = 0 };
        }
        let count = if DriverList.is_null() || DriverListSize == 0 {
            0
        } else {
            if ctx.should_fail() {
                return Ok(STATUS_INSUFFICIENT_RESOURCES);
            }
            // SAFETY: a resource list of DriverListSize bytes.
            unsafe { (*DriverList).List[0].PartialResourceList.Count as usize }
        };
        ctx.ke.interrupts.claims.insert(DriverObject as usize, count);
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::IoReportResourceForDetection = IoReportResourceForDetection;

/// Runs the ISR connected to `vector`, as the interrupt controller would.
fn deliver(ctx: &mut Ctx<'_>, vector: u32) -> KResult<bool> {
    let Some(&object) = ctx.ke.interrupts.vectors.get(&vector) else { return Ok(false) };
    let (isr, context, irql) = {
        let line = &ctx.ke.interrupts.lines[&object];
        (line.isr, line.context, line.irql)
    };
    ctx.set_irql(irql);
    crate::ke::spinlock::acquire(ctx, lock_key(object))?;
    let claimed = isr.is_some_and(|isr| {
        ctx.call_driver(Routine::Isr, || {
            // SAFETY: the driver's ISR with the context it connected.
            unsafe { isr(object as PKINTERRUPT, context as PVOID) }
        }) != 0
    });
    let now = ctx.irql();
    if now != irql {
        return Err(ctx.violation(Violation::new(
            code::IRQL_NOT_LESS_OR_EQUAL,
            [u64::from(now), u64::from(irql), 0, 0],
            "IRQL_NOT_LESS_OR_EQUAL",
            format!("the ISR returned at IRQL {now}; it was called at IRQL {irql}."),
        )));
    }
    crate::ke::spinlock::release(ctx, lock_key(object))?;
    ctx.set_irql(0);
    ctx.signal();
    Ok(claimed)
}

impl Machine {
    /// Adds a device register window of `words` 32-bit registers at `physical`.
    pub fn add_register_window(&self, physical: u64, words: usize) {
        self.lock().ke.interrupts.windows.push(Window {
            physical,
            memory: vec![0; words].into_boxed_slice(),
            mapped_at: None,
        });
    }

    /// Reads register `index` of the window at `physical`.
    pub fn read_register(&self, physical: u64, index: usize) -> u32 {
        let state = self.lock();
        let window = state.ke.interrupts.windows.iter().find(|w| w.physical == physical).expect("window");
        // SAFETY: volatile read of a register the driver may write concurrently.
        unsafe { std::ptr::read_volatile(&raw const window.memory[index]) }
    }

    /// Writes register `index` of the window at `physical` (the device's side).
    pub fn write_register(&self, physical: u64, index: usize, value: u32) {
        let mut state = self.lock();
        let window = state.ke.interrupts.windows.iter_mut().find(|w| w.physical == physical).expect("window");
        // SAFETY: volatile write of a register the driver reads.
        unsafe { std::ptr::write_volatile(&raw mut window.memory[index], value) };
    }

    /// Raises interrupt `vector` once; returns whether an ISR claimed it.
    pub fn raise_interrupt(&self, vector: u32) -> Result<bool, Stopped> {
        let claimed = self.run_job("interrupt", Routine::Kernel, move || {
            crate::machine::service("interrupt", move |ctx| deliver(ctx, vector)).unwrap_or(false)
        })?;
        self.run_until_idle();
        self.verdict()?;
        Ok(claimed)
    }

    /// Drivers with resources claimed in the resource map.
    pub fn resource_claims(&self) -> usize {
        self.lock().ke.interrupts.claims()
    }

    /// Whether a register window is mapped now.
    pub fn register_window_mapped(&self, physical: u64) -> bool {
        self.lock().ke.interrupts.windows.iter().any(|w| w.physical == physical && w.mapped_at.is_some())
    }
}
