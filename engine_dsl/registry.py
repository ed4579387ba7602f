"""The primitive registry: the single source of truth of the language (DESIGN §1, §2).

The checker, the printers, the torch evaluator (exact and relaxed), the DEAP primitive set and
`docs/LANGUAGE.md` are all derived from `PRIMITIVES`. Adding a primitive is one entry here plus
its kernel in `engine_dsl/semantics.py` (a test fails if the two disagree). No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from .types import ANY, NONNEGATIVE, PENALTY, POSITIVE, PROBABILITY, UNIT, Domain, Type

L, R, B, C, W, D = Type.LOGITS, Type.REAL, Type.BOOL, Type.COUNT, Type.WEIGHTS, Type.DECODER


@dataclass(frozen=True)
class Arg:
    """One argument slot of a primitive.

    domain: for Real slots, the set a literal there must lie in (and its tuning transform).
    cap: for Count slots, the `Limits` field bounding the value (None: no cap but >= 1).
    shape: how the slot depends on the model. Weights slots: "layers" (one weight per block)
      or "layers x heads"; a Count slot: "layers" (a block index, at most the model's number
      of blocks).
    """

    name: str
    type: Type
    domain: Domain | None = None
    cap: str | None = None
    shape: str | None = None


@dataclass(frozen=True)
class Primitive:
    name: str
    args: tuple[Arg, ...]
    returns: Type
    doc: str
    family: str  # source | transform | measure | logic | decoder
    bounds: tuple[float, float] | None = None  # a Real result's range, closed (simplifier)

    @property
    def arg_types(self) -> tuple[Type, ...]:
        return tuple(a.type for a in self.args)

    def signature(self) -> str:
        """e.g. 'Logits Real -> Logits'."""
        ins = " ".join(str(t) for t in self.arg_types)
        return f"{ins} -> {self.returns}" if ins else str(self.returns)

    def usage(self) -> str:
        """e.g. '(top-p L p)'; a bare name for nullary primitives."""
        if not self.args:
            return self.name
        return "(" + " ".join([self.name, *(a.name for a in self.args)]) + ")"


def _p(name, args, returns, family, doc, bounds=None):
    return Primitive(name, tuple(args), returns, doc, family, bounds)


PRIMITIVES: dict[str, Primitive] = {
    p.name: p
    for p in [
        # sources: where logits come from
        _p("logits", [], L, "source", "the model's final-layer next-token logits"),
        _p("layer", [Arg("k", C, shape="layers")], L, "source",
           "logit lens of block k, numbered from 1 (final norm + LM head on its residual stream)"),
        _p("layer-mix", [Arg("w", W, shape="layers")], L, "source",
           "softmax(w)-weighted sum of every block's residual stream, then final norm + LM head"),
        _p("gated", [Arg("g", W, shape="layers x heads")], L, "source",
           "final logits of a forward pass whose attention heads are scaled by sigmoid(g)"),
        # transforms: Logits -> Logits
        _p("temperature", [Arg("L", L), Arg("t", R, POSITIVE)], L, "transform", "L / t"),
        _p("top-k", [Arg("L", L), Arg("k", C)], L, "transform",
           "keep the k highest scores (ties at the k-th kept)"),
        _p("top-p", [Arg("L", L), Arg("p", R, PROBABILITY)], L, "transform",
           "nucleus: keep the smallest top set whose probability reaches p"),
        _p("min-p", [Arg("L", L), Arg("p", R, PROBABILITY)], L, "transform",
           "keep tokens whose probability is at least p x the top probability"),
        _p("typical", [Arg("L", L), Arg("p", R, PROBABILITY)], L, "transform",
           "locally typical set of probability mass p"),
        _p("repetition-penalty", [Arg("L", L), Arg("r", R, PENALTY)], L, "transform",
           "on tokens already in prompt or answer: positive scores / r, negative scores x r"),
        _p("mix", [Arg("A", L), Arg("B", L), Arg("w", R, UNIT)], L, "transform",
           "w * log_softmax(A) + (1 - w) * log_softmax(B)"),
        _p("contrast", [Arg("A", L), Arg("B", L), Arg("a", R, NONNEGATIVE)], L, "transform",
           "log_softmax(A) - a * log_softmax(B), over the tokens A keeps"),
        _p("if", [Arg("c", B), Arg("A", L), Arg("B", L)], L, "transform",
           "row-wise choice: A where c holds, else B"),
        # measures: Logits -> Real
        _p("entropy", [Arg("L", L)], R, "measure", "entropy of softmax(L), in nats",
           (0.0, math.inf)),
        _p("max-prob", [Arg("L", L)], R, "measure", "the top probability of softmax(L)",
           (0.0, 1.0)),
        _p("margin", [Arg("L", L)], R, "measure",
           "top-1 minus top-2 probability of softmax(L)", (0.0, 1.0)),
        # logic: Real/Bool -> Bool
        _p("<", [Arg("a", R, ANY), Arg("b", R, ANY)], B, "logic", "row-wise a < b"),
        _p(">", [Arg("a", R, ANY), Arg("b", R, ANY)], B, "logic", "row-wise a > b"),
        _p("and", [Arg("a", B), Arg("b", B)], B, "logic", "row-wise conjunction"),
        _p("or", [Arg("a", B), Arg("b", B)], B, "logic", "row-wise disjunction"),
        _p("not", [Arg("a", B)], B, "logic", "row-wise negation"),
        # decoders: the top level of every definition
        _p("greedy", [Arg("L", L)], D, "decoder", "argmax of L at every step"),
        _p("sample", [Arg("L", L)], D, "decoder", "draw from softmax(L) at every step"),
        _p("vote", [Arg("n", C, cap="max_votes"), Arg("D", D)], D, "decoder",
           "run D n times, return the most frequent answer (ties: highest model log-likelihood)"),
        _p("best-of", [Arg("n", C, cap="max_votes"), Arg("D", D)], D, "decoder",
           "run D n times, return the answer the model scores highest"),
    ]
}

# Forms that are syntax rather than primitives; documented beside the registry.
SPECIAL_FORMS: dict[str, str] = {
    "define": "(define NAME EXPR) — a named decoding program; EXPR must be a Decoder "
    "(Hy: (setv NAME EXPR))",
    "fixed": "(fixed 0.7) — a Real constant that tuning must not move",
}

# Literal syntax per type, for the docs and the GP terminal set.
LITERALS: dict[Type, str] = {
    Type.REAL: "a decimal number, e.g. 0.8, 1e-3, .5 (trainable unless wrapped in fixed)",
    Type.COUNT: "a positive integer, e.g. 40",
    Type.WEIGHTS: "a vector of reals: Scheme #(0.0 1.5 -2.0), Hy [0.0 1.5 -2.0]",
    Type.BOOL: "Scheme #t / #f, Hy True / False",
}

FAMILIES = ("source", "transform", "measure", "logic", "decoder")


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
