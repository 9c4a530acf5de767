//! The read path, cancellation, cleanup and close, in ntsim.

mod common;

use common::*;
use ntsim::wdk_sys::{
    STATUS_ACCESS_DENIED, STATUS_BUFFER_TOO_SMALL, STATUS_CANCELLED, STATUS_INVALID_DEVICE_REQUEST, STATUS_IO_TIMEOUT,
    STATUS_QUOTA_EXCEEDED,
};

#[test]
fn cancel_io_ex_cancels_exactly_that_read() {
    let machine = machine_with(1, &[("SamplePeriodMs", 60_000)]);
    let driver = load(&machine);
    let process = machine.new_process();
    let handle = open(&process, 0);
    let first = pending_read(&process, handle, 1);
    let second = pending_read(&process, handle, 1);
    process.cancel_io_ex(handle, Some(&first)).unwrap();
    machine.run_until_idle();
    assert_eq!(first.result().unwrap().status, STATUS_CANCELLED);
    assert!(second.result().is_none(), "the other read stays queued");
    let s = stats(&process, handle);
    assert_eq!((s.reads_cancelled, s.reads_pending), (1, 1));
    assert_balanced(&s);
    process.close(handle).unwrap();
    assert_eq!(second.result().unwrap().status, STATUS_CANCELLED, "cleanup cancels the rest");
    unload_clean(&machine, driver);
}

#[test]
fn closing_the_last_handle_cancels_its_reads_in_cleanup() {
    let machine = machine_with(2, &[("SamplePeriodMs", 60_000)]);
    let driver = load(&machine);
    let process = machine.new_process();
    let handle = open(&process, 0);
    let duplicate = process.duplicate(handle).unwrap().unwrap();
    let reads: Vec<_> = (0..5).map(|_| pending_read(&process, handle, 2)).collect();
    process.close(handle).unwrap();
    assert!(reads.iter().all(|r| r.result().is_none()), "a handle remains: no cleanup yet");
    process.close(duplicate).unwrap();
    for read in &reads {
        assert_eq!(read.result().unwrap().status, STATUS_CANCELLED);
    }
    let calls = machine.trace();
    let cleanup_cancels =
        calls.iter().filter(|c| c.api == "IofCompleteRequest" && c.routine.to_string().contains("CLEANUP")).count();
    assert_eq!(cleanup_cancels, 6, "five reads and the cleanup IRP completed by DispatchCleanup");
    unload_clean(&machine, driver);
}

#[test]
fn closing_one_handle_leaves_the_others_reads_alive() {
    let machine = machine_with(3, &[("SamplePeriodMs", 10)]);
    let driver = load(&machine);
    let process = machine.new_process();
    let (a, b) = (open(&process, 0), open(&process, 0));
    let read_a = pending_read(&process, a, 1);
    let read_b = pending_read(&process, b, 1);
    process.close(a).unwrap();
    assert_eq!(read_a.result().unwrap().status, STATUS_CANCELLED);
    assert!(read_b.result().is_none());
    let result = process.main().wait(&read_b).unwrap();
    assert_eq!((result.status, result.information), (0, RECORD_SIZE as u64));
    process.close(b).unwrap();
    unload_clean(&machine, driver);
}

#[test]
fn process_exit_cancels_pending_reads_and_closes_handles() {
    let machine = machine_with(4, &[("SamplePeriodMs", 60_000)]);
    let driver = load(&machine);
    let process = machine.new_process();
    let handle = open(&process, 1);
    let worker = process.thread(1);
    let on_worker = match worker.read(handle, RECORD_SIZE).unwrap() {
        ntsim::Issued::Pending(io) => io,
        ntsim::Issued::Done(r) => panic!("{r:?}"),
    };
    let on_main = pending_read(&process, handle, 1);
    worker.exit().unwrap();
    assert_eq!(on_worker.result().unwrap().status, STATUS_CANCELLED, "thread exit cancels its own reads");
    assert!(on_main.result().is_none());
    process.exit().unwrap();
    assert_eq!(on_main.result().unwrap().status, STATUS_CANCELLED);
    unload_clean(&machine, driver);
}

#[test]
fn watchdog_times_out_old_reads() {
    let machine = machine_with(5, &[("SamplePeriodMs", 60_000), ("ReadTimeoutSeconds", 2)]);
    let driver = load(&machine);
    let process = machine.new_process();
    let handle = open(&process, 0);
    let read = pending_read(&process, handle, 1);
    machine.advance_ms(1_500).unwrap();
    assert!(read.result().is_none(), "not yet two seconds old");
    machine.advance_ms(2_000).unwrap();
    assert_eq!(read.result().unwrap().status, STATUS_IO_TIMEOUT);
    let s = stats(&process, handle);
    assert_eq!(s.reads_timed_out, 1);
    assert_balanced(&s);
    process.close(handle).unwrap();
    unload_clean(&machine, driver);
}

#[test]
fn without_a_read_timeout_the_watchdog_leaves_reads_pending() {
    let machine = machine_with(5, &[("SamplePeriodMs", 60_000), ("ReadTimeoutSeconds", 0)]);
    let driver = load(&machine);
    let process = machine.new_process();
    let handle = open(&process, 0);
    let read = pending_read(&process, handle, 1);
    machine.advance_ms(5_000).unwrap();
    assert!(read.result().is_none(), "timed out without a timeout: {:?}", read.result());
    let s = stats(&process, handle);
    assert_eq!((s.reads_timed_out, s.reads_pending), (0, 1));
    process.close(handle).unwrap();
    assert_eq!(read.result().unwrap().status, STATUS_CANCELLED);
    unload_clean(&machine, driver);
}

#[test]
fn per_handle_limit_rejects_with_quota_exceeded() {
    let machine = machine_with(6, &[("SamplePeriodMs", 60_000), ("MaxPendingReadsPerHandle", 3)]);
    let driver = load(&machine);
    let process = machine.new_process();
    let handle = open(&process, 0);
    let _queued: Vec<_> = (0..3).map(|_| pending_read(&process, handle, 1)).collect();
    let fourth = process.read(handle, RECORD_SIZE).unwrap().done().expect("rejected at once");
    assert_eq!(fourth.status, STATUS_QUOTA_EXCEEDED);
    let other = open(&process, 0);
    let _fine = pending_read(&process, other, 1);
    let s = stats(&process, handle);
    assert_eq!((s.reads_rejected, s.reads_pending), (1, 4));
    assert_balanced(&s);
    process.close(handle).unwrap();
    process.close(other).unwrap();
    unload_clean(&machine, driver);
}

#[test]
fn bad_input_gets_defined_statuses() {
    let machine = machine_with(7, &[]);
    let driver = load(&machine);
    let process = machine.new_process();
    let handle = open(&process, 0);
    let short = process.read(handle, RECORD_SIZE - 1).unwrap().done().unwrap();
    assert_eq!(short.status, STATUS_BUFFER_TOO_SMALL);
    let empty = process.read(handle, 0).unwrap().done().unwrap();
    assert_eq!((empty.status, empty.information), (0, 0));
    let unknown = process.ioctl(handle, 0x8337_2000, &[1, 2, 3], 16).unwrap().done().unwrap();
    assert_eq!(unknown.status, STATUS_INVALID_DEVICE_REQUEST);
    let small = process.ioctl(handle, IOCTL_STAGEDRV_GET_STATS, &[], 8).unwrap().done().unwrap();
    assert_eq!(small.status, STATUS_BUFFER_TOO_SMALL);
    let roomy = process.ioctl(handle, IOCTL_STAGEDRV_GET_STATS, &[], 2 * size_of::<Stats>()).unwrap().done().unwrap();
    assert_eq!(
        (roomy.status, roomy.information),
        (0, size_of::<Stats>() as u64),
        "a larger buffer gets the statistics"
    );
    assert_balanced(&stats(&process, handle));
    process.close(handle).unwrap();
    unload_clean(&machine, driver);
}

#[test]
fn only_system_and_administrators_may_open_by_default() {
    let machine = machine_with(8, &[]);
    let driver = load(&machine);
    let user = machine.new_process_as(false);
    let read_write = ntsim::wdk_sys::GENERIC_READ | ntsim::wdk_sys::GENERIC_WRITE;
    assert_eq!(user.open_with_access(r"\\.\StageDrv0", read_write, true).unwrap().unwrap_err(), STATUS_ACCESS_DENIED);
    let dacl = machine.device_dacl(r"\Device\StageDrv0").expect("a DACL is set");
    let sids: Vec<&str> = dacl.iter().map(|a| a.sid.as_str()).collect();
    assert_eq!(sids, ["S-1-5-18", "S-1-5-32-544"]);
    unload_clean(&machine, driver);

    let widened = machine_with(8, &[("OpenToEveryone", 1)]);
    let driver = load(&widened);
    let user = widened.new_process_as(false);
    let handle = user.open_with_access(r"\\.\StageDrv0", read_write, true).unwrap().expect("Everyone may open");
    user.close(handle).unwrap();
    unload_clean(&widened, driver);
}

#[test]
fn records_flow_to_several_readers_in_order() {
    let machine = machine_with(9, &[("SamplePeriodMs", 5)]);
    let driver = load(&machine);
    let process = machine.new_process();
    let handles: Vec<_> = (0..3).map(|_| open(&process, 1)).collect();
    let mut last_sequence = None;
    for round in 0..4 {
        let reads: Vec<_> = handles.iter().map(|&h| (h, process.read(h, 2 * RECORD_SIZE).unwrap())).collect();
        for (_, issued) in reads {
            let result = match issued {
                ntsim::Issued::Done(r) => r,
                ntsim::Issued::Pending(io) => process.main().wait(&io).unwrap(),
            };
            assert_eq!(result.status, 0, "round {round}");
            for record in result.data.chunks_exact(RECORD_SIZE) {
                let sequence = u64::from_le_bytes(record[..8].try_into().unwrap());
                if let Some(last) = last_sequence {
                    assert!(sequence > last, "records are handed out once, in order");
                }
                last_sequence = Some(sequence);
            }
        }
    }
    let s = stats(&process, handles[0]);
    assert_balanced(&s);
    for h in handles {
        process.close(h).unwrap();
    }
    unload_clean(&machine, driver);
}

#[test]
fn writes_and_huge_reads_get_defined_statuses() {
    let machine = machine_with(10, &[("SamplePeriodMs", 10)]);
    let driver = load(&machine);
    let process = machine.new_process();
    let handle = open(&process, 0);
    let write = process.write(handle, b"not supported").unwrap().done().unwrap();
    assert_eq!(write.status, STATUS_INVALID_DEVICE_REQUEST);
    common::advance_until_produced(&machine, &process, handle, 3);
    // 16 MiB: the driver hands over what it has, whole records only.
    let huge = process.read(handle, 16 << 20).unwrap().done().unwrap();
    assert_eq!(huge.status, 0);
    assert_eq!(huge.information, 3 * RECORD_SIZE as u64);
    assert_balanced(&stats(&process, handle));
    process.close(handle).unwrap();
    unload_clean(&machine, driver);
}

#[test]
fn a_handle_duplicated_into_another_process_is_cleaned_up_by_the_last_closer() {
    let machine = machine_with(11, &[("SamplePeriodMs", 60_000)]);
    let driver = load(&machine);
    let (first, second) = (machine.new_process(), machine.new_process());
    let handle = open(&first, 0);
    let theirs = first.duplicate_into(handle, &second).unwrap().unwrap();
    let read = pending_read(&first, handle, 1);
    first.close(handle).unwrap();
    assert!(read.result().is_none(), "the other process still holds the file object");
    second.close(theirs).unwrap();
    assert_eq!(read.result().unwrap().status, STATUS_CANCELLED);
    let cleanup = machine.trace().into_iter().find(|c| c.routine.to_string().contains("CLEANUP")).expect("cleanup ran");
    assert!(cleanup.thread.starts_with("p1-"), "cleanup runs in the closing process: {}", cleanup.thread);
    unload_clean(&machine, driver);
}

/// A read racing CloseHandle: explored over seeds, it is either queued and then
/// cancelled by DispatchCleanup, or it arrives after cleanup and is failed at once —
/// never queued forever. Both paths occur.
#[test]
fn a_read_racing_cleanup_is_cancelled_or_refused_never_lost() {
    let (mut queued_then_cancelled, mut refused_after_cleanup) = (0, 0);
    for seed in 0..300 {
        let machine = machine_with(seed, &[("SamplePeriodMs", 60_000)]);
        let driver = load(&machine);
        let process = machine.new_process();
        let (handle, observer) = (open(&process, 0), open(&process, 0));
        let (reader, closer) = (process.thread(1), process.thread(2));
        let read = reader.post_read(handle, RECORD_SIZE);
        closer.post_close(handle);
        machine.run_until_idle();
        machine.verdict().unwrap();
        let s = stats(&process, observer);
        assert_balanced(&s);
        if let Some(result) = read.completion() {
            match (result.status, s.reads_cancelled, s.reads_rejected) {
                (STATUS_CANCELLED, 1, 0) => queued_then_cancelled += 1,
                (STATUS_CANCELLED, 0, 1) => refused_after_cleanup += 1,
                (status, ..) => {
                    assert!(status == ntsim::wdk_sys::STATUS_INVALID_HANDLE, "seed {seed}: {result:?} {s:?}")
                }
            }
        } else {
            panic!("seed {seed}: the read was lost");
        }
        process.close(observer).unwrap();
        unload_clean(&machine, driver);
    }
    assert!(
        queued_then_cancelled > 0 && refused_after_cleanup > 0,
        "{queued_then_cancelled} / {refused_after_cleanup}"
    );
}

/// One record per tick, two handles each with several reads waiting: the consumer
/// serves them in turn rather than draining the first-opened handle.
#[test]
fn handles_take_turns_for_records() {
    let machine = machine_with(12, &[("SamplePeriodMs", 10)]);
    let driver = load(&machine);
    let process = machine.new_process();
    let (a, b) = (open(&process, 0), open(&process, 0));
    let reads_a: Vec<_> = (0..3).map(|_| pending_read(&process, a, 1)).collect();
    let reads_b: Vec<_> = (0..3).map(|_| pending_read(&process, b, 1)).collect();
    common::advance_until_produced(&machine, &process, a, 4);
    let done = |reads: &[ntsim::PendingIo]| reads.iter().filter(|r| r.result().is_some()).count();
    assert_eq!((done(&reads_a), done(&reads_b)), (2, 2), "four ticks, two records each");
    process.close(a).unwrap();
    process.close(b).unwrap();
    unload_clean(&machine, driver);
}

/// A kernel-mode caller can send a read or a cleanup with no file object, or with a
/// file object that never went through IRP_MJ_CREATE (FsContext NULL): there is no
/// handle to queue on or clean up, so the driver refuses them, and the stream file
/// object's CLOSE still succeeds.
#[test]
fn requests_without_a_handle_context_are_refused() {
    use ntsim::KernelFile;
    use ntsim::wdk_sys::{IRP_MJ_CLEANUP, IRP_MJ_READ};
    let machine = machine_with(11, &[]);
    let driver = load(&machine);
    for file in [KernelFile::None, KernelFile::Unopened] {
        for major in [IRP_MJ_READ, IRP_MJ_CLEANUP] {
            let result = machine
                .kernel_request(r"\Device\StageDrv0", major, file, RECORD_SIZE)
                .unwrap_or_else(|e| panic!("{file:?} major {major}: {e}"))
                .expect("the device exists");
            assert_eq!(result.status, STATUS_INVALID_DEVICE_REQUEST, "{file:?} major {major}");
        }
    }
    let process = machine.new_process();
    let handle = open(&process, 0);
    let s = stats(&process, handle);
    assert_eq!((s.reads_received, s.reads_rejected), (2, 2), "{s:?}");
    assert_balanced(&s);
    process.close(handle).unwrap();
    unload_clean(&machine, driver);
}
