"""Reading W&B offline runs back (tests): the `.wandb` file is a LevelDB-format log of
`wandb_internal_pb2.Record` protobufs (what `wandb sync` uploads). wandb ships no Python
reader for it any more, so this one follows the format: 32 KiB blocks of records, each
with a 7-byte header (CRC32C, length, type: full / first / middle / last)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def _chunks(data: bytes):
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, buf = 7, b""  # ':W&B', a 2-byte magic, a version byte
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            yield buf + chunk


def read_run(path: Path) -> dict:
    """One offline run file: its run record's fields, config, history rows, last summary."""
    from wandb.proto import wandb_internal_pb2 as pb

    out: dict = {"id": None, "group": None, "job_type": None, "name": None, "config": {},
                 "history": [], "summary": {}}
    for raw in _chunks(path.read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.update(id=rec.run.run_id, group=rec.run.run_group, job_type=rec.run.job_type,
                       name=rec.run.display_name)
            for item in rec.run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "history":
            out["history"].append({"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                                   for i in rec.history.item})
        elif kind == "summary":
            for i in rec.summary.update:
                out["summary"]["/".join(i.nested_key) or i.key] = json.loads(i.value_json)
    return out


def offline_runs(folder: Path) -> list[dict]:
    return [read_run(p) for p in sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))]
