"""Program files on disk: read with positioned errors, write atomically (temp file + rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .checker import read
from .errors import DslError
from .nodes import Definition
from .printer import to_hy, to_scheme
from .registry import Limits


def read_file(path: str | Path, limits: Limits | None = None) -> tuple[Definition, ...]:
    """Read and check a program file (`.hy` -> Hy reader); unreadable files raise DslError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DslError(f"cannot read file: {e.strerror or e}", str(path)) from None
    return read(data, str(path), limits)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old or the new file, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render(defs, dialect: str) -> str:
    """Canonical source of `defs` in `dialect` ('scheme' or 'hy')."""
    return to_hy(defs) if dialect == "hy" else to_scheme(defs)


def dialect_of(path: str | Path) -> str:
    return "hy" if str(path).endswith(".hy") else "scheme"
