#!/usr/bin/env bash
# Cross-builds the VM guest client for Windows on this Linux host and lints it:
#
#   tests/vm/build-guest.sh [extra cargo args]   ->  target/vm/stageguest.exe
#
# - no standard library (tests/vm/guest/src/main.rs says why): Debian's rustc 1.96
#   (rustc-web) with -Zbuild-std=core,alloc for x86_64-pc-windows-msvc, like the
#   driver (tests/cross/build-sys.sh), linked by lld-link; the imports come from
#   windows-sys's raw-dylib declarations, so no import library is needed;
# - the same deny-level workspace lints as the host code, with Debian's clippy for
#   the Windows target (the host's `cargo clippy` sees only the host build);
# - --locked: the Windows build must not change Cargo.lock.
# Clean ~60 s, no-op ~2 s. Environment: CROSS_CARGO (default /usr/bin/cargo).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
triple=x86_64-pc-windows-msvc
cargo=${CROSS_CARGO:-/usr/bin/cargo}
out=$root/target/vm
t0=$(date +%s.%N)

"$root/tests/cross/ensure-apt.sh" rustc-web cargo-web rust-web-src rust-web-clippy lld-16

# Debian's rustc and its std source (as in build-sys.sh); RUSTC set explicitly or
# cargo runs rustup's proxy, which obeys rust-toolchain.toml.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER
cd "$root"
mkdir -p "$out"
common=(--locked -p stageguest --bin stageguest --release --target "$triple" --target-dir "$out/cargo"
    -Zbuild-std=core,alloc -Zbuild-std-features=compiler-builtins-mem
    --config "target.$triple.linker=\"lld-link-16\"")

lock_before=$(sha256sum Cargo.lock | cut -d' ' -f1)
status=0
"$cargo" build "${common[@]}" "$@" || status=$?
if ((status == 0)); then
    # Debian's cargo-clippy drives Debian's clippy-driver (matching rustc 1.96).
    PATH=/usr/bin:$PATH "$cargo" clippy --quiet "${common[@]}" -- -D warnings || status=$?
fi
lock_after=$(sha256sum Cargo.lock | cut -d' ' -f1)
if [[ $lock_before != "$lock_after" ]]; then
    echo "build-guest: the Windows build changed Cargo.lock (git diff Cargo.lock); it must not" >&2
    exit 1
fi
((status == 0)) || exit "$status"

built=$out/cargo/$triple/release/stageguest.exe
[[ -f $built ]] || { echo "build-guest: expected $built" >&2; exit 1; }
cmp -s "$built" "$out/stageguest.exe" || cp "$built" "$out/stageguest.exe"
echo "build-guest: done in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s" >&2
echo "$out/stageguest.exe"
