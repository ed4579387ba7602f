"""Diagnosis: how much a text objective moves between prompt sets and draws (issue 12).

    OMP_NUM_THREADS=1 .venv/bin/python bench/text_noise.py RUN_DIR [--prompts 512 --blocks 4]

On a finished `shakespeare` run (its model and judge), a few decoders continue the valid
prompts after those evolution scored (`loop.valid_prompts`), twice with different draws;
each objective (`mauve`, `human`) is printed on all the prompts, with its 95% interval from
random halves of them (`TextScorer.interval`), and on disjoint blocks of them: the spread
over blocks is what a selection on one block of that size sees as noise.

    ... bench/text_noise.py RUN_DIR --quantizations --prompts 1024 --draws 1

instead measures MAUVE's own noise on all the prompts, one draw: each decoder's MAUVE under 8
k-means seeds (their standard deviation is the quantization's share of the noise), and each
decoder minus the first, paired, with its 95% interval from 40 random halves, for MAUVE of
one quantization and for the mean over `MAUVE_SEEDS` (what `text.objective = mauve` uses).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import torch  # noqa: E402

import engine_dsl  # noqa: E402
from engine_dsl import Type  # noqa: E402
from evolution.report import half_sample_interval, half_samples  # noqa: E402
from evolution.text_scoring import MAUVE_SEED, MAUVE_SEEDS, TextScorer  # noqa: E402
from evolution.views import open_run  # noqa: E402
from neural.text_measures import mauve_score  # noqa: E402

PROGRAMS = {  # the first is the reference of the paired differences
    "nucleus 0.95": "(sample (top-p logits 0.95))",
    "nucleus t 1.29 p 0.77": "(sample (top-p (temperature logits 1.2888) 0.7705))",
    "pure sampling": "(sample logits)",
    "hot top-n-sigma": "(sample (top-n-sigma (temperature logits (max 1.1460959599178167 "
                       "(* 0.6080808251792107 (entropy logits)))) 2.1351548135685197))",
    "min-p 0.1": "(sample (min-p logits 0.1))",
    "temperature 0.95": "(sample (temperature logits 0.95))",
    "mirostat 5 0.1": "(sample (mirostat logits 5.0 0.1))",
    "eta 0.003": "(sample (eta logits 0.003))",
}


def quantizations(scorer, written: dict, halves: int) -> None:
    """MAUVE's noise from its k-means quantization against that from the prompts."""
    human = scorer.human.judge.features
    print("| decoder | MAUVE, mean of 8 k-means seeds | sd over the seeds | minus the first, "
          "1 quantization [95%] | minus the first, mean of "
          f"{MAUVE_SEEDS} [95%] |")
    print("|---|---|---|---|---|")
    first = next(iter(written.values()))
    n = len(first.texts)
    for name, w in written.items():
        each = [mauve_score(w.judge.features, human, seed=MAUVE_SEED + k) for k in range(8)]
        cells = []
        for seeds in (1, MAUVE_SEEDS):
            def diff(idx=None, w=w, seeds=seeds):
                idx = list(range(n)) if idx is None else list(idx)
                return (mauve_score(w.judge.features[idx], human[idx], seed=MAUVE_SEED,
                                    seeds=seeds)
                        - mauve_score(first.judge.features[idx], human[idx], seed=MAUVE_SEED,
                                      seeds=seeds))

            value = diff()
            lo, hi = half_sample_interval(value, [diff(h) for h in half_samples(n, halves)], n)
            cells.append(f"{value:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        print(f"| {name} | {statistics.mean(each):.3f} | {statistics.stdev(each):.3f} | "
              + " | ".join(cells) + " |", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a finished shakespeare run directory")
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--draws", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--halves", type=int, default=100)
    ap.add_argument("--quantizations", action="store_true",
                    help="MAUVE's quantization noise and paired intervals (module doc)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    run = open_run(args.run)
    start = run.cfg.loop.valid_prompts
    examples = run.task.split("valid")[start:start + args.prompts]
    n, size = len(examples), len(examples) // args.blocks
    exprs = [engine_dsl.read_expr(p, Type.DECODER) for p in PROGRAMS.values()]
    print(f"{n} fresh valid prompts of {args.run}, blocks of {size}")
    if not args.quantizations:
        print("| draws | objective | decoder | all prompts [95% from halves] | "
              + " | ".join(f"block {b + 1}" for b in range(args.blocks)) + " |")
        print("|---|---|---|---|" + "---|" * args.blocks)
    for draw in args.draws:
        t0 = time.perf_counter()
        ev = run._text_evaluator(examples, seed=1000 + draw)
        written = {name: w for name, (w, _) in zip(PROGRAMS, ev.write(exprs), strict=True)}
        for objective in ("mauve",) if args.quantizations else ("mauve", "human"):
            scorer = TextScorer.of(run.judge, examples, objective)
            if args.quantizations:
                quantizations(scorer, written, min(args.halves, 40))
                continue
            for name, w in written.items():
                value, lo, hi = scorer.interval(w, args.halves)
                blocks = [scorer.score(w, range(b * size, (b + 1) * size))
                          for b in range(args.blocks)]
                print(f"| {draw} | {objective} | {name} | {value:.3f} [{lo:.3f}, {hi:.3f}] | "
                      + " | ".join(f"{x:.3f}" for x in blocks) + " |", flush=True)
        print(f"(draws {draw}: {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
