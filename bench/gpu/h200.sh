#!/usr/bin/env bash
# One call on the lent GPU machine: checks and timings of the CUDA backend, logs under $OUT.
#   bench/gpu/h200.sh test        GPU test suites (ctest -L cuda)
#   bench/gpu/h200.sh sanitize    compute-sanitizer memcheck, racecheck, synccheck on the edge set
#   bench/gpu/h200.sh fault       a real device out-of-memory during packing (cuda_fault_test)
#   bench/gpu/h200.sh grid        fusedmoe bench --backend cuda over PERF.md's grid (its four
#                                 presets, routed experts only, all six T; GRID_ARGS replaces that)
#   bench/gpu/h200.sh peers       bench/peers/peers.py over the same grid
#   bench/gpu/h200.sh presets     every preset at its real size against the reference (T = 1, 64)
#   bench/gpu/h200.sh presets512  the same at T = 512
#                                 (PRESETS: some of them, by their gtest names, e.g.
#                                 "seed_deepseek_v3 seed_qwen2_moe_57b")
#   bench/gpu/h200.sh soak        the randomized differential soak on CUDA (SOAK_SECONDS, 600;
#                                 FUSEDMOE_TEST_SEED picks the seed)
#   bench/gpu/h200.sh soak-start ... soak-wait
#                                 the same soak in the background while the steps between run
#                                 (checks only: timing steps belong after soak-wait)
#   bench/gpu/h200.sh adversarial the adversarial routing suite under compute-sanitizer memcheck
#   bench/gpu/h200.sh ab          builds or settings timed alternately in one call (bench/NOTES.md):
#                                 AB="base/fusedmoe bin/fusedmoe bin/fusedmoe:FUSEDMOE_CUDA_OVERLAP=0"
#                                 (binaries under $BUILD, each with optional :VAR=value,...),
#                                 AB_ARGS (fusedmoe bench flags), AB_ROUNDS (2); rows in
#                                 $OUT/ab.jsonl, each tagged with its entry and round
#   bench/gpu/h200.sh python      pip install . (CUDA build) and python/tests
#   bench/gpu/h200.sh hf          bench/peers/hf_patch.py: transformers blocks patched vs not
#                                 (the machine has no network: WHEELS names a folder of wheels
#                                 for scikit-build-core, nanobind and pytest, made elsewhere with
#                                 pip download --python-version 3.12 --only-binary=:all:)
# Several steps may be given in one call. The build (build-gpu/) is either carried from the
# machine that made it (bench/gpu/carry.sh makes build-carry/ for BUILD=build-carry) or made here
# when absent.
# A step written h200:STEP runs only where the GPU is an H200 (the device tool may lend an H100
# for an H200: the checks are worth running on either, the bar's timings only on the H200).
# STOP_AFTER=N starts no step after N seconds, so that a call ends inside the device's limit with
# its logs. PACK=1 keeps $OUT to summary.txt and logs.tgz (the device returns at most 8 files).
set -uo pipefail
cd "$(dirname "$0")/../.."
# a misspelt step fails the call before it spends device time
for step in "$@"; do
  case "${step#h200:}" in
    test | fault | sanitize | grid | peers | presets | presets512 | soak | soak-start | soak-wait) ;;
    ab | adversarial | python | hf | info) ;;
    *) echo "unknown step $step (the steps are listed at the top of $0)" >&2 && exit 2 ;;
  esac
done
OUT="${OUT:-/tmp/fusedmoe-out}"
mkdir -p "$OUT"
if [ -n "${PACK:-}" ]; then
  PACKED="$OUT"
  OUT=$(mktemp -d)
  trap 'cp "$OUT/summary.txt" "$PACKED/" 2>/dev/null; tar czf "$PACKED/logs.tgz" -C "$OUT" . &&
    rm -rf "$OUT"' EXIT
fi
BUILD="${BUILD:-build-gpu}"
# cuBLAS (the bf16 ceiling) from the toolkit or from the Python wheels, whichever is there.
for d in /usr/local/cuda/lib64 $(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null); do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done

pids=()
SOAK_PID=  # a background soak (soak-start) not yet waited for
# The gtest filter for one presets_real_test case over $PRESETS (all presets when unset).
presets_filter() {
  local f="" p names
  read -ra names <<<"${PRESETS:-*}"
  for p in "${names[@]}"; do f="$f${f:+:}*.$1/$p"; done
  echo "$f"
}
# One GPU test suite: $1 names its log ($OUT/test_$1.log) and its lines in the summary; the rest
# is `env`'s: variables, then the test binary and its arguments.
gpu_suite() {
  local name=$1
  shift
  log "GPU tests: $name"
  timeout "${TEST_TIMEOUT:-300}" env FUSEDMOE_TEST_BACKEND=cuda "$@" --gtest_brief=1 \
    >"$OUT/test_$name.log" 2>&1
  echo "exit $? ($name)" | tee -a "$OUT/summary.txt"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests? ran|FAILED  \]" "$OUT/test_$name.log" | head -12 |
    tee -a "$OUT/summary.txt"
}
log() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)" | tee -a "$OUT/summary.txt"; }

if [ ! -x "$BUILD/bin/fusedmoe" ]; then
  log "build"
  cmake -B "$BUILD" -G Ninja -DFUSEDMOE_CUDA=ON -DFUSEDMOE_CUDA_ARCHITECTURES=90a-real \
    >"$OUT/build.log" 2>&1 && cmake --build "$BUILD" -j16 >>"$OUT/build.log" 2>&1 ||
    { tail -30 "$OUT/build.log"; exit 1; }
fi
# the commit the carried build was made from (a copied tree's git state may be stale)
export FUSEDMOE_COMMIT="${FUSEDMOE_COMMIT:-$("$BUILD/bin/fusedmoe" --version | sed -n 's/.*(commit \(.*\))/\1/p')}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv \
  | tee -a "$OUT/summary.txt"

gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
for step in "$@"; do
  if [ -n "${STOP_AFTER:-}" ] && ((SECONDS >= STOP_AFTER)); then
    echo "not run: $step (STOP_AFTER=$STOP_AFTER, ${SECONDS} s in)" | tee -a "$OUT/summary.txt"
    continue
  fi
  if [[ "$step" == h200:* ]]; then
    step=${step#h200:}
    if [[ "$gpu_name" != *H200* ]]; then
      echo "not run: $step (h200: only, and this GPU is $gpu_name)" | tee -a "$OUT/summary.txt"
      continue
    fi
  fi
  case "$step" in
    test)
      # the binaries directly (a carried build's CTest files hold this machine's paths)
      for suite in cuda_edge_test cuda_graph_test e2e_test determinism_test nan_test; do
        gpu_suite $suite "$BUILD/bin/$suite"
      done
      gpu_suite errors_test "$BUILD/bin/errors_test" --gtest_filter='CudaErrors.*'
      # the 96-row tile forced (the suites' layers are too small to choose it: tests/CMakeLists.txt)
      for suite in cuda_edge_test e2e_test; do
        gpu_suite ${suite}_m96 FUSEDMOE_CUDA_TILE=m96n128 "$BUILD/bin/$suite"
        gpu_suite ${suite}_m96n256 FUSEDMOE_CUDA_TILE=m96n256 "$BUILD/bin/$suite"
      done
      ;;
    fault)
      # takes all of the GPU's memory for a while: never next to a background soak
      [ -n "$SOAK_PID" ] && { echo "fault: not while the soak runs (soak-wait first)"; continue; }
      log "device out-of-memory (cuda_fault_test)"
      timeout "${TEST_TIMEOUT:-300}" "$BUILD/bin/cuda_fault_test" >"$OUT/test_cuda_fault_test.log" 2>&1
      echo "exit $? (cuda_fault_test)" | tee -a "$OUT/summary.txt"
      grep -E "^\[ fault \]|^\[  (PASSED|FAILED|SKIPPED) " "$OUT/test_cuda_fault_test.log" |
        tee -a "$OUT/summary.txt"
      ;;
    sanitize)
      # the three tools at once (each is mostly host work), then their verdicts in order
      log "compute-sanitizer memcheck, racecheck, synccheck (concurrently)"
      for tool in memcheck racecheck synccheck; do
        FUSEDMOE_TEST_BACKEND=cuda timeout "${SAN_TIMEOUT:-300}" compute-sanitizer --tool "$tool" \
          --error-exitcode 99 "$BUILD/bin/cuda_edge_test" --gtest_brief=1 \
          >"$OUT/sanitizer_$tool.log" 2>&1 &
        pids+=("$!")
      done
      for tool in memcheck racecheck synccheck; do
        wait "${pids[0]}"
        echo "exit $? ($tool)" | tee -a "$OUT/summary.txt"
        pids=("${pids[@]:1}")
        grep -E "ERROR SUMMARY|PASSED|FAILED|SKIPPED" "$OUT/sanitizer_$tool.log" | tail -4 |
          tee -a "$OUT/summary.txt"
      done
      ;;
    grid)
      log "bench grid"
      # GRID_ARGS e.g. "--preset qwen3-30b-a3b --tokens 16,64,256"; by default PERF.md's grid
      timeout "${GRID_TIMEOUT:-400}" "$BUILD/bin/fusedmoe" bench --backend cuda \
        ${GRID_ARGS:---preset qwen3-30b-a3b,mixtral-8x7b,qwen2-57b-a14b,deepseek-v3 --no-shared-expert} \
        --json "$OUT/fusedmoe-cuda.jsonl" 2>"$OUT/grid.err" | tee "$OUT/grid.txt"
      tail -3 "$OUT/grid.err"
      ;;
    peers)
      log "peers"
      PYTHONUNBUFFERED=1 timeout "${PEERS_TIMEOUT:-500}" python3 bench/peers/peers.py \
        --lib build-shared/libfusedmoe.so --commit "$FUSEDMOE_COMMIT" ${PEERS_ARGS:-} \
        --out "$OUT/peers.jsonl" 2>"$OUT/peers.err" | tee "$OUT/peers.txt"
      tail -5 "$OUT/peers.err"
      ;;
    presets)
      log "presets at real size (cuda)"
      FUSEDMOE_TEST_BACKEND=cuda timeout "${PRESETS_TIMEOUT:-540}" "$BUILD/bin/presets_real_test" \
        --gtest_filter="$(presets_filter MatchesReferenceAtT1AndT64)" >"$OUT/presets_real_cuda.log" 2>&1
      echo "exit $? (presets_real_test)" | tee -a "$OUT/summary.txt"
      grep -E "^\[ (time|note) \]|OK \]|FAILED  \]|PASSED" "$OUT/presets_real_cuda.log" |
        tee -a "$OUT/summary.txt"
      ;;
    presets512)
      log "presets at real size, T = 512 (cuda)"
      FUSEDMOE_TEST_BACKEND=cuda FUSEDMOE_TEST_T512=1 timeout "${PRESETS_TIMEOUT:-540}" \
        "$BUILD/bin/presets_real_test" --gtest_filter="$(presets_filter MatchesReferenceAtT512)" \
        >"$OUT/presets_real_cuda_t512.log" 2>&1
      echo "exit $? (presets_real_test T=512)" | tee -a "$OUT/summary.txt"
      grep -E "^\[ (time|note) \]|OK \]|FAILED  \]|PASSED" "$OUT/presets_real_cuda_t512.log" |
        tee -a "$OUT/summary.txt"
      ;;
    soak | soak-start)
      [ -n "$SOAK_PID" ] && { echo "$step: a soak is already running (soak-wait first)"; continue; }
      log "soak (cuda, seed ${FUSEDMOE_TEST_SEED:-default}, ${SOAK_SECONDS:-600} s)"
      FUSEDMOE_TEST_BACKEND=cuda FUSEDMOE_SOAK_SECONDS="${SOAK_SECONDS:-600}" \
        FUSEDMOE_SOAK_CASES="${SOAK_CASES:-1000000}" timeout $((${SOAK_SECONDS:-600} + 60)) \
        "$BUILD/bin/soak_test" >"$OUT/soak_cuda.log" 2>&1 &
      SOAK_PID=$!
      [ "$step" = soak-start ] && continue
      ;&
    soak-wait)
      [ -z "$SOAK_PID" ] && { echo "soak-wait: no soak is running"; continue; }
      wait "$SOAK_PID"
      echo "exit $? (soak_test)" | tee -a "$OUT/summary.txt"
      SOAK_PID=
      tail -5 "$OUT/soak_cuda.log" | tee -a "$OUT/summary.txt"
      ;;
    ab)
      log "A/B timings"
      for round in $(seq "${AB_ROUNDS:-2}"); do
        for entry in ${AB:?AB names the binaries to compare}; do
          bin=${entry%%:*} settings=""
          [ "$entry" != "$bin" ] && settings=${entry#*:}
          echo "== $entry (round $round, $(date -u +%H:%M:%S))" | tee -a "$OUT/ab.txt"
          rm -f "$OUT/ab.part.jsonl"
          # shellcheck disable=SC2086  # AB_ARGS and the settings are word lists
          env ${settings//,/ } timeout "${AB_TIMEOUT:-120}" "$BUILD/$bin" bench --backend cuda \
            ${AB_ARGS:-} --quiet --json "$OUT/ab.part.jsonl" 2>&1 | tee -a "$OUT/ab.txt"
          # every row names the entry it came from (the binaries may share a commit)
          [ -f "$OUT/ab.part.jsonl" ] &&
            sed "s|}\$|, \"ab_entry\": \"$entry\", \"ab_round\": $round}|" "$OUT/ab.part.jsonl" >>"$OUT/ab.jsonl"
        done
      done
      rm -f "$OUT/ab.part.jsonl"
      ;;
    adversarial)
      log "adversarial routing under compute-sanitizer memcheck (cuda)"
      FUSEDMOE_TEST_BACKEND=cuda timeout "${SAN_TIMEOUT:-300}" compute-sanitizer --tool memcheck \
        --error-exitcode 99 "$BUILD/bin/adversarial_test" --gtest_brief=1 \
        >"$OUT/sanitizer_adversarial.log" 2>&1
      echo "exit $? (adversarial memcheck)" | tee -a "$OUT/summary.txt"
      grep -E "ERROR SUMMARY|PASSED|FAILED" "$OUT/sanitizer_adversarial.log" | tail -4 |
        tee -a "$OUT/summary.txt"
      ;;
    python)
      log "python package with the CUDA backend"
      if [ -d "${WHEELS:-build-wheel/pkgs}" ]; then
        python3 -m pip install -q --no-index --find-links "${WHEELS:-build-wheel/pkgs}" scikit-build-core \
          nanobind pytest >"$OUT/python_install.log" 2>&1
      fi
      CMAKE_ARGS="-DFUSEDMOE_CUDA=ON -DFUSEDMOE_CUDA_ARCHITECTURES=90a-real" timeout 400 \
        python3 -m pip install --no-build-isolation --no-deps . -C build-dir=build-python-gpu \
        >>"$OUT/python_install.log" 2>&1
      echo "exit $? (pip install .)" | tee -a "$OUT/summary.txt"
      timeout "${PYTEST_TIMEOUT:-300}" python3 -m pytest -q -rs python/tests >"$OUT/python_tests.log" 2>&1
      echo "exit $? (pytest python/tests)" | tee -a "$OUT/summary.txt"
      tail -12 "$OUT/python_tests.log" | tee -a "$OUT/summary.txt"
      ;;
    hf)
      log "transformers blocks patched by fusedmoe.hf (needs the python step's install)"
      timeout "${HF_TIMEOUT:-240}" python3 bench/peers/hf_patch.py --mixtral-block --max-minutes 3 \
        --commit "$FUSEDMOE_COMMIT" --out "$OUT/hf_patch.jsonl" >"$OUT/hf_patch.txt" 2>&1
      echo "exit $? (hf_patch.py)" | tee -a "$OUT/summary.txt"
      tail -20 "$OUT/hf_patch.txt" | tee -a "$OUT/summary.txt"
      ;;
    info)
      log "device"
      ldd "$BUILD/bin/fusedmoe" | grep -E "cublas|not found" | tee -a "$OUT/summary.txt"
      ;;
  esac
done
if [ -n "$SOAK_PID" ]; then  # soak-start without soak-wait: its verdict still goes in the summary
  wait "$SOAK_PID"
  echo "exit $? (soak_test)" | tee -a "$OUT/summary.txt"
  tail -5 "$OUT/soak_cuda.log" | tee -a "$OUT/summary.txt"
fi
