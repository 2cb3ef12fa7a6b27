#!/usr/bin/env bash
# Builds here what a call on the lent GPU machine carries, so that the call spends its device time
# on checks and timings rather than on compiling:
#   build-carry/bin/          the CUDA build's programs that bench/gpu/h200.sh runs, stripped
#   build-shared/libfusedmoe.so  the shared library that bench/peers/peers.py loads
# and, for an A/B against another commit, that commit's fusedmoe:
#   BASE=<rev> bench/gpu/carry.sh   also build-carry/base/fusedmoe, built in a worktree
# Then: run `BUILD=build-carry bench/gpu/h200.sh <steps>` there, carrying
# ["build-carry", "build-shared/libfusedmoe.so"] (about 45 MB; the carry limit is 64 MiB).
# CUDA_ARCH (90a-real) picks the GPU code; ccache is used where it is installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
ARCH="${CUDA_ARCH:-90a-real}"
JOBS="${JOBS:-$(nproc)}"
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
# the programs bench/gpu/h200.sh runs
programs=(fusedmoe cuda_edge_test cuda_graph_test e2e_test determinism_test nan_test errors_test
  soak_test adversarial_test presets_real_test cuda_fault_test)

# $1: source tree, $2: build folder, $3...: targets
build() {
  local src=$1 dir=$2
  shift 2
  cmake -S "$src" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFUSEDMOE_CUDA=ON \
    -DFUSEDMOE_CUDA_ARCHITECTURES="$ARCH" "${launcher[@]}" "${extra[@]}" >/dev/null
  cmake --build "$dir" -j "$JOBS" --target "$@"
}

echo "== the CUDA build (build-gpu)"
extra=()
build . build-gpu "${programs[@]}"
mkdir -p build-carry/bin
for p in "${programs[@]}"; do strip -o "build-carry/bin/$p" "build-gpu/bin/$p"; done

echo "== the shared library (build-shared)"
extra=(-DBUILD_SHARED_LIBS=ON -DFUSEDMOE_BUILD_TESTS=OFF -DFUSEDMOE_BUILD_TOOLS=OFF)
build . build-shared fusedmoe_lib

if [ -n "${BASE:-}" ]; then
  echo "== $BASE's fusedmoe (build-carry/base)"
  tree=build-base/src
  rm -rf "$tree" && git worktree prune
  git worktree add --detach "$tree" "$BASE" >/dev/null
  extra=(-DFUSEDMOE_BUILD_TESTS=OFF)
  build "$tree" build-base/build fusedmoe
  mkdir -p build-carry/base
  strip -o build-carry/base/fusedmoe build-base/build/bin/fusedmoe
  git worktree remove --force "$tree"
fi

du -sh build-carry build-shared/libfusedmoe.so
build-carry/bin/fusedmoe --version
