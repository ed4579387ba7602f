"""Export a decoding program as a Hugging Face `GenerationConfig`-compatible dict.

Possible when the program is `greedy` or `sample` of a chain over `logits` whose primitives
are among repetition-penalty, temperature, top-k, top-p, min-p, typical — each at most once
and nested in the order transformers applies them (repetition penalty innermost, then
temperature, top-k, top-p, min-p, typical). Anything else raises `DslError` saying why.
"""

from __future__ import annotations

from .errors import DslError
from .nodes import Apply, Definition, Expr, RealConst

# transformers applies these in this order (innermost first); our name -> GenerationConfig key
HF_ORDER = {
    "repetition-penalty": "repetition_penalty",
    "temperature": "temperature",
    "top-k": "top_k",
    "top-p": "top_p",
    "min-p": "min_p",
    "typical": "typical_p",
}

NEUTRAL = {"repetition_penalty": 1.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
           "min_p": None, "typical_p": 1.0}


def to_generation_config(program: Definition | Expr, text: str | None = None) -> dict:
    """The GenerationConfig keys equivalent to `program` (exact mode)."""
    expr = program.body if isinstance(program, Definition) else program
    if not (isinstance(expr, Apply) and expr.op in ("greedy", "sample")):
        raise DslError.at(getattr(expr, "span", None),
                          f"only a plain greedy or sample decoder exports to transformers, "
                          f"found ({getattr(expr, 'op', '?')} ...)", text)
    chain = []
    node = expr.args[0]
    while isinstance(node, Apply) and node.op != "logits":
        if node.op not in HF_ORDER:
            raise DslError.at(node.span, f"'{node.op}' has no transformers equivalent; "
                                         f"exportable: {', '.join(HF_ORDER)}", text)
        chain.append(node)
        node = node.args[0]
    chain.reverse()  # innermost first
    order = list(HF_ORDER)
    last = -1
    out = dict(NEUTRAL)
    for node in chain:
        rank = order.index(node.op)
        if rank <= last:
            raise DslError.at(node.span, f"'{node.op}' applied after "
                                         f"'{order[last]}': transformers applies them in the "
                                         f"order {' -> '.join(order)}", text)
        last = rank
        arg = node.args[1]
        out[HF_ORDER[node.op]] = arg.value if isinstance(arg, RealConst) else int(arg.value)
    out["do_sample"] = expr.op == "sample"
    return out
