#!/usr/bin/env bash
# Build the kernel driver image target/cross/stagedrv.sys on a Linux (Debian 12)
# host: no Windows, no WDK, no third-party source committed.
#
#   tests/cross/build-sys.sh [extra cargo build args, e.g. -v]
#
# What it does (every step is skipped or cheap when its inputs did not change,
# so a second run only costs cargo's no-op check):
#   1. makes sure the Debian packages it needs are installed;
#   2. `cargo fetch` so the registry cache holds the locked wdk-build .crate;
#   3. extracts that wdk-build into target/cross/wdk-build and applies the
#      Linux-host fix (tests/cross/patch_wdk_build.py);
#   4. assembles a WDKContentRoot under target/cross/wdk from mingw-w64's DDK
#      headers (+ tests/cross/wdm-shim.h) and import libraries made with
#      llvm-dlltool from .def files listing mingw-w64's ntoskrnl/hal exports;
#   5. cargo build --release for x86_64-pc-windows-msvc with Debian's rustc,
#      -Zbuild-std=core,alloc, lld-link as linker, the patched wdk-build via
#      [patch], host cfg `wdk_linux_cross` (enables the build-dependency), and a
#      private copy of Cargo.lock so the repository's Cargo.lock is not touched;
#   6. copies the image to target/cross/stagedrv.sys.
#
# Environment:
#   STAGEDRV_PROJECT_DIR  package to build (default: this repository)
#   CROSS_CARGO           cargo to drive the build (default: /usr/bin/cargo)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(cd "${STAGEDRV_PROJECT_DIR:-$here/../..}" && pwd)
out=$project/target/cross
crate=stagedrv
triple=x86_64-pc-windows-msvc
sdk_version=10.0.26100.0          # any "10.x.y.z" works; wdk-build only globs for it
llvm=16
mingw_include=/usr/share/mingw-w64/include
mingw_lib=/usr/x86_64-w64-mingw32/lib
cargo=${CROSS_CARGO:-/usr/bin/cargo}
cargo_home=${CARGO_HOME:-$HOME/.cargo}

t_start=$(date +%s.%N)
t_last=$t_start
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
step_name=""
step() { # step NAME: close the running step (print its time), start NAME
    local now; now=$(date +%s.%N)
    [[ -z $step_name ]] || echo "build-sys: $step_name: $(elapsed "$t_last" "$now")s" >&2
    [[ -z $1 ]] || echo "build-sys: $1 ..." >&2
    step_name=$1 t_last=$now
}

# --- 1. packages --------------------------------------------------------------
step "apt packages"
"$here/ensure-apt.sh" rustc-web cargo-web rust-web-src "lld-$llvm" "llvm-$llvm" \
    "libclang-$llvm-dev" "clang-$llvm" mingw-w64-x86-64-dev python3

# Debian's rustc matches Debian's library source (rust-web-src), which
# -Zbuild-std compiles; rustup's toolchains cannot build that source. Set RUSTC
# explicitly: cargo would otherwise run rustup's proxy from PATH.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
# These would replace (not extend) the +crt-static rustflags from .cargo/config.toml.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS \
    "CARGO_TARGET_$(tr a-z- A-Z_ <<<"$triple")_RUSTFLAGS"
cd "$project"   # cargo reads .cargo/config.toml from the working directory up
mkdir -p "$out"

# --- 2. registry cache --------------------------------------------------------
# Everything is downloaded here, so that the build itself can run --offline: with
# -Zbuild-std cargo also resolves the standard library's workspace, and with a
# [patch] present that resolve would query the crates.io index on every run.
step "cargo fetch"
"$cargo" fetch --quiet
"$cargo" fetch --quiet -Zbuild-std=core,alloc --target "$triple"
wdk_build_version=$(awk '
    /^\[\[package\]\]/ { pkg = 0 }
    /^name = "wdk-build"$/ { pkg = 1 }
    pkg && /^version = / { gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
[[ -n $wdk_build_version ]] || { echo "build-sys: no wdk-build in $project/Cargo.lock" >&2; exit 1; }
crate_file=$(ls "$cargo_home"/registry/cache/*/"wdk-build-$wdk_build_version.crate" 2>/dev/null | head -n1 || true)
[[ -f $crate_file ]] || { echo "build-sys: wdk-build-$wdk_build_version.crate not in $cargo_home/registry/cache" >&2; exit 1; }

# --- 3. wdk-build with the Linux-host fix -------------------------------------
step "wdk-build $wdk_build_version (Linux-host fix)"
wdk_build_dir=$out/wdk-build
wdk_build_key=$(cat "$crate_file" "$here/patch_wdk_build.py" | sha256sum | cut -d' ' -f1)
if [[ ! -d $wdk_build_dir || "$(cat "$out/wdk-build.key" 2>/dev/null)" != "$wdk_build_key" ]]; then
    rm -rf "$wdk_build_dir" "$wdk_build_dir.tmp" "$out/wdk-build.key"
    mkdir -p "$wdk_build_dir.tmp"
    tar -xzf "$crate_file" -C "$wdk_build_dir.tmp" --strip-components=1
    python3 "$here/patch_wdk_build.py" "$wdk_build_dir.tmp"
    mv "$wdk_build_dir.tmp" "$wdk_build_dir"
    echo "$wdk_build_key" >"$out/wdk-build.key"
fi

# --- 4. WDKContentRoot from mingw-w64 -------------------------------------------
# Layout wdk-build expects: Include/<ver>/{km,km/crt,shared}, Lib/<ver>/km/x64.
# The tree is generated into a scratch directory and swapped in only when it
# differs, so unchanged headers keep their timestamps (bindgen's
# rerun-if-changed would otherwise regenerate wdk-sys on every run).
step "WDKContentRoot (mingw-w64)"
wdk=$out/wdk
new=$out/wdk.tmp
rm -rf "$new"
inc=$new/Include/$sdk_version
lib=$new/Lib/$sdk_version/km/x64
mkdir -p "$inc/km/crt" "$lib"
for header in "$mingw_include"/ddk/*.h; do
    [[ $(basename "$header") == wdm.h ]] || ln -s "$header" "$inc/km/"
done
cp "$here/wdm-shim.h" "$inc/km/stagedrv-wdm-shim.h"
cat >"$inc/km/wdm.h" <<EOF
/* Generated by tests/cross/build-sys.sh: mingw-w64's wdm.h, then tests/cross/wdm-shim.h. */
#include "$mingw_include/ddk/wdm.h"
#include "stagedrv-wdm-shim.h"
EOF
ln -s "$mingw_include" "$inc/shared"

# make_def ARCHIVE DLLNAME [EXTRA_EXPORT...]: a .def listing every import in a
# mingw-w64 import library. Exports with only an __imp_ pointer (no call thunk)
# are data (PsThreadType, IoDeviceObjectType...) and are marked CONSTANT: the
# import library then gives no code symbol for them, and the bare name is the
# import-table slot, as in the WDK's ntoskrnl.lib, so that `*PsThreadType` (wdm.h:
# `extern POBJECT_TYPE *PsThreadType;`, no dllimport) reads the kernel's variable.
make_def() {
    local archive=$1 dll=$2; shift 2
    printf 'LIBRARY %s\nEXPORTS\n' "$dll"
    {
        "llvm-nm-$llvm" --defined-only "$archive" | awk '
            $2 == "T" { code[$3] = 1 }
            $2 == "I" && $3 ~ /^__imp_/ { imp[substr($3, 7)] = 1 }
            END { for (n in imp) print n (n in code ? "" : " CONSTANT") }'
        for extra in "$@"; do echo "$extra"; done
    } | LC_ALL=C sort -u
}
make_def "$mingw_lib/libntoskrnl.a" ntoskrnl.exe ExAllocatePool2 >"$lib/ntoskrnl.def"
make_def "$mingw_lib/libhal.a" HAL.dll >"$lib/hal.def"
for name in ntoskrnl hal; do
    "llvm-dlltool-$llvm" -m i386:x86-64 -d "$lib/$name.def" -l "$lib/$name.lib"
done
# wdk-build links these too. The driver must not need anything from them
# (BufferOverflowFastFailK is MSVC /GS support, which rustc never emits; WMI
# would import from WMILIB.SYS, which tests/cross/check_image.py forbids), so
# empty archives: a stray reference fails at link time instead.
for name in BufferOverflowFastFailK wmilib; do
    printf '!<arch>\n' >"$lib/$name.lib"
done

if [[ -d $wdk ]] && diff -r --no-dereference "$wdk" "$new" >/dev/null 2>&1; then
    rm -rf "$new"
else
    rm -rf "$wdk"
    mv "$new" "$wdk"
fi

# --- 5. cargo build -------------------------------------------------------------
# Cargo.lock: the [patch] below rewrites wdk-build's entry, so cargo gets a
# private copy (-Zlockfile-path). It must not sit in a parent directory of the
# target directory: wdk-build looks for the workspace root by walking up from
# OUT_DIR to the first Cargo.lock.
step "cargo build ($triple)"
# Refreshed only when the repository's lock changed: re-locking the patch makes
# cargo query the crates.io index, which a no-op rebuild should not need.
mkdir -p "$out/lock"
if ! cmp -s Cargo.lock "$out/lock/Cargo.lock.orig" || [[ ! -f $out/lock/Cargo.lock ]]; then
    cp Cargo.lock "$out/lock/Cargo.lock"
    cp Cargo.lock "$out/lock/Cargo.lock.orig"
fi

export WDKContentRoot=$wdk
export LIBCLANG_PATH=/usr/lib/llvm-$llvm/lib
# -fgnuc-version: without it mingw-w64's _mingw.h defines __attribute__ away in
# MSVC mode. -idirafter: clang's own headers (mm_malloc.h...); wdk-build turns
# bindgen's include-path detection off.
export BINDGEN_EXTRA_CLANG_ARGS="-fgnuc-version=12.0 -Wno-everything -idirafter /usr/lib/llvm-$llvm/lib/clang/$llvm/include"

# Cargo prints "warning: patch `wdk-build ...` was not used in the crate graph":
# that is the standard library's resolve (no wdk-build there). The driver's graph
# does use the patched copy (the registry one cannot compile on Linux).
echo "build-sys: (expect cargo's 'patch wdk-build was not used' warning: it comes from" \
    "-Zbuild-std's resolve of the standard library, not from the driver's graph)" >&2
"$cargo" build --offline --release --lib -p "$crate" --target "$triple" \
    --target-dir "$out/cargo" \
    -Zbuild-std=core,alloc -Zbuild-std-features=compiler-builtins-mem \
    -Zhost-config -Ztarget-applies-to-host -Zlockfile-path \
    --config 'target-applies-to-host=false' \
    --config 'host.rustflags=["--cfg", "wdk_linux_cross"]' \
    --config "target.$triple.linker=\"lld-link-$llvm\"" \
    --config "patch.crates-io.wdk-build.path=\"$wdk_build_dir\"" \
    --config "resolver.lockfile-path=\"$out/lock/Cargo.lock\"" \
    "$@"

# --- 6. result ----------------------------------------------------------------------
step "copy image"
built=$out/cargo/$triple/release/$crate.dll
[[ -f $built ]] || { echo "build-sys: expected $built after cargo build" >&2; exit 1; }
cmp -s "$built" "$out/$crate.sys" || cp "$built" "$out/$crate.sys"
step ""
now=$(date +%s.%N)
echo "build-sys: done in $(elapsed "$t_start" "$now")s" >&2
echo "$out/$crate.sys"
