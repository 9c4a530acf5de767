#!/usr/bin/env bash
# Negative test of the layout contract (src/layout.rs): with
# `--cfg stagedrv_layout_selftest` the contract expects a wrong IRP size, and the
# driver must then fail to compile, naming the assertion.
#
# Only the driver crate gets the cfg (`cargo rustc` passes it to the last crate), so
# its dependencies come from the target directory the exploration stage of
# tests/all.sh already built (same package selection and release-test profile):
# this costs one compile of the driver crate.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

status=0
output=$(cargo rustc --quiet -p stagedrv --lib --profile bench -- --cfg stagedrv_layout_selftest 2>&1) || status=$?
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
