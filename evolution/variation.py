"""Typed variation operators over `Individual` prefix lists, DEAP style.

Each operator changes its arguments in place and returns them as a tuple (`(ind,)` or
`(ind1, ind2)`), takes its randomness from an explicit `random.Random`, and respects slot
classes (see `bridge`): a node only ever lands in a slot it fits, so every offspring
type-checks. `static_limit` wraps any of them with a size or height cap.
"""

from __future__ import annotations

import copy
import math
import random
from functools import wraps

from engine_dsl.types import Type

from .bridge import (
    REAL_DOMAINS,
    BoolConstant,
    CountConstant,
    RealConstant,
    WeightsConstant,
    fits,
    slot_classes,
)
from .random_trees import (
    LITERAL_SLOTS,
    SLOT_PRIMITIVES,
    ConstantSampler,
    generate,
)

# --- limits ----------------------------------------------------------------------------------


def static_limit(key, max_value):
    """Decorator: an offspring whose `key(ind)` exceeds `max_value` is replaced by a copy of
    the argument in the same position (its parent), as DEAP's `gp.staticLimit` does, but
    without drawing from the global `random` module (so runs stay reproducible)."""

    def decorator(func):
        @wraps(func)
        def wrapper(*args, **kwargs):
            keep = [copy.deepcopy(a) for a in args]
            out = list(func(*args, **kwargs))
            for i, ind in enumerate(out):
                if key(ind) > max_value:
                    out[i] = keep[i] if i < len(keep) else keep[0]
            return tuple(out)

        return wrapper

    return decorator


def tree_height(ind) -> int:
    return ind.height


# --- helpers ---------------------------------------------------------------------------------


def _children(tree, index: int) -> list[int]:
    """Positions of the direct children of node `index`."""
    out, pos = [], index + 1
    for _ in range(tree[index].arity):
        out.append(pos)
        pos = tree.searchSubtree(pos).stop
    return out


def _replace(tree, index: int, subtree: list) -> None:
    tree[tree.searchSubtree(index)] = subtree


# --- crossover -------------------------------------------------------------------------------


def cx_one_point(ind1, ind2, rng: random.Random, leaf_bias: float | None = None):
    """Typed one-point crossover: swap a subtree of ind1 with one of ind2 such that each
    lands in a slot it fits (roots excluded). `leaf_bias`: probability of picking leaves
    rather than internal nodes (Koza's 0.1); None: uniform over nodes."""
    if len(ind1) < 2 or len(ind2) < 2:
        return ind1, ind2
    slots1, slots2 = slot_classes(ind1), slot_classes(ind2)
    order = _pick_order(ind1, rng, leaf_bias)
    want_leaf = None if leaf_bias is None else (ind1[order[0]].arity == 0)
    for i in order:
        js = [j for j in range(1, len(ind2))
              if fits(ind2[j].ret, slots1[i]) and fits(ind1[i].ret, slots2[j])]
        if want_leaf is not None:
            same = [j for j in js if (ind2[j].arity == 0) == want_leaf]
            js = same or js
        if js:
            j = js[rng.randrange(len(js))]
            s1, s2 = ind1.searchSubtree(i), ind2.searchSubtree(j)
            ind1[s1], ind2[s2] = ind2[s2], ind1[s1]
            break
    return ind1, ind2


def _pick_order(ind, rng: random.Random, leaf_bias: float | None) -> list[int]:
    """Crossover points of `ind` (excluding the root) in the order to try them."""
    idx = list(range(1, len(ind)))
    rng.shuffle(idx)
    if leaf_bias is None:
        return idx
    leaves = [i for i in idx if ind[i].arity == 0]
    inner = [i for i in idx if ind[i].arity > 0]
    first, second = (leaves, inner) if rng.random() < leaf_bias else (inner, leaves)
    return (first or second) + (second if first else [])


# --- mutation --------------------------------------------------------------------------------


def mut_uniform(ind, rng: random.Random, sampler: ConstantSampler, height=(0, 2)):
    """Replace a random subtree by a random tree of the same slot class (grow)."""
    index = rng.randrange(len(ind))
    slot = slot_classes(ind)[index]
    _replace(ind, index, generate(slot, rng.randint(*height), rng, sampler))
    return (ind,)


def mut_node_replacement(ind, rng: random.Random, sampler: ConstantSampler):
    """Replace one node by another of the same arity that fits its slot and its children:
    a primitive by a sibling primitive (top-p <-> min-p, greedy <-> sample, < <-> >, ...),
    a literal by a fresh value, #t by #f."""
    slots = slot_classes(ind)
    options = []
    for i, node in enumerate(ind):
        if node.arity == 0:
            movable = not (isinstance(node, RealConstant) and node.fixed)
            if movable and (node.ret in LITERAL_SLOTS or isinstance(node, BoolConstant)):
                options.append((i, None))
            continue
        kids = [ind[c].ret for c in _children(ind, i)]
        alts = [p for p in sampler.space.usable(SLOT_PRIMITIVES[slots[i]])
                if p.name != node.name and p.arity == node.arity
                and all(fits(k, a) for k, a in zip(kids, p.args, strict=True))]
        if alts:
            options.append((i, alts))
    if not options:
        return (ind,)
    i, alts = options[rng.randrange(len(options))]
    if alts is None:
        node = ind[i]
        if isinstance(node, BoolConstant):
            ind[i] = BoolConstant(not node.value, node.ret)
        else:
            ind[i] = sampler.terminal(node.ret, rng)
    else:
        ind[i] = alts[rng.randrange(len(alts))]
    return (ind,)


def mut_insert(ind, rng: random.Random, sampler: ConstantSampler):
    """Insert a new primitive above a random subtree, which becomes one of its arguments; the
    other arguments are fresh leaves (or the least trees where a slot has no leaf)."""
    slots = slot_classes(ind)
    index = rng.randrange(len(ind))
    ret = ind[index].ret
    choices = [(p, k) for p in sampler.space.usable(SLOT_PRIMITIVES[slots[index]])
               for k, a in enumerate(p.args) if fits(ret, a)]
    if not choices:
        return (ind,)
    prim, k = choices[rng.randrange(len(choices))]
    sub = ind[ind.searchSubtree(index)]
    new = [prim]
    for a_i, a in enumerate(prim.args):
        new.extend(sub if a_i == k else generate(a, 0, rng, sampler))
    _replace(ind, index, new)
    return (ind,)


def mut_shrink(ind, rng: random.Random):
    """Replace a random subtree by one of its own arguments that fits the same slot."""
    slots = slot_classes(ind)
    options = [(i, c) for i, node in enumerate(ind) if node.arity
               for c in _children(ind, i) if fits(ind[c].ret, slots[i])]
    if not options:
        return (ind,)
    i, c = options[rng.randrange(len(options))]
    _replace(ind, i, ind[ind.searchSubtree(c)])
    return (ind,)


def mut_constant(ind, rng: random.Random, sigma: float = 0.3, mode: str = "one"):
    """Perturb real constants (and Weights entries) by a Gaussian step of `sigma` in their
    unconstrained parameterisation, so every value stays in its domain; `fixed` constants
    never move. mode "one": one constant; "all": each of them."""
    where = [i for i, n in enumerate(ind)
             if (isinstance(n, RealConstant) and not n.fixed) or isinstance(n, WeightsConstant)]
    if not where:
        return (ind,)
    chosen = where if mode == "all" else [where[rng.randrange(len(where))]]
    for i in chosen:
        node = ind[i]
        if isinstance(node, RealConstant):
            d = node.domain
            ind[i] = RealConstant(d.constrained(d.unconstrained(node.value) + rng.gauss(0, sigma)),
                                  node.ret)
        else:
            ind[i] = WeightsConstant(tuple(v + rng.gauss(0, sigma) for v in node.value), node.ret)
    return (ind,)


def mut_count(ind, rng: random.Random, sampler: ConstantSampler):
    """Move one Count constant (a top-k k, a layer index, a vote n) within its range: a step
    of one, a doubling/halving, or a fresh draw."""
    where = [i for i, n in enumerate(ind) if isinstance(n, CountConstant)]
    if not where:
        return (ind,)
    i = where[rng.randrange(len(where))]
    node = ind[i]
    key = LITERAL_SLOTS[node.ret][1]
    lo, hi = sampler.count_range(key)
    if hi <= lo:
        return (ind,)
    r = rng.random()
    if r < 0.5:
        value = node.value + rng.choice((-1, 1))
    elif r < 0.8:
        value = node.value * 2 if rng.random() < 0.5 else math.ceil(node.value / 2)
    else:
        value = sampler.count(key, rng)
    value = min(max(value, lo), hi)
    if value == node.value:
        value = node.value + 1 if node.value < hi else node.value - 1
    ind[i] = CountConstant(value, node.ret)
    return (ind,)


# --- exhaustive neighbourhoods (local search) --------------------------------------------------


def _literal_fits(node, slot) -> bool:
    """May literal `node` stand in `slot`, either as it is or re-classed (a Real whose value
    lies in the slot's domain, e.g. a top-p mass 0.8 as a temperature)?"""
    if fits(node.ret, slot):
        return True
    if isinstance(node, RealConstant) and slot in LITERAL_SLOTS:
        t, key = LITERAL_SLOTS[slot]
        return t is Type.REAL and REAL_DOMAINS[key].contains(node.value)
    return False


def all_node_replacements(ind, recast_literals: bool = True) -> list[list]:
    """Every tree one primitive replacement makes from `ind` (the primitive moves of
    `mut_node_replacement`, done exhaustively, in prefix order): a primitive by another of
    the same arity that fits its slot and its children (sample <-> greedy, top-p <-> min-p,
    entropy <-> max-prob, < <-> >, ...). Literals are not redrawn (tuning moves them).
    recast_literals: a Real literal child may also take a new slot whose domain holds its
    value (top-p 0.8 -> temperature 0.8). Returns plain node lists."""
    slots = slot_classes(ind)
    out = []
    for i, node in enumerate(ind):
        if not node.arity:
            continue
        at = _children(ind, i)
        kids = [ind[c] for c in at]
        for p in SLOT_PRIMITIVES[slots[i]]:
            if p.name == node.name or p.arity != node.arity:
                continue
            ok = all(fits(k.ret, a) or (recast_literals and k.arity == 0 and _literal_fits(k, a))
                     for k, a in zip(kids, p.args, strict=True))
            if not ok:
                continue
            new = list(ind)
            new[i] = p
            for c, k, a in zip(at, kids, p.args, strict=True):
                if not fits(k.ret, a):  # a recast literal: same value, the new slot's class
                    new[c] = RealConstant(k.value, a, k.fixed)
            out.append(new)
    return out


def all_shrinks(ind) -> list[list]:
    """Every tree one shrink makes from `ind` (`mut_shrink` done exhaustively, in prefix
    order): a node replaced by one of its own arguments that fits the same slot."""
    slots = slot_classes(ind)
    out = []
    for i, node in enumerate(ind):
        if not node.arity:
            continue
        for c in _children(ind, i):
            if fits(ind[c].ret, slots[i]):
                new = list(ind)
                new[ind.searchSubtree(i)] = ind[ind.searchSubtree(c)]
                out.append(new)
    return out
