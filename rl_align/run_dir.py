"""Run directories: one per run, holding the resolved config, every stage's artifacts and metrics.

A stage records ``<stage>/stage.json`` (its config digest and outputs) only after
all its files are written, so a re-run with ``--resume`` skips finished stages
whose config is unchanged and redoes anything half-done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

from rl_align.config import RunConfig, dump_yaml
from rl_align.utils.io import read_json, write_json, write_text

log = logging.getLogger("rl_align")


def new_run_dir(cfg: RunConfig) -> Path:
    """``cfg.run_dir`` if set, else ``<run_root>/<name>-<YYYYmmdd-HHMMSS>`` (unique)."""
    if cfg.run_dir:
        return Path(cfg.run_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.run_root) / f"{cfg.name}-{stamp}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def setup_logging(run_dir: Optional[Path] = None, level: int = logging.INFO) -> None:
    """Console logging, plus ``run_dir/log.txt`` when a run dir is given."""
    root = logging.getLogger("rl_align")
    root.setLevel(level)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        root.addHandler(h)
    for old in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(old)
        old.close()
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(run_dir / "log.txt")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)


def non_default(obj: Any, resume_only: bool = False) -> Any:
    """The fields of a config dataclass that differ from their defaults (recursively); other values as they are.

    A stage's digest is taken over this, so a new rl-align version that *adds* a config field (with a default)
    does not invalidate finished stages of existing run directories. ``resume_only`` leaves out the fields
    declared ``schedule=True`` (epochs, workers, resources…): what a checkpoint must share to be resumed.
    """
    if not dataclasses.is_dataclass(obj):
        return obj
    out = {}
    for f in dataclasses.fields(obj):
        if resume_only and f.metadata.get("schedule"):
            continue
        v = getattr(obj, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if default is not dataclasses.MISSING and v == default:
            continue
        out[f.name] = non_default(v, resume_only)
    return out


def resume_view(section: Any) -> dict:
    """The non-default, non-schedule fields of a config section: a checkpoint resumes only if they are equal."""
    return non_default(section, resume_only=True)


def config_digest(section: Any) -> str:
    """Short SHA-256 of a config section (dataclass: its non-default fields; or a dict)."""
    data = non_default(section) if not isinstance(section, dict) else section
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RunDir:
    """A run directory and its per-stage completion records."""

    def __init__(self, path: str | Path, cfg: RunConfig) -> None:
        self.path = Path(path)
        self.cfg = cfg
        self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self) -> None:
        """Resolved config (secrets redacted) as ``config.yaml``."""
        write_text(self.path / "config.yaml", dump_yaml(self.cfg))

    def stage_dir(self, stage: str) -> Path:
        d = self.path / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def is_done(self, stage: str, digest: str) -> bool:
        """Whether ``stage`` finished with a config of this digest."""
        p = self.path / stage / "stage.json"
        if not p.exists():
            return False
        try:
            return read_json(p).get("digest") == digest
        except ValueError:
            return False

    def mark_done(self, stage: str, digest: str, info: dict, seconds: float) -> None:
        write_json(self.path / stage / "stage.json", {"stage": stage, "digest": digest, "seconds": seconds,
                                                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info})

    def append_metrics(self, record: dict) -> None:
        """Append one JSON line to ``metrics.jsonl``."""
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")
