"""`key.sub=value` overrides on the command line, applied to the YAML before validation."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from synth_ray.config.errors import ConfigError


def _error(problem: str) -> Exception:
    return ConfigError([problem], "overrides")


def parse_overrides(overrides: list[str]) -> list[tuple[list[str], Any]]:
    """Parse 'key.sub=value' strings; the value is read as YAML (so 3, true, [a, b] work)."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise _error(f"{item!r}: an override must look like key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise _error(f"{key}: value {raw!r} is not valid YAML ({e})") from e
        parsed.append((key.strip().split("."), value))
    return parsed


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of `data` with overrides applied; list items are addressed by index."""
    out = copy.deepcopy(data)
    for path, value in parse_overrides(overrides):
        node: Any = out
        for i, part in enumerate(path):
            last = i == len(path) - 1
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise _error(f"{where}: no list item {part!r}")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise _error(f"{where}: cannot set a key inside a scalar")
    return out
