"""Gradient tuning of new individuals' real constants, on top of `engine_dsl.tune`
(DESIGN §3: a few Adam steps on the teacher-forced loss through the relaxed program, written
back into the tree).

`LikelihoodTuner` turns cached teacher-forced rows (`evaluation.CachedRows`) into an
`engine_dsl.tuning.TuneBatch` (a seeded random subset of rows per call) and is the picklable
`tune(expr, seed) -> expr` that `population.evolve_generation` and `toolbox.map` expect.
"""

from __future__ import annotations

import math

import torch

from engine_dsl.nodes import Expr, RealConst, WeightsConst, walk

from .evaluation import CachedRows, LikelihoodEvaluator


def has_constants(e: Expr) -> bool:
    """Does `e` hold anything tuning can move (a non-fixed Real or a Weights literal)?"""
    return any((isinstance(n, RealConst) and not n.fixed) or isinstance(n, WeightsConst)
               for n in walk(e))


class LikelihoodTuner:
    """Adam (via `engine_dsl.tune`) on the relaxed-mode NLL of the cached rows' next tokens.

    steps, lr: Adam steps and learning rate; batch: rows per tuning (a random subset drawn
    from the seed; None: all rows); sharpness: of the relaxed masks (None: the default).
    guard: keep the tuned constants only when the program's exact-mode likelihood of the
    batch (what `LikelihoodEvaluator` scores) is no worse than before; the relaxed loss Adam
    follows can improve while the exact one gets worse (soft masks around a top-p or min-p
    cliff, a sigmoid-blended `if`).
    """

    def __init__(self, rows: CachedRows, steps: int = 10, lr: float = 0.1,
                 batch: int | None = 1024, sharpness: float | None = None, guard: bool = True):
        self.rows, self.steps, self.lr, self.batch = rows, steps, lr, batch
        self.sharpness, self.guard = sharpness, guard
        self.evaluations = 0  # loss evaluations made (for benchmarks)
        self.tunings = 0  # tunings made by __call__ (for benchmarks)
        self.rejected = 0  # ... of which the guard undid

    def batch_rows(self, seed: int) -> CachedRows:
        """The rows one tuning uses: a random subset of `batch` rows drawn from `seed`."""
        rows, n = self.rows, len(self.rows)
        if self.batch is not None and self.batch < n:
            g = torch.Generator().manual_seed(seed)
            rows = rows.subset(torch.randperm(n, generator=g)[: self.batch])
        return rows

    def tune_batch(self, seed: int):
        return _tune_batch(self.batch_rows(seed))

    def can_tune(self, decoder: Expr) -> bool:
        return self.steps > 0 and has_constants(decoder)

    def run(self, decoder: Expr, seed: int = 0, callback=None, rows: CachedRows | None = None):
        """Tune `decoder` once; the `engine_dsl.tuning.TuneResult`, or None when there is
        nothing to tune. `callback(step, module)` is passed on to
        `engine_dsl.tune` (called after each step; benchmarks read the constants there).
        rows: the batch's rows when the caller drew them already (`batch_rows(seed)`)."""
        import engine_dsl

        if not self.can_tune(decoder):
            return None
        extra = {} if self.sharpness is None else {"sharpness": self.sharpness}
        batch = _tune_batch(self.batch_rows(seed) if rows is None else rows)
        result = engine_dsl.tune(decoder, batch, steps=self.steps, lr=self.lr,
                                 callback=callback, **extra)
        self.evaluations += len(result.losses)
        return result

    def __call__(self, decoder: Expr, seed: int = 0) -> Expr:
        if not self.can_tune(decoder):  # before drawing the rows (a gated pass, maybe)
            return decoder
        rows = self.batch_rows(seed)
        result = self.run(decoder, seed, rows=rows)
        if result is None:
            return decoder
        self.tunings += 1
        if self.guard:
            exact = LikelihoodEvaluator(rows).log_likelihood
            with torch.no_grad():
                after, before = exact(result.program), exact(decoder)
                if math.isnan(after) or after < before:
                    self.rejected += 1
                    return decoder
        return result.program


def _tune_batch(rows: CachedRows):
    from engine_dsl.tuning import TuneBatch

    return TuneBatch(**rows.sources(), targets=rows.targets)
