"""What the tests need of the machine beyond .venv: system packages (installed by
`scripts/system-deps.sh`, which `make test` runs first; never by a test) and capabilities
(mounting a tmpfs: root in a container that allows it).

`require` is called by each test that needs one: where it is missing, the test fails under
CI=true (CI must run everything) and is skipped elsewhere, and the end of the run lists
what could not run and why (conftest's terminal summary)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# name -> (the file the test uses, the Debian package that brings it)
PACKAGES = {
    "chromium": ("/usr/bin/chromium", "chromium"),
    "chromedriver": ("/usr/bin/chromedriver", "chromium-driver"),
    "sshd": ("/usr/sbin/sshd", "openssh-server"),
    "ssh-keygen": ("/usr/bin/ssh-keygen", "openssh-client"),
    "rsync": ("/usr/bin/rsync", "rsync"),
}
NOT_RUN: list[str] = []  # "test: why", for the end of the run


def unavailable(why: str) -> None:
    """Fail under CI=true, skip elsewhere, and remember it for the end of the run."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    NOT_RUN.append(f"{test}: {why}")
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: everything must run)")
    pytest.skip(why)


def require(*names: str) -> None:
    gone = [n for n in names if not Path(PACKAGES[n][0]).exists()]
    if gone:
        pkgs = " ".join(sorted({PACKAGES[n][1] for n in gone}))
        unavailable(f"missing {', '.join(PACKAGES[n][0] for n in gone)} (Debian: {pkgs}); "
                    "scripts/system-deps.sh installs them as root")
