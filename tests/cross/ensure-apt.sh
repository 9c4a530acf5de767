#!/usr/bin/env bash
# Usage: tests/cross/ensure-apt.sh PACKAGE...
#
# Installs the Debian packages among PACKAGE... that are not installed yet.
# Idempotent and cheap: when everything is present it only asks dpkg-query and
# never touches apt-get. Uses sudo only when not running as root.
set -euo pipefail

missing=()
for pkg in "$@"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [[ $status == installed ]] || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0

echo "ensure-apt: installing ${missing[*]}" >&2
sudo=()
[[ $(id -u) == 0 ]] || sudo=(sudo)
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
