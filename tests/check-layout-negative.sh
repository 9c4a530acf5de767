#!/usr/bin/env bash
# Negative test of the layout contract (src/kernel/layout.rs): with
# `--cfg stagedrv_layout_selftest` the contract expects a wrong IRP size, and the
# driver must then fail to compile, naming the assertion.
#
# Only the driver crate gets the cfg (`cargo rustc` passes it to the last crate), and
# only in check mode (the assertions are evaluated at compile time, no code is
# generated): the first run checks ntsim once (~20 s here), later runs only the
# driver crate (~1 s).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The contract as it is compiles (so the failure below comes from the cfg alone).
cargo rustc --quiet -p stagedrv --lib --profile check
status=0
output=$(cargo rustc --quiet -p stagedrv --lib --profile check -- --cfg stagedrv_layout_selftest 2>&1) || status=$?
if ((status == 0)); then
    echo "check-layout-negative: the driver compiled although the contract expected a wrong IRP size" >&2
    exit 1
fi
if ! grep -q "evaluation panicked: layout: size of IRP" <<<"$output"; then
    echo "check-layout-negative: the build failed, but not on the layout assertion:" >&2
    echo "$output" >&2
    exit 1
fi
echo "check-layout-negative: a wrong expected IRP size fails the build: $(grep -m1 'evaluation panicked' <<<"$output")"
