"""Cluster launch files: every field KubeRay / the Ray cluster launcher reads is there and consistent, and every
rl-align config and key they name loads (no cluster needed)."""

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import ray
import yaml

from rl_align.checks import check_config
from rl_align.config import RunConfig, load_config

CLUSTERS = Path(__file__).resolve().parents[1] / "clusters"
ROOT = CLUSTERS.parent


def _load(name):
    return yaml.safe_load((CLUSTERS / name).read_text())


def _gpu_demand(cfg: RunConfig) -> float:
    """GPUs the RL stage asks for at once (learners, rollout workers, reward replicas)."""
    r = cfg.rl
    return (r.learners * r.gpus_per_learner + r.rollout_workers * r.gpus_per_rollout_worker
            + cfg.reward.replicas * cfg.reward.gpus_per_replica)


def _entrypoint_config(entrypoint: str) -> RunConfig:
    argv = shlex.split(entrypoint)
    assert argv[:3] == ["python", "-m", "rl_align"] and argv[3] in {"run", "rl", "sft"}, argv
    path = ROOT / argv[4]
    cfg = load_config(path, RunConfig, [a for i, a in enumerate(argv) if i and argv[i - 1] == "--set"])
    check_config(cfg, str(path))
    assert "--run-dir" in argv and argv[argv.index("--run-dir") + 1].startswith("/shared/")
    return cfg


def test_kuberay_rayjob_fields():
    job = _load("kuberay-rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    cfg = _entrypoint_config(spec["entrypoint"])
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert set(env) <= {"working_dir", "env_vars", "pip", "py_modules", "excludes"}
    assert all(isinstance(v, str) for v in env["env_vars"].values())
    assert env["env_vars"]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"   # bans reach the in-process processor
    assert spec["shutdownAfterJobFinishes"] is True and spec["submissionMode"] in {"K8sJobMode", "HTTPMode"}
    rc = spec["rayClusterSpec"]
    assert rc["rayVersion"] == ray.__version__          # the image's Ray must be the one the code is tested on
    head = rc["headGroupSpec"]
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())
    head_c = head["template"]["spec"]["containers"][0]
    assert head_c["image"] and {p["containerPort"] for p in head_c["ports"]} >= {6379, 8265}
    gpus = 0
    for g in rc["workerGroupSpecs"]:
        assert g["groupName"] and g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        c = g["template"]["spec"]["containers"][0]
        assert c["image"] == head_c["image"]
        req, lim = c["resources"]["requests"], c["resources"]["limits"]
        assert req.get("nvidia.com/gpu") == lim.get("nvidia.com/gpu")   # Kubernetes requires them equal
        gpus += int(lim.get("nvidia.com/gpu", 0)) * g["minReplicas"]
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert "/shared" in mounts and "/dev/shm" in mounts
    assert gpus >= max(_gpu_demand(cfg), cfg.sft.num_workers if cfg.sft.use_gpu else 0)


def test_ray_cluster_launcher_fields():
    c = _load("cluster.yaml")
    for key in ("cluster_name", "max_workers", "provider", "auth", "available_node_types", "head_node_type",
                "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in c, key
    assert c["provider"]["type"] in {"aws", "gcp", "azure", "kuberay", "local"}
    types = c["available_node_types"]
    assert c["head_node_type"] in types
    for name, t in types.items():
        assert "node_config" in t and "resources" in t, name
    workers = [t for n, t in types.items() if n != c["head_node_type"]]
    assert sum(t.get("min_workers", 0) for t in workers) <= c["max_workers"]
    assert all(t.get("min_workers", 0) <= t.get("max_workers", c["max_workers"]) for t in workers)
    head_start = " ".join(c["head_start_ray_commands"])
    assert "--head" in head_start and "--dashboard-host=127.0.0.1" in head_start   # dashboard on loopback
    assert "--address=" in " ".join(c["worker_start_ray_commands"])


def test_runtime_env_is_a_valid_ray_runtime_env():
    from ray.runtime_env import RuntimeEnv

    env = _load("runtime_env.yaml")
    RuntimeEnv(**env)                    # Ray's own validation of field names and types
    assert "runs/" in env["excludes"] and all(isinstance(v, str) for v in env["env_vars"].values())
    assert "WANDB_API_KEY" not in env["env_vars"]   # secrets come from the cluster, never from the repo


def test_dockerfile_uses_the_tested_ray_and_submit_script_parses():
    base = re.search(r"^FROM\s+rayproject/ray:(\S+)", (CLUSTERS / "Dockerfile").read_text(), re.M)
    assert base and base.group(1).startswith(ray.__version__ + "-")
    assert subprocess.run(["bash", "-n", str(CLUSTERS / "submit.sh")]).returncode == 0
    default = re.search(r'CONFIG="\$\{1:-(\S+)\}"', (CLUSTERS / "submit.sh").read_text()).group(1)
    check_config(load_config(ROOT / default, RunConfig), default)


@pytest.mark.parametrize("name", ["gpu.yaml", "rl_gpu.yaml"])
def test_cluster_run_configs_load(name):
    cfg = load_config(CLUSTERS / name, RunConfig)
    check_config(cfg, name)
    assert cfg.run_root.startswith("/shared") and cfg.sft.use_gpu
