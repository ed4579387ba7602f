"""Export a decoding program as a Hugging Face `GenerationConfig`-compatible dict.

Possible when the program is a chooser (greedy or sample) of a chain over the model's logits
whose primitives each have a transformers key (their registry entry's `export["hf"]`), each
at most once, nested in the order transformers applies them (the entries' `rank`, innermost
first); transforms that commute may appear in either order. Anything else raises `DslError`
saying why.
"""

from __future__ import annotations

from .errors import DslError
from .nodes import Apply, Definition, Expr, RealConst
from .registry import PRIMITIVES

ENGINE = "hf"


def _exportable() -> dict:
    """Transform name -> its `Export` for this engine."""
    return {name: p.export[ENGINE] for name, p in PRIMITIVES.items()
            if ENGINE in p.export and not p.is_chooser}


def to_generation_config(program: Definition | Expr, text: str | None = None) -> dict:
    """The GenerationConfig keys equivalent to `program` (exact mode)."""
    expr = program.body if isinstance(program, Definition) else program
    prim = PRIMITIVES.get(getattr(expr, "op", None))
    if prim is None or not prim.is_chooser or ENGINE not in prim.export:
        raise DslError.at(getattr(expr, "span", None),
                          f"only a plain chooser ({', '.join(_choosers())}) exports to "
                          f"transformers, found ({getattr(expr, 'op', '?')} ...)", text)
    keys = _exportable()
    chain = []
    node = expr.args[0]
    while isinstance(node, Apply) and PRIMITIVES[node.op].args:
        if node.op not in keys:
            raise DslError.at(node.span, f"'{node.op}' has no transformers equivalent; "
                                         f"exportable: {', '.join(keys)}", text)
        chain.append(node)
        node = node.args[0]
    if "logits" not in PRIMITIVES[node.op].reads:
        raise DslError.at(node.span, f"'{node.op}' has no transformers equivalent: "
                                     f"transformers samples from the model's own logits", text)
    chain.reverse()  # innermost first
    chain = _commuted_into_order(chain, keys)
    out = {k.key: k.neutral for k in sorted(keys.values(), key=lambda k: k.rank)}
    last = None
    for node in chain:
        rank = keys[node.op].rank
        if last is not None and rank <= keys[last.op].rank:
            order = " -> ".join(sorted(keys, key=lambda n: keys[n].rank))
            raise DslError.at(node.span, f"'{node.op}' applied after '{last.op}': "
                                         f"transformers applies them in the order {order}",
                              text)
        last = node
        arg = node.args[1]
        out[keys[node.op].key] = arg.value if isinstance(arg, RealConst) else int(arg.value)
    choice = prim.export[ENGINE]
    out[choice.key] = choice.value
    return out


def _choosers() -> list[str]:
    return [n for n, p in PRIMITIVES.items() if p.is_chooser and ENGINE in p.export]


def _commuted_into_order(chain: list[Apply], keys: dict) -> list[Apply]:
    """Swap neighbours that commute (registry `commutes`) into the engine's order."""
    chain = list(chain)
    changed = True
    while changed:
        changed = False
        for i in range(len(chain) - 1):
            a, b = chain[i], chain[i + 1]
            pa, pb = PRIMITIVES[a.op], PRIMITIVES[b.op]
            if keys[a.op].rank > keys[b.op].rank and (b.op in pa.commutes or a.op in pb.commutes):
                chain[i], chain[i + 1] = b, a
                changed = True
    return chain
