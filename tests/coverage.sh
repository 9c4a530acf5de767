#!/usr/bin/env bash
# Line coverage of the driver (src/) by the host tests, with cargo-tarpaulin (ptrace
# engine: rustup cannot add llvm-tools here). Separate from tests/all.sh: it rebuilds
# everything instrumented and takes several minutes. The exploration runs fewer
# schedules here; coverage does not grow with more.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-tarpaulin >/dev/null || cargo install --locked cargo-tarpaulin
STAGEDRV_SCHEDULES=${STAGEDRV_SCHEDULES:-30} cargo tarpaulin \
    --packages stagedrv --include-files 'src/*' --exclude-files 'tests/*' \
    --target-dir target/coverage --skip-clean --timeout 600 \
    --out Stdout "$@"
