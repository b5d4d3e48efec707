#!/usr/bin/env bash
# Check a kernel patch series one patch at a time: each applies, passes checkpatch and builds.
#
# usage: check-series.sh --source DIR --patches DIR [--config FRAGMENT]... [--jobs N]
#                        [--no-build | --build-from N]
#
#   --source DIR      the pristine tree the series is made against (the series' BASE names it)
#   --patches DIR     the series, e.g. kernel-patches/v6.12; its cover letter (0000) is skipped
#   --config FILE     an extra config fragment, merged after scripts/kernel/guest.config and
#                     kernel-patches/hotmem.config
#   --jobs N          build with make -jN (default: the number of CPUs)
#   --no-build        apply and checkpatch only
#   --build-from N    build patch N and those after it only; the earlier ones are applied and
#                     checkpatched (for a new revision that kept a prefix already built)
#
# The source is copied to $HOTMEM_CACHE/series-check/NAME (default ~/.cache/hotmem, NAME the
# series directory's name): a stable path, so that ccache hits from one run to the next. Each
# patch is applied with kernel-patches/apply.sh, checked with the tree's scripts/checkpatch.pl
# --strict and built (bzImage, incrementally, in the tree's build/ directory, which is
# configured at the first patch it builds, the way scripts/build-kernel.sh configures, see
# scripts/kernel/kbuild.sh, and brought up to date with olddefconfig after each later one).
# One line per patch on stdout:
#
#   PATCH n/N <subject>: checkpatch OK|N errors, build OK|FAILED (s)
#
# with checkpatch's warnings and checks counted in parentheses. Its reports and the build logs
# stay in $HOTMEM_CACHE/series-check/NAME.logs. Exits 1 if a patch does not apply, has checkpatch
# errors or does not build (warnings do not fail: the cover letter justifies those), 2 on bad
# usage.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(dirname "$here")
cache=${HOTMEM_CACHE:-$HOME/.cache/hotmem}
# shellcheck source-path=SCRIPTDIR source=kernel/kbuild.sh
. "$here/kernel/kbuild.sh"

source_dir=
patches=
fragments=("$here/kernel/guest.config" "$project/kernel-patches/hotmem.config")
jobs=$(nproc)
build_from=1

usage() { echo "check-series: $*" >&2; exit 2; }
log() { echo "[check-series $(date +%T)] $*" >&2; }

while [ $# -gt 0 ]; do
	case $1 in
	--source) source_dir=${2:?--source needs a directory}; shift 2 ;;
	--patches) patches=${2:?--patches needs a directory}; shift 2 ;;
	--config) fragments+=("${2:?--config needs a file}"); shift 2 ;;
	--jobs) jobs=${2:?--jobs needs a number}; shift 2 ;;
	--no-build) build_from=0; shift ;;
	--build-from) build_from=${2:?--build-from needs a patch number}; shift 2 ;;
	-h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) usage "unknown argument '$1' (see --help)" ;;
	esac
done
[ -n "$source_dir" ] && [ -n "$patches" ] || usage "--source and --patches are required (see --help)"
[ -f "$source_dir/Makefile" ] && [ -d "$source_dir/mm" ] || usage "'$source_dir' is not a kernel source tree"
[ -f "$patches/BASE" ] || usage "'$patches' is not a patch series (no BASE)"
[[ $jobs =~ ^[1-9][0-9]*$ ]] || usage "--jobs needs a positive number, not '$jobs'"
[[ $build_from =~ ^[0-9]+$ ]] || usage "--build-from needs a patch number, not '$build_from'"
for f in "${fragments[@]}"; do [ -r "$f" ] || usage "config fragment '$f' not readable"; done
source_dir=$(cd "$source_dir" && pwd)
patches=$(cd "$patches" && pwd)
mapfile -t series < <(find "$patches" -maxdepth 1 -name '[0-9][0-9][0-9][0-9]-*.patch' ! -name '0000-*' | LC_ALL=C sort)
[ ${#series[@]} -gt 0 ] || usage "no patches in '$patches' besides a cover letter"
[ "$build_from" -le ${#series[@]} ] ||
	usage "--build-from $build_from: the series has ${#series[@]} patches"

name=$(basename "$patches")
work=$cache/series-check
tree=$work/$name
logs=$work/$name.logs
mkdir -p "$work"
exec 9>"$work/$name.lock"
flock -n 9 || usage "another check of $name is running ($work/$name.lock)"

log "copying $source_dir to $tree"
rm -rf "$tree" "$logs" && mkdir -p "$logs"
cp -a "$source_dir" "$tree"
kbuild_ccache "$cache" "$tree"

# The subject of a patch, unfolded, without its [PATCH n/N] prefix.
subject() {
	awk '/^Subject: / { s = substr($0, 10); while ((getline l) > 0 && l ~ /^[ \t]/) s = s l; print s; exit }' "$1" |
		sed 's/^\[[^]]*\] *//'
}

# "1 warning", "2 warnings"
count() { if [ "$1" = 1 ]; then echo "1 $2"; else echo "$1 ${2}s"; fi; }

# "OK", "OK (2 warnings, 1 check)" or "3 errors, 2 warnings, 0 checks"; status 1 on errors.
# A tree checkpatch.pl does not recognise (6.6's wants a README) is checked with --no-tree.
checkpatch() {
	local report=$1 counts errors warnings checks
	(cd "$tree" && ./scripts/checkpatch.pl --strict "$2") >"$report" 2>&1 || true
	if grep -q '^Must be run from the top-level dir' "$report"; then
		echo "(checkpatch.pl does not recognise the tree: run with --no-tree)" >"$report"
		(cd "$tree" && ./scripts/checkpatch.pl --strict --no-tree "$2") >>"$report" 2>&1 || true
	fi
	counts=$(sed -n 's/^total: \([0-9]*\) errors, \([0-9]*\) warnings, \([0-9]*\) checks.*/\1 \2 \3/p' "$report")
	[ -n "$counts" ] || { echo "FAILED to run"; return 1; }
	read -r errors warnings checks <<<"$counts"
	if [ "$errors" -gt 0 ]; then
		echo "$(count "$errors" error), $(count "$warnings" warning), $(count "$checks" check)"
		return 1
	elif [ "$warnings" -gt 0 ] || [ "$checks" -gt 0 ]; then
		echo "OK ($(count "$warnings" warning), $(count "$checks" check))"
	else
		echo "OK"
	fi
}

# Builds bzImage in $tree/build: Kbuild names the tree "..", as in build-kernel.sh's builds.
# The first build configures; later ones only take new Kconfig options in (olddefconfig).
build_patch() {
	local blog=$1 configured=$tree/build/.check-series-configured start status=0
	start=$(date +%s)
	{
		if [ -f "$configured" ]; then
			kmake "$tree" "$tree/build" olddefconfig &&
				"$here/kernel/check-config.sh" "$tree/build/.config" "${fragments[@]}"
		else
			mkdir -p "$tree/build" && kconfigure "$tree" "$tree/build" "${fragments[@]}" &&
				touch "$configured"
		fi && kmake "$tree" "$tree/build" -j"$jobs" bzImage
	} >"$blog" 2>&1 || status=1
	echo "$(($(date +%s) - start)) s"
	return "$status"
}

failed=0
n=0
for patch in "${series[@]}"; do
	n=$((n + 1))
	prefix="PATCH $n/${#series[@]} $(subject "$patch")"
	step=$logs/$(basename "$patch" .patch)
	# apply.sh checks the tree against BASE and applies all or nothing: give it this patch alone.
	one=$(mktemp -d)
	cp "$patches/BASE" "$patch" "$one/"
	if ! "$project/kernel-patches/apply.sh" "$one" "$tree" >"$step.apply.txt" 2>&1; then
		rm -rf "$one"
		echo "$prefix: apply FAILED ($(tail -1 "$step.apply.txt"))"
		failed=1
		break
	fi
	rm -rf "$one"
	line="$prefix: checkpatch "
	line+=$(checkpatch "$step.checkpatch.txt" "$patch") || failed=1
	if [ "$build_from" -gt 0 ] && [ "$n" -ge "$build_from" ]; then
		if result=$(build_patch "$step.build.log"); then
			line+=", build OK ($result)"
		else
			line+=", build FAILED ($result, log: $step.build.log)"
			failed=1
		fi
	else
		line+=", build skipped"
	fi
	echo "$line"
done
exit "$failed"
