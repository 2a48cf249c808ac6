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

    def log(self, record: dict[str, Any], step: Optional[int] = None) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=step)

    def finish(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
