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


@pytest.fixture
def demo_config_path() -> Path:
    return CONFIGS / "demo.yaml"
