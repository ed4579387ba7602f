"""Torch meaning of every primitive, exact and relaxed (DESIGN §2, "Two modes").

`KERNELS[name]` holds an exact and a relaxed implementation for each entry of
`registry.PRIMITIVES` (a test fails if the two tables disagree). Every kernel is called as
`kernel(ctx, *args)` with one positional argument per registry slot.

Run-time values
  Logits  tensor (B, V); -inf marks an excluded token.
  Real    a Python float (exact-mode constant: the literal itself, so results match the
          Hugging Face warpers bit for bit), a 0-dim tensor (relaxed-mode constant, float64,
          differentiable), or a (B,) tensor (computed per row, e.g. `(entropy L)`).
  Bool    exact: a Python bool or a (B,) bool tensor; relaxed: log-odds, a 0-dim or (B,)
          tensor (`True` is +BIG, `False` is -BIG).
  Count   a Python int.        Weights  a 1-d tensor (float64 parameter).

Exact mode follows `transformers` (TopK/TopP/MinP/Typical warpers, RepetitionPenalty
processor, min_tokens_to_keep = 1): the same operations in the same order, so kept sets agree
even on exact ties. `truncation_chain` fuses a run of temperature/top-k/top-p/min-p over one
sort (or one `topk` when a small top-k comes first, "a later truncation only needs the
survivors of an earlier one"); it checks every place where its order of ties or its float
sums could differ from the unfused kernels (a tie across a top-p cut, a cumulative sum within
1e-6 of the cut, a tie at the k-th score) and falls back to the unfused kernels there.

Relaxed mode (constant tuning) never makes a new -inf: each truncation computes a per-token
margin m (how far inside the kept set the token is, in the primitive's own unit: logits for
top-k, probability for top-p and typical, log-probability for min-p) and adds
log sigmoid(sharpness * m) to the scores, clamped below at a floor of -(1e4 + the row's
score range), so an excluded token is at least 1e4 below every kept one and gradients stay
finite. The top token of top-p/min-p/typical always keeps mask 1 (min_tokens_to_keep = 1).
Comparisons give log-odds sharpness * (b - a); `and`/`or` are the smooth min/max of
log-odds (-logaddexp(-a, -b), logaddexp(a, b): both sides always get a gradient, and they
tend to min/max as the log-odds grow with sharpness), `not` is negation; `if` is the
probability mixture of its branches weighted by sigmoid(log-odds), shifted back by the
blended log-normaliser so it tends to the exact row choice. Temperature and repetition
penalty compute only on finite scores (no inf inside, so no NaN gradient), and the penalty
uses a token mask (a repeated id counts once in the gradient too). As sharpness grows every
relaxed form tends to its exact form (tested: KL below 1e-3).

Real arguments computed by expressions are clamped into their slot's domain at run time
(`clamp_to_domain`). Inputs the program reads besides `logits` come in a `Sources`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .errors import DslError
from .registry import PRIMITIVES
from .types import Domain

NEG_INF = float("-inf")
FLOOR = 1e4  # relaxed masks: an excluded token sits >= FLOOR below every kept one
BIG = 1e4  # relaxed Bool constants: log-odds of #t (and -BIG for #f)
DOMAIN_EPS = 1e-6  # run-time clamp margin for open domain ends
DEFAULT_SHARPNESS = 30.0


# ----------------------------------------------------------------------------- inputs


@dataclass
class Sources:
    """What a Logits program reads besides its constants.

    logits: (B, V) final-layer next-token scores (the `logits` primitive).
    history: (B, T) token ids of prompt + answer so far (repetition-penalty); ids < 0 or
      positions where `history_mask` is False are padding.
    residuals: L tensors (B, C), the last position's residual stream after each block, and
      `lens` mapping (..., C) -> (..., V) (final norm + LM head): `(layer k)`, `(layer-mix w)`.
    gated: for `(gated g)`: a callable taking head gates (n_layer, n_head) in [0, 1] and
      returning (B, V) logits of the gated forward pass (differentiable for tuning), or a
      sequence of precomputed (B, V) logits, one per `gated` node in prefix order.
    n_layer, n_head: the model's shape, to check Weights lengths (n_layer defaults to
      len(residuals)).
    """

    logits: torch.Tensor | None = None
    history: torch.Tensor | None = None
    history_mask: torch.Tensor | None = None
    residuals: Sequence[torch.Tensor] | None = None
    lens: Callable[[torch.Tensor], torch.Tensor] | None = None
    gated: Callable[[torch.Tensor], torch.Tensor] | Sequence[torch.Tensor] | None = None
    n_layer: int | None = None
    n_head: int | None = None

    def layers(self) -> int | None:
        if self.n_layer is not None:
            return self.n_layer
        return None if self.residuals is None else len(self.residuals)


@dataclass
class Context:
    """Per-call state a kernel may read: the sources, the sharpness, the node being run."""

    sources: Sources
    sharpness: float = DEFAULT_SHARPNESS
    node: Any = None  # the AST node (for error spans)
    slot: int = 0  # for `gated`: which gated node this is, in prefix order

    def need(self, what: str) -> Any:
        value = getattr(self.sources, what)
        if value is None:
            op = getattr(self.node, "op", "?")
            hint = {"history": "pass history=ids (prompt + answer so far)",
                    "residuals": "pass residuals= (one (B, C) tensor per block) and lens=",
                    "lens": "pass lens= (final norm + LM head)",
                    "gated": "pass gated= (a callable gates -> logits, or precomputed logits)",
                    "logits": "pass the model's logits"}[what]
            raise DslError.at(getattr(self.node, "span", None),
                              f"({op} ...) reads the model's {what}, which was not supplied; "
                              f"{hint}")
        return value


# ----------------------------------------------------------------------------- helpers


def _col(v, x: torch.Tensor):
    """A Real as something that broadcasts against (B, V) rows of x."""
    if isinstance(v, (float, int)):
        return v
    v = v.to(x.dtype)
    return v if v.dim() == 0 else v[:, None]


def _colt(v, x: torch.Tensor) -> torch.Tensor:
    """Like _col, always a tensor of x's dtype."""
    if isinstance(v, (float, int)):
        return torch.tensor(float(v), dtype=x.dtype, device=x.device)
    return _col(v, x)


def clamp_to_domain(v, domain: Domain | None):
    """Clamp a computed Real into a slot's domain (open ends by DOMAIN_EPS)."""
    if domain is None or domain.transform == "identity" and math.isinf(domain.lo) \
            and math.isinf(domain.hi):
        return v
    lo = domain.lo + (DOMAIN_EPS if domain.lo_open else 0.0) if math.isfinite(domain.lo) \
        else None
    hi = domain.hi - (DOMAIN_EPS if domain.hi_open else 0.0) if math.isfinite(domain.hi) \
        else None
    if isinstance(v, (float, int)):
        v = float(v)
        if lo is not None:
            v = max(v, lo)
        if hi is not None:
            v = min(v, hi)
        return v
    return v.clamp(min=lo, max=hi)


def _finite_range(x: torch.Tensor) -> torch.Tensor:
    """(B, 1) max - min over the finite scores of each row (0 for a single finite score)."""
    fin = torch.isfinite(x)
    hi = torch.where(fin, x, NEG_INF).amax(-1, keepdim=True)
    lo = torch.where(fin, x, float("inf")).amin(-1, keepdim=True)
    return torch.where(torch.isfinite(hi - lo), hi - lo, torch.zeros_like(hi))


def _apply_soft_mask(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """x + log sigmoid(z), floored; -inf scores stay -inf (gradient-safe)."""
    fin = torch.isfinite(x)
    floor = -(FLOOR + _finite_range(x.detach()))
    logm = torch.maximum(F.logsigmoid(torch.where(fin, z, torch.zeros_like(z))), floor)
    return torch.where(fin, torch.where(fin, x, torch.zeros_like(x)) + logm, x)


def _safe_log_softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(x, dim=-1)


def _excluded(x: torch.Tensor) -> torch.Tensor:
    return x == NEG_INF


# ----------------------------------------------------------------------------- sources


def source_logits(ctx: Context) -> torch.Tensor:
    return ctx.need("logits")


def source_layer(ctx: Context, k: int) -> torch.Tensor:
    residuals = ctx.need("residuals")
    lens = ctx.need("lens")
    n = ctx.sources.layers() or len(residuals)
    if not 1 <= k <= n:
        raise DslError.at(getattr(ctx.node, "span", None),
                          f"(layer {k}) but the model has {n} blocks (layers are 1..{n})")
    return lens(residuals[k - 1])


def source_layer_mix(ctx: Context, w: torch.Tensor) -> torch.Tensor:
    residuals = ctx.need("residuals")
    lens = ctx.need("lens")
    n = ctx.sources.layers() or len(residuals)
    if w.numel() != n:
        raise DslError.at(getattr(ctx.node, "span", None),
                          f"layer-mix needs one weight per block ({n}), found {w.numel()}")
    stack = torch.stack(list(residuals), dim=0)  # (L, B, C)
    a = torch.softmax(w, dim=0).to(stack.dtype)
    return lens(torch.einsum("l,lbc->bc", a, stack))


def source_gated(ctx: Context, g: torch.Tensor) -> torch.Tensor:
    gated = ctx.need("gated")
    if callable(gated):
        n_layer, n_head = ctx.sources.layers(), ctx.sources.n_head
        if n_layer is None or n_head is None:
            raise DslError.at(getattr(ctx.node, "span", None),
                              "(gated g) needs the model's n_layer and n_head to shape g")
        if g.numel() != n_layer * n_head:
            raise DslError.at(getattr(ctx.node, "span", None),
                              f"gated needs n_layer x n_head = {n_layer} x {n_head} = "
                              f"{n_layer * n_head} weights, found {g.numel()}")
        base = ctx.sources.logits
        dtype = base.dtype if base is not None else torch.get_default_dtype()
        return gated(torch.sigmoid(g).view(n_layer, n_head).to(dtype))
    return gated[ctx.slot]


# ----------------------------------------------------------------------------- exact transforms


def temperature_exact(ctx, x, t):
    return x / _col(t, x)


def _finite_only(fn, x, *args):
    """fn applied where x is finite (-inf stays -inf); no inf enters fn, so no NaN gradient."""
    fin = torch.isfinite(x)
    return torch.where(fin, fn(torch.where(fin, x, torch.zeros_like(x)), *args), x)


def temperature_relaxed(ctx, x, t):
    return _finite_only(lambda v: v / _col(t, v), x)


def top_k_exact(ctx, x, k: int):
    k = min(max(int(k), 1), x.size(-1))
    kth = torch.topk(x, k)[0][..., -1, None]
    return x.masked_fill(x < kth, NEG_INF)


def _one_minus(p, x):
    return (1 - p) if isinstance(p, (float, int)) else (1 - _col(p, x))


_INT_KEY_MAX_V = 8192  # below this, topk/sort on integer keys beat them on floats (measured)
_INT_OF = {torch.float32: (torch.int32, 31), torch.float64: (torch.int64, 63)}


def _order_key(x: torch.Tensor) -> torch.Tensor:
    """Integers in the same order as the (non-NaN) floats x; topk and sort are faster on them."""
    if x.dtype not in _INT_OF:
        return x
    int_dtype, bits = _INT_OF[x.dtype]
    i = x.contiguous().view(int_dtype)
    return i ^ ((i >> bits) & ((1 << bits) - 1))  # negative floats: flip the magnitude bits


def _ascending(x: torch.Tensor):
    """(values, indices) of x sorted ascending along the last dim, sorting integer keys
    (`_order_key`: about twice as fast as a float sort on the CPU). The values come out in
    the same order as `torch.sort(x)`'s; only the order among exactly equal values may
    differ, so callers whose result depends on it re-sort those rows (`_resort`)."""
    if x.dtype not in _INT_OF or x.size(-1) > _INT_KEY_MAX_V:
        return torch.sort(x, descending=False)
    idx = torch.sort(_order_key(x), descending=False).indices
    return x.gather(-1, idx), idx


def _resort(x: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor) -> bool:
    """Put `torch.sort`'s order (the warpers') into idx at the rows where `rows` (B,) is
    True; whether there were any."""
    if not bool(rows.any()):
        return False
    idx[rows] = torch.sort(x[rows], descending=False).indices
    return True


def _tie_at_cut(vals: torch.Tensor, remove: torch.Tensor) -> torch.Tensor:
    """(B,) bool: does a run of equal sorted values straddle the cut of the prefix mask
    `remove`?"""
    n = remove.sum(-1, keepdim=True)
    inside = (n > 0) & (n < vals.size(-1))
    at = n.clamp(min=1, max=vals.size(-1) - 1)
    return (inside & (vals.gather(-1, at) == vals.gather(-1, at - 1))).squeeze(-1)


def top_p_exact(ctx, x, p):
    sorted_logits, sorted_idx = _ascending(x)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cum <= _one_minus(p, x)
    remove[..., -1:] = False
    # the same values in the same order either way, so `remove` stands; only which of the
    # tied tokens it falls on can differ
    _resort(x, sorted_idx, _tie_at_cut(sorted_logits, remove))
    remove = remove.scatter(1, sorted_idx, remove)
    return x.masked_fill(remove, NEG_INF)


def min_p_exact(ctx, x, p):
    probs = torch.softmax(x, dim=-1)
    top = probs.amax(dim=-1, keepdim=True)
    remove = probs < _col(p, x) * top
    remove.scatter_(-1, torch.topk(probs, 1, dim=-1).indices, False)
    return x.masked_fill(remove, NEG_INF)


def typical_exact(ctx, x, p):
    normalized = torch.log_softmax(x, dim=-1)
    probs = torch.exp(normalized)
    ent = -(normalized * probs).nansum(-1, keepdim=True)
    shifted = torch.abs((-normalized) - ent)
    sorted_scores, sorted_idx = _ascending(shifted)
    sorted_logits = x.gather(-1, sorted_idx)
    # equal scores of different tokens: their order changes the sums, keep torch.sort's
    tied = sorted_scores[:, 1:] == sorted_scores[:, :-1]
    if _resort(shifted, sorted_idx, (tied & (sorted_logits[:, 1:] != sorted_logits[:, :-1]))
               .any(-1)):
        sorted_logits = x.gather(-1, sorted_idx)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    last = (cum < _col(p, x)).sum(dim=1)
    last.clamp_(max=sorted_scores.shape[-1] - 1)
    remove = sorted_scores > sorted_scores.gather(1, last.view(-1, 1))
    remove[..., :1] = False
    remove = remove.scatter(1, sorted_idx, remove)
    return x.masked_fill(remove, NEG_INF)


def _history_ids(ctx, x) -> torch.Tensor:
    """History ids (B, T) with padding mapped to column V (dropped after scatter)."""
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
            return xp.scatter_(1, ids, _penalise(x.gather(1, ids), _col(r, x)))
    ids = _history_ids(ctx, x)
    xp = F.pad(x, (0, 1))
    xp.scatter_(1, ids, _penalise(xp.gather(1, ids), _col(r, x)))
    return xp[..., : x.size(-1)]


def repetition_penalty_relaxed(ctx, x, r):
    """Same values as exact; a token mask instead of scatter so repeated ids in the history
    do not count twice in the gradient."""
    ids = _history_ids(ctx, x)
    seen = torch.zeros(x.size(0), x.size(-1) + 1, dtype=torch.bool, device=x.device)
    seen = seen.scatter(1, ids, True)[:, : x.size(-1)]
    return torch.where(seen, _finite_only(_penalise, x, _col(r, x)), x)


def _mix(ctx, a, b, w):
    la, lb = _safe_log_softmax(a), _safe_log_softmax(b)
    fa, fb = ~_excluded(la), ~_excluded(lb)
    zero = torch.zeros_like(la)
    w = _col(w, la)
    # geometric mixture over the tokens A keeps; B's exclusions count unless its weight is 0
    keep = fa & (fb | ((1 - w) == 0))
    out = torch.where(keep, w * torch.where(fa, la, zero) + (1 - w) * torch.where(fb, lb, zero),
                      NEG_INF)
    empty = ~torch.isfinite(out).any(dim=-1, keepdim=True)
    return torch.where(empty, la, out)  # A and B keep nothing in common: A's distribution


def _contrast(ctx, a, b, alpha):
    la, lb = _safe_log_softmax(a), _safe_log_softmax(b)
    fa, fb = ~_excluded(la), ~_excluded(lb)
    lo = torch.where(fb, lb, float("inf")).amin(-1, keepdim=True)
    lb_f = torch.where(fb, lb, lo)
    zero = torch.zeros_like(la)
    return torch.where(fa, torch.where(fa, la, zero) - _col(alpha, la) * lb_f, NEG_INF)


def if_exact(ctx, c, a, b):
    if isinstance(c, bool):
        return a if c else b
    c = c.to(device=a.device)
    return torch.where(c.view(-1, 1) if c.dim() else c, a, b)


# ----------------------------------------------------------------------------- measures


def entropy(ctx, x):
    logp = torch.log_softmax(x, dim=-1)
    fin = torch.isfinite(logp)
    safe = torch.where(fin, logp, torch.zeros_like(logp))
    return -(torch.exp(safe) * safe * fin).sum(-1)


def max_prob(ctx, x):
    return torch.exp(x.amax(-1) - torch.logsumexp(x, dim=-1))


def margin(ctx, x):
    probs = torch.softmax(x, dim=-1)
    if probs.size(-1) < 2:
        return probs[..., 0]
    top = torch.topk(probs, 2, dim=-1).values
    return top[..., 0] - top[..., 1]


# ----------------------------------------------------------------------------- logic


def lt_exact(ctx, a, b):
    return a < b


def gt_exact(ctx, a, b):
    return a > b


def and_exact(ctx, a, b):
    if isinstance(a, bool) and isinstance(b, bool):
        return a and b
    return torch.as_tensor(a) & torch.as_tensor(b)


def or_exact(ctx, a, b):
    if isinstance(a, bool) and isinstance(b, bool):
        return a or b
    return torch.as_tensor(a) | torch.as_tensor(b)


def not_exact(ctx, a):
    return (not a) if isinstance(a, bool) else ~a


def _as_tensor(v, like=None):
    if isinstance(v, torch.Tensor):
        return v
    return torch.tensor(float(v), dtype=torch.float64)


def lt_relaxed(ctx, a, b):
    return ctx.sharpness * (_as_tensor(b) - _as_tensor(a))


def gt_relaxed(ctx, a, b):
    return ctx.sharpness * (_as_tensor(a) - _as_tensor(b))


def and_relaxed(ctx, a, b):
    return -torch.logaddexp(-_as_tensor(a), -_as_tensor(b))  # smooth min of log-odds


def or_relaxed(ctx, a, b):
    return torch.logaddexp(_as_tensor(a), _as_tensor(b))  # smooth max of log-odds


def not_relaxed(ctx, a):
    return -_as_tensor(a)


def bool_relaxed(value: bool) -> torch.Tensor:
    """A Bool literal in relaxed mode (log-odds)."""
    return torch.tensor(BIG if value else -BIG, dtype=torch.float64)


# ----------------------------------------------------------------------------- relaxed transforms


def top_k_relaxed(ctx, x, k: int):
    V = x.size(-1)
    k = min(max(int(k), 1), V)
    sd = torch.sort(x, dim=-1, descending=True).values
    kth = sd[:, k - 1 : k]
    kept = (x >= kth).sum(-1, keepdim=True)  # the exact kept count (ties at the k-th kept)
    nxt = sd.gather(1, kept.clamp(max=V - 1))
    full = (kept >= V) | ~torch.isfinite(nxt) | ~torch.isfinite(kth)
    tau = torch.where(full, torch.zeros_like(kth), (kth + nxt) / 2)
    z = torch.where(full, torch.full_like(x, BIG), ctx.sharpness * (x - tau))
    return _apply_soft_mask(x, z)


def _sorted_soft_mask(x, order, margin_of_sorted):
    """z in original positions from margins computed along `order`; first position kept."""
    z_sorted = margin_of_sorted
    z_sorted = torch.cat([torch.full_like(z_sorted[:, :1], BIG), z_sorted[:, 1:]], dim=1)
    return torch.empty_like(z_sorted).scatter(1, order, z_sorted)


def top_p_relaxed(ctx, x, p):
    probs = torch.softmax(x, dim=-1)
    order = torch.sort(x, dim=-1, descending=True).indices
    ps = probs.gather(1, order)
    above = torch.cumsum(ps, dim=-1) - ps  # mass strictly before each token
    z = _sorted_soft_mask(x, order, ctx.sharpness * (_col(p, x) - above))
    return _apply_soft_mask(x, z)


def min_p_relaxed(ctx, x, p):
    logp = torch.log_softmax(x, dim=-1)
    top = logp.amax(-1, keepdim=True)
    z = ctx.sharpness * (logp - top - torch.log(_colt(p, x)))
    z = torch.where(logp == top, torch.full_like(z, BIG), z)
    return _apply_soft_mask(x, z)


def typical_relaxed(ctx, x, p):
    logp = torch.log_softmax(x, dim=-1)
    fin = torch.isfinite(logp)
    safe = torch.where(fin, logp, torch.zeros_like(logp))
    ent = -(torch.exp(safe) * safe * fin).sum(-1, keepdim=True)
    shifted = torch.where(fin, torch.abs(-safe - ent), float("inf"))
    order = torch.sort(shifted.detach(), dim=-1).indices
    ps = torch.exp(safe).mul(fin).gather(1, order)
    above = torch.cumsum(ps, dim=-1) - ps
    z = _sorted_soft_mask(x, order, ctx.sharpness * (_col(p, x) - above))
    return _apply_soft_mask(x, z)


def if_relaxed(ctx, c, a, b):
    z = _as_tensor(c).to(a.dtype)
    z = z.view(-1, 1) if z.dim() else z
    lse_a = torch.logsumexp(a, dim=-1, keepdim=True)
    lse_b = torch.logsumexp(b, dim=-1, keepdim=True)
    ta = F.logsigmoid(z) + (a - lse_a)
    tb = F.logsigmoid(-z) + (b - lse_b)
    both = _excluded(ta) & _excluded(tb)
    zero = torch.zeros_like(ta)
    mixed = torch.logaddexp(torch.where(both, zero, ta), torch.where(both, zero, tb))
    shift = torch.sigmoid(z) * lse_a + torch.sigmoid(-z) * lse_b
    return torch.where(both, NEG_INF, mixed + shift)


# ----------------------------------------------------------------------------- decoders

# A decoder's exact kernel acts once per step (greedy, sample: scores -> token ids) or once per
# answer (vote, best-of: candidate answers -> the chosen one); its relaxed kernel gives the
# per-step log-distribution used for teacher forcing (vote and best-of pass their inner
# decoder's through: tuning sees one sample's distribution).


def greedy_exact(ctx, x):
    return torch.argmax(x, dim=-1)


def sample_exact(ctx, x, u: torch.Tensor | None = None):
    """Inverse-CDF draw from softmax(x) with uniforms u (B,) in [0, 1): the first token whose
    cumulative probability exceeds u x the total, in x's precision (a float64 copy of every
    row cost more than the programs). A token of probability 0 is never drawn."""
    if u is None:
        u = torch.rand(x.size(0), dtype=torch.float64)
    cum = torch.softmax(x, dim=-1).cumsum(dim=-1)
    target = (u.to(cum.dtype) * cum[:, -1]).unsqueeze(1)
    tok = torch.searchsorted(cum, target, right=True).squeeze(1)
    over = tok >= x.size(-1)  # u rounded up to the total: the last token that can be drawn
    if bool(over.any()):
        last = (cum[over] < cum[over, -1:]).sum(-1)
        tok[over] = last
    return tok


def step_relaxed(ctx, x):
    return torch.log_softmax(x, dim=-1)


def vote_exact(ctx, n: int, candidates: Sequence[tuple[tuple[int, ...], float]]) -> int:
    """Index of the most frequent answer; ties: highest log-likelihood, then first."""
    counts: dict[tuple[int, ...], int] = {}
    for tokens, _ in candidates:
        counts[tokens] = counts.get(tokens, 0) + 1
    best = max(range(len(candidates)),
               key=lambda j: (counts[candidates[j][0]], candidates[j][1], -j))
    return best


def best_of_exact(ctx, n: int, candidates: Sequence[tuple[tuple[int, ...], float]]) -> int:
    """Index of the answer with the highest log-likelihood (first on ties)."""
    return max(range(len(candidates)), key=lambda j: (candidates[j][1], -j))


def pass_through_relaxed(ctx, n, d):
    return d


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Kernel:
    exact: Callable
    relaxed: Callable


def _same(fn):
    return Kernel(fn, fn)


KERNELS: dict[str, Kernel] = {
    "logits": _same(source_logits),
    "layer": _same(source_layer),
    "layer-mix": _same(source_layer_mix),
    "gated": _same(source_gated),
    "temperature": Kernel(temperature_exact, temperature_relaxed),
    "top-k": Kernel(top_k_exact, top_k_relaxed),
    "top-p": Kernel(top_p_exact, top_p_relaxed),
    "min-p": Kernel(min_p_exact, min_p_relaxed),
    "typical": Kernel(typical_exact, typical_relaxed),
    "repetition-penalty": Kernel(repetition_penalty_exact, repetition_penalty_relaxed),
    "mix": _same(_mix),
    "contrast": _same(_contrast),
    "if": Kernel(if_exact, if_relaxed),
    "entropy": _same(entropy),
    "max-prob": _same(max_prob),
    "margin": _same(margin),
    "<": Kernel(lt_exact, lt_relaxed),
    ">": Kernel(gt_exact, gt_relaxed),
    "and": Kernel(and_exact, and_relaxed),
    "or": Kernel(or_exact, or_relaxed),
    "not": Kernel(not_exact, not_relaxed),
    "greedy": Kernel(greedy_exact, step_relaxed),
    "sample": Kernel(sample_exact, step_relaxed),
    "vote": Kernel(vote_exact, pass_through_relaxed),
    "best-of": Kernel(best_of_exact, pass_through_relaxed),
}


def check_kernels() -> list[str]:
    """Disagreements between PRIMITIVES and KERNELS (empty when they agree)."""
    import inspect

    problems = []
    for name in sorted(set(PRIMITIVES) ^ set(KERNELS)):
        where = "registry" if name in PRIMITIVES else "kernels"
        problems.append(f"{name!r} only in the {where}")
    for name in sorted(set(PRIMITIVES) & set(KERNELS)):
        want = 1 + len(PRIMITIVES[name].args)
        for mode in ("exact", "relaxed"):
            params = inspect.signature(getattr(KERNELS[name], mode)).parameters.values()
            required = [p for p in params if p.default is inspect.Parameter.empty]
            if len(required) != want:
                problems.append(f"{name!r} {mode} kernel takes {len(required)} required "
                                f"arguments, the registry says {want} (ctx + slots)")
    return problems


# ----------------------------------------------------------------------------- fused chain

CHAIN_OPS = ("temperature", "top-k", "top-p", "min-p")
_CUT_SLACK = 1e-6  # a cumulative sum this close to a top-p cut is re-done unfused


def truncation_chain(ctx, x: torch.Tensor, steps: Sequence[tuple[str, Any]]) -> torch.Tensor:
    """Exact result of applying `steps` (innermost first) of temperature/top-k/top-p/min-p
    to x, sharing one sort (or one top-k) among them. Same kept set as the unfused kernels.
    """
    out = _chain_fast(x, steps)
    if out is None:
        for op, arg in steps:
            out_fn = KERNELS[op].exact
            x = out_fn(ctx, x, arg)
        return x
    return out


def _chain_fast(x: torch.Tensor, steps) -> torch.Tensor | None:
    B, V = x.shape
    first_cut = next((i for i, (op, _) in enumerate(steps) if op != "temperature"), None)
    if first_cut is None:
        return None
    op0, k0 = steps[first_cut]
    if op0 == "top-k" and int(k0) + 1 < V:
        # candidates: the k+1 best raw scores (temperatures before it keep the order)
        k = max(int(k0), 1)
        keys = _order_key(x) if V <= _INT_KEY_MAX_V else x
        idx = torch.topk(keys, k + 1, dim=-1, sorted=True).indices  # descending
        vals = x.gather(1, idx)
        scaled = vals[:, k - 1 : k + 1]
        for _, t in steps[:first_cut]:
            scaled = scaled / _col(t, scaled)
        if bool((scaled[:, 0] == scaled[:, 1]).any()):
            return None  # a tie at the k-th score: more than k survivors
        vals, idx = vals[:, :k].flip(-1), idx[:, :k].flip(-1)  # ascending
        rest = steps[:first_cut] + list(steps[first_cut + 1 :])
    else:
        vals, idx = _ascending(x)
        rest = list(steps)
    K = vals.size(-1)
    for op, arg in rest:
        if op == "temperature":
            vals = vals / _col(arg, vals)
        elif op == "top-k":
            k = min(max(int(arg), 1), K)
            vals = vals.masked_fill(vals < vals[:, K - k : K - k + 1], NEG_INF)
        elif op == "top-p":
            if K < 2:
                continue  # a lone survivor always stays
            cum = vals.softmax(dim=-1).cumsum(dim=-1)
            cut = _one_minus(arg, vals)
            remove = cum <= cut
            remove[:, -1] = False
            # order of ties and float sums may differ from a full sort at the cut: check
            if bool(_tie_at_cut(vals, remove).any() | ((cum - cut).abs() < _CUT_SLACK).any()):
                return None
            vals = vals.masked_fill(remove, NEG_INF)
        elif op == "min-p":
            probs = vals.softmax(dim=-1)
            bar = _col(arg, vals) * probs[:, -1:]
            if bool(((probs - bar).abs() <= _CUT_SLACK * bar).any()):
                return None  # too close to the cut to trust another summation order
            remove = probs < bar
            remove[:, -1] = False
            vals = vals.masked_fill(remove, NEG_INF)
        else:  # pragma: no cover - guarded by CHAIN_OPS
            raise ValueError(op)
    return torch.full_like(x, NEG_INF).scatter_(1, idx, vals)

