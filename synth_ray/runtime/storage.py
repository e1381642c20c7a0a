"""Run directories on object storage (`run.dir: s3://bucket/prefix` or `gs://...`).

The driver works in a local mirror of the run directory (`run.local_dir`, by default under
the synth-ray cache) and every stage reads and writes it as before; the URI is the run's
truth, shared by every node:
- a run opens by pulling what the URI holds into the mirror (a new machine resumes a run
  another one started);
- after every stage the mirror is pushed: changed files first, `manifest.json` last, so the
  URI never has a manifest that names outputs it lacks. Objects appear whole (one PUT each),
  so no reader sees half a file;
- the nodes that touch run files themselves use the URI directly: Ray Train workers read
  their training set from it and upload the adapter they save, Ray Train keeps its
  checkpoints there (`storage_path`), and LoRA engines download adapters from it
  (`dynamic_lora_loading_path` of ray.data.llm).

Credentials come from the environment the cloud SDKs read (AWS_* / GOOGLE_*); none is
written anywhere. `AWS_ENDPOINT_URL` points at an S3-compatible server (MinIO, moto).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from synth_ray.config.uris import check_uri, is_uri

log = logging.getLogger("synth_ray")

CHUNK = 1 << 22  # bytes per read while copying
INDEX = ".synced.json"  # in the mirror: what was last pushed or pulled, file by file
SKIP_DIRS = ("ray_train", "ray_tune")  # Ray Train and Tune write to the URI themselves
SKIP_FILES = (".lock", INDEX)


def _fs(uri: str):
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(uri)


def read_parquet(path: str):
    """A parquet file by local path or URI (a Ray Train worker on another node)."""
    import polars as pl

    if not is_uri(path):
        return pl.read_parquet(path)
    import pyarrow.parquet as pq

    fs, p = _fs(path)
    return pl.from_arrow(pq.read_table(p, filesystem=fs))


def upload_tree(local: str | Path, uri: str, last: str = "training_summary.json") -> int:
    """Copy a finished local folder (an adapter) to `uri/`, file by file, `last` last (a
    finished adapter is one with its summary: see train.trainer.done); returns the count.
    An object appears whole, so a reader of the URI sees each file complete."""
    fs, base = _fs(uri)
    n = 0
    for f in sorted(Path(local).rglob("*"), key=lambda f: (f.name == last, f)):
        if f.is_file():
            _upload(fs, f, posixpath.join(base, f.relative_to(local).as_posix()))
            n += 1
    return n


def _upload(fs, local: Path, remote: str) -> None:
    fs.create_dir(posixpath.dirname(remote), recursive=True)
    with open(local, "rb") as src, fs.open_output_stream(remote) as dst:
        shutil.copyfileobj(src, dst, CHUNK)


def _stamp(info) -> list:
    """What identifies one version of an object in the bucket: size and modification time."""
    return [info.size, info.mtime_ns if info.mtime is not None else None]


def _entry(st: os.stat_result, info) -> dict[str, Any]:
    """The index's record of one file: the mirror's copy and the bucket's, as last synced."""
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "remote": _stamp(info)}


class Remote:
    """A run directory's URI and the local mirror the driver works in."""

    def __init__(self, uri: str, mirror: Path):
        self.uri = check_uri(uri)
        self.mirror = Path(mirror)
        self.fs, self.base = _fs(self.uri)
        self._lock = threading.Lock()  # one push or pull at a time (the background pusher)
        self._stop = threading.Event()

    def push_every(self, seconds: float) -> None:
        """Push in the background every `seconds` while the driver runs, so a head node lost
        mid-stage costs at most that much of the stage's finished shards: a driver on a new
        head pulls them and sends only the rest."""
        def loop() -> None:
            while not self._stop.wait(seconds):
                try:
                    self.push()
                except Exception as e:  # the next push (or the stage's own) tries again
                    log.warning("[storage] background push to %s failed: %s", self.uri, e)

        threading.Thread(target=loop, name="synth-ray-push", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, *parts: str) -> str:
        return "/".join([self.uri, *parts])

    def _remote(self, rel: str) -> str:
        return posixpath.join(self.base, rel)

    def _index(self) -> dict[str, Any]:
        p = self.mirror / INDEX
        return json.loads(p.read_text()) if p.exists() else {}

    def _save_index(self, index: dict[str, Any]) -> None:
        from synth_ray.runtime.rundir import atomic_write_text

        atomic_write_text(self.mirror / INDEX, json.dumps(index, sort_keys=True))

    @staticmethod
    def _skip(rel: str) -> bool:
        parts = rel.split("/")
        return (parts[0] in SKIP_DIRS or parts[-1] in SKIP_FILES
                or parts[-1].endswith(".tmp"))

    def _remote_files(self, under: str) -> dict[str, Any]:
        import pyarrow.fs as pafs

        root = self._remote(under) if under else self.base
        if self.fs.get_file_info(root).type == pafs.FileType.NotFound:
            return {}
        infos = self.fs.get_file_info(pafs.FileSelector(root, recursive=True))
        out = {}
        for i in infos:
            if i.type == pafs.FileType.File:
                rel = posixpath.relpath(i.path, self.base)
                if not self._skip(rel):
                    out[rel] = i
        return out

    def pull(self, under: str = "") -> int:
        """Bring files the URI has and the mirror lacks (or has older copies of) into the
        mirror; each lands by rename, whole. Returns the number of files fetched."""
        with self._lock:
            return self._pull(under)

    def _pull(self, under: str) -> int:
        from synth_ray.runtime.rundir import atomic_write_with

        index = self._index()
        n = 0
        for rel, info in sorted(self._remote_files(under).items()):
            local = self.mirror / rel
            if local.exists() and index.get(rel, {}).get("remote") == _stamp(info):
                continue  # what we pushed or pulled last time

            def fetch(tmp: Path, src: str = info.path) -> None:
                with self.fs.open_input_stream(src) as s, open(tmp, "wb") as d:
                    shutil.copyfileobj(s, d, CHUNK)

            atomic_write_with(local, fetch)
            index[rel] = _entry(local.stat(), info)
            n += 1
        self._save_index(index)
        if n:
            log.info("[storage] pulled %d file(s) from %s", n, self.join(under) if under
                     else self.uri)
        return n

    def push(self) -> int:
        """Upload the mirror's new and changed files, the manifest last; delete from the URI
        what this mirror pushed before and has since removed (merged shards). Returns the
        number of files uploaded."""
        with self._lock:
            return self._push()

    def _push(self) -> int:
        index = self._index()
        files = {}  # relative path -> (path, stat); a stage may remove files meanwhile
        for folder, _, names in os.walk(self.mirror):  # (os.walk skips vanished folders)
            for name in names:
                f = Path(folder, name)
                rel = f.relative_to(self.mirror).as_posix()
                with contextlib.suppress(FileNotFoundError):
                    if not self._skip(rel):
                        files[rel] = (f, f.stat())
        changed = [rel for rel, (_, st) in files.items()
                   if (index.get(rel, {}).get("size"), index.get(rel, {}).get("mtime_ns"))
                   != (st.st_size, st.st_mtime_ns)]
        changed.sort(key=lambda rel: (rel == "manifest.json", rel))
        sent = []
        for rel in changed:
            f, st = files[rel]
            try:
                _upload(self.fs, f, self._remote(rel))
            except FileNotFoundError:
                if f.exists():
                    raise
                continue  # removed after the listing (merged shards)
            sent.append(rel)
            index[rel] = _entry(st, self.fs.get_file_info(self._remote(rel)))
        changed = sent
        gone = [rel for rel in index if rel not in files]
        for rel in gone:
            try:
                self.fs.delete_file(self._remote(rel))
            except FileNotFoundError:
                pass
            del index[rel]
        self._save_index(index)
        if changed or gone:
            log.info("[storage] pushed %d file(s) to %s%s", len(changed), self.uri,
                     f", removed {len(gone)}" if gone else "")
        return len(changed)


def scratch_dir(prefix: str) -> Path:
    """A private local folder for a worker's output on its way to the URI."""
    base = Path(os.environ.get("TMPDIR", tempfile.gettempdir()))
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))
