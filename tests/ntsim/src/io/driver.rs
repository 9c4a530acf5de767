//! Loading a driver (DriverEntry) and unloading it as the service manager does: a stop
//! while devices are open makes the unload pending; DriverUnload runs when the
//! last open is closed, and then the unload checks run.

use crate::checker::{Violation, c4, code, unload};
use crate::machine::{Ctx, KResult, Machine, Stopped, service};
use crate::trace::Routine;
use crate::wdk_sys::{
    DRIVER_EXTENSION, DRIVER_OBJECT, NTSTATUS, PCUNICODE_STRING, PDEVICE_OBJECT, PDRIVER_OBJECT, PIRP, PVOID,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_REQUEST, STATUS_OBJECT_NAME_COLLISION, STATUS_SUCCESS, ULONG,
    UNICODE_STRING,
};

/// The signature of DriverEntry.
pub type DriverEntry = unsafe extern "C" fn(PDRIVER_OBJECT, PCUNICODE_STRING) -> NTSTATUS;

/// Where a loaded driver is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverState {
    /// DriverEntry succeeded; the driver serves requests.
    Running,
    /// `sc stop` was issued while devices of the driver were open.
    UnloadPending,
    /// DriverUnload (and then ntsim's unload checks) are running.
    Unloading,
    /// DriverUnload ran and the unload checks passed (or the driver is unknown).
    Unloaded,
    /// DriverEntry failed; the driver was unloaded without DriverUnload.
    FailedToLoad(NTSTATUS),
}

pub(crate) struct DriverInfo {
    pub(crate) name: String,
    pub(crate) state: DriverState,
    _object: Box<DRIVER_OBJECT>,
    _extension: Box<DRIVER_EXTENSION>,
    _service_name: Vec<u16>,
    _driver_name: Vec<u16>,
    registry_path: Vec<u16>,
    registry_path_string: Box<UNICODE_STRING>,
    /// IoAllocateDriverObjectExtension blocks: (client id, memory).
    client_extensions: Vec<(usize, Box<[u128]>)>,
    /// DriverUnload returned; the image goes when its devices are freed.
    pub(crate) unload_returned: bool,
}

/// What a test holds for a loaded driver.
#[derive(Clone, Copy, Debug)]
pub struct Driver {
    pub(crate) object: usize,
}

type DispatchRoutine = unsafe extern "C" fn(PDEVICE_OBJECT, PIRP) -> NTSTATUS;

/// What a major function points to until the driver sets it: fail the request.
unsafe extern "C" fn invalid_device_request(_device: PDEVICE_OBJECT, irp: PIRP) -> NTSTATUS {
    // SAFETY: the I/O manager passed a valid IRP we now complete.
    unsafe {
        (*irp).IoStatus.__bindgen_anon_1.Status = STATUS_INVALID_DEVICE_REQUEST;
        (*irp).IoStatus.Information = 0;
        crate::io::irp::IofCompleteRequest(irp, 0);
    }
    STATUS_INVALID_DEVICE_REQUEST
}

/// The lowest and highest address of the loaded ELF object that contains `address`
/// (all its PT_LOAD segments), or an empty range when none does.
fn image_range(address: usize) -> (usize, usize) {
    struct Search {
        address: usize,
        range: Option<(usize, usize)>,
    }
    unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: libc::size_t, data: *mut libc::c_void) -> i32 {
        // SAFETY: dl_iterate_phdr passes a valid info and our Search.
        let (info, search) = unsafe { (&*info, &mut *data.cast::<Search>()) };
        let base = info.dlpi_addr as usize;
        // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
        let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        let loads = headers.iter().filter(|h| h.p_type == libc::PT_LOAD);
        let (mut low, mut high, mut holds) = (usize::MAX, 0, false);
        for header in loads {
            let start = base + header.p_vaddr as usize;
            let end = start + header.p_memsz as usize;
            holds |= (start..end).contains(&search.address);
            low = low.min(start);
            high = high.max(end);
        }
        if holds {
            search.range = Some((low, high));
            return 1;
        }
        0
    }
    let mut search = Search { address, range: None };
    // SAFETY: `visit` only reads the headers it is given and writes `search`.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut search).cast()) };
    search.range.unwrap_or((0, 0))
}

fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

fn counted(buffer: &mut [u16]) -> UNICODE_STRING {
    let bytes = u16::try_from(buffer.len() * 2).unwrap_or(u16::MAX);
    UNICODE_STRING { Length: bytes, MaximumLength: bytes, Buffer: buffer.as_mut_ptr() }
}

/// The service key a driver named `name` is loaded from.
pub fn service_key(name: &str) -> String {
    format!("\\Registry\\Machine\\System\\CurrentControlSet\\Services\\{name}")
}

impl Machine {
    /// Loads a driver as the service manager's `sc start` would: builds its driver
    /// object and registry path (fill `Parameters` beforehand with
    /// [`Machine::registry`]) and runs DriverEntry at PASSIVE_LEVEL.
    pub fn load_driver(&self, name: &str, entry: DriverEntry) -> Result<(Driver, NTSTATUS), Stopped> {
        let object = {
            let mut state = self.lock();
            // SAFETY: DRIVER_OBJECT and DRIVER_EXTENSION are plain data.
            let mut object: Box<DRIVER_OBJECT> = Box::new(unsafe { std::mem::zeroed() });
            // SAFETY: as above.
            let mut extension: Box<DRIVER_EXTENSION> = Box::new(unsafe { std::mem::zeroed() });
            let mut service_name = utf16(name);
            let mut driver_name = utf16(&format!("\\Driver\\{name}"));
            let mut registry_path = utf16(&service_key(name));
            let address = std::ptr::from_mut(object.as_mut()) as usize;
            extension.DriverObject = address as PDRIVER_OBJECT;
            extension.ServiceKeyName = counted(&mut service_name);
            object.Type = 4;
            object.Size = i16::try_from(size_of::<DRIVER_OBJECT>()).expect("small");
            object.DriverExtension = std::ptr::from_mut(extension.as_mut());
            object.DriverName = counted(&mut driver_name);
            // The image is the loaded object holding DriverEntry (on the host: the test
            // executable or shared library the driver is linked into).
            let (start, end) = image_range(entry as usize);
            object.DriverStart = start as PVOID;
            object.DriverSize = u32::try_from(end - start).unwrap_or(u32::MAX);
            let default_dispatch: crate::wdk_sys::PDRIVER_DISPATCH = if state.hostile.odd_routine_addresses {
                let odd = crate::thunk::odd_address(invalid_device_request as *const () as usize);
                // SAFETY: the thunk jumps to `invalid_device_request`, so it is a function
                // of the same signature (and not NULL).
                Some(unsafe { std::mem::transmute::<usize, DispatchRoutine>(odd) })
            } else {
                Some(invalid_device_request)
            };
            for slot in &mut object.MajorFunction {
                *slot = default_dispatch;
            }
            let registry_path_string = Box::new(counted(&mut registry_path));
            state.registry.create_key(&service_key(name), false);
            state.io.drivers.insert(
                address,
                DriverInfo {
                    name: name.to_owned(),
                    state: DriverState::Running,
                    _object: object,
                    _extension: extension,
                    _service_name: service_name,
                    _driver_name: driver_name,
                    registry_path,
                    registry_path_string,
                    client_extensions: Vec::new(),
                    unload_returned: false,
                },
            );
            address
        };
        let path = std::ptr::from_ref(self.lock().io.drivers[&object].registry_path_string.as_ref()) as usize;
        let status = self.run_job("driver-entry", Routine::DriverEntry, move || {
            // SAFETY: DriverEntry with the objects built above.
            unsafe { entry(object as PDRIVER_OBJECT, path as PCUNICODE_STRING) }
        })?;
        {
            let mut state = self.lock();
            let hostile = state.hostile.poison_registry_path;
            let info = state.io.drivers.get_mut(&object).expect("driver");
            if hostile {
                // The I/O manager frees the path after DriverEntry; poison it so a driver
                // that kept the pointer reads garbage.
                info.registry_path.fill(0xFFFD);
            }
        }
        let driver = Driver { object };
        if crate::wdk_sys::NT_SUCCESS(status) {
            // The I/O manager clears DO_DEVICE_INITIALIZING on devices DriverEntry created.
            let state = self.lock();
            for device in state.io.devices.keys().filter(|d| state.io.devices[d].driver == object) {
                // SAFETY: a live device object of this machine.
                unsafe {
                    (*(*device as crate::wdk_sys::PDEVICE_OBJECT)).Flags &= !crate::wdk_sys::DO_DEVICE_INITIALIZING
                };
            }
        }
        if !crate::wdk_sys::NT_SUCCESS(status) {
            self.lock().io.drivers.get_mut(&object).expect("driver").state = DriverState::FailedToLoad(status);
            // No DriverUnload after a failed DriverEntry, but nothing may be left.
            self.run_job("driver-load-failed", Routine::Kernel, move || {
                service("unload-checks", move |ctx| check_unloaded(ctx, object));
            })?;
            self.verdict()?;
        }
        Ok((driver, status))
    }

    /// `sc stop`: requests the unload. Returns the state right after the request:
    /// `Unloaded` if DriverUnload ran, `UnloadPending` while devices are open.
    pub fn stop_driver(&self, driver: Driver) -> Result<DriverState, Stopped> {
        let object = driver.object;
        self.run_job("service-stop", Routine::Kernel, move || {
            service("sc-stop", move |ctx| {
                request_stop(ctx, object);
                maybe_finish_unload(ctx);
                Ok(())
            });
        })?;
        // DriverUnload runs on its own thread; let it finish if it started.
        self.run_until("DriverUnload to finish", |state| {
            state.io.drivers.get(&object).is_none_or(|d| d.state != DriverState::Unloading)
        })?;
        self.verdict()?;
        Ok(self.driver_state(driver))
    }

    /// Posts `sc stop` without waiting: it runs when the machine next runs, interleaved
    /// with whatever else is posted.
    pub fn post_stop_driver(&self, driver: Driver) {
        let object = driver.object;
        let inner = std::sync::Arc::clone(&self.inner);
        let mut state = self.lock();
        let tid = crate::sched::spawn(&inner, &mut state, "service-stop".to_owned(), 0, move || {
            service("sc-stop", move |ctx| {
                request_stop(ctx, object);
                maybe_finish_unload(ctx);
                Ok(())
            });
        });
        state.threads[tid].routines.push(Routine::Kernel);
    }

    /// Waits (moving the clock as needed) until the driver is unloaded.
    pub fn wait_unloaded(&self, driver: Driver) -> Result<(), Stopped> {
        self.run_until("the driver to unload", |state| {
            state.io.drivers.get(&driver.object).is_none_or(|d| d.state == DriverState::Unloaded)
        })?;
        self.verdict()
    }

    /// The state of `driver` (`Unloaded` once it is gone).
    pub fn driver_state(&self, driver: Driver) -> DriverState {
        self.lock().io.drivers.get(&driver.object).map_or(DriverState::Unloaded, |d| d.state)
    }

    /// The driver's name, as given to load_driver.
    pub fn driver_name(&self, driver: Driver) -> String {
        self.lock().io.drivers.get(&driver.object).map(|d| d.name.clone()).unwrap_or_default()
    }
}

pub(crate) fn is_stopping(ctx: &Ctx<'_>, driver: usize) -> bool {
    ctx.io.drivers.get(&driver).is_some_and(|d| d.state != DriverState::Running)
}

/// `sc stop`: a driver without DriverUnload cannot be stopped and stays loaded.
fn request_stop(ctx: &mut Ctx<'_>, driver: usize) {
    // SAFETY: the driver object lives as long as the machine.
    let can_unload = unsafe { (*(driver as PDRIVER_OBJECT)).DriverUnload.is_some() };
    if let Some(info) = ctx.io.drivers.get_mut(&driver)
        && info.state == DriverState::Running
        && can_unload
    {
        info.state = DriverState::UnloadPending;
    }
}

/// Runs DriverUnload once an unload is pending and no device of the driver is open.
/// Only opens count (`DEVICE_OBJECT.ReferenceCount`, delete-pending devices
/// included): object references such as a queued work item's keep the device object
/// and the image, not DriverUnload (ReactOS `IopUnloadDriver` and `IopUnloadDevice`).
pub(crate) fn maybe_finish_unload(ctx: &mut Ctx<'_>) {
    let ready: Vec<usize> = ctx
        .io
        .drivers
        .iter()
        .filter(|(_, d)| d.state == DriverState::UnloadPending)
        .map(|(a, _)| *a)
        .filter(|&driver| ctx.io.devices.iter().filter(|(_, d)| d.driver == driver).all(|(_, d)| d.open_count == 0))
        .collect();
    for driver in ready {
        ctx.io.drivers.get_mut(&driver).expect("driver").state = DriverState::Unloading;
        ctx.spawn("driver-unload".to_owned(), 0, move || {
            let unload = service("unload", |_ctx| {
                // SAFETY: the driver object is alive until the machine drops it.
                Ok(unsafe { (*(driver as PDRIVER_OBJECT)).DriverUnload })
            })
            .flatten();
            if let Some(routine) = unload {
                service("unload-run", move |ctx| {
                    // SAFETY: DriverUnload with its own driver object.
                    ctx.call_driver(Routine::Unload, || unsafe { routine(driver as PDRIVER_OBJECT) });
                    Ok(())
                });
            }
            service("unload-returned", move |ctx| {
                if let Some(info) = ctx.io.drivers.get_mut(&driver) {
                    info.unload_returned = true;
                }
                maybe_rundown(ctx, driver)
            });
        });
    }
}

/// The driver image goes away once DriverUnload returned and its deleted device
/// objects are freed (a work item still running holds its device, and so the image);
/// that is when nothing of the driver may be left. A device never deleted is
/// reported at once.
pub(crate) fn maybe_rundown(ctx: &mut Ctx<'_>, driver: usize) -> KResult<()> {
    let Some(info) = ctx.io.drivers.get(&driver) else { return Ok(()) };
    if info.state != DriverState::Unloading || !info.unload_returned {
        return Ok(());
    }
    // Only a work item whose routine is running now holds its device for a moment;
    // any other reference (a handle, a queued item, a forgotten ObReferenceObject) would
    // never go away, so it is reported now rather than waited for.
    let transient = |device: usize| ctx.ke.work.running.iter().filter(|&&d| d == device).count() as i64;
    let wait = ctx
        .io
        .devices
        .iter()
        .filter(|(_, d)| d.driver == driver)
        .all(|(address, d)| d.deleted && ctx.ob.refs(*address) <= transient(*address));
    let any_left = ctx.io.devices.values().any(|d| d.driver == driver);
    if any_left && wait {
        return Ok(());
    }
    check_unloaded(ctx, driver)
}

/// ntsim's own unload check: something Windows leaves behind without a bug check.
fn ce(ctx: &Ctx<'_>, kind: u64, what: usize, text: String) -> crate::machine::Stop {
    ctx.violation(Violation::new(code::NTSIM_UNLOAD_LEAK, [kind, what as u64, 0, 0], "NTSIM_UNLOAD_LEAK", text))
}

/// A timer set, or a DPC queued or running, when the image goes. Verifier checks the
/// unloaded image for them ("Automatic Checks": timers and pending DPCs at unload are
/// 0xC7): the driver's KTIMER/KDPC live in pool, so what lies in the image is the DPC
/// routine, 0xC7/2 [routine, image start, image end]. A routine outside the image (or
/// a timer without a DPC) is ntsim's own report.
fn timer_or_dpc_left(
    ctx: &Ctx<'_>,
    driver: usize,
    object: usize,
    routine: usize,
    text: String,
) -> crate::machine::Stop {
    // SAFETY: the driver object lives until its DriverInfo goes.
    let (start, size) = unsafe {
        let object = driver as PDRIVER_OBJECT;
        ((*object).DriverStart as usize, (*object).DriverSize as usize)
    };
    if routine != 0 && (start..start + size).contains(&routine) {
        return ctx.violation(Violation::new(
            code::TIMER_OR_DPC_INVALID,
            [2, routine as u64, start as u64, (start + size) as u64],
            "TIMER_OR_DPC_INVALID",
            text,
        ));
    }
    ce(ctx, unload::TIMER_OR_DPC, object, text)
}

/// The DeferredRoutine of a live KDPC (0 for none).
fn dpc_routine(dpc: usize) -> usize {
    if dpc == 0 {
        return 0;
    }
    // SAFETY: a KDPC of a set timer or a queued KDPC is live (checked when freed).
    unsafe { (*(dpc as *const crate::wdk_sys::KDPC)).DeferredRoutine }.map_or(0, |r| r as usize)
}

/// What must be gone once a driver is unloaded.
fn check_unloaded(ctx: &mut Ctx<'_>, driver: usize) -> KResult<()> {
    if let Some((&timer, set)) = ctx.ke.timers.set.iter().next() {
        let routine = dpc_routine(set.dpc);
        let text = "the driver unloaded with a KTIMER still set: KeCancelTimer it in Unload (stage 2).".to_owned();
        return Err(timer_or_dpc_left(ctx, driver, timer, routine, text));
    }
    if let Some((&dpc, _)) = ctx.ke.dpcs.inserted.iter().next() {
        let text =
            "the driver unloaded with a DPC still queued: KeRemoveQueueDpc / KeFlushQueuedDpcs in Unload (stage 2)."
                .to_owned();
        return Err(timer_or_dpc_left(ctx, driver, dpc, dpc_routine(dpc), text));
    }
    if let Some((&dpc, &routine)) = ctx.ke.dpcs.running_routine.iter().next() {
        let text =
            "the driver unloaded while one of its DPC routines was running: KeFlushQueuedDpcs in Unload (stage 2)."
                .to_owned();
        return Err(timer_or_dpc_left(ctx, driver, dpc, routine, text));
    }
    if ctx.ke.work.outstanding() > 0 {
        return Err(ce(
            ctx,
            unload::WORK_ITEM,
            0,
            "the driver unloaded with a work item queued or running.".to_owned(),
        ));
    }
    if let Some(&item) = ctx.ke.work.items.keys().min() {
        return Err(ce(
            ctx,
            unload::WORK_ITEM,
            item,
            "the driver unloaded without IoFreeWorkItem for an allocated work item.".to_owned(),
        ));
    }
    if ctx.ke.threads.running > 0 {
        return Err(ce(ctx, unload::SYSTEM_THREAD, 0, "the driver unloaded while its system thread was still running: signal it, let it call PsTerminateSystemThread and wait on the thread object (stage 2).".to_owned()));
    }
    if let Some((&object, _)) = ctx.ob.objects.iter().find(|(_, o)| o.kind == crate::ob::Kind::Thread) {
        return Err(ce(
            ctx,
            unload::OBJECT_REFERENCE,
            object,
            "the driver unloaded still holding a reference to its thread object: ObDereferenceObject it.".to_owned(),
        ));
    }
    let system_handle = ctx
        .ob
        .handles_of(crate::ob::Owner::System)
        .into_iter()
        .find_map(|(handle, target)| matches!(target, crate::ob::Target::Object(_)).then_some(handle));
    if let Some(handle) = system_handle {
        return Err(ce(
            ctx,
            unload::OBJECT_REFERENCE,
            usize::try_from(handle).unwrap_or(0),
            format!("the driver unloaded with kernel handle {handle:#x} still open: ZwClose it."),
        ));
    }
    if ctx.ke.interrupts.connected() > 0 {
        return Err(ce(
            ctx,
            unload::INTERRUPT,
            0,
            "the driver unloaded with an interrupt still connected: IoDisconnectInterrupt (stage 1).".to_owned(),
        ));
    }
    if ctx.ke.interrupts.mapped() > 0 {
        return Err(ce(
            ctx,
            unload::IO_SPACE_MAPPING,
            0,
            "the driver unloaded with I/O space still mapped: MmUnmapIoSpace (stage 3).".to_owned(),
        ));
    }
    if ctx.ke.interrupts.controllers() > 0 {
        return Err(ce(
            ctx,
            unload::CONTROLLER_OBJECT,
            0,
            "the driver unloaded without IoDeleteController.".to_owned(),
        ));
    }
    if ctx.ke.interrupts.claims() > 0 {
        return Err(ce(ctx, unload::RESOURCE_CLAIM, 0, "the driver unloaded with hardware resources still claimed: report an empty list with IoReportResourceForDetection (stage 5).".to_owned()));
    }
    if ctx.ob.key_handles() > 0 {
        return Err(ce(
            ctx,
            unload::REGISTRY_KEY,
            0,
            "the driver unloaded with a registry key handle still open: ZwClose it.".to_owned(),
        ));
    }
    let devices: Vec<(u64, String)> = {
        let mut v: Vec<(u64, String)> = ctx
            .io
            .devices
            .values()
            .filter(|d| d.driver == driver && !d.deleted)
            .map(|d| (d.seq, d.name.clone().unwrap_or_else(|| "(unnamed)".to_owned())))
            .collect();
        v.sort();
        v
    };
    if let Some((_, name)) = devices.first() {
        return Err(ce(
            ctx,
            unload::DEVICE_OBJECT,
            0,
            format!("the driver unloaded without IoDeleteDevice for {name}."),
        ));
    }
    let mut links: Vec<String> =
        ctx.ob.names.iter().filter(|(_, n)| matches!(n, crate::ob::Named::Link(_))).map(|(k, _)| k.clone()).collect();
    links.sort();
    if let Some(link) = links.first() {
        return Err(ce(
            ctx,
            unload::SYMBOLIC_LINK,
            0,
            format!("the driver unloaded without IoDeleteSymbolicLink for {link} (stage 3)."),
        ));
    }
    let leaks = ctx.pool.leaks();
    if !leaks.is_empty() {
        let blocks: usize = leaks.iter().map(|l| l.blocks).sum();
        let list: Vec<String> = leaks.iter().map(|l| format!("{} x{} ({} bytes)", l.tag, l.blocks, l.bytes)).collect();
        return Err(ctx.violation(Violation::new(
            code::DRIVER_VERIFIER_DETECTED_VIOLATION,
            [
                c4::POOL_LEAK_AT_UNLOAD,
                (driver + std::mem::offset_of!(DRIVER_OBJECT, DriverName)) as u64,
                0,
                blocks as u64,
            ],
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format!("the driver unloaded without freeing pool: {}.", list.join(", ")),
        )));
    }
    if let Some(info) = ctx.io.drivers.get_mut(&driver) {
        info.client_extensions.clear();
        if info.state == DriverState::Unloading {
            info.state = DriverState::Unloaded;
        }
    }
    ctx.signal();
    Ok(())
}

/// IoAllocateDriverObjectExtension: a zeroed extension per client identification address.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoAllocateDriverObjectExtension(
    DriverObject: PDRIVER_OBJECT,
    ClientIdentificationAddress: PVOID,
    DriverObjectExtensionSize: ULONG,
    DriverObjectExtension: *mut PVOID,
) -> NTSTATUS {
    crate::machine::kcall("IoAllocateDriverObjectExtension", |ctx| {
        // SAFETY: the driver passed a writable pointer.
        unsafe { *DriverObjectExtension = std::ptr::null_mut() };
        if ctx.should_fail() {
            return Ok(STATUS_INSUFFICIENT_RESOURCES);
        }
        let Some(info) = ctx.io.drivers.get_mut(&(DriverObject as usize)) else {
            return Ok(crate::wdk_sys::STATUS_INVALID_PARAMETER);
        };
        let id = ClientIdentificationAddress as usize;
        if info.client_extensions.iter().any(|(c, _)| *c == id) {
            return Ok(STATUS_OBJECT_NAME_COLLISION);
        }
        let mut memory = vec![0u128; (DriverObjectExtensionSize as usize).div_ceil(16).max(1)].into_boxed_slice();
        // SAFETY: as above.
        unsafe { *DriverObjectExtension = memory.as_mut_ptr().cast() };
        info.client_extensions.push((id, memory));
        Ok(STATUS_SUCCESS)
    })
}
const _: crate::wdk_sys::fnsig::IoAllocateDriverObjectExtension = IoAllocateDriverObjectExtension;

/// IoGetDriverObjectExtension: the extension allocated for that address, or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoGetDriverObjectExtension(
    DriverObject: PDRIVER_OBJECT,
    ClientIdentificationAddress: PVOID,
) -> PVOID {
    crate::machine::kcall("IoGetDriverObjectExtension", |ctx| {
        let id = ClientIdentificationAddress as usize;
        Ok(ctx
            .io
            .drivers
            .get_mut(&(DriverObject as usize))
            .and_then(|info| info.client_extensions.iter_mut().find(|(c, _)| *c == id))
            .map_or(std::ptr::null_mut(), |(_, m)| m.as_mut_ptr().cast()))
    })
}
const _: crate::wdk_sys::fnsig::IoGetDriverObjectExtension = IoGetDriverObjectExtension;
