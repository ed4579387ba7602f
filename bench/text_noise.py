"""Diagnosis: how much a text objective moves between prompt sets and draws (issue 12).

    OMP_NUM_THREADS=1 .venv/bin/python bench/text_noise.py RUN_DIR [--prompts 512 --blocks 4]

On a finished `shakespeare` run (its model and judge), a few decoders continue the valid
prompts after those evolution scored (`loop.valid_prompts`), twice with different draws;
each objective (`mauve`, `human`) is printed on all the prompts, with its 95% interval from
random halves of them (`TextScorer.interval`), and on disjoint blocks of them: the spread
over blocks is what a selection on one block of that size sees as noise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import torch  # noqa: E402

import engine_dsl  # noqa: E402
from engine_dsl import Type  # noqa: E402
from evolution.text_scoring import TextScorer  # noqa: E402
from evolution.views import open_run  # noqa: E402

PROGRAMS = {
    "nucleus 0.95": "(sample (top-p logits 0.95))",
    "nucleus t 1.29 p 0.77": "(sample (top-p (temperature logits 1.2888) 0.7705))",
    "pure sampling": "(sample logits)",
    "hot top-n-sigma": "(sample (top-n-sigma (temperature logits (max 1.1460959599178167 "
                       "(* 0.6080808251792107 (entropy logits)))) 2.1351548135685197))",
    "min-p 0.1": "(sample (min-p logits 0.1))",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a finished shakespeare run directory")
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--draws", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--halves", type=int, default=100)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    run = open_run(args.run)
    start = run.cfg.loop.valid_prompts
    examples = run.task.split("valid")[start:start + args.prompts]
    n, size = len(examples), len(examples) // args.blocks
    exprs = [engine_dsl.read_expr(p, Type.DECODER) for p in PROGRAMS.values()]
    print(f"{n} fresh valid prompts of {args.run}, blocks of {size}")
    print("| draws | objective | decoder | all prompts [95% from halves] | "
          + " | ".join(f"block {b + 1}" for b in range(args.blocks)) + " |")
    print("|---|---|---|---|" + "---|" * args.blocks)
    for draw in args.draws:
        t0 = time.perf_counter()
        ev = run._text_evaluator(examples, seed=1000 + draw)
        written = ev.write(exprs)
        for objective in ("mauve", "human"):
            scorer = TextScorer(run.judge, [e.input for e in examples],
                                [e.output for e in examples], objective)
            for name, (w, _) in zip(PROGRAMS, written, strict=True):
                w = scorer.read(w.texts, w.stopped)
                value, lo, hi = scorer.interval(w, args.halves)
                blocks = [scorer.score(w, range(b * size, (b + 1) * size))
                          for b in range(args.blocks)]
                print(f"| {draw} | {objective} | {name} | {value:.3f} [{lo:.3f}, {hi:.3f}] | "
                      + " | ".join(f"{x:.3f}" for x in blocks) + " |", flush=True)
        print(f"(draws {draw}: {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
