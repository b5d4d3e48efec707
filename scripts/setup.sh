#!/usr/bin/env bash
# Installs everything HotMem's build, test bed and tests need on a Debian 12 machine (as root):
# QEMU, static busybox, the kernel build toolchain with ccache, Debian's 6.12 kernel source,
# valgrind for the addon's memory checks; then the npm dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
	qemu-system-x86 busybox-static cpio
	build-essential flex bison bc libelf-dev libssl-dev ccache kmod rsync xz-utils zstd
	linux-source-6.12
	valgrind
)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}" >&2
	[ "$(id -u)" = 0 ] || { echo "setup: run as root to install packages: ${missing[*]}" >&2; exit 1; }
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
npm ci --no-audit --no-fund
