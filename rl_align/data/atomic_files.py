"""Reader for RecBole atomic files (``.inter``, ``.item``, ``.user``).

Format: tab-separated, first line a typed header ``name:type`` with type one of
``token``, ``token_seq``, ``float``, ``float_seq``. Every problem is reported
with the file, the line and the column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


class DataFileError(ValueError):
    """A malformed data file; the message names the file, line and field."""


def _read_lines(path: Path, encoding: str | None) -> list[str]:
    if not path.exists():
        raise DataFileError(f"{path}: file not found")
    raw = path.read_bytes()
    if encoding:
        return raw.decode(encoding).splitlines()
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        # ML-100K's .item file is latin-1 (as shipped by RecBole).
        return raw.decode("latin-1").splitlines()


def _parse_header(path: Path, line: str) -> tuple[list[str], list[str]]:
    """The typed header line ``name:type<TAB>...`` → (names, types); a malformed field is named with its column."""
    names, types = [], []
    for col, h in enumerate(line.rstrip("\r\n").split("\t"), start=1):
        if ":" not in h:
            raise DataFileError(f"{path}: line 1, column {col}: header field {h!r} is not 'name:type'")
        name, typ = h.rsplit(":", 1)
        if typ not in ATOMIC_TYPES:
            raise DataFileError(
                f"{path}: line 1, column {col}: field {name!r} has unknown type {typ!r}; expected one of {list(ATOMIC_TYPES)}"
            )
        names.append(name)
        types.append(typ)
    return names, types


def read_header(path: str | Path) -> list[str]:
    """The column names of an atomic file, from its first line only (config checks, before any data is loaded)."""
    path = Path(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        return _parse_header(path, f.readline())[0]


def read_atomic(
    path: str | Path,
    required: Iterable[str] = (),
    encoding: str | None = None,
) -> dict[str, list]:
    """Read one atomic file into ``{column: values}``.

    Args:
        path: the ``.inter``/``.item``/``.user`` file.
        required: columns that must be present (error lists the ones found).
        encoding: text encoding; default tries UTF-8 then latin-1.

    Returns:
        A dict of column name → list of parsed values (str, list[str], float, list[float]).
    """
    path = Path(path)
    lines = _read_lines(path, encoding)
    if not lines or not lines[0].strip():
        raise DataFileError(f"{path}: line 1: empty file or missing header (expected 'name:type' columns)")
    names, types = _parse_header(path, lines[0])
    missing = [r for r in required if r not in names]
    if missing:
        raise DataFileError(f"{path}: missing required column(s) {missing}; found {names}")
    cols: dict[str, list] = {n: [] for n in names}
    width = len(names)
    for lineno, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != width:
            raise DataFileError(f"{path}: line {lineno}: expected {width} tab-separated fields, got {len(parts)}")
        for name, typ, val in zip(names, types, parts):
            try:
                if typ == "token":
                    cols[name].append(val)
                elif typ == "token_seq":
                    cols[name].append(val.split())
                elif typ == "float":
                    cols[name].append(float(val) if val != "" else float("nan"))
                else:
                    cols[name].append([float(x) for x in val.split()])
            except ValueError:
                raise DataFileError(f"{path}: line {lineno}: field {name!r}: {val!r} is not a {typ}") from None
    return cols
