"""Variation operators: every offspring type-checks, stays within the caps, keeps fixed
constants fixed, and is a function of the rng state."""

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine_dsl
from engine_dsl import Definition, Limits, Type
from evolution.bridge import CountConstant, RealConstant, SearchSpace, individual, to_expr, tree_key
from evolution.config import EvolutionConfig
from evolution.population import OPERATOR_NAMES, build_toolbox
from evolution.random_trees import ConstantSampler, random_individual
from evolution.variation import (
    all_node_replacements,
    all_shrinks,
    mut_constant,
    mut_count,
    mut_shrink,
)

EXAMPLES = 300 if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else 60
SPACE = SearchSpace(n_layer=3, n_head=2, vocab_size=40)
LIMITS = Limits(max_size=24, max_height=7)
TOOLBOX = build_toolbox(EvolutionConfig(limits=LIMITS, init_heights=(1, 5)), SPACE)
MUTATIONS = [n for n in OPERATOR_NAMES if n != "mate"]


def _reads_back(ind):
    text = engine_dsl.to_scheme([Definition("p", to_expr(ind))])
    (d,) = engine_dsl.read(text, limits=LIMITS)
    assert d.body == to_expr(ind)


def _pair(seed):
    rng = random.Random(seed)
    sampler = ConstantSampler(SearchSpace(3, 2, 40, LIMITS))
    return rng, random_individual(rng, sampler, (1, 5)), random_individual(rng, sampler, (1, 5))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(MUTATIONS + ["mate"]))
def test_offspring_type_check_and_respect_caps(seed, op):
    """Every offspring of every operator prints to Scheme that the checker accepts (types,
    literal domains, caps) and reads back to the same tree; size and height stay within
    the limits (staticLimit)."""
    rng, a, b = _pair(seed)
    if op == "mate":
        out = TOOLBOX.mate(a, b, rng=rng)
    else:
        out = getattr(TOOLBOX, op)(a, rng=rng)
    for ind in out:
        assert len(ind) <= LIMITS.max_size and ind.height <= LIMITS.max_height
        _reads_back(ind)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(MUTATIONS + ["mate"]))
def test_operators_are_deterministic_given_the_rng(seed, op):
    """The same rng state and inputs give the same offspring."""
    results = []
    for _ in range(2):
        rng, a, b = _pair(seed)
        out = TOOLBOX.mate(a, b, rng=rng) if op == "mate" else getattr(TOOLBOX, op)(a, rng=rng)
        results.append([tree_key(i) for i in out])
    assert results[0] == results[1]


def test_static_limit_restores_the_parent():
    """An offspring over the size cap is replaced by its parent, unchanged."""
    tb = build_toolbox(EvolutionConfig(limits=Limits(max_size=4, max_height=17)), SPACE)
    e = engine_dsl.read_expr("(sample (temperature logits 0.8))", Type.DECODER)
    rng = random.Random(0)
    for _ in range(50):
        parent = individual(e)
        (child,) = tb.mut_insert(individual(e), rng=rng)
        assert len(child) <= 4
        assert tree_key(child) == tree_key(parent)


def test_fixed_constants_never_move():
    """Constant perturbation and node replacement leave (fixed c) literals alone."""
    e = engine_dsl.read_expr("(sample (top-p (temperature logits (fixed 0.7)) 0.9))",
                             Type.DECODER)
    rng = random.Random(0)
    moved = 0
    for _ in range(200):
        ind = individual(e)
        (ind,) = mut_constant(ind, rng, sigma=1.0, mode="all")
        (ind,) = TOOLBOX.mut_node_replacement(ind, rng=rng)
        fixed = [n for n in ind if isinstance(n, RealConstant) and n.fixed]
        assert [n.value for n in fixed] == [0.7]
        moved += any(isinstance(n, RealConstant) and not n.fixed and n.value != 0.9
                     for n in ind)
    assert moved > 150


@pytest.mark.parametrize("text", ["(sample (top-p logits 0.999))", "(greedy (typical logits 1e-6))",
                                  "(sample (temperature logits 50.0))"])
def test_constant_perturbation_stays_in_domain(text):
    """Perturbed real constants stay inside their slot's domain, even from its edges."""
    rng = random.Random(3)
    for _ in range(200):
        (ind,) = mut_constant(individual(engine_dsl.read_expr(text, Type.DECODER)), rng,
                              sigma=3.0)
        _reads_back(ind)


def test_count_mutation_moves_within_range():
    """Count mutation changes a Count and keeps layer indices in 1..n_layer and vote counts
    within max_votes."""
    e = engine_dsl.read_expr("(vote 3 (greedy (top-k (layer 2) 5)))", Type.DECODER)
    rng = random.Random(4)
    sampler = ConstantSampler(SPACE)
    for _ in range(300):
        before = individual(e)
        (after,) = mut_count(individual(e), rng, sampler)
        assert tree_key(after) != tree_key(before)
        counts = [n for n in after if isinstance(n, CountConstant)]
        vote, layer, k = (c.value for c in counts)
        assert 1 <= vote <= Limits().max_votes and 1 <= layer <= SPACE.n_layer
        assert 1 <= k <= SPACE.vocab_size


def test_shrink_hoists_a_fitting_argument():
    """mut_shrink replaces a subtree by one of its arguments of a fitting type, e.g.
    (vote 3 D) by D."""
    e = engine_dsl.read_expr("(vote 3 (greedy logits))", Type.DECODER)
    seen = set()
    rng = random.Random(0)
    for _ in range(30):
        (ind,) = mut_shrink(individual(e), rng)
        seen.add(engine_dsl.expr_to_scheme(to_expr(ind)))
    assert seen == {"(greedy logits)"}


def _texts(trees):
    return {engine_dsl.expr_to_scheme(to_expr(t)) for t in trees}


def test_all_shrinks_lists_every_pruning():
    """all_shrinks is mut_shrink done exhaustively: every node replaced by each argument
    that fits its slot."""
    e = engine_dsl.read_expr("(sample (top-p (temperature logits 0.9) 0.8))", Type.DECODER)
    assert _texts(all_shrinks(individual(e))) == {"(sample (temperature logits 0.9))",
                                                  "(sample (top-p logits 0.8))"}
    rng = random.Random(0)
    for _ in range(30):
        (ind,) = mut_shrink(individual(e), rng)
        assert engine_dsl.expr_to_scheme(to_expr(ind)) in _texts(all_shrinks(individual(e)))


def test_all_node_replacements_swap_same_signature_primitives():
    """Every primitive replaced by each sibling of its signature (greedy <-> sample, the
    truncations among themselves, < <-> >); a real literal keeps its value where the new
    slot's domain holds it (0.8 as a temperature), and the replacement is skipped where it
    does not (0.8 is no repetition penalty)."""
    e = engine_dsl.read_expr("(greedy (top-p logits 0.8))", Type.DECODER)
    siblings = [p for p in engine_dsl.PRIMITIVES.values() if p.name != "top-p"
                and p.returns is Type.LOGITS and p.arg_types == (Type.LOGITS, Type.REAL)]
    recast = {f"(greedy ({p.name} logits 0.8))" for p in siblings
              if p.args[1].domain.contains(0.8)}
    same = {f"(greedy ({p.name} logits 0.8))" for p in siblings
            if p.args[1].domain == engine_dsl.PRIMITIVES["top-p"].args[1].domain}
    assert {"(greedy (min-p logits 0.8))", "(greedy (typical logits 0.8))"} <= same
    assert "(greedy (temperature logits 0.8))" in recast - same
    assert "(greedy (repetition-penalty logits 0.8))" not in recast
    assert _texts(all_node_replacements(individual(e))) == {"(sample (top-p logits 0.8))",
                                                            *recast}
    assert _texts(all_node_replacements(individual(e), recast_literals=False)) == {
        "(sample (top-p logits 0.8))", *same}
    e = engine_dsl.read_expr("(sample (if (< (entropy logits) 1.5) logits (layer 1)))",
                             Type.DECODER)
    out = _texts(all_node_replacements(individual(e)))
    assert "(sample (if (> (entropy logits) 1.5) logits (layer 1)))" in out
    assert "(sample (if (< (max-prob logits) 1.5) logits (layer 1)))" in out


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_exhaustive_neighbours_type_check(seed):
    """Every tree of all_shrinks and all_node_replacements type-checks, reads back, and
    keeps the fixed constants of its parent fixed."""
    rng, a, _ = _pair(seed)
    fixed = sorted(n.value for n in a if isinstance(n, RealConstant) and n.fixed)
    for t in all_shrinks(a) + all_node_replacements(a):
        _reads_back(individual(to_expr(t)))
    for t in all_node_replacements(a):
        assert sorted(n.value for n in t if isinstance(n, RealConstant) and n.fixed) == fixed
