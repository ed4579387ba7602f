"""Combinations of two score rows: geometric mixture and contrast (both over log-softmax)."""

from __future__ import annotations

from ..types import NONNEGATIVE, UNIT, Type
from . import Arg, entry
from ._torch import NEG_INF, col, excluded, torch

L, R = Type.LOGITS, Type.REAL


def mix_kernel(ctx, a, b, w):
    la, lb = torch.log_softmax(a, dim=-1), torch.log_softmax(b, dim=-1)
    fa, fb = ~excluded(la), ~excluded(lb)
    zero = torch.zeros_like(la)
    w = col(w, la)
    # geometric mixture over the tokens A keeps; B's exclusions count unless its weight is 0
    keep = fa & (fb | ((1 - w) == 0))
    out = torch.where(keep, w * torch.where(fa, la, zero) + (1 - w) * torch.where(fb, lb, zero),
                      NEG_INF)
    empty = ~torch.isfinite(out).any(dim=-1, keepdim=True)
    return torch.where(empty, la, out)  # A and B keep nothing in common: A's distribution


def contrast_kernel(ctx, a, b, alpha):
    la, lb = torch.log_softmax(a, dim=-1), torch.log_softmax(b, dim=-1)
    fa, fb = ~excluded(la), ~excluded(lb)
    lo = torch.where(fb, lb, float("inf")).amin(-1, keepdim=True)
    lb_f = torch.where(fb, lb, lo)
    zero = torch.zeros_like(la)
    big = torch.finfo(la.dtype).max  # a huge alpha overflows: keep the scores finite
    out = (torch.where(fa, la, zero) - col(alpha, la) * lb_f).clamp(-big, big)
    return torch.where(fa, out, NEG_INF)


def _same_mixture(e, space, shift_ok):
    """(mix A A w) is log_softmax(A): A up to a per-row shift."""
    return e.args[0] if shift_ok and e.args[0] == e.args[1] else None


ENTRIES = [
    entry("mix", [Arg("A", L), Arg("B", L), Arg("w", R, UNIT)], L, "transform",
          "w * log_softmax(A) + (1 - w) * log_softmax(B)", exact=mix_kernel,
          shift="invariant", rule=_same_mixture),
    entry("contrast", [Arg("A", L), Arg("B", L), Arg("a", R, NONNEGATIVE, test_range=(0.0, 10.0))],
          L, "transform", "log_softmax(A) - a * log_softmax(B), over the tokens A keeps",
          exact=contrast_kernel, shift="invariant"),
]
