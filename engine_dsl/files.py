"""Program files on disk: read with positioned errors, write atomically (temp file + rename)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .checker import read
from .errors import DslError
from .nodes import Definition
from .printer import to_hy, to_scheme
from .reader import MAX_CHARS
from .registry import Limits


def read_file(path: str | Path, limits: Limits | None = None) -> tuple[Definition, ...]:
    """Read and check a program file (`.hy` -> Hy reader). Unreadable, non-regular, oversized
    files and files without a definition raise DslError."""
    if not str(path):  # Path("") would be the current directory
        raise DslError("an empty file name; give a program file", "''")
    path = Path(path)
    try:
        # non-blocking, so that opening a FIFO does not wait for a writer
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise DslError("not a regular file; give a program file", str(path))
            # at most 4 bytes per character: a larger file cannot be within the cap
            data = f.read(4 * MAX_CHARS + 1)
    except OSError as e:
        raise DslError(f"cannot read file: {e.strerror or e}", str(path)) from None
    except ValueError:  # a NUL byte in the name (from a config file's run.seeds)
        raise DslError("cannot read file: a NUL byte in its name", repr(str(path))) from None
    if len(data) > 4 * MAX_CHARS:
        raise DslError(f"file larger than {4 * MAX_CHARS} bytes exceeds the reading cap",
                       str(path))
    defs = read(data, str(path), limits)
    if not defs:
        raise DslError("no definitions: a program file holds at least one "
                       f"'({'setv' if dialect_of(path) == 'hy' else 'define'} NAME EXPR)'",
                       str(path))
    return defs


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old or the new file, whole.
    A symlink is written through (the file it names is replaced); an existing file keeps its
    permission bits, a new one gets the usual ones (0666 less the umask)."""
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    tmp = None
    try:
        # a short temp name: the final name may already be as long as the file system allows
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:32]}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):  # named by the file being written, not its temp file
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def render(defs, dialect: str) -> str:
    """Canonical source of `defs` in `dialect` ('scheme' or 'hy')."""
    return to_hy(defs) if dialect == "hy" else to_scheme(defs)


def render_exact(defs, dialect: str) -> str:
    """`render`, refused (DslError at the definition) where `dialect` would not read a
    definition back as the same one: names such as `True`, `a.b` or `|a b|` in Hy, or `λ`,
    `1+` or `a,b` in Scheme."""
    for d in defs:
        try:
            same = read(render([d], dialect), "x.hy" if dialect == "hy" else "x.scm") == (d,)
        except DslError:
            same = False
        if not same:
            raise DslError.at(d.span, f"'{d.name}' cannot be written in "
                                      f"{'Hy' if dialect == 'hy' else 'Scheme'}: it would not "
                                      "read back as the same definition; rename it")
    return render(defs, dialect)


def dialect_of(path: str | Path) -> str:
    return "hy" if str(path).endswith(".hy") else "scheme"
