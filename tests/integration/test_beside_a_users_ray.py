"""A user's own Ray beside a run: `ray start --head` as a user types it (default ports
taken where free, the cluster recorded in the machine's Ray temp dir, here this test's
RAY_TMPDIR). A run starts a local instance of its own (runtime/cluster.py) and must neither
join that cluster nor let Ray's tools inside its workers find it: Ray Train's
placement-group cleaner once asked the user's cluster whether the run's controller was
alive, was told no, and removed the training workers' placement group. The run trains to
the end, and the user's Ray is alive after it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .helpers import TARGET, TRAINING, cli_env, free_port, run_cli, small_config, write_datasets

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def test_a_run_trains_beside_a_users_ray_and_leaves_it_running(tmp_path) -> None:
    # the user's machine-wide Ray temp dir, as `ray start` uses it (short: socket paths)
    user_tmp = Path(f"/tmp/ur{os.getpid()}")
    user_tmp.mkdir()
    env = cli_env(RAY_TMPDIR=str(user_tmp))
    dashboard = free_port()
    user = subprocess.Popen(
        [BIN / "ray", "start", "--head", "--block", f"--port={free_port()}",
         f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
         # with its dashboard, as a user's has: Ray's state API answers through it
         f"--dashboard-port={dashboard}", "--num-cpus=1", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 180  # up: recorded in its temp dir, its state API answers
        while True:
            assert time.time() < deadline and user.poll() is None, "the user's Ray did not start"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/api/version", timeout=5)
                answers = True
            except urllib.error.HTTPError:  # it answers (a token may be asked for)
                answers = True
            except OSError:
                answers = False
            if answers and (user_tmp / "ray" / "ray_current_cluster").exists():
                break
            time.sleep(1)
        # the three adapters in one Ray Train run, a few steps each
        cfg = small_config(tmp_path, targets=[{**TARGET, "num_workers": 1}],
                           training={**TRAINING, "epochs": 1, "max_steps": 8,
                                     "eval_every_steps": 4, "adapters_per_run": 3})
        run_dir = tmp_path / "run"
        write_datasets(run_dir, ["human", "single-small", "multi-small"])
        proc = run_cli("train", str(cfg), f"run.dir={run_dir}", env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        log = (run_dir / "log.txt").read_text()
        assert "Cleaning up placement group" not in log, log[-4000:]
        # Ray's tools inside the run's workers (the cleaner looks its controller up with
        # Ray's state API) found the run's own instance, never the user's
        user_address = (user_tmp / "ray" / "ray_current_cluster").read_text().strip()
        assert "PlacementGroupCleaner" in log  # it looked, and said where
        assert f"Connecting to latest cluster at {user_address}" not in log, log[-4000:]
        assert user.poll() is None  # the user's Ray lives on
    finally:
        user.send_signal(signal.SIGTERM)  # `ray start --block` stops its own node
        try:
            user.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(user.pid, signal.SIGKILL)
        shutil.rmtree(user_tmp, ignore_errors=True)
