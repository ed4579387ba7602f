"""The DEAP bridge: the primitive set mirrors the registry, trees round-trip, generation
never fails, individuals pickle."""

import os
import pickle
import random

from deap import gp
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import expr

import engine_dsl
from engine_dsl import PRIMITIVES, Definition, Type
from evolution.bridge import (
    PSET,
    TYPE_CLASSES,
    Individual,
    RealConstant,
    SearchSpace,
    individual,
    to_definition,
    to_expr,
    to_tree,
    tree_key,
)
from evolution.random_trees import (
    DECODER,
    MIN_HEIGHT,
    ConstantSampler,
    generate,
    random_individual,
)

EXAMPLES = 500 if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else 100


def test_primitive_set_holds_every_registry_primitive():
    """Every registry primitive is in the primitive set under its own name, with its arity,
    and returns the class of its registry type."""
    for name, prim in PRIMITIVES.items():
        node = PSET.mapping[name]
        assert node.arity == len(prim.args)
        assert node.ret is TYPE_CLASSES[prim.returns]


def test_every_slot_can_be_completed_at_its_minimum_height():
    """Every slot class has a leaf or a primitive that completes it: only Decoder needs
    height 1, everything else has a leaf."""
    assert MIN_HEIGHT[DECODER] == 1
    assert all(h == 0 for s, h in MIN_HEIGHT.items() if s is not DECODER)


@settings(max_examples=EXAMPLES, deadline=None)
@given(expr(Type.DECODER, 4))
def test_ast_tree_round_trip(e):
    """to_expr(to_tree(e)) == e for every well-typed Decoder expression, constants included
    (fixed ones stay fixed)."""
    tree = to_tree(e)
    assert to_expr(tree) == e
    assert len(tree) == engine_dsl.size(e)
    assert Individual(tree).height == engine_dsl.height(e)


def test_constants_are_terminals_carrying_their_value():
    """A literal becomes a terminal whose value and fixedness survive, and printing the tree
    with DEAP shows Scheme literals."""
    e = engine_dsl.read_expr("(sample (temperature logits (fixed 0.7)))", Type.DECODER)
    tree = to_tree(e)
    const = tree[-1]
    assert isinstance(const, RealConstant) and isinstance(const, gp.Terminal)
    assert const.value == 0.7 and const.fixed
    assert str(Individual(tree)) == "sample(temperature(logits, (fixed 0.7)))"


def test_random_generation_never_fails():
    """Thousands of draws over every slot class and height 0..8, grow and full: no error,
    each tree stands in its slot, within the requested height (or the slot's minimum)."""
    rng = random.Random(1)
    sampler = ConstantSampler(SearchSpace())
    for _ in range(3000):
        slot = rng.choice(list(MIN_HEIGHT))
        h = rng.randint(0, 8)
        tree = Individual(generate(slot, h, rng, sampler, full=rng.random() < 0.5))
        assert issubclass(tree[0].ret, slot)
        assert tree.height <= max(h, MIN_HEIGHT[slot])


def test_random_individuals_read_back_through_the_checker():
    """Random individuals print to Scheme that `engine_dsl.read` accepts and reads back to
    the same tree (so literals respect their slot domains and caps)."""
    rng = random.Random(2)
    sampler = ConstantSampler(SearchSpace(n_layer=3, n_head=2, vocab_size=50))
    for _ in range(300):
        ind = random_individual(rng, sampler, (1, 6))
        text = engine_dsl.to_scheme([Definition("p", to_expr(ind))])
        (d,) = engine_dsl.read(text)
        assert tree_key(to_tree(d.body)) == tree_key(ind)


@given(st.integers(0, 2**31))
@settings(max_examples=20, deadline=None)
def test_individuals_pickle(seed):
    """Individuals (with fitness and provenance) survive pickling, as worker processes
    need."""
    rng = random.Random(seed)
    ind = random_individual(rng, ConstantSampler(SearchSpace()), (1, 5))
    ind.id, ind.parents, ind.operator, ind.generation = "g1-2", ("g0-1",), "mut-insert", 1
    ind.fitness.values = (0.5, 3.0, float(len(ind)))
    back = pickle.loads(pickle.dumps(ind))
    assert type(back) is Individual and tree_key(back) == tree_key(ind)
    assert (back.id, back.parents, back.operator, back.generation) == \
        ("g1-2", ("g0-1",), "mut-insert", 1)
    assert back.fitness.values == ind.fitness.values


def test_definition_carries_provenance_comments():
    """to_definition names the program by its id and writes provenance as comments that
    the reader keeps."""
    ind = individual(engine_dsl.read_expr("(greedy logits)", Type.DECODER), id="g3-7",
                     parents=("g2-1", "g2-5"), operator="cx-one-point", generation=3)
    d = to_definition(ind, {"score": 0.25})
    (back,) = engine_dsl.read(engine_dsl.to_scheme([d]))
    assert back.name == "g3-7" and back.body == to_expr(ind)
    assert ";; parents: g2-1 g2-5" in back.comments and ";; score: 0.25" in back.comments
