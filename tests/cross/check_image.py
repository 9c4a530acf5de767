#!/usr/bin/env python3
r"""Check that a built .sys is a kernel-mode driver image Windows will load.

Usage:
    check_image.py [--allow FILE] [--list-imports] IMAGE

Checks (each failure is reported, not just the first one):
  - PE32+ image for AMD64;
  - subsystem NATIVE;
  - the entry point is the exported `DriverEntry`;
  - the header checksum is set and valid (the loader checks it for drivers);
  - DllCharacteristics FORCE_INTEGRITY (signature required) and NX_COMPAT;
  - CET shadow stack compatible: the extended DLL characteristics (debug
    directory entry IMAGE_DEBUG_TYPE_EX_DLLCHARACTERISTICS) carry CET_COMPAT,
    which link.exe and lld-link write for /CETCOMPAT;
  - memory integrity (HVCI) layout: 4 KiB section alignment, no section both
    writable and executable;
  - imports only from ntoskrnl.exe and HAL.dll (case-insensitive), by name, no
    delay-load imports, and only functions listed in the allow-list
    (tests/cross/imports.allow by default: one name per line, each with a `#`
    reason); a few functions are refused whatever the allow-list says (DENIED).

Exit status: 0 when the image passes, 1 when a check fails, 2 on usage errors
or an unreadable image/allow-list.

The same checks apply to both builds of the driver: the Linux cross-build
(lld-link: target/cross/stagedrv.sys, signed: target/cross/stagedrv-signed.sys)
and `cargo make` on Windows (link.exe: target\release\stagedrv_package\stagedrv.sys,
or target\debug\... without --profile release). Nothing here depends on the
linker's section names or on the host: on Windows, `py -m pip install
--require-hashes -r tests\cross\requirements.txt`, then
`py tests\cross\check_image.py IMAGE`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import pefile

DEFAULT_ALLOW_LIST = Path(__file__).with_name("imports.allow")

# Import DLLs a kernel driver of this project may bind to (compared lowercase).
ALLOWED_DLLS = ("ntoskrnl.exe", "hal.dll")

# Refused even when listed in the allow-list.
DENIED: dict[str, str] = {
    "IoCreateDeviceSecure": "a function of the static library wdmsec.lib, not an ntoskrnl.exe "
    "export: such an import can never be resolved and the driver would not load",
    "WdmlibIoCreateDeviceSecure": "the wdmsec.lib implementation of IoCreateDeviceSecure, not a kernel export",
    "ExAllocatePool": "deprecated and untagged; use ExAllocatePool2",
    "ExAllocatePoolWithTag": "deprecated since Windows 10 2004 (returns uninitialized memory); use ExAllocatePool2",
}

IMAGE_FILE_MACHINE_AMD64 = 0x8664
OPTIONAL_HEADER_MAGIC_PE32_PLUS = 0x20B
IMAGE_SUBSYSTEM_NATIVE = 1
DLLCHAR_FORCE_INTEGRITY = 0x0080
DLLCHAR_NX_COMPAT = 0x0100
IMAGE_DEBUG_TYPE_EX_DLLCHARACTERISTICS = 20
DLLCHAR_EX_CET_COMPAT = 0x0001
SCN_MEM_EXECUTE = 0x20000000
SCN_MEM_WRITE = 0x80000000
SECTION_ALIGNMENT = 0x1000


@dataclass(frozen=True)
class Failure:
    """One failed check: a stable code (used by the tests) and a message."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class AllowListError(Exception):
    """The allow-list file cannot be used."""


def load_allow_list(path: Path) -> set[str]:
    """Read an allow-list: one function name per line, `#` starts a comment.

    Every entry must carry a reason (a `#` comment on its line).
    """
    names: set[str] = set()
    problems: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise AllowListError(f"cannot read allow-list {path}: {error}") from error
    for number, line in enumerate(lines, start=1):
        entry, hash_sign, reason = line.partition("#")
        entry = entry.strip()
        if not entry:
            continue
        if len(entry.split()) != 1:
            problems.append(f"{path}:{number}: expected one function name, got {entry!r}")
        elif not hash_sign or not reason.strip():
            problems.append(f"{path}:{number}: {entry} has no reason (add `# why` on the same line)")
        elif entry in names:
            problems.append(f"{path}:{number}: {entry} listed twice")
        names.add(entry)
    if problems:
        raise AllowListError("\n".join(problems))
    return names


def image_imports(pe: pefile.PE) -> list[tuple[str, str | None, int | None]]:
    """(dll, function name or None, ordinal or None) for every import."""
    result = []
    for entry in getattr(pe, "DIRECTORY_ENTRY_IMPORT", []):
        dll = entry.dll.decode("ascii", "replace")
        for imp in entry.imports:
            name = imp.name.decode("ascii", "replace") if imp.name is not None else None
            result.append((dll, name, imp.ordinal if imp.import_by_ordinal else None))
    return result


def ex_dll_characteristics(pe: pefile.PE) -> int | None:
    """The extended DLL characteristics, or None when the image has none.

    They live in a debug directory entry of their own, not in the optional
    header; pefile decodes that entry's first DWORD.
    """
    for entry in getattr(pe, "DIRECTORY_ENTRY_DEBUG", []):
        if entry.struct.Type == IMAGE_DEBUG_TYPE_EX_DLLCHARACTERISTICS and entry.entry is not None:
            return entry.entry.ExDllCharacteristics
    return None


def check(data: bytes, allowed: set[str]) -> list[Failure]:
    """Run every check on the image bytes; return the failures (empty: pass)."""
    failures: list[Failure] = []

    def fail(code: str, message: str) -> None:
        failures.append(Failure(code, message))

    try:
        pe = pefile.PE(data=data)
    except pefile.PEFormatError as error:
        return [Failure("not-pe", f"not a PE image: {error}")]

    # Format and machine.
    magic = pe.OPTIONAL_HEADER.Magic
    if magic != OPTIONAL_HEADER_MAGIC_PE32_PLUS:
        fail("not-pe32plus", f"optional header magic is {magic:#x}, expected {OPTIONAL_HEADER_MAGIC_PE32_PLUS:#x} (PE32+)")
    machine = pe.FILE_HEADER.Machine
    if machine != IMAGE_FILE_MACHINE_AMD64:
        fail("machine", f"machine is {machine:#06x}, expected {IMAGE_FILE_MACHINE_AMD64:#06x} (AMD64)")

    # Subsystem.
    subsystem = pe.OPTIONAL_HEADER.Subsystem
    if subsystem != IMAGE_SUBSYSTEM_NATIVE:
        fail("subsystem", f"subsystem is {subsystem}, expected {IMAGE_SUBSYSTEM_NATIVE} (NATIVE)")

    # Entry point == exported DriverEntry.
    entry_rva = pe.OPTIONAL_HEADER.AddressOfEntryPoint
    exports = {
        sym.name.decode("ascii", "replace"): sym.address
        for sym in getattr(getattr(pe, "DIRECTORY_ENTRY_EXPORT", None), "symbols", [])
        if sym.name is not None
    }
    driver_entry = exports.get("DriverEntry")
    if driver_entry is None:
        fail("entry-point", "no exported DriverEntry")
    elif driver_entry != entry_rva:
        fail("entry-point", f"entry point RVA {entry_rva:#x} is not DriverEntry's RVA {driver_entry:#x}")

    # Header checksum.
    stored = pe.OPTIONAL_HEADER.CheckSum
    computed = pe.generate_checksum()
    if stored == 0:
        fail("checksum", f"header checksum is 0 (not set; lld-link/link.exe need /RELEASE), expected {computed:#x}")
    elif stored != computed:
        fail("checksum", f"header checksum is {stored:#x}, the image's checksum is {computed:#x}")

    # DllCharacteristics.
    dll_chars = pe.OPTIONAL_HEADER.DllCharacteristics
    if not dll_chars & DLLCHAR_FORCE_INTEGRITY:
        fail("force-integrity", f"DllCharacteristics {dll_chars:#06x} lacks FORCE_INTEGRITY (0x0080; link with /INTEGRITYCHECK)")
    if not dll_chars & DLLCHAR_NX_COMPAT:
        fail("nx-compat", f"DllCharacteristics {dll_chars:#06x} lacks NX_COMPAT (0x0100; link with /NXCOMPAT)")

    # Kernel-mode hardware-enforced stack protection (CET shadow stacks).
    ex_chars = ex_dll_characteristics(pe)
    if ex_chars is None:
        fail("cet-compat", "no extended DLL characteristics (debug directory entry type 20): "
             "not marked CET shadow stack compatible (link with /CETCOMPAT)")
    elif not ex_chars & DLLCHAR_EX_CET_COMPAT:
        fail("cet-compat", f"extended DLL characteristics {ex_chars:#06x} lack CET_COMPAT (0x0001; link with /CETCOMPAT)")

    # HVCI: layout.
    alignment = pe.OPTIONAL_HEADER.SectionAlignment
    if alignment != SECTION_ALIGNMENT:
        fail("section-alignment", f"SectionAlignment is {alignment:#x}, expected {SECTION_ALIGNMENT:#x}")
    for section in pe.sections:
        flags = section.Characteristics
        if flags & SCN_MEM_WRITE and flags & SCN_MEM_EXECUTE:
            name = section.Name.rstrip(b"\0").decode("ascii", "replace")
            fail("wx-section", f"section {name!r} is both writable and executable (flags {flags:#010x})")

    # Imports.
    if getattr(pe, "DIRECTORY_ENTRY_DELAY_IMPORT", None):
        dlls = ", ".join(e.dll.decode("ascii", "replace") for e in pe.DIRECTORY_ENTRY_DELAY_IMPORT)
        fail("delay-import", f"delay-load imports are not supported in kernel mode: {dlls}")
    for name in sorted(allowed & DENIED.keys()):
        fail("allow-list-denied", f"the allow-list lists {name}, which is always refused: {DENIED[name]}")
    for dll, name, ordinal in image_imports(pe):
        if dll.lower() not in ALLOWED_DLLS:
            what = name if name is not None else f"ordinal {ordinal}"
            fail("import-dll", f"imports {what} from {dll}; only {' / '.join(ALLOWED_DLLS)} are allowed")
        if name is None:
            fail("import-ordinal", f"imports ordinal {ordinal} from {dll}; import by name only")
        elif name in DENIED:
            fail("import-denied", f"imports {name} from {dll}: never allowed: {DENIED[name]}")
        elif name not in allowed:
            fail("import-not-allowed", f"imports {name} from {dll}, which is not in the allow-list")

    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("image", type=Path, help="the driver image (.sys)")
    parser.add_argument("--allow", type=Path, default=DEFAULT_ALLOW_LIST,
                        help=f"import allow-list (default: {DEFAULT_ALLOW_LIST})")
    parser.add_argument("--list-imports", action="store_true",
                        help="also print every import of the image")
    args = parser.parse_args(argv)

    try:
        data = args.image.read_bytes()
    except OSError as error:
        print(f"check_image: cannot read {args.image}: {error}", file=sys.stderr)
        return 2
    try:
        allowed = load_allow_list(args.allow)
    except AllowListError as error:
        print(f"check_image: bad allow-list:\n{error}", file=sys.stderr)
        return 2

    failures = check(data, allowed)

    if args.list_imports:
        try:
            for dll, name, ordinal in image_imports(pefile.PE(data=data)):
                print(f"  import {dll}!{name if name is not None else f'#{ordinal}'}")
        except pefile.PEFormatError:
            pass

    if failures:
        print(f"check_image: {args.image}: {len(failures)} problem(s):", file=sys.stderr)
        for failure in failures:
            print(f"  FAIL {failure}", file=sys.stderr)
        return 1
    print(f"check_image: {args.image}: OK ({len(data)} bytes)")
    unused = allowed - {name for _, name, _ in image_imports(pefile.PE(data=data))}
    if unused:
        print(f"check_image: note: allow-listed but not imported: {', '.join(sorted(unused))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
