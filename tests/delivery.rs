//! The consumer thread and the watchdog walk only the handles that have reads pending.
//! The driver counts the active-list nodes they visit (read here through
//! `stagedrv::probe`); with hundreds of idle handles open the counts must be exactly
//! those of a device with none. Handles that had reads and lost them by every path
//! (cancel routine, cleanup, delivery, timeout) must be idle too.

mod common;

use std::sync::Mutex;

use common::{machine_with, open, pending_read, unload_clean};
use ntsim::wdk_sys::{NT_SUCCESS, NTSTATUS, PCUNICODE_STRING, PDRIVER_OBJECT, STATUS_CANCELLED, STATUS_IO_TIMEOUT};
use ntsim::{Driver, Machine, PendingIo};

/// Idle handles opened in the busy runs: many more than the nodes a pass may visit.
const IDLE: usize = 300;

/// Tests in this file load one driver at a time, so that [`LOADED`] is theirs.
static SERIAL: Mutex<()> = Mutex::new(());
/// The device object (as an address) of the driver [`recording_entry`] loaded last.
static LOADED: Mutex<Option<usize>> = Mutex::new(None);

/// stagedrv's DriverEntry, remembering its (only) device object.
unsafe extern "C" fn recording_entry(driver: PDRIVER_OBJECT, registry_path: PCUNICODE_STRING) -> NTSTATUS {
    // SAFETY: forwarded unchanged from the I/O manager.
    let status = unsafe { stagedrv::driver_entry(driver, registry_path) };
    if NT_SUCCESS(status) {
        // SAFETY: DriverEntry succeeded, so the driver object lists its devices.
        let device = unsafe { (*driver).DeviceObject };
        *LOADED.lock().unwrap() = Some(device as usize);
    }
    status
}

/// A loaded stagedrv with one device, and its visited-nodes counter.
struct Probed {
    machine: Machine,
    driver: Driver,
    device: usize,
}

impl Probed {
    fn load(parameters: &[(&str, u32)]) -> Self {
        let machine = machine_with(5, parameters);
        let (driver, status) = machine.load_driver("stagedrv", recording_entry).unwrap();
        assert_eq!(status, 0, "DriverEntry status {status:#x}");
        let device = LOADED.lock().unwrap().take().expect("DriverEntry recorded its device");
        Probed { machine, driver, device }
    }

    fn visited(&self) -> u64 {
        stagedrv::probe::handle_nodes_visited(self.device as ntsim::wdk_sys::PDEVICE_OBJECT)
            .expect("the device is a live stagedrv device")
    }

    /// Runs `phase` and returns the nodes visited during it.
    fn during(&self, phase: impl FnOnce()) -> u64 {
        let before = self.visited();
        phase();
        self.visited() - before
    }
}

fn completed_with(reads: &[PendingIo], status: i32) -> bool {
    reads.iter().all(|r| r.result().is_some_and(|r| r.status == status))
}

/// Visits per phase of the delivery scenario with `idle` idle handles open first:
/// three handles lose their reads by the cancel routine, by cleanup and by delivery,
/// then two handles with four reads each receive eight records, one per tick.
fn delivery_visits(idle: usize) -> Vec<u64> {
    let probed = Probed::load(&[("DeviceCount", 1), ("SamplePeriodMs", 10), ("StatisticsEveryTicks", 100_000)]);
    let process = probed.machine.new_process();
    let idle_handles: Vec<_> = (0..idle).map(|_| open(&process, 0)).collect();
    let mut visits = Vec::new();

    // Reads that leave by the cancel routine and by cleanup: no producer tick yet.
    let cancelled = open(&process, 0);
    let closed = open(&process, 0);
    visits.push(probed.during(|| {
        let reads: Vec<_> = (0..2).map(|_| pending_read(&process, cancelled, 1)).collect();
        let drained: Vec<_> = (0..2).map(|_| pending_read(&process, closed, 1)).collect();
        for read in &reads {
            process.cancel_io_ex(cancelled, Some(read)).unwrap();
        }
        process.close(closed).unwrap();
        assert!(completed_with(&reads, STATUS_CANCELLED) && completed_with(&drained, STATUS_CANCELLED));
    }));

    // A read that leaves by delivery: the first producer tick (10 ms, on the clock tick
    // after it), however long the clock takes to reach it.
    let served = open(&process, 0);
    visits.push(probed.during(|| {
        let read = pending_read(&process, served, 1);
        assert_eq!(process.main().wait(&read).unwrap().status, 0);
    }));

    // Two readers take turns for eight records; every handle above is idle now.
    let readers = [open(&process, 0), open(&process, 0)];
    visits.push(probed.during(|| {
        let reads: Vec<_> = readers.iter().flat_map(|&h| [h; 4]).map(|h| pending_read(&process, h, 1)).collect();
        for read in &reads {
            process.main().wait(read).unwrap();
        }
        assert!(completed_with(&reads, 0), "eight ticks, eight records");
    }));

    for handle in idle_handles.into_iter().chain([cancelled, served]).chain(readers) {
        process.close(handle).unwrap();
    }
    unload_clean(&probed.machine, probed.driver);
    visits
}

#[test]
fn delivery_visits_one_handle_node_per_record_whatever_the_idle_handles() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let quiet = delivery_visits(0);
    assert_eq!(quiet, [0, 1, 8], "no records, then one, then eight: one node each");
    assert_eq!(delivery_visits(IDLE), quiet, "{IDLE} idle handles change nothing");
}

/// Visits per phase of the watchdog scenario (timeout 1 s, no records at all) with
/// `idle` idle handles open: three seconds with no read pending, then one read until
/// it times out, then three more seconds.
fn watchdog_visits(idle: usize) -> Vec<u64> {
    let probed = Probed::load(&[
        ("DeviceCount", 1),
        ("SamplePeriodMs", 60_000),
        ("StatisticsEveryTicks", 100_000),
        ("ReadTimeoutSeconds", 1),
    ]);
    let process = probed.machine.new_process();
    let idle_handles: Vec<_> = (0..idle).map(|_| open(&process, 0)).collect();
    let reader = open(&process, 0);
    let mut visits = Vec::new();
    visits.push(probed.during(|| probed.machine.advance_ms(3_000).unwrap()));
    visits.push(probed.during(|| {
        let read = pending_read(&process, reader, 1);
        probed.machine.advance_ms(3_000).unwrap();
        assert!(completed_with(&[read], STATUS_IO_TIMEOUT));
    }));
    visits.push(probed.during(|| probed.machine.advance_ms(3_000).unwrap()));
    for handle in idle_handles.into_iter().chain([reader]) {
        process.close(handle).unwrap();
    }
    unload_clean(&probed.machine, probed.driver);
    visits
}

#[test]
fn watchdog_visits_only_handles_with_pending_reads() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let quiet = watchdog_visits(0);
    assert_eq!(quiet[0], 0, "nothing pending: nothing walked");
    assert!(quiet[1] >= 1, "the ticks that saw the read pending visited its handle: {quiet:?}");
    assert_eq!(quiet[2], 0, "the timed-out handle left the list: {quiet:?}");
    assert_eq!(watchdog_visits(IDLE), quiet, "{IDLE} idle handles change nothing");
}
