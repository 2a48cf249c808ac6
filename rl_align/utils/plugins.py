"""Plug-ins: modules outside rl-align that register their own parts (tokenizer, engine, objective, reward…).

A run config lists them (``plugins: [my_project.rewards, plugins/toy_engine.py]``); the driver imports them
before the config is checked, and every Ray actor that builds something from a registry imports them again in
its own process. A module name must be importable there (the driver's working directory is on Ray workers'
path; under ``ray job submit --working-dir`` the shipped directory is); a ``.py`` path is imported from that
file (made absolute when the config is checked).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path


def _file_module_name(path: Path) -> str:
    return f"rl_align_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def load_plugins(entries: list[str]) -> list[str]:
    """Import every plug-in once (a second call is a no-op); returns their module names.

    Raises ValueError naming the entry when a module or file cannot be imported."""
    names = []
    for entry in entries:
        if entry.endswith(".py"):
            path = Path(entry).resolve()
            name = _file_module_name(path)
            if name not in sys.modules:
                if not path.is_file():
                    raise ValueError(f"plugins: {entry}: no such file")
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except Exception:
                    del sys.modules[name]
                    raise
        else:
            name = entry
            try:
                importlib.import_module(entry)
            except ImportError as e:
                raise ValueError(f"plugins: cannot import {entry!r}: {e}") from None
        names.append(name)
    return names


def absolute(entries: list[str]) -> list[str]:
    """File entries made absolute (so processes with another working directory find them); modules as they are."""
    return [str(Path(e).resolve()) if e.endswith(".py") else e for e in entries]
