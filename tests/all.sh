#!/usr/bin/env bash
# The project's test command: tests/all.sh
#
# Runs every stage in order and stops at the first failure (set KEEP_GOING=1
# to run the remaining stages anyway). Prints the time of each stage and the
# total. Works from a fresh clone on Debian 12 with rustup's toolchain: missing
# Debian packages and the Python venv (.venv) are installed on the way.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

results=()
failed=0
t_total=$(date +%s.%N)

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# stage NAME COMMAND...: run one stage, time it, record the verdict.
stage() {
    local name=$1; shift
    if ((failed)) && [[ ${KEEP_GOING:-0} != 1 ]]; then
        results+=("$(printf '%-24s skipped' "$name")")
        return 0
    fi
    echo
    echo "=== $name: $*"
    local t0 status=0
    t0=$(date +%s.%N)
    "$@" || status=$?
    local took; took=$(elapsed "$t0")
    if ((status == 0)); then
        echo "=== $name: ok (${took}s)"
        results+=("$(printf '%-24s ok      %6ss' "$name" "$took")")
    else
        echo "=== $name: FAILED with status $status (${took}s)"
        results+=("$(printf '%-24s FAILED  %6ss' "$name" "$took")")
        failed=1
    fi
}

# --- stage helpers ------------------------------------------------------------

apt_packages() {
    tests/cross/ensure-apt.sh \
        rustc-web cargo-web rust-web-src \
        lld-16 llvm-16 libclang-16-dev clang-16 \
        mingw-w64-x86-64-dev gcc-mingw-w64-x86-64 \
        wine64 osslsigncode python3-venv
}

# .venv from tests/cross/requirements.txt (pinned, hashed); reinstalled only
# when the requirements change. (Stage functions run in an `||` context where
# set -e is off: hence the explicit `|| return`.)
python_venv() {
    local python=/usr/bin/python3
    [[ -x $python ]] || python=python3
    local stamp=.venv/.stagedrv-requirements
    local want; want=$(sha256sum <tests/cross/requirements.txt | cut -d' ' -f1)
    if [[ ! -x .venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
        "$python" -m venv .venv || return
        .venv/bin/python -m pip install --quiet --disable-pip-version-check \
            --require-hashes -r tests/cross/requirements.txt || return
        echo "$want" >"$stamp"
    fi
    .venv/bin/python -c 'import pefile; print("pefile", pefile.__version__)'
}

# --- the stages -----------------------------------------------------------------

stage "apt packages"          apt_packages
stage "python venv"           python_venv
stage "host tests"            cargo test --workspace
stage "bindings up to date"   cargo run --quiet -p ntsim-gen -- --check
stage "format"                cargo fmt --all --check
stage "lints"                 cargo clippy --quiet --workspace --all-targets
# Windows-built source names no bindgen anonymous type (their numbering differs
# between header sets); then prove the check fires.
stage "bindgen type names"    tests/check-bindgen-names.sh
stage "bindgen names negative" tests/test-check-bindgen-names.sh
# `unsafe` outside the kernel layer (src/kernel/) may not grow (a ratchet towards 0).
stage "unsafe outside kernel" tests/check-unsafe.sh
stage "unsafe check negative" tests/test-check-unsafe.sh
stage "exploration (release)" env STAGEDRV_SCHEDULES=2000 cargo test --release --quiet --test explore
# A wrong expected value in the layout contract (src/kernel/layout.rs) fails the build.
stage "layout contract negative" tests/check-layout-negative.sh
stage "re-introduced races"   tests/mutants.sh
stage "cross-build .sys"      tests/cross/build-sys.sh
stage "image check"           .venv/bin/python tests/cross/check_image.py --list-imports target/cross/stagedrv.sys
stage "image check negatives" .venv/bin/python -m unittest tests/cross/test_check_image.py
stage "test-sign .sys"        tests/windows/sign-linux.sh
# The real .sys and the real test app under Wine 8.0 (tests/wine/README.md): build
# stagetest.exe, run the scenarios against the installed driver in one Wine session and
# check DriverEntry/Unload in Wine's log; then prove that stage fails for broken drivers
# (first run builds a copy of the tree: minutes; later runs about 25 s).
stage "wine: stagetest.exe"   tests/wine/build-app.sh
stage "wine: end-to-end"      tests/wine/run.sh
stage "wine: negatives"       tests/wine/test_run.sh
# The real .sys on a real NT kernel: ReactOS x64 under QEMU (tests/vm/README.md), driven
# by the guest client stageguest.exe; then one boot with three broken drivers, each of
# which must make that stage fail. The image is test data outside the repository
# (STAGEDRV_REACTOS_ISO, default ../shared/nt-vm/reactos-x64-livecd-autotest.iso):
# without it both VM runs print why and pass. About 2 minutes per boot (QEMU TCG).
stage "vm: tools"             tests/vm/ensure-tools.sh
stage "vm: stageguest.exe"    tests/vm/build-guest.sh
stage "vm: harness checks"    .venv/bin/python -m unittest tests/vm/test_vmharness.py
stage "vm: ReactOS run"       .venv/bin/python tests/vm/run.py
stage "vm: ReactOS negatives" .venv/bin/python tests/vm/test_vm.py

echo
echo "=== summary"
printf '  %s\n' "${results[@]}"
echo "  total $(elapsed "$t_total")s"
if ((failed)); then
    echo "tests/all.sh: FAILED"
    exit 1
fi
echo "tests/all.sh: all stages passed"
