# shellcheck shell=bash
# How the test bed configures and builds a guest kernel: source this file (bash), then
#
#   kbuild_ccache CACHE TREE            export the ccache settings: cache in CACHE/ccache, 8 GiB,
#                                       paths taken relative to TREE (so copies of a tree hit)
#   kmake TREE BUILD ARG...             make -C TREE O=BUILD ARCH=x86_64 CC="ccache gcc" ARG...
#   kconfigure TREE BUILD FRAGMENT...   tinyconfig, the fragments merged in order with
#                                       merge_config.sh, olddefconfig; fails (status 1, the
#                                       reason on stderr) if the final .config lacks an option a
#                                       fragment requests. Log: BUILD/config.log
#
# Sourced by scripts/build-kernel.sh and scripts/check-series.sh, so that the two configure
# alike by construction.

kbuild_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

kbuild_ccache() {
	export CCACHE_DIR=${CCACHE_DIR:-$1/ccache}
	export CCACHE_BASEDIR=$2 CCACHE_NOHASHDIR=1 CCACHE_COMPILERCHECK=content
	ccache -M 8G >/dev/null
}

kmake() {
	local tree=$1 build=$2
	shift 2
	make -C "$tree" O="$build" ARCH=x86_64 CC="ccache gcc" "$@"
}

kconfigure() {
	local tree=$1 build=$2
	shift 2
	local log=$build/config.log
	kmake "$tree" "$build" tinyconfig >"$log" 2>&1 || { tail -20 "$log" >&2; echo "tinyconfig failed" >&2; return 1; }
	"$tree/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "$@" >>"$log" 2>&1 ||
		{ tail -20 "$log" >&2; echo "merge_config.sh failed" >&2; return 1; }
	kmake "$tree" "$build" olddefconfig >>"$log" 2>&1 || { tail -20 "$log" >&2; echo "olddefconfig failed" >&2; return 1; }
	"$kbuild_dir/check-config.sh" "$build/.config" "$@" >&2 ||
		{ echo "the final .config lacks options the fragments request (a dependency is missing)" >&2; return 1; }
}
