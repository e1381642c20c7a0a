"""A run directory in a bucket (storage.py) against a real S3 API (a local moto server):
what a push uploads and in what order, what a pull brings to a fresh mirror, deletions,
and the files that never leave the machine."""

from __future__ import annotations

import polars as pl
import pyarrow.fs as pafs
import pytest

from synth_ray.runtime import storage
from synth_ray.runtime.storage import Remote, read_parquet, upload_tree


def _listing(uri: str) -> dict[str, bytes]:
    fs, base = pafs.FileSystem.from_uri(uri)
    out = {}
    for i in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        if i.type == pafs.FileType.File:
            with fs.open_input_stream(i.path) as f:
                out[i.path[len(base) + 1:]] = f.read()
    return out


def test_push_then_pull_into_a_fresh_mirror(s3_server, tmp_path, monkeypatch) -> None:
    uri = f"{s3_server}/push-pull"
    a = tmp_path / "a"
    (a / "splits").mkdir(parents=True)
    (a / "splits" / "test.parquet").write_bytes(b"PAR1 test")
    (a / "manifest.json").write_text('{"stages": {}}')
    (a / "config.yaml").write_text("run: {}\n")
    (a / ".lock").write_text("pid 1\n")  # this machine's, not the run's
    (a / "splits" / ".part.parquet.x.tmp").write_text("half")  # never complete
    (a / "ray_train" / "r").mkdir(parents=True)
    (a / "ray_train" / "r" / "c.json").write_text("{}")  # Ray Train writes the URI itself
    order = []
    real = storage._upload
    monkeypatch.setattr(storage, "_upload",
                        lambda fs, f, r: (order.append(f.name), real(fs, f, r)))
    remote = Remote(uri, a)
    assert remote.push() == 3
    assert order[-1] == "manifest.json"  # never a manifest naming outputs not there yet
    assert _listing(uri) == {"splits/test.parquet": b"PAR1 test",
                             "manifest.json": b'{"stages": {}}', "config.yaml": b"run: {}\n"}
    assert remote.push() == 0  # nothing changed, nothing sent

    b = tmp_path / "b"  # another machine resumes the run
    assert Remote(uri, b).pull() == 3
    assert (b / "splits" / "test.parquet").read_bytes() == b"PAR1 test"
    assert not (b / ".lock").exists()

    # a changed manifest and a removed file reach the bucket, then the other mirror
    (a / "manifest.json").write_text('{"stages": {"split": {}}}')
    (a / "splits" / "test.parquet").unlink()
    (a / "splits" / "part-1.parquet").write_bytes(b"PAR1 one")
    assert remote.push() == 2
    assert set(_listing(uri)) == {"splits/part-1.parquet", "manifest.json", "config.yaml"}
    assert Remote(uri, b).pull() == 2
    assert (b / "manifest.json").read_text() == '{"stages": {"split": {}}}'
    assert Remote(uri, b).pull() == 0  # up to date


def test_pull_cut_short_leaves_no_partial_file(s3_server, tmp_path, monkeypatch) -> None:
    uri = f"{s3_server}/cut"
    a = tmp_path / "a"
    a.mkdir()
    (a / "big.parquet").write_bytes(b"x" * 100_000)
    Remote(uri, a).push()
    b = tmp_path / "b"
    b.mkdir()
    (b / "big.parquet").write_bytes(b"old complete copy")
    remote = Remote(uri, b)

    class Broken:
        def __init__(self, stream):
            self.stream, self.n = stream, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.stream.close()

        def read(self, size):
            self.n += 1
            if self.n > 1:
                raise OSError("connection reset")
            return self.stream.read(10)

    opener = remote.fs.open_input_stream
    monkeypatch.setattr(remote, "fs", type("FS", (), {
        "open_input_stream": lambda self, p: Broken(opener(p)),
        "get_file_info": lambda self, x: opener.__self__.get_file_info(x)})())
    with pytest.raises(OSError, match="connection reset"):
        remote.pull()
    assert (b / "big.parquet").read_bytes() == b"old complete copy"
    assert [p.name for p in b.iterdir()] == ["big.parquet"]  # no temp file left


def test_worker_side_read_and_upload(s3_server, tmp_path) -> None:
    df = pl.DataFrame({"id": ["a", "b"], "n": [1, 2]})
    local = tmp_path / "d.parquet"
    df.write_parquet(local)
    Remote(f"{s3_server}/w", tmp_path).push()
    assert read_parquet(f"{s3_server}/w/d.parquet").equals(df)
    assert read_parquet(str(local)).equals(df)

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for name in ("training_summary.json", "adapter_model.safetensors", "README.md"):
        (adapter / name).write_text(name)
    order = []
    real = storage._upload
    storage._upload = lambda fs, f, r: (order.append(f.name), real(fs, f, r))
    try:
        assert upload_tree(adapter, f"{s3_server}/w/adapters/t/human") == 3
    finally:
        storage._upload = real
    assert order[-1] == "training_summary.json"  # a finished adapter is one with a summary
    assert _listing(f"{s3_server}/w/adapters/t/human")["README.md"] == b"README.md"


def test_background_push_sends_finished_shards_while_a_stage_runs(s3_server, tmp_path) -> None:
    import time

    uri = f"{s3_server}/background"
    remote = Remote(uri, tmp_path)
    remote.push_every(0.2)
    try:
        (tmp_path / "generations" / "a").mkdir(parents=True)
        (tmp_path / "generations" / "a" / "shard-00000.parquet").write_bytes(b"PAR1 0")
        deadline = time.time() + 30
        while "generations/a/shard-00000.parquet" not in _listing(uri):
            assert time.time() < deadline, "no background push"
            time.sleep(0.1)
        # the stage merges its shards and removes them: the bucket follows
        (tmp_path / "generations" / "a.parquet").write_bytes(b"PAR1 all")
        import shutil

        shutil.rmtree(tmp_path / "generations" / "a")
        while set(_listing(uri)) != {"generations/a.parquet"}:
            assert time.time() < deadline, _listing(uri)
            time.sleep(0.1)
    finally:
        remote.stop()


def test_a_stage_in_a_bucket_resumes_from_a_fresh_mirror(s3_server, tmp_path,
                                                         demo_config_path) -> None:
    """`synth-ray split` with run.dir in the bucket, then again on another mirror (another
    machine): the second finds the stage current from what the bucket holds, and its log
    continues the first one's."""
    import json

    from typer.testing import CliRunner

    from synth_ray.cli import app

    uri = f"{s3_server}/cli"
    args = ["split", str(demo_config_path), f"run.dir={uri}", "run.push_every_s=3600"]
    r = CliRunner().invoke(app, [*args, f"run.local_dir={tmp_path / 'm1'}"])
    assert r.exit_code == 0, r.output
    bucket = _listing(uri)
    assert json.loads(bucket["manifest.json"])["stages"]["split"]["status"] == "done"
    assert {f"splits/part-{k}.parquet" for k in range(1, 5)} <= set(bucket)
    assert ".lock" not in bucket and "config.yaml" in bucket

    r = CliRunner().invoke(app, [*args, f"run.local_dir={tmp_path / 'm2'}"])
    assert r.exit_code == 0, r.output
    assert "[split] up to date" in r.output
    assert (tmp_path / "m2" / "splits" / "test.parquet").read_bytes() == bucket[
        "splits/test.parquet"]
    log = _listing(uri)["log.txt"].decode()
    assert log.index("[split] done") < log.index("[split] up to date")
