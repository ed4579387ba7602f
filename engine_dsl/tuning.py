"""Gradient tuning of a program's constants (DESIGN §2 "Two modes", §3 step 2).

    result = tune(program, batch, steps=50, lr=0.05, sharpness=30.0)
    result.program   # the same kind of object, constants written back (Lamarckian)
    result.losses    # steps + 1 floats: the loss before the first step and after each step

The loss is the teacher-forced negative log-likelihood of reference answer tokens under the
program's *relaxed* distribution: mean over positions of -log_softmax(f(sources))[target],
where `batch` holds one row per answer position (the model's logits there, and the history,
residual streams or gated-forward callable if the program reads them) plus the target ids
(`ignore_index` = -100 skips a row). Parameters are the unconstrained constants (see
`compile`), optimised with Adam; a Decoder program is tuned through its Logits expression
(its aggregators and chooser do not change the per-step distribution used here).

`callback(step, module)`, if given, is called after each Adam step (step = 1, 2, ...) with
the module holding the current constants (read them with `module.to_expr()`); benchmarks use
it to score the exact program after every step without re-implementing the optimiser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import semantics as sem
from .compile import LogitsProgram, compile_expr, write_back
from .nodes import Definition, Expr, type_of
from .primitives.decoders import structure
from .types import Type

IGNORE_INDEX = -100


@dataclass
class TuneBatch(sem.Sources):
    """Sources for N answer positions (logits (N, V), ...) and the target ids (N,)."""

    targets: torch.Tensor | None = None


@dataclass
class TuneResult:
    program: Expr | Definition | LogitsProgram  # with the tuned constants
    losses: list[float] = field(default_factory=list)
    module: LogitsProgram | None = None


def loss(module: LogitsProgram, batch: TuneBatch, sharpness: float) -> torch.Tensor:
    """Mean teacher-forced NLL of batch.targets under the relaxed program."""
    if batch.targets is None:
        raise ValueError("the tuning batch needs targets")
    y = module(sources=batch, mode="relaxed", sharpness=sharpness)
    logp = torch.log_softmax(y, dim=-1)
    targets = batch.targets.to(device=logp.device, dtype=torch.long)
    keep = targets != IGNORE_INDEX
    picked = logp.gather(1, targets.clamp(min=0)[:, None]).squeeze(1)
    return -(picked * keep).sum() / keep.sum().clamp(min=1)


def tune(program: Expr | Definition | LogitsProgram | str, batch: TuneBatch, steps: int = 50,
         lr: float = 0.05, *, sharpness: float = sem.DEFAULT_SHARPNESS,
         max_steps: int | None = None,
         callback: Callable[[int, LogitsProgram], object] | None = None) -> TuneResult:
    """Minimise the relaxed teacher-forced loss over the constants; write them back.

    program: an AST (Logits or Decoder), a Definition, Scheme text of a Logits expression,
    or a compiled `LogitsProgram` (tuned in place). `max_steps` is the configured cap.
    `callback(step, module)` runs after each step (its return value is ignored).
    """
    if max_steps is not None and steps > max_steps:
        raise ValueError(f"{steps} tuning steps exceed the configured cap of {max_steps}")
    if steps < 0:
        raise ValueError("steps must be >= 0")
    if isinstance(program, LogitsProgram):
        module, original = program, None
    else:
        original = compile_expr(program).expr if isinstance(program, str) else program
        body = original.body if isinstance(original, Definition) else original
        part = structure(body).logits if type_of(body) is Type.DECODER else body
        module = compile_expr(part)
    params = [p for p in module.parameters() if p.requires_grad]
    losses: list[float] = []
    if not params:
        with torch.no_grad():
            losses.append(float(loss(module, batch, sharpness)))
        return TuneResult(program if original is None else original, losses, module)
    opt = torch.optim.Adam(params, lr=lr)
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        value = loss(module, batch, sharpness)
        losses.append(float(value.detach()))
        if not value.requires_grad:  # no constant reaches the loss: nothing to follow
            break
        value.backward()
        opt.step()
        if callback is not None:
            callback(step, module)
    with torch.no_grad():
        losses.append(float(loss(module, batch, sharpness)))
    tuned = module if original is None else write_back(original, module)
    return TuneResult(tuned, losses, module)
