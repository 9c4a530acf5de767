#!/usr/bin/env python3
"""The ReactOS stage must fail when the driver misbehaves.

    tests/vm/test_vm.py [--source DIR] [--time-limit S] [VARIANT...]

Builds deliberately broken drivers from a patched COPY of the tree (the repository is
never touched) with tests/cross/build-sys.sh, runs them in ONE ReactOS boot, one phase
per variant (tests/vm/reactos.py), and asserts that each phase fails *for the reason
its breakage explains*, after the driver had loaded ("DriverEntry: done"; otherwise
the variant is inconclusive and this test fails):

  no-stage-6            Unload skips stage 6 (the Wine stage's variant): the stage
                        lines read [1 2 3 4 5]
  cleanup-not-draining  DispatchCleanup leaves the handle's queued reads alone. Only a
                        real kernel shows it: Wine sends no IRP_MJ_CLEANUP and the
                        driver's CLOSE drains the queue there, so Wine's stage passes;
                        here CLOSE waits for the reads, close-pending sees no cancel
  read-never-completes  DispatchRead pends every read and forgets it (the Wine stage's
                        variant): the first read never returns, the driver never unloads
                        (last: it leaves the service stuck)

and, only when named (it brings the guest down, so it needs a boot of its own):

  timer-not-cancelled   Unload stage 2 leaves the producer's periodic KTIMER set: it fires
                        after the image and the device extension holding it are gone,
                        and the kernel bug-checks or breaks into its debugger

The copy is target/wine/negative/src, the one tests/wine/test_run.sh uses (the stages
run one after another), so its cross-build cache serves both: only the driver crate is
rebuilt per variant. Without a ReactOS image the test is SKIPPED (exit 0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reactos  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
COPY = ROOT / "target/wine/negative/src"
OUT = ROOT / "target/vm/negative"

READ_SIGNATURE = "pub fn read(extension: &DeviceExtension, mut irp: Irp) -> Dispatched {\n"

# variant -> (file, old text, new text), the client's arguments, the symptom expected in
# the phase's problems.
VARIANTS = {
    "no-stage-6": (
        ("src/unload.rs", "    stage_6_remove_device_names(state);\n", ""),
        ["--scenario", "basic-read"],
        "Unload stage lines: [1 2 3 4 5]",
    ),
    "cleanup-not-draining": (
        ("src/dispatch/cleanup.rs", "        drain(&mut state, &irp, &mut cancelled);\n", ""),
        ["--scenario", "close-pending"],
        "FAIL close-pending",
    ),
    "read-never-completes": (
        (
            "src/dispatch/read.rs",
            READ_SIGNATURE,
            READ_SIGNATURE
            + "    // Broken on purpose: every read is marked pending and forgotten.\n"
            + "    if core::hint::black_box(true) {\n"
            + "        let pending = irp.mark_pending();\n"
            + "        let _ = irp.into_raw();\n"
            + "        return pending.into();\n"
            + "    }\n",
        ),
        ["--scenario", "basic-read", "--scenario-timeout", "15"],
        "did not finish within 15 s",
    ),
    # Not in the default set: it brings the guest down, so it needs a boot of its own.
    "timer-not-cancelled": (
        (
            "src/unload.rs",
            "        extension.state.lock().stopping = true;\n        extension.producer.cancel();\n",
            "        extension.state.lock().stopping = true;\n",
        ),
        ["--scenario", "basic-read"],
        ("bug check", "kernel debugger"),
    ),
}
# read-never-completes last: it leaves the service stuck.
ORDER = ["no-stage-6", "cleanup-not-draining", "read-never-completes"]


def refresh_copy(source: Path) -> None:
    """The copy becomes the source tree again (its target/ is kept); src/ gets the
    current time so cargo never takes a previously broken file for up to date."""
    COPY.mkdir(parents=True, exist_ok=True)
    for entry in COPY.iterdir():
        if entry.name != "target":
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    top_level_skip = {"target", ".venv", ".git"}

    def ignore(directory: str, names: list[str]) -> set[str]:
        return top_level_skip & set(names) if Path(directory) == source else set()

    shutil.copytree(source, COPY, ignore=ignore, dirs_exist_ok=True, symlinks=True)
    now = time.time()
    for f in (COPY / "src").rglob("*"):
        if f.is_file():
            os.utime(f, (now, now))


def patch(relative: str, old: str, new: str) -> None:
    path = COPY / relative
    text = path.read_text()
    if text.count(old) != 1:
        raise SystemExit(f"test_vm.py: the breakage does not apply: {old!r} occurs {text.count(old)} times in {path}")
    path.write_text(text.replace(old, new))


def build(variant: str, source: Path) -> Path:
    (file, old, new), _, _ = VARIANTS[variant]
    refresh_copy(source)
    patch(file, old, new)
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / f"build-{variant}.log"
    t0 = time.monotonic()
    with log.open("w") as f:
        p = subprocess.run([str(ROOT / "tests/cross/build-sys.sh")], env={**os.environ, "STAGEDRV_PROJECT_DIR": str(COPY)},
                           stdout=f, stderr=subprocess.STDOUT, check=False)
    if p.returncode != 0:
        print(log.read_text()[-3000:])
        raise SystemExit(f"test_vm.py: {variant}: the broken driver did not build ({log})")
    out = OUT / f"{variant}.sys"
    shutil.copyfile(COPY / "target/cross/stagedrv.sys", out)
    print(f"test_vm.py: {variant}: built in {time.monotonic() - t0:.1f}s")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(ROOT))
    p.add_argument("--time-limit", type=float, default=360)
    p.add_argument("--client", default=str(ROOT / "target/vm/stageguest.exe"))
    p.add_argument("variants", nargs="*", metavar="VARIANT", help=", ".join(VARIANTS))
    a = p.parse_args()
    if unknown := [v for v in a.variants if v not in VARIANTS]:
        p.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    variants = [v for v in VARIANTS if v in (a.variants or ORDER)]
    iso = reactos.image_path(None)
    if not iso.is_file():
        print(f"test_vm.py: SKIPPED: no ReactOS image at {iso} (set STAGEDRV_REACTOS_ISO)")
        return 0
    if not Path(a.client).is_file():
        subprocess.run([str(HERE / "build-guest.sh")], check=True, stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    phases = []
    for v in variants:
        _, client_args, _ = VARIANTS[v]
        sys_file = build(v, Path(a.source).resolve())
        phases.append(reactos.Phase(v, sys_file, {"ReadTimeoutSeconds": 2, "SamplePeriodMs": 500}, client_args, client_limit_s=40))
    t_build = time.monotonic() - t0
    work = OUT / "run"
    outcome = reactos.run(iso, phases, Path(a.client), work, time_limit=a.time_limit, stop_seconds=10)
    reactos.report(outcome, work)
    failures = 0
    for v in variants:
        problems = outcome.problems[v]
        expect = VARIANTS[v][2]
        loaded = any(line.startswith("stagedrv: DriverEntry: done") for line in reactos.vm.lines_with(outcome.phases[v], "stagedrv: "))
        if not problems:
            verdict = "the VM stage PASSED on a broken driver"
        elif not loaded:
            verdict = 'inconclusive: the driver did not load (no "DriverEntry: done"), so this says nothing about the breakage'
        elif not any(e in problem for problem in problems + outcome.overall for e in ([expect] if isinstance(expect, str) else expect)):
            verdict = f"the phase failed, but without the expected symptom {expect!r}"
        else:
            verdict = ""
        if verdict:
            failures += 1
            print(f"test_vm.py: {v}: FAIL: {verdict}; its problems:")
        else:
            print(f"test_vm.py: {v}: ok: the VM stage failed as it must:")
        for problem in problems:
            print(f"    - {problem}")
    # A broken driver may hang the guest (read-never-completes): the time limit is
    # then the harness doing its job, not a failure of this test.
    for problem in outcome.overall:
        print(f"test_vm.py: (boot) {problem}")
    print(f"test_vm.py: builds {t_build:.1f}s, one boot with {len(phases)} phases {outcome.boot.seconds:.1f}s; "
          f"total {time.monotonic() - t0:.1f}s")
    if failures:
        print(f"test_vm.py: {failures} variant(s) did not make the VM stage fail as they must")
        return 1
    print("test_vm.py: every broken variant made the VM stage fail")
    return 0


if __name__ == "__main__":
    sys.exit(main())
