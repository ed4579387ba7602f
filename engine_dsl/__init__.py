"""Decoding programs: read, check, print (no torch) and evaluate, decode, tune (torch, lazy).

    defs = engine_dsl.read(text, filename="x.scm")      # .hy -> Hy reader, else Scheme
    engine_dsl.to_scheme(defs); engine_dsl.to_hy(defs)
    f = engine_dsl.logits_fn("(top-p (temperature logits 0.8) 0.9)")
    out = f(logits, history=ids, mode="exact")

The torch half is imported on first use so that `check` and `fmt` start fast.
"""

from importlib import import_module

from .checker import read, read_expr
from .errors import DslError
from .nodes import (
    Apply,
    BoolConst,
    CountConst,
    Definition,
    Expr,
    RealConst,
    Span,
    WeightsConst,
    height,
    size,
    tunable_constants,
    type_of,
    walk,
    with_constants,
)
from .printer import expr_to_hy, expr_to_scheme, to_hy, to_scheme
from .registry import PRIMITIVES, Limits, Primitive
from .types import Type

# name -> module of the torch half, imported lazily
_LAZY = {
    "logits_fn": "compile",
    "compile_expr": "compile",
    "LogitsProgram": "compile",
    "write_back": "compile",
    "Sources": "semantics",
    "decode": "decoders",
    "decode_each": "decoders",
    "Decoding": "decoders",
    "tune": "tuning",
    "TuneBatch": "tuning",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'engine_dsl' has no attribute {name!r}")


__all__ = [
    "Apply", "BoolConst", "CountConst", "Definition", "DslError", "Expr", "Limits", "PRIMITIVES",
    "Primitive", "RealConst", "Span", "Type", "WeightsConst", "expr_to_hy", "expr_to_scheme",
    "height", "read", "read_expr", "size", "to_hy", "to_scheme", "tunable_constants", "type_of",
    "walk", "with_constants", *_LAZY,
]
