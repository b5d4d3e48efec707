#!/bin/sh
# Applies a HotMem kernel patch series to a kernel source tree.
#
# Usage: apply.sh SERIES_DIR SOURCE_TREE
#
# SERIES_DIR holds the patches (NNNN-*.patch, 0000 being the cover letter)
# and BASE, which names the kernel version and the sha256 of the top-level
# Makefile of the tree the series was made against. A tree with another
# version or Makefile is refused, and so is a tree the series does not apply
# to cleanly: nothing is changed unless every patch applies.
set -eu

die() {
	echo "apply.sh: $*" >&2
	exit 1
}

[ $# -eq 2 ] || die "usage: apply.sh SERIES_DIR SOURCE_TREE"
series=$(cd "$1" 2>/dev/null && pwd) || die "no series directory: $1"
tree=$2
[ -f "$series/BASE" ] || die "$series has no BASE file"
[ -f "$tree/Makefile" ] || die "$tree is not a kernel source tree (no Makefile)"

base_field() {
	value=$(sed -n "s/^$1: //p" "$series/BASE")
	[ -n "$value" ] || die "$series/BASE has no $1"
	echo "$value"
}

expected_version=$(base_field version)
expected_makefile=$(base_field makefile-sha256)
actual_version=$(awk '
	/^VERSION =/ { v = $3 }
	/^PATCHLEVEL =/ { p = $3 }
	/^SUBLEVEL =/ { s = $3 }
	/^EXTRAVERSION =/ { e = $3 }
	END { print v "." p "." s e }' "$tree/Makefile")
[ "$actual_version" = "$expected_version" ] ||
	die "$tree is Linux $actual_version, the series needs $expected_version"
actual_makefile=$(sha256sum "$tree/Makefile" | cut -d' ' -f1)
[ "$actual_makefile" = "$expected_makefile" ] ||
	die "$tree/Makefile has sha256 $actual_makefile, BASE expects $expected_makefile"

patches=$(find "$series" -maxdepth 1 -name '[0-9][0-9][0-9][0-9]-*.patch' ! -name '0000-*' | sort)
[ -n "$patches" ] || die "no patches in $series"

# Paths are relative to the tree; keep git from treating an enclosing
# repository as the root.
cd "$tree"
GIT_CEILING_DIRECTORIES=$(dirname "$(pwd)")
export GIT_CEILING_DIRECTORIES

# git apply applies a patch entirely or not at all. Later patches modify
# files earlier ones create, so they go one at a time; if one fails, the
# ones already applied are reverted, newest first, leaving the tree as it was.
applied=
for patch in $patches; do
	if ! git apply "$patch"; then
		for done_patch in $applied; do
			git apply -R "$done_patch" ||
				die "could not revert $(basename "$done_patch"); $tree is partly patched"
		done
		die "$(basename "$patch") does not apply to $tree; the tree is unchanged"
	fi
	applied="$patch $applied"
done
echo "apply.sh: applied $(echo "$patches" | wc -l) patches to $tree"
