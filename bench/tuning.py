"""Benchmark: loss evaluations to reach within 1% of the optimal loss, gradient tuning of a
program's constants vs random constant mutation alone (DEAP's mutEphemeral style).

Teachers: the kinds of programs evolution tunes, with 1 to 22 constants: temperature,
repetition penalty, mix, and Weights vectors (`layer-mix`: one weight per block, 4 here;
`gated`: one per block and head, 4 x 4 here), where a random Gaussian step on the whole
vector scales badly with its dimension and a gradient step does not.

Data: rows of random logits (and histories, residual streams, per-head contributions for a
stand-in gated forward) whose next tokens are drawn from a teacher
program. The student has the teacher's structure with constants drawn at random (the GP's
constant sampler). Loss: the exact-mode mean NLL of the targets (the evaluation objective);
optimum: the teacher's own constants or the best loss any method found, whichever is lower.

* gradient: Adam through the relaxed program (`evolution.tuning.LikelihoodTuner` ->
  `engine_dsl.tune`), full batch; one step = one forward + one backward over the rows,
  counted as 2 evaluations (the backward costs about as much as the forward);
* mutation: a (1+1) hill climber whose only move is `mut_constant` (one constant, Gaussian
  step in its unconstrained parameterisation), one evaluation = one exact loss.

Reports the median evaluations over --starts random starting points per teacher
(a method that never gets there counts as --budget). Goal: >= 10x fewer for gradient.

    .venv/bin/python bench/tuning.py
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
from evolution.bridge import SearchSpace, WeightsConstant, individual, to_expr  # noqa: E402
from evolution.evaluation import CachedRows, LikelihoodEvaluator  # noqa: E402
from evolution.generation import ConstantSampler  # noqa: E402
from evolution.tuning import LikelihoodTuner  # noqa: E402
from evolution.variation import mut_constant  # noqa: E402

TEACHERS = [
    "(sample (temperature logits 0.6))",
    "(sample (repetition-penalty (temperature logits 0.6) 1.4))",
    "(sample (mix (repetition-penalty (temperature logits 0.6) 1.4) logits 0.7))",
    "(sample (temperature (layer-mix #(1.0 -0.5 0.3 2.0)) 0.8))",
    # head gating: n_layer x n_head = 16 weights, as the programs evolution tunes carry
    "(sample (temperature (gated #(0.6 1.8 0.7 0.5 -0.4 0.7 2.7 1.6 2.6 1.4 1.6 1.3 -1.5 2.3 "
    "1.8 1.7)) 0.8))",
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


def gradient_curve(start, rows, evaluate, budget: int, lr: float) -> list[float]:
    """Exact loss after each Adam step (`budget` steps). The exact loss is read only to
    draw the curve: the method itself does not need it, so it is not counted."""
    losses, expr = [], start
    tuner = LikelihoodTuner(rows, steps=1, lr=lr, batch=None)
    # run step by step so the exact loss can be read after each one; Adam state is kept by
    # tuning a single compiled module in place
    program = engine_dsl.compile_expr(start.args[0])
    opt = torch.optim.Adam([p for p in program.parameters()], lr=lr)
    batch = tuner.tune_batch(0)
    from engine_dsl.tuning import loss as relaxed_loss

    for _ in range(budget):
        opt.zero_grad()
        relaxed_loss(program, batch, 30.0).backward()
        opt.step()
        expr = engine_dsl.Apply("sample", (program.to_expr(),))
        losses.append(evaluate(expr))
    return losses


def mutation_curve(start, evaluate, budget: int, rng: random.Random, sigma: float):
    """Best exact loss after each evaluation of a (1+1) constant-mutation hill climber."""
    best, best_loss, losses = start, evaluate(start), []
    losses.append(best_loss)
    for _ in range(budget - 1):
        (child,) = mut_constant(individual(best), rng, sigma=sigma)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--vocab", type=int, default=64)
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--budget", type=int, default=600, help="evaluations per method and start")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--sigma", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    sampler = ConstantSampler(SearchSpace(n_layer=N_LAYER, vocab_size=args.vocab))
    results = []
    for t_i, teacher in enumerate(TEACHERS):
        rows = teacher_rows(teacher, args.rows, args.vocab, seed=t_i)
        ev = LikelihoodEvaluator(rows, smoothing=0.0)

        def evaluate(expr, ev=ev):
            return -ev.log_likelihood(expr)

        texpr = engine_dsl.read_expr(teacher, Type.DECODER)
        rng = random.Random(t_i)
        curves = []
        for _ in range(args.starts):
            start = randomise(texpr, rng, sampler)
            g = gradient_curve(start, rows, evaluate, args.budget // GRADIENT_STEP_EVALUATIONS,
                               args.lr)
            m = mutation_curve(start, evaluate, args.budget, rng, args.sigma)
            curves.append((g, m))
        optimum = min([evaluate(texpr)] + [min(g + m) for g, m in curves])
        target = optimum * 1.01
        g_evals = [evals_to_reach(g, target, args.budget, GRADIENT_STEP_EVALUATIONS)
                   for g, _ in curves]
        m_evals = [evals_to_reach(m, target, args.budget) for _, m in curves]
        n_const = sum(len(n.values) if isinstance(n, engine_dsl.WeightsConst) else 1
                      for n in engine_dsl.walk(texpr)
                      if isinstance(n, (engine_dsl.RealConst, engine_dsl.WeightsConst)))
        res = {"teacher": teacher, "constants": n_const, "optimal_loss": round(optimum, 4),
               "gradient_evals_median": statistics.median(g_evals),
               "mutation_evals_median": statistics.median(m_evals),
               "gradient_evals": g_evals, "mutation_evals": m_evals}
        res["ratio"] = round(res["mutation_evals_median"] / res["gradient_evals_median"], 1)
        results.append(res)
        print(json.dumps(res))
    total_g = statistics.median([r["gradient_evals_median"] for r in results])
    total_m = statistics.median([r["mutation_evals_median"] for r in results])
    print(f"median evaluations to 1% of optimum: gradient {total_g}, mutation {total_m} "
          f"(budget {args.budget}); ratio {total_m / total_g:.1f}x (goal >= 10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
