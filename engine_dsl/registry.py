"""The primitive registry: the single source of truth of the language (DESIGN §1, §2).

`PRIMITIVES` gathers the entries of the family modules in `engine_dsl/primitives/` (each
entry beside its kernels). The checker, the printers, the compiler (exact and relaxed), the
decoder, the simplifier, the exporters, the DEAP primitive set, the test strategies and
`docs/LANGUAGE.md` are all derived from it: adding a primitive is one entry in one family
module (or `register(entry)` before the search space is built). No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .nodes import Apply
from .primitives import (  # noqa: F401  (re-exported)
    INPUTS,
    Arg,
    Export,
    Fused,
    Primitive,
    adaptive,
    arithmetic,
    decoders,
    entry,
    logic,
    measures,
    mixing,
    penalties,
    sources,
    truncations,
)
from .types import Type

FAMILY_MODULES = (sources, truncations, penalties, adaptive, mixing, measures, arithmetic, logic,
                  decoders)

PRIMITIVES: dict[str, Primitive] = {p.name: p for m in FAMILY_MODULES for p in m.ENTRIES}

# Forms that are syntax rather than primitives; documented beside the registry.
SPECIAL_FORMS: dict[str, str] = {
    "define": "(define NAME EXPR) — a named decoding program; EXPR must be a Decoder "
    "(Hy: (setv NAME EXPR))",
    "fixed": "(fixed 0.7) — a Real constant that tuning must not move",
}

MAX_COUNT = 2**31 - 1  # the engines a program exports to read a count as a 32-bit integer

# Literal syntax per type, for the docs and the GP terminal set.
LITERALS: dict[Type, str] = {
    Type.REAL: "a decimal number, e.g. 0.8, 1e-3, .5 (trainable unless wrapped in fixed)",
    Type.COUNT: f"a positive integer up to {MAX_COUNT} (2^31 - 1), e.g. 40",
    Type.WEIGHTS: "a vector of reals: Scheme #(0.0 1.5 -2.0), Hy [0.0 1.5 -2.0]",
    Type.BOOL: "Scheme #t / #f, Hy True / False",
}

FAMILIES = ("source", "transform", "measure", "arithmetic", "logic", "decoder")

_frozen_by: list[str] = []  # who built tables from the registry (no registering after that)


def register(prim: Primitive) -> Primitive:
    """Add a primitive (a plug-in, or a test). Must run before `freeze` (the DEAP primitive
    set is built from the registry when `evolution` is imported)."""
    if prim.name in PRIMITIVES or prim.name in SPECIAL_FORMS:
        raise ValueError(f"{prim.name!r} is already a primitive or special form")
    if prim.family not in FAMILIES:
        raise ValueError(f"{prim.name}: family must be one of {FAMILIES}")
    if prim.exact is None:
        raise ValueError(f"{prim.name}: an entry needs its exact kernel")
    if _frozen_by:
        raise RuntimeError(f"register {prim.name!r} before importing {_frozen_by[0]}: "
                           f"it built its tables from the registry")
    PRIMITIVES[prim.name] = prim
    return prim


def freeze(by: str) -> None:
    """Called by modules that derive fixed tables from the registry at import."""
    _frozen_by.append(by)


@dataclass(frozen=True)
class Limits:
    """Resource caps every program is checked against (DESIGN §6). Each is a config value."""

    max_size: int = 64  # nodes (primitives and literals) in one definition
    max_height: int = 17  # edges on the longest root-to-leaf path (DEAP's convention)
    max_votes: int = 16  # n of vote / best-of
    max_weights: int = 4096  # entries of one Weights literal

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def producing(t: Type) -> list[Primitive]:
    """Primitives whose result has type t, in registry order."""
    return [p for p in PRIMITIVES.values() if p.returns is t]


def baseline() -> Apply:
    """The fixed decoding a user would pick first: the argmax chooser over the model's own
    logits (`(greedy logits)`)."""
    chooser = next(p for p in PRIMITIVES.values() if p.is_chooser and p.argmax_only)
    source = next(p for p in PRIMITIVES.values()
                  if p.returns is Type.LOGITS and not p.args and "logits" in p.reads)
    return Apply(chooser.name, (Apply(source.name),))
