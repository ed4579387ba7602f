"""The run directory (DESIGN §4) and the one module that writes run state.

    runs/NAME/
      config.toml  seeds/  generations/gen-0007.scm  hall-of-fame.scm  log.jsonl
      lineage.graphml  model/  checkpoint/  plots/  report.json

Every file is written atomically (temp file + rename). A generation is committed by
`checkpoint/latest.json`, written last: it names the checkpoint directory of that generation,
which holds the trainer (safetensors + JSON), the population (JSON), the run's RNG state and
the number of log lines that belong to it. On resume the log is cut back to those lines and
the run continues at `next_generation`, so a run killed at any instant ends as if never
stopped. No pickle anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from engine_dsl.files import atomic_write

GEN_WIDTH = 4


class RunError(Exception):
    """A run directory that cannot be used as asked; str() is the one-line reason."""


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # paths
    @property
    def config(self) -> Path:
        return self.path / "config.toml"

    @property
    def seeds(self) -> Path:
        return self.path / "seeds"

    @property
    def log(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def hall_of_fame(self) -> Path:
        return self.path / "hall-of-fame.scm"

    @property
    def lineage(self) -> Path:
        return self.path / "lineage.graphml"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoint"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def report(self) -> Path:
        return self.path / "report.json"

    def generation_file(self, g: int) -> Path:
        return self.path / "generations" / f"gen-{g:0{GEN_WIDTH}d}.scm"

    def is_run(self) -> bool:
        return self.config.exists()

    # creation and checks
    def create(self, config: str, seeds: dict[str, bytes]) -> None:
        """Make a new run directory holding `config` and copies of the seed files, all at once
        (built in a temp sibling, then renamed): a kill leaves no run or a whole one. Refuses
        a directory that already holds a run or other files."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path} is a file, not a directory; choose another --out")
        if self.path.exists() and (self.is_run() or any(self.path.iterdir())):
            what = "a run" if self.is_run() else "files"
            raise RunError(f"{self.path} already holds {what}; resume it with --resume "
                           f"{self.path} or choose another --out")

        def build(tmp: Path) -> None:
            for name, data in seeds.items():
                atomic_write(tmp / "seeds" / name, data)
            atomic_write(tmp / self.config.name, config)

        self.replace_dir(self.path, build)

    def require_run(self) -> None:
        if not self.path.is_dir():
            what = "a file, not a run directory" if self.path.exists() else "no such run directory"
            raise RunError(f"{self.path}: {what}")
        if not self.is_run():
            raise RunError(f"{self.path}: not a run directory (no config.toml)")

    # writing
    def write(self, path: Path, data: str | bytes) -> None:
        atomic_write(path, data)

    def write_json(self, path: Path, obj) -> None:
        atomic_write(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")

    def append_log(self, entry: dict) -> int:
        """Add one line to log.jsonl (the whole file is rewritten atomically); returns the
        number of lines now in it."""
        lines = self.log_lines()
        lines.append(json.dumps(entry, sort_keys=True))
        self.write(self.log, "\n".join(lines) + "\n")
        return len(lines)

    def log_lines(self) -> list[str]:
        if not self.log.exists():
            return []
        return [ln for ln in self.log.read_text(encoding="utf-8").splitlines() if ln.strip()]

    def truncate_log(self, n: int) -> None:
        lines = self.log_lines()
        if len(lines) != n:
            self.write(self.log, "".join(ln + "\n" for ln in lines[:n]))

    # checkpoints
    def checkpoint_dir(self, tag: str) -> Path:
        return self.checkpoints / tag

    def commit(self, tag: str, state: dict) -> None:
        """Make checkpoint `tag` (already written) the one a resume starts from."""
        self.write_json(self.checkpoint_dir(tag) / "state.json", state)
        self.write_json(self.checkpoints / "latest.json", {"checkpoint": tag})
        for old in self.checkpoints.iterdir():
            if old.is_dir() and old.name != tag:
                shutil.rmtree(old, ignore_errors=True)

    def latest(self) -> tuple[Path, dict] | None:
        """(checkpoint directory, its state) of the last committed generation, or None."""
        pointer = self.checkpoints / "latest.json"
        if not pointer.exists():
            return None
        try:
            tag = json.loads(pointer.read_text(encoding="utf-8"))["checkpoint"]
            directory = self.checkpoint_dir(tag)
            state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError) as e:
            raise RunError(f"{self.checkpoints}: unreadable checkpoint ({e})") from None
        return directory, state

    def fresh_checkpoint_dir(self, tag: str) -> Path:
        """An empty directory for checkpoint `tag` (left-overs of a killed write removed)."""
        d = self.checkpoint_dir(tag)
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def replace_dir(self, final: Path, build) -> None:
        """Build a directory's content in a temp sibling with `build(tmp)`, then swap it in."""
        tmp = final.with_name(f".{final.name}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        build(tmp)
        old = final.with_name(f".{final.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
