#!/usr/bin/env bash
# Counts the `unsafe` keyword (blocks, fns, impls, extern blocks, unsafe attributes)
# in the driver's source, inside and outside the kernel layer (src/kernel/), and
# fails when the count outside exceeds MAX_OUTSIDE.
#
#   tests/check-unsafe.sh [SRC_DIR]      (default: src)
#
# MAX_OUTSIDE is 0: only src/kernel/ may use unsafe; the policy above it is safe Rust.
# Comments are ignored (a `// SAFETY:` line is not an unsafe operation).
# tests/test-check-unsafe.sh is its negative test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MAX_OUTSIDE=0
src=${1:-src}

# count FILE...: occurrences of the keyword `unsafe` outside `//` comments.
count() {
    (($#)) || { echo 0; return; }
    sed -e 's://.*$::' "$@" | { grep -oE '(^|[^A-Za-z0-9_])unsafe([^A-Za-z0-9_]|$)' || true; } | wc -l
}

mapfile -t inside < <(find "$src/kernel" -name '*.rs' 2>/dev/null | sort)
mapfile -t outside < <(find "$src" -name '*.rs' -not -path "$src/kernel/*" | sort)
n_inside=$(count "${inside[@]}")
n_outside=$(count "${outside[@]}")
echo "check-unsafe: $n_inside unsafe inside $src/kernel/, $n_outside outside it (allowed outside: $MAX_OUTSIDE)"
if ((n_outside > MAX_OUTSIDE)); then
    echo "check-unsafe: $n_outside unsafe outside $src/kernel/ exceeds $MAX_OUTSIDE; per file:" >&2
    for file in "${outside[@]}"; do
        n=$(count "$file")
        ((n == 0)) || echo "  $file: $n" >&2
    done
    echo "check-unsafe: move the unsafe operation into a safe abstraction in $src/kernel/" >&2
    exit 1
fi
