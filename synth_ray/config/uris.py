"""What a path in the config is: a bucket URI (s3://, gs://), a path on this machine's disk, or
something else (a hub id, a scheme id such as tiny://). Plain string logic, read by the config's
validators, the readiness checks and the run directory alike."""

from __future__ import annotations

import hashlib
from pathlib import Path

SCHEMES = ("s3", "gs")  # what both pyarrow and ray.data.llm's LoRA loader read


def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


def check_uri(uri: str) -> str:
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in SCHEMES or not uri.split("://", 1)[1].strip("/"):
        raise ValueError(f"{uri!r}: a run directory URI must be s3://bucket/prefix or "
                         "gs://bucket/prefix (or a local path / a path every node mounts)")
    return uri.rstrip("/")


def default_mirror(uri: str) -> Path:
    """The driver's local copy of a remote run: one folder per URI, under the cache."""
    from synth_ray.models import cache_root

    digest = hashlib.sha256(uri.encode()).hexdigest()[:12]
    name = uri.split("://", 1)[1].strip("/").replace("/", "_")[-48:]
    return cache_root() / "runs" / f"{name}-{digest}"


def local_path(uri: str) -> bool:
    """A path on this machine's disk (not a bucket URI, a scheme id or a hub id)."""
    return not is_uri(uri) and (uri.startswith(("/", ".", "~")) or Path(uri).expanduser()
                                .exists())
