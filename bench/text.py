"""Benchmark: open-ended text on held-out works, a Holtzman-style table (issue 12).

    OMP_NUM_THREADS=2 .venv/bin/python bench/text.py            # 3 run seeds, the task's model
    OMP_NUM_THREADS=2 .venv/bin/python bench/text.py --quick    # 1 seed, a 2 x 2 x 64 model
    ... --write                                                 # section of docs/BENCHMARKS.md

Settings (flags; full / --quick): run seeds 0 1 2 / 0; the shakespeare task's model and
training (4 x 4 x 128, batch 4, 1200 pre-training steps, the judge as many) / 2 x 2 x 64,
batch 8, 200 steps each; 2 / 1 generations of population 10 / 6 on 48 / 32 valid prompts, 50
training steps per generation; selection and the nucleus tuning by `text.objective` =
`mauve` (`--objective`); the final choice of champion and tuned nucleus on 128 / 32 fresh
valid prompts, then a race: the candidates within 2 standard errors of the best (at most 4,
and nucleus 0.95) on 1,024 / 64 more (`text.race_prompts`); the table on 128 / 32 test
prompts, intervals from 200 / 50 random halves of them (MAUVE: the mean over 5 k-means
quantizations, on 50 halves); the last line's pair on 1,024 / 32 test prompts; scoring cost
at 32 programs x 128 / 32 prompts. `--set KEY=VALUE` passes any other setting to the runs.
`--out DIR` keeps the runs, and each seed's choices and continuations
(OUT/seed-K-rows.json); a later call with the same DIR reuses the finished runs (their final
choice made again where the settings of the choice changed) and the continuations, so seeds
can run in parallel processes (`--seeds K`) and one last call with all the seeds pools them.

Per run seed: an evolution run on the `shakespeare` task without co-training
(`loop.program_lambda = 0`) and one with it (the same pre-trained model, copied after
generation 0: `loop.model_objective = "reinforce"`, `loop.program_lambda = 0.5`); a nucleus
sampler (temperature, top-p) tuned by Optuna (TPE) on the valid split with the run's text
objective and as many program evaluations as evolution made, its first trial nucleus 0.95.
Both are then chosen the same way, against the winner's curse of a few noisy valid prompts:
the run's final selection (`CoEvolution.select_champion`: the last front, the seed programs
and nucleus 0.95 on fresh valid prompts with fresh draws, the one-standard-error rule on
size, and the race on more prompts) for the champion; as many of Optuna's best trials, with
nucleus 0.95, through the same rule (`CoEvolution.choose_on_fresh`) for the tuned nucleus.
Then every decoder continues the same test prompts (passages of works no model trained on,
that no selection saw) with the same draws, and the frozen judge reads the continuations.
Rows: greedy, pure sampling, top-k 40, nucleus 0.95, typical 0.95, min-p 0.1, the newer
samplers (top-n-sigma, eta, mirostat, XTC, DRY), the tuned nucleus, the evolved champion
without and with co-training, and the human continuations. Columns: judge perplexity
(per byte) and its ratio to human, rep-4, diversity, Zipf coefficient, Self-BLEU-4, MAUVE
(against the human continuations, judge features), loops (% of continuations that end in a
loop); each the mean over run seeds with a 95% interval over prompts from random halves of
them (the same halves for every row and seed, so differences are paired; halves, not a
bootstrap: a prompt drawn twice collapses MAUVE's k-means clusters and skews the Zipf fit,
which put the bootstrap's intervals beside their point estimates; `report.half_sample_interval`).

Also measured: scoring cost against generation, P programs x N continuations of M bytes
(goal: scoring <= 0.5x generating). The last line is, for scripts:
`text: champion MAUVE 0.812 vs tuned nucleus 0.790, paired difference +0.022 [+0.004, +0.041]`
(the champion without co-training, on the same model and draws as the tuned nucleus, on
`--headline-prompts` test prompts: on 128, MAUVE cannot tell decoders within about 0.12
apart, docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import torch  # noqa: E402

import engine_dsl  # noqa: E402
from bench.tuned import select_tuned, tpe_ranked  # noqa: E402
from engine_dsl import Type  # noqa: E402
from evolution.loop import CoEvolution  # noqa: E402
from evolution.report import half_sample_interval, half_samples  # noqa: E402
from evolution.rundir import RunDir  # noqa: E402
from evolution.settings import resolve  # noqa: E402
from evolution.text_scoring import (  # noqa: E402
    MAUVE_RESAMPLES,
    MAUVE_SEED,
    MAUVE_SEEDS,
    NUCLEUS_95,
    OBJECTIVES,
    TextScorer,
)
from neural.text_measures import (  # noqa: E402
    diversity,
    loop_share,
    mauve_score,
    perplexity,
    rep_n,
    self_bleu_per_text,
    zipf_coefficient,
)

BASELINES = {  # row name -> program (fixed decoders of the literature, their usual settings)
    "greedy": "(greedy logits)",
    "pure sampling": "(sample logits)",
    "top-k 40": "(sample (top-k logits 40))",
    "nucleus 0.95": NUCLEUS_95,
    "typical 0.95": "(sample (typical logits 0.95))",
    "min-p 0.1": "(sample (min-p logits 0.1))",
    "top-n-sigma 1": "(sample (top-n-sigma logits 1.0))",
    "eta 0.0009": "(sample (eta logits 0.0009))",
    "mirostat 5 0.1": "(sample (mirostat logits 5.0 0.1))",
    "xtc 0.1 0.5": "(sample (xtc logits 0.1 0.5))",
    "dry + nucleus 0.95": "(sample (top-p (dry logits 0.8 1.75 2) 0.95))",
}
TUNED, CHAMPION, COTRAINED, HUMAN = ("tuned nucleus", "champion", "champion, co-trained",
                                     "human")
COLUMNS = ["judge PPL", "PPL / human", "rep-4", "diversity", "Zipf", "Self-BLEU-4", "MAUVE",
           "loops %"]


def nucleus(t: float, p: float) -> str:
    return f"(sample (top-p (temperature logits {t!r}) {p!r}))"


class CountingRun(CoEvolution):
    """A run that counts the programs its generations score (the greedy baseline aside)."""

    evaluations = 0

    def _scoring(self, evaluator, label):
        def evaluate(decoders):
            if not (len(decoders) == 1 and decoders[0] == engine_dsl.registry.baseline()):
                self.evaluations += len(decoders)
            return evaluator(decoders)

        return evaluate


def run_config(args, seed: int, sets=()):
    """The runs' settings: the shakespeare task's defaults, less what the flags change."""
    given = {"loop.pretrain_steps": args.pretrain_steps, "text.judge_steps": args.judge_steps,
             "train.batch_size": args.batch_size}
    return resolve(None, ["task.name=shakespeare", f"run.seed={seed}",
                          f"text.objective={args.objective}",
                          f"run.generations={args.generations}",
                          f"evolution.population_size={args.population}",
                          f"loop.train_steps={args.train_steps}",
                          f"loop.valid_prompts={args.valid_prompts}",
                          *(f"{k}={v}" for k, v in given.items() if v is not None),
                          *args.set, *sets])


def evolve(args, seed: int, out: Path, log):
    """The run without co-training and the one with it (sharing generation 0), and the
    number of program evaluations the plain run made. Finished runs of an earlier call with
    the same `--out` (both directories at the last generation, and OUT/seed-K.json with
    the count) are reused: resumed without new generations, their selection redone."""
    plain_dir, co_dir = out / f"seed-{seed}-plain", out / f"seed-{seed}-cotrained"
    count = out / f"seed-{seed}.json"
    select = [f"loop.select_prompts={args.select_prompts}",
              f"text.race_prompts={args.race_prompts}"]
    if count.exists() and all(_finished(d, args.generations) for d in (plain_dir, co_dir)):
        evaluations = json.loads(count.read_text())["evaluations"]
        log(f"seed {seed}: reusing the finished runs in {out} ({evaluations} program "
            "evaluations by evolution)")
        runs = {}
        for name, d in (("plain", plain_dir), ("cotrained", co_dir)):
            runs[name] = CountingRun.resume(RunDir(d), sets=select)
            runs[name].close()
        return runs, evaluations
    for d in (plain_dir, co_dir):
        shutil.rmtree(d, ignore_errors=True)
    # the plain run's loop.program_lambda = 0 would weigh the co-training loss out
    cotrain = [f"loop.program_lambda={args.cotrain_lambda}", "loop.model_objective=reinforce"]
    runs = {}
    plain = CountingRun.start(run_config(args, seed, ["loop.program_lambda=0", *select]),
                              RunDir(plain_dir))
    try:
        t0 = time.perf_counter()
        plain.generation(0)
        log(f"seed {seed}: pre-training and generation 0 in {time.perf_counter() - t0:.0f} s")
        shutil.copytree(plain_dir, co_dir)
        for g in range(1, args.generations + 1):
            plain.generation(g)
    finally:
        plain.close()
    runs["plain"] = plain
    co = CountingRun.resume(RunDir(co_dir), sets=cotrain)
    try:
        for g in range(1, args.generations + 1):
            co.generation(g)
    finally:
        co.close()
    runs["cotrained"] = co
    count.write_text(json.dumps({"evaluations": plain.evaluations}) + "\n")
    log(f"seed {seed}: {plain.evaluations} program evaluations by evolution "
        f"(co-trained run, after generation 0: {co.evaluations}); co-training by "
        f"{' '.join(cotrain)}")
    return runs, plain.evaluations


def _finished(path: Path, generations: int) -> bool:
    """Whether `path` holds a run whose last generation is `generations`."""
    try:
        entries = RunDir(path).log_entries()
    except Exception:  # noqa: BLE001 - no run there, or a damaged one: evolve again
        return False
    return bool(entries) and entries[-1]["generation"] == generations


def tune_nucleus(run, trials: int, batch: int, seed: int):
    """Optuna's TPE over (temperature, top-p) of a nucleus sampler, `trials` evaluations on
    the valid split with the run's objective, asked and scored `batch` at a time, the first
    trial nucleus 0.95 at temperature 1 (as evolution starts from its seed programs).
    Returns the distinct programs tried, best valid score first, with their scores
    (`tuned.tpe_ranked`)."""
    ev = run._text_evaluator(run._examples("valid"), seed=run.evaluation_seed())

    def propose(trial) -> str:
        return nucleus(round(trial.suggest_float("temperature", 0.3, 1.5), 4),
                       round(trial.suggest_float("top_p", 0.3, 0.999), 4))

    def score(sources):
        return [s for s, _ in ev([engine_dsl.read_expr(src, Type.DECODER) for src in sources])]

    return tpe_ranked(propose, score, trials, batch, seed, {"temperature": 1.0, "top_p": 0.95})


def seed_rows(args, seed: int, out: Path, log):
    """(done, run, reused): one run seed's choices and continuations, its plain run, and
    whether `done` came from an earlier call. `done`
    holds the programs, their scores on the fresh valid prompts, each table row's
    continuations of the test prompts and the last line's pair's of the headline prompts
    (texts and whether each stopped), and the scoring cost where this seed measured it. Kept
    in OUT/seed-K-rows.json and reused by a later call with the same settings, so seeds can
    run in separate processes and one last call pools them."""
    path = out / f"seed-{seed}-rows.json"
    key = {"test_prompts": args.test_prompts, "headline_prompts": args.headline_prompts,
           "select_prompts": args.select_prompts, "race_prompts": args.race_prompts,
           "objective": args.objective,
           "mauve_seeds": MAUVE_SEEDS, "cost": [args.cost_programs, args.cost_prompts]}
    runs, evaluations = evolve(args, seed, out, log)
    plain, co = runs["plain"], runs["cotrained"]
    if path.exists():
        done = json.loads(path.read_text())
        if done.get("key") == key:
            log(f"seed {seed}: choices and continuations reused from {path}")
            return done, plain, True
    champion, sel = plain.select_champion()
    co_champion, _ = co.select_champion()
    ranked = tune_nucleus(plain, evaluations, args.population, seed)
    tuned, tuned_fresh, tuned_candidates = select_tuned(plain, ranked, sel.get("evolved", 1))
    log(f"seed {seed}: champion {_source(champion)} (fresh valid {sel.get('valid')}); "
        f"tuned nucleus {tuned} (best on valid: {ranked[0][0]} {ranked[0][1]:.3f}; "
        f"fresh valid {tuned_fresh:.3f})")
    draw = seed * 1000 + 999  # fresh draws: no selection saw them
    examples = plain.task.test[:args.test_prompts]
    rows = decode_rows(plain, {**BASELINES, TUNED: tuned, CHAMPION: champion}, examples, draw)
    rows |= decode_rows(co, {COTRAINED: co_champion}, examples, draw)
    log(f"seed {seed}: {len(rows)} rows written on {len(examples)} test prompts")
    wide = plain.task.test[:args.headline_prompts]
    done = {"key": key,
            "programs": {TUNED: tuned, CHAMPION: _source(champion),
                         COTRAINED: _source(co_champion)},
            "chosen": {"champion": (sel.get("valid"), sel.get("candidates")),
                       TUNED: (tuned_fresh, tuned_candidates),
                       "nucleus 0.95": (sel.get("valid_reference"), None)},
            "rows": rows,
            "pair": decode_rows(plain, {CHAMPION: champion, TUNED: tuned}, wide, draw)}
    log(f"seed {seed}: champion and tuned nucleus on {len(wide)} test prompts")
    if seed == args.seeds[0]:
        gen_s, score_s, p = scoring_cost(plain, plain.task.test, args.cost_programs,
                                         args.cost_prompts, draw)
        done["cost"] = (gen_s, score_s, p, min(args.cost_prompts, len(plain.task.test)),
                        plain.answer_cap(), os.getloadavg()[0])
        log(f"scoring cost: generate {gen_s:.1f} s, score {score_s:.1f} s")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(done) + "\n")
    tmp.replace(path)
    return done, plain, False


def decode_rows(run, programs: dict, examples, seed: int) -> dict:
    """{name: (texts, stopped)}: each program's continuations of the examples' prompts (the
    run's batched decode, the same draws)."""
    tok = run.tokenizer
    exprs = [engine_dsl.read_expr(p, Type.DECODER) if isinstance(p, str) else p
             for p in programs.values()]
    decoded = run.decode(exprs, examples, seed)
    return {name: ([tok.decode(a.tokens) for a in ans], [a.stopped for a in ans])
            for name, ans in zip(programs, decoded, strict=True)}


class Measured:
    """The table's measures of one row's continuations, on any resample of the prompts."""

    def __init__(self, written, human, self_bleu_texts: int):
        self.w, self.h = written, human
        # Self-BLEU-4 of each of the first texts against the others of them, once (a
        # resample averages these)
        k = min(len(written.texts), self_bleu_texts)
        self.bleu = self_bleu_per_text(written.texts[:k]) + [math.nan] * (len(written.texts) - k)

    def values(self, idx, with_mauve: bool = True) -> dict[str, float]:
        w, h = self.w, self.h
        texts = [w.texts[i] for i in idx]
        ppl, ppl_h = perplexity(w.judge.subset(idx)), perplexity(h.judge.subset(idx))
        bleu = [self.bleu[i] for i in idx if not math.isnan(self.bleu[i])]
        return {"judge PPL": ppl, "PPL / human": ppl / ppl_h, "rep-4": rep_n(texts, 4),
                "diversity": diversity(texts), "Zipf": zipf_coefficient(texts),
                "Self-BLEU-4": sum(bleu) / len(bleu) if bleu else math.nan,
                "MAUVE": (mauve_score(w.judge.features[idx], h.judge.features[idx],
                                      seed=MAUVE_SEED, seeds=MAUVE_SEEDS)
                          if with_mauve else math.nan),
                "loops %": loop_share(texts)}


def intervals(measured: dict[int, dict[str, Measured]], n: int, resamples: int, seed: int):
    """{row: {column: (value, lo, hi)}} means over run seeds with 95% intervals from random
    halves of the prompts (`report.half_sample_interval`: the same halves for every row and
    seed, so differences are paired; no prompt twice, which would distort MAUVE and the Zipf
    fit; MAUVE, MAUVE_SEEDS k-means runs a time, on the first `MAUVE_RESAMPLES` of them)."""
    halves = half_samples(n, resamples, seed)
    full = list(range(n))
    rows = list(next(iter(measured.values())))
    samples = {r: {c: [] for c in COLUMNS} for r in rows}
    point = {r: {c: _mean([measured[s][r].values(full)[c] for s in measured]) for c in COLUMNS}
             for r in rows}
    for j, idx in enumerate(halves):
        for r in rows:
            per_seed = [measured[s][r].values(idx, j < MAUVE_RESAMPLES) for s in measured]
            for c in COLUMNS:
                samples[r][c].append(_mean([v[c] for v in per_seed]))
    return {r: {c: (point[r][c], *_bounded(c, half_sample_interval(point[r][c], samples[r][c],
                                                                   n)))
                for c in COLUMNS} for r in rows}


def headline(pairs: dict, resamples: int) -> dict:
    """The last line's measure: MAUVE of the champion and of the tuned nucleus on the
    headline prompts (means over run seeds), and their paired difference with a 95% interval
    from random halves of the prompts (the same halves for every seed)."""
    scorers = [p[0] for p in pairs.values()]
    n = len(scorers[0].prompts)
    halves = half_samples(n, scorers[0].resamples(resamples), seed=0)

    def means(idx=None):
        return (_mean([scorer.score(ch, idx) for scorer, ch, _ in pairs.values()]),
                _mean([scorer.score(tu, idx) for scorer, _, tu in pairs.values()]))

    champion, tuned = means()
    diffs = [a - b for a, b in map(means, halves)]
    return {"champion": champion, "tuned": tuned, "prompts": n,
            "diff": (champion - tuned, *half_sample_interval(champion - tuned, diffs, n))}


def _bounded(column: str, interval: tuple[float, float]) -> tuple[float, float]:
    """An interval within the range of its column's measure (MAUVE lies in [0, 1])."""
    lo, hi = interval
    return (min(max(lo, 0.0), 1.0), min(max(hi, 0.0), 1.0)) if column == "MAUVE" else (lo, hi)


def _mean(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def cost_programs(programs: int) -> list[str]:
    """The scoring cost's programs: the first `programs` of a nucleus grid (8 temperatures x
    4 top-p)."""
    return [nucleus(t, p) for t in (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
            for p in (0.8, 0.9, 0.95, 0.99)][:programs]


def scoring_cost(run, scorer_examples, programs: int, prompts: int, seed: int):
    """Seconds to generate `programs` x `prompts` continuations (one batched decode) and to
    score them (the scorer built: its prompts and the human continuations read; then the
    judge's reading and the objective of each program)."""
    examples = scorer_examples[:prompts]
    judge = run.judge  # loaded (or trained) outside the timing
    grid = cost_programs(programs)
    exprs = [engine_dsl.read_expr(g, Type.DECODER) for g in grid]
    tok = run.tokenizer
    t0 = time.perf_counter()
    decoded = run.decode(exprs, examples, seed)
    t1 = time.perf_counter()
    scorer = TextScorer.of(judge, examples, run.cfg.text.objective)
    for ans in decoded:
        scorer.score(scorer.read([tok.decode(a.tokens) for a in ans],
                                 [a.stopped for a in ans]))
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, len(grid)


def fmt(v, lo=None, hi=None, spec=".3f"):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if lo is None or math.isnan(lo):
        return format(v, spec)
    return f"{v:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, fewer steps and prompts")
    ap.add_argument("--seeds", type=int, nargs="+")
    ap.add_argument("--pretrain-steps", type=int)
    ap.add_argument("--judge-steps", type=int)
    ap.add_argument("--train-steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, help="training rows per step")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="another setting of the runs (repeatable), e.g. model.n_layer=2")
    ap.add_argument("--objective", default="mauve", choices=OBJECTIVES,
                    help="text.objective of evolution and of the nucleus tuning (default: "
                         "mauve, the table's headline measure)")
    ap.add_argument("--cotrain-lambda", type=float, default=0.5,
                    help="loop.program_lambda of the co-trained run (reinforce's weight "
                         "against the likelihood anchor)")
    ap.add_argument("--generations", type=int)
    ap.add_argument("--population", type=int)
    ap.add_argument("--valid-prompts", type=int)
    ap.add_argument("--test-prompts", type=int)
    ap.add_argument("--headline-prompts", type=int,
                    help="test prompts of the last line's pair, champion vs tuned nucleus "
                         "(MAUVE separates decoders only on many prompts)")
    ap.add_argument("--select-prompts", type=int,
                    help="fresh valid prompts choosing the champion and the tuned nucleus")
    ap.add_argument("--race-prompts", type=int,
                    help="more fresh valid prompts for the choice's second stage "
                         "(text.race_prompts: the candidates within 2 SE of the best)")
    ap.add_argument("--bootstrap", type=int, help="random halves of the prompts per interval")
    ap.add_argument("--self-bleu-texts", type=int, default=64,
                    help="Self-BLEU-4 of each of the first N continuations against the others")
    ap.add_argument("--cost-programs", type=int, default=32)
    ap.add_argument("--cost-prompts", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="run directories (default: a temporary folder); finished "
                                  "runs and continuations found there are reused")
    ap.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = ap.parse_args(argv)
    args.argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--quick"]
    quick = args.quick
    # full: the task's model and training (None: its default); quick: a smaller model
    defaults = dict(seeds=[0] if quick else [0, 1, 2], pretrain_steps=200 if quick else None,
                    judge_steps=200 if quick else None, generations=1 if quick else 2,
                    population=6 if quick else 10, valid_prompts=32 if quick else 48,
                    test_prompts=32 if quick else 128, bootstrap=50 if quick else 200,
                    headline_prompts=32 if quick else 1024,
                    select_prompts=32 if quick else 128, race_prompts=64 if quick else 1024,
                    cost_prompts=32 if quick else 128, batch_size=8 if quick else None)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if quick:  # a smaller model: 2 blocks x 2 heads x 64 (the task's default: 4 x 4 x 128)
        args.set = ["model.n_layer=2", "model.n_head=2", "model.n_embd=64", *args.set]
    torch.set_num_threads(args.threads)
    out = Path(args.out or tempfile.mkdtemp(prefix="echo-forge-text-"))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - started:6.0f} s] {msg}", file=sys.stderr, flush=True)

    resolved = run_config(args, args.seeds[0])
    args.pretrain_steps, args.batch_size = resolved.loop.pretrain_steps, resolved.train.batch_size
    args.judge_steps = resolved.text.judge_steps or resolved.loop.pretrain_steps
    measured, programs_by_seed, chosen, pairs = {}, {}, {}, {}
    cost = None
    for seed in args.seeds:
        done, plain, reused = seed_rows(args, seed, out, log)
        programs_by_seed[seed], chosen[seed] = done["programs"], done["chosen"]
        cost = cost or done.get("cost")
        examples = plain.task.test[:args.test_prompts]
        scorer = TextScorer.of(plain.judge, examples, plain.cfg.text.objective)
        written = {row: scorer.read(*texts) for row, texts in done["rows"].items()}
        written[HUMAN] = scorer.human
        measured[seed] = {r: Measured(w, scorer.human, args.self_bleu_texts)
                          for r, w in written.items()}
        wide = plain.task.test[:args.headline_prompts]
        wide_scorer = TextScorer.of(plain.judge, wide, "mauve")
        pairs[seed] = (wide_scorer, *(wide_scorer.read(*done["pair"][r])
                                      for r in (CHAMPION, TUNED)))
        if reused and seed != args.seeds[-1]:
            continue
        # the table over the seeds done so far, kept in OUT/report.md (a run stopped early
        # still reports its finished seeds)
        n = len(measured[args.seeds[0]][HUMAN].w.texts)
        table = intervals(measured, n, args.bootstrap, seed=0)
        head = headline(pairs, args.bootstrap)
        text = report(args, table, head, programs_by_seed, chosen, cost,
                      time.perf_counter() - started)
        (out / "report.md").write_text(text + "\n\n" + last_line(head) + "\n")
        log(f"seeds {', '.join(map(str, measured))}: table in {out / 'report.md'}")
    print(text)
    if args.write:
        from primitives import write_section

        write_section(text + "\n\n" + last_line(head) + "\n")
    print(last_line(head))
    return 0


def _source(expr) -> str:
    from engine_dsl.printer import expr_to_scheme

    return expr_to_scheme(expr)


def last_line(head) -> str:
    diff = head["diff"]
    return (f"text: champion MAUVE {head['champion']:.3f} vs tuned nucleus "
            f"{head['tuned']:.3f}, paired difference {diff[0]:+.3f} "
            f"[{diff[1]:+.3f}, {diff[2]:+.3f}]")


def report(args, table, head, programs_by_seed, chosen, cost, elapsed) -> str:
    cmd = (f"OMP_NUM_THREADS={args.threads} .venv/bin/python bench/text.py"
           + (" --quick" if args.quick else "") + "".join(f" {a}" for a in args.argv))
    lines = ["## Open-ended text (`bench/text.py`)", "",
             f"`{cmd}` — {platform.machine()}, torch {torch.__version__}, {args.threads} "
             f"threads, a shared machine (load average {os.getloadavg()[0]:.1f} at the end); "
             f"{elapsed / 60:.1f} minutes. Task `shakespeare`; run seeds "
             f"{', '.join(map(str, programs_by_seed))}; settings "
             f"{' '.join(args.set) or 'the task defaults'}, "
             f"training batch {args.batch_size}; pre-training {args.pretrain_steps} steps, "
             f"judge {args.judge_steps} steps, {args.generations} generations x population "
             f"{args.population} on {args.valid_prompts} valid prompts, the nucleus tuned "
             f"on them by `text.objective = {args.objective}`; the champion and the tuned "
             f"nucleus then chosen alike on {args.select_prompts} fresh valid prompts, "
             f"those within 2 standard errors of the best (at most 4, and nucleus 0.95) on "
             f"{args.race_prompts} more (the one-standard-error rule on the same objective, "
             f"nucleus 0.95 a candidate of both); the table on {args.test_prompts} test "
             f"prompts (passages of the held-out works that no selection saw), the mean "
             f"over run seeds with a 95% interval over prompts ({args.bootstrap} random halves "
             f"of them, the same for every row; MAUVE the mean over {MAUVE_SEEDS} k-means "
             f"quantizations, on the first {MAUVE_RESAMPLES} halves); the last line's pair on "
             f"the first {head['prompts']} test prompts.", "",
             "| decoder | " + " | ".join(COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for row, cols in table.items():
        lines.append(f"| {row} | " + " | ".join(
            fmt(*cols[c], spec=".1f" if c in ("rep-4", "loops %", "Self-BLEU-4") else ".3f")
            for c in COLUMNS) + " |")
    lines += ["", "Programs (per run seed):"]
    for seed, progs in programs_by_seed.items():
        for name, src in progs.items():
            lines.append(f"- seed {seed}, {name}: `{src}`")
        fresh = chosen[seed]
        lines.append(f"- seed {seed}, on the fresh valid prompts ({args.objective}): "
                     + ", ".join(f"{name} {fmt(v)}" + (f" (of {k} candidates)" if k else "")
                                 for name, (v, k) in fresh.items()))
    h, ch, nu = table[HUMAN], table[CHAMPION], table["nucleus 0.95"]
    closer_ppl = abs(ch["judge PPL"][0] - h["judge PPL"][0]) < \
        abs(nu["judge PPL"][0] - h["judge PPL"][0])
    closer_rep = abs(ch["rep-4"][0] - h["rep-4"][0]) < abs(nu["rep-4"][0] - h["rep-4"][0])
    g, pure, diff = table["greedy"], table["pure sampling"], head["diff"]
    lines += ["", "Goals:",
              f"- champion MAUVE above the tuned nucleus on {head['prompts']} test prompts "
              f"(interval of the paired difference above 0): "
              f"{'met' if diff[1] > 0 else 'MISSED'} ({diff[0]:+.3f} "
              f"[{diff[1]:+.3f}, {diff[2]:+.3f}])",
              f"- champion closer to human than nucleus 0.95 on judge perplexity: "
              f"{'met' if closer_ppl else 'MISSED'} ({ch['judge PPL'][0]:.3f} vs "
              f"{nu['judge PPL'][0]:.3f}, human {h['judge PPL'][0]:.3f}); on rep-4: "
              f"{'met' if closer_rep else 'MISSED'} ({ch['rep-4'][0]:.1f} vs "
              f"{nu['rep-4'][0]:.1f}, human {h['rep-4'][0]:.1f})",
              f"- Holtzman's ordering: greedy loops ({g['loops %'][0]:.0f}% of continuations "
              f"end in a loop, human {h['loops %'][0]:.0f}%: "
              f"{'reproduced' if g['loops %'][0] > h['loops %'][0] else 'NOT reproduced'}); "
              f"pure sampling's perplexity above human ({pure['judge PPL'][0]:.3f} vs "
              f"{h['judge PPL'][0]:.3f}: "
              f"{'reproduced' if pure['judge PPL'][0] > h['judge PPL'][0] else 'NOT reproduced'}"
              f"); nucleus 0.95 close to human (PPL ratio {nu['PPL / human'][0]:.3f}, "
              f"pure sampling {pure['PPL / human'][0]:.3f})"]
    gen_s, score_s, p, n, m, load = cost
    ratio = score_s / gen_s
    lines += [f"- scoring {p} programs x {n} continuations of {m} bytes: {score_s:.1f} s "
              f"against {gen_s:.1f} s to generate them, ratio {ratio:.2f} (goal <= 0.5: "
              f"{'met' if ratio <= 0.5 else 'MISSED'}; load average {load:.1f})"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
