"""The DEAP bridge: the primitive set, constant terminals, individuals, AST <-> PrimitiveTree.

Everything here is derived from `engine_dsl.registry.PRIMITIVES`.

Types. DEAP types are Python classes and a slot accepts a node whose return class is a
subclass of the slot's class. Literals must also respect the slot they sit in (a temperature
is > 0, a top-p mass in (0, 1), a `layer` index <= n_layer, a `gated` vector has
n_layer x n_head entries), so every literal-bearing slot gets its own refined class:
`Real_probability`, `Count_block`, `Weights_heads`, ... A literal's terminal returns that
refined class, so crossover and mutation can only move it into slots of the same kind. The
measures (`entropy`, ...) return the plain `Real`, which subclasses every `Real_*`, so a
measure fits in any Real slot. `Logits`, `Bool` and `Decoder` need no refinement.

Constants are terminals that carry their value (`RealConstant(value, slot, fixed)`, ...), so
mutation can perturb them and they map back to `RealConst` / `CountConst` / ... exactly.
Trees are converted from and to the typed AST without Python's parser or `eval`
(never `gp.compile`, never `PrimitiveTree.from_string`).

`Individual` and `Fitness` are plain module-level classes (what `creator.create` would build),
defined once at import, so individuals pickle by reference in any worker process, spawned or
forked, without re-running `creator` calls there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from deap import base, gp

from engine_dsl.nodes import (
    Apply,
    BoolConst,
    CountConst,
    Definition,
    Expr,
    RealConst,
    WeightsConst,
)
from engine_dsl.printer import format_real
from engine_dsl.registry import PRIMITIVES, Arg, Limits, Primitive, baseline, freeze
from engine_dsl.types import ANY, Domain, Type

freeze(__name__)  # the primitive set below is built once from the registry

# --- search space -------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSpace:
    """What random programs may contain: the model's shape and the resource caps.

    n_layer, n_head: of the model the programs query (Weights lengths, `layer` indices).
    vocab_size: the largest useful `top-k`.
    unavailable: program inputs (`primitives.INPUTS`) the model cannot give, e.g. the
      residual streams of a Hugging Face model whose logits are not its lens of them:
      primitives that read one are left out of random trees and mutations.
    """

    n_layer: int = 4
    n_head: int = 4
    vocab_size: int = 259
    limits: Limits = field(default_factory=Limits)
    unavailable: frozenset[str] = frozenset()

    @classmethod
    def for_model(cls, model, limits: Limits | None = None) -> SearchSpace:
        """The space of programs for a model satisfying `engine_dsl.protocol.LanguageModel`
        (and its optional `unavailable_inputs`)."""
        return cls(model.n_layer, model.n_head, model.vocab_size, limits or Limits(),
                   frozenset(getattr(model, "unavailable_inputs", ())))

    def usable(self, prims: list) -> list:
        """The DEAP primitives of `prims` whose entries read only inputs the model gives."""
        if not self.unavailable:
            return prims
        return [p for p in prims if not self.unavailable & PRIMITIVES[p.name].reads]


# --- type classes --------------------------------------------------------------------------


def _new_type(name: str, bases: tuple[type, ...] = (), doc: str = "") -> type:
    cls = type(name, bases or (object,), {"__module__": __name__, "__doc__": doc})
    cls.__qualname__ = name
    globals()[name] = cls  # reachable by name, so pickling a node pickles a reference
    return cls


def _real_slot_key(arg: Arg) -> str:
    return (arg.domain or ANY).name.replace("-", "_")


def _count_slot_key(arg: Arg) -> str:
    # The registry caps vote/best-of n by `Limits.max_votes` and a block index (shape
    # "layers") by the model's depth; any other Count is bounded only by >= 1.
    if arg.cap:
        return arg.cap
    if arg.shape == "layers":
        return "block"
    return "any"


def _weights_slot_key(arg: Arg) -> str:
    return "heads" if arg.shape == "layers x heads" else "layers"


def _slot_key(prim: Primitive, arg: Arg) -> str | None:
    if arg.type is Type.REAL:
        return _real_slot_key(arg)
    if arg.type is Type.COUNT:
        return _count_slot_key(arg)
    if arg.type is Type.WEIGHTS:
        return _weights_slot_key(arg)
    return None


# refined slot classes: (Type, key) -> class; the real domains by key
SLOT_CLASSES: dict[tuple[Type, str], type] = {}
REAL_DOMAINS: dict[str, Domain] = {}
for _prim in PRIMITIVES.values():
    for _arg in _prim.args:
        _key = _slot_key(_prim, _arg)
        if _key is not None and (_arg.type, _key) not in SLOT_CLASSES:
            SLOT_CLASSES[_arg.type, _key] = _new_type(
                f"{_arg.type.value}_{_key}", doc=f"{_arg.type} slot of kind {_key!r}")
            if _arg.type is Type.REAL:
                REAL_DOMAINS[_key] = _arg.domain or ANY

# plain classes; a plain Real (what measures return) fits every refined Real slot
TYPE_CLASSES: dict[Type, type] = {}
for _t in Type:
    _bases = tuple(c for (t, _), c in SLOT_CLASSES.items() if t is _t and _t is Type.REAL)
    TYPE_CLASSES[_t] = _new_type(_t.value, _bases, doc=f"the program type {_t}")


def slot_class(prim: Primitive, index: int) -> type:
    """The DEAP class of argument `index` of `prim`."""
    arg = prim.args[index]
    key = _slot_key(prim, arg)
    return TYPE_CLASSES[arg.type] if key is None else SLOT_CLASSES[arg.type, key]


def fits(node_ret: type, slot: type) -> bool:
    """May a node returning `node_ret` stand in a slot of class `slot`?"""
    return issubclass(node_ret, slot)


# --- constant terminals ---------------------------------------------------------------------


class Constant(gp.Terminal):
    """A literal leaf: a terminal that carries its value (and returns a refined slot class)."""

    __slots__ = ()

    def __init__(self, value, ret: type):
        super().__init__(value, True, ret)
        self.name = self.text()

    def text(self) -> str:
        raise NotImplementedError

    def format(self) -> str:
        return self.name

    def key(self) -> tuple:
        return (type(self).__name__, self.ret.__name__, self.value)

    def __eq__(self, other):
        if isinstance(other, Constant):
            return self.key() == other.key()
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}: {self.ret.__name__})"

    def __reduce__(self):
        return (_rebuild_constant, (type(self), self.key()[1], self.reduce_args()))

    def reduce_args(self) -> tuple:
        return (self.value,)


def _rebuild_constant(cls, ret_name, args):
    return cls(*args[:1], globals()[ret_name], *args[1:])


class RealConstant(Constant):
    """A Real literal; `fixed` ones are never moved by perturbation or tuning."""

    __slots__ = ("fixed",)

    def __init__(self, value: float, ret: type, fixed: bool = False):
        self.fixed = bool(fixed)
        super().__init__(float(value), ret)

    def text(self) -> str:
        s = format_real(self.value)
        return f"(fixed {s})" if self.fixed else s

    def key(self) -> tuple:
        return (*super().key(), self.fixed)

    def reduce_args(self) -> tuple:
        return (self.value, self.fixed)

    @property
    def domain(self) -> Domain:
        return REAL_DOMAINS[self.ret.__name__.split("_", 1)[1]]


class CountConstant(Constant):
    __slots__ = ()

    def __init__(self, value: int, ret: type):
        super().__init__(int(value), ret)

    def text(self) -> str:
        return str(self.value)


class WeightsConstant(Constant):
    __slots__ = ()

    def __init__(self, values, ret: type):
        super().__init__(tuple(float(v) for v in values), ret)

    def text(self) -> str:
        return "#(" + " ".join(format_real(v) for v in self.value) + ")"


class BoolConstant(Constant):
    __slots__ = ()

    def __init__(self, value: bool, ret: type):
        super().__init__(bool(value), ret)

    def text(self) -> str:
        return "#t" if self.value else "#f"


# --- the primitive set -----------------------------------------------------------------------


def _never_called(*_args):  # DEAP stores a callable per primitive; programs are never eval'd
    raise RuntimeError("programs are compiled from the AST, never from DEAP's context")


def _build_pset() -> gp.PrimitiveSetTyped:
    pset = gp.PrimitiveSetTyped("program", [], TYPE_CLASSES[Type.DECODER])
    for prim in PRIMITIVES.values():
        ret = TYPE_CLASSES[prim.returns]
        if not prim.args:
            pset.addTerminal(prim.name, ret, name=prim.name)
            pset.context[prim.name] = None
            continue
        args = [slot_class(prim, i) for i in range(len(prim.args))]
        pset.addPrimitive(_never_called, args, ret, name=prim.name)
    # one prototype literal per refined class, so `pset.terminals` lists every literal type
    # (variation draws fresh values from a `ConstantSampler`, not from these)
    for (t, key), cls in SLOT_CLASSES.items():
        if t is Type.REAL:
            proto = RealConstant(0.5 if REAL_DOMAINS[key].contains(0.5) else 1.0, cls)
        elif t is Type.COUNT:
            proto = CountConstant(1, cls)
        else:
            proto = WeightsConstant((0.0,), cls)
        pset._add(proto)
        pset.terms_count += 1
    for value in (False, True):
        pset._add(BoolConstant(value, TYPE_CLASSES[Type.BOOL]))
        pset.terms_count += 1
    return pset


PSET: gp.PrimitiveSetTyped = _build_pset()
LOGITS_TERMINAL: gp.Terminal = PSET.mapping[baseline().args[0].op]  # the model's logits


def primitive(name: str) -> gp.Primitive | gp.Terminal:
    """The DEAP node of a registry primitive."""
    return PSET.mapping[name]


# --- individuals -----------------------------------------------------------------------------


class Fitness(base.Fitness):
    """(score up, cost down, size down): the objectives of NSGA-II (DESIGN §3)."""

    weights = (1.0, -1.0, -1.0)


class Individual(gp.PrimitiveTree):
    """A decoding program as a DEAP prefix list, with its provenance.

    id: stable name, also the definition name when written out; parents: ids;
    operator: how it was made ("seed", "random", "cx-one-point", "mut-uniform", ...);
    generation: when it was made; loss: tuning loss (Baldwinian fitness uses it), or None.
    """

    def __init__(self, content=(), id: str = "", parents: tuple[str, ...] = (),
                 operator: str = "", generation: int = 0):
        super().__init__(content)
        self.fitness = Fitness()
        self.id = id
        self.parents = tuple(parents)
        self.operator = operator
        self.generation = generation

    def __reduce__(self):
        return (_rebuild_individual, (list(self), self.__dict__.copy()))


def _rebuild_individual(nodes, state):
    ind = Individual(nodes)
    ind.__dict__.update(state)
    return ind


# --- AST <-> tree ----------------------------------------------------------------------------


def to_tree(expr: Expr, slot: type | None = None) -> list:
    """Prefix list of DEAP nodes for `expr`, standing in a slot of class `slot` (default:
    the Decoder root). Lossless: `to_expr(to_tree(e)) == e` for every checked expression."""
    slot = slot or TYPE_CLASSES[Type.DECODER]
    out: list = []
    stack: list[tuple[Expr, type]] = [(expr, slot)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, Apply):
            prim = PRIMITIVES[node.op]
            out.append(PSET.mapping[node.op])
            stack.extend((a, slot_class(prim, i)) for i, a in reversed(list(enumerate(node.args))))
        elif isinstance(node, RealConst):
            out.append(RealConstant(node.value, where, node.fixed))
        elif isinstance(node, CountConst):
            out.append(CountConstant(node.value, where))
        elif isinstance(node, WeightsConst):
            out.append(WeightsConstant(node.values, where))
        elif isinstance(node, BoolConst):
            out.append(BoolConstant(node.value, where))
        else:
            raise TypeError(f"not an expression: {node!r}")
    return out


def to_expr(tree) -> Expr:
    """The typed AST of a prefix list of DEAP nodes (no recursion, no eval)."""
    if not len(tree):
        raise ValueError("empty tree")
    stack: list[tuple[object, list]] = []
    result = None
    for node in tree:
        stack.append((node, []))
        while len(stack[-1][1]) == stack[-1][0].arity:
            done, args = stack.pop()
            result = _node_expr(done, args)
            if not stack:
                break
            stack[-1][1].append(result)
    if stack:
        raise ValueError("incomplete tree")
    return result


def _node_expr(node, args: list) -> Expr:
    if isinstance(node, RealConstant):
        return RealConst(node.value, node.fixed)
    if isinstance(node, CountConstant):
        return CountConst(node.value)
    if isinstance(node, WeightsConstant):
        return WeightsConst(node.value)
    if isinstance(node, BoolConstant):
        return BoolConst(node.value)
    return Apply(node.name, tuple(args))


def individual(expr_or_def: Expr | Definition, **provenance) -> Individual:
    """An `Individual` for a Decoder expression or a definition (its name becomes the id
    unless `id=` is given)."""
    if isinstance(expr_or_def, Definition):
        provenance.setdefault("id", expr_or_def.name)
        expr_or_def = expr_or_def.body
    return Individual(to_tree(expr_or_def), **provenance)


def to_definition(ind: Individual, extra: dict | None = None) -> Definition:
    """A definition named by the individual's id, its provenance as the comment block
    (id, parents, operator, generation, then `extra` such as score, cost, size)."""
    info = {"id": ind.id, "parents": " ".join(ind.parents) or "-", "operator": ind.operator,
            "generation": ind.generation, **(extra or {})}
    comments = tuple(f";; {k}: {_show(v)}" for k, v in info.items())
    return Definition(ind.id or "program", to_expr(ind), comments)


def _show(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    return str(v)


def slot_classes(tree) -> list[type]:
    """The class of the slot every node of `tree` stands in (the root's is Decoder)."""
    slots: list[type] = []
    pending: list[list[type]] = [[TYPE_CLASSES[Type.DECODER]]]
    for node in tree:
        while not pending[-1]:
            pending.pop()
        slots.append(pending[-1].pop(0))
        if node.arity:
            prim = PRIMITIVES[node.name]
            pending.append([slot_class(prim, i) for i in range(node.arity)])
    return slots


def tree_key(tree) -> tuple:
    """A hashable identity of a tree's structure and constants."""
    return tuple(n.key() if isinstance(n, Constant) else n.name for n in tree)
