#!/usr/bin/env python3
"""Make an extracted, unmodified wdk-build source tree compile on a Linux host.

Usage: patch_wdk_build.py DIR

DIR is a fresh extraction of the wdk-build .crate from the cargo registry cache
(tests/cross/build-sys.sh does that under target/cross/). Nothing of wdk-build
is stored in this repository: the edits below are applied at build time.

wdk-build only builds on Windows hosts, for three reasons, each fixed here:
  1. its `windows` dependency (registry access) drags in crates that do not
     compile on Linux -> make it a cfg(windows) dependency;
  2. utils.rs uses that crate for the WDK registry look-up and turns
     set_var/remove_var into a compile_error! off Windows -> gate the registry
     code on cfg(windows) (we always set WDKContentRoot) and let the env helpers
     exist on Unix too;
  3. cargo_make.rs calls the Windows-only symlink function -> route it through a
     small per-host helper.

Every edit must match exactly the expected number of times; otherwise the
script stops with an error (a newer wdk-build needs this script revisited).
"""

from __future__ import annotations

import sys
from pathlib import Path

MARK = "// [stagedrv linux-host fix]"

# (file, old, new, expected number of occurrences of `old`)
EDITS: list[tuple[str, str, str, int]] = [
    # 1. `windows` only for Windows hosts.
    (
        "Cargo.toml",
        "\n[dependencies.windows]\n",
        "\n[target.'cfg(windows)'.dependencies.windows]\n",
        1,
    ),
    (
        "Cargo.toml",
        "\n[dev-dependencies.windows]\n",
        "\n[target.'cfg(windows)'.dev-dependencies.windows]\n",
        1,
    ),
    # 2. utils.rs: registry code only on Windows; env helpers also on Unix.
    (
        "src/utils.rs",
        "\nuse windows::{",
        f"\n{MARK} registry access exists on Windows only\n#[cfg(windows)]\nuse windows::{{",
        1,
    ),
    (
        "src/utils.rs",
        "\nuse std::{",
        f"\n{MARK} some imports serve only the Windows registry code\n"
        "#![cfg_attr(not(windows), allow(unused_imports))]\n\nuse std::{",
        1,
    ),
    (
        "src/utils.rs",
        "\n    if let Some(path) = read_registry_key_string_value(",
        f"\n    {MARK}\n    #[cfg(windows)]\n    if let Some(path) = read_registry_key_string_value(",
        2,
    ),
    (
        "src/utils.rs",
        "\nfn read_registry_key_string_value(",
        f"\n{MARK}\n#[cfg(windows)]\nfn read_registry_key_string_value(",
        1,
    ),
    (
        "src/utils.rs",
        '\n#[cfg(target_os = "windows")]\npub fn set_var<',
        f"\n{MARK} on Unix too. Off Windows, callers must not have other threads\n"
        "// reading the environment; in wdk-build only the cargo-make helpers and\n"
        "// the tests call this.\n"
        '#[cfg(any(target_os = "windows", unix))]\npub fn set_var<',
        1,
    ),
    (
        "src/utils.rs",
        '\n#[cfg(not(target_os = "windows"))]\npub fn set_var<',
        f'\n{MARK}\n#[cfg(not(any(target_os = "windows", unix)))]\npub fn set_var<',
        1,
    ),
    (
        "src/utils.rs",
        '\n#[cfg(target_os = "windows")]\npub fn remove_var<',
        f'\n{MARK} on Unix too (see set_var).\n#[cfg(any(target_os = "windows", unix))]\npub fn remove_var<',
        1,
    ),
    (
        "src/utils.rs",
        '\n#[cfg(not(target_os = "windows"))]\npub fn remove_var<',
        f'\n{MARK}\n#[cfg(not(any(target_os = "windows", unix)))]\npub fn remove_var<',
        1,
    ),
    # 3. cargo_make.rs: per-host symlink.
    (
        "src/cargo_make.rs",
        "std::os::windows::fs::symlink_file(",
        "stagedrv_host_symlink_file(",
        2,
    ),
]

APPEND: dict[str, str] = {
    "src/cargo_make.rs": f"""
{MARK} create a file symlink with whatever the host offers.
#[cfg(windows)]
fn stagedrv_host_symlink_file(
    target: impl AsRef<std::path::Path>,
    link: impl AsRef<std::path::Path>,
) -> std::io::Result<()> {{
    std::os::windows::fs::symlink_file(target, link)
}}

{MARK}
#[cfg(unix)]
fn stagedrv_host_symlink_file(
    target: impl AsRef<std::path::Path>,
    link: impl AsRef<std::path::Path>,
) -> std::io::Result<()> {{
    std::os::unix::fs::symlink(target, link)
}}
""",
}


def read(path: Path) -> tuple[str, bool]:
    """Text with LF line ends, and whether the file used CRLF (kept on write)."""
    raw = path.read_bytes().decode("utf-8")
    return raw.replace("\r\n", "\n"), "\r\n" in raw


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    root = Path(argv[1])
    texts: dict[str, str] = {}
    crlf: dict[str, bool] = {}
    errors: list[str] = []
    for rel, old, new, expected in EDITS:
        text = texts.get(rel)
        if text is None:
            text, crlf[rel] = read(root / rel)
            if MARK in text:
                errors.append(f"{rel}: already patched (extract a fresh copy)")
        found = text.count(old)
        if found != expected:
            errors.append(f"{rel}: expected {expected} occurrence(s) of {old.strip()!r}, found {found}")
        texts[rel] = text.replace(old, new)
    for rel, extra in APPEND.items():
        text = texts.get(rel)
        if text is None:
            text, crlf[rel] = read(root / rel)
        texts[rel] = text.rstrip("\n") + "\n" + extra
    if errors:
        print("patch_wdk_build.py: this wdk-build does not look like the one the fix was written for:",
              file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    for rel, text in texts.items():
        if crlf[rel]:
            text = text.replace("\n", "\r\n")
        (root / rel).write_bytes(text.encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
