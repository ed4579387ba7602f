"""Benchmark: loss evaluations to reach within 1% of the optimal loss, gradient tuning of a
program's constants vs random constant mutation alone (DEAP's mutEphemeral style).

Teachers: the kinds of programs evolution tunes, with 1 to 22 constants: temperature,
repetition penalty, mix, truncation (top-p, min-p), and Weights vectors (`layer-mix`: one
weight per block, 4 here; `gated`: one per block and head, 4 x 4 here).

Data: rows of random logits (and histories, residual streams, per-head contributions for a
stand-in gated forward) whose next tokens are drawn from a teacher program. The student has
the teacher's structure with constants drawn at random (the GP's constant sampler). Loss: the
exact-mode mean NLL of the targets (the evaluation objective, unsmoothed); optimum: the
teacher's own constants or the best loss any method found, whichever is lower. Random
starts already within 1% of the teacher's loss are redrawn (they would measure nothing).

* gradient: `evolution.tuner.LikelihoodTuner` -> `engine_dsl.tune` as evolution runs it
  (Adam through the relaxed program), full batch; one step = one forward + one backward over
  the rows, counted as 2 evaluations (the backward costs about as much as the forward). The
  exact loss is read after each step (through `tune`'s callback) only to draw the curve: the
  method does not use it, so it is not counted;
* ephemeral (the goal's baseline): a (1+1) hill climber whose only move is DEAP's
  `mutEphemeral(ind, mode="one")`: one tunable constant is redrawn from the GP's own
  generator (`ConstantSampler.terminal`, the distribution that initialises the population);
  a Weights vector is one ephemeral and is redrawn whole. One evaluation = one exact loss;
* gaussian (a stronger baseline, reported beside it): the same hill climber whose move is
  `mut_constant` (one constant, a Gaussian step of --sigma in its unconstrained form; a
  Weights vector moves all its entries).

Reports the median evaluations over --starts random starting points per teacher (a method
that never gets there counts as --budget, shown as ">= budget": a censored count, so a ratio
against it is a lower bound), the ratio of medians per teacher, and the median of the
per-teacher ratios. Goal: >= 10x fewer for gradient than the ephemeral baseline.

    .venv/bin/python bench/tuning.py --starts 3 --budget 1000 --rows 2000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import engine_dsl  # noqa: E402
from engine_dsl import Type  # noqa: E402
from evolution.bridge import (  # noqa: E402
    RealConstant,
    SearchSpace,
    WeightsConstant,
    individual,
    to_expr,
)
from evolution.config import EvolutionConfig  # noqa: E402
from evolution.evaluation import CachedRows, LikelihoodEvaluator  # noqa: E402
from evolution.random_trees import ConstantSampler  # noqa: E402
from evolution.tuner import LikelihoodTuner  # noqa: E402
from evolution.variation import mut_constant  # noqa: E402

TEACHERS = [
    "(sample (temperature logits 0.6))",
    "(sample (repetition-penalty (temperature logits 0.6) 1.4))",
    "(sample (mix (repetition-penalty (temperature logits 0.6) 1.4) logits 0.7))",
    "(sample (temperature (layer-mix #(1.0 -0.5 0.3 2.0)) 0.8))",
    # head gating: n_layer x n_head = 16 weights, as the programs evolution tunes carry
    "(sample (temperature (gated #(0.6 1.8 0.7 0.5 -0.4 0.7 2.7 1.6 2.6 1.4 1.6 1.3 -1.5 2.3 "
    "1.8 1.7)) 0.8))",
    # truncation: a target outside the kept set costs an infinite (unsmoothed) loss
    "(sample (top-p (temperature logits 0.8) 0.9))",
    "(sample (min-p (temperature logits 0.8) 0.05))",
    "(sample (mix (temperature (layer-mix #(0.5 -1.0 0.0 1.5)) 0.7) "
    "(gated #(-1.5 -1.6 -0.3 0.3 1.5 0.9 1.8 0.0 1.5 1.6 0.0 3.6 1.8 2.8 0.1 -0.1)) 0.6))",
]
N_LAYER, N_HEAD, WIDTH = 4, 4, 16
GRADIENT_STEP_EVALUATIONS = 2  # one Adam step = a forward and a backward: counted as 2


def teacher_rows(teacher: str, n: int, V: int, seed: int) -> CachedRows:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, V, generator=g) * 2.5
    history = torch.randint(0, V, (n, 12), generator=g)
    residuals = tuple(torch.randn(n, WIDTH, generator=g) for _ in range(N_LAYER))
    head = torch.randn(WIDTH, V, generator=g)
    heads = torch.randn(N_LAYER, N_HEAD, n, V, generator=g) * (2.5 / N_HEAD)
    rows = CachedRows(logits, residuals, history, torch.zeros(n, dtype=torch.long),
                      Gated(heads), Lens(head), N_LAYER, N_HEAD)
    body = engine_dsl.read_expr(teacher, Type.DECODER).args[0]
    with torch.no_grad():
        scores = engine_dsl.compile_expr(body)(**rows.sources())
    rows.targets = torch.multinomial(torch.softmax(scores, -1), 1, generator=g)[:, 0]
    return rows


class Lens:
    """A stand-in logit lens: a fixed linear map of the residual stream."""

    def __init__(self, head: torch.Tensor):
        self.head = head

    def __call__(self, residual: torch.Tensor) -> torch.Tensor:
        return residual @ self.head


class Gated:
    """A stand-in head-gated forward: the logits are the sum of every head's contribution
    (a fixed random (R, V) tensor per layer and head) scaled by its gate."""

    def __init__(self, heads: torch.Tensor):
        self.heads = heads

    def __call__(self, gates: torch.Tensor) -> torch.Tensor:
        return torch.einsum("lh,lhrv->rv", gates.to(self.heads.dtype), self.heads)


def randomise(expr, rng: random.Random, sampler: ConstantSampler):
    """The same structure with every tunable constant drawn afresh."""
    ind = individual(expr)
    for i, node in enumerate(ind):
        if (hasattr(node, "fixed") and not node.fixed) or isinstance(node, WeightsConstant):
            ind[i] = sampler.terminal(node.ret, rng)
    return to_expr(ind)


def gradient_curve(start, rows, evaluate, steps: int, lr: float,
                   sharpness: float | None = None) -> list[float]:
    """Exact loss after each of `steps` steps of gradient tuning as evolution runs it
    (`LikelihoodTuner`, full batch). The exact loss is read only to draw the curve."""
    losses: list[float] = []
    tuner = LikelihoodTuner(rows, steps=steps, lr=lr, batch=None, sharpness=sharpness)

    def record(step, module):
        losses.append(evaluate(engine_dsl.Apply("sample", (module.to_expr(),))))

    if tuner.run(start, callback=record) is None:
        raise RuntimeError(f"gradient tuning failed on {start}")
    return losses


def tunable(ind) -> list[int]:
    return [i for i, n in enumerate(ind)
            if (isinstance(n, RealConstant) and not n.fixed) or isinstance(n, WeightsConstant)]


def mut_ephemeral(ind, rng: random.Random, sampler: ConstantSampler):
    """DEAP's `mutEphemeral(ind, mode="one")` on the tunable constants: one of them (a Real,
    or a whole Weights vector) is replaced by a fresh draw of the GP's constant generator."""
    where = tunable(ind)
    if where:
        i = where[rng.randrange(len(where))]
        ind[i] = sampler.terminal(ind[i].ret, rng)
    return (ind,)


def hill_climb(start, evaluate, budget: int, move) -> list[float]:
    """Best exact loss after each evaluation of a (1+1) hill climber whose only move is
    `move(individual) -> (individual,)` (the start's own evaluation is the first)."""
    best, best_loss = start, evaluate(start)
    losses = [best_loss]
    for _ in range(budget - 1):
        (child,) = move(individual(best))
        child = to_expr(child)
        c_loss = evaluate(child)
        if c_loss < best_loss:
            best, best_loss = child, c_loss
        losses.append(best_loss)
    return losses


def evals_to_reach(curve: list[float], target: float, budget: int, per_point: int = 1) -> int:
    """Evaluations spent when the curve first reaches `target` (`per_point` evaluations
    per curve point); `budget` when it never does (a censored count)."""
    for i, v in enumerate(curve):
        if v <= target:
            return min((i + 1) * per_point, budget)
    return budget


def _ratio(base: float, grad: float, budget: int) -> str:
    """base / grad as text: '>=' when only the baseline is censored, 'n/a' when both are."""
    if base >= budget and grad >= budget:
        return "n/a"
    return (">=" if base >= budget else "") + f"{base / grad:.1f}"


def _ratio_value(text: str) -> float | None:
    return None if text == "n/a" else float(text.lstrip(">="))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--vocab", type=int, default=64)
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--budget", type=int, default=1000, help="evaluations per method and start")
    ap.add_argument("--lr", type=float, default=EvolutionConfig().tune_lr,
                    help="Adam learning rate (default: evolution's tune_lr)")
    ap.add_argument("--sharpness", type=float, default=None,
                    help="of the relaxed masks (default: engine_dsl's)")
    ap.add_argument("--sigma", type=float, default=EvolutionConfig().constant_sigma)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--teachers", type=str, default=None,
                    help="comma-separated indices into TEACHERS (default: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    sampler = ConstantSampler(SearchSpace(n_layer=N_LAYER, vocab_size=args.vocab))
    chosen = (range(len(TEACHERS)) if args.teachers is None
              else [int(i) for i in args.teachers.split(",")])
    results = []
    for t_i in chosen:
        teacher = TEACHERS[t_i]
        rows = teacher_rows(teacher, args.rows, args.vocab, seed=t_i)
        ev = LikelihoodEvaluator(rows, smoothing=0.0)

        def evaluate(expr, ev=ev):
            with torch.no_grad():
                return -ev.log_likelihood(expr)

        texpr = engine_dsl.read_expr(teacher, Type.DECODER)
        rng = random.Random(t_i)
        curves, teacher_loss = [], evaluate(texpr)
        for _ in range(args.starts):
            # a start already inside the target band measures nothing (1 evaluation for a
            # climber, 2 for a gradient step): redraw it (it cannot be in the band when its
            # loss exceeds 1.01 x the teacher's, an upper bound of the optimum's)
            start = randomise(texpr, rng, sampler)
            while evaluate(start) <= teacher_loss * 1.01:
                start = randomise(texpr, rng, sampler)
            g = gradient_curve(start, rows, evaluate, args.budget // GRADIENT_STEP_EVALUATIONS,
                               args.lr, args.sharpness)
            e = hill_climb(start, evaluate, args.budget,
                           lambda ind, rng=rng: mut_ephemeral(ind, rng, sampler))
            m = hill_climb(start, evaluate, args.budget,
                           lambda ind, rng=rng: mut_constant(ind, rng, sigma=args.sigma))
            curves.append((g, e, m))
        optimum = min([teacher_loss] + [min(c) for cs in curves for c in cs])
        target = optimum * 1.01
        g_evals = [evals_to_reach(g, target, args.budget, GRADIENT_STEP_EVALUATIONS)
                   for g, _, _ in curves]
        e_evals = [evals_to_reach(e, target, args.budget) for _, e, _ in curves]
        m_evals = [evals_to_reach(m, target, args.budget) for _, _, m in curves]
        n_const = sum(len(n.values) if isinstance(n, engine_dsl.WeightsConst) else 1
                      for n in engine_dsl.walk(texpr)
                      if isinstance(n, (engine_dsl.RealConst, engine_dsl.WeightsConst)))
        gm, em, mm = (statistics.median(x) for x in (g_evals, e_evals, m_evals))
        res = {"teacher": teacher, "constants": n_const, "optimal_loss": round(optimum, 4),
               "gradient_evals_median": gm, "ephemeral_evals_median": em,
               "gaussian_evals_median": mm, "gradient_evals": g_evals,
               "ephemeral_evals": e_evals, "gaussian_evals": m_evals,
               "ratio_ephemeral": _ratio(em, gm, args.budget),
               "ratio_gaussian": _ratio(mm, gm, args.budget)}
        results.append(res)
        print(json.dumps(res), flush=True)
    for key, name in (("ratio_ephemeral", "ephemeral (mutEphemeral, the goal's baseline)"),
                      ("ratio_gaussian", "gaussian (mut_constant)")):
        values = [v for v in (_ratio_value(r[key]) for r in results) if v is not None]
        lower = any(r[key].startswith(">=") for r in results)
        med = statistics.median(values) if values else float("nan")
        print(f"median per-teacher ratio vs {name}: {med:.1f}x over {len(values)} teachers"
              f"{' (some ratios are lower bounds)' if lower else ''}"
              + (" (goal >= 10x: " + ("met" if med >= 10 else "missed") + ")"
                 if key == "ratio_ephemeral" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
