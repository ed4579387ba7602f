"""Sources: where a program's scores come from (the model's final logits, the logit lens of a
block or of a mix of blocks, a head-gated forward pass)."""

from __future__ import annotations

from ..errors import DslError
from ..nodes import Apply
from ..types import Type
from . import Arg, entry
from ._torch import torch

L, C, W = Type.LOGITS, Type.COUNT, Type.WEIGHTS


def _span(ctx):
    return getattr(ctx.node, "span", None)


def logits_kernel(ctx):
    return ctx.need("logits")


def layer_kernel(ctx, k: int):
    residuals = ctx.need("residuals")
    lens = ctx.need("lens")
    n = ctx.sources.layers() or len(residuals)
    if not 1 <= k <= n:
        raise DslError.at(_span(ctx), f"(layer {k}) but the model has {n} blocks "
                                      f"(layers are 1..{n})")
    return lens(residuals[k - 1])


def layer_mix_kernel(ctx, w):
    residuals = ctx.need("residuals")
    lens = ctx.need("lens")
    n = ctx.sources.layers() or len(residuals)
    if w.numel() != n:
        raise DslError.at(_span(ctx), f"layer-mix needs one weight per block ({n}), "
                                      f"found {w.numel()}")
    stack = torch.stack(list(residuals), dim=0)  # (L, B, C)
    a = torch.softmax(w, dim=0).to(stack.dtype)
    return lens(torch.einsum("l,lbc->bc", a, stack))


def head_gates(g, n_layer: int, n_head: int, span=None):
    """sigmoid(g) as (n_layer, n_head): the head gates a `gated` vector stands for."""
    if g.numel() != n_layer * n_head:
        raise DslError.at(span, f"gated needs n_layer x n_head = {n_layer} x {n_head} = "
                                f"{n_layer * n_head} weights, found {g.numel()}")
    return torch.sigmoid(g).view(n_layer, n_head)


def gated_kernel(ctx, g):
    gated = ctx.need("gated_forward")
    if not callable(gated):  # precomputed streams, one per gated node in prefix order
        return gated[ctx.index("gated_forward")]
    n_layer, n_head = ctx.sources.layers(), ctx.sources.n_head
    if n_layer is None or n_head is None:
        raise DslError.at(_span(ctx), "(gated g) needs the model's n_layer and n_head to shape g")
    base = ctx.sources.logits
    dtype = base.dtype if base is not None else torch.get_default_dtype()
    return gated(head_gates(g, n_layer, n_head, _span(ctx)).to(dtype))


def _final_layer(e, space, shift_ok):
    """(layer n_layer) is the model's own logits."""
    if space is not None and e.args[0].value == space.n_layer:
        return Apply("logits")
    return None


ENTRIES = [
    entry("logits", [], L, "source", "the model's final-layer next-token logits",
          exact=logits_kernel, reads={"logits"}),
    entry("layer", [Arg("k", C, shape="layers")], L, "source",
          "logit lens of block k, numbered from 1 (final norm + LM head on its residual stream)",
          exact=layer_kernel, reads={"residuals", "lens"}, rule=_final_layer),
    entry("layer-mix", [Arg("w", W, shape="layers")], L, "source",
          "softmax(w)-weighted sum of every block's residual stream, then final norm + LM head",
          exact=layer_mix_kernel, reads={"residuals", "lens"}),
    entry("gated", [Arg("g", W, shape="layers x heads")], L, "source",
          "final logits of a forward pass whose attention heads are scaled by sigmoid(g)",
          exact=gated_kernel, reads={"gated_forward"}),
]
