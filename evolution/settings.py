"""The resolved configuration of a run: nested dataclasses, read from TOML and `--set key=value`.

    [run]        seed, generations, mode, seed programs
    [task]       which task and how hard
    [loop]       co-evolution: training steps per generation, lambda, evaluation sizes
    [model]      neural.GPTConfig
    [train]      neural.TrainConfig
    [evolution]  evolution.config.EvolutionConfig (with [evolution.limits])
    [text]       how text tasks score programs (objective, the judge)

Unknown keys and ill-typed values are errors naming the key (`ConfigError`), never ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine_dsl.primitives.penalties import BREAKER_MAX_CHARS, DEFAULT_BREAKERS
from engine_dsl.registry import Limits
from neural.device import DeviceError, check_device_name
from neural.hf import TRAIN_MODES
from neural.model import MODEL_DOMAINS, POSITIONS, GPTConfig
from neural.tasks import (
    BUILTIN_TASKS,
    DEFAULT_CONTINUATION_BYTES,
    DEFAULT_PROMPT_BYTES,
    regex_problem,
    task_kind,
)
from neural.tokenizer import ByteTokenizer
from neural.train import TrainConfig

from .config import EvolutionConfig

MODES = ("hybrid", "phase1", "phased")
MODEL_OBJECTIVES = ("likelihood", "reinforce")


class ConfigError(Exception):
    """A bad configuration file, key or value; str() is the one-line message."""


@dataclass
class RunSection:
    seed: int = 0  # every random draw of the run flows from this one seed
    generations: int = 2  # co-evolution generations after the pre-training
    mode: str = "hybrid"  # hybrid | phase1 (structure frozen) | phased (see LoopSection)
    seeds: list[str] = field(default_factory=list)  # seed program files; empty: programs/ shipped
    model_from: str = ""  # run directory whose trained model this run started from
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (cuda when there is one); --device


@dataclass
class TaskSection:
    # addition|running-sum|reverse|sort|copy|shakespeare|jsonl:PATH|text:PATH
    name: str = "running-sum"
    difficulty: int | None = None  # None: the task's default
    size: int | None = None  # examples to generate for built-in tasks; None: the task's default
    curriculum: bool = False  # edge-of-chaos: move difficulty to keep valid success in 55-75%
    # final answer = last match of this regex (its group 1 if any); "": the task's own rule
    answer_regex: str = ""
    # DRY's sequence breakers, strings (llama.cpp's default: newline, ':', '"', '*')
    dry_breakers: list[str] = field(default_factory=lambda: list(DEFAULT_BREAKERS))
    prompt_bytes: int = DEFAULT_PROMPT_BYTES  # text tasks: prompt length, ending at a word end
    continuation_bytes: int = DEFAULT_CONTINUATION_BYTES  # text tasks: reference length


@dataclass
class LoopSection:
    pretrain_steps: int = 1500  # model-alone training before generation 1 (generation 0)
    train_steps: int = 50  # model training per generation (layer 1)
    # answer tasks train plainly by default: co-training at 0.1 cost the vote its gain
    # (docs/BENCHMARKS.md, issue 13); text tasks keep 0.1 (TEXT_DEFAULTS)
    program_lambda: float = 0.0  # weight of the champion's loss in training (vs the LM loss 1)
    program_guard: bool = True  # lambda > 0: co-training kept only if plain would not do better
    guard_tolerance: float = 0.0  # nats per answer token the guard lets co-training lose
    # the champion's loss: likelihood (its relaxed answer NLL) | reinforce (what it writes,
    # weighted by reward advantage; the LM loss on the corpus is the anchor)
    model_objective: str = "likelihood"
    reinforce_samples: int = 16  # reinforce: prompts the champion writes for per step
    valid_prompts: int = 64  # prompts of the valid split scoring every program
    test_prompts: int = 500  # prompts of the test split in the final report
    # fresh valid prompts re-scoring the final front, seeds and the reference decoder (greedy;
    # text tasks: nucleus 0.95) to choose the champion (text tasks: at most what one decode
    # fits in decode_memory_mb); 0: off
    select_prompts: int = 500
    max_new_tokens: int = 0  # answer length cap; 0: the task's longest answer + 1 (the stop)
    bootstrap: int = 1000  # resamples for the 95% intervals of the final report
    # tune new programs in this many worker processes (0: in-process; at most the cores)
    workers: int = 0
    ray_address: str = ""  # tune on a Ray cluster instead ("auto", "ray://host:port")
    phased_model_generations: int = 1  # mode=phased: generations training the model alone
    phased_program_generations: int = 2  # ... then evolving programs with the model frozen
    decode_memory_mb: int = 4096  # budget of one decode (KV cache and logits of every row)


TEXT_OBJECTIVES = ("human", "mauve", "reward")  # evolution.text_scoring.OBJECTIVES


@dataclass
class TextSection:
    objective: str = "human"  # text tasks select on: human (gaps to human) | mauve | reward
    judge_steps: int = 0  # training steps of the frozen judge; 0: as many as loop.pretrain_steps
    race_prompts: int = 1024  # final selection's second stage: more fresh valid prompts; 0: none


@dataclass
class HFSection:
    path: str = ""  # a local Hugging Face causal LM directory (--model hf:DIR); empty: the GPT
    train_mode: str = "frozen"  # frozen (programs only) | full (every weight) | lora (peft)
    lora_rank: int = 8  # rank of the LoRA adapters (train_mode = lora)
    lora_alpha: float = 16.0  # LoRA scaling numerator (the update is scaled by alpha / rank)
    lora_dropout: float = 0.0  # dropout on the adapters' input, in [0, 1)
    # module names; empty: peft's default for the family, or every linear layer where it has none
    lora_targets: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    task: TaskSection = field(default_factory=TaskSection)
    loop: LoopSection = field(default_factory=LoopSection)
    # answer tasks: 3 blocks and 32 rows a step (neural's own defaults: 4 blocks, 64 rows);
    # per CPU second they took running-sum further (docs/BENCHMARKS.md, issue 13)
    model: GPTConfig = field(default_factory=lambda: GPTConfig(n_layer=3))
    hf: HFSection = field(default_factory=HFSection)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=32))
    evolution: EvolutionConfig = field(
        default_factory=lambda: EvolutionConfig(population_size=16))
    text: TextSection = field(default_factory=TextSection)

    def validate(self) -> None:
        """Every value in its domain (`ConfigError` naming `section.key`), before anything is
        created: every real finite, every number in the range of DOMAINS, and the relations
        between keys."""
        if self.run.mode not in MODES:
            raise ConfigError(f"run.mode must be one of {', '.join(MODES)}, found "
                              f"'{self.run.mode}'")
        if self.loop.model_objective not in MODEL_OBJECTIVES:
            raise ConfigError(f"loop.model_objective must be one of "
                              f"{', '.join(MODEL_OBJECTIVES)}, found "
                              f"'{self.loop.model_objective}'")
        for key, value in _numbers(self):
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{key} must be finite, found {value}")
            if key in DOMAINS:
                lo, hi, open_hi = DOMAINS[key]
                if not (lo <= value and (value < hi if open_hi else value <= hi)):
                    raise ConfigError(f"{key} must be in [{lo}, {hi}{')' if open_hi else ']'}, "
                                      f"found {value}")
        if self.text.objective not in TEXT_OBJECTIVES:
            raise ConfigError(f"text.objective must be one of {', '.join(TEXT_OBJECTIVES)}, "
                              f"found '{self.text.objective}'")
        if task_kind(self.task.name) == "text" and self.text.judge_steps == 0 \
                and self.loop.pretrain_steps == 0:
            raise ConfigError("text.judge_steps = 0 means as many as loop.pretrain_steps, which "
                              "is 0: give the judge its own steps")
        if self.task.curriculum and self.task.name not in BUILTIN_TASKS:
            raise ConfigError(f"task.curriculum = true moves a built-in task's difficulty "
                              f"({', '.join(BUILTIN_TASKS)}); task.name is "
                              f"'{self.task.name}'")
        problem = regex_problem(self.task.answer_regex) if self.task.answer_regex else None
        if problem:
            raise ConfigError(f"task.answer_regex: not a regular expression ({problem}), found "
                              f"{self.task.answer_regex[:80]!r}")
        if self.hf.train_mode not in TRAIN_MODES:
            raise ConfigError(f"hf.train_mode must be one of {', '.join(TRAIN_MODES)}, found "
                              f"'{self.hf.train_mode}'")
        if not self.hf.path and self.hf.train_mode != "frozen":
            raise ConfigError(f"hf.train_mode = '{self.hf.train_mode}' applies to a Hugging Face "
                              f"model (--model hf:DIR); the built-in GPT always trains all its "
                              f"weights")
        try:  # its form only: a run made on a GPU may resume on a machine without one
            check_device_name(self.run.device)
        except DeviceError as e:
            raise ConfigError(f"run.device: {e}") from None
        for b in self.task.dry_breakers:
            if not b or len(b.encode("utf-8")) > BREAKER_MAX_CHARS:
                raise ConfigError(f"task.dry_breakers: each breaker must be 1 to "
                                  f"{BREAKER_MAX_CHARS} bytes, found {b!r}")
        m = self.model
        if m.n_embd % m.n_head:
            raise ConfigError(f"model.n_embd = {m.n_embd} must be a multiple of model.n_head = "
                              f"{m.n_head}")
        if m.positions not in POSITIONS:
            raise ConfigError(f"model.positions must be one of {', '.join(POSITIONS)}, found "
                              f"'{m.positions}'")
        if m.positions == "rope" and (m.n_embd // m.n_head) % 2:
            raise ConfigError(f"model.positions = 'rope' turns pairs of a head's dimensions: "
                              f"model.n_embd / model.n_head = {m.n_embd // m.n_head} must be "
                              f"even")
        params = 12 * m.n_layer * m.n_embd**2 + (m.vocab_size + m.block_size) * m.n_embd
        if params > MAX_PARAMETERS:
            raise ConfigError(f"model.n_layer = {m.n_layer}, model.n_embd = {m.n_embd}: a model "
                              f"of {params:.3g} parameters exceeds the cap of {MAX_PARAMETERS:.0e}")
        if m.vocab_size < ByteTokenizer.vocab_size:
            raise ConfigError(f"model.vocab_size must be >= {ByteTokenizer.vocab_size} (the byte "
                              f"tokenizer's vocabulary), found {m.vocab_size}")
        t = self.task
        if task_kind(t.name) == "text" and t.prompt_bytes + t.continuation_bytes > m.block_size:
            raise ConfigError(f"task.prompt_bytes + task.continuation_bytes = "
                              f"{t.prompt_bytes + t.continuation_bytes} exceeds model.block_size "
                              f"= {m.block_size} (a prompt and its continuation must fit the "
                              "model's context): raise model.block_size or shorten them")
        if self.loop.max_new_tokens >= m.block_size:
            raise ConfigError(f"loop.max_new_tokens = {self.loop.max_new_tokens} exceeds the "
                              f"cap model.block_size - 1 = {m.block_size - 1}")
        need = decode_memory_mb(self)
        prompts = max(_decoded_prompts(self))
        if need > self.loop.decode_memory_mb:
            raise ConfigError(
                f"loop.decode_memory_mb = {self.loop.decode_memory_mb}: decoding up to "
                f"evolution.limits.max_votes = {self.evolution.limits.max_votes} answers for "
                f"each of {prompts} prompts takes "
                f"about {need:.0f} MB; raise it, or lower the cap or the prompts")
        if self.train.min_lr > self.train.learning_rate:
            raise ConfigError(f"train.min_lr = {self.train.min_lr} exceeds train.learning_rate "
                              f"= {self.train.learning_rate}")


BIG = 10**9  # a bound on counts that no run on one machine comes near
MAX_PARAMETERS = 10**9  # of the model: more does not fit a single machine's memory and time
# section.key -> (lowest, highest, highest excluded) of every numeric setting with a range
DOMAINS: dict[str, tuple[float, float, bool]] = {
    "run.seed": (0, 2**32 - 1, False),
    "run.generations": (0, BIG, False),
    "task.difficulty": (1, BIG, False),
    "task.size": (1, BIG, False),
    "task.prompt_bytes": (1, 2**16, False),
    "task.continuation_bytes": (1, 2**16, False),
    "loop.pretrain_steps": (0, BIG, False),
    "loop.train_steps": (0, BIG, False),
    "loop.program_lambda": (0.0, 1e6, False),
    "loop.guard_tolerance": (0.0, 1e6, False),
    "loop.reinforce_samples": (2, 2**16, False),
    "loop.valid_prompts": (1, BIG, False),
    "loop.test_prompts": (1, BIG, False),
    "loop.select_prompts": (0, BIG, False),
    "loop.max_new_tokens": (0, BIG, False),
    "loop.bootstrap": (1, 10**7, False),
    "loop.workers": (0, 1024, False),
    "loop.phased_model_generations": (0, BIG, False),
    "loop.phased_program_generations": (0, BIG, False),
    "loop.decode_memory_mb": (1, 2**30, False),
    "hf.lora_rank": (1, 2**16, False),
    "hf.lora_alpha": (0.0, 1e6, False),
    "hf.lora_dropout": (0.0, 1.0, True),
    **{f"model.{k}": domain for k, domain in MODEL_DOMAINS.items()},
    "train.steps": (1, BIG, False),
    "train.batch_size": (1, 2**16, False),
    "train.learning_rate": (0.0, 10.0, False),
    "train.min_lr": (0.0, 10.0, False),
    "train.warmup_steps": (0, BIG, False),
    "train.weight_decay": (0.0, 10.0, False),
    "train.beta1": (0.0, 1.0, True),
    "train.beta2": (0.0, 1.0, True),
    "train.grad_clip": (0.0, 1e6, False),
    "train.grokfast_alpha": (0.0, 1.0, True),
    "train.grokfast_lambda": (0.0, 1e6, False),
    "train.extra_lambda": (0.0, 1e6, False),
    "train.seed": (0, 2**32 - 1, False),
    "text.judge_steps": (0, BIG, False),
    "text.race_prompts": (0, BIG, False),
    "evolution.population_size": (1, BIG, False),
    "evolution.offspring_size": (1, BIG, False),
    "evolution.constant_sigma": (0.0, 1e6, False),
    "evolution.tune_steps": (0, BIG, False),
    "evolution.tune_lr": (0.0, 1e6, False),
    "evolution.tournament_size": (1, BIG, False),
    "evolution.seed": (0, 2**32 - 1, False),
    **{f"evolution.limits.{k}": (1, BIG, False) for k in Limits.field_names()},
}


def decode_memory_mb(cfg: RunConfig) -> float:
    """An estimate of the most memory one decode of a run takes, in MB: every row (a prompt
    times the decodes per answer, at most `max_votes` by the product cap) holds a KV cache of
    the whole block in every layer and a few rows of logits."""
    return max(_decoded_prompts(cfg)) * _prompt_memory_mb(cfg)


def _prompt_memory_mb(cfg: RunConfig) -> float:
    """`decode_memory_mb` per prompt."""
    return cfg.evolution.limits.max_votes * row_memory_mb(cfg)


def row_memory_mb(cfg: RunConfig) -> float:
    """The memory of one decoding row in MB: a float32 KV cache of the whole block in every
    layer and a few rows of logits."""
    m = cfg.model
    return (2 * m.n_layer * m.block_size * m.n_embd + 4 * m.vocab_size) * 4 / 2**20


def text_select_prompts(cfg: RunConfig) -> int:
    """The fresh prompts of a text task's final selection: `loop.select_prompts`, at most as
    many as one decode fits in `loop.decode_memory_mb` (text runs recorded before their
    selection existed hold the answer tasks' 500, which a text model's longer context may
    not fit; the report gives the count used)."""
    return min(cfg.loop.select_prompts,
               int(cfg.loop.decode_memory_mb // _prompt_memory_mb(cfg)))


def _decoded_prompts(cfg: RunConfig) -> tuple[int, ...]:
    """The prompt counts a run decodes at once: valid, test and (answer tasks; text tasks'
    `text_select_prompts` fits by construction) the fresh selection prompts."""
    select = cfg.loop.select_prompts if task_kind(cfg.task.name) == "answer" else 0
    return cfg.loop.valid_prompts, cfg.loop.test_prompts, select


def _numbers(obj, where: str = ""):
    """(section.key, value) of every number in a config, nested ones included."""
    for f in dataclasses.fields(obj):
        key, value = f"{where}{f.name}", getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _numbers(value, key + ".")
        elif isinstance(value, dict):
            yield from ((f"{key}.{k}", v) for k, v in value.items()
                        if isinstance(v, int | float) and not isinstance(v, bool))
        elif isinstance(value, list | tuple):
            yield from ((key, v) for v in value if isinstance(v, int | float))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield key, value


# --- dict <-> dataclass ---------------------------------------------------------------------


def to_dict(obj) -> dict:
    """A TOML-ready dict (None values left out: TOML has no null)."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out[f.name] = to_dict(v)
        elif v is not None:
            out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass `cls` from `data`, checking every key and value type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a table, found {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{where}.{key}" if where else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean '{(where + '.') if where else ''}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{full}'{hint}")
        kwargs[key] = _coerce(hints[key], value, full)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        # a section's own check names its keys: they read as section.key
        message = re.sub(rf"(?<![\w.])({'|'.join(map(re.escape, names))})\b",
                         rf"{where}.\1", str(e)) if where else str(e)
        raise ConfigError(message if message != str(e) else f"{where or 'config'}: {e}"
                          ) from None


def _coerce(hint, value, key: str):
    if dataclasses.is_dataclass(hint):
        if dataclasses.is_dataclass(value):
            return value
        return from_dict(hint, value, key)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, found {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, found {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, found {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, found {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, found {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} must have {len(args)} entries, found {len(value)}")
            return tuple(_coerce(a, v, key) for a, v in zip(args, value, strict=True))
        inner = args[0] if args else Any
        items = [_coerce(inner, v, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a table, found {value!r}")
        kt, vt = args or (Any, Any)
        return {_coerce(kt, k, key): _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    return value


# --- files and --set ------------------------------------------------------------------------


MAX_CONFIG_BYTES = 2**20  # a settings file is a few kilobytes


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)  # a bound: /dev/zero never ends
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror or e}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not valid UTF-8") from None
    try:
        return tomllib.loads(text.removeprefix("\ufeff"))  # an editor's byte order mark
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: arrays or tables nested too deeply") from None


def apply_set(data: dict, assignment: str) -> None:
    """Apply one `dotted.key=value` (value in TOML syntax; bare words are strings)."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not all(key.split(".")):
        raise ConfigError(f"--set expects section.key=value, found '{assignment}'")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    except RecursionError:
        raise ConfigError(f"--set {key}: a value nested too deeply") from None
    *parents, leaf = key.split(".")
    node = data
    for k, p in enumerate(parents):
        node = node.setdefault(p, {})
        if not isinstance(node, dict):  # given so by a config file or an earlier --set
            raise ConfigError(f"{'.'.join(parents[:k + 1])} must be a table, found {node!r}")
    node[leaf] = value


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# Defaults of text tasks (shakespeare, text:PATH) where they differ from the answer tasks':
# a context that holds a prompt and its continuation (task.prompt_bytes +
# task.continuation_bytes = 64 + 128) and rotary positions: with a learned position table
# each of the 192 positions learns from only the 4 rows of a step, which held the model near
# the bigram loss (2.5 nats per byte) for about 1000 steps; RoPE has no table (2.35 -> 1.86
# nats per byte on held-out works after 1200 steps). The pre-training is what did best on the
# shakespeare task in 3 CPU minutes (bench/shakespeare_model.py, docs/BENCHMARKS.md): 1200
# steps of 4 windows (2 windows for 2000 steps did as well per CPU second; 1 or 8 windows and
# a learning rate of 6e-3 did worse). The generations, test prompts and co-training weight
# text tasks had before the answer tasks' default was fitted to running-sum's 5 minutes
# (issue 13), and the 4 blocks they were measured with (answer tasks default to 3).
TEXT_DEFAULTS = {"model": {"block_size": 192, "positions": "rope", "n_layer": 4},
                 "train": {"batch_size": 4},
                 "run": {"generations": 4},
                 "loop": {"pretrain_steps": 1200, "train_steps": 100, "test_prompts": 200,
                          "select_prompts": 256, "program_lambda": 0.1}}


def resolve(config_file: str | None = None, sets: list[str] = (), overrides: dict | None = None
            ) -> RunConfig:
    """defaults <- text-task defaults (`TEXT_DEFAULTS`, for a text task) <- config file <-
    command-line flags <- --set, checked and validated."""
    data = to_dict(RunConfig())  # defaults, including RunConfig's own nested ones
    given: dict = {}
    if config_file:
        given = merge(given, load_toml(config_file))
    given = merge(given, overrides or {})
    for s in sets:
        apply_set(given, s)
    task = given.get("task")
    name = task.get("name") if isinstance(task, dict) else None
    if isinstance(name, str) and task_kind(name) == "text":
        data = merge(data, TEXT_DEFAULTS)
    cfg = from_dict(RunConfig, merge(data, given))
    cfg.validate()
    return cfg


# the sections every run's config.toml has held since the first version
RECORDED_SECTIONS = ("run", "task", "loop", "model", "train", "evolution")


def recorded_config(path: str | Path, sets: list[str] = (),
                    overrides: dict | None = None) -> RunConfig:
    """A run's recorded settings (its config.toml at `path`), `sets` and `overrides` on top.
    A run recorded before `model.positions` existed has a learned position table: a [model]
    table without the key reads as "learned", not as the text tasks' newer "rope".
    A run's config.toml holds every section a run has always had: one without them (an
    emptied or cut-short file) is damaged, not a run of the defaults."""
    recorded = load_toml(path)
    for section in RECORDED_SECTIONS:
        if not isinstance(recorded.get(section), dict):
            raise ConfigError(f"{path}: no [{section}] table; a run records every section of "
                              "its settings (the file is damaged or was cut short)")
    model = recorded.get("model")
    if isinstance(model, dict) and "positions" not in model:
        overrides = merge({"model": {"positions": "learned"}}, overrides or {})
    return resolve(str(path), sets, overrides)


# What a run is: a resume may extend it or change how it searches, never these.
FIXED_ON_RESUME = ("run.seed", "run.mode", "run.seeds", "run.model_from", "task", "model",
                   "hf", "train", "text.judge_steps")


def check_resume(recorded: RunConfig, new: RunConfig) -> None:
    """ConfigError naming the first setting in which `new` changes what the run `recorded`
    is (its task, seed, mode, seeds, model or training)."""
    old, now = _flat(to_dict(recorded)), _flat(to_dict(new))
    for key in sorted(set(old) | set(now)):
        fixed = any(key == f or key.startswith(f + ".") for f in FIXED_ON_RESUME)
        if fixed and old.get(key) != now.get(key):
            raise ConfigError(f"{key} = {now.get(key)!r} would change what the run is (it has "
                              f"{old.get(key)!r}); a resume keeps it: start a new run for that")


def _flat(data: dict, where: str = "") -> dict:
    out = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{where}{k}.")
        else:
            out[f"{where}{k}"] = v
    return out


def dump_toml(cfg: RunConfig) -> str:
    import tomli_w

    return tomli_w.dumps(to_dict(cfg))
