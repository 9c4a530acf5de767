//! A device interrupt (IoConnectInterrupt) and the CustomDpc its ISR queues, as one
//! kernel object: the [`InterruptPath`] in a controller extension
//! ([`Controller`](super::resources::Controller)).
//!
//! The driver's side is a safe [`InterruptService`]: its ISR and every
//! KeSynchronizeExecution callback get the context, the data the interrupt spin lock
//! protects (`&mut Locked`) and [`AtDirql`] evidence; its DPC gets a [`Connected`]
//! handle to synchronize with the ISR.
//!
//! Teardown is a typestate, in the order a multiprocessor needs: IoDisconnectInterrupt
//! frees the interrupt object, and the ISR's DPC may be queued or running on another
//! processor, about to call KeSynchronizeExecution on it. So
//! [`Interrupt::stop`] (under the interrupt lock: the ISR queues the DPC no more) →
//! [`StoppedInterrupt::remove_and_flush_dpc`] (KeRemoveQueueDpc, KeFlushQueuedDpcs) →
//! [`QuiescedInterrupt::disconnect`] is the only way out of a connection:
//!
//! ```
//! use stagedrv::kernel::interrupt::{Interrupt, InterruptService};
//!
//! fn teardown<C: InterruptService>(interrupt: Interrupt<C>) {
//!     let stopped = interrupt.stop(|_context, _locked, _at| {});
//!     stopped.remove_and_flush_dpc().disconnect();
//! }
//! ```
//!
//! Disconnecting before the DPC is flushed (the order that frees the interrupt object
//! under a running DPC) does not compile:
//!
//! ```compile_fail,E0599
//! use stagedrv::kernel::interrupt::{Interrupt, InterruptService};
//!
//! fn teardown<C: InterruptService>(interrupt: Interrupt<C>) {
//!     interrupt.stop(|_context, _locked, _at| {}).disconnect();
//! }
//! ```
//!
//! Nor can code outside this module claim to run under the interrupt lock:
//!
//! ```compile_fail,E0451
//! use stagedrv::kernel::interrupt::AtDirql;
//!
//! let at = AtDirql { _not_send: core::marker::PhantomData };
//! ```

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};

use super::error::{NtError, NtResult, to_result};
use super::sync::AtDispatch;
use super::sys::{
    _KINTERRUPT as KINTERRUPT, _KINTERRUPT_MODE::Latched, BOOLEAN, IoConnectInterrupt, IoDisconnectInterrupt,
    KAFFINITY, KDPC, KIRQL, KeFlushQueuedDpcs, KeInitializeDpc, KeInsertQueueDpc, KeRemoveQueueDpc,
    KeSynchronizeExecution, PKDPC, PKINTERRUPT, PVOID,
};

/// Evidence that the code runs at the interrupt's synchronize IRQL holding its spin
/// lock: in the ISR or in a KeSynchronizeExecution callback. Only this module's
/// adapters make one; `!Send`, as the lock is held on this processor only.
pub struct AtDirql {
    _not_send: PhantomData<*mut ()>,
}

impl AtDirql {
    fn new() -> Self {
        Self { _not_send: PhantomData }
    }
}

/// What an ISR found.
pub enum Serviced {
    /// The device did not interrupt (the ISR returns FALSE).
    NotOurs,
    /// The device interrupted and the ISR's DPC should run; once the interrupt is
    /// stopped the DPC is no longer queued.
    QueueDpc,
}

/// The driver's side of an interrupt, implemented by the controller extension's context.
///
/// The context is read by the ISR on any processor, by the DPC and by the caller at
/// the same time, so it holds only data that is safe to share that way; what the ISR
/// changes belongs in `Locked`.
pub trait InterruptService: Sized + 'static {
    /// Data only the ISR and KeSynchronizeExecution callbacks touch, under the
    /// interrupt spin lock.
    type Locked: Default;

    /// The ISR, at the device IRQL under the interrupt spin lock.
    fn service(&self, locked: &mut Self::Locked, at: &AtDirql) -> Serviced;

    /// The DPC the ISR queued, at DISPATCH_LEVEL, while the interrupt is connected.
    fn deferred(&self, interrupt: &Connected<'_, Self>, at_dispatch: &AtDispatch);
}

/// What IoConnectInterrupt takes: translated (system) values, as the HAL gives them.
#[derive(Clone, Copy)]
pub struct InterruptResources {
    /// The system interrupt vector.
    pub vector: u32,
    /// The device IRQL, which is also the synchronize IRQL.
    pub irql: KIRQL,
    /// The processors the interrupt may arrive on.
    pub affinity: KAFFINITY,
}

/// No interrupt connected: the DPC cannot be queued (the context may be changed).
const IDLE: u8 = 0;
/// Connected, or being stopped: the ISR may run and its DPC may be queued or running.
const CONNECTED: u8 = 1;
/// Disconnected after the DPC was flushed: nothing runs on the path any more.
const DISCONNECTED: u8 = 2;

/// The interrupt object, the ISR's DPC, the stopping mark and the driver's context,
/// in a controller extension (nonpaged, never moves).
///
/// # Invariants
/// `dpc` is initialised (KeInitializeDpc with [`deferred`] and this path as context)
/// before any `Interrupt` exists. `locked` is touched only under the interrupt spin
/// lock while `state` is CONNECTED, and only through `&mut` of the owning
/// [`Controller`](super::resources::Controller) otherwise. While `state` is IDLE or DISCONNECTED, no ISR, DPC or
/// synchronized callback of this path runs or is queued.
pub struct InterruptPath<C: InterruptService> {
    /// Written by IoConnectInterrupt before the ISR can first run.
    object: AtomicPtr<KINTERRUPT>,
    state: AtomicU8,
    /// Set under the interrupt spin lock by [`Interrupt::stop`]: the ISR no longer
    /// queues the DPC, and the DPC no longer touches the interrupt object.
    stopping: AtomicBool,
    dpc: UnsafeCell<KDPC>,
    locked: UnsafeCell<C::Locked>,
    context: C,
}

impl<C: InterruptService> InterruptPath<C> {
    /// Writes a path with `context` into `slot` and initialises its DPC there.
    ///
    /// # Safety
    /// `slot` is valid, aligned, nonpaged memory for an `InterruptPath<C>` that stays at
    /// this address until it is freed, and nothing else uses it.
    pub(super) unsafe fn init_in(slot: NonNull<Self>, context: C) {
        let path = Self {
            object: AtomicPtr::new(core::ptr::null_mut()),
            state: AtomicU8::new(IDLE),
            stopping: AtomicBool::new(false),
            // SAFETY: KDPC is plain data; KeInitializeDpc below fills it in place.
            dpc: UnsafeCell::new(unsafe { core::mem::zeroed() }),
            locked: UnsafeCell::new(C::Locked::default()),
            context,
        };
        // SAFETY: the caller gives valid, aligned, unused memory for a path.
        unsafe { slot.as_ptr().write(path) };
        // SAFETY: the path is at its final address; its DPC is initialised once, before
        // any interrupt can queue it (INVARIANT).
        unsafe {
            let path = slot.as_ref();
            KeInitializeDpc(path.dpc.get(), Some(deferred::<C>), slot.as_ptr().cast());
        }
    }

    /// The driver's context.
    pub(super) fn context(&self) -> &C {
        &self.context
    }

    /// The context for changes, while no ISR, DPC or callback can run; `None` while
    /// connected.
    ///
    /// # Safety
    /// `path` points to an initialised path, and the caller holds the only access to it
    /// that does not go through the interrupt's own routines (its controller, by
    /// `&mut`), for `'a`.
    pub(super) unsafe fn context_mut<'a>(path: NonNull<Self>) -> Option<&'a mut C> {
        // SAFETY: initialised (the caller's guarantee).
        let quiet = unsafe { path.as_ref() }.is_quiet();
        // SAFETY: quiet: no ISR, DPC or callback runs, and none can start while the
        // caller holds its access (connecting needs the controller too), so the
        // context is the caller's alone.
        quiet.then(|| unsafe { &mut (*path.as_ptr()).context })
    }

    /// Whether no ISR, DPC or synchronized callback runs or can run: the memory may go.
    pub(super) fn is_quiet(&self) -> bool {
        self.state.load(Ordering::Acquire) != CONNECTED
    }

    /// Stage 4: the interrupt object pointer, dangling once disconnected.
    pub(super) fn forget_object(&self) {
        if self.state.load(Ordering::Acquire) == DISCONNECTED {
            self.object.store(core::ptr::null_mut(), Ordering::Release);
        }
    }
}

/// A connected interrupt: IoConnectInterrupt succeeded. Its only way out is
/// [`stop`](Self::stop), then the DPC flush, then IoDisconnectInterrupt.
///
/// # Invariants
/// `object` is the connected interrupt object of the path at `path`, whose state is
/// CONNECTED; the path stays allocated while it is CONNECTED (its controller refuses
/// to be deleted then).
#[must_use = "a connection is only released by stop, remove_and_flush_dpc and disconnect"]
pub struct Interrupt<C: InterruptService> {
    object: NonNull<KINTERRUPT>,
    path: NonNull<InterruptPath<C>>,
}

impl<C: InterruptService> Interrupt<C> {
    /// IoConnectInterrupt of `resources` to the ISR of `path`: latched, not shared, no
    /// floating-point save, the device IRQL as synchronize IRQL. PASSIVE_LEVEL. The
    /// path is a controller's extension (the only place one is initialised), which is
    /// not deleted while CONNECTED; the public form is
    /// [`Controller::connect`](super::resources::Controller::connect).
    ///
    /// # Errors
    /// IoConnectInterrupt's status; STATUS_UNSUCCESSFUL if the path was connected
    /// before.
    pub(super) fn connect(path: &InterruptPath<C>, resources: InterruptResources) -> NtResult<Self> {
        if path.state.compare_exchange(IDLE, CONNECTED, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Err(NtError::UNSUCCESSFUL);
        }
        // SAFETY: the path outlives the connection (its controller is not deleted while
        // CONNECTED); the I/O manager writes the object pointer before the ISR can run.
        let status = unsafe {
            IoConnectInterrupt(
                path.object.as_ptr(),
                Some(isr::<C>),
                core::ptr::from_ref(path).cast_mut().cast(),
                core::ptr::null_mut(),
                resources.vector,
                resources.irql,
                resources.irql,
                Latched,
                0,
                resources.affinity,
                0,
            )
        };
        let connected = to_result(status)
            .and_then(|()| NonNull::new(path.object.load(Ordering::Acquire)).ok_or(NtError::UNSUCCESSFUL));
        match connected {
            // INVARIANT: connected, and the path's state is CONNECTED.
            Ok(object) => Ok(Self { object, path: NonNull::from(path) }),
            Err(error) => {
                // Nothing was connected: no ISR or DPC can run.
                path.state.store(IDLE, Ordering::Release);
                Err(error)
            }
        }
    }

    fn path(&self) -> &InterruptPath<C> {
        // SAFETY: the path stays allocated while connected (type invariant).
        unsafe { self.path.as_ref() }
    }

    /// The driver's context (for register access outside the interrupt lock).
    #[must_use]
    pub fn context(&self) -> &C {
        &self.path().context
    }

    /// KeSynchronizeExecution: runs `quiet` under the interrupt spin lock, then sets
    /// the stopping mark there, so that no ISR queues the DPC again and a DPC that has
    /// not begun leaves the interrupt object alone. PASSIVE_LEVEL (below the device
    /// IRQL).
    pub fn stop(self, quiet: impl FnOnce(&C, &mut C::Locked, &AtDirql)) -> StoppedInterrupt<C> {
        let path = self.path();
        synchronize(self.object, path, |context, locked, at| {
            quiet(context, locked, at);
            path.stopping.store(true, Ordering::Release);
        });
        if DISCONNECT_BEFORE_DPC_FLUSH {
            disconnect_object(self.object);
        }
        StoppedInterrupt { connection: self }
    }
}

/// A connection whose ISR no longer queues its DPC.
#[must_use = "a stopped connection is only released by remove_and_flush_dpc and disconnect"]
pub struct StoppedInterrupt<C: InterruptService> {
    connection: Interrupt<C>,
}

impl<C: InterruptService> StoppedInterrupt<C> {
    /// KeRemoveQueueDpc of the ISR's DPC, then KeFlushQueuedDpcs, which waits for one
    /// that the ISR queued before [`Interrupt::stop`] and that is running elsewhere.
    /// PASSIVE_LEVEL.
    pub fn remove_and_flush_dpc(self) -> QuiescedInterrupt<C> {
        let path = self.connection.path();
        // SAFETY: the DPC was initialised with the path (type invariant); any IRQL.
        unsafe { KeRemoveQueueDpc(path.dpc.get()) };
        // SAFETY: PASSIVE_LEVEL.
        unsafe { KeFlushQueuedDpcs() };
        QuiescedInterrupt { connection: self.connection }
    }
}

/// A connection whose DPC is neither queued nor running, and cannot be queued again.
#[must_use = "a quiesced connection is only released by disconnect"]
pub struct QuiescedInterrupt<C: InterruptService> {
    connection: Interrupt<C>,
}

impl<C: InterruptService> QuiescedInterrupt<C> {
    /// IoDisconnectInterrupt, which frees the interrupt object. PASSIVE_LEVEL.
    pub fn disconnect(self) {
        let connection = self.connection;
        if !DISCONNECT_BEFORE_DPC_FLUSH {
            disconnect_object(connection.object);
        }
        // INVARIANT: no ISR (disconnected) and no DPC (flushed, never queued again).
        connection.path().state.store(DISCONNECTED, Ordering::Release);
    }
}

fn disconnect_object(object: NonNull<KINTERRUPT>) {
    // SAFETY: connected by `Interrupt::connect`; the connection is consumed by the
    // typestate, so this runs once.
    unsafe { IoDisconnectInterrupt(object.as_ptr()) };
}

/// The DPC's view of a connected interrupt: it may synchronize with the ISR.
///
/// # Invariants
/// `object` stays connected while this exists: the DPC runs before its path is
/// stopped and flushed, and disconnection waits for it.
pub struct Connected<'a, C: InterruptService> {
    object: NonNull<KINTERRUPT>,
    path: &'a InterruptPath<C>,
}

impl<C: InterruptService> Connected<'_, C> {
    /// KeSynchronizeExecution: runs `f` under the interrupt spin lock.
    pub fn synchronize(&self, f: impl FnOnce(&C, &mut C::Locked, &AtDirql)) {
        synchronize(self.object, self.path, f);
    }
}

/// One KeSynchronizeExecution call: the path and the callback to run once.
struct Synchronized<'a, C: InterruptService, F> {
    path: &'a InterruptPath<C>,
    callback: Option<F>,
}

fn synchronize<C: InterruptService, F: FnOnce(&C, &mut C::Locked, &AtDirql)>(
    object: NonNull<KINTERRUPT>,
    path: &InterruptPath<C>,
    callback: F,
) {
    let mut call = Synchronized { path, callback: Some(callback) };
    // SAFETY: `object` is connected (the callers' invariants); `call` outlives the call,
    // which runs the adapter once and returns.
    unsafe { KeSynchronizeExecution(object.as_ptr(), Some(synchronized::<C, F>), (&raw mut call).cast()) };
}

/// KeSynchronizeExecution's SynchRoutine for one [`Synchronized`] call.
unsafe extern "C" fn synchronized<C: InterruptService, F: FnOnce(&C, &mut C::Locked, &AtDirql)>(
    context: PVOID,
) -> BOOLEAN {
    // SAFETY: `context` is the `Synchronized` that `synchronize` passes, alive and not
    // otherwise used during the call.
    let call = unsafe { &mut *context.cast::<Synchronized<'_, C, F>>() };
    if let Some(callback) = call.callback.take() {
        // SAFETY: the interrupt spin lock is held, which serialises every user of
        // `locked` while the path is connected (type invariant).
        let locked = unsafe { &mut *call.path.locked.get() };
        callback(&call.path.context, locked, &AtDirql::new());
    }
    1
}

/// The ISR (KSERVICE_ROUTINE) of every path: at DIRQL under the interrupt spin lock.
unsafe extern "C" fn isr<C: InterruptService>(_interrupt: PKINTERRUPT, context: PVOID) -> BOOLEAN {
    // SAFETY: the ServiceContext is the path, allocated while connected.
    let path = unsafe { &*context.cast::<InterruptPath<C>>() };
    // SAFETY: the interrupt spin lock is held, which serialises every user of `locked`.
    let locked = unsafe { &mut *path.locked.get() };
    match path.context.service(locked, &AtDirql::new()) {
        Serviced::NotOurs => 0,
        Serviced::QueueDpc => {
            // The mark is set under this same lock, so it cannot change meanwhile.
            if !path.stopping.load(Ordering::Acquire) {
                // SAFETY: the DPC was initialised with the path (type invariant);
                // KeInsertQueueDpc is callable at DIRQL.
                unsafe { KeInsertQueueDpc(path.dpc.get(), core::ptr::null_mut(), core::ptr::null_mut()) };
            }
            1
        }
    }
}

/// The CustomDpc (KDEFERRED_ROUTINE) of every path, at DISPATCH_LEVEL.
unsafe extern "C" fn deferred<C: InterruptService>(_dpc: PKDPC, context: PVOID, _arg1: PVOID, _arg2: PVOID) {
    // SAFETY: the DeferredContext is the path, which stays allocated while its DPC can
    // be queued or running (type invariant).
    let path = unsafe { &*context.cast::<InterruptPath<C>>() };
    // Stopping: the interrupt object is about to go.
    if path.stopping.load(Ordering::Acquire) {
        return;
    }
    let Some(object) = NonNull::new(path.object.load(Ordering::Acquire)) else { return };
    // INVARIANT: not stopping when this DPC began, so disconnection waits for it
    // (remove_and_flush_dpc comes before disconnect).
    // SAFETY: the kernel calls a DPC at DISPATCH_LEVEL; the token stays in this call.
    let at_dispatch = unsafe { AtDispatch::assume() };
    path.context.deferred(&Connected { object, path }, &at_dispatch);
}

/// Mutant build `disconnect_before_dpc_flush` (tests/mutants.rs): the old stage 1, which
/// disconnected the interrupt while the ISR's DPC could still be queued or running.
const DISCONNECT_BEFORE_DPC_FLUSH: bool = cfg!(stagedrv_mutant = "disconnect_before_dpc_flush");
