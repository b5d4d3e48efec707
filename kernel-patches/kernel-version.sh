#!/bin/sh
# kernel-version.sh TREE: the version a kernel tree's top Makefile declares (6.12.117,
# 6.6.9-rc1), as `make kernelversion` prints it, without needing make or a configured tree.
set -eu
[ $# -eq 1 ] || { echo "usage: kernel-version.sh TREE" >&2; exit 2; }
[ -f "$1/Makefile" ] || { echo "kernel-version.sh: $1/Makefile: no such file" >&2; exit 1; }
awk '
	/^VERSION =/ { v = $3 }
	/^PATCHLEVEL =/ { p = $3 }
	/^SUBLEVEL =/ { s = $3 }
	/^EXTRAVERSION =/ { e = $3 }
	END { print v "." p "." s e }' "$1/Makefile"
