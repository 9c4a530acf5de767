"""The VM harness's machinery: payload disk, QEMU, the COM1 reader, the log checks.

Standard library only. Used by tests/vm/run.py (ReactOS and Windows guests) and its
tests (tests/vm/test_vmharness.py, tests/vm/test_vm.py).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# --- the payload disk ---------------------------------------------------------------

SECTOR = 512
PARTITION_START = 2048  # sectors: 1 MiB, where mkfs.vfat --offset and mtools' @@1M look


def make_payload_disk(image: Path, files: dict[str, Path | bytes], size_mib: int = 64) -> None:
    """A raw disk: an MBR with one FAT32 partition (type 0x0c) from sector 2048,
    holding `files` (name on the disk -> host file or contents). No root needed:
    sfdisk writes the MBR into the file, mkfs.vfat --offset formats the partition
    in place and mcopy (mtools) copies into it."""
    image.parent.mkdir(parents=True, exist_ok=True)
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(image)], stdin=f"{PARTITION_START},,c\n")
    sectors = size_mib * 1024 * 1024 // SECTOR - PARTITION_START
    # mkfs.vfat counts the size in 1 KiB blocks.
    run(["mkfs.vfat", "-F", "32", "-n", "PAYLOAD", "--offset", str(PARTITION_START), str(image), str(sectors // 2)])
    staging = image.parent / (image.name + ".files")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name, content in files.items():
        target = staging / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            shutil.copyfile(content, target)
        run(["mcopy", "-o", "-i", f"{image}@@{PARTITION_START * SECTOR}", str(target), f"::{name}"])
    shutil.rmtree(staging)


def read_from_payload_disk(image: Path, name: str) -> bytes | None:
    """A file's contents from the payload disk (after power-off), or None."""
    p = subprocess.run(
        ["mtype", "-i", f"{image}@@{PARTITION_START * SECTOR}", f"::{name}"], capture_output=True, check=False
    )
    return p.stdout if p.returncode == 0 else None


def write_to_payload_disk(image: Path, name: str, content: bytes) -> None:
    """Replaces a file on the payload disk (between boots)."""
    staging = image.parent / (image.name + ".write")
    staging.write_bytes(content)
    try:
        run(["mcopy", "-o", "-i", f"{image}@@{PARTITION_START * SECTOR}", str(staging), f"::{name}"])
    finally:
        staging.unlink()


def run(cmd: list[str], stdin: str | None = None) -> None:
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise HarnessError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")


class HarnessError(Exception):
    """The harness itself could not do its job (not a verdict on the driver)."""


# --- acceleration -------------------------------------------------------------------


def choose_accelerator(wanted: str) -> tuple[str, str]:
    """('kvm' or 'tcg', why). 'auto' takes KVM only when /dev/kvm is usable and is not
    kvm_pvm: this project's machines have a paravirtual nested KVM (kvm_pvm) that runs
    firmware but not an unmodified NT kernel (it stops at the first SSE instruction)."""
    if wanted == "tcg":
        return "tcg", "TCG (asked for)"
    usable = os.access("/dev/kvm", os.R_OK | os.W_OK)
    pvm = Path("/sys/module/kvm_pvm").exists()
    if wanted == "kvm":
        if not usable:
            raise HarnessError("--accel kvm: /dev/kvm is missing or not accessible")
        return "kvm", "KVM (asked for)" + (" although it is kvm_pvm" if pvm else "")
    if not usable:
        return "tcg", "TCG (no usable /dev/kvm)"
    if pvm:
        return "tcg", "TCG (/dev/kvm is kvm_pvm, a paravirtual nested KVM that cannot run this guest's kernel)"
    return "kvm", "KVM (/dev/kvm usable)"


# --- the kernel debugger on COM1 ----------------------------------------------------

# What a ReactOS debug kernel prints when something went wrong (any of these fails a run).
FAILURE_PATTERNS = [
    (re.compile(r"kdb:>"), "the kernel debugger (KDBG) was entered"),
    (re.compile(r"Entered debugger on"), "the kernel debugger (KDBG) was entered"),
    (re.compile(r"\*\*\* Fatal System Error"), "bug check (*** Fatal System Error)"),
    (re.compile(r"\*\*\* STOP: 0x"), "bug check (*** STOP)"),
    (re.compile(r"KeBugCheck", re.IGNORECASE), "bug check"),
    (re.compile(r"assertion failed|\*\*\* Assertion", re.IGNORECASE), "assertion failed"),
    (re.compile(r"Break repeatedly, break Once"), "assertion failed (KDBG asks how to continue)"),
]

# What the harness answers, as ReactOS's own test bot does, so that the VM keeps going
# and the log gets a back trace: `bt` then `cont` at the prompt, `o` (break once) at an
# assertion's question, Return at the pager.
KDBG_ANSWERS = [
    (re.compile(rb"Break repeatedly, break Once[^\n]*\?\s*$"), b"o\r"),
    (re.compile(rb"--- Press q[^\n]*$"), b"\r"),
    (re.compile(rb"kdb:>\s*$"), None),  # bt at the first prompt, then cont
]
# Prompts answered (bt, cont, bt, cont, ...) before the harness stops the VM.
KDBG_MAX_PROMPTS = 6
# After the debugger was entered, this long without a byte on COM1 stops the VM too:
# this image's KDBG did not act on the answers (tests/vm/README.md).
KDBG_SILENCE_S = 45


@dataclass
class SerialLog:
    """Everything read from COM1, with the harness's answers to KDBG."""

    path: Path
    data: bytearray = field(default_factory=bytearray)
    kdbg_prompts: int = 0
    answers: list[str] = field(default_factory=list)
    gave_up: bool = False  # KDBG kept breaking in, or stopped answering: the VM is stopped
    closed: threading.Event = field(default_factory=threading.Event)
    last_data: float = field(default_factory=time.monotonic)
    debugger_entered: bool = False

    def text(self) -> str:
        return self.data.decode("latin-1").replace("\r\n", "\n").replace("\r", "\n")


def read_serial(sock: socket.socket, log: SerialLog) -> None:
    """Reads COM1 until QEMU closes it; answers KDBG's prompts (runs in a thread)."""
    tail = b""
    with log.path.open("wb") as out:
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            log.data += chunk
            log.last_data = time.monotonic()
            out.write(chunk)
            out.flush()
            tail = (tail + chunk)[-512:]
            for pattern, answer in KDBG_ANSWERS:
                if not pattern.search(tail):
                    continue
                if answer is None:
                    log.kdbg_prompts += 1
                    if log.kdbg_prompts > KDBG_MAX_PROMPTS:
                        log.gave_up = True
                        answer = b""
                    else:
                        answer = b"bt\r" if log.kdbg_prompts % 2 == 1 else b"cont\r"
                log.debugger_entered = True
                if answer:
                    log.answers.append(f"{len(log.data)}: {answer.decode().strip() or '<Return>'}")
                    try:
                        sock.sendall(answer)
                    except OSError:
                        pass
                tail = b""
                break
    log.closed.set()


# --- QEMU -----------------------------------------------------------------------------


@dataclass
class Boot:
    """The result of one boot."""

    log: SerialLog
    seconds: float
    timed_out: bool
    exit_status: int | None
    accel: str
    accel_why: str


def boot(
    *,
    cdrom: Path | None,
    disks: list[Path | tuple[Path, str]],
    work: Path,
    time_limit: float,
    accel: str = "auto",
    memory_mib: int = 2048,
    cpu: str = "qemu64",
    machine: str = "pc",
    extra: list[str] | None = None,
    on_line=None,
) -> Boot:
    """Boots QEMU with `disks` as IDE disks (in order; a path is a raw image, or give
    (path, format)) and `cdrom` as the IDE CD-ROM (booted first when given), COM1 on a
    socket read continuously, and waits until the guest powers off (-no-reboot: a
    reboot ends QEMU too) or `time_limit` passes."""
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise HarnessError("qemu-system-x86_64 not found (tests/vm/ensure-tools.sh installs it)")
    kind, why = choose_accelerator(accel)
    work.mkdir(parents=True, exist_ok=True)
    sock_path = work / "com1.sock"
    sock_path.unlink(missing_ok=True)
    accel_args = ["-accel", "kvm", "-cpu", "host"] if kind == "kvm" else ["-accel", "tcg,tb-size=1024", "-cpu", cpu]
    cmd = [qemu, *accel_args, "-machine", machine, "-m", str(memory_mib), "-smp", "1"]
    cmd += ["-display", "none", "-vga", "std", "-monitor", "none", "-no-reboot", "-net", "none"]
    for index, disk in enumerate(disks):
        path, fmt = disk if isinstance(disk, tuple) else (disk, "raw")
        cmd += ["-drive", f"file={path},if=ide,index={index},format={fmt}"]
    if cdrom is not None:
        cmd += ["-drive", f"file={cdrom},if=ide,index=2,media=cdrom,readonly=on", "-boot", "d"]
    cmd += ["-chardev", f"socket,id=com1,path={sock_path},server=on,wait=on", "-serial", "chardev:com1"]
    cmd += extra or []
    log = SerialLog(work / "com1.log")
    stderr = (work / "qemu.stderr").open("wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    try:
        sock = _connect(sock_path, proc)
        reader = threading.Thread(target=read_serial, args=(sock, log), daemon=True)
        reader.start()
        timed_out = False
        seen = 0
        while proc.poll() is None:
            if time.monotonic() - t0 > time_limit:
                timed_out = True
                break
            if log.gave_up:
                break
            if log.debugger_entered and time.monotonic() - log.last_data > KDBG_SILENCE_S:
                # The debugger has the machine and prints nothing more: it is not going on.
                log.gave_up = True
                break
            if on_line is not None:
                text = log.text()
                lines = text.split("\n")
                for line in lines[seen : len(lines) - 1]:
                    on_line(line)
                seen = max(seen, len(lines) - 1)
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stderr.close()
    log.closed.wait(5)
    sock.close()
    return Boot(log, time.monotonic() - t0, timed_out, proc.returncode, kind, why)


def _connect(path: Path, proc: subprocess.Popen) -> socket.socket:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(f"QEMU exited with {proc.returncode} before COM1 was connected (see qemu.stderr)")
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(path))
            return s
        except OSError:
            time.sleep(0.1)
    raise HarnessError("QEMU's COM1 socket did not appear within 30 s")


# --- reading the log -----------------------------------------------------------------

MARKER = "AUTOTEST: "
CLIENT = "stageguest: "
DRIVER = "stagedrv: "


def lines_with(text: str, prefix: str) -> list[str]:
    """The lines containing `prefix`, from it on (the kernel may prefix lines)."""
    out = []
    for line in text.split("\n"):
        at = line.find(prefix)
        if at >= 0:
            out.append(line[at:].rstrip())
    return out


def step_status(text: str, step: str) -> str:
    """The exit status the guest script printed for `step` ('AUTOTEST: <step> exit N')."""
    found = re.findall(rf"{re.escape(MARKER)}{re.escape(step)} exit (-?\d+)", text)
    return found[-1] if found else "missing"


def kernel_failures(text: str) -> list[str]:
    """Bug checks, assertions and debugger entries in the kernel's log, each with its
    line."""
    found = []
    for line in text.split("\n"):
        for pattern, what in FAILURE_PATTERNS:
            if pattern.search(line) and CLIENT not in line:
                found.append(f"{what}: {line.strip()[:200]}")
                break
    return found


@dataclass
class ClientResult:
    started: int | None = None  # scenarios announced by "start: N scenario(s)"
    verdicts: dict[str, str] = field(default_factory=dict)  # name -> PASS/SKIP/FAIL/NOTRUN
    lines: dict[str, str] = field(default_factory=dict)  # name -> its verdict line
    summary: str | None = None
    fatal: list[str] = field(default_factory=list)
    bench: list[str] = field(default_factory=list)


def parse_client(text: str) -> ClientResult:
    r = ClientResult()
    for line in lines_with(text, CLIENT):
        body = line[len(CLIENT) :]
        if m := re.match(r"start: (\d+) scenario", body):
            r.started = int(m.group(1))
        elif m := re.match(r"(PASS|SKIP|FAIL|NOTRUN) (?!bench )([a-z0-9-]+)", body):
            r.verdicts[m.group(2)] = m.group(1)
            r.lines[m.group(2)] = body
        elif body.startswith("summary:"):
            r.summary = body
        elif body.startswith("FATAL"):
            r.fatal.append(body)
        elif body.startswith("BENCH ") or re.match(r"(PASS|FAIL) bench ", body):
            r.bench.append(body)
    return r


def driver_lifecycle_problems(text: str) -> list[str]:
    """DriverEntry finished, Unload stages 1..6 in order, DriverUnload finished."""
    problems = []
    driver = lines_with(text, DRIVER)
    if not any(line.startswith("stagedrv: DriverEntry: done") for line in driver):
        problems.append('DriverEntry did not finish: no "stagedrv: DriverEntry: done" line')
    stages = [m.group(1) for line in driver if (m := re.match(r"stagedrv: Unload: stage (\d+)", line))]
    if stages != ["1", "2", "3", "4", "5", "6"]:
        problems.append(f"Unload stage lines: [{' '.join(stages)}]; expected [1 2 3 4 5 6] in order")
    if not any(line.startswith("stagedrv: Unload: done") for line in driver):
        problems.append('DriverUnload did not finish: no "stagedrv: Unload: done" line')
    return problems


def client_problems(r: ClientResult, must_pass: list[str]) -> list[str]:
    problems = []
    if r.summary is None:
        problems.append("the client printed no summary (it did not finish)")
    if r.started is not None and len(r.verdicts) != r.started:
        problems.append(f"the client announced {r.started} scenario(s) but {len(r.verdicts)} have a verdict")
    for name, verdict in r.verdicts.items():
        if verdict in ("FAIL", "NOTRUN"):
            problems.append(f"scenario {r.lines[name]}")
    for name in must_pass:
        if r.verdicts.get(name) != "PASS":
            problems.append(f"scenario {name} must run and pass on a real kernel; it was {r.verdicts.get(name, 'not reported')}")
    problems.extend(f"client: {f}" for f in r.fatal)
    return problems


def relevant_log(text: str, limit: int = 80) -> list[str]:
    """The lines a person needs after a failure: the script's markers, the client's and
    the driver's lines, and everything around a kernel failure."""
    lines = text.split("\n")
    keep = set()
    for i, line in enumerate(lines):
        if MARKER in line or CLIENT in line or DRIVER in line or "AUTOTEST-BOOT" in line:
            keep.add(i)
        if any(p.search(line) for p, _ in FAILURE_PATTERNS):
            keep.update(range(max(0, i - 10), min(len(lines), i + 30)))
    chosen = [lines[i].rstrip() for i in sorted(keep)]
    return chosen[-limit:]
