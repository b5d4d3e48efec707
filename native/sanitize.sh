#!/bin/sh
# Builds the addon with AddressSanitizer + UBSan into a scratch copy of the package (build/ stays
# untouched) and runs the native unit tests against it, with libasan preloaded into node.
# Usage: native/sanitize.sh [vitest args...]   (default: the tests under test/unit/native)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d "${TMPDIR:-/tmp}/hotmem-asan.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

mkdir -p "$scratch/kernel-patches"
cp -r "$root/binding.gyp" "$root/native" "$scratch/"
cp -r "$root/kernel-patches/uapi" "$scratch/kernel-patches/"
ln -s "$root/node_modules" "$scratch/node_modules"
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
(cd "$scratch" && CFLAGS="$flags" CXXFLAGS="$flags" LDFLAGS="$flags" \
  npx node-gyp rebuild --debug >"$scratch/build.log" 2>&1) || {
  cat "$scratch/build.log" >&2
  exit 1
}

nm -D "$scratch/build/Debug/hotmem.node" | grep -q __asan_report || {
  echo "sanitize.sh: the addon was built without AddressSanitizer" >&2
  exit 1
}

# node itself is not instrumented: leaks in V8 and ODR checks across it are not ours to judge.
LD_PRELOAD="$(cc -print-file-name=libasan.so) $(cc -print-file-name=libubsan.so)"
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
HOTMEM_NATIVE_PATH="$scratch/build/Debug/hotmem.node"
HOTMEM_EXEC_PATH="$scratch/build/Debug/hotmem-exec"
HOTMEM_RELAY_PATH="$scratch/build/Debug/hotmem-relay"
export LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS HOTMEM_NATIVE_PATH HOTMEM_EXEC_PATH HOTMEM_RELAY_PATH

node "$root/test/unit/native/exercise-addon.cjs" "$HOTMEM_NATIVE_PATH"
cd "$root"
if [ $# -eq 0 ]; then set -- test/unit/native; fi
npx vitest run --project unit "$@"
