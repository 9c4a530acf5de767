#!/usr/bin/env bash
# Installs what the VM harness needs from Debian, idempotently (nothing runs apt-get
# when everything is present):
#   - dosfstools, mtools, fdisk: the payload disk is made without root (mkfs.vfat
#     --offset, mcopy -i img@@offset, sfdisk on the image file);
#   - qemu-system-x86 (qemu-system-x86_64), without its recommends (GUI, audio...).
#
# qemu-system-x86 is Debian 12's 7.2. A qemu-utils from backports (10.x) declares
# "Breaks: qemu-system-common (<< 8.0)", so apt would remove it to install 7.2; instead
# qemu-utils is moved to the same 7.2 version (--allow-downgrades), which keeps qemu-img.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$here/../cross/ensure-apt.sh" dosfstools mtools fdisk

installed() { [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]; }
installed qemu-system-x86 && exit 0

sudo=()
[[ $(id -u) == 0 ]] || sudo=(sudo)
echo "ensure-tools: installing qemu-system-x86" >&2
"${sudo[@]}" apt-get update -q
want=(qemu-system-x86)
if installed qemu-utils; then
    candidate=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ { print $2 }')
    have=$(dpkg-query -W -f='${Version}' qemu-utils)
    if [[ -n $candidate && $have != "$candidate" ]]; then
        echo "ensure-tools: qemu-utils $have conflicts with qemu-system-x86 $candidate: installing qemu-utils $candidate" >&2
        want+=("qemu-utils=$candidate")
    fi
fi
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    --allow-downgrades "${want[@]}"
