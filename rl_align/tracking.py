"""Metrics sinks: JSONL in the run dir (always) and wandb (offline unless the user sets WANDB_MODE).

The config sent to wandb goes through ``to_dict`` (secret-looking keys redacted);
WANDB_API_KEY is read by wandb from the environment and never logged or saved.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger("rl_align")


class Tracker:
    """Appends metric records to ``<dir>/metrics.jsonl`` and mirrors them to wandb."""

    def __init__(self, directory: str | Path, name: str, config: Optional[dict] = None, use_wandb: bool = True,
                 group: Optional[str] = None) -> None:
        self.path = Path(directory) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wandb = None
        if use_wandb:
            try:
                import wandb

                os.environ.setdefault("WANDB_MODE", "offline")
                os.environ.setdefault("WANDB_SILENT", "true")
                self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "rl-align"), name=name, group=group,
                                         dir=str(self.path.parent), config=config or {}, reinit="finish_previous")
            except Exception as e:  # wandb is a mirror: never fail a run because of it
                log.warning("wandb disabled: %s", e)
                self._wandb = None

    def drop_after(self, step: int) -> int:
        """Remove step records past ``step`` (work a killed run logged after its last checkpoint, about to be
        redone); returns how many were dropped. The file is rewritten atomically."""
        if not self.path.exists():
            return 0
        keep, dropped = [], 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:   # a line cut short by the kill
                dropped += 1
                continue
            if isinstance(rec.get("step"), int) and rec["step"] > step and "event" not in rec:
                dropped += 1
                continue
            keep.append(line)
        if dropped:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
            os.replace(tmp, self.path)
        return dropped

    def log(self, record: dict[str, Any], step: Optional[int] = None) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=step)

    def finish(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
