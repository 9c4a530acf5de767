#!/usr/bin/env bash
# Mutation score of the driver's policy code (not part of tests/all.sh: it rebuilds the
# driver once per mutant, about 25 minutes for the whole policy on two cores).
#
#   tests/mutation-score.sh [FILE...] [-- extra cargo-mutants args, e.g. --shard 0/2]
#
# FILEs default to the driver's policy: every module outside src/kernel/ but lib.rs
# and the host-only probe.rs. `-- --shard k/n` runs the k-th of n slices.
# Each mutant is judged by the ntsim integration tests that run in seconds (read path,
# lifecycle, entry/unload, delivery, hardware, security, the proptest model); the
# exploration and the mutant builds are left out for time. Results: target/mutants/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

files=()
while (($#)) && [[ $1 != -- ]]; do
    files+=("$1")
    shift
done
[[ ${1:-} == -- ]] && shift
if ((${#files[@]} == 0)); then
    files=(src/queue.rs 'src/dispatch/*.rs' src/unload.rs src/consumer.rs src/watchdog.rs
        src/producer.rs src/statistics.rs src/ring.rs src/state.rs src/context.rs
        src/driver.rs src/device.rs src/config.rs 'src/hardware/*.rs' src/registry_entries.rs)
fi

command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants

args=(-p stagedrv --timeout 45 --build-timeout 900 -o target/mutants)
for file in "${files[@]}"; do
    args+=(-f "$file")
done
for test in read_path lifecycle entry_and_unload delivery hardware security model; do
    args+=("--cargo-test-arg=--test=$test")
done
exec cargo mutants "${args[@]}" "$@"
