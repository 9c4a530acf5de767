#!/usr/bin/env python3
"""Runs the real stagedrv.sys on a real NT kernel in a VM and checks what happened.

    tests/vm/run.py [--image FILE] [--sys FILE] [--client FILE] [--work DIR]
                    [--time-limit S] [--accel auto|kvm|tcg] [--param NAME=VALUE]...
                    [--must-pass SCENARIO]... [--bench] [-- CLIENT-ARGS...]
    tests/vm/run.py --guest windows --image DISK ...   (tests/vm/README.md)

ReactOS (the default): boots the ReactOS x64 LiveCD image (--image, else
STAGEDRV_REACTOS_ISO, else ../shared/nt-vm/reactos-x64-livecd-autotest.iso next to the
repository; when there is none the run is SKIPPED with the reason and exits 0) under
QEMU with a payload disk holding the driver, the guest client (target/vm/stageguest.exe)
and autotest.cmd, which the LiveCD runs at logon: sc create, the Parameters, sc start,
the client's scenarios, sc stop, sc delete, power-off. Everything comes back on COM1
(the kernel debugger's port, read continuously; KDBG prompts are answered, and the VM
is stopped when the debugger keeps breaking in or goes silent). The checks, from the kernel's log: every step's exit status,
"DriverEntry: done", Unload stages 1..6 in order, "Unload: done", every scenario's
verdict (none FAIL or missing; close-pending, watchdog-timeout and thread-exit must
PASS), and no bug check, assertion or debugger entry.

--bench runs the guest client's benchmarks instead (tests/vm/README.md has the figures).

Exit status: 0 when everything held (or there is no image), 1 on any failure (with the
relevant part of the log), 2 on bad usage. The time of each part is printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reactos  # noqa: E402
import vmharness as vm  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# Wine cannot run these; a real kernel must (tests/wine/README.md).
REAL_KERNEL_SCENARIOS = ["close-pending", "watchdog-timeout", "thread-exit"]
# The watchdog at 2 s, and a producer slow enough that 40 reads cannot all be served
# before they time out even when this guest's performance counter (by which the
# watchdog ages reads) runs at a tenth of real time, as it did under TCG (README).
DEFAULT_PARAMETERS = {"ReadTimeoutSeconds": 2, "SamplePeriodMs": 2000}


def parameters(given: list[str], base: dict[str, int]) -> dict[str, int]:
    out = dict(base)
    for p in given:
        name, sep, value = p.partition("=")
        if not sep or not name:
            raise SystemExit(f"run.py: --param wants NAME=VALUE, got {p!r}")
        out[name] = int(value, 0)
    return out


def bench_phases(a: argparse.Namespace) -> list[reactos.Phase]:
    """cleanup and cancel with a producer that stays quiet during the measurements and
    room for N pending reads per handle; throughput with the fastest producer."""
    n = str(a.bench_pending)
    quiet = {"SamplePeriodMs": 60000, "MaxPendingReadsPerHandle": 100000, "StatisticsEveryTicks": 100000}
    fast = {"SamplePeriodMs": 1, "RingCapacity": 65536, "DeviceCount": 1, "StatisticsEveryTicks": 100000}
    common = ["--bench-rounds", str(a.bench_rounds), *a.client_args]
    return [
        reactos.Phase("bench-pending", Path(a.sys), quiet, ["--bench", "cleanup", "--bench", "cancel", "--bench-pending", n, *common], bench=True),
        reactos.Phase("bench-throughput", Path(a.sys), fast, ["--bench", "throughput", *common], bench=True),
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--guest", choices=["reactos", "windows"], default="reactos")
    p.add_argument("--image", help="reactos: the LiveCD ISO; windows: the prepared disk image")
    p.add_argument("--sys", default=str(ROOT / "target/cross/stagedrv.sys"))
    p.add_argument("--client", default=str(ROOT / "target/vm/stageguest.exe"))
    p.add_argument("--work", default=str(ROOT / "target/vm/run"))
    p.add_argument("--time-limit", type=float, default=300)
    p.add_argument("--stop-seconds", type=int, default=30, help="how long the guest waits for sc stop to finish")
    p.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    p.add_argument("--param", action="append", default=[], help="a Parameters DWORD, NAME=VALUE (repeatable)")
    p.add_argument("--must-pass", action="append", default=None, help="a scenario that must PASS (repeatable)")
    p.add_argument("--bench", action="store_true", help="run the benchmarks instead of the scenarios")
    p.add_argument("--bench-pending", type=int, default=10_000)
    p.add_argument("--bench-rounds", type=int, default=9)
    p.add_argument("--firmware", choices=["bios", "uefi"], default="bios", help="windows: SeaBIOS, or OVMF (Windows 11)")
    p.add_argument("--ovmf-code", default="/usr/share/OVMF/OVMF_CODE_4M.fd")
    p.add_argument("--ovmf-vars", default="/usr/share/OVMF/OVMF_VARS_4M.fd")
    p.add_argument("client_args", nargs="*", help="after --: passed to stageguest")
    a = p.parse_args()
    if a.guest == "windows":
        import windows_guest

        return windows_guest.main(a)

    iso = reactos.image_path(a.image)
    if not iso.is_file():
        print(f"run.py: SKIPPED: no ReactOS image at {iso} (set STAGEDRV_REACTOS_ISO; tests/vm/README.md)")
        return 0
    if mismatch := reactos.image_mismatch(iso):
        print(f"run.py: FAILED: {mismatch}")
        return 1
    for f in (a.sys, a.client):
        if not Path(f).is_file():
            print(f"run.py: missing {f} (tests/cross/build-sys.sh, tests/vm/build-guest.sh build them)", file=sys.stderr)
            return 2
    if a.bench:
        phases = bench_phases(a)
    else:
        must_pass = a.must_pass if a.must_pass is not None else ([] if a.client_args else REAL_KERNEL_SCENARIOS)
        phases = [reactos.Phase("stagedrv", Path(a.sys), parameters(a.param, DEFAULT_PARAMETERS), a.client_args, must_pass)]
    t0 = time.monotonic()
    print(f"run.py: ReactOS image {iso}; driver {a.sys}; client {a.client}; time limit {a.time_limit:.0f} s")
    for ph in phases:
        print(f"run.py: phase {ph.name}: Parameters {ph.parameters}; client {' '.join(ph.client_args) or '(all scenarios)'}")
    work = Path(a.work)
    outcome = reactos.run(iso, phases, Path(a.client), work, time_limit=a.time_limit, accel=a.accel, stop_seconds=a.stop_seconds)
    reactos.report(outcome, work)
    print(f"run.py: total {time.monotonic() - t0:.1f}s")
    failed = {k: v for k, v in outcome.problems.items() if v}
    if outcome.overall or failed:
        print("run.py: FAILED:")
        for problem in outcome.overall:
            print(f"  - {problem}")
        for name, problems in failed.items():
            for problem in problems:
                print(f"  - {name}: {problem}")
        print(f"run.py: relevant part of the kernel's log ({work / 'com1.log'}):")
        for line in vm.relevant_log(outcome.text):
            print(f"  {line}")
        return 1
    what = "the benchmarks ran" if a.bench else "every scenario passed or was skipped with its reason"
    print(f"run.py: OK: DriverEntry, {what}, Unload stages 1..6 in order, DriverUnload done; "
          "no bug check, assertion or debugger entry")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except vm.HarnessError as e:
        print(f"run.py: FAILED: {e}")
        sys.exit(1)
