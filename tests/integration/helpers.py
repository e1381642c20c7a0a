"""Helpers for integration tests: configs on disk and the CLI in a subprocess (Ray and vLLM
spawn processes, so each run gets a fresh interpreter, as a user's would)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "jobs" / "configs" / "demo.yaml"


def small_config(tmp_path: Path, name: str = "cfg", **sections) -> Path:
    """The demo config, shrunk for tests; `sections` replace top-level sections."""
    data = yaml.safe_load(DEMO.read_text())
    data["dataset"]["max_rows"] = 48
    data["generation"].update(shard_rows=4, batch_size=4, stall_timeout_s=300,
                              sampling={"temperature": 0.7, "top_p": 0.9, "max_tokens": 12})
    data["sources"] = [s for s in data["sources"] if s["name"] in ("small-a", "small-b")]
    data["conditions"].update(single_source={"small": "small-a"},
                              multi_source={"small": ["small-a", "small-b", "small-a",
                                                      "small-b"]})
    data.update(sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "COLUMNS": "300", "VLLM_CPU_KVCACHE_SPACE": "1",
            "RAY_DISABLE_USAGE_STATS": "1", **extra}


def run_cli(*args: str, timeout: int = 600, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "synth_ray.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env or cli_env(), cwd=REPO)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
