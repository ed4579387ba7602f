"""The co-evolution loop (DESIGN §3): per generation, train the transformer through the
champion program, vary and tune the programs, evaluate, select, record.

    run = CoEvolution.start(config, RunDir("runs/x"))   # or CoEvolution.resume(RunDir(...))
    run.run()            # every generation, then the final test-split report
    CoEvolution.open(RunDir("runs/x"))                  # read-only: eval, trace

Generation 0 is the model's pre-training (then the first population is scored). Modes:
`hybrid` (default) trains the model and evolves the programs every generation; `phase1`
freezes program structure (the population is the seeds, their constants are tuned and the
model trains); `phased` trains the model alone for `loop.phased_model_generations`, then
evolves programs with the model frozen for `loop.phased_program_generations`, then both.

Every generation ends with `_commit`: the files of DESIGN §4, then `checkpoint/latest.json`.
Everything random flows from `run.seed` (python `random.Random` for evolution, the trainer's
generator for batches, `seed * 1000 + generation` for decoding draws), so a resumed run replays the
same numbers.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

import engine_dsl
from engine_dsl import PRIMITIVES, Apply, Definition, DslError, Expr, Type, WeightsConst
from engine_dsl.files import read_file
from engine_dsl.primitives.penalties import Breakers
from engine_dsl.printer import expr_to_scheme, to_scheme
from engine_dsl.registry import baseline
from neural import GPT, ByteTokenizer, Curriculum, DataError, Trainer, get_task
from neural.checkpoint import load_checkpoint, load_model, save_checkpoint, save_model
from neural.device import device_name, resolve_device
from neural.tasks import SECTION_BYTES, Example, make_batch
from neural.text_measures import Judge, JudgeConfig

from . import report
from .bridge import SearchSpace, to_definition, to_expr, to_tree
from .evaluation import CachedRows, DecodeEvaluator, cache_rows
from .genealogy import Lineage
from .population import (
    Population,
    build_toolbox,
    evaluate_population,
    evolve_generation,
    initial_population,
)
from .reinforce import ReinforceLoss, relaxed_policy, token_log_probs
from .rundir import RunDir, RunError, RunState
from .settings import (
    ConfigError,
    RunConfig,
    check_resume,
    decode_memory_mb,
    recorded_config,
    resolve,
    row_memory_mb,
    text_select_prompts,
    to_dict,
)
from .text_scoring import NUCLEUS_95, TextEvaluator, TextScorer, text_reward
from .tuner import LikelihoodTuner

GREEDY = baseline()  # the fixed decoding a user would pick: (greedy logits)
# settings the run derives from others: config.toml leaves them out, `config` says how
DERIVED = {
    "train.steps": "loop.pretrain_steps + run.generations x loop.train_steps (one cosine "
                   "schedule over the whole run)",
    "train.extra_lambda": "loop.program_lambda in co-evolution generations, 0 in pre-training "
                          "(and in the plain reference branch of loop.program_guard)",
    "train.seed": "run.seed",
    "evolution.seed": "run.seed",
    "evolution.reevaluate_parents": "true (the model changes between generations)",
}
JUDGE_SEED = 1  # the judge's training draws: one judge per corpus and settings, whatever the
# run's seed (so runs of different seeds are measured by the same judge)
PROGRAMS_DIR = Path(__file__).resolve().parent.parent / "programs"
TUNE_EXAMPLES = 256  # train examples whose answer tokens tune constants each generation
SAMPLES = 5  # test answers of champion and greedy kept in report.json
SELECTION_DRAWS = 1 << 32  # offset of the final selection's draws from the evaluation seed
SELECTION_HALVES = 100  # text tasks' final selection: random halves of its prompts
RACE_DRAWS = 1 << 33  # offset of the final selection's second stage's draws
RACE_PROGRAMS = 4  # most programs (besides the reference) in that second stage


def default_seed_files(mode: str) -> list[Path]:
    """The shipped seed programs (`phase1` mode: the seeds' Phase 1 engine alone)."""
    if mode == "phase1":
        return [PROGRAMS_DIR / "phase1.scm"]
    return sorted(p for p in PROGRAMS_DIR.iterdir() if p.suffix in (".scm", ".hy"))


def read_seeds(paths, limits) -> list[Definition]:
    """Definitions of the seed files, in order; DslError for bad or unreadable files."""
    defs: list[Definition] = []
    for path in paths:
        defs.extend(read_file(path, limits))
    if not defs:
        raise RunError("no seed programs: the seed files hold no definitions")
    return defs


def config_text(cfg: RunConfig) -> str:
    """config.toml of a run: the resolved settings, less the ones it derives (`DERIVED`)."""
    import tomli_w

    data = to_dict(cfg)
    for key in DERIVED:
        section, name = key.split(".")
        data[section].pop(name, None)
    return tomli_w.dumps(data)


def fit_to_model(d: Definition, n_layer: int, n_head: int,
                 unavailable: Mapping[str, str] | None = None) -> Definition:
    """A seed adapted to the model: Weights literals resized to their slot's shape (n_layer,
    or n_layer x n_head) by repeating or truncating; a block index beyond the model, or a
    primitive reading an input the model cannot give (`unavailable`: input -> why, the
    model's `unavailable_inputs`), is an error naming the seed's position."""

    def go(e: Expr) -> Expr:
        if not isinstance(e, Apply):
            return e
        missing = sorted(PRIMITIVES[e.op].reads & (unavailable or {}).keys())
        if missing:
            raise DslError.at(e.span, f"'{e.op}' cannot run on this model: "
                                      f"{unavailable[missing[0]]}")
        for arg, a in zip(PRIMITIVES[e.op].args, e.args, strict=True):
            if arg.type is Type.COUNT and arg.shape == "layers" and a.value > n_layer:
                raise DslError.at(e.span, f"({e.op} {a.value}) but the model has "
                                          f"{n_layer} blocks")
        args = []
        for arg, a in zip(PRIMITIVES[e.op].args, e.args, strict=True):
            n = {"layers": n_layer, "layers x heads": n_layer * n_head}.get(arg.shape)
            if isinstance(a, WeightsConst) and n is not None and len(a.values) != n:
                a = WeightsConst(tuple(a.values[i % len(a.values)] for i in range(n)), a.span)
            args.append(go(a))
        return replace(e, args=tuple(args))

    return replace(d, body=go(d.body))


def unavailable_inputs(model) -> dict[str, str]:
    """The program inputs `model` cannot give, with why (none for the built-in GPT)."""
    return getattr(model, "unavailable_inputs", {})


# --- the program's loss inside model training ------------------------------------------------


class ChampionLoss:
    """`extra_loss(model, batch)`: NLL of the batch's answer tokens under the champion
    program's relaxed distribution, differentiable in the model (the program's constants
    stay as they are). Layer 1's hook for "the loss passes through the champion"
    (`loop.model_objective = "likelihood"`; `reinforce.ReinforceLoss` is the other)."""

    def __init__(self, decoder: Expr, sharpness: float = 30.0, breakers=None):
        self.sharpness, self.breakers = sharpness, breakers
        self.set(decoder)

    def set(self, decoder: Expr) -> None:
        self.policy = relaxed_policy(decoder)

    def __call__(self, model, batch) -> torch.Tensor:
        return -token_log_probs(self.policy, model, batch.ids, batch.answer_mask,
                                batch.attention_mask, self.sharpness, self.breakers).mean()


# --- the run ---------------------------------------------------------------------------------


class CoEvolution:
    """One run. Made by a factory that returns it fully set up: `start` (a new run), `resume`
    (continue or extend one) or `open` (a read-only view, for eval and trace)."""

    def __init__(self, config: RunConfig, rundir: RunDir, console=None):
        self.cfg = config
        self.dir = rundir
        self.console = console
        self.device = resolve_device(config.run.device)
        self.tokenizer = ByteTokenizer()
        if config.hf.path:  # your own model: its own tokenizer
            from neural.hf import HFTokenizer

            self.tokenizer = HFTokenizer.from_pretrained(config.hf.path)
        self.breakers = Breakers.from_strings(config.task.dry_breakers,
                                              self.tokenizer.vocab_size,
                                              self.tokenizer.token_bytes,
                                              self.tokenizer.encode_bytes)
        self.trainer: Trainer | None = None
        self._model: GPT | None = None
        self._fresh = False  # a new run's directory before its generation 0 is committed
        torch.manual_seed(config.run.seed)

    @classmethod
    def start(cls, config: RunConfig, rundir: RunDir, console=None,
              seed_files: list[str] | None = None, model_from: str | None = None
              ) -> CoEvolution:
        """A new run: its directory (created only once everything was read and checked, then
        held by this process), config, seeds, model and pre-training state (generation 0)."""
        run = cls(config, rundir, console)
        run._fresh = True  # until generation 0 is committed: a failure removes the directory
        try:  # run.model_from of a config file (a run's config.toml re-run) as --model-from
            run._begin(seed_files, model_from or config.run.model_from or None, restart=False)
        except Exception:
            run._discard_fresh()
            raise
        return run

    def _discard_fresh(self) -> None:
        """After an error before this process's new run committed generation 0: remove the
        run directory it created (no half run is left behind). A kill or Ctrl-C leaves it:
        `--resume` begins such a run again."""
        if self._fresh:
            self._fresh = False
            self.dir.discard()

    @classmethod
    def resume(cls, rundir: RunDir, console=None, sets: list[str] = (),
               overrides: dict | None = None) -> CoEvolution:
        """The run in `rundir`, at its last committed generation and held by this process.
        `sets` and `overrides` (as for `settings.resolve`) may extend the run (more
        generations) or change how it searches; changing what it is (task, seed, model)
        is a ConfigError. A changed config is recorded in config.toml."""
        rundir.require_run()
        rundir.require_layout()
        rundir.lock()
        try:
            before = recorded_config(rundir.config)
            cfg = recorded_config(rundir.config, sets, overrides)
            check_resume(before, cfg)
            run = cls(cfg, rundir, console)
            run._restore()
            run._note_device()
            done = run.next_generation - 1
            if cfg.run.generations < done:
                raise ConfigError(f"run.generations = {cfg.run.generations}, but {done} "
                                  "generations are done; a resume can only extend a run")
            if cfg != before:
                rundir.write(rundir.config, config_text(cfg))
        except BaseException:
            rundir.unlock()
            raise
        return run

    @classmethod
    def open(cls, rundir: RunDir, device: str | None = None) -> CoEvolution:
        """A read-only view of a run for eval and trace: its config, task and trained model
        (as in model/, the last generation written), on `device` (default: the run's own);
        takes no lock and writes nothing."""
        rundir.require_run()
        cfg = recorded_config(rundir.config)
        if device is not None:
            cfg.run.device = device
        run = cls(cfg, rundir)
        entries = rundir.log_entries()
        run.difficulty = (entries[-1].get("difficulty", run.cfg.task.difficulty) if entries
                          else run.cfg.task.difficulty)
        run.next_generation = entries[-1]["generation"] + 1 if entries else 0
        run.task = run._task(run.difficulty)
        if not rundir.model.exists():
            raise RunError(f"{rundir.path}: no trained model yet (model/ is missing)")
        run._model = load_model(str(rundir.model), tokenizer=run.tokenizer, device=run.device)
        run._model.eval()
        run._check_task(run._model)  # a data file may have changed since the run was made
        return run

    def _note_device(self) -> None:
        """On resume: say so when the run continues on another device than it ran on."""
        entries = self.dir.log_entries()
        before, now = (entries[-1].get("device") if entries else None), device_name(self.device)
        if before and before != now and self.console is not None:
            self.console.print(
                f"note: generations up to {entries[-1]['generation']} ran on {before}; they "
                f"continue on {now}. Same settings and draws, but the two devices round floats "
                "differently, so later generations need not equal an uninterrupted run on "
                f"{before}", soft_wrap=True)

    # --- set-up ---------------------------------------------------------------------------

    def _task(self, difficulty: int | None):
        t = self.cfg.task
        return get_task(t.name, difficulty=difficulty, size=t.size, seed=self.cfg.run.seed,
                        prompt_bytes=t.prompt_bytes, continuation_bytes=t.continuation_bytes,
                        answer_regex=t.answer_regex or None)

    def _schedule(self):
        """The trainer's settings: the cosine schedule spans the whole run's steps."""
        loop = self.cfg.loop
        total = loop.pretrain_steps + self.cfg.run.generations * loop.train_steps
        return replace(self.cfg.train, steps=max(total, 1), extra_lambda=0.0,
                       seed=self.cfg.run.seed)

    def _check_splits(self) -> None:
        """DataError where a split of the task is empty (its data may have changed since)."""
        for name in ("train", "valid", "test"):
            if self.task.split(name):
                continue
            if self.task.name.startswith("text:"):
                t, works = self.cfg.task, sum(map(len, self.task.works.values()))
                raise DataError(f"too little text for a {name} split: the file is cut at line "
                                f"ends into sections of {SECTION_BYTES} bytes or more (it gave "
                                f"{works}), each hashed into train or held out and a "
                                f"held-out one into valid or test, and a split needs a "
                                f"section holding a prompt and its continuation "
                                f"(task.prompt_bytes + task.continuation_bytes = "
                                f"{t.prompt_bytes + t.continuation_bytes}); give it more lines",
                                self.task.name.removeprefix("text:"))
            raise DataError(f"task {self.task.name!r} has an empty {name} split; "
                            "give it more examples")

    def _check_task(self, model):
        self._check_splits()
        examples = self.task.train + self.task.valid + self.task.test
        prompt = max(len(self.tokenizer.encode(e.input, bos=True)) for e in examples)
        block = model.config.block_size
        size = "the model's positions" if self.cfg.hf.path else "model.block_size"
        if prompt + self.answer_cap() - 1 > block:  # the answer's last token is never read
            key = "loop.max_new_tokens" if self.cfg.loop.max_new_tokens else (
                "hf.path" if self.cfg.hf.path else "model.block_size")
            # a data file's longest example is named by its file:line
            longest = max(examples, key=lambda e: len(e.input) + (
                0 if self.cfg.loop.max_new_tokens else len(e.output)))
            where = f"{longest.where}: " if longest.where else ""
            raise ConfigError(f"{where}{key}: the task's longest prompt ({prompt} tokens) and "
                              f"answer cap ({self.answer_cap()} tokens) exceed {size} = {block}")
        if self.cfg.hf.path:  # the settings' estimate knew only the GPT's sizes
            need = decode_memory_mb(self._sized(model, prompt))
            if need > self.cfg.loop.decode_memory_mb:
                raise ConfigError(
                    f"loop.decode_memory_mb = {self.cfg.loop.decode_memory_mb}: decoding up to "
                    f"evolution.limits.max_votes answers for each prompt on this model takes "
                    f"about {need:.0f} MB; raise it, or lower the cap or the prompts")

    def _sized(self, model, prompt: int) -> RunConfig:
        """The run's settings with the model's own sizes (a model from `hf.path`; the
        settings describe only the GPT) and a decoded row's length, `prompt` + the answer
        cap, as its block."""
        if not self.cfg.hf.path:
            return self.cfg
        c = model.config
        return replace(self.cfg, model=replace(self.cfg.model, n_layer=c.n_layer,
                                               n_embd=c.n_embd, vocab_size=c.vocab_size,
                                               block_size=prompt + self.answer_cap()))

    def _decode_rows(self, prompts: list[list[int]]) -> int:
        """Rows one decode of `prompts` may hold: `loop.decode_memory_mb` over one row's
        memory (`settings.row_memory_mb`, as the settings' check sizes it: a cache of the
        whole block); `DecodeEvaluator` decodes programs in groups that fit."""
        sized = self._sized(self.model, max(map(len, prompts)))
        return max(1, int(self.cfg.loop.decode_memory_mb // row_memory_mb(sized)))

    def _begin(self, seed_files: list[str] | None, model_from: str | None,
               restart: bool) -> None:
        """Set up generation 0. restart: the run directory exists (and is held) but no
        generation was committed; begin again."""
        cfg = self.cfg
        if "" in (seed_files or cfg.run.seeds):  # Path("") would be the current directory
            raise RunError("seed files: an empty file name; give program files")
        files = [Path(s) for s in (seed_files or cfg.run.seeds)] or default_seed_files(
            cfg.run.mode)
        names = [f.name for f in files]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise RunError(f"two seed files are named {dup}; rename one (the run keeps "
                           "copies by file name)")
        seeds = read_seeds(files, cfg.evolution.limits)
        self.task = self._task(cfg.task.difficulty)
        self.difficulty = self.task.difficulty
        if cfg.hf.path:
            from neural.hf import HFModel, LoraSettings

            if model_from:
                raise RunError("--model-from starts from another run's GPT; an hf: model "
                               "starts from its own directory (give one or the other)")
            h = cfg.hf
            model = HFModel.from_pretrained(
                h.path, device=self.device, train_mode=h.train_mode,
                lora=LoraSettings(h.lora_rank, h.lora_alpha, h.lora_dropout,
                                  tuple(h.lora_targets)))
        elif model_from:
            source = RunDir(model_from)
            if not source.path.is_dir():
                what = "a file, not a" if source.path.exists() else "no such"
                raise RunError(f"--model-from {model_from}: {what} run directory")
            if source.is_run() and not restart:
                trained_on = resolve(str(source.config)).task.name
                if trained_on != cfg.task.name:
                    raise RunError(f"--model-from {model_from}: its model was trained on task "
                                   f"{trained_on!r}, not {cfg.task.name!r}; give --task "
                                   f"{trained_on} or a model trained on this task")
            model = load_model(str(source.model), tokenizer=self.tokenizer, device=self.device)
            self.cfg.model = model.config
        else:
            model = GPT(cfg.model).to(self.device)
        self._check_task(model)
        seeds = self._fit_seeds(seeds, model, files)
        if not restart:
            cfg.run.seeds = [str(f) for f in files]
            cfg.run.model_from = str(model_from or "")
            # everything was read and checked: only now does the run directory appear
            self.dir.create(config_text(cfg), {f.name: f.read_bytes() for f in files})
            self.dir.lock()
        self.seeds = seeds
        self.champion_loss = self._program_loss(GREEDY)
        self.trainer = Trainer(model, self.tokenizer, self.task.training_data(self.tokenizer),
                               self._schedule(), extra_loss=self.champion_loss)
        self.rng = random.Random(cfg.run.seed)
        self.next_generation = 0
        self.population: Population | None = None

    def _restore(self) -> None:
        """Set up from the last committed generation of `self.dir` (or begin again)."""
        latest = self.dir.latest()
        if latest is None:  # killed before generation 0 was committed: begin again
            self.dir.truncate_log(0)
            self._begin(self._seed_copies(), self.cfg.run.model_from or None, restart=True)
            return
        ckpt, state = latest
        self.difficulty = state.difficulty
        self.task = self._task(self.difficulty)
        self._check_splits()  # before the trainer takes the train split
        if state.data is not None and state.data != self.task.digest():
            raise RunError(f"task {self.task.name!r} now holds other examples than the run was "
                           "made with (its data, or the code that makes them, changed), so "
                           "the run cannot continue exactly; restore the data, or start a "
                           f"new run from this one's results: evolve --model-from {self.dir.path}")
        seeds = read_seeds(self._seed_copies(), self.cfg.evolution.limits)
        try:
            champion = engine_dsl.read_expr(state.champion, Type.DECODER)
        except DslError as e:
            raise RunError(f"{ckpt / 'state.json'}: damaged champion ({e.message})") from None
        self.champion_loss = self._program_loss(champion)
        self.trainer = load_checkpoint(str(ckpt / "trainer"),
                                       self.task.training_data(self.tokenizer),
                                       extra_loss=self.champion_loss, tokenizer=self.tokenizer,
                                       device=self.device)
        model = self.trainer.model
        self._check_task(model)  # a data file may have changed since the run was made
        self.seeds = self._fit_seeds(seeds, model, [Path(f) for f in self.cfg.run.seeds])
        self.rng = random.Random()
        self.rng.setstate(state.rng)
        self.population = None
        if state.population is not None:
            lineage = Lineage.read_graphml(ckpt / "lineage.graphml")
            try:
                self.population = Population.from_dict(state.population, lineage)
            except (KeyError, TypeError, ValueError, DslError) as e:
                raise RunError(f"{ckpt / 'state.json'}: damaged population "
                               f"({type(e).__name__}: {e})") from None
        self.next_generation = state.next_generation
        self.dir.truncate_log(state.log_lines, state.log_entry)

    def _fit_seeds(self, seeds: list[Definition], model, files: list[Path]
                   ) -> list[Definition]:
        """The seeds adapted to the model (`fit_to_model`). Where they are the shipped seed
        files (`programs/`), those a smaller model cannot run (a `(layer k)` beyond its
        blocks, an input it cannot give) are left out with a note: a valid model setting runs
        with the seeds the project ships. A user's own seed that does not fit is an error."""
        shipped = all(f.resolve().parent == PROGRAMS_DIR for f in files)
        fitted = []
        for d in seeds:
            try:
                fitted.append(fit_to_model(d, model.n_layer, model.n_head,
                                           unavailable_inputs(model)))
            except DslError as e:
                if not shipped:
                    raise
                if self.console is not None:
                    self.console.print(f"note: shipped seed {d.name} left out: {e.message}",
                                       soft_wrap=True, markup=False)
        if not fitted:
            raise RunError("no seed program fits the model; give seed files (--seeds)")
        return fitted

    def _seed_copies(self) -> list[Path]:
        """The run's own copies of its seed files, in the order they were given."""
        return [self.dir.seeds / Path(f).name for f in self.cfg.run.seeds]

    # --- the pieces of a generation ---------------------------------------------------------

    @property
    def model(self) -> GPT:
        return self.trainer.model if self.trainer is not None else self._model

    def _space(self) -> SearchSpace:
        return SearchSpace.for_model(self.model, self.cfg.evolution.limits)

    def _toolbox(self):
        evo = self.cfg.evolution
        if self.cfg.run.mode == "phase1":  # the population is the seeds, structure frozen
            evo = replace(evo, population_size=len(self.seeds), mutant_fraction=0.0)
        # the model moves between generations, so survivors are scored again on it
        evo = replace(evo, reevaluate_parents=True, seed=self.cfg.run.seed)
        toolbox = build_toolbox(evo, self._space())
        toolbox.register("map", self._tuning_map)
        return toolbox

    @property
    def _map(self):
        """The parallel map for tuning (created once per run), or None for in-process."""
        loop = self.cfg.loop
        if getattr(self, "_pool", None) is None and (loop.workers or loop.ray_address):
            from .evaluation import ProcessMap, RayMap

            try:
                self._pool = (RayMap(loop.ray_address) if loop.ray_address
                              else ProcessMap(min(loop.workers, os.cpu_count() or 1)))
            except ImportError as e:
                raise RunError(f"loop.ray_address needs Ray ({e})") from None
            except Exception as e:  # Ray's connection errors have no common type
                if not loop.ray_address:
                    raise
                raise RunError(f"loop.ray_address = {loop.ray_address!r}: cannot use the Ray "
                               f"cluster ({type(e).__name__}: {e}); check the address, or "
                               "leave it empty to tune in-process") from None
        return getattr(self, "_pool", None)

    def close(self) -> None:
        """Stop worker processes, if any, and let go of the run directory."""
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()
            self._pool = None
        self.dir.unlock()

    def _program_loss(self, decoder: Expr) -> ChampionLoss | ReinforceLoss:
        """The champion's loss inside model training, by `loop.model_objective`."""
        if self.cfg.loop.model_objective == "likelihood":
            return ChampionLoss(decoder, breakers=self.breakers)
        seed = self.cfg.run.seed
        return ReinforceLoss(decoder, self._reward, self.task.train,
                             samples=self.cfg.loop.reinforce_samples,
                             max_new_tokens=self.answer_cap(), tokenizer=self.tokenizer,
                             seed=lambda: seed * 1_000_003 + self.trainer.step_num,
                             breakers=self.breakers)

    def _reward(self, examples: list[Example], texts: list[str], stopped: list[bool]
                ) -> list[float]:
        """Reinforce's reward of each written answer: exact match of the final answers for
        answer tasks (`Task.is_correct`); for text
        tasks the text objective's reward of each continuation (`TextScorer.rewards`)."""
        if self.task.kind == "text":
            return text_reward(self.judge, self.cfg.text.objective)(examples, texts, stopped)
        return [float(self.task.is_correct(t, e.output))
                for e, t in zip(examples, texts, strict=True)]

    def _train(self, steps: int, label: str, program_lambda: float) -> dict | None:
        if steps <= 0 or (self.cfg.hf.path and self.cfg.hf.train_mode == "frozen"):
            return None
        self.trainer.config.extra_lambda = program_lambda
        history, rewards = [], []
        with self._progress(label, steps) as advance:
            for _ in range(steps):
                history.append(self.trainer.step())
                if program_lambda and isinstance(self.champion_loss, ReinforceLoss):
                    rewards.append(_mean(self.champion_loss.last))
                advance()
        last = history[-10:]
        info = {"steps": steps, "step": self.trainer.step_num,
                "loss": sum(h["lm_loss"] for h in last) / len(last),
                "program_loss": (sum(h["extra_loss"] for h in last) / len(last)
                                 if last[-1]["extra_loss"] is not None else None)}
        if rewards:  # reinforce: mean reward of the champion's samples, the last 10 steps
            info["reward"] = _mean(rewards[-10:])
        return info

    def _co_train(self, g: int) -> dict | None:
        """Generation g's model training through the champion. With `loop.program_guard`
        (and lambda > 0) it is a trust region on the model's own loss: the same steps on the
        same batches are trained twice from the same state, plainly and through the
        champion, and the co-trained model is kept only if its held-out answer loss
        (`held_out_loss`, the valid prompts) is at most the plain one's plus
        `loop.guard_tolerance`; else the plain model (exactly as lambda = 0 would have
        trained it) goes on. `model.guard` in the log says which was kept; `model.loss` is
        the kept model's, `model.program_loss` (and `reward`) the co-training's as tried."""
        loop = self.cfg.loop
        label = f"gen {g} training"
        if not (loop.program_guard and loop.program_lambda > 0):
            return self._train(loop.train_steps, label, loop.program_lambda)
        start = self.trainer.snapshot()
        plain = self._train(loop.train_steps, f"{label} (plain, the guard's reference)", 0.0)
        if plain is None:  # nothing trains (a frozen model)
            return None
        plain_loss, plain_state = self.held_out_loss(), self.trainer.snapshot()
        self.trainer.restore(start)
        info = self._train(loop.train_steps, label, loop.program_lambda)
        loss = self.held_out_loss()
        kept = loss <= plain_loss + loop.guard_tolerance
        if not kept:  # the plain model's loss; the champion's loss (and reward) as tried
            self.trainer.restore(plain_state)
            info = {**info, "loss": plain["loss"]}
        info["guard"] = {"plain_loss": plain_loss, "co_loss": loss,
                         "kept": "co-trained" if kept else "plain"}
        return info

    @torch.no_grad()
    def held_out_loss(self) -> float:
        """The model's own mean loss of the answer tokens (text tasks: the continuations) of
        the valid prompts, teacher-forced: what the guard of co-training compares."""
        batch = self._batch(self._examples("valid"))
        was_training = self.model.training
        self.model.eval()
        try:
            _, loss = self.model(batch.inputs, batch.targets(answer_only=True))
        finally:
            self.model.train(was_training)
        return float(loss)

    def _progress(self, label: str, total: int | None = None):
        from .progress import progress

        return progress(self.console, label, total)

    def _tuning_map(self, fn, items):
        """`toolbox.map` for tuning (in-process or over the parallel map), with progress."""
        items = list(items)
        out = []
        with self._progress(f"gen {self.next_generation} tuning", len(items)) as advance:
            for result in (self._map or map)(fn, items):
                out.append(result)
                advance()
        return out

    def _scoring(self, evaluator, label: str):
        """`evaluator` announcing each call (one batched decode of many programs)."""
        def evaluate(decoders):
            with self._progress(f"{label}: scoring {len(decoders)} programs"):
                return evaluator(decoders)

        return evaluate

    def _prompts(self, examples: list[Example]) -> list[list[int]]:
        return [self.tokenizer.encode(e.input, bos=True) for e in examples]

    def _decode_options(self, prompts: list[list[int]]) -> dict:
        """The run's decode settings for `prompts` (the evaluators' keywords): the answer
        cap, stop and pad tokens, repetition breakers, and the rows one decode may hold."""
        tok = self.tokenizer
        return {"max_rows": self._decode_rows(prompts), "max_new_tokens": self.answer_cap(),
                "stop_token": tok.eos_id, "pad_token": tok.pad_id, "breakers": self.breakers}

    def decode(self, exprs: list[Expr], examples: list[Example], seed: int) -> list[list]:
        """answers[p][i] (`engine_dsl.Decoding`) of each program on each example's prompt,
        with the run's decode settings and draws `seed` (in groups that fit memory; answer
        tasks' votes count the extracted answers, `answer_key`)."""
        prompts = self._prompts(examples)
        key = {"answer_key": self.answer_key} if self.task.kind == "answer" else {}
        return DecodeEvaluator(self.model, prompts, [], seed=seed, **key,
                               **self._decode_options(prompts)).decode(exprs)

    def _answer_evaluator(self, examples: list[Example], seed: int) -> DecodeEvaluator:
        refs = [e.output for e in examples]
        tok, task = self.tokenizer, self.task
        prompts = self._prompts(examples)

        def score(answers, references):
            return sum(task.is_correct(tok.decode(a.tokens), r)
                       for a, r in zip(answers, references, strict=True)) / len(answers)

        return DecodeEvaluator(self.model, prompts, refs, score_fn=score, seed=seed,
                               answer_key=self.answer_key, **self._decode_options(prompts))

    def answer_key(self, tokens: list[int]):
        """What `vote` counts: the final answer the task extracts from an answer's text, or,
        where it finds none, the whole answer (so answers without one never pool)."""
        final = self.task.extract(self.tokenizer.decode(tokens))
        return ("", tuple(tokens)) if final is None else final

    def _text_evaluator(self, examples: list[Example], seed: int) -> TextEvaluator:
        """Scores from each program's continuations of the examples' prompts, measured
        against their human continuations by the judge (`text_scoring`)."""
        scorer = TextScorer.of(self.judge, examples, self.cfg.text.objective)
        prompts = self._prompts(examples)
        return TextEvaluator(self.model, scorer, prompts, self.tokenizer.decode, seed=seed,
                             **self._decode_options(prompts))

    @property
    def judge(self) -> Judge:
        """The frozen judge of text tasks: the run's model architecture trained on the train
        split for text.judge_steps (0: loop.pretrain_steps) with its own draws (`JUDGE_SEED`),
        once per corpus and settings, cached as safetensors (`neural.text_measures`)."""
        if getattr(self, "_judge", None) is None:
            steps = self.cfg.text.judge_steps or self.cfg.loop.pretrain_steps
            config = JudgeConfig(self.cfg.model, replace(self.cfg.train, steps=steps,
                                                         seed=JUDGE_SEED, extra_lambda=0.0))
            with self._progress("training the judge (once per corpus, then cached)",
                                steps) as advance:
                self._judge = Judge.load_or_train(self.task.training_data(), config,
                                                  on_step=lambda i, info: advance())
        return self._judge

    def answer_cap(self) -> int:
        """Answer length cap: configured, or the task's longest answer plus the stop token
        (text tasks: the longest continuation; running text has no stop)."""
        if self.cfg.loop.max_new_tokens:
            return self.cfg.loop.max_new_tokens
        answers = self.task.train + self.task.valid + self.task.test
        stop = 1 if self.task.kind == "answer" else 0
        return stop + max(len(self.tokenizer.encode(e.output)) for e in answers)

    def _batch(self, examples: list[Example]):
        """Teacher-forcing rows of examples (answers end with EOS; text tasks' continuations
        do not)."""
        return make_batch(self.tokenizer, examples, self.model.config.block_size,
                          eos=self.task.kind == "answer")

    def _rows(self, examples: list[Example]) -> CachedRows:
        """Teacher-forced rows at the answer tokens of examples (text tasks: the
        continuation's bytes, no EOS)."""
        batch = self._batch(examples)
        self.model.eval()
        return cache_rows(self.model, batch.ids, batch.answer_mask, breakers=self.breakers)

    def evaluation_seed(self, generation: int | None = None) -> int:
        """The decoding draws of generation `generation`'s valid scoring (default: the last
        committed one). Re-scoring on the final model (report, eval, compare) repeats the
        last generation's draws, so a program scores what the hall of fame says."""
        g = self.next_generation - 1 if generation is None else generation
        return self.cfg.run.seed * 1000 + g

    def _evaluator(self, split: str, generation: int):
        examples = self._examples(split)
        if self.task.kind == "answer":
            return self._answer_evaluator(examples, seed=self.evaluation_seed(generation))
        return self._text_evaluator(examples, seed=self.evaluation_seed(generation))

    def _examples(self, split: str) -> list[Example]:
        n = self.cfg.loop.valid_prompts if split == "valid" else self.cfg.loop.test_prompts
        return self.task.split(split)[:n]

    def _tuner(self) -> LikelihoodTuner | None:
        evo = self.cfg.evolution
        if evo.tune_steps == 0:
            return None
        rows = self._rows(self.task.train[:TUNE_EXAMPLES])
        return LikelihoodTuner(rows, steps=evo.tune_steps, lr=evo.tune_lr, guard=evo.tune_guard)

    def _evolves(self, g: int) -> bool:
        loop, mode = self.cfg.loop, self.cfg.run.mode
        return mode != "phased" or g > loop.phased_model_generations

    def _trains_model(self, g: int) -> bool:
        loop, mode = self.cfg.loop, self.cfg.run.mode
        if mode != "phased":
            return True
        a, b = loop.phased_model_generations, loop.phased_program_generations
        return not (a < g <= a + b)

    # --- generations --------------------------------------------------------------------

    def generation(self, g: int) -> dict:
        """Run generation g (0 = pre-training and the first population) and commit it."""
        try:
            entry = self._generation(g)
        except Exception:
            self._discard_fresh()
            raise
        self._fresh = False
        return entry

    def _generation(self, g: int) -> dict:
        t0 = time.perf_counter()
        timings = {}
        model_info = None
        if g == 0:
            model_info = self._train(self.cfg.loop.pretrain_steps, "pre-training", 0.0)
        elif self._trains_model(g):
            self.champion_loss.set(to_expr(self.population.champion()))
            model_info = self._co_train(g)
        timings["train_s"] = time.perf_counter() - t0
        self.model.eval()

        t1 = time.perf_counter()
        tuner = None
        evaluator = self._scoring(self._evaluator("valid", g), f"gen {g}")
        toolbox = self._toolbox()
        with torch.no_grad():
            greedy_score, greedy_cost = evaluator([GREEDY])[0]
        if g > 0 and model_info is not None:
            # scores taken on an older model are stale: the front is rebuilt from this
            # generation's candidates, all scored on the current model
            self.population.hall_of_fame.clear()
        if g == 0:
            self.population = initial_population(toolbox, self.rng, self.seeds)
            evaluate_population(self.population, evaluator)
        elif self._evolves(g):
            tuner = self._tuner()
            if self.cfg.run.mode == "phase1":
                self.population = self._retune(self.population, evaluator, tuner, toolbox, g)
            else:
                self.population = evolve_generation(self.population, evaluator, toolbox,
                                                    self.rng, tune=tuner)
        else:  # model-only generation: re-score the programs on the changed model
            for ind in self.population:
                del ind.fitness.values
            self.population.generation = g
            evaluate_population(self.population, evaluator)
        timings["evolve_s"] = time.perf_counter() - t1
        timings["total_s"] = time.perf_counter() - t0

        champion = self.population.champion()
        entry = self._log_entry(g, champion, greedy_score, greedy_cost, model_info, timings)
        entry["tuning"] = _tuning_counts(
            tuner, in_process=self._map is None or self.cfg.run.mode == "phase1")
        self._curriculum(entry)
        self._commit(g, entry, champion)
        return entry

    def _retune(self, pop: Population, evaluator, tuner, toolbox, g: int) -> Population:
        """phase1: the same programs, every one's constants tuned again, scored again."""
        if tuner is not None:
            with self._progress(f"gen {g} tuning", len(pop.individuals)) as advance:
                for ind in pop.individuals:
                    tuned = tuner(to_expr(ind), self.rng.getrandbits(31))
                    ind[0:len(ind)] = to_tree(tuned)
                    advance()
        for ind in pop.individuals:
            del ind.fitness.values
        pop.generation = g
        evaluate_population(pop, evaluator)
        return pop

    def _curriculum(self, entry: dict) -> None:
        if not self.cfg.task.curriculum or self.task.kind != "answer":
            return
        cur = Curriculum(self.cfg.task.name, difficulty=self.difficulty, size=self.cfg.task.size,
                         seed=self.cfg.run.seed)
        new = cur.update(entry["valid"]["champion"])
        entry["difficulty"] = new
        if new != self.difficulty:
            self.difficulty = new
            self.task = self._task(new)
            self._check_task(self.model)
            self.trainer.set_examples(self.task.training_data(self.tokenizer))

    def _log_entry(self, g, champion, greedy_score, greedy_cost, model_info, timings) -> dict:
        pop = self.population
        scored = [i for i in pop if i.fitness.valid]
        scores = [i.fitness.values[0] for i in scored]
        costs = [i.fitness.values[1] for i in scored]
        sizes = [int(i.fitness.values[2]) for i in scored]
        expr = to_expr(champion)
        constants = {}
        for k, node in enumerate(engine_dsl.walk(expr)):
            if isinstance(node, engine_dsl.RealConst) and not node.fixed:
                constants[f"{k}:{_slot_name(expr, k)}"] = node.value
        front = [{"id": i.id, "score": i.fitness.values[0], "cost": i.fitness.values[1],
                  "size": int(i.fitness.values[2])} for i in _front(pop)]
        return {
            "generation": g,
            "model": model_info,
            "valid": {"champion": champion.fitness.values[0], "greedy": greedy_score},
            "champion": {"id": champion.id,
                         "source": expr_to_scheme(report.readable(expr, self._space())),
                         "score": champion.fitness.values[0],
                         "cost": champion.fitness.values[1],
                         "size": int(champion.fitness.values[2]), "constants": constants},
            "baseline": {"greedy_cost": greedy_cost},
            "population": {"size": len(pop), "mean_score": _mean(scores),
                           "mean_cost": _mean(costs), "scores": scores, "costs": costs,
                           "sizes": sizes},
            "front": front,
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "device": device_name(self.device),
        }

    def _commit(self, g: int, entry: dict, champion) -> None:
        d = self.dir
        pop = self.population
        d.write(d.generation_file(g), to_scheme(self._readable(pop.definitions(), g)))
        d.write(d.hall_of_fame, to_scheme(self._readable(
            [to_definition(i, _info(i)) for i in _front(pop)], g)))
        pop.lineage.write_graphml(d.lineage)
        log_lines = d.append_log(entry)
        # file by file, each replaced atomically: there is always a model/ to read
        save_model(self.model, str(d.model), tokenizer=self.tokenizer,
                   step=self.trainer.step_num)
        report.write_plots(d.path, report.read_log(d.path), d.write)
        tag = f"gen-{g:04d}"
        ckpt = d.fresh_checkpoint_dir(tag)
        save_checkpoint(self.trainer, str(ckpt / "trainer"))
        pop.lineage.write_graphml(ckpt / "lineage.graphml")
        d.commit(tag, RunState(next_generation=g + 1, log_lines=log_lines,
                               difficulty=self.difficulty, rng=self.rng.getstate(),
                               population=pop.to_dict(),
                               champion=expr_to_scheme(to_expr(champion)), log_entry=entry,
                               data=self.task.digest()))
        self.next_generation = g + 1

    def _readable(self, defs: list[Definition], g: int) -> list[Definition]:
        """Definitions as written for reading (`report.readable`), their comment blocks
        saying where the score was taken and, where simplifying shrank a program, the size
        it was selected with."""
        space = self._space()
        n = len(self._examples("valid"))
        scored = (f";; scored: valid split, {n} prompts, model of generation {g} "
                  f"({report.SCORE_NAME[self.task.kind]}")
        intervals: dict[int, str] = {}

        def interval(score: str) -> str:
            """95% interval of an exact-match score: k of n prompts (as `eval` gives it)."""
            if self.task.kind != "answer":
                return ""
            k = round(float(score) * n)
            if k not in intervals:
                _, lo, hi = report.bootstrap_ci([1.0] * k + [0.0] * (n - k),
                                                self.cfg.loop.bootstrap, seed=self.cfg.run.seed)
                intervals[k] = f"; 95% interval [{lo:.3f}, {hi:.3f}]"
            return intervals[k]

        out = []
        for d in defs:
            body = report.readable(d.body, space)
            comments = []
            for c in d.comments:
                if c.startswith(";; size: ") and engine_dsl.size(body) != engine_dsl.size(d.body):
                    c = f";; size: {engine_dsl.size(body)} (evolved: {c[len(';; size: '):]})"
                comments.append(c)
                if c.startswith(";; score: "):
                    comments.append(f"{scored}{interval(c[len(';; score: '):])})")
            out.append(replace(d, body=body, comments=tuple(comments)))
        return out

    def run(self, on_generation=None) -> dict:
        """Every remaining generation, then the final report; returns the report."""
        for g in range(self.next_generation, self.cfg.run.generations + 1):
            entry = self.generation(g)
            if on_generation is not None:
                on_generation(entry)
        return self.final_report()

    # --- the final report ---------------------------------------------------------------

    def final_report(self) -> dict:
        """Valid- and test-split scores of the champion, greedy, the task's reference decoder
        (text tasks: nucleus 0.95) and every seed (95% intervals), how the champion was
        chosen and its valid-to-test gap (`selection`), the champion's paired difference with
        the reference on test (answer tasks: `champion_vs_greedy`, per prompt in
        `test_per_prompt`; text tasks: `champion_vs_reference`, the text objective's) and,
        for answer tasks, the first test answers of champion and greedy, whole and as
        extracted (`samples`)."""
        self.model.eval()
        chosen, selection = self.select_champion()
        reference, reference_expr = self.reference_decoder()
        programs = {"champion": chosen, "greedy": GREEDY, reference: reference_expr}
        for d in self.seeds:
            programs[f"seed:{d.name}"] = d.body
        out = {"task": self.task.name, "generation": self.next_generation - 1,
               "champion_source": expr_to_scheme(report.readable(chosen, self._space())),
               "programs": {name: {} for name in programs}}
        with self._progress(f"final report: {len(programs)} programs", 2) as advance:
            for split in ("valid", "test"):
                if self.task.kind == "text":  # the text objective's own interval
                    scorer, written = self._write_text(programs, split)
                    for name, result in self._text_results(programs, scorer,
                                                           written).items():
                        out["programs"][name][split] = result
                    w = dict(zip(programs, (w for w, _ in written), strict=True))
                    diff, lo, hi = scorer.paired_interval(w["champion"], w[reference],
                                                          self.cfg.loop.bootstrap,
                                                          seed=self.cfg.run.seed)
                    out["champion_vs_reference"] = {"reference": reference, "diff": diff,
                                                    "low": lo, "high": hi,
                                                    "objective": self.cfg.text.objective}
                    advance()
                    continue
                scores, costs, answers = self.per_item(split, list(programs.values()))
                for name, per, cost in zip(programs, scores, costs, strict=True):
                    mean, lo, hi = report.bootstrap_ci(per, self.cfg.loop.bootstrap,
                                                       seed=self.cfg.run.seed)
                    out["programs"][name][split] = {"score": mean, "ci95": [lo, hi],
                                                    "cost": cost, "n": len(per)}
                advance()
        selection["test"] = out["programs"]["champion"]["test"]["score"]
        if selection.get("valid") is not None:
            selection["gap"] = selection["valid"] - selection["test"]
        out["selection"] = selection
        if self.task.kind == "answer":  # scores, answers: the test split's
            champion, greedy = scores[0], scores[1]
            diff = [c - g for c, g in zip(champion, greedy, strict=True)]
            mean, lo, hi = report.bootstrap_ci(diff, self.cfg.loop.bootstrap,
                                               seed=self.cfg.run.seed)
            out["champion_vs_greedy"] = {"diff": mean, "low": lo, "high": hi, "n": len(diff)}
            out["test_per_prompt"] = {"champion": champion, "greedy": greedy}
            extract = self.task.extract
            out["samples"] = [
                {"prompt": e.input, "reference": e.output, "reference_answer": extract(e.output),
                 "champion": c, "champion_answer": extract(c),
                 "greedy": g, "greedy_answer": extract(g)}
                for e, c, g in list(zip(self._examples("test"), answers[0], answers[1],
                                        strict=True))[:SAMPLES]]
        self.dir.write_json(self.dir.report, out)
        return out

    def select_champion(self) -> tuple[Expr, dict]:
        """The final champion and how it was chosen. With `loop.select_prompts` > 0, the last
        generation's Pareto front, the seed programs (the search's starting points, which a
        front of a few noisy valid prompts can lose) and the task's reference decoder
        (`reference_decoder`: greedy; nucleus 0.95 on text tasks) are scored again on that
        many valid prompts that evolution never saw, with fresh draws (`choose_on_fresh`),
        and the one-standard-error rule (complexity = size) picks the smallest program whose
        score is within one standard error of the paired difference from the best: a
        program beats the reference only by more than the noise of its selection.
        Otherwise (or where the valid split has no fresh prompts) the generation's champion
        (highest valid score) is kept."""
        evolved = to_expr(self.population.champion())
        if not self.fresh_examples():
            return evolved, {"rule": "highest valid score", "prompts": 0, "valid": None}
        name, reference = self.reference_decoder()
        found = {expr_to_scheme(e): e for e in [to_expr(i) for i in [
            self.population.champion(), *_front(self.population)]]}
        candidates: dict[str, Expr] = {expr_to_scheme(reference): reference}
        for key, expr in [*found.items(), *((expr_to_scheme(d.body), d.body)
                                            for d in self.seeds)]:
            candidates.setdefault(key, expr)
        exprs = list(candidates.values())
        k, values, info = self.choose_on_fresh(exprs)
        return exprs[k], {**info, "candidates": len(exprs), "evolved": len(found),
                          "valid": values[k],
                          "reference": name, "valid_reference": values[0],
                          "evolved_champion": expr_to_scheme(evolved)}

    def reference_decoder(self) -> tuple[str, Expr]:
        """(name, program) of the fixed decoding a user would pick for the task, the one a
        champion must beat: greedy on answer tasks, nucleus 0.95 (Holtzman et al.'s closest
        to human) on text tasks."""
        if self.task.kind == "text":
            return "nucleus 0.95", engine_dsl.read_expr(NUCLEUS_95, Type.DECODER)
        return "greedy", GREEDY

    def fresh_examples(self) -> list[Example]:
        """The valid examples after those scoring every generation, at most
        `loop.select_prompts` of them (text tasks: `settings.text_select_prompts`): prompts no
        selection has seen (at least 2, else none)."""
        count = (text_select_prompts(self.cfg) if self.task.kind == "text"
                 else self.cfg.loop.select_prompts)
        fresh = self.task.split("valid")[self.cfg.loop.valid_prompts:][:count]
        return fresh if len(fresh) >= 2 else []

    def race_examples(self) -> list[Example]:
        """Text tasks' second stage of the final selection: the `text.race_prompts` valid
        examples after the fresh ones (`fresh_examples`), none a selection has seen (at least
        2, else none)."""
        if self.task.kind != "text" or not self.cfg.text.race_prompts:
            return []
        start = self.cfg.loop.valid_prompts + len(self.fresh_examples())
        race = self.task.split("valid")[start:start + self.cfg.text.race_prompts]
        return race if len(race) >= 2 else []

    @torch.no_grad()
    def choose_on_fresh(self, exprs: list[Expr]) -> tuple[int, list[float], dict]:
        """(index, scores, how): the one-standard-error choice among `exprs` (complexity =
        size) on the fresh valid examples with fresh draws, every program on the same draws.
        Answer tasks: exact match per prompt, the paired differences' standard error.
        Text tasks: the text objective of all continuations (`TextScorer.score`), the
        standard error of the paired differences from its values on `SELECTION_HALVES`
        (MAUVE: `text_scoring.MAUVE_RESAMPLES`) random halves of the prompts
        (`report.half_samples`: MAUVE has no per-prompt form); then a race
        (`race_examples`): the programs within 2 standard errors of the best (at most
        `RACE_PROGRAMS`, and the first, the callers' reference) are scored again on
        `text.race_prompts` more fresh prompts with their own draws, where the rule chooses
        among them (MAUVE on a hundred prompts cannot tell decoders a few points apart; on
        a thousand it can). `scores` are each program's at the last stage it ran."""
        from .selection import one_standard_error_choice, race_survivors, within_noise

        fresh = self.fresh_examples()
        seed = self.evaluation_seed() + SELECTION_DRAWS
        sizes = [engine_dsl.size(e) for e in exprs]
        label = f"final selection: {len(exprs)} programs on {len(fresh)} fresh valid prompts"
        if self.task.kind == "text":
            with self._progress(label):
                values, errors = self._text_stage(exprs, [fresh], seed)
            how = {"rule": f"one-standard-error (size; {self.cfg.text.objective}, "
                           f"{SELECTION_HALVES} half-samples)", "prompts": len(fresh)}
            race = self.race_examples()
            if race and len(exprs) > 1:
                ran = race_survivors(values, errors, RACE_PROGRAMS, keep=0)
                blocks = [race[i:i + len(fresh)] for i in range(0, len(race), len(fresh))]
                with self._progress(f"final selection, second stage: {len(ran)} programs on "
                                    f"{len(race)} more fresh valid prompts"):
                    raced, errors = self._text_stage([exprs[i] for i in ran], blocks,
                                                     seed + RACE_DRAWS)
                for i, v in zip(ran, raced, strict=True):
                    values[i] = v
                how["race"] = {"prompts": len(race), "programs": len(ran)}
            else:
                ran = list(range(len(exprs)))
            k = ran[within_noise([values[i] for i in ran], errors, [sizes[i] for i in ran])]
            return k, values, how
        with self._progress(label):
            decoded = self.decode(exprs, fresh, seed)
        rows = [[float(self.task.is_correct(self.tokenizer.decode(a.tokens), e.output))
                 for a, e in zip(ans, fresh, strict=True)] for ans in decoded]
        k = one_standard_error_choice(rows, sizes)
        return k, [sum(r) / len(r) for r in rows], {"rule": "one-standard-error (size)",
                                                     "prompts": len(fresh)}

    def _text_stage(self, exprs: list[Expr], blocks: list[list[Example]],
                    seed: int) -> tuple[list[float], list[float]]:
        """(values, errors): each program's text objective on all the blocks' prompts
        together and the standard error of its gap to the best (`resampled_gap_errors`
        over random halves of the prompts). Each block is one decode of every program
        (`seed` + its index: a block fits `loop.decode_memory_mb` as the fresh prompts do)."""
        from .selection import resampled_gap_errors

        examples = [e for b in blocks for e in b]
        scorer = TextScorer.of(self.judge, examples, self.cfg.text.objective)
        texts, stopped = [[] for _ in exprs], [[] for _ in exprs]
        for j, block in enumerate(blocks):
            for p, ans in enumerate(self.decode(exprs, block, seed + j)):
                texts[p] += [self.tokenizer.decode(a.tokens) for a in ans]
                stopped[p] += [a.stopped for a in ans]
        written = [scorer.read(t, s) for t, s in zip(texts, stopped, strict=True)]
        halves = report.half_samples(len(examples), scorer.resamples(SELECTION_HALVES),
                                     seed=self.cfg.run.seed)
        values = [scorer.score(w) for w in written]
        resampled = [[scorer.score(w, h) for h in halves] for w in written]
        return values, resampled_gap_errors(values, resampled,
                                            scale=report.half_sample_scale(len(examples)))

    def score(self, programs: dict[str, Expr], split: str) -> dict[str, dict]:
        """{name: {score, ci95, cost, n}} of Decoder programs on a split, with a 95% interval
        over prompts (exact match, a bootstrap; text tasks: the text objective, halves of
        the prompts, `TextScorer.interval`)."""
        names = list(programs)
        out = {}
        if self.task.kind == "text":
            return self._text_results(names, *self._write_text(programs, split))
        scores, costs, _ = self.per_item(split, [programs[n] for n in names])
        for name, items, cost in zip(names, scores, costs, strict=True):
            mean, lo, hi = report.bootstrap_ci(items, self.cfg.loop.bootstrap,
                                               seed=self.cfg.run.seed)
            out[name] = {"score": mean, "ci95": [lo, hi], "cost": cost, "n": len(items)}
        return out

    def _write_text(self, programs: dict[str, Expr], split: str):
        """(scorer, [(written, cost)] in the order of `programs`): every program's
        continuations of the split's prompts, one batched decode with the run's draws."""
        ev = self._text_evaluator(self._examples(split), seed=self.evaluation_seed())
        return ev.scorer, ev.write(list(programs.values()))

    def _text_results(self, names, scorer: TextScorer, written) -> dict[str, dict]:
        """{name: {score, ci95, cost, n}} of written continuations (`_write_text`)."""
        out = {}
        for name, (w, cost) in zip(names, written, strict=True):
            value, lo, hi = scorer.interval(w, self.cfg.loop.bootstrap, seed=self.cfg.run.seed)
            out[name] = {"score": value, "ci95": [lo, hi], "cost": cost, "n": len(w.texts)}
        return out

    @torch.no_grad()
    def per_item(self, split: str, exprs: list[Expr]) -> tuple[list[list[float]], list, list]:
        """Per-prompt scores of each program on a split (text tasks: each continuation's
        reward, `TextScorer.rewards`), each program's mean cost, and its answers (texts).
        Every program gets the same draws (common random numbers): differences are paired."""
        examples = self._examples(split)
        if self.task.kind == "text":
            ev = self._text_evaluator(examples, seed=self.evaluation_seed())
            written = ev.write(exprs)
            return ([ev.scorer.rewards(w).tolist() for w, _ in written],
                    [cost for _, cost in written], [w.texts for w, _ in written])
        decoded = self.decode(exprs, examples, self.evaluation_seed())
        answers = [[self.tokenizer.decode(a.tokens) for a in ans] for ans in decoded]
        scores = [[float(self.task.is_correct(a, e.output))
                   for a, e in zip(ans, examples, strict=True)] for ans in answers]
        return scores, [_mean([a.cost for a in ans]) for ans in decoded], answers


def _tuning_counts(tuner, in_process: bool) -> dict | None:
    """What constant tuning did this generation: tunings kept and undone by the guard (None
    where nothing was tuned here, or the tunings ran in worker processes)."""
    if tuner is None or not in_process:
        return None
    return {"kept": tuner.tunings - tuner.rejected, "undone": tuner.rejected}


def _mean(xs) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _front(pop: Population) -> list:
    """The hall of fame best first: score up, cost down, size down, then oldest (a total
    order, so a resumed run writes it exactly as an uninterrupted one)."""
    def key(i):
        score, cost, size = i.fitness.values
        serial = int(i.id.rsplit("-", 1)[-1]) if i.id.rsplit("-", 1)[-1].isdigit() else 0
        return (-score, cost, size, i.generation, serial, i.id)

    return sorted(pop.hall_of_fame, key=key)


def _info(ind) -> dict:
    score, cost, size = ind.fitness.values
    return {"score": score, "cost": cost, "size": int(size)}


def _slot_name(expr: Expr, index: int) -> str:
    """'temperature.t' for the constant at prefix index `index` of `expr`."""
    stack = [(expr, None)]
    k = 0
    while stack:
        node, parent = stack.pop()
        if k == index:
            if parent is None:
                return "?"
            op, i = parent
            return f"{op}.{engine_dsl.PRIMITIVES[op].args[i].name}"
        k += 1
        if isinstance(node, Apply):
            stack.extend(reversed([(a, (node.op, j)) for j, a in enumerate(node.args)]))
    return "?"
