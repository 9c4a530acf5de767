#!/usr/bin/env bash
# Fails when source that is built for Windows names one of bindgen's numbered
# anonymous types (`_IRP__bindgen_ty_3__bindgen_ty_1` and the like).
#
#   tests/check-bindgen-names.sh [PATH...]
#
# Default paths: the Windows-built source (the driver's src/ and build.rs, the test
# app's tests/app/src/). tests/test-check-bindgen-names.sh is its negative test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

paths=("$@")
((${#paths[@]})) || paths=(src build.rs tests/app/src)
hits=$(grep -rnE --include='*.rs' '__bindgen_ty_[0-9]+' "${paths[@]}" || true)
if [[ -n $hits ]]; then
    echo "$hits"
    cat >&2 <<'MSG'
check-bindgen-names: the lines above name bindgen's numbered anonymous types. bindgen
numbers anonymous unions and structs in declaration order, so the same name denotes a
different type under another header set (the WDK's IRP has two anonymous unions that
mingw-w64's lacks): the build breaks, or compiles with a wrong offset. Use field paths
instead, e.g. core::mem::offset_of!(IRP, Tail.Overlay.__bindgen_anon_2.ListEntry).
MSG
    exit 1
fi
echo "check-bindgen-names: no bindgen anonymous type names in ${paths[*]}"
