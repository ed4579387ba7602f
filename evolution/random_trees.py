"""Random typed trees that never fail, literal values, and the initial population.

DEAP's `genGrow` / `genFull` raise "tried to add a terminal of type X, but there is none
available" when the depth budget runs out on a type without terminals (a Decoder). Here every
slot class knows the least height that completes it (`MIN_HEIGHT`) and a node is only chosen
when its subtree can still be completed within the budget, so generation cannot fail for any
requested height >= the slot's minimum (smaller requests are raised to it).

All randomness comes from a `random.Random` passed in; no global state.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from engine_dsl.checker import within_caps
from engine_dsl.nodes import Definition, Expr
from engine_dsl.registry import PRIMITIVES, baseline
from engine_dsl.types import Type

from .bridge import (
    LOGITS_TERMINAL,
    PSET,
    REAL_DOMAINS,
    SLOT_CLASSES,
    TYPE_CLASSES,
    BoolConstant,
    CountConstant,
    Individual,
    RealConstant,
    SearchSpace,
    WeightsConstant,
    fits,
    individual,
    slot_class,
    to_expr,
    to_tree,
)

DECODER = TYPE_CLASSES[Type.DECODER]
LITERAL_SLOTS = {cls: (t, key) for (t, key), cls in SLOT_CLASSES.items()}
BOOL = TYPE_CLASSES[Type.BOOL]
LOGITS = TYPE_CLASSES[Type.LOGITS]


def _has_terminal(slot: type) -> bool:
    return slot in LITERAL_SLOTS or slot is BOOL or slot is LOGITS


def _min_heights() -> tuple[dict[type, int], dict[str, int]]:
    """Least completing height of every slot class and of every primitive (fixpoint)."""
    slots = {*SLOT_CLASSES.values(), *TYPE_CLASSES.values()}
    h_slot = {s: (0 if _has_terminal(s) else math.inf) for s in slots}
    h_prim: dict[str, float] = {}
    changed = True
    while changed:
        changed = False
        for prim in PRIMITIVES.values():
            if not prim.args:
                h_prim[prim.name] = 0
                continue
            h = 1 + max(h_slot[slot_class(prim, i)] for i in range(len(prim.args)))
            if h < h_prim.get(prim.name, math.inf):
                h_prim[prim.name] = h
                changed = True
            ret = TYPE_CLASSES[prim.returns]
            for s in slots:
                if fits(ret, s) and h < h_slot[s]:
                    h_slot[s] = h
                    changed = True
    used = {DECODER} | {slot_class(p, i) for p in PRIMITIVES.values() for i in range(len(p.args))}
    unreachable = [s.__name__ for s in used if math.isinf(h_slot[s])]
    if unreachable:  # a registry edit made a type impossible to build
        raise RuntimeError(f"no finite program has type {', '.join(unreachable)}")
    return {s: int(h) for s, h in h_slot.items() if s in used}, h_prim


MIN_HEIGHT, PRIM_MIN_HEIGHT = _min_heights()
# the non-nullary primitives that may stand in each slot class
SLOT_PRIMITIVES: dict[type, list] = {
    s: [p for p in PSET.primitives[s] if p.arity] for s in MIN_HEIGHT
}


# --- literal values --------------------------------------------------------------------------


def _round(x: float, digits: int = 3) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


class ConstantSampler:
    """Fresh literal values for every literal slot class, in the search space's bounds."""

    def __init__(self, space: SearchSpace):
        self.space = space

    def count_range(self, key: str) -> tuple[int, int]:
        if key == "block":
            return 1, self.space.n_layer
        if key == "any":
            return 1, self.space.vocab_size
        return 1, int(getattr(self.space.limits, key))

    def weights_length(self, key: str) -> int:
        n = self.space.n_layer * (self.space.n_head if key == "heads" else 1)
        return min(n, self.space.limits.max_weights)

    def real(self, key: str, rng: random.Random) -> float:
        d = REAL_DOMAINS[key]
        if d.transform == "identity":  # thresholds compared with entropy / probabilities
            return _round(rng.uniform(0.0, 3.0))
        x = _round(d.constrained(rng.gauss(0.0, 1.2)))
        return x if d.contains(x) else d.constrained(d.unconstrained(x))

    def count(self, key: str, rng: random.Random) -> int:
        lo, hi = self.count_range(key)
        if key == "any":  # log-uniform: small k matter more than large
            return max(lo, min(hi, int(round(math.exp(rng.uniform(0.0, math.log(hi)))))))
        if key == "max_votes" and hi >= 2:
            return rng.randint(2, min(hi, 8))
        return rng.randint(lo, hi)

    def weights(self, key: str, rng: random.Random) -> tuple[float, ...]:
        mean = 2.0 if key == "heads" else 0.0  # head gates start mostly open (sigmoid(2)=.88)
        return tuple(_round(rng.gauss(mean, 1.0), 2) for _ in range(self.weights_length(key)))

    def terminal(self, slot: type, rng: random.Random):
        """A leaf for a slot that has one: a fresh literal, `logits`, or #t/#f."""
        if slot is LOGITS:
            return LOGITS_TERMINAL
        if slot is BOOL:
            return BoolConstant(rng.random() < 0.5, BOOL)
        t, key = LITERAL_SLOTS[slot]
        if t is Type.REAL:
            return RealConstant(self.real(key, rng), slot)
        if t is Type.COUNT:
            return CountConstant(self.count(key, rng), slot)
        return WeightsConstant(self.weights(key, rng), slot)


# --- random trees ----------------------------------------------------------------------------


def generate(slot: type, height: int, rng: random.Random, sampler: ConstantSampler,
             full: bool = False, leaf_prob: float = 0.3) -> list:
    """A random prefix list standing in `slot`, of height <= max(height, MIN_HEIGHT[slot]).

    full=False (grow): below the budget a leaf is taken with probability `leaf_prob` where one
    exists; full=True: internal nodes while the budget allows. Never fails.
    """
    out: list = []
    stack = [(slot, max(height, MIN_HEIGHT[slot]))]
    while stack:
        s, budget = stack.pop()
        prims = [p for p in sampler.space.usable(SLOT_PRIMITIVES[s])
                 if PRIM_MIN_HEIGHT[p.name] <= budget]
        leaf_ok = _has_terminal(s)
        if leaf_ok and prims:
            # literal-only refined Real slots (a temperature, a top-p mass) mostly get literals
            p_leaf = 0.0 if full else leaf_prob
            if s in LITERAL_SLOTS and LITERAL_SLOTS[s][0] is Type.REAL and s is not _REAL_ANY:
                p_leaf = max(p_leaf, 0.85)
            take_leaf = rng.random() < p_leaf
        else:
            take_leaf = leaf_ok
        if take_leaf:
            out.append(sampler.terminal(s, rng))
            continue
        prim = choose_primitive(prims, rng)
        out.append(prim)
        stack.extend((a, budget - 1) for a in reversed(prim.args))
    return out


_REAL_ANY = SLOT_CLASSES.get((Type.REAL, "real"))
WRAPPER_WEIGHT = 0.25  # relative odds of a decoder wrapping a decoder (vote, best-of)


def choose_primitive(prims: list, rng: random.Random):
    """One of `prims`; decoders of decoders (whose cost multiplies) are drawn less often."""
    weights = [WRAPPER_WEIGHT if p.ret is DECODER and DECODER in p.args else 1.0
               for p in prims]
    return rng.choices(prims, weights)[0]


def random_individual(rng: random.Random, sampler: ConstantSampler, heights: tuple[int, int],
                      tries: int = 20) -> Individual:
    """Ramped half-and-half: height uniform in `heights`, grow or full at even odds; redrawn
    until within the space's size and height caps (falls back to the baseline decoder,
    `registry.baseline()`)."""
    limits = sampler.space.limits
    for _ in range(tries):
        h = rng.randint(*heights)
        tree = generate(DECODER, h, rng, sampler, full=rng.random() < 0.5)
        ind = Individual(tree)
        if (len(ind) <= limits.max_size and ind.height <= limits.max_height
                and within_caps(to_expr(ind), limits)):
            return ind
    return Individual(to_tree(baseline()))


def init_population(n: int, rng: random.Random, sampler: ConstantSampler, new_id,
                    seeds: Sequence[Definition | Expr] = (), mutate=None,
                    mutant_fraction: float = 0.5, heights: tuple[int, int] = (2, 5)
                    ) -> list[Individual]:
    """Generation 0: the seeds (in order; operator "seed:NAME"), then mutants of random
    seeds (`mutate(ind)` -> (ind,), e.g. the toolbox's "mutate"; up to `mutant_fraction` of
    n; operator "seed-mutant"), then random trees ("random"), n in all. Every seed is kept,
    so more seeds than n make a larger generation 0 (the first selection brings it to n):
    a seed the search never saw could not be varied (the shipped seeds outnumber the
    default population). `new_id()` names each one."""
    pop: list[Individual] = []
    for s in seeds:
        name = s.name if isinstance(s, Definition) else "expr"
        pop.append(individual(s.body if isinstance(s, Definition) else s, id=new_id(),
                              operator=f"seed:{name}"))
    seed_inds = list(pop)
    n_mutants = int(round(n * mutant_fraction)) if seed_inds and mutate is not None else 0
    while len(pop) < min(n, len(seed_inds) + n_mutants):
        parent = seed_inds[rng.randrange(len(seed_inds))]
        (child,) = mutate(Individual(list(parent)))
        child.id, child.parents, child.operator = new_id(), (parent.id,), "seed-mutant"
        pop.append(child)
    while len(pop) < n:
        ind = random_individual(rng, sampler, heights)
        ind.id, ind.operator = new_id(), "random"
        pop.append(ind)
    return pop
