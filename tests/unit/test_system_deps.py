"""What a test needs of the machine (tests/system.py): missing, it fails under CI=true and is
skipped elsewhere, named at the end of the run either way; and scripts/system-deps.sh, the
one place that installs it, names the same packages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import system

REPO = Path(__file__).resolve().parents[2]


def test_a_missing_package_fails_under_ci_and_is_skipped_and_listed_elsewhere(
        tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(system.PACKAGES, "chromium", (str(tmp_path / "no-chromium"),
                                                      "chromium"))
    monkeypatch.setattr(system, "NOT_RUN", [])
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-chromium .*CI=true"):
        system.require("chromium")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="Debian: chromium"):
        system.require("chromium")
    assert len(system.NOT_RUN) == 2 and "no-chromium" in system.NOT_RUN[-1]


def test_the_setup_script_installs_what_the_tests_require() -> None:
    script = (REPO / "scripts" / "system-deps.sh").read_text()
    pairs = set(re.findall(r"\[(/\S+)\]=(\S+)", script))
    assert pairs == set(system.PACKAGES.values())
    assert "bash scripts/system-deps.sh" in (REPO / "scripts" / "test.sh").read_text()
