"""Disk full while a stage writes its outputs: the stage fails with a message that says so,
the previous complete outputs stay byte-for-byte intact, no temp file is left behind, and
the rerun after space is freed completes.

The run directory lives on a 1 MiB tmpfs that the test fills (needs root, as in CI's
container); where mounting is not allowed, a file-size limit (RLIMIT_FSIZE) on the stage's
process stands in for the full disk."""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.helpers import run_cli, small_config
from tests.system import unavailable


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(params=["tmpfs", "rlimit"])
def small_disk(tmp_path, request):
    mount = tmp_path / "disk"
    mount.mkdir()
    if request.param == "rlimit":
        yield mount, False
        return
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:  # needs root (CAP_SYS_ADMIN); the rlimit variant still runs
        unavailable(f"cannot mount a tmpfs here ({proc.stderr.strip()[-200:]}); the rlimit "
                    "variant covers the full disk")
    yield mount, True
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path, leave: int) -> Path:
    st = os.statvfs(mount)
    filler = mount / "filler.bin"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_keeps_the_previous_outputs(tmp_path, small_disk) -> None:
    mount, tmpfs = small_disk
    cfg = small_config(tmp_path)
    run_dir = mount / "run"
    assert run_cli("split", str(cfg), f"run.dir={run_dir}").returncode == 0
    before = _digests(run_dir / "splits")

    # the rerun would write other, larger splits (another seed, 120 rows: each part ~8.5 kB,
    # 3 tmpfs pages, where config.yaml takes 2) into a full disk: the run's own small files
    # fit, a split file does not
    args = ("split", str(cfg), f"run.dir={run_dir}", "dataset.max_rows=120", "split.seed=7",
            "--force")
    if tmpfs:
        filler = _fill(mount, leave=10 * 1024)
        proc = run_cli(*args)
    else:
        import sys

        from tests.integration.helpers import REPO, cli_env

        proc = subprocess.run([sys.executable, "-m", "synth_ray.cli", *args],
                              capture_output=True, text=True, env=cli_env(), cwd=REPO,
                              preexec_fn=_limit_file_size(7000), timeout=300)
    out = proc.stdout + proc.stderr
    print(f"disk full ({'tmpfs' if tmpfs else 'RLIMIT_FSIZE'}): exit {proc.returncode}")
    assert proc.returncode == 1, out[-3000:]
    assert "disk full" in out and "previous complete file" in out, out[-3000:]
    # Files are replaced one by one: each is the old complete one or a new complete one
    # (a small one may have fitted), never a torn one; the one being written stays old.
    import re

    import polars as pl

    failed = re.search(r"writing \S*/splits/(\S+?\.parquet)", out)
    assert failed, out[-3000:]
    after = _digests(run_dir / "splits")
    assert after[failed.group(1)] == before[failed.group(1)]
    assert set(after) == set(before)
    for p in (run_dir / "splits").iterdir():
        pl.read_parquet(p)  # every file complete
    assert not [p for p in run_dir.rglob("*.tmp")]  # no half-written file left
    import json

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["split"]["status"] != "done"  # never taken as current

    if tmpfs:
        filler.unlink()
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _digests(run_dir / "splits") != before  # the new seed's splits, complete
    total = sum(pl.read_parquet(p).height for p in (run_dir / "splits").glob("*.parquet")
                if p.name != "rejects.parquet")
    assert total == 120
    shutil.rmtree(run_dir)
