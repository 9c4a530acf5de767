#!/usr/bin/env bash
# Cross-build the test app for Windows on this Linux host:
#
#   tests/wine/build-app.sh [extra cargo build args]   ->  target/wine/stagetest.exe
#
# - Debian's rustc 1.96 (rustc-web) with its own std source (rust-web-src), because
#   the tier-3 target x86_64-win7-windows-gnu has no prebuilt std: -Zbuild-std builds
#   it. That target's std does not import ProcessPrng from bcryptprimitives.dll,
#   which Wine 8.0 lacks (a program built for x86_64-pc-windows-gnu exits 53 there).
# - linker: mingw-w64's gcc (gcc-mingw-w64-x86-64).
# - The repository's Cargo.lock is used --locked: the Windows build must not change
#   it (all platforms' packages are locked already). The script checks that it is
#   byte-for-byte unchanged afterwards.
# - Everything it builds goes to target/wine/cargo; a rebuild with nothing changed
#   costs cargo's no-op check (about a second).
#
# Environment: CROSS_CARGO (default /usr/bin/cargo), WINE_APP_PROFILE (default dev).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
triple=x86_64-win7-windows-gnu
profile=${WINE_APP_PROFILE:-dev}
cargo=${CROSS_CARGO:-/usr/bin/cargo}
out=$root/target/wine
t0=$(date +%s.%N)

"$root/tests/cross/ensure-apt.sh" rustc-web cargo-web rust-web-src gcc-mingw-w64-x86-64

# /usr/bin/cargo would otherwise run rustup's rustc proxy from PATH, which obeys
# rust-toolchain.toml (1.95) and cannot build Debian's 1.96 std source.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS
cd "$root"
mkdir -p "$out"

lock_before=$(sha256sum Cargo.lock | cut -d' ' -f1)
status=0
"$cargo" build --locked -p stagetest --bin stagetest --profile "$profile" --target "$triple" \
    --target-dir "$out/cargo" \
    -Zbuild-std=std,panic_abort \
    --config "target.$triple.linker=\"x86_64-w64-mingw32-gcc\"" \
    "$@" || status=$?
lock_after=$(sha256sum Cargo.lock | cut -d' ' -f1)
if [[ $lock_before != "$lock_after" ]]; then
    echo "build-app: the Windows build changed Cargo.lock (git diff Cargo.lock); it must not" >&2
    exit 1
fi
((status == 0)) || exit "$status"

dir=$profile
[[ $profile == dev ]] && dir=debug
built=$out/cargo/$triple/$dir/stagetest.exe
[[ -f $built ]] || { echo "build-app: expected $built" >&2; exit 1; }
cmp -s "$built" "$out/stagetest.exe" || cp "$built" "$out/stagetest.exe"
echo "build-app: done in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s" >&2
echo "$out/stagetest.exe"
