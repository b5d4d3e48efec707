#!/usr/bin/env bash
# Build a guest kernel for the HotMem test bed, cached outside the checkout.
#
# usage: build-kernel.sh [--source DIR | --tarball FILE] [--patches DIR] [--config FRAGMENT]...
#                        [--debug] [--dry-run | --print-source]
#
#   --source DIR      kernel source tree (default: Debian's linux-source-6.12 tarball, unpacked
#                     into the cache)
#   --tarball FILE    the source tarball to unpack (default /usr/src/linux-source-6.12.tar.xz)
#   --patches DIR     apply this patch series (kernel-patches/vX.Y) with kernel-patches/apply.sh
#                     and merge kernel-patches/hotmem.config (CONFIG_HOTMEM) after any --config
#   --config FILE     an extra config fragment, merged after scripts/kernel/guest.config
#   --debug           also merge scripts/kernel/debug.config (lockdep, KASAN, DEBUG_VM)
#   --dry-run         print the build directory these options map to, and say on stderr
#                     whether it is built; build nothing
#   --print-source    print the source tree (unpacking the tarball if needed); build nothing
#
# The result is cached under $HOTMEM_CACHE (default ~/.cache/hotmem) keyed by the source's
# identity (a tarball's sha256), the patches, the fragments and the build recipe; a hit costs
# nothing. A tarball is unpacked once per digest, so a new Debian point release is a new
# source and a new key. Progress goes to stderr, and with $HOTMEM_BUILD_LOG set one line per
# call is appended to that file (cached, or built in N s). The last line on stdout is the
# build directory, holding arch/x86/boot/bzImage, .config, the exported uapi headers
# (usr/include), the modules when the config has CONFIG_MODULES and, in the file source-tree,
# the path of the (patched) source tree it was built from.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(dirname "$here")
cache=${HOTMEM_CACHE:-$HOME/.cache/hotmem}
tarball=/usr/src/linux-source-6.12.tar.xz
# Bump when a change to this script changes what a build produces.
recipe=3

source_dir=
patches=
fragments=("$here/kernel/guest.config")
debug=0
dry_run=0
print_source=0

die() { echo "build-kernel: $*" >&2; exit 1; }
log() { echo "[build-kernel $(date +%T)] $*" >&2; }
# One line per call in $HOTMEM_BUILD_LOG, for a run's summary of where its time went.
record() { [ -z "${HOTMEM_BUILD_LOG:-}" ] || echo "kernel $kernelversion $what: $*" >>"$HOTMEM_BUILD_LOG"; }
# shellcheck source-path=SCRIPTDIR source=kernel/kbuild.sh
. "$here/kernel/kbuild.sh"

# Trees take ~1.5 GiB each: drop those whose build nobody used for a week (a hit touches
# .hotmem-done), skipping any whose lock another build holds.
prune_stale_trees() {
	local done_file stale
	for done_file in "$cache"/trees/*/build/.hotmem-done; do
		[ -e "$done_file" ] || continue
		[ -n "$(find "$done_file" -mtime +7)" ] || continue
		stale=${done_file%/build/.hotmem-done}
		(flock -n 8 && log "pruning unused $stale" && rm -rf "$stale") 8>"$cache/kernels/${stale##*/}.lock" || true
	done
}

# Likewise unpacked tarballs nobody used for a week (Debian's older point releases).
prune_stale_sources() {
	local stamp stale
	for stamp in "$cache"/src/*/.hotmem-unpacked; do
		[ -e "$stamp" ] || continue
		[ -n "$(find "$stamp" -mtime +7)" ] || continue
		stale=${stamp%/.hotmem-unpacked}
		(flock -n 8 && log "pruning unused $stale" && rm -rf "$stale") 8>"$stale.lock" || true
	done
}

while [ $# -gt 0 ]; do
	case $1 in
	--source) source_dir=${2:?--source needs a directory}; shift 2 ;;
	--tarball) tarball=${2:?--tarball needs a file}; shift 2 ;;
	--patches) patches=${2:?--patches needs a directory}; shift 2 ;;
	--config) fragments+=("${2:?--config needs a file}"); shift 2 ;;
	--debug) debug=1; shift ;;
	--dry-run) dry_run=1; shift ;;
	--print-source) print_source=1; shift ;;
	-h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done
# A patched kernel without CONFIG_HOTMEM would only build the series' hooks, and look like a
# HotMem kernel that lost its /dev/hotmem.
[ -n "$patches" ] && fragments+=("$project/kernel-patches/hotmem.config")
[ "$debug" = 1 ] && fragments+=("$here/kernel/debug.config")
for f in "${fragments[@]}"; do [ -r "$f" ] || die "config fragment '$f' not readable"; done
if [ -n "$patches" ]; then
	[ -d "$patches" ] || die "patch series '$patches' is not a directory"
	patches=$(cd "$patches" && pwd)
	# The cover letter (0000) is not applied, and does not count.
	[ -n "$(find "$patches" -maxdepth 1 -name '[0-9][0-9][0-9][0-9]-*.patch' ! -name '0000-*' -print -quit)" ] ||
		die "no *.patch in '$patches' besides a cover letter"
fi
mkdir -p "$cache"

# Identity of the source tree: the tarball's digest, the git commit plus any local change, or
# (for a plain directory) every file's size and mtime.
if [ -z "$source_dir" ]; then
	[ -r "$tarball" ] || die "$tarball missing (scripts/setup.sh installs linux-source-6.12) and no --source given"
	digest=$(sha256sum "$tarball" | cut -d' ' -f1)
	source_id="tarball $digest"
	unpacked=$cache/src/${digest:0:16}
	mkdir -p "$cache/src"
	exec 8>"$unpacked.lock"
	flock 8
	if [ ! -f "$unpacked/.hotmem-unpacked" ]; then
		log "unpacking $tarball (sha256 ${digest:0:16})"
		rm -rf "$unpacked" && mkdir -p "$unpacked"
		tar -C "$unpacked" -xf "$tarball"
		echo "$digest" >"$unpacked/.hotmem-unpacked"
	fi
	touch "$unpacked/.hotmem-unpacked"
	exec 8>&-
	source_dir=$(find "$unpacked" -mindepth 2 -maxdepth 2 -name Makefile -printf '%h\n' -quit)
	[ -n "$source_dir" ] || die "$tarball holds no kernel source tree (no */Makefile)"
	prune_stale_sources
else
	[ -f "$source_dir/Makefile" ] && [ -d "$source_dir/mm" ] || die "'$source_dir' is not a kernel source tree"
	source_dir=$(cd "$source_dir" && pwd)
	if git -C "$source_dir" rev-parse --show-toplevel 2>/dev/null | grep -qx "$source_dir"; then
		source_id="git $(git -C "$source_dir" rev-parse HEAD) $(git -C "$source_dir" diff HEAD | sha256sum | cut -c1-16)"
	else
		source_id="tree $(cd "$source_dir" && find . -type f -printf '%P %s %T@\n' | LC_ALL=C sort | sha256sum | cut -c1-16)"
	fi
fi
if [ "$print_source" = 1 ]; then
	echo "$source_dir"
	exit 0
fi
kernelversion=$("$project/kernel-patches/kernel-version.sh" "$source_dir")

key_inputs=$(
	echo "source: $kernelversion $source_id"
	# Only what gets applied: the diffs, not the cover letter (0000) or the commit messages, so
	# that rewording a patch does not cost a kernel build.
	[ -n "$patches" ] && for p in "$patches"/[0-9][0-9][0-9][0-9]-*.patch; do
		case $(basename "$p") in 0000-*) continue ;; esac
		echo "patch: $(basename "$p") $(sed -n '/^diff --git /,$p' "$p" | sha256sum | cut -c1-16)"
	done
	for f in "${fragments[@]}"; do echo "fragment: $(basename "$f") $(sha256sum <"$f" | cut -c1-16)"; done
	echo "recipe: $recipe"
)
key=$(sha256sum <<<"$key_inputs" | cut -c1-16)
# Every build gets its own copy of the source and builds in a subdirectory of it: Kbuild then
# names the source tree "..", not by its absolute path, so the compiler's command lines
# (-fmacro-prefix-map) do not change with the copy's name, and ccache hits across revisions
# of a series for every file it leaves unchanged.
tree=$cache/trees/$kernelversion-$key
build=$tree/build
if [ "$dry_run" = 1 ]; then
	if [ -f "$build/.hotmem-done" ]; then log "built: $build"; else log "not built: $build"; fi
	echo "$build"
	exit 0
fi
mkdir -p "$cache/kernels"
what=$([ -n "$patches" ] && basename "$patches" || echo stock)$([ "$debug" = 0 ] || echo " debug")

exec 9>"$cache/kernels/$kernelversion-$key.lock"
flock 9
if [ -f "$build/.hotmem-done" ]; then
	touch "$build/.hotmem-done"
	log "cached: $build"
	record "cached"
	echo "$build"
	exit 0
fi
prune_stale_trees

log "copying $source_dir to $tree${patches:+ and applying $(basename "$patches")}"
rm -rf "$tree" && mkdir -p "$cache/trees"
cp -a "$source_dir" "$tree"
[ -z "$patches" ] || "$project/kernel-patches/apply.sh" "$patches" "$tree" >&2
mkdir -p "$build"
printf '%s\n' "$key_inputs" >"$build/key-inputs.txt"

kbuild_ccache "$cache" "$tree"
export CCACHE_STATSLOG=$build/ccache-stats.log
log "configuring $kernelversion: tinyconfig + ${fragments[*]##*/}"
kconfigure "$tree" "$build" "${fragments[@]}" || die "configuring failed (log: $build/config.log)"

targets=(bzImage headers)
# A fragment may make drivers modules (scripts/kernel/modular.config): build those too.
! grep -qx 'CONFIG_MODULES=y' "$build/.config" || targets+=(modules)
log "building ${targets[*]} with $(nproc) jobs (log: $build/build.log)"
start=$(date +%s)
echo "$tree" >"$build/source-tree"
kmake "$tree" "$build" -j"$(nproc)" "${targets[@]}" >"$build/build.log" 2>&1 &
make_pid=$!
while kill -0 "$make_pid" 2>/dev/null; do
	sleep 30 & wait $! || true
	kill -0 "$make_pid" 2>/dev/null && log "$(grep -c '^  CC ' "$build/build.log" || true) objects compiled, $(($(date +%s) - start)) s"
done
wait "$make_pid" || { tail -40 "$build/build.log" >&2; die "kernel build failed (log: $build/build.log)"; }
elapsed=$(($(date +%s) - start))
echo "$elapsed" >"$build/build-seconds"
hits=$(grep -c '_cache_hit$' "$CCACHE_STATSLOG" || true)
misses=$(grep -c '_cache_miss$' "$CCACHE_STATSLOG" || true)
log "built $kernelversion in $elapsed s; ccache: $hits hits, $misses misses"
record "built in $elapsed s (ccache: $hits hits, $misses misses)"
touch "$build/.hotmem-done"
echo "$build"
