"""Metrics sinks: JSONL in the run dir (always, flat keys) and wandb (offline unless the user sets WANDB_MODE).

On wandb, keys are grouped into panels by a namespace (:func:`namespaced`: ``train/``, ``rollout/``,
``reward/``, ``gate/``, ``eval/``, ``timing/``) against one ``global_step`` axis; per-sample diagnostics go
as ``wandb.Histogram`` and sampled rollouts as a ``wandb.Table``. Tune trials of one sweep share a group
(``WANDB_RUN_GROUP``). The config sent to wandb goes through ``to_dict`` (secret-looking keys redacted);
WANDB_API_KEY is read by wandb from the environment and never logged or saved.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

log = logging.getLogger("rl_align")

_TIMING = ("samples_per_s", "tokens_per_s", "windows_per_s", "impressions_per_s", "train_seconds", "eval_seconds",
           "seconds")
_GATE = ("admission_rate", "fail_difficulty", "fail_discriminability", "fail_sanity")


def namespaced(key: str) -> str:
    """The wandb panel a flat metric key belongs to (keys that already hold a ``/`` are kept)."""
    if "/" in key:
        return key
    if key.startswith(("valid_", "best_valid", "test_")):
        ns = "eval"
    elif key in _TIMING or key.endswith("_s"):
        ns = "timing"
    elif key in _GATE or key.startswith(("difficulty_", "disc_")):
        ns = "gate"
    elif key.startswith(("reward_", "zero_adv", "adv_")):
        ns = "reward"
    elif key.startswith("rollout_") or key == "injected_share":
        ns = "rollout"
    else:
        ns = "train"
    return f"{ns}/{key}"


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
                self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "rl-align"), name=name,
                                         group=group or os.environ.get("WANDB_RUN_GROUP"),
                                         dir=str(self.path.parent), config=config or {}, reinit="finish_previous")
                self._wandb.define_metric("global_step")
                self._wandb.define_metric("*", step_metric="global_step")
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

    def log(self, record: dict[str, Any], step: Optional[int] = None,
            histograms: Optional[dict[str, Any]] = None) -> None:
        """Append ``record`` to the JSONL; on wandb, its numbers under their namespace and each of ``histograms``
        (name → 1-d values, e.g. the gate's per-sample difficulty) as a ``wandb.Histogram``."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")
        if self._wandb is None:
            return
        import wandb

        row = {namespaced(k): v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for name, values in (histograms or {}).items():
            v = np.asarray(values, np.float64)
            v = v[np.isfinite(v)]
            if v.size:
                row[namespaced(name)] = wandb.Histogram(v.tolist())
        if step is not None:
            row["global_step"] = step
        self._wandb.log(row)

    def table(self, name: str, columns: list[str], rows: list[list], step: Optional[int] = None) -> None:
        """A ``wandb.Table`` (e.g. sampled rollouts with their rewards); nothing without wandb."""
        if self._wandb is None:
            return
        import wandb

        self._wandb.log({namespaced(name): wandb.Table(columns=columns, data=rows),
                         **({"global_step": step} if step is not None else {})})

    def finish(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
