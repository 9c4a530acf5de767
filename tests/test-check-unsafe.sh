#!/usr/bin/env bash
# Negative test of tests/check-unsafe.sh: on a copy of src/ with one more `unsafe`
# block outside src/kernel/ it must fail, naming the file; the same block inside
# src/kernel/, or the word in a comment, must not change the verdict.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

work=target/check-unsafe
rm -rf "$work"
mkdir -p "$work"

copy() { rm -rf "$work/$1"; cp -r src "$work/$1"; }
block=$'pub fn extra() -> u8 {\n    // SAFETY: a test line.\n    unsafe { core::ptr::read(&0u8) }\n}\n'

copy same
tests/check-unsafe.sh "$work/same" >/dev/null

copy outside
printf '%s' "$block" >"$work/outside/extra.rs"
status=0
output=$(tests/check-unsafe.sh "$work/outside" 2>&1) || status=$?
if ((status == 0)); then
    echo "test-check-unsafe: the check passed a tree with one more unsafe outside src/kernel/" >&2
    exit 1
fi
if ! grep -qF "$work/outside/extra.rs: 1" <<<"$output"; then
    echo "test-check-unsafe: the failure does not name the file with the extra unsafe:" >&2
    echo "$output" >&2
    exit 1
fi

copy inside
printf '%s' "$block" >"$work/inside/kernel/extra.rs"
tests/check-unsafe.sh "$work/inside" >/dev/null

copy comment
printf '// unsafe { in a comment }\n' >"$work/comment/extra.rs"
tests/check-unsafe.sh "$work/comment" >/dev/null

echo "test-check-unsafe: one more unsafe outside src/kernel/ fails the check (naming the file); inside it, or in a comment, it does not"
