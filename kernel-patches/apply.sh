#!/bin/sh
# Applies a HotMem kernel patch series to a kernel source tree.
#
# Usage: apply.sh [--check] SERIES_DIR SOURCE_TREE
#
# SERIES_DIR holds the patches (NNNN-*.patch, 0000 being the cover letter)
# and BASE, which names the version the series was made on ("version"), the
# sha256 of that tree's top-level Makefile and the versions it was tested on.
#
# A tree of the base version must have the base's Makefile. A tree of another
# sublevel of the same major.minor (Debian moves 6.12.y every few weeks) is
# accepted when every patch applies to it, and the drift is said in one line;
# another major.minor is refused. Nothing is changed unless every patch
# applies; a patch that does not is named with git's report of the hunk.
#
# --check applies the series to a scratch copy of the files it touches and
# leaves SOURCE_TREE alone: whether the series still applies, without a copy
# of the whole tree.
set -eu

die() {
	echo "apply.sh: $*" >&2
	exit 1
}

check=0
if [ "${1:-}" = --check ]; then
	check=1
	shift
fi
[ $# -eq 2 ] || die "usage: apply.sh [--check] SERIES_DIR SOURCE_TREE"
series=$(cd "$1" 2>/dev/null && pwd) || die "no series directory: $1"
tree=$2
[ -f "$series/BASE" ] || die "$series has no BASE file"
[ -f "$tree/Makefile" ] || die "$tree is not a kernel source tree (no Makefile)"

base_field() {
	value=$(sed -n "s/^$1: //p" "$series/BASE")
	[ -n "$value" ] || die "$series/BASE has no $1"
	echo "$value"
}

base_version=$(base_field version)
base_makefile=$(base_field makefile-sha256)
tested_on=$(sed -n 's/^tested-on: //p' "$series/BASE")
tree_version=$("$(dirname "$0")/kernel-version.sh" "$tree")
drift=
if [ "$tree_version" = "$base_version" ]; then
	tree_makefile=$(sha256sum "$tree/Makefile" | cut -d' ' -f1)
	[ "$tree_makefile" = "$base_makefile" ] ||
		die "$tree/Makefile has sha256 $tree_makefile, BASE expects $base_makefile"
elif [ "${tree_version%.*}" = "${base_version%.*}" ]; then
	drift="the series was made on $base_version${tested_on:+ and tested on $tested_on}"
else
	die "$tree is Linux $tree_version; the series is for ${base_version%.*} (made on $base_version)"
fi

patches=$(find "$series" -maxdepth 1 -name '[0-9][0-9][0-9][0-9]-*.patch' ! -name '0000-*' | sort)
[ -n "$patches" ] || die "no patches in $series"
count=$(echo "$patches" | wc -l)

if [ "$check" = 1 ]; then
	scratch=$(mktemp -d)
	trap 'rm -rf "$scratch"' EXIT
	cp "$tree/Makefile" "$scratch/"
	# Every file a patch changes (files a patch creates are not in the tree).
	# shellcheck disable=SC2086 # $patches is a list of paths without spaces
	sed -n 's|^diff --git a/\([^ ]*\) b/.*|\1|p' $patches | sort -u | while read -r file; do
		[ -f "$tree/$file" ] || continue
		mkdir -p "$scratch/$(dirname "$file")"
		cp "$tree/$file" "$scratch/$file"
	done
	target=$scratch
else
	target=$tree
fi

# Paths are relative to the tree; keep git from treating an enclosing
# repository as the root.
cd "$target"
GIT_CEILING_DIRECTORIES=$(dirname "$(pwd)")
export GIT_CEILING_DIRECTORIES

# git apply applies a patch entirely or not at all. Later patches modify
# files earlier ones create, so they go one at a time; if one fails, the
# ones already applied are reverted, newest first, leaving the tree as it was.
# git's own report (-v: the hunk's context it searched for, and the file and
# line it was meant for) is passed on when a patch fails.
report=$(mktemp)
trap 'rm -rf "$report" ${scratch:+"$scratch"}' EXIT
applied=
for patch in $patches; do
	if ! git apply -v "$patch" >"$report" 2>&1; then
		grep -v -e '^Checking patch ' -e '^Hunk #[0-9]* succeeded' "$report" >&2 || true
		for done_patch in $applied; do
			git apply -R "$done_patch" ||
				die "could not revert $(basename "$done_patch"); $tree is partly patched"
		done
		die "$(basename "$patch") does not apply to $tree (Linux $tree_version${drift:+; $drift}); the tree is unchanged"
	fi
	applied="$patch $applied"
done

if [ "$check" = 1 ]; then
	what="all $count patches of $(basename "$series") apply to $tree, Linux $tree_version"
else
	what="applied $count patches of $(basename "$series") to $tree, Linux $tree_version"
fi
echo "apply.sh: $what${drift:+; $drift}"
