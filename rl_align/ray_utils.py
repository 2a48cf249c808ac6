"""Ray plumbing shared by every distributed stage: joining/starting Ray, and finding the checkpoint to resume.

Ray Train v2 has no ``resume_from_checkpoint``; our training loops resume from
the newest of (a) the checkpoint Ray Train hands a restarted worker group and
(b) the newest complete checkpoint in the run's storage folder (a re-run of the
command after the driver was killed). A checkpoint is "complete" when it holds
our state file, which is written last.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

RAY_RUN_NAME = "ray_train"
STATE = "rl_align_state.json"


def init_ray(num_cpus: Optional[int] = None, dashboard_port: Optional[int] = None) -> None:
    """Join the cluster in ``RAY_ADDRESS`` (e.g. under ``ray job submit``) or start a new local Ray on loopback
    (never one that merely happens to run on the machine).

    The local Ray's dashboard listens on 127.0.0.1 only, at ``dashboard_port`` (default: Ray's 8265, or the
    next free port when that is taken).
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
    else:
        # the dashboard serves Ray's State API, which Ray Train's placement-group cleaner polls (without it the
        # cleaner logs a warning every few seconds and cannot clean up after a dead controller); loopback only
        # address="local": always a new instance of our own, never another local Ray found on the machine
        # (that one's resources, jobs and auth are not ours; with two alive Ray would refuse to choose)
        extra = {"dashboard_port": int(dashboard_port)} if dashboard_port else {}
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True,
                 _node_ip_address="127.0.0.1", **extra)


def latest_checkpoint(storage: Path) -> Optional[Path]:
    """Newest complete checkpoint directory (one holding our state file) of a previous run, if any."""
    root = Path(storage) / RAY_RUN_NAME
    if not root.exists():
        return None
    cands = [p for p in root.glob("checkpoint_*") if (p / STATE).exists()]
    if not cands:
        return None
    return max(cands, key=lambda p: json.loads((p / STATE).read_text())["step"])


def _ckpt_step(ckpt) -> int:
    with ckpt.as_directory() as d:
        p = Path(d) / STATE
        return json.loads(p.read_text())["step"] if p.exists() else -1


def resume_checkpoint(reported, storage: Path):
    """The newest checkpoint to resume from: Ray's latest reported one, or a newer complete one on disk.

    A worker killed right after reporting can restart before the controller has
    registered that report; the storage folder then holds the newer checkpoint.
    """
    from ray.train import Checkpoint

    local = latest_checkpoint(storage)
    if local is None:
        return reported
    local_ckpt = Checkpoint.from_directory(str(local))
    if reported is None or _ckpt_step(local_ckpt) > _ckpt_step(reported):
        return local_ckpt
    return reported
