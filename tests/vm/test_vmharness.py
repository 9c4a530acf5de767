"""The harness's own checks, without a VM: each check must fire on the log it exists
for and stay quiet on a good one.

    python3 -m unittest tests/vm/test_vmharness.py
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import threading
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reactos  # noqa: E402
import vmharness as vm  # noqa: E402
import windows_guest  # noqa: E402

GOOD_DRIVER = """\
(ntoskrnl/io/iomgr/driver.c:1234) something the kernel says
stagedrv: DriverEntry: begin
stagedrv: DriverEntry: done, 2 device(s)
stagedrv: Unload: begin
stagedrv: Unload: stage 1 interrupts disconnected
stagedrv: Unload: stage 2 timers, DPCs, work items and thread stopped
stagedrv: Unload: stage 3 links, pool and mappings released
stagedrv: Unload: stage 4 extension objects released
stagedrv: Unload: stage 5 hardware claims released
stagedrv: Unload: stage 6 device names removed
stagedrv: Unload: done
"""

GOOD_CLIENT = """\
stageguest: start: 3 scenario(s), wait 10000 ms
stageguest: RUN close-pending: ...
stageguest: PASS close-pending (0.1s): 5 pending reads, CloseHandle: 5 x ERROR_OPERATION_ABORTED (995)
stageguest: RUN cancel-io-ex: ...
stageguest: SKIP cancel-io-ex: this user mode exports no CancelIoEx
stageguest: RUN thread-exit: ...
stageguest: PASS thread-exit (0.1s): thread exit: 2 cancelled
stageguest: summary: 2 passed, 1 skipped, 0 failed
"""


def phase_log(name: str, driver: str = GOOD_DRIVER, client: str = GOOD_CLIENT, statuses: dict | None = None) -> str:
    steps = ["sc create", "reg add ReadTimeoutSeconds", "sc start", "client", "sc stop", "wait stopped", "sc delete"]
    statuses = statuses or {}
    lines = [f"AUTOTEST: {name}: phase begin"]
    lines += [f"AUTOTEST: {name}: {s} exit {statuses.get(s, 0)}" for s in steps[:3]]
    lines.append(driver + client)
    lines += [f"AUTOTEST: {name}: {s} exit {statuses.get(s, 0)}" for s in steps[3:]]
    lines.append(f"AUTOTEST: {name}: phase end")
    return "\n".join(lines) + "\n"


PHASE = reactos.Phase("p", Path("p.sys"), {"ReadTimeoutSeconds": 2}, [], ["close-pending", "thread-exit"])


class DriverLifecycle(unittest.TestCase):
    def test_a_good_log_has_no_problems(self):
        self.assertEqual(vm.driver_lifecycle_problems(GOOD_DRIVER), [])

    def test_a_missing_stage_out_of_order_stages_and_missing_lines_are_caught(self):
        no6 = GOOD_DRIVER.replace("stagedrv: Unload: stage 6 device names removed\n", "")
        self.assertIn("Unload stage lines: [1 2 3 4 5]", " ".join(vm.driver_lifecycle_problems(no6)))
        swapped = GOOD_DRIVER.replace("stage 2 timers", "stage 9 timers").replace("stage 3 links", "stage 2 links")
        self.assertTrue(vm.driver_lifecycle_problems(swapped))
        self.assertIn("DriverUnload did not finish", " ".join(vm.driver_lifecycle_problems(GOOD_DRIVER.replace("Unload: done", "x"))))
        self.assertIn("DriverEntry did not finish", " ".join(vm.driver_lifecycle_problems(GOOD_DRIVER.replace("DriverEntry: done", "x"))))

    def test_lines_are_found_behind_a_kernel_prefix(self):
        self.assertEqual(vm.driver_lifecycle_problems("".join("(dbg) " + l + "\n" for l in GOOD_DRIVER.splitlines())), [])


class KernelFailures(unittest.TestCase):
    def test_debugger_entries_bug_checks_and_assertions_are_caught(self):
        for line in [
            "kdb:> ",
            "Entered debugger on unhandled exception",
            "*** Fatal System Error: 0x0000007e",
            "Assertion failed: Irp->CancelRoutine == NULL",
            "Break repeatedly, break Once, Ignore, terminate Process or terminate Thread (boipt)?",
        ]:
            self.assertTrue(vm.kernel_failures(f"boot\n{line}\nmore\n"), line)

    def test_a_good_log_and_the_clients_own_words_are_not_failures(self):
        self.assertEqual(vm.kernel_failures(GOOD_DRIVER + GOOD_CLIENT), [])
        self.assertEqual(vm.kernel_failures("stageguest: FAIL x: assertion failed in the app\n"), [])


class Client(unittest.TestCase):
    def test_a_good_run_has_no_problems(self):
        self.assertEqual(vm.client_problems(vm.parse_client(GOOD_CLIENT), ["close-pending"]), [])

    def test_fail_notrun_missing_verdicts_no_summary_and_skipped_must_pass_are_caught(self):
        failed = GOOD_CLIENT.replace("PASS thread-exit", "FAIL thread-exit")
        self.assertIn("FAIL thread-exit", " ".join(vm.client_problems(vm.parse_client(failed), [])))
        notrun = GOOD_CLIENT.replace("PASS thread-exit (0.1s): thread exit: 2 cancelled", "NOTRUN thread-exit")
        self.assertTrue(vm.client_problems(vm.parse_client(notrun), []))
        dropped = GOOD_CLIENT.replace("stageguest: PASS thread-exit (0.1s): thread exit: 2 cancelled\n", "")
        self.assertIn("2 have a verdict", " ".join(vm.client_problems(vm.parse_client(dropped), [])))
        unfinished = GOOD_CLIENT.replace("stageguest: summary", "x")
        self.assertIn("no summary", " ".join(vm.client_problems(vm.parse_client(unfinished), [])))
        self.assertIn("must run and pass", " ".join(vm.client_problems(vm.parse_client(GOOD_CLIENT), ["cancel-io-ex"])))


class Phases(unittest.TestCase):
    def test_each_phase_is_checked_on_its_own_part_of_the_log(self):
        bad = phase_log("q", driver=GOOD_DRIVER.replace("stagedrv: Unload: stage 6 device names removed\n", ""))
        text = "boot noise\n" + phase_log("p") + bad
        parts = reactos.split_phases(text, ["p", "q", "never"])
        self.assertEqual(reactos.phase_problems(PHASE, parts["p"]), [])
        q = reactos.Phase("q", Path("q.sys"), {"ReadTimeoutSeconds": 2})
        self.assertIn("Unload stage lines: [1 2 3 4 5]", " ".join(reactos.phase_problems(q, parts["q"])))
        self.assertEqual(reactos.phase_problems(PHASE, parts["never"]), ["the phase never began"])

    def test_a_step_that_failed_or_never_ran_is_caught(self):
        text = phase_log("p", statuses={"sc stop": 1062})
        self.assertIn("sc stop: exit status 1062", reactos.phase_problems(PHASE, text))
        truncated = text.split("AUTOTEST: p: client exit")[0]
        problems = reactos.phase_problems(PHASE, truncated)
        self.assertIn("client: exit status missing", problems)
        self.assertIn("the phase did not finish (no phase end marker)", problems)

    def test_the_script_runs_every_step_of_every_phase_with_crlf(self):
        phases = [PHASE, reactos.Phase("r", Path("r.sys"), {}, ["--scenario", "x"])]
        text = reactos.script(phases, 30).decode()
        self.assertNotIn("\n", text.replace("\r\n", ""))
        for p in phases:
            for step in reactos.phase_steps(p):
                self.assertIn(f"AUTOTEST: {p.name}: {step} exit %errorlevel%", text)
        self.assertIn(r"binPath= %D%\r.sys", text)
        self.assertIn(r"%D%\stageguest.exe --supervise 240 --scenario x", text)
        self.assertTrue(text.rstrip().endswith("shutdown -s -f -t 0"))


class Kdbg(unittest.TestCase):
    def test_prompts_are_answered_and_the_harness_gives_up_after_a_few(self):
        ours, guest = socket.socketpair()
        with tempfile.TemporaryDirectory() as d:
            log = vm.SerialLog(Path(d) / "com1.log")
            reader = threading.Thread(target=vm.read_serial, args=(ours, log))
            reader.start()
            guest.settimeout(5)
            answers = []
            guest.sendall(b"Assertion failed: x\r\nBreak repeatedly, break Once, Ignore, terminate Process or terminate Thread (boipt)? ")
            answers.append(guest.recv(16))
            for _ in range(vm.KDBG_MAX_PROMPTS):
                guest.sendall(b"\r\nkdb:> ")
                answers.append(guest.recv(16))
            guest.sendall(b"\r\nkdb:> ")
            guest.close()
            reader.join(5)
            ours.close()
            self.assertEqual(answers[:3], [b"o\r", b"bt\r", b"cont\r"])
            self.assertTrue(log.gave_up)
            self.assertIn("Assertion failed", (Path(d) / "com1.log").read_text())


class WindowsGuest(unittest.TestCase):
    """The Windows guest cannot run here: its script and its result checks are tested."""

    def results(self, d: Path, phase_ok: bool = True, bugcheck: bool = False, dbgview: bool = True) -> Path:
        r = Path(d)
        (r / "boots.txt").write_text("AUTOTEST: boot plain\nAUTOTEST: boot standard\nAUTOTEST: boot lowres\nAUTOTEST: done\n")
        for name in windows_guest.PHASES:
            text = phase_log(name)
            markers = "\n".join(l for l in text.splitlines() if l.startswith("AUTOTEST"))
            (r / f"log-{name}.txt").write_text(markers.replace("\n", "\r\n"))
            client = GOOD_CLIENT if phase_ok or name != "standard" else GOOD_CLIENT.replace("PASS thread-exit", "FAIL thread-exit")
            (r / f"client-{name}.txt").write_text(client)
            if dbgview:
                (r / f"dbg-{name}.log").write_text("".join(f"00000001\t0.1\t{l}\r\n" for l in GOOD_DRIVER.splitlines()))
            (r / f"bugchecks-{name}.txt").write_text("INFO: No events were found that match the specified selection criteria.\n")
        if bugcheck:
            (r / "bugchecks-lowres.txt").write_text("Event ID: 1001\nThe computer has rebooted from a bugcheck. 0x000000c4\n")
        return r

    def phases(self):
        return [reactos.Phase(n, Path("s.sys"), {"ReadTimeoutSeconds": 2}, [], ["close-pending"]) for n in windows_guest.PHASES]

    def test_a_clean_run_passes_and_each_breakage_is_reported(self):
        with tempfile.TemporaryDirectory() as d:
            per_phase, overall = windows_guest.check(self.results(d), self.phases())
            self.assertEqual((per_phase, overall), ({n: [] for n in windows_guest.PHASES}, []))
        with tempfile.TemporaryDirectory() as d:
            per_phase, overall = windows_guest.check(self.results(d, bugcheck=True), self.phases())
            self.assertIn("bug check recorded", " ".join(overall))
        with tempfile.TemporaryDirectory() as d:
            per_phase, _ = windows_guest.check(self.results(d, phase_ok=False), self.phases())
            self.assertIn("FAIL thread-exit", " ".join(per_phase["standard"]))
        with tempfile.TemporaryDirectory() as d:
            per_phase, _ = windows_guest.check(self.results(d, dbgview=False), self.phases())
            self.assertIn("no DebugView log", " ".join(per_phase["plain"]))
            self.assertIn("DriverEntry did not finish", " ".join(per_phase["plain"]))

    def test_low_resources_may_fail_starts_and_scenarios_but_not_the_unload(self):
        with tempfile.TemporaryDirectory() as d:
            r = self.results(d)
            (r / "client-lowres.txt").write_text(GOOD_CLIENT.replace("PASS thread-exit", "FAIL thread-exit"))
            per_phase, _ = windows_guest.check(r, self.phases())
            self.assertEqual(per_phase["lowres"], [])
            (r / "dbg-lowres.log").write_text(GOOD_DRIVER.replace("stagedrv: Unload: done", ""))
            per_phase, _ = windows_guest.check(r, self.phases())
            self.assertIn("DriverUnload did not finish", " ".join(per_phase["lowres"]))

    def test_the_script_walks_the_boots_and_runs_every_step(self):
        text = windows_guest.script(["--threads", "8"], {"ReadTimeoutSeconds": 2}, 30).decode()
        self.assertNotIn("\n", text.replace("\r\n", ""))
        for label in ("plain", "standard", "lowres", "report", "phase", "step", "next"):
            self.assertIn(f"\r\n:{label}\r\n", text)
        for step in ("sc create", "reg add ReadTimeoutSeconds", "sc start", "client", "sc stop", "wait stopped", "sc delete"):
            self.assertIn(f'"{step}"', text)
        for command in ("verifier /standard /driver stagedrv.sys", "19 36 /driver stagedrv.sys", "verifier /query ",
                        "verifier /reset", "shutdown /r /t 0 /f", "shutdown /s /t 0 /f", r"%D%\stageguest.exe --supervise 600 --threads 8"):
            self.assertIn(command, text)


@unittest.skipUnless(shutil.which("mcopy") and shutil.which("mkfs.vfat") and shutil.which("sfdisk"), "mtools/dosfstools/fdisk")
class PayloadDisk(unittest.TestCase):
    def test_files_go_onto_a_fat32_partition_at_1_mib_and_come_back(self):
        with tempfile.TemporaryDirectory() as d:
            image = Path(d) / "p.img"
            vm.make_payload_disk(image, {"a.txt": b"hello\r\n", "autotest.cmd": b"@echo off\r\n"})
            raw = image.read_bytes()
            self.assertEqual(raw[510:512], b"\x55\xaa")
            self.assertEqual(raw[446 + 4], 0x0C)  # partition type: FAT32 LBA
            self.assertEqual(int.from_bytes(raw[446 + 8 : 446 + 12], "little"), vm.PARTITION_START)
            self.assertEqual(raw[vm.PARTITION_START * vm.SECTOR + 82 : vm.PARTITION_START * vm.SECTOR + 87], b"FAT32")
            self.assertEqual(vm.read_from_payload_disk(image, "a.txt"), b"hello\r\n")
            vm.write_to_payload_disk(image, "a.txt", b"report\r\n")
            self.assertEqual(vm.read_from_payload_disk(image, "a.txt"), b"report\r\n")
            self.assertIsNone(vm.read_from_payload_disk(image, "missing.txt"))


if __name__ == "__main__":
    unittest.main()
