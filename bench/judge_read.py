"""Benchmark: the judge's reading of a text run's continuations, each prompt read once
(`Judge.reader`, what `TextScorer` does) against each row read whole (`Judge.score`, what
it did before), and the scoring cost of both against generating (issue 12).

The workload of bench/text.py's `scoring_cost`: a trained run's first N test prompts, the
first P programs of its nucleus grid, one batched decode of all of them (`run.decode`, the
draws of run seed 0: 999), timed once. Then in alternating rounds (A B, B A, ...):

* A, whole rows: each program's continuations read by `Judge.score`, then measured by the
  run's objective (`TextScorer.score`);
* B, prompts once: the prompts read once (`Judge.reader`, counted in every round), then
  each program's continuations read after their cache and measured the same way.

Reports B / A (ratio of medians over the rounds, 95% bootstrap interval), and for each the
scoring cost, its time / the generation's (goal: <= 0.5), with the time the objective
took (MAUVE for `text.objective = "mauve"`). Times are CPU seconds of this process (with
one torch thread, the work done whatever else a shared machine runs) and wall seconds.
Checks that A and B read the same: NLL to 1e-5 relative, features to 1e-5, the same token
counts (exit 1 if not).

    OMP_NUM_THREADS=1 .venv/bin/python bench/judge_read.py --run runs/text-0 \\
        --programs 32 --prompts 128 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import engine_dsl  # noqa: E402
from bench.primitives import ratio_interval  # noqa: E402
from bench.text import cost_programs  # noqa: E402
from engine_dsl import Type  # noqa: E402
from evolution.loop import CoEvolution  # noqa: E402
from evolution.rundir import RunDir  # noqa: E402
from evolution.text_scoring import TextScorer, Written  # noqa: E402


def clock() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def since(start: tuple[float, float]) -> tuple[float, float]:
    """(CPU, wall) seconds since `start`."""
    cpu, wall = clock()
    return cpu - start[0], wall - start[1]


def score_all(scorer: TextScorer, written, read) -> tuple[list, float, float, float]:
    """(readings, CPU s, wall s, CPU s of the objective): every program's continuations
    read by `read(texts, stopped)` and measured by the scorer's objective."""
    readings, objective = [], 0.0
    start = clock()
    for texts, stopped in written:
        w = Written(texts, stopped, read(texts, stopped))
        t = time.process_time()
        scorer.score(w)
        objective += time.process_time() - t
        readings.append(w.judge)
    return (readings, *since(start), objective)


def agree(a, b) -> tuple[float, float, bool]:
    """(largest relative NLL difference, largest feature difference, same token counts)."""
    nll = max(float(((x.nll - y.nll).abs() / x.nll.abs().clamp(min=1e-12)).max())
              for x, y in zip(a, b, strict=True))
    feats = max(float((x.features - y.features).abs().max()) for x, y in zip(a, b, strict=True))
    return nll, feats, all(torch.equal(x.tokens, y.tokens) for x, y in zip(a, b, strict=True))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a trained text run's directory (read only)")
    ap.add_argument("--programs", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=999, help="the decode's draws")
    args = ap.parse_args(argv)
    if not (RunDir(args.run).path / "config.toml").exists():
        print(f"{args.run}: not a run directory", file=sys.stderr)
        return 1
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    run = CoEvolution.open(RunDir(args.run))
    if run.task.kind != "text":
        print(f"{args.run}: not a text run (task kind {run.task.kind})", file=sys.stderr)
        return 1
    examples = run.task.test[:args.prompts]
    prompts = [e.input for e in examples]
    judge = run.judge
    scorer = TextScorer.of(judge, examples, run.cfg.text.objective)
    scorer.score(scorer.human)  # the objective's imports (mauve-text, faiss) before timing
    exprs = [engine_dsl.read_expr(s, Type.DECODER) for s in cost_programs(args.programs)]
    start = clock()
    decoded = run.decode(exprs, examples, args.seed)
    gen_cpu, gen_wall = since(start)
    tok = run.tokenizer
    written = [([tok.decode(a.tokens) for a in ans], [a.stopped for a in ans])
               for ans in decoded]
    print(f"{len(exprs)} programs x {len(examples)} prompts: generating {gen_cpu:.1f} s CPU "
          f"({gen_wall:.1f} s wall), load {os.getloadavg()[0]:.1f}", flush=True)

    def whole(texts, stopped):
        return judge.score(prompts, texts, stopped)

    def prompts_once():
        reader = judge.reader(prompts)
        return lambda texts, stopped: reader.score(texts, stopped)

    times = {"A": [], "B": []}  # (CPU, wall, objective CPU) per round
    loads, first = [], {}
    for r in range(args.rounds):
        for side in ("AB" if r % 2 == 0 else "BA"):
            if side == "A":
                readings, cpu, wall, obj = score_all(scorer, written, whole)
            else:
                start = clock()
                read = prompts_once()
                pre_cpu, pre_wall = since(start)
                readings, cpu, wall, obj = score_all(scorer, written, read)
                cpu, wall = cpu + pre_cpu, wall + pre_wall
            times[side].append((cpu, wall, obj))
            first.setdefault(side, readings)
            loads.append(os.getloadavg()[0])
            print(f"round {r + 1} {side}: {cpu:.1f} s CPU ({wall:.1f} s wall; objective "
                  f"{obj:.1f} s CPU)", flush=True)
    nll, feats, tokens = agree(first["A"], first["B"])
    same = nll <= 1e-5 and feats <= 1e-5 and tokens
    print(f"readings: NLL within {nll:.1e} relative, features within {feats:.1e}, token "
          f"counts {'equal' if tokens else 'DIFFERENT'}: {'same' if same else 'DIFFER'}")
    a_cpu, b_cpu = ([t[0] for t in times[s]] for s in "AB")
    lo, hi = ratio_interval(b_cpu, a_cpu)
    med = {s: [statistics.median(t[k] for t in times[s]) for k in range(3)] for s in "AB"}
    print(f"prompts once / whole rows (CPU): {med['B'][0] / med['A'][0]:.3f} "
          f"[{lo:.3f}, {hi:.3f}] over {args.rounds} rounds; load {min(loads):.1f}-"
          f"{max(loads):.1f} (1-minute average)")
    for s, name in (("A", "whole rows"), ("B", "prompts once")):
        cpu, wall, obj = med[s]
        print(f"scoring cost, {name}: {cpu / gen_cpu:.3f} CPU ({cpu:.1f} s / {gen_cpu:.1f} s; "
              f"objective {obj:.1f} s), {wall / gen_wall:.3f} wall")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
