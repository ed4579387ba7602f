"""What a primitive is (DESIGN §1): one `Primitive` entry holds all of it.

The families live one module each beside their kernels (`sources`, `truncations`,
`penalties`, `mixing`, `measures`, `arithmetic`, `logic`, `decoders`); `engine_dsl.registry`
gathers them. Nothing outside an entry and the kernels it points to branches on a
primitive's name: the checker, the compiler, the decoder, the simplifier, the exporters, the
DEAP bridge, the docs and the test strategies read the fields below. No torch is imported
here (kernels load it on first use, `_torch.py`), so reading and checking programs stays
fast.

Kernels. `exact(ctx, *args)` and `relaxed(ctx, *args)` take one positional argument per slot
(run-time values: see `engine_dsl.semantics`); `relaxed` defaults to `exact`. A kernel reads
the inputs named in `reads` through `ctx` (`ctx.need(name)`, `ctx.counts(V)`,
`ctx.uniform()`, `ctx.state(init)` / `ctx.set_state(v)`), never anything else.

Decoders come in two kinds, told apart by their slots: a *chooser* has a Logits slot and picks
one token per row and step (`exact(ctx, x) -> ids`; `distribution(x)` is the per-step
log-distribution of its choice, for scoring), an *aggregator* has a Count and a Decoder slot
and picks one of n candidate answers (`exact(ctx, n, [(tokens, log_likelihood), ...]) ->
index`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..types import Domain, Type

# The inputs a primitive may read, with what a caller must pass when one is missing.
INPUTS: dict[str, str] = {
    "logits": "pass the model's logits",
    "history": "pass history=ids (prompt + answer so far)",
    "generated": "pass generated=ids (the answer so far; -1 = padding)",
    "residuals": "pass residuals= (one (B, C) tensor per block) and lens=",
    "lens": "pass lens= (final norm + LM head)",
    "gated_forward": "pass gated_forward= (a callable gates -> logits, or precomputed logits)",
    "uniform": "pass uniform= (a callable stream -> (B,) uniforms in [0, 1))",
    "state": "pass state= (a semantics.RowState carried across decoding steps)",
    "breakers": "pass breakers= (primitives.penalties.Breakers: DRY sequence breakers as ids)",
}


@dataclass(frozen=True)
class Arg:
    """One argument slot of a primitive.

    domain: for Real slots, the set a literal there must lie in (and its tuning transform).
    cap: for Count slots, the `Limits` field bounding the value (None: no cap but >= 1).
    shape: how the slot depends on the model. Weights slots: "layers" (one weight per block)
      or "layers x heads"; a Count slot: "layers" (a block index, at most the model's number
      of blocks).
    test_range: (lo, hi) of values property tests draw for this slot (default: from the
      domain or cap, unbounded ends at +-1e6).
    """

    name: str
    type: Type
    domain: Domain | None = None
    cap: str | None = None
    shape: str | None = None
    test_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class Fused:
    """How a transform joins the fused truncation chain (`semantics.truncation_chain`).

    apply(vals, arg): the transform on each row's surviving scores sorted ascending (B, K),
      -inf for dropped ones; returns the new scores (same order) or None where fusing could
      differ from the unfused kernel (a tie or near-tie at a cut): the chain then falls back.
      A cut drops a prefix (the lowest scores), never one of two equal scores without the
      other: the tokens a chain keeps are those scoring at least its lowest survivor.
    rescale: it only rescales, elementwise and non-decreasing (keeps every survivor and the
      order), e.g. temperature; the chain may apply it to whole rows.
    keeps_top: it keeps at most int(arg) top scores (ties at the cut kept), so a chain whose
      first cut it is only needs the int(arg) + 1 best scores.
    sorts: its unfused kernel sorts the whole row (top-p). A run of fused transforms becomes
      a chain only where it saves work: a cut that keeps the top or one that sorts (then one
      sort serves them all); min-p after a temperature, say, runs unfused, with no sort.
    """

    apply: Callable[[Any, Any], Any]
    rescale: bool = False
    keeps_top: bool = False
    sorts: bool = False


@dataclass(frozen=True)
class Export:
    """One engine's name for a primitive (`engine_dsl.export`).

    keys: the engine's parameter for each constant slot, in slot order.
    rank: where an engine with a fixed order applies it (innermost first; equal ranks for
      samplers the engine applies together or that commute).
    neutral: the values of `keys` that turn it off (an export sets every parameter it knows,
      so the engine's own defaults never leak in).
    extra: settings it needs besides its keys (llama.cpp's penalty window over the whole
      context: repeat-last-n -1).
    sampler: its name in a user-ordered chain (llama.cpp `--samplers`).
    value: a chooser's value for keys[0] (transformers do_sample, a temperature of 0).
    in_greedy: the engine applies it when decoding greedily too (transformers' warpers,
      vLLM's and Ollama's samplers are skipped then).
    mode: (key, on, off): a setting that switches the engine into this sampler's mode
      (llama.cpp's `--mirostat 2`), set to `off` in every export that does not use it.
    alone_after: in that mode the sampler replaces the engine's chain (llama.cpp's mirostat):
      it must be the outermost transform, and only transforms whose keys are all among these
      may come before it; the chain's order key is not set.
    not_after: samplers (by `sampler` name) after which the engine computes it wrongly, so a
      chain with one of them anywhere before it is refused.
    """

    keys: tuple[str, ...] = ()
    rank: int = 0
    neutral: tuple = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    sampler: str | None = None
    value: Any = None
    in_greedy: bool = True
    mode: tuple[str, Any, Any] | None = None
    alone_after: frozenset[str] | None = None
    not_after: frozenset[str] = frozenset()


@dataclass(frozen=True, eq=False)  # an entry is itself: compared and hashed by identity
class Primitive:
    """A whole primitive: signature, kernels, inputs, simplifier facts, exports.

    family: source | transform | measure | arithmetic | logic | decoder (docs, grouping).
    reads: inputs from `INPUTS` the kernels take from the context.
    bounds: a Real result's closed range (the simplifier decides comparisons outside it).
    neutral: the value of the last (Real or Count) slot at which the form returns its first
      argument unchanged (temperature 1, a penalty 1); "vocab" for a Count at least the
      vocabulary size.
    merge: (op (op L a) b) == (op L merge(a, b)) for literal a and b of the same fixedness.
    keeps_argmax: a transform whose top token is its first argument's.
    argmax_only: a chooser that reads only the top token of its Logits.
    shift: how a per-row additive shift of the Logits arguments passes through:
      "invariant" (the result does not change), "equivariant" (the result shifts the same),
      None (anything else).
    commutes: transforms with which nesting order does not matter ((a (b L x) y) ==
      (b (a L y) x)); the simplifier orders such nestings canonically (registry order,
      earlier innermost). Symmetric: either entry may name the other.
    rule: any further rewrite of an application: rule(e, space) -> Expr or None.
    export: engine -> `Export` (engines with a fixed processing order).
    fused: how it joins the fused truncation chain, or None.
    distribution: choosers only (see the module doc).
    update: a transform that carries per-row state (reads "state"):
      update(state, out, chosen, *args) -> the next state (B,), from this step's state, the
      node's output `out`, the token the chooser picked per row and the node's arguments;
      decode calls it after each step's choice (`semantics.RowState.commit`).
    """

    name: str
    args: tuple[Arg, ...]
    returns: Type
    doc: str
    family: str
    exact: Callable | None = None
    relaxed: Callable | None = None
    reads: frozenset[str] = frozenset()
    bounds: tuple[float, float] | None = None
    neutral: float | str | None = None
    merge: Callable[[Any, Any], Any] | None = None
    keeps_argmax: bool = False
    argmax_only: bool = False
    shift: str | None = None
    commutes: frozenset[str] = frozenset()
    rule: Callable | None = None
    export: Mapping[str, Export] = field(default_factory=dict)
    fused: Fused | None = None
    distribution: Callable | None = None
    update: Callable | None = None

    def __post_init__(self):
        unknown = set(self.reads) - set(INPUTS)
        if unknown:
            raise ValueError(f"{self.name}: unknown inputs {sorted(unknown)}; "
                             f"known: {', '.join(INPUTS)}")
        if self.update is not None and "state" not in self.reads:
            raise ValueError(f"{self.name}: an entry with an update reads 'state'")
        if self.relaxed is None:
            object.__setattr__(self, "relaxed", self.exact)
        object.__setattr__(self, "reads", frozenset(self.reads))
        object.__setattr__(self, "commutes", frozenset(self.commutes))

    @property
    def arg_types(self) -> tuple[Type, ...]:
        return tuple(a.type for a in self.args)

    @property
    def is_chooser(self) -> bool:
        return self.returns is Type.DECODER and Type.LOGITS in self.arg_types

    @property
    def is_aggregator(self) -> bool:
        return self.returns is Type.DECODER and Type.DECODER in self.arg_types

    def signature(self) -> str:
        """e.g. 'Logits Real -> Logits'."""
        ins = " ".join(str(t) for t in self.arg_types)
        return f"{ins} -> {self.returns}" if ins else str(self.returns)

    def usage(self) -> str:
        """e.g. '(top-p L p)'; a bare name for nullary primitives."""
        if not self.args:
            return self.name
        return "(" + " ".join([self.name, *(a.name for a in self.args)]) + ")"

    def kernel(self, mode: str) -> Callable:
        return self.exact if mode == "exact" else self.relaxed


def entry(name, args, returns, family, doc, **facts) -> Primitive:
    """A `Primitive` from a list of slots (the families' shorthand)."""
    return Primitive(name, tuple(args), returns, doc, family, **facts)
