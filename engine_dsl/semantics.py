"""The run time of programs: what kernels receive, and the fused truncation chain.

Every primitive's kernels live beside its registry entry (`engine_dsl/primitives/`); this
module holds what they all share: the inputs (`Sources`), the per-call context (`Context`),
the clamp of computed Reals into a slot's domain, and the driver of the fused chain.

Run-time values
  Logits  tensor (B, V); -inf marks an excluded token.
  Real    a Python float (exact-mode constant: the literal itself, so results match the
          Hugging Face warpers bit for bit), a 0-dim tensor (relaxed-mode constant, float64,
          differentiable), or a (B,) tensor (computed per row, e.g. `(entropy L)`).
  Bool    exact: a Python bool or a (B,) bool tensor; relaxed: log-odds, a 0-dim or (B,)
          tensor (`True` is +BIG, `False` is -BIG).
  Count   a Python int.        Weights  a 1-d tensor (float64 parameter).

Relaxed mode (constant tuning) never makes a new -inf: truncations add a floored
log sigmoid(sharpness * margin) to the scores; as sharpness grows every relaxed form tends to
its exact form (tested: KL below 1e-3). Real arguments computed by expressions are clamped
into their slot's domain at run time, through a smooth clamp first in relaxed mode
(`clamp_to_domain`; the rule is documented in `primitives/arithmetic.py`).

Fusion. `truncation_chain` runs a nesting of transforms that have a `Fused` form over one
sort of the scores (or of the k+1 best when the first cut keeps at most k top scores: "a
later truncation only needs the survivors of an earlier one"; `_torch.top_scores`). Each
fused step says where its order of ties or its float sums could differ from the unfused
kernel (a tie across a top-p cut, a cumulative sum within 1e-6 of the cut, a tie at the k-th
score); there the chain falls back to the unfused kernels, so the kept set is always theirs.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .errors import DslError
from .primitives import INPUTS
from .primitives._torch import BIG, NEG_INF, top_scores
from .types import DOMAIN_EPS, Domain

DEFAULT_SHARPNESS = 30.0

__all__ = ["BIG", "DEFAULT_SHARPNESS", "DOMAIN_EPS", "NEG_INF", "Context", "RowState",
           "Sources", "bool_relaxed", "clamp_to_domain", "truncation_chain"]


# ----------------------------------------------------------------------------- inputs


class RowState:
    """Per-row values a primitive carries from one decoding step to the next (e.g. mirostat's
    mu), one (n,) tensor per stateful node, over a fixed set of n rows. `rows` selects the
    rows of the current call (None: all n). A stateful node's exact run this step is
    `defer`red (its entry's `update`, its output and arguments) until the chooser has picked
    the tokens: `commit(chosen)` then writes each node's next state."""

    def __init__(self, n: int):
        self.n = n
        self.values: dict[int, torch.Tensor] = {}
        self.rows: torch.Tensor | None = None
        self.pending: list[tuple] = []

    def begin(self, rows: torch.Tensor | None) -> None:
        """A new step over `rows` (earlier deferred updates are dropped)."""
        self.rows = rows
        self.pending.clear()

    def defer(self, key: int, update: Callable, out: torch.Tensor, args: Sequence) -> None:
        self.pending.append((key, update, out, args))

    def commit(self, chosen: torch.Tensor) -> None:
        """Apply this step's deferred updates, given the chosen token of each current row."""
        for key, update, out, args in self.pending:
            now = self.values[key] if self.rows is None else self.values[key][self.rows]
            self.set(key, update(now.to(out.device), out, chosen.to(out.device), *args))
        self.pending.clear()

    def get(self, key: int, init: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key not in self.values:
            first = torch.as_tensor(init(), dtype=torch.float64)
            self.values[key] = first.expand(self.n).clone() if first.dim() == 0 else first
            if self.values[key].numel() != self.n:  # init gave the current rows only
                full = torch.zeros(self.n, dtype=torch.float64)
                full[self.rows] = self.values[key]
                self.values[key] = full
        v = self.values[key]
        return v if self.rows is None else v[self.rows]

    def set(self, key: int, value: torch.Tensor) -> None:
        value = value.detach().to(torch.float64).cpu()
        if self.rows is None:
            self.values[key] = value.clone()
        else:
            self.values[key][self.rows] = value


@dataclass
class Sources:
    """What a program reads besides its constants (the declared inputs, `primitives.INPUTS`).

    logits: (B, V) final-layer next-token scores (the `logits` primitive).
    history: (B, T) token ids of prompt + answer so far; ids < 0 or positions where
      `history_mask` is False are padding.
    generated: (B, T) ids of the answer so far (the generated tokens), -1 = padding.
    residuals: L tensors (B, C), the last position's residual stream after each block, and
      `lens` mapping (..., C) -> (..., V) (final norm + LM head).
    gated_forward: a callable taking head gates (n_layer, n_head) in [0, 1] and returning (B, V)
      logits of the gated forward pass (differentiable for tuning), or a sequence of
      precomputed (B, V) logits, one per gated node in prefix order.
    uniform: a callable stream -> (B,) float64 uniforms in [0, 1) from the common random
      numbers (stream 0 is the chooser's; a node's is 1 + `stream_of` its primitive's name,
      the same in every program, so programs compared on the same rows draw alike and
      simplifying a program elsewhere leaves a node's draws as they were; two nodes of one
      primitive in a program share their draws).
    state: a `RowState` carried across decoding steps (absent: every call starts afresh).
    breakers: DRY's sequence breakers as token ids (`primitives.penalties.Breakers`, built
      from the task's strings for its tokenizer; absent: none).
    n_layer, n_head: the model's shape (n_layer defaults to len(residuals)).
    """

    logits: torch.Tensor | None = None
    history: torch.Tensor | None = None
    history_mask: torch.Tensor | None = None
    generated: torch.Tensor | None = None
    residuals: Sequence[torch.Tensor] | None = None
    lens: Callable[[torch.Tensor], torch.Tensor] | None = None
    gated_forward: Callable[[torch.Tensor], torch.Tensor] | Sequence[torch.Tensor] | None = None
    uniform: Callable[[int], torch.Tensor] | None = None
    state: RowState | None = None
    breakers: Any = None
    n_layer: int | None = None
    n_head: int | None = None

    def layers(self) -> int | None:
        if self.n_layer is not None:
            return self.n_layer
        return None if self.residuals is None else len(self.residuals)


@dataclass
class Context:
    """Per-call state a kernel may read: the sources, the sharpness, the node being run and
    its index among the nodes reading each per-node input (gated streams, random streams,
    state)."""

    sources: Sources
    sharpness: float = DEFAULT_SHARPNESS
    node: Any = None  # the AST node (for error spans)
    slots: dict[str, int] = field(default_factory=dict)

    def need(self, what: str) -> Any:
        value = getattr(self.sources, what)
        if value is None:
            op = getattr(self.node, "op", "?")
            raise DslError.at(getattr(self.node, "span", None),
                              f"({op} ...) reads the model's {what}, which was not supplied; "
                              f"{INPUTS[what]}")
        return value

    def index(self, what: str) -> int:
        return self.slots.get(what, 0)

    def counts(self, vocab: int, device=None) -> torch.Tensor:
        """(B, V) how often each token occurs in the generated answer so far."""
        ids = self.need("generated").to(device=device, dtype=torch.long)
        out = torch.zeros(ids.size(0), vocab + 1, dtype=torch.long, device=ids.device)
        out.scatter_add_(1, torch.where(ids < 0, vocab, ids.clamp(max=vocab)),
                         torch.ones_like(ids))
        return out[:, :vocab]

    def uniform(self, stream: int | None = None) -> torch.Tensor:
        """(B,) uniforms of this node's random stream (the chooser passes stream 0)."""
        draw = self.need("uniform")
        return draw(1 + self.index("uniform") if stream is None else stream)

    def state(self, init: Callable[[], torch.Tensor]) -> torch.Tensor:
        """This node's per-row state (init() on the first step, or on every call when the
        caller carries no state)."""
        store = self.sources.state
        return torch.as_tensor(init()) if store is None else store.get(self.index("state"),
                                                                       init)

    def set_state(self, value: torch.Tensor) -> None:
        if self.sources.state is not None:
            self.sources.state.set(self.index("state"), value)


# ----------------------------------------------------------------------------- helpers


def stream_of(name: str) -> int:
    """A primitive's random stream number (see `Sources.uniform`): a hash of its name."""
    return zlib.crc32(name.encode("utf-8")) % (1 << 30)


def clamp_to_domain(v, domain: Domain | None, sharpness: float | None = None):
    """The one rule mapping a computed Real into a slot's domain: clamp it into [lo', hi']
    (open ends pulled in by DOMAIN_EPS). With a `sharpness` s (relaxed mode) a tensor first
    goes through the smooth clamp lo' + sp(v - lo') - sp(v - hi'), sp(z) = softplus(s z) / s
    (one term where one end is infinite): increasing, inside (lo', hi'), tending to the clamp
    as s grows, with a non-zero gradient outside the domain too."""
    if domain is None or (math.isinf(domain.lo) and math.isinf(domain.hi)):
        return v
    if isinstance(v, (float, int)):
        return domain.clamp(v)
    lo = domain.lo + (DOMAIN_EPS if domain.lo_open else 0.0) if math.isfinite(domain.lo) \
        else None
    hi = domain.hi - (DOMAIN_EPS if domain.hi_open else 0.0) if math.isfinite(domain.hi) \
        else None
    if sharpness is not None:
        def sp(z):  # linear only beyond 40 / s, where the error e^-40 is below rounding
            return F.softplus(z, beta=sharpness, threshold=40.0)

        if lo is not None:
            v = lo + sp(v - lo) if hi is None else lo + sp(v - lo) - sp(v - hi)
        else:
            v = hi - sp(hi - v)
    return v.clamp(min=lo, max=hi)


def bool_relaxed(value: bool) -> torch.Tensor:
    """A Bool literal in relaxed mode (log-odds)."""
    return torch.tensor(BIG if value else -BIG, dtype=torch.float64)


# ----------------------------------------------------------------------------- fused chain


def truncation_chain(ctx: Context, x: torch.Tensor, steps: Sequence[tuple[Any, Any]]
                     ) -> torch.Tensor:
    """Exact result of applying `steps` ((primitive, argument), innermost first, each with a
    `fused` form) to x, sharing one sort (or one top-k) among them. Same kept set as the
    unfused kernels, which run wherever a fused step declines."""
    out = _chain_fast(x, steps)
    if out is None:
        for prim, arg in steps:
            x = prim.exact(ctx, x, arg)
        return x
    return out


def _chain_fast(x: torch.Tensor, steps) -> torch.Tensor | None:
    V = x.size(-1)
    first_cut = next((i for i, (p, _) in enumerate(steps) if not p.fused.rescale), None)
    if first_cut is None:
        return None
    p0, k0 = steps[first_cut]
    if p0.fused.keeps_top and int(k0) + 1 < V:
        # candidates: the k+1 best raw scores (rescales before it keep the order)
        k = max(int(k0), 1)
        raw, idx = top_scores(x, k + 1)
        vals = raw
        for p, t in steps[:first_cut]:
            vals = p.fused.apply(vals, t)
        if bool((vals[:, 0] == vals[:, 1]).any()):
            return None  # a tie at the k-th score: more than k survivors
        raw, vals = raw[:, 1:], vals[:, 1:]
        idx = None if idx is None else idx[:, 1:]
        rest = steps[first_cut + 1 :]
    else:
        raw, idx = top_scores(x, V)
        vals, rest = raw, steps
    for p, arg in rest:
        vals = p.fused.apply(vals, arg)
        if vals is None:
            return None
    if idx is not None:
        return torch.full_like(x, NEG_INF).scatter_(1, idx, vals)
    # each cut dropped a prefix of the ascending scores with no tie across it: the kept
    # tokens are those scoring at least the lowest kept one; rescales are elementwise
    first = (vals == NEG_INF).sum(-1, keepdim=True).clamp_(max=vals.size(-1) - 1)
    out = x
    for p, t in steps:
        if p.fused.rescale:
            out = p.fused.apply(out, t)
    return torch.where(x >= raw.gather(1, first), out, NEG_INF)
