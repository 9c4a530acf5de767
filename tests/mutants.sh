#!/usr/bin/env bash
# Builds the driver once per mutant (a classic race re-introduced on purpose) and
# checks that schedule exploration catches each one. STAGEDRV_MUTANT reaches only the
# driver package (build.rs), so the mutants share one target directory and the
# dependencies are built once; thin local LTO keeps each relink short. The normal
# build's target directory is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
for mutant in complete_after_null skip_cancel_recheck no_dpc_flush disconnect_before_dpc_flush link_after_complete no_work_item_wait stop_timer_in_routine; do
    echo "== mutant $mutant"
    output=$(STAGEDRV_MUTANT=$mutant CARGO_TARGET_DIR=target/mutants CARGO_PROFILE_RELEASE_LTO=false \
        cargo test --release --quiet --test mutants -- --nocapture 2>&1) || true
    echo "$output" | grep -E "caught at seed|panicked|test result" | cut -c1-300
    if ! echo "$output" | grep -q "test result: ok. 1 passed"; then
        echo "mutant $mutant was not caught"
        exit 1
    fi
done
