from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import polars as pl
import pytest

from synth_ray.runtime.rundir import RunDir, atomic_open, atomic_write_text, write_parquet


def test_exception_mid_write_keeps_old_file(tmp_path) -> None:
    p = tmp_path / "out.txt"
    atomic_write_text(p, "old complete content")
    with pytest.raises(RuntimeError):
        with atomic_open(p, "w") as f:
            f.write("new partial")
            raise RuntimeError("crash")
    assert p.read_text() == "old complete content"
    assert [x.name for x in tmp_path.iterdir()] == ["out.txt"]  # temp file cleaned up


def test_process_killed_mid_write_keeps_old_parquet(tmp_path) -> None:
    """A SIGKILL while a Parquet file is being written leaves the previous file readable."""
    p = tmp_path / "rows.parquet"
    write_parquet(pl.DataFrame({"x": [1, 2, 3]}), p)
    script = textwrap.dedent(f"""
        import os, signal, polars as pl
        from synth_ray.runtime.rundir import atomic_write_with
        def writer(tmp):
            pl.DataFrame({{"x": list(range(100000))}}).write_parquet(tmp)
            with open(tmp, "r+b") as f:
                f.truncate(100)  # half a file on disk, as a crash would leave it
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write_with({str(p)!r}, writer)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert pl.read_parquet(p)["x"].to_list() == [1, 2, 3]
    leftovers = [x for x in tmp_path.iterdir() if x.name != "rows.parquet"]
    assert all(x.name.startswith(".") and x.name.endswith(".tmp") for x in leftovers)


def test_manifest_currency(tmp_path) -> None:
    run = RunDir(tmp_path)
    assert not run.is_current("split", "h1")
    run.mark_running("split", "h1")
    assert not run.is_current("split", "h1")  # running is not done
    atomic_write_text(run.path("splits", "a.txt"), "x")
    run.mark_done("split", ["splits/a.txt"], {"n": 1})
    assert run.is_current("split", "h1")
    assert not run.is_current("split", "h2")  # inputs changed
    os.unlink(run.path("splits", "a.txt"))
    assert not run.is_current("split", "h1")  # output gone
    run.mark_failed("split", "boom")
    assert run.stage("split")["status"] == "failed"
