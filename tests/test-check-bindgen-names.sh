#!/usr/bin/env bash
# Negative test of tests/check-bindgen-names.sh: it must fail, saying why, on a file
# that names a bindgen anonymous type, and pass on the same code written with a field
# path.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

work=target/check-bindgen-names
rm -rf "$work"
mkdir -p "$work/bad" "$work/good"
cat >"$work/bad/queue.rs" <<'RS'
const OFFSET: usize = core::mem::offset_of!(IRP, Tail)
    + core::mem::offset_of!(_IRP__bindgen_ty_3__bindgen_ty_1__bindgen_ty_2, ListEntry);
RS
cat >"$work/good/queue.rs" <<'RS'
const OFFSET: usize = core::mem::offset_of!(IRP, Tail.Overlay.__bindgen_anon_2.ListEntry);
RS

status=0
output=$(tests/check-bindgen-names.sh "$work/bad" 2>&1) || status=$?
if ((status == 0)); then
    echo "test-check-bindgen-names: the check passed a file that names _IRP__bindgen_ty_3__bindgen_ty_1__bindgen_ty_2" >&2
    exit 1
fi
for expected in "bad/queue.rs:2:" "numbers anonymous unions and structs in declaration order" "Use field paths"; do
    if ! grep -qF "$expected" <<<"$output"; then
        echo "test-check-bindgen-names: the failure does not say '$expected':" >&2
        echo "$output" >&2
        exit 1
    fi
done
tests/check-bindgen-names.sh "$work/good" >/dev/null
echo "test-check-bindgen-names: the check fails on a numbered type name (with the reason) and passes a field path"
