"""The run directory (DESIGN §4) and the one module that writes run state.

    runs/NAME/
      config.toml  seeds/  generations/gen-0007.scm  hall-of-fame.scm  log.jsonl
      lineage.graphml  model/  checkpoint/  plots/  report.json

Every file is written atomically (temp file + rename). A generation is committed by
`checkpoint/latest.json`, written last: it names the checkpoint directory of that generation,
which holds the trainer (safetensors + JSON) and the `RunState` (`state.json`: population, the
run's RNG state, the number of log lines that belong to it and the last of them). On resume the
log is cut back to those lines and the run continues at `next_generation`, so a run killed at
any instant ends as if never stopped. No pickle anywhere.

A run directory is used by one process at a time: `lock()` takes an exclusive `flock` on
`.lock` (released by the kernel when the process ends, so a crash leaves no stale lock) and
writes who holds it there, for the message a second process gets.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import random
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from engine_dsl.files import atomic_write
from neural.tasks import json_lines

GEN_WIDTH = 4
CHECKPOINT_TAG = re.compile(r"gen-\d{4,9}")


class RunError(Exception):
    """A run directory that cannot be used as asked; str() is the one-line reason."""


@dataclass(frozen=True)
class RunState:
    """What resuming needs beyond the trainer checkpoint, for the generation it commits."""

    next_generation: int  # the generation a resume runs next
    log_lines: int  # lines of log.jsonl that belong to the committed generations
    difficulty: int | None  # the task's difficulty now (the curriculum moves it)
    rng: tuple  # the evolution `random.Random` state: (version, 625 ints, gauss)
    population: dict | None  # evolution.population.Population.to_dict()
    champion: str  # Scheme source of the champion decoder
    log_entry: dict  # the committed generation's log line (repairs a torn log)
    data: str | None = None  # the task's `digest()` (None: a run made before it was kept)

    def to_json(self) -> dict:
        version, internal, gauss = self.rng
        return dataclasses.asdict(self) | {"rng": [version, list(internal), gauss]}

    @classmethod
    def from_json(cls, data, where: str) -> RunState:
        """RunError naming `where` and the key for a missing or ill-typed field."""
        types = {"next_generation": int, "log_lines": int, "difficulty": int | None,
                 "rng": list, "population": dict | None, "champion": str, "log_entry": dict}
        if not isinstance(data, dict):
            raise RunError(f"{where}: not a JSON object")
        for key, kind in types.items():
            if key not in data:
                raise RunError(f"{where}: missing key '{key}'; the checkpoint is damaged")
            if not isinstance(data[key], kind) or isinstance(data[key], bool):
                raise RunError(f"{where}: '{key}' has the wrong type; the checkpoint is damaged")
        rng = data["rng"]
        state = None
        if (len(rng) == 3 and isinstance(rng[0], int) and isinstance(rng[1], list)
                and all(isinstance(x, int) for x in rng[1])
                and (rng[2] is None or isinstance(rng[2], float))):
            state = (rng[0], tuple(rng[1]), rng[2])
            try:  # the right version, 625 words in range: what random.setstate takes
                random.Random().setstate(state)
            except (ValueError, TypeError, OverflowError):
                state = None
        if state is None:
            raise RunError(f"{where}: 'rng' is not a random state; the checkpoint is damaged")
        digest = data.get("data")
        if digest is not None and not isinstance(digest, str):
            raise RunError(f"{where}: 'data' has the wrong type; the checkpoint is damaged")
        return cls(**{k: data[k] for k in types} | {"rng": state, "data": digest})


def _is_log_entry(entry) -> bool:
    """Whether `entry` holds, with their types, what show, lineage and the plots read of a
    log line (a line that parses as JSON may still lack them: an edited or damaged log)."""
    if not isinstance(entry, dict) or type(entry.get("generation")) is not int:
        return False
    try:
        for value in (entry["valid"]["champion"], entry["valid"]["greedy"],
                      entry["champion"]["cost"], entry["population"]["mean_score"],
                      entry["population"]["mean_cost"]):
            format(value, ".3f")
        c = entry["champion"]
        format(c["size"], "d")
        if not (isinstance(c["id"], str) and isinstance(c["source"], str)):
            return False
        for key, value in c.get("constants", {}).items():
            key.split(":", 1)[1], format(value, ".3f")  # the constants plot's label and value
        pop = entry["population"]
        for key in ("costs", "scores", "sizes"):
            for value in pop[key]:
                format(value, ".3f")
        for f in entry["front"]:
            format(f["cost"], ".3f"), format(f["score"], ".3f")
        model = entry.get("model")
        if model:
            format(model["loss"], ".4f")
            if model.get("program_loss") is not None:
                format(model["program_loss"], ".4f")
        tuning = entry.get("tuning")
        if tuning:
            str(tuning["kept"]), str(tuning["undone"])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return False
    return True


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.created = False  # by `create`, in this process
        self._empty_before = False  # `create` was given an existing empty directory

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

        self._empty_before = self.path.is_dir()

        def build(tmp: Path) -> None:
            for name, data in seeds.items():
                atomic_write(tmp / "seeds" / name, data)
            (tmp / self.checkpoints.name).mkdir()  # gone later: removed by hand, not by us
            atomic_write(tmp / self.config.name, config)

        try:
            self.replace_dir(self.path, build)
        except OSError as e:  # named by the directory asked for, not its temp sibling
            raise RunError(f"{self.path}: cannot create the run directory: "
                           f"{e.strerror or e}") from None
        self.created = True

    def discard(self) -> bool:
        """Undo `create` of this process for a run that failed before its generation 0 was
        committed: the directory goes (an empty one given to `create` is left empty), so a
        failed start leaves nothing behind. Keeps (returns False) a directory this object
        did not create and a run with a committed generation: a whole, resumable run."""
        if not self.created or (self.checkpoints / "latest.json").exists():
            return False
        self.unlock()
        shutil.rmtree(self.path, ignore_errors=True)
        if self._empty_before:
            self.path.mkdir(exist_ok=True)
        return True

    def require_run(self) -> None:
        if not self.path.is_dir():
            what = "a file, not a run directory" if self.path.exists() else "no such run directory"
            raise RunError(f"{self.path}: {what}")
        if not self.is_run():
            raise RunError(f"{self.path}: not a run directory (no config.toml)")

    def require_layout(self) -> None:
        """Before a resume writes anything: RunError for a file where the run keeps a
        directory or a directory where it keeps a file (else the error would come only when
        the generation's work is done)."""
        for d in (self.model, self.checkpoints, self.plots, self.seeds,
                  self.generation_file(0).parent):
            if d.exists() and not d.is_dir():
                raise RunError(f"{d}: a file where the run keeps a directory; move it away")
        for f in (self.config, self.log, self.hall_of_fame, self.lineage, self.report):
            if f.is_dir():
                raise RunError(f"{f}: a directory where the run keeps a file; move it away")

    # writing
    def write(self, path: Path, data: str | bytes) -> None:
        atomic_write(path, data)

    def read_json(self, path: Path):
        """The JSON value in `path`; RunError if the file cannot be read as JSON."""
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as e:
            raise RunError(f"{path}: unreadable ({type(e).__name__}); the file is "
                           "damaged") from None

    def read_report(self) -> dict | None:
        """report.json (`{"programs": {name: {"valid"|"test": {"score", "ci95", "n"}}}}`), or
        None before the run's end; RunError if it is damaged."""
        if not self.report.exists():
            return None
        rep = self.read_json(self.report)
        try:
            for r in (sp[s] for sp in rep["programs"].values() for s in ("valid", "test")):
                for value, spec in ((r["score"], ".3f"), (r["ci95"][0], ".3f"),
                                    (r["ci95"][1], ".3f"), (r["n"], "d")):
                    format(value, spec)  # as show and the page print them
            cg = rep.get("champion_vs_greedy", {"diff": 0, "low": 0, "high": 0})
            for key in ("diff", "low", "high"):
                format(cg[key], "+.3f")
            cr = rep.get("champion_vs_reference")
            if cr is not None:
                for key in ("diff", "low", "high"):
                    format(cr[key], "+.3f")
                str(cr["reference"]), str(cr["objective"])
            sel = rep.get("selection") or {}
            if sel.get("valid") is not None:
                for key in ("valid", "test", "gap"):
                    format(sel[key], "+.3f")
                format(sel["prompts"], "d")
                format(sel["candidates"], "d")
                str(sel["rule"])
                if sel.get("race") is not None:
                    format(sel["race"]["prompts"], "d")
                    format(sel["race"]["programs"], "d")
            for x in rep.get("samples") or []:
                for key in ("prompt", "reference", "reference_answer", "champion",
                            "champion_answer", "greedy", "greedy_answer"):
                    x[key]  # noqa: B018 - each key show prints
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            raise RunError(f"{self.report}: not a final report (damaged); `evolve --resume "
                           f"{self.path}` writes it again") from None
        return rep

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
        """The non-blank lines of log.jsonl (JSON Lines: split at LF only)."""
        if not self.log.exists():
            return []
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return [ln for ln in json_lines(text) if ln.strip()]

    def log_entries(self) -> list[dict]:
        """The entries of log.jsonl. A torn last line (a write cut short by something other
        than this program, which writes whole files) is left out; it is rewritten from the
        checkpoint on resume. Any other bad line is a RunError naming `log.jsonl:line`."""
        lines = self.log_lines()
        out = []
        for k, line in enumerate(lines):
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if not _is_log_entry(entry):
                if k == len(lines) - 1:
                    break
                raise RunError(f"{self.log}:{k + 1}: not a log entry (damaged); remove the "
                               "file's lines from here on and resume to write them again")
            out.append(entry)
        return out

    def truncate_log(self, n: int, last: dict | None = None) -> None:
        """Keep the first n lines of log.jsonl; `last`, when given, replaces the n-th line if
        it is torn or missing."""
        lines = self.log_lines()[:n]
        if last is not None and n >= 1:
            try:
                whole = len(lines) == n and _is_log_entry(json.loads(lines[-1]))
            except ValueError:
                whole = False
            if not whole:
                lines = [*lines[:n - 1], json.dumps(last, sort_keys=True)]
        if len(lines) != n:
            raise RunError(f"{self.log}: {len(lines)} lines, but {n} generations were "
                           "committed; the log was cut short and cannot be repaired")
        if lines != self.log_lines():
            self.write(self.log, "".join(ln + "\n" for ln in lines))

    # checkpoints
    def checkpoint_dir(self, tag: str) -> Path:
        return self.checkpoints / tag

    def commit(self, tag: str, state: RunState) -> None:
        """Make checkpoint `tag` (already written) the one a resume starts from."""
        self.write_json(self.checkpoint_dir(tag) / "state.json", state.to_json())
        self.write_json(self.checkpoints / "latest.json", {"checkpoint": tag})
        for old in self.checkpoints.iterdir():
            if old.is_dir() and old.name != tag:
                shutil.rmtree(old, ignore_errors=True)

    def latest(self) -> tuple[Path, RunState] | None:
        """(checkpoint directory, its state) of the last committed generation, or None when
        none was committed yet. A run whose checkpoint/ was removed, or whose pointer or
        state is damaged, is a RunError: resuming it would start over."""
        pointer = self.checkpoints / "latest.json"
        if not self.checkpoints.is_dir():
            done = len(self.log_lines())
            if done or any(self.path.glob("generations/*.scm")):
                raise RunError(
                    f"{self.checkpoints} is missing, so this run cannot be continued exactly; "
                    f"its finished results are intact ({done} generations logged). Start a new "
                    f"run from them: evolve --model-from {self.path} --seeds "
                    f"{self.hall_of_fame}")
            return None
        if not pointer.exists():
            return None
        pointed = self.read_json(pointer)
        tag = pointed.get("checkpoint") if isinstance(pointed, dict) else None
        if not isinstance(tag, str) or not CHECKPOINT_TAG.fullmatch(tag):
            raise RunError(f"{pointer}: names {tag!r}, not a checkpoint of this run "
                           "(gen-NNNN); the checkpoint is damaged")
        directory = self.checkpoint_dir(tag)
        where = directory / "state.json"
        return directory, RunState.from_json(self.read_json(where), str(where))

    # the lock
    def lock(self) -> None:
        """Hold this run directory for this process until it ends (or `unlock`); a RunError
        saying who holds it if another process does."""
        try:
            fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunError(f"{self.path}: cannot take the run's lock ({e.strerror}); "
                           "continuing a run writes into its directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 400).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunError(f"{self.path} is in use by {holder}; wait for it to end, or stop "
                           "it") from None
        os.ftruncate(fd, 0)
        os.write(fd, (f"process {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock
            self._lock_fd = None

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
