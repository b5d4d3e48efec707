#!/usr/bin/env bash
# Installs everything HotMem's build, test bed and tests need on a Debian 12 machine (as root):
# QEMU, static busybox, the kernel build toolchain with ccache, Debian's 6.12 kernel source,
# valgrind for the addon's memory checks, crun for the OCI hook suite; then the npm dependencies.
#
# linux-source-6.12: an installed one is kept, whatever its point release (apply.sh takes any
# 6.12 sublevel the series applies to). Otherwise the version the series was made on
# (kernel-patches/v6.12/BASE) while Debian's archive still offers it, and the newest if not.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*" >&2; }
installed() { dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

packages=(
	qemu-system-x86 busybox-static cpio
	build-essential flex bison bc libelf-dev libssl-dev ccache kmod rsync xz-utils zstd
	valgrind crun
)
missing=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
source_package=linux-source-6.12
installed "$source_package" || missing+=("$source_package")

if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" = 0 ] || { say "run as root to install packages: ${missing[*]}"; exit 1; }
	apt-get update -qq
	if [ "${missing[-1]}" = "$source_package" ]; then
		recorded=$(sed -n 's/^debian-package: //p' kernel-patches/v6.12/BASE)
		if apt-cache madison "$source_package" | awk -F' *[|] *' '{ print $2 }' | grep -qxF "$recorded"; then
			missing[-1]=$source_package=$recorded
			say "$source_package: installing $recorded, the version the HotMem series was made on"
		else
			newest=$(apt-cache policy "$source_package" | sed -n 's/^ *Candidate: //p')
			[ -n "$newest" ] && [ "$newest" != "(none)" ] ||
				{ say "Debian's archive offers no $source_package (is a bookworm-security or trixie source listed?)"; exit 1; }
			say "$source_package: Debian no longer offers $recorded; installing the newest, $newest"
		fi
	fi
	say "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
say "$source_package $(dpkg-query -W -f='${Version}' "$source_package") is installed; the series was made on $(sed -n 's/^version: //p' kernel-patches/v6.12/BASE)"
npm ci --no-audit --no-fund
