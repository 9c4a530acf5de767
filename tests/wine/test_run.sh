#!/usr/bin/env bash
# The Wine stage must fail when the driver misbehaves. For each variant this builds a
# deliberately broken driver from a patched COPY of the source tree (the repository
# is never touched), with the same cross-build script (tests/cross/build-sys.sh,
# pointed at the copy through STAGEDRV_PROJECT_DIR), runs tests/wine/run.sh on it,
# and asserts that run.sh fails *for the reason the breakage explains*: the failure
# must show the expected symptom, and the driver must otherwise have loaded
# ("DriverEntry: done"), so a driver that cannot run under Wine at all makes this
# test fail as inconclusive instead of passing.
#
#   tests/wine/test_run.sh [--source DIR] [VARIANT...]
#
#   --source DIR  tree to copy and break (default: this repository)
#   VARIANT       no-stage-6 (Unload skips stage 6: its log line is missing)
#                 read-never-completes (DispatchRead pends every read and forgets it)
#                 default: both
#
# The copy lives in target/wine/negative/src and keeps its own target/ between runs:
# the first build is a full cross-build (build-std + bindgen, minutes); later builds
# only recompile the driver crate.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
source_dir=$root
variants=()
while (($#)); do
    case $1 in
        --source) source_dir=$(cd "$2" && pwd); shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        -*) echo "test_run.sh: unknown option $1" >&2; exit 2 ;;
        *) variants+=("$1"); shift ;;
    esac
done
((${#variants[@]})) || variants=(no-stage-6 read-never-completes)
[[ -f $root/target/wine/stagetest.exe ]] || "$here/build-app.sh" >/dev/null

base=$root/target/wine/negative
copy=$base/src
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# refresh_copy: the copy becomes the source tree again (its target/ is kept).
refresh_copy() {
    mkdir -p "$copy"
    find "$copy" -mindepth 1 -maxdepth 1 ! -name target -exec rm -rf {} +
    tar -C "$source_dir" --exclude=./target --exclude=./.venv --exclude=./.git -cf - . | tar -C "$copy" -xf -
    # The driver's sources get the current time: a file the previous variant broke is
    # restored with its old time otherwise, and cargo would take the broken build for
    # up to date. (Only src/: a new time on Cargo.toml makes wdk-sys regenerate.)
    find "$copy/src" -type f -exec touch {} +
}

# patch FILE OLD NEW: replace the exact text OLD once; fail loudly if it is not there.
patch() {
    python3 - "$copy/$1" "$2" "$3" <<'EOF'
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
if text.count(old) != 1:
    sys.exit(f"test_run.sh: the breakage does not apply: {old!r} occurs {text.count(old)} times in {path}")
open(path, "w").write(text.replace(old, new))
EOF
}

failures=0
for variant in "${variants[@]}"; do
    t0=$(date +%s.%N)
    echo "=== negative variant: $variant"
    refresh_copy
    app_args=()
    case $variant in
        no-stage-6)
            patch src/unload.rs "    stage_6_remove_device_names(state);"$'\n' ""
            expect='Unload stage lines: \[1 2 3 4 5\]'
            ;;
        read-never-completes)
            # Every read is marked pending and dropped: no queue, no cancel routine.
            patch src/dispatch/read.rs \
                "pub fn read(extension: &DeviceExtension, mut irp: Irp) -> Dispatched {"$'\n' \
                "pub fn read(extension: &DeviceExtension, mut irp: Irp) -> Dispatched {"$'\n'"    // Broken on purpose: every read is marked pending and forgotten."$'\n'"    if core::hint::black_box(true) {"$'\n'"        let pending = irp.mark_pending();"$'\n'"        let _ = irp.into_raw();"$'\n'"        return pending.into();"$'\n'"    }"$'\n'
            # The app gives up on the first read that never completes.
            expect='did not finish within'
            app_args=(--scenario-timeout 5)
            ;;
        *) echo "test_run.sh: unknown variant $variant" >&2; exit 2 ;;
    esac
    t_build=$(date +%s.%N)
    if ! STAGEDRV_PROJECT_DIR=$copy "$root/tests/cross/build-sys.sh" >"$base/build-$variant.log" 2>&1; then
        echo "test_run.sh: $variant: the broken driver did not build:" >&2
        tail -n 30 "$base/build-$variant.log" >&2
        failures=$((failures + 1))
        continue
    fi
    echo "test_run.sh: $variant: built in $(since "$t_build")s"
    status=0
    "$here/run.sh" --sys "$copy/target/cross/stagedrv.sys" --work "$base/run-$variant" -- "${app_args[@]}" >"$base/run-$variant.log" 2>&1 || status=$?
    out=$base/run-$variant.log
    verdict=""
    if ((status == 0)); then
        verdict="run.sh PASSED on a broken driver"
    elif ! grep -q "^  stagedrv: DriverEntry: done" "$out"; then   # run.sh's lifecycle listing
        verdict="inconclusive: the driver did not even load under Wine (no \"DriverEntry: done\"), so this says nothing about the breakage"
    elif ! grep -q -- "$expect" "$out"; then
        verdict="run.sh failed, but without the expected symptom /$expect/"
    fi
    if [[ -n $verdict ]]; then
        echo "test_run.sh: $variant: FAIL: $verdict ($(since "$t0")s); run.sh said:"
        sed -n '/^run.sh: FAILED/,$p' "$out" | head -n 40 | sed 's/^/  /'
        failures=$((failures + 1))
    else
        echo "test_run.sh: $variant: ok: run.sh failed as it must ($(since "$t0")s):"
        sed -n '/^run.sh: FAILED/,/^run.sh: relevant/p' "$out" | grep '^  - ' | sed 's/^/  /'
    fi
done
((failures == 0)) || { echo "test_run.sh: $failures variant(s) failed"; exit 1; }
echo "test_run.sh: every broken variant made the Wine stage fail"
