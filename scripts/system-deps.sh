#!/usr/bin/env bash
# The system packages the test suite needs beyond .venv, in one place (Debian names):
#   chromium, chromium-driver  the report's page in a real headless browser (test_judge)
#   openssh-server, rsync      `ray up cluster.yaml` over SSH to this machine (test_ray_up)
# `make test` runs this before pytest. As root on a Debian-like system with apt-get, it
# installs the missing ones (minutes, once); elsewhere it lists them with the command that
# would install them, and the tests that need them are reported as not run at the end of
# the suite. Under CI=true a missing one fails here, before any test runs.
set -uo pipefail

# the file each test needs -> the package that brings it
declare -A NEED=(
  [/usr/bin/chromium]=chromium
  [/usr/bin/chromedriver]=chromium-driver
  [/usr/sbin/sshd]=openssh-server
  [/usr/bin/ssh-keygen]=openssh-client
  [/usr/bin/rsync]=rsync
)

missing() {
  local f pkgs=()
  for f in "${!NEED[@]}"; do [ -x "$f" ] || pkgs+=("${NEED[$f]}"); done
  printf '%s\n' "${pkgs[@]}" | sort -u | grep -v '^$'
}

todo=$(missing)
if [ -z "$todo" ]; then
  echo "system-deps: every system package the tests use is here"
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing $(echo $todo) with apt-get (once)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $todo >/dev/null \
    || echo "system-deps: apt-get could not install $(echo $todo)" >&2
  todo=$(missing)
  [ -z "$todo" ] && { echo "system-deps: done"; exit 0; }
fi
echo "system-deps: missing $(echo $todo); install them with:" \
  "sudo apt-get install $(echo $todo) (or your system's equivalents)." >&2
if [ "${CI:-}" = true ]; then
  echo "system-deps: CI=true: a missing system package is a failure, not a skip" >&2
  exit 1
fi
echo "system-deps: the tests that need them will be listed as not run at the end" >&2
exit 0
