"""The hosted sources' stand-in for a rehearsal (synth_ray/rehearse.py): a real vLLM
OpenAI-compatible server serving the source stand-in under every hosted model's
name, with every hosted source's own API key (read from its `http.api_key_env`) as an
accepted key. The rehearsal keeps those sources' backend, rate limits, retries and key
variables, so the HTTP path runs as it will against the providers, only the URL changes.
It listens on 127.0.0.1 for a rehearsal on a local Ray instance; on a cluster, on the
driver node's address (`host`), where the HTTP stage's tasks on the worker nodes reach it,
and it still answers only requests that carry one of the sources' keys.

The server's output goes to `rehearsal_server.log` beside the rehearsal's run with every key
value replaced by `***` (vLLM logs its arguments, keys included, at start). It runs in a
process group of its own, stopped by that group when the rehearsal ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from synth_ray.config import ExperimentConfig, SourceSection

log = logging.getLogger("synth_ray")
START_TIMEOUT_S = 300.0
LOG_NAME = "rehearsal_server.log"


def hosted(cfg: ExperimentConfig) -> list[SourceSection]:
    """Every source reached over HTTP."""
    return [s for s in cfg.sources if s.backend == "http"]


def hosted_keys(cfg: ExperimentConfig) -> dict[str, str]:
    """Each hosted source's key variable -> its value here (the rehearsal has checked that
    every one is set: the real run needs them)."""
    envs = [s.http.api_key_env for s in hosted(cfg) if s.http and s.http.api_key_env]
    return {env: os.environ[env] for env in envs if os.environ.get(env)}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def base_url(port: int, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{port}/v1"


def _redacting_copy(stream, path: Path, secrets: list[str]) -> None:
    with path.open("a") as out:
        for line in iter(stream.readline, ""):
            for s in secrets:
                line = line.replace(s, "***")
            out.write(line)
            out.flush()


def server_args(cfg: ExperimentConfig, model_path: str, keys: dict[str, str], gpu: bool,
                port: int, host: str = "127.0.0.1") -> list[str]:
    names = list(dict.fromkeys(s.model for s in hosted(cfg)))
    args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", model_path, "--served-model-name", *names,
            "--host", host, "--port", str(port), "--max-model-len", "2048"]
    if not gpu:
        args += ["--dtype", "float32"]
    # every key accepted only where every hosted source sends one (a keyless source would
    # be refused by a server that checks keys)
    if keys and all(s.http and s.http.api_key_env for s in hosted(cfg)):
        args += ["--api-key", *keys.values()]
    return args


@contextlib.contextmanager
def stand_in_server(cfg: ExperimentConfig, keys: dict[str, str], model: str, gpu: bool,
                    log_dir: Path, port: int, host: str = "127.0.0.1") -> Iterator[None]:
    """The server on `host`:`port` (base URL `base_url(port, host)`) while the block runs;
    nothing without hosted sources."""
    if not hosted(cfg):
        yield
        return
    from synth_ray import models

    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / LOG_NAME
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(cfg.resources.vllm_cpu_kvcache_gib)}
    proc = subprocess.Popen(server_args(cfg, models.resolve_model(model), keys, gpu, port, host),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    threading.Thread(target=_redacting_copy, args=(proc.stdout, log_path, list(keys.values())),
                     daemon=True).start()
    url = f"http://{host}:{port}"
    log.info("[rehearse] hosted sources' stand-in: vLLM OpenAI server on %s (pid %d, log %s)",
             url, proc.pid, log_path)
    try:
        _wait_ready(proc, url, log_path)
        yield
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text()[-2000:] if log_path.exists() else ""
            raise RuntimeError(f"the stand-in vLLM server exited ({proc.returncode}) while "
                               f"starting; its log ({log_path}) ends:\n{tail}")
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"the stand-in vLLM server was not ready in {START_TIMEOUT_S:.0f} s "
                       f"(log {log_path})")


def _stop(proc: subprocess.Popen) -> None:
    """The server's own process group (it was started as its leader): nothing else."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
