"""Gradient tuning of new individuals' real constants, on top of `engine_dsl.tune`
(DESIGN §3: a few Adam steps on the teacher-forced loss through the relaxed program, written
back into the tree).

`LikelihoodTuner` turns cached teacher-forced rows (`evaluation.CachedRows`) into an
`engine_dsl.tuning.TuneBatch` (a seeded random subset of rows per call) and is the picklable
`tune(expr, seed) -> expr` that `population.evolve_generation` and `toolbox.map` expect.
"""

from __future__ import annotations

import torch

from engine_dsl.nodes import Expr, RealConst, WeightsConst, walk

from .evaluation import CachedRows


def has_constants(e: Expr) -> bool:
    """Does `e` hold anything tuning can move (a non-fixed Real or a Weights literal)?"""
    return any((isinstance(n, RealConst) and not n.fixed) or isinstance(n, WeightsConst)
               for n in walk(e))


class LikelihoodTuner:
    """Adam (via `engine_dsl.tune`) on the relaxed-mode NLL of the cached rows' next tokens.

    steps, lr: Adam steps and learning rate; batch: rows per tuning (a random subset drawn
    from the seed; None: all rows); sharpness: of the relaxed masks (None: the default).
    """

    def __init__(self, rows: CachedRows, steps: int = 10, lr: float = 0.1,
                 batch: int | None = 1024, sharpness: float | None = None):
        self.rows, self.steps, self.lr, self.batch = rows, steps, lr, batch
        self.sharpness = sharpness
        self.evaluations = 0  # loss evaluations made (for benchmarks)
        self.failures = 0  # tunings abandoned because a backward pass failed

    def tune_batch(self, seed: int):
        from engine_dsl.tuning import TuneBatch

        rows, n = self.rows, len(self.rows)
        if self.batch is not None and self.batch < n:
            g = torch.Generator().manual_seed(seed)
            rows = rows.subset(torch.randperm(n, generator=g)[: self.batch])
        return TuneBatch(**rows.sources(), targets=rows.targets)

    def run(self, decoder: Expr, seed: int = 0, callback=None):
        """Tune `decoder` once; the `engine_dsl.tuning.TuneResult`, or None when there is
        nothing to tune or the backward pass failed. `callback(step, module)` is passed on to
        `engine_dsl.tune` (called after each step; benchmarks read the constants there)."""
        import engine_dsl

        if not has_constants(decoder) or self.steps == 0:
            return None
        extra = {} if self.sharpness is None else {"sharpness": self.sharpness}
        try:
            result = engine_dsl.tune(decoder, self.tune_batch(seed), steps=self.steps,
                                     lr=self.lr, callback=callback, **extra)
        except RuntimeError:  # a kernel without a usable gradient: keep the program as is
            self.failures += 1
            return None
        self.evaluations += len(result.losses)
        return result

    def __call__(self, decoder: Expr, seed: int = 0) -> Expr:
        result = self.run(decoder, seed)
        return decoder if result is None else result.program


def rewrap_base(decoder: Expr) -> Expr:
    """`decoder` without its vote/best-of wrappers: the sample/greedy of its Logits."""
    from engine_dsl.nodes import Apply

    while isinstance(decoder, Apply) and decoder.op in ("vote", "best-of"):
        decoder = decoder.args[1]
    return decoder
