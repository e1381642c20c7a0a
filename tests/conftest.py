"""Shared fixtures. Tiny models are cached under a session-wide folder so tests build them once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "jobs" / "configs"

# Tiny models and the tokenizer are deterministic; share the user's cache between test runs
# unless a test overrides it, so CI pays the build cost once.
os.environ.setdefault("SYNTH_RAY_CACHE", str(Path.home() / ".cache" / "synth-ray"))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

_SPEED: dict[str, float] = {}


def _is_worker(config) -> bool:
    """An xdist worker (scripts/test.sh runs the suite in two): the controller calibrates,
    prints the header and the summary; the workers run the tests."""
    return hasattr(config, "workerinput")


def pytest_sessionstart(session) -> None:
    """The machine-speed figure (tests/calibration.py), before any test: a slow day shows.
    Measured by the controller before its workers start, so nothing else runs beside it."""
    import time

    from tests.calibration import calibrate

    if not _is_worker(session.config):
        _SPEED.update(calibrate(), start=time.perf_counter())


# The suite runs in two xdist workers (scripts/test.sh). Tests that share an expensive
# fixture must run in the same worker, or each worker would build it: every test of a module
# shares its module's fixtures, and the modules with tests on the trained grid (below) form
# one group. The groups that take minutes go first (longest first keeps the two workers'
# ends close); the rest follow in collection order. The groups are given to xdist by its
# scheduler hook, from test ids alone (the controller sees no fixtures; xdist's own
# `xdist_group` mark does not reach the ids under pytest 9.2).
GRID_FIXTURES = {"grid_run", "evaluated", "judged"}
GRID_MODULES = frozenset({
    "tests/faults/test_kill.py", "tests/integration/test_export.py",
    "tests/integration/test_http_source.py", "tests/integration/test_judge.py",
    "tests/integration/test_respond.py", "tests/integration/test_score.py",
    "tests/integration/test_train.py"})
LONGEST_FIRST = ("grid", "tests/integration/test_rehearse.py",
                 "tests/integration/test_smol.py", "tests/integration/test_benchmarks.py",
                 "tests/integration/test_generate.py")


def group_of(nodeid: str) -> str:
    module = nodeid.split("::")[0]
    return "grid" if module in GRID_MODULES else module


def pytest_collection_modifyitems(config, items) -> None:
    stray = sorted({i.nodeid.split("::")[0] for i in items
                    if GRID_FIXTURES & set(getattr(i, "fixturenames", ()))} - GRID_MODULES)
    if stray:  # a module on the grid outside the group would build it a second time
        raise pytest.UsageError(f"tests/conftest.py: add {stray} to GRID_MODULES")
    rank = {g: i for i, g in enumerate(LONGEST_FIRST)}
    # a stable sort: the same order in every worker (xdist checks the collections agree)
    items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's scope scheduler with this suite's groups as scopes: a group runs whole in one
    worker; the next group goes to whichever worker is free."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return GroupScheduling(config, log)


def pytest_sessionfinish(session) -> None:
    """A worker hands what it could not run to the controller (pytest_testnodedown)."""
    from tests.system import NOT_RUN

    if _is_worker(session.config):
        session.config.workeroutput["not_run"] = list(NOT_RUN)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    from tests.system import NOT_RUN

    NOT_RUN.extend(getattr(node, "workeroutput", {}).get("not_run", []))


def pytest_report_header(config) -> str | None:
    if not _SPEED:
        return None
    return (f"machine speed: calibration {_SPEED['seconds']:.2f} s "
            f"({_SPEED['factor']:.2f}x the reference day); torch/OpenMP threads per "
            f"process: {os.environ.get('OMP_NUM_THREADS', 'every core (OMP_NUM_THREADS unset)')}")


def pytest_terminal_summary(terminalreporter) -> None:
    """What could not run here and why (tests/system.py), then the total beside the
    calibration, and the total normalised to the reference day."""
    import time

    from tests.system import NOT_RUN

    if not _SPEED:  # a worker
        return
    if NOT_RUN:
        terminalreporter.section("not run on this machine")
        for line in NOT_RUN:
            terminalreporter.write_line(line)
    total = time.perf_counter() - _SPEED["start"]
    terminalreporter.write_line(
        f"suite: {total / 60:.1f} min on a machine at {_SPEED['factor']:.2f}x the reference "
        f"day's calibration ({_SPEED['seconds']:.2f} s); normalised "
        f"{total / _SPEED['factor'] / 60:.1f} min")


@pytest.fixture
def demo_config_path() -> Path:
    return CONFIGS / "plumbing.yaml"  # random weights: no pre-training


# One trained grid serves training, evaluation, judge and fault tests (training it is the
# slowest step of the suite).
@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 (SQLite store, artifacts proxied by the
    server), for the whole session: the grid's stages log to it. Yields its URI."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [Path(sys.executable).parent / "mlflow", "server", "--host", "127.0.0.1", "--port",
         str(port), "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # no job runner: its 7 huey consumers cost ~2 GB and tracking needs none of them
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300  # its imports take long on a busy 2-core machine
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("mlflow server did not start: "
                                       + (root / "server.log").read_text()[-3000:]) from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="session")
def grid_run(tmp_path_factory, mlflow_server):
    """Three conditions as a Tune grid of 2-worker DDP runs, two adapters in the first run
    (`adapters_per_run`), one in the second; greedy evaluation sampling."""
    from tests.integration.helpers import (
        JUDGE,
        TARGET,
        TRAINING,
        run_cli,
        small_config,
        write_datasets,
    )

    tmp = tmp_path_factory.mktemp("train")
    cfg = small_config(tmp, targets=[TARGET], training={**TRAINING, "adapters_per_run": 2},
                       conditions={"human": True, "single_source": {"small": "small-a"},
                                   "multi_source": {"small": ["small-a", "small-b"] * 2}},
                       evaluation={"sampling": {"temperature": 0.0, "max_tokens": 8,
                                                "top_p": 1.0},
                                   "self_bleu": {"individual_samples": 12,
                                                 "aggregated_samples": 12}},
                       judge=JUDGE,
                       # every stage run on this grid is tracked (test_tracking reads it)
                       tracking={"backend": "mlflow", "uri": mlflow_server,
                                 "experiment": "grid"})
    run_dir = tmp / "run"
    write_datasets(run_dir, ["human", "single-small", "multi-small"])
    proc = run_cli("train", str(cfg), f"run.dir={run_dir}", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-6000:]
    (tmp / "train.stderr").write_text(proc.stderr)  # what the terminal showed (test_terminal)
    return cfg, run_dir


@pytest.fixture(scope="session")
def evaluated(grid_run):
    """The grid's adapters answered (respond) and scored (score), once per session: the
    respond, score and judge tests read it."""
    from tests.integration.helpers import run_cli

    cfg, run_dir = grid_run
    for stage in ("respond", "score"):
        proc = run_cli(stage, str(cfg), f"run.dir={run_dir}", timeout=1200)
        assert proc.returncode == 0, proc.stderr[-6000:]
    return cfg, run_dir


@pytest.fixture(scope="session")
def judged(evaluated):
    """The grid's responses judged, with summaries written by the sources (real path); the
    score stage has run too, so the report's paper tables hold perplexity whatever the
    order the tests run in."""
    import subprocess
    import sys

    from tests.integration.helpers import REPO, cli_env, run_cli

    cfg, run_dir = evaluated  # responded and scored
    helper = REPO / "tests" / "integration" / "write_summaries.py"
    proc = subprocess.run([sys.executable, str(helper), str(cfg), str(run_dir)],
                          capture_output=True, text=True, timeout=900, env=cli_env())
    assert proc.returncode == 0, proc.stderr[-6000:]
    proc = run_cli("judge", str(cfg), f"run.dir={run_dir}", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return cfg, run_dir


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto) on 127.0.0.1 with one bucket, and the AWS_*
    variables that point pyarrow (and every process started from here) at it. Yields the
    bucket's URI; the credentials are moto's fakes."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([Path(sys.executable).parent / "moto_server", "-H", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "moto-fake-secret-4711",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": url, "AWS_ENDPOINT_URL_S3": url}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        # a bucket, made through the S3 API (pyarrow creates none by itself)
        req = urllib.request.Request(f"{url}/synth-ray-test", method="PUT")
        urllib.request.urlopen(req, timeout=10)
        yield "s3://synth-ray-test"
    finally:
        server.terminate()
        server.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
