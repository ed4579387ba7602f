"""Penalties on tokens the sequence already holds (transformers'
RepetitionPenaltyLogitsProcessor)."""

from __future__ import annotations

from ..types import PENALTY, Type
from . import Arg, Export, entry
from ._torch import F, col, finite_only, torch

L, R = Type.LOGITS, Type.REAL


def history_ids(ctx, x):
    """History ids (B, T) with padding mapped to column V (dropped after a scatter)."""
    ids = ctx.need("history")
    V = x.size(-1)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0).expand(x.size(0), -1)
    ids = ids.to(device=x.device, dtype=torch.long)
    pad = ids < 0
    if ctx.sources.history_mask is not None:
        pad = pad | ~ctx.sources.history_mask.to(device=x.device, dtype=torch.bool)
    return torch.where(pad, V, ids.clamp(max=V))


def _penalise(s, r):
    return torch.where(s < 0, s * r, s / r)


def repetition_penalty_exact(ctx, x, r):
    ids = ctx.need("history")
    if ctx.sources.history_mask is None and ids.dim() == 2 and ids.numel() \
            and ids.dtype == torch.long and ids.device == x.device:
        lo, hi = torch.aminmax(ids)
        if int(lo) >= 0 and int(hi) < x.size(-1):  # no padding: skip the extra column
            xp = x.clone()
            return xp.scatter_(1, ids, _penalise(x.gather(1, ids), col(r, x)))
    ids = history_ids(ctx, x)
    xp = F.pad(x, (0, 1))
    xp.scatter_(1, ids, _penalise(xp.gather(1, ids), col(r, x)))
    return xp[..., : x.size(-1)]


def repetition_penalty_relaxed(ctx, x, r):
    """Same values as exact; a token mask instead of scatter so repeated ids in the history
    do not count twice in the gradient."""
    ids = history_ids(ctx, x)
    seen = torch.zeros(x.size(0), x.size(-1) + 1, dtype=torch.bool, device=x.device)
    seen = seen.scatter(1, ids, True)[:, : x.size(-1)]
    return torch.where(seen, finite_only(_penalise, x, col(r, x)), x)


ENTRIES = [
    entry("repetition-penalty", [Arg("L", L), Arg("r", R, PENALTY, test_range=(1.0, 20.0))], L,
          "transform",
          "on tokens already in prompt or answer: positive scores / r, negative scores x r",
          exact=repetition_penalty_exact, relaxed=repetition_penalty_relaxed,
          reads={"history"}, neutral=1.0,
          export={"hf": Export(("repetition_penalty",), 0, (1.0,)),
                  # llama.cpp penalises the last n tokens of the context (prompt included)
                  "llama.cpp": Export(("--repeat-penalty",), neutral=(1.0,),
                                      extra={"--repeat-last-n": -1}, sampler="penalties"),
                  "llama-server": Export(("repeat_penalty",), neutral=(1.0,),
                                         extra={"repeat_last_n": -1}, sampler="penalties"),
                  "vllm": Export(("repetition_penalty",), 0, (1.0,))}),
]
