"""Read an offline wandb run file (``run-*.wandb``) without syncing it: its history rows, keyed as logged.

wandb 0.31 ships no reader for its transaction log. The file is a LevelDB-style log (a 7-byte ``:W&B`` header,
32 KiB blocks of records each with a 7-byte header: CRC, length, type FULL/FIRST/MIDDLE/LAST) of
``wandb_internal_pb2.Record`` protobufs; this reads it with wandb's own protobuf classes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: str | Path) -> list:
    """Every ``Record`` in the file, in order."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a wandb run file")
    pos, buf, raw = 7, b"", []
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:                       # block trailer: padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + 7: pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            raw.append(chunk)
        elif kind == _FIRST:
            buf = chunk
        elif kind == _MIDDLE:
            buf += chunk
        elif kind == _LAST:
            raw.append(buf + chunk)
            buf = b""
    out = []
    for r in raw:
        rec = pb.Record()
        rec.ParseFromString(r)
        out.append(rec)
    return out


def history(path: str | Path) -> list[dict]:
    """One dict per ``wandb.log`` call: key → JSON-decoded value (histograms and tables stay dicts)."""
    rows = []
    for rec in records(path):
        if rec.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for item in rec.history.item:
            parts = [item.key] if item.key else list(item.nested_key)  # a histogram's fields come nested
            node = row
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = json.loads(item.value_json)
        rows.append(row)
    return rows
