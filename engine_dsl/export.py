"""Export a decoding program to the engines people deploy with, exactly or not at all.

    export(program, "llama.cpp")   # -> {"--samplers": "top_k;temperature", "--temp": 0.8, ...}
    render(settings, "llama.cpp")  # -> the command-line flags as text

An engine expresses a program that is a chooser (greedy or sample) over a chain of transforms
of the model's own logits, each with literal constants and an entry for the engine in its
registry `export` field. Engines with a fixed order (transformers, vLLM, Ollama) need the
chain nested in that order (the entries' `rank`, innermost first; transforms that commute may
appear either way round); llama.cpp and llama-server take the program's own order
(`--samplers`), each sampler once. A greedy chooser reads only the top token, so transforms
that keep it are dropped first. Every parameter the engine knows is set (to its neutral value
where the program does not use it), so the engine's defaults (llama.cpp's top-k 40 and
temperature 0.8, say) never leak in. Anything else raises `DslError` at the first node the
engine cannot express, saying why.

Known inexactness, shared by every engine but transformers and vLLM: top-k keeps exactly k
tokens where transformers keeps ties at the k-th score (equal float scores only).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from .errors import DslError
from .nodes import Apply, CountConst, Definition, Expr, RealConst
from .registry import PRIMITIVES


@dataclass(frozen=True)
class Engine:
    title: str
    ordered: bool  # a fixed processing order (else the program's, in `samplers_key`)
    render: Callable[[dict], str]
    samplers_key: str | None = None
    join: Callable[[list[str]], object] | None = None


def _flags(settings: dict) -> str:
    return " ".join(f"{k} {_flag_value(v)}" for k, v in settings.items())


def _flag_value(v) -> str:
    if isinstance(v, str):
        return "'" + v.replace("'", "'\\''") + "'"
    return json.dumps(v)


def _modelfile(settings: dict) -> str:
    return "\n".join(f"PARAMETER {k} {json.dumps(v)}" for k, v in settings.items())


def _json(settings: dict) -> str:
    return json.dumps(settings, indent=2)


ENGINES: dict[str, Engine] = {
    "hf": Engine("transformers (GenerationConfig keys)", True, _json),
    "llama.cpp": Engine("llama.cpp (command-line flags)", False, _flags, "--samplers",
                        ";".join),
    "llama-server": Engine("llama-server (request body)", False, _json, "samplers", list),
    "vllm": Engine("vLLM (SamplingParams keyword arguments)", True, _json),
    "ollama": Engine("Ollama (Modelfile PARAMETER lines)", True, _modelfile),
}


def export(program: Definition | Expr, engine: str, text: str | None = None) -> dict:
    """The engine's settings equivalent to `program` (exact mode), or DslError."""
    spec = ENGINES[engine]
    expr = program.body if isinstance(program, Definition) else program
    chooser = PRIMITIVES.get(getattr(expr, "op", None))
    if chooser is None or not chooser.is_chooser or engine not in chooser.export:
        choosers = [n for n, p in PRIMITIVES.items() if p.is_chooser and engine in p.export]
        why = (f"'{chooser.name}' decodes several answers and picks one; an engine decodes "
               f"one per request" if chooser is not None and chooser.is_aggregator else
               f"found ({getattr(expr, 'op', '?')} ...)")
        raise DslError.at(getattr(expr, "span", None),
                          f"only a plain chooser ({', '.join(choosers)}) exports to "
                          f"{spec.title.split(' (')[0]}: {why}", text)
    chain = _chain(expr.args[0], engine, text)
    if chooser.argmax_only:  # the top token is all a greedy chooser reads
        chain = [n for n in chain if not PRIMITIVES[n.op].keeps_argmax]
        for node in chain:
            if not PRIMITIVES[node.op].export[engine].in_greedy:
                raise DslError.at(node.span, f"'{node.op}' can change the top token, and "
                                             f"{spec.title.split(' (')[0]} does not apply it "
                                             f"when decoding greedily", text)
    if spec.ordered:
        chain = _in_engine_order(chain, engine, text)
    else:
        _each_once(chain, engine, text)
    alone = _alone(chain, engine, text)
    known = sorted((p.export[engine] for p in PRIMITIVES.values()
                    if engine in p.export and not p.is_chooser), key=lambda e: e.rank)
    out = {k: v for e in known for k, v in zip(e.keys, e.neutral, strict=True)}
    out.update({e.mode[0]: e.mode[2] for e in known if e.mode is not None})
    for node in chain:
        e = PRIMITIVES[node.op].export[engine]
        constants = [a for a in node.args[1:]]
        for key, a in zip(e.keys, constants, strict=True):
            out[key] = a.value
        out.update(e.extra)
        if e.mode is not None:
            out[e.mode[0]] = e.mode[1]
    choice = chooser.export[engine]
    if choice.keys:
        out[choice.keys[0]] = choice.value
    if spec.samplers_key is not None and not alone:
        names = [PRIMITIVES[n.op].export[engine].sampler for n in chain]
        if choice.sampler is not None and choice.sampler not in names:
            names.append(choice.sampler)
        out = {spec.samplers_key: spec.join(names), **out}
    return out


def render(settings: dict, engine: str) -> str:
    """The settings as the engine reads them (flags, Modelfile lines or JSON)."""
    return ENGINES[engine].render(settings)


def to_generation_config(program: Definition | Expr, text: str | None = None) -> dict:
    """The transformers GenerationConfig keys equivalent to `program` (exact mode)."""
    return export(program, "hf", text)


def _chain(node: Expr, engine: str, text: str | None) -> list[Apply]:
    """The transforms from the model's logits up to the chooser, innermost first."""
    title = ENGINES[engine].title.split(" (")[0]
    chain = []
    while isinstance(node, Apply) and PRIMITIVES[node.op].args:
        prim = PRIMITIVES[node.op]
        if engine not in prim.export:
            exportable = [n for n, p in PRIMITIVES.items()
                          if engine in p.export and not p.is_chooser]
            raise DslError.at(node.span, f"'{node.op}' has no {title} equivalent; "
                                         f"exportable: {', '.join(exportable)}", text)
        for a in node.args[1:]:
            if not isinstance(a, (RealConst, CountConst)):
                raise DslError.at(getattr(a, "span", None) or node.span,
                                  f"{title} takes constants: the {prim.args[1].name} of "
                                  f"'{node.op}' is computed per step", text)
        chain.append(node)
        node = node.args[0]
    if "logits" not in PRIMITIVES[node.op].reads:
        raise DslError.at(node.span, f"'{node.op}' has no {title} equivalent: {title} "
                                     f"decodes from the model's own logits", text)
    return chain[::-1]


def _in_engine_order(chain: list[Apply], engine: str, text: str | None) -> list[Apply]:
    """Commuting neighbours swapped into the engine's order; DslError where the order cannot
    be reached or a transform repeats."""
    rank = {n.op: PRIMITIVES[n.op].export[engine].rank for n in chain}
    chain = list(chain)
    changed = True
    while changed:
        changed = False
        for i in range(len(chain) - 1):
            a, b = chain[i], chain[i + 1]
            if rank[a.op] > rank[b.op] and _commute(a.op, b.op):
                chain[i], chain[i + 1] = b, a
                changed = True
    _each_once(chain, engine, text)
    for prev, node in zip(chain, chain[1:], strict=False):
        if rank[node.op] < rank[prev.op]:
            order = " -> ".join(sorted((n for n, p in PRIMITIVES.items() if engine in p.export
                                        and not p.is_chooser),
                                       key=lambda n: PRIMITIVES[n].export[engine].rank))
            raise DslError.at(node.span, f"'{node.op}' applied after '{prev.op}': "
                                         f"{ENGINES[engine].title.split(' (')[0]} applies "
                                         f"them in the order {order}", text)
    return chain


def _alone(chain: list[Apply], engine: str, text: str | None) -> bool:
    """Whether the chain ends in a sampler that replaces the engine's chain (`alone_after`);
    DslError where such a sampler is not outermost or follows a transform its mode lacks."""
    title = ENGINES[engine].title.split(" (")[0]
    for i, node in enumerate(chain):
        allowed = PRIMITIVES[node.op].export[engine].alone_after
        if allowed is None:
            continue
        if i != len(chain) - 1:
            raise DslError.at(chain[i + 1].span, f"'{chain[i + 1].op}' applied after "
                                                 f"'{node.op}': {title} runs '{node.op}' "
                                                 f"as the last sampler", text)
        for before in chain[:i]:
            if not set(PRIMITIVES[before.op].export[engine].keys) <= allowed:
                raise DslError.at(before.span, f"'{before.op}' before '{node.op}': {title} "
                                               f"runs '{node.op}' after "
                                               f"{', '.join(sorted(allowed))} only", text)
        return True
    return False


def _each_once(chain: list[Apply], engine: str, text: str | None) -> None:
    seen: dict = {}
    for node in chain:
        e = PRIMITIVES[node.op].export[engine]
        for name, op in seen.items():
            if name in e.not_after:
                raise DslError.at(node.span, f"'{node.op}' after '{op}': "
                                             f"{ENGINES[engine].title.split(' (')[0]} "
                                             f"computes '{node.op}' wrongly after it", text)
        key = e.sampler or node.op
        if key in seen:
            first = seen[key]
            also = "" if first == node.op else f" (as '{first}' is: both are its {key})"
            raise DslError.at(node.span, f"'{node.op}' applied twice{also}: "
                                         f"{ENGINES[engine].title.split(' (')[0]} has one "
                                         f"of each sampler", text)
        seen[key] = node.op


def _commute(a: str, b: str) -> bool:
    return b in PRIMITIVES[a].commutes or a in PRIMITIVES[b].commutes
