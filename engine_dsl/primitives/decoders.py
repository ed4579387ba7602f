"""Decoders: the top level of every definition.

Choosers (`greedy`, `sample`) pick one token per row and step from a Logits program;
aggregators (`vote`, `best-of`) run their inner decoder n times per prompt and pick one of
the n answers. `engine_dsl.decoders` runs them; `structure` below takes a Decoder apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..nodes import Apply, Expr
from ..types import Type
from . import Arg, Export, entry
from ._torch import torch

L, C, D = Type.LOGITS, Type.COUNT, Type.DECODER


def greedy_exact(ctx, x):
    return torch.argmax(x, dim=-1)


def greedy_distribution(x):
    """A point mass on the argmax."""
    logp = torch.full_like(x, -math.inf)
    return logp.scatter_(1, x.argmax(-1, keepdim=True), 0.0)


def sample_exact(ctx, x):
    """Inverse-CDF draw from softmax(x) with the chooser's uniforms u (B,) in [0, 1): the
    first token whose cumulative probability exceeds u x the total, in x's precision (a
    float64 copy of every row cost more than the programs). A token of probability 0 is
    never drawn."""
    return inverse_cdf(x, ctx.uniform(0))


def inverse_cdf(x, u):
    cum = torch.softmax(x, dim=-1).cumsum(dim=-1)
    target = (u.to(device=cum.device, dtype=cum.dtype) * cum[:, -1]).unsqueeze(1)
    tok = torch.searchsorted(cum, target, right=True).squeeze(1)
    over = tok >= x.size(-1)  # u rounded up to the total: the last token that can be drawn
    if bool(over.any()):
        tok[over] = (cum[over] < cum[over, -1:]).sum(-1)
    return tok


def sample_distribution(x):
    return torch.log_softmax(x, dim=-1)


def vote_exact(ctx, n: int, candidates) -> int:
    """Index of the most frequent answer; ties: highest log-likelihood, then first."""
    counts: dict[tuple[int, ...], int] = {}
    for tokens, _ in candidates:
        counts[tokens] = counts.get(tokens, 0) + 1
    return max(range(len(candidates)),
               key=lambda j: (counts[candidates[j][0]], candidates[j][1], -j))


def best_of_exact(ctx, n: int, candidates) -> int:
    """Index of the answer with the highest log-likelihood (first on ties)."""
    return max(range(len(candidates)), key=lambda j: (candidates[j][1], -j))


ENTRIES = [
    entry("greedy", [Arg("L", L)], D, "decoder", "argmax of L at every step",
          exact=greedy_exact, distribution=greedy_distribution, argmax_only=True,
          shift="invariant",
          export={"hf": Export(("do_sample",), value=False),
                  "llama.cpp": Export(("--temp",), value=0.0, sampler="temperature"),
                  "llama-server": Export(("temperature",), value=0.0, sampler="temperature"),
                  "vllm": Export(("temperature",), value=0.0),
                  "ollama": Export(("temperature",), value=0.0)}),
    entry("sample", [Arg("L", L)], D, "decoder", "draw from softmax(L) at every step",
          exact=sample_exact, distribution=sample_distribution, reads={"uniform"},
          shift="invariant",
          export={"hf": Export(("do_sample",), value=True), "llama.cpp": Export(),
                  "llama-server": Export(), "vllm": Export(), "ollama": Export()}),
    entry("vote", [Arg("n", C, cap="max_votes"), Arg("D", D)], D, "decoder",
          "run D n times, return the most frequent answer (ties: highest model log-likelihood)",
          exact=vote_exact),
    entry("best-of", [Arg("n", C, cap="max_votes"), Arg("D", D)], D, "decoder",
          "run D n times, return the answer the model scores highest", exact=best_of_exact),
]


# ----------------------------------------------------------------------------- structure


@dataclass(frozen=True)
class Structure:
    """A Decoder taken apart: aggregator layers (primitive, n) outermost first, the chooser
    primitive and the Logits expression it reads."""

    layers: tuple
    chooser: object  # Primitive
    logits: Expr

    @property
    def samples(self) -> int:
        """Decodes per answer: the product of the layers' n."""
        return math.prod(n for _, n in self.layers)


def structure(decoder: Expr) -> Structure:
    """The one walker over a Decoder's shape: aggregators down to the chooser."""
    from ..registry import PRIMITIVES

    layers, node = [], decoder
    while isinstance(node, Apply) and PRIMITIVES[node.op].is_aggregator:
        prim = PRIMITIVES[node.op]
        n = next(a for a, s in zip(node.args, prim.args, strict=True) if s.type is C)
        inner = next(a for a, s in zip(node.args, prim.args, strict=True) if s.type is D)
        layers.append((prim, int(n.value)))
        node = inner
    if not (isinstance(node, Apply) and PRIMITIVES[node.op].is_chooser):
        raise ValueError(f"not a Decoder expression: {node!r}")
    return Structure(tuple(layers), PRIMITIVES[node.op], node.args[0])


def rewrap(decoder: Expr) -> Expr:
    """`decoder` without its aggregators: the chooser applied to its Logits."""
    s = structure(decoder)
    return Apply(s.chooser.name, (s.logits,))
