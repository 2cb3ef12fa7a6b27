#!/usr/bin/env bash
# Runs every libFuzzer harness of a fuzz build for a bounded time on its committed seed corpus
# (fuzz/corpus/<harness>/, read only; new inputs go to a scratch directory) and prints each one's
# executions. A crash leaves crash-* in the scratch directory and fails the script; copy it into
# a regression test (RELIABILITY.md says how).
#   fuzz/run.sh BUILD_DIR [SECONDS_PER_HARNESS]     e.g. fuzz/run.sh build-fuzz 60
set -euo pipefail
build=${1:?usage: fuzz/run.sh BUILD_DIR [SECONDS]}
seconds=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d)
status=0
for harness in config_fuzzer forward_fuzzer cli_args_fuzzer checkpoint_fuzzer; do
  bin="$(cd "$build" && pwd)/bin/$harness"
  [[ -x $bin ]] || { echo "missing $bin"; exit 1; }
  mkdir -p "$scratch/$harness"
  # One thread: OpenMP's spinning workers only slow a fuzzer down.
  # A fixed seed (FUSEDMOE_FUZZ_SEED) makes a CI run repeat what a longer local run explored first.
  if (cd "$scratch" && OMP_NUM_THREADS=1 "$bin" -max_total_time="$seconds" -print_final_stats=1 \
        -seed="${FUSEDMOE_FUZZ_SEED:-1}" \
        -artifact_prefix="$scratch/$harness-" "$scratch/$harness" "$root/fuzz/corpus/$harness" \
        >"$scratch/$harness.log" 2>&1); then
    verdict=ok
  else
    verdict=FAILED
    status=1
    tail -n 60 "$scratch/$harness.log"
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$harness.log")
  cov=$(grep -o 'cov: [0-9]*' "$scratch/$harness.log" | tail -n 1)
  printf '%-16s %s: %s executions in %s s, %s\n' "$harness" "$verdict" "${runs:-?}" "$seconds" \
    "${cov:-cov: ?}"
done
[[ $status == 0 ]] || echo "artifacts in $scratch"
exit $status
