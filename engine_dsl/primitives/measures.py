"""Measures of a score row's distribution (Logits -> Real), used by conditions."""

from __future__ import annotations

import math

from ..types import Type
from . import Arg, entry
from ._torch import all_finite, torch

L, R = Type.LOGITS, Type.REAL


def entropy_kernel(ctx, x):
    logp = torch.log_softmax(x, dim=-1)
    if all_finite(x):  # nothing to guard
        return -(torch.exp(logp) * logp).sum(-1)
    fin = torch.isfinite(logp)
    safe = torch.where(fin, logp, torch.zeros_like(logp))
    return -(torch.exp(safe) * safe * fin).sum(-1)


def max_prob_kernel(ctx, x):
    return torch.exp(x.amax(-1) - torch.logsumexp(x, dim=-1))


def margin_kernel(ctx, x):
    probs = torch.softmax(x, dim=-1)
    if probs.size(-1) < 2:
        return probs[..., 0]
    top = torch.topk(probs, 2, dim=-1).values
    return top[..., 0] - top[..., 1]


ENTRIES = [
    entry("entropy", [Arg("L", L)], R, "measure", "entropy of softmax(L), in nats",
          exact=entropy_kernel, bounds=(0.0, math.inf), shift="invariant"),
    entry("max-prob", [Arg("L", L)], R, "measure", "the top probability of softmax(L)",
          exact=max_prob_kernel, bounds=(0.0, 1.0), shift="invariant"),
    entry("margin", [Arg("L", L)], R, "measure", "top-1 minus top-2 probability of softmax(L)",
          exact=margin_kernel, bounds=(0.0, 1.0), shift="invariant"),
]
