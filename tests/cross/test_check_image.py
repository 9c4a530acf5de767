#!/usr/bin/env python3
"""Negative tests for check_image.py: tampered copies of the real image must fail.

Run: .venv/bin/python -m unittest tests/cross/test_check_image.py -v
The image is $STAGEDRV_SYS, by default target/cross/stagedrv.sys (made by
tests/cross/build-sys.sh). Each tampered copy gets its header checksum
recomputed unless the checksum is what is being broken, so that exactly the
intended check is hit. The tampering tests use an allow-list made from the
image's own imports, so they stay precise while tests/cross/imports.allow lags
behind the driver; test_untouched_image_passes uses the real allow-list.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import pefile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import check_image  # noqa: E402  (needs the path set above)

IMAGE = Path(os.environ.get("STAGEDRV_SYS", HERE.parent.parent / "target" / "cross" / "stagedrv.sys"))
ALLOW_LIST = check_image.DEFAULT_ALLOW_LIST


def reparse(data: bytes) -> pefile.PE:
    return pefile.PE(data=data)


def with_valid_checksum(data: bytes) -> bytes:
    pe = reparse(data)
    pe.OPTIONAL_HEADER.CheckSum = pe.generate_checksum()
    return bytes(pe.write())


def edit(data: bytes, change, fix_checksum: bool = True) -> bytes:
    """Apply `change(pe)` to a parsed copy, write it back, re-checksum."""
    pe = reparse(data)
    change(pe)
    out = bytes(pe.write())
    return with_valid_checksum(out) if fix_checksum else out


def imported_names(data: bytes) -> list[tuple[str, str, int]]:
    """(dll, name, file offset of the name string) of every by-name import."""
    pe = reparse(data)
    return [
        (entry.dll.decode(), imp.name.decode(), imp.name_offset)
        for entry in pe.DIRECTORY_ENTRY_IMPORT
        for imp in entry.imports
        if imp.name is not None
    ]


def rename_import(data: bytes, old: str, new: str) -> bytes:
    """Overwrite an import's name string in place (new must not be longer)."""
    assert len(new) <= len(old), (old, new)
    for _, name, offset in imported_names(data):
        if name == old:
            raw = bytearray(data)
            raw[offset:offset + len(old)] = new.encode().ljust(len(old), b"\0")
            return with_valid_checksum(bytes(raw))
    raise AssertionError(f"{old} is not imported")


def retarget_import(data: bytes, old: str, new: str) -> bytes:
    """Make the import `old` import `new` instead, whatever their lengths.

    A new hint/name entry is written into the file padding after the data of
    the section that holds the old one (growing its VirtualSize over it), and
    the import's lookup and address table slots are pointed at it.
    """
    pe = reparse(data)
    for entry in pe.DIRECTORY_ENTRY_IMPORT:
        for imp in entry.imports:
            if imp.name is not None and imp.name.decode() == old:
                section = pe.get_section_by_rva(imp.hint_name_table_rva)
                rva = (section.VirtualAddress + section.Misc_VirtualSize + 1) & ~1
                entry_bytes = b"\0\0" + new.encode() + b"\0"
                end = rva + len(entry_bytes) - section.VirtualAddress
                if end > section.SizeOfRawData:
                    raise AssertionError(f"no room in {section.Name!r} for a new import name")
                section.Misc_VirtualSize = end
                pe.set_bytes_at_rva(rva, entry_bytes)
                imp.struct_table.AddressOfData = rva
                # On disk the IAT slot holds the same hint/name RVA as the ILT.
                pe.set_qword_at_rva(imp.address - pe.OPTIONAL_HEADER.ImageBase, rva)
                return with_valid_checksum(bytes(pe.write()))
    raise AssertionError(f"{old} is not imported")


def write_allow_list(directory: str, names: set[str]) -> Path:
    path = Path(directory) / "imports.allow"
    path.write_text("".join(f"{name}  # test\n" for name in sorted(names)), encoding="utf-8")
    return path


class CheckImageTests(unittest.TestCase):
    data: bytes
    allowed: set[str]  # exactly the image's imports

    @classmethod
    def setUpClass(cls) -> None:
        if not IMAGE.is_file():
            raise AssertionError(f"{IMAGE} does not exist: build it with tests/cross/build-sys.sh")
        cls.data = IMAGE.read_bytes()
        cls.allowed = {name for _, name, _ in imported_names(cls.data)} - check_image.DENIED.keys()

    def codes(self, data: bytes, allowed: set[str] | None = None) -> set[str]:
        failures = check_image.check(data, self.allowed if allowed is None else allowed)
        return {failure.code for failure in failures}

    def assert_only(self, data: bytes, code: str, allowed: set[str] | None = None) -> None:
        self.assertEqual(self.codes(data, allowed), {code})

    # --- the real image --------------------------------------------------------

    def test_untouched_image_passes(self) -> None:
        failures = check_image.check(self.data, check_image.load_allow_list(ALLOW_LIST))
        self.assertEqual(failures, [], "\n".join(map(str, failures)))

    def test_untouched_image_passes_with_own_imports(self) -> None:
        failures = check_image.check(self.data, self.allowed)
        self.assertEqual(failures, [], "\n".join(map(str, failures)))

    def test_command_line_exit_codes(self) -> None:
        script = str(HERE / "check_image.py")
        with tempfile.TemporaryDirectory() as tmp:
            allow = str(write_allow_list(tmp, self.allowed))
            ok = subprocess.run([sys.executable, script, "--allow", allow, str(IMAGE)],
                                capture_output=True, text=True)
            bad = Path(tmp) / "bad.sys"
            bad.write_bytes(edit(self.data, lambda pe: setattr(pe.OPTIONAL_HEADER, "Subsystem", 2)))
            res = subprocess.run([sys.executable, script, "--allow", allow, str(bad)],
                                 capture_output=True, text=True)
            missing = subprocess.run([sys.executable, script, "--allow", "/nonexistent", str(IMAGE)],
                                     capture_output=True, text=True)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        self.assertEqual(res.returncode, 1)
        self.assertIn("[subsystem]", res.stderr)
        self.assertEqual(missing.returncode, 2)

    def test_tampering_helpers_keep_image_valid(self) -> None:
        # A no-op edit must still pass, or the tests below prove nothing.
        self.assertEqual(self.codes(edit(self.data, lambda pe: None)), set())

    # --- tampered copies ---------------------------------------------------------

    def test_broken_checksum(self) -> None:
        def bump(pe: pefile.PE) -> None:
            pe.OPTIONAL_HEADER.CheckSum = (pe.OPTIONAL_HEADER.CheckSum + 1) & 0xFFFFFFFF
        self.assert_only(edit(self.data, bump, fix_checksum=False), "checksum")

    def test_zero_checksum(self) -> None:
        data = edit(self.data, lambda pe: setattr(pe.OPTIONAL_HEADER, "CheckSum", 0), fix_checksum=False)
        self.assert_only(data, "checksum")

    def test_subsystem_windows_gui(self) -> None:
        self.assert_only(edit(self.data, lambda pe: setattr(pe.OPTIONAL_HEADER, "Subsystem", 2)), "subsystem")

    def test_force_integrity_cleared(self) -> None:
        def clear(pe: pefile.PE) -> None:
            pe.OPTIONAL_HEADER.DllCharacteristics &= ~check_image.DLLCHAR_FORCE_INTEGRITY
        self.assert_only(edit(self.data, clear), "force-integrity")

    def test_nx_compat_cleared(self) -> None:
        def clear(pe: pefile.PE) -> None:
            pe.OPTIONAL_HEADER.DllCharacteristics &= ~check_image.DLLCHAR_NX_COMPAT
        self.assert_only(edit(self.data, clear), "nx-compat")

    def ex_dll_characteristics_entry(self, pe: pefile.PE):
        entries = [e for e in pe.DIRECTORY_ENTRY_DEBUG
                   if e.struct.Type == check_image.IMAGE_DEBUG_TYPE_EX_DLLCHARACTERISTICS]
        self.assertEqual(len(entries), 1, "the image should carry one extended DLL characteristics entry")
        return entries[0]

    def test_cet_compat_cleared(self) -> None:
        def clear(pe: pefile.PE) -> None:
            entry = self.ex_dll_characteristics_entry(pe)
            # pefile writes its decoded structures back over the bytes: edit the structure.
            entry.entry.ExDllCharacteristics &= ~check_image.DLLCHAR_EX_CET_COMPAT
        self.assert_only(edit(self.data, clear), "cet-compat")

    def test_cet_compat_entry_missing(self) -> None:
        def retype(pe: pefile.PE) -> None:
            self.ex_dll_characteristics_entry(pe).struct.Type = 16  # IMAGE_DEBUG_TYPE_REPRO
        data = edit(self.data, retype)
        self.assertIsNone(check_image.ex_dll_characteristics(reparse(data)))
        self.assert_only(data, "cet-compat")

    def test_writable_executable_section(self) -> None:
        def make_wx(pe: pefile.PE) -> None:
            text = next(s for s in pe.sections if s.Characteristics & check_image.SCN_MEM_EXECUTE)
            text.Characteristics |= check_image.SCN_MEM_WRITE
        self.assert_only(edit(self.data, make_wx), "wx-section")

    def test_machine_i386(self) -> None:
        self.assert_only(edit(self.data, lambda pe: setattr(pe.FILE_HEADER, "Machine", 0x14C)), "machine")

    def test_machine_arm64(self) -> None:
        self.assert_only(edit(self.data, lambda pe: setattr(pe.FILE_HEADER, "Machine", 0xAA64)), "machine")

    def test_entry_point_not_driver_entry(self) -> None:
        def move(pe: pefile.PE) -> None:
            pe.OPTIONAL_HEADER.AddressOfEntryPoint += 1
        self.assert_only(edit(self.data, move), "entry-point")

    def test_section_alignment(self) -> None:
        def realign(pe: pefile.PE) -> None:
            pe.OPTIONAL_HEADER.SectionAlignment = 0x2000
        self.assertIn("section-alignment", self.codes(edit(self.data, realign)))

    def test_import_renamed_to_unlisted_name(self) -> None:
        _, name, _ = imported_names(self.data)[0]
        new = name[:-1] + ("Y" if name[-1] != "Y" else "Z")  # same length, not allow-listed
        self.assertNotIn(new, self.allowed)
        self.assert_only(rename_import(self.data, name, new), "import-not-allowed")

    def test_allow_list_missing_an_import(self) -> None:
        for _, name, _ in imported_names(self.data):
            with self.subTest(missing=name):
                self.assert_only(self.data, "import-not-allowed", self.allowed - {name})

    def test_allow_list_file_missing_an_import(self) -> None:
        _, name, _ = imported_names(self.data)[0]
        with tempfile.TemporaryDirectory() as tmp:
            allow = write_allow_list(tmp, self.allowed - {name})
            res = subprocess.run(
                [sys.executable, str(HERE / "check_image.py"), "--allow", str(allow), str(IMAGE)],
                capture_output=True, text=True)
        self.assertEqual(res.returncode, 1)
        self.assertIn(f"[import-not-allowed] imports {name} from", res.stderr)
        self.assertIn("1 problem(s)", res.stderr)

    def test_real_allow_list_is_well_formed(self) -> None:
        names = check_image.load_allow_list(ALLOW_LIST)
        self.assertFalse(names & check_image.DENIED.keys())

    def test_denied_import_refused_even_if_allowed(self) -> None:
        denied = "IoCreateDeviceSecure"
        _, name, _ = imported_names(self.data)[0]
        data = retarget_import(self.data, name, denied)
        self.assertIn(denied, [n for _, n, _ in imported_names(data)])
        codes = self.codes(data, self.allowed | {denied})
        self.assertIn("import-denied", codes)
        self.assertIn("allow-list-denied", codes)
        self.assertNotIn("import-not-allowed", codes)

    def test_retargeted_import_to_unlisted_name(self) -> None:
        _, name, _ = imported_names(self.data)[-1]
        self.assert_only(retarget_import(self.data, name, "MmMapIoSpaceEx"), "import-not-allowed")

    def test_denied_name_in_allow_list_is_refused(self) -> None:
        self.assert_only(self.data, "allow-list-denied", self.allowed | {"IoCreateDeviceSecure"})

    def test_import_from_other_dll(self) -> None:
        data = self.data
        dll = reparse(data).DIRECTORY_ENTRY_IMPORT[0].dll
        offset = data.find(dll + b"\0")
        self.assertGreater(offset, 0)
        other = b"wdmsec.sys".ljust(len(dll), b"\0")
        data = with_valid_checksum(data[:offset] + other + data[offset + len(dll):])
        self.assertEqual(self.codes(data), {"import-dll"})

    def test_allow_list_entry_without_reason(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            allow = Path(tmp) / "imports.allow"
            allow.write_text("DbgPrint\n", encoding="utf-8")
            with self.assertRaises(check_image.AllowListError):
                check_image.load_allow_list(allow)

    def test_not_a_pe(self) -> None:
        self.assertEqual(self.codes(b"MZ" + b"\0" * 100), {"not-pe"})


if __name__ == "__main__":
    unittest.main()
