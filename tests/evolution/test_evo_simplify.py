"""The simplifier: each rule fires where it should, and simplification never changes what a
program computes in exact mode (checked on random logits, histories and residual streams)."""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import engine_dsl
from engine_dsl import Apply, Type
from evolution.bridge import TYPE_CLASSES, SearchSpace, to_expr
from evolution.random_trees import ConstantSampler, generate
from evolution.simplify import simplify

SPACE = SearchSpace(n_layer=3, n_head=2, vocab_size=24)
C = 16


def _sources(seed: int, batch: int = 6):
    g = torch.Generator().manual_seed(seed)
    head = torch.randn(C, SPACE.vocab_size, generator=g) * 0.6
    residuals = [torch.randn(batch, C, generator=g) for _ in range(SPACE.n_layer)]
    u = torch.rand(batch, 4, generator=g, dtype=torch.float64)
    return dict(
        logits=residuals[-1] @ head,  # (layer n_layer) is the final logits
        history=(history := torch.randint(0, SPACE.vocab_size, (batch, 7), generator=g)),
        generated=history[:, 4:], uniform=lambda stream: u[:, stream % 4],
        residuals=residuals, lens=lambda r: r @ head, n_layer=SPACE.n_layer,
        n_head=SPACE.n_head,
        gated_forward=lambda gates: residuals[-1] @ head + gates.sum(),
    )


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype == torch.bool or b.dtype == torch.bool:
        return torch.equal(a.bool(), b.bool())
    a, b = a.double(), b.double()
    if not torch.equal(torch.isinf(a), torch.isinf(b)):
        return False
    fin = torch.isfinite(a)
    return torch.allclose(a[fin], b[fin], rtol=1e-5, atol=1e-5)


def _run(e, src):
    return engine_dsl.compile_expr(e)(mode="exact", **src)


def _decoder_logits(e):
    """(greedy L) -> ("greedy", L); (sample L) -> ("sample", L)."""
    assert isinstance(e, Apply) and e.op in ("greedy", "sample")
    return e.op, e.args[0]


RULE_CASES = [
    ("(temperature (temperature logits 0.5) 0.8)", "(temperature logits 0.4)"),
    ("(temperature (top-k logits 5) 1.0)", "(top-k logits 5)"),
    ("(repetition-penalty logits 1.0)", "logits"),
    ("(top-k (temperature logits 2.0) 30)", "(temperature logits 2.0)"),
    ("(top-k (top-k logits 7) 3)", "(top-k logits 3)"),
    ("(min-p (min-p logits 0.1) 0.3)", "(min-p logits 0.3)"),
    ("(layer 3)", "logits"),
    ("(if (< (entropy logits) 1.0) (top-p logits 0.9) (top-p logits 0.9))", "(top-p logits 0.9)"),
    ("(if (not (not (> (max-prob logits) 0.5))) logits (layer 1))",
     "(if (> (max-prob logits) 0.5) logits (layer 1))"),
    ("(if (not (< (margin logits) 0.2)) (layer 1) logits)",
     "(if (< (margin logits) 0.2) logits (layer 1))"),
    ("(if (and #t (< 0.5 0.7)) (layer 2) logits)", "(layer 2)"),
    ("(if (or #f (> 0.5 0.7)) (layer 2) logits)", "logits"),
    ("(if (and (< (entropy logits) 2.0) (< (entropy logits) 2.0)) (layer 1) logits)",
     "(if (< (entropy logits) 2.0) (layer 1) logits)"),
    ("(if (< (max-prob logits) 1.1) logits (layer 1))", "logits"),
    ("(if (> (entropy logits) -0.5) (layer 1) logits)", "(layer 1)"),
    ("(if (< 1.5 (margin logits)) (layer 1) logits)", "logits"),
    ("(if (or (< (margin (top-k logits 2)) 0.2) (< (entropy logits) -0.53)) (layer 1) logits)",
     "(if (< (margin (top-k logits 2)) 0.2) (layer 1) logits)"),
    ("(if (< (entropy logits) 0.0) (layer 1) logits)",  # at a bound: not decided
     "(if (< (entropy logits) 0.0) (layer 1) logits)"),
    ("(if (> (max-prob logits) 1.0) (layer 1) logits)",
     "(if (> (max-prob logits) 1.0) (layer 1) logits)"),
]


@pytest.mark.parametrize("before,after", RULE_CASES)
def test_rule_fires_and_preserves_outputs(before, after):
    """Each rule rewrites its pattern to the expected form, with equal exact outputs."""
    e = engine_dsl.read_expr(before)
    s = simplify(e, SPACE)
    assert engine_dsl.expr_to_scheme(s) == after
    for seed in range(3):
        src = _sources(seed)
        assert _same(_run(e, src), _run(s, src))


def test_greedy_drops_argmax_keeping_transforms():
    """(greedy (top-p (temperature L t) p)) answers like (greedy L): same argmax."""
    e = engine_dsl.read_expr("(greedy (top-p (temperature (top-k (layer 2) 4) 0.7) 0.5))",
                             Type.DECODER)
    s = simplify(e, SPACE)
    assert engine_dsl.expr_to_scheme(s) == "(greedy (layer 2))"
    src = _sources(0)
    assert torch.equal(_run(e.args[0], src).argmax(-1), _run(s.args[0], src).argmax(-1))


def test_fixed_constants_are_not_merged_with_tunable_ones():
    """A (fixed c) temperature is not folded into a tunable one (fixedness is kept)."""
    e = engine_dsl.read_expr("(temperature (temperature logits (fixed 0.5)) 0.8)")
    assert simplify(e, SPACE) == e


def test_simplify_is_idempotent_and_never_grows():
    """simplify(simplify(e)) == simplify(e) and size never increases."""
    rng = random.Random(5)
    sampler = ConstantSampler(SPACE)
    for _ in range(300):
        e = to_expr(generate(TYPE_CLASSES[Type.DECODER], rng.randint(1, 6), rng, sampler))
        s = simplify(e, SPACE)
        assert simplify(s, SPACE) == s
        assert engine_dsl.size(s) <= engine_dsl.size(e)


def test_simplification_preserves_exact_outputs_on_random_programs():
    """Property: for random Logits/Real/Bool programs (biased towards the rules' patterns),
    the exact-mode output before and after simplification is the same on random inputs."""
    rng = random.Random(11)
    sampler = ConstantSampler(SPACE)
    slots = [TYPE_CLASSES[Type.LOGITS]] * 4 + [TYPE_CLASSES[Type.BOOL]]
    changed = 0
    for i in range(250):
        e = to_expr(generate(rng.choice(slots), rng.randint(1, 4), rng, sampler,
                             leaf_prob=0.2))
        if rng.random() < 0.5:  # plant a rule pattern: wrap in a redundant form
            e = _plant(e, rng)
        s = simplify(e, SPACE)
        changed += s != e
        src = _sources(i)
        assert _same(_run(e, src), _run(s, src)), (engine_dsl.expr_to_scheme(e),
                                                    engine_dsl.expr_to_scheme(s))
    assert changed > 50


def _plant(e, rng):
    from engine_dsl import BoolConst, CountConst, RealConst

    if engine_dsl.type_of(e) is Type.BOOL:
        return rng.choice([Apply("not", (Apply("not", (e,)),)), Apply("and", (e, e)),
                           Apply("or", (BoolConst(False), e))])
    return rng.choice([
        Apply("temperature", (Apply("temperature", (e, RealConst(0.7))), RealConst(1.3))),
        Apply("top-k", (Apply("top-k", (e, CountConst(rng.randint(1, 30)))),
                        CountConst(rng.randint(1, 30)))),
        Apply("min-p", (Apply("min-p", (e, RealConst(0.05))), RealConst(0.2))),
        Apply("if", (Apply("<", (Apply("entropy", (e,)), RealConst(1.5))), e, e)),
        Apply("repetition-penalty", (e, RealConst(1.0))),
        Apply("if", (_measure_vs_constant(e, rng), e, Apply("temperature", (e, RealConst(0.5))))),
    ])


def _measure_vs_constant(e, rng):
    """(< m c), (> m c), (< c m) or (> c m): a measure of e against a constant in or near
    its range (the bounds rule fires on some, not on others)."""
    from engine_dsl import RealConst

    m = Apply(rng.choice(["entropy", "max-prob", "margin"]), (e,))
    c = RealConst(rng.choice([-0.5, -1e-5, 0.0, 0.3, 1.0, 1.00001, 1.5, 30.0]))
    return Apply(rng.choice(["<", ">"]), (m, c) if rng.random() < 0.5 else (c, m))


def _decoder_log_probs(e, src):
    while e.op in ("vote", "best-of"):
        e = e.args[1]
    kind, body = _decoder_logits(e)
    out = _run(body, src).double()
    if kind == "greedy":
        return out.argmax(-1)
    return torch.log_softmax(out, dim=-1)


def _same_decoder(a, b, src) -> bool:
    pa, pb = _decoder_log_probs(a, src), _decoder_log_probs(b, src)
    if pa.dtype == torch.long:
        return torch.equal(pa, pb)
    return _same(pa, pb)


MIX_CASES = [
    ("(sample (top-p (temperature (mix logits logits 0.548) 0.97) 0.8))",
     "(sample (top-p (temperature logits 0.97) 0.8))"),
    ("(vote 5 (sample (mix (layer 1) (layer 1) 0.3)))", "(vote 5 (sample (layer 1)))"),
    ("(sample (if (< (entropy (mix logits logits 0.2)) 1.5) (mix (layer 2) (layer 2) 0.9) logits))",
     "(sample (if (< (entropy logits) 1.5) (layer 2) logits))"),
    ("(greedy (contrast (mix logits logits 0.5) (layer 1) 0.4))",
     "(greedy (contrast logits (layer 1) 0.4))"),
]


@pytest.mark.parametrize("before,after", MIX_CASES)
def test_mix_of_equal_arguments_drops_where_a_shift_is_unseen(before, after):
    """(mix A A w) is log_softmax(A): dropped where only a per-row shift of the value is
    ever read; the decoder's per-step distribution is unchanged."""
    e = engine_dsl.read_expr(before, Type.DECODER)
    s = simplify(e, SPACE)
    assert engine_dsl.expr_to_scheme(s) == after
    for seed in range(3):
        assert _same_decoder(e, s, _sources(seed))


@pytest.mark.parametrize("text,kind", [
    ("(mix logits logits 0.5)", Type.LOGITS),  # a Logits value is read exactly
    ("(sample (repetition-penalty (mix logits logits 0.5) 1.3))", Type.DECODER),  # sign matters
    ("(sample (top-p (repetition-penalty (mix logits logits 0.5) 1.3) 0.7))",
     Type.DECODER),
])
def test_mix_of_equal_arguments_kept_where_its_value_is_read(text, kind):
    e = engine_dsl.read_expr(text, kind)
    assert simplify(e, SPACE) == e


def test_simplification_preserves_decoder_distributions_on_random_programs():
    """Property: for random Decoders with (mix A A w) planted anywhere, the per-step
    distribution (sample) or argmax (greedy) is the same before and after simplifying."""
    from engine_dsl import RealConst

    rng = random.Random(23)
    sampler = ConstantSampler(SPACE)
    changed = 0

    def plant(e):
        if isinstance(e, Apply) and e.args and rng.random() < 0.5:
            e = Apply(e.op, tuple(plant(a) for a in e.args))
        if engine_dsl.type_of(e) is Type.LOGITS and rng.random() < 0.4:
            return Apply("mix", (e, e, RealConst(round(rng.random(), 3))))
        return e

    for i in range(200):
        e = plant(to_expr(generate(TYPE_CLASSES[Type.DECODER], rng.randint(1, 5), rng,
                                   sampler, leaf_prob=0.2)))
        s = simplify(e, SPACE)
        changed += s != e
        src = _sources(i)
        assert _same_decoder(e, s, src), (engine_dsl.expr_to_scheme(e),
                                          engine_dsl.expr_to_scheme(s))
    assert changed > 40


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), V=st.integers(1, 40), keep=st.integers(1, 40),
       scale=st.sampled_from([0.0, 1.0, 30.0, 1e4]))
def test_measures_stay_in_their_registry_bounds(seed, V, keep, scale):
    """The law the bounds rule rests on: every measure lies in its `bounds`, up to
    BOUNDS_SLACK, also on flat, peaked and masked (-inf) logits."""
    from engine_dsl.primitives.logic import BOUNDS_SLACK
    from engine_dsl.registry import PRIMITIVES

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, V, generator=g) * scale
    x[:, min(keep, V):] = -torch.inf  # a truncation's mask: at least one token kept
    for p in PRIMITIVES.values():
        if p.bounds is None:
            continue
        lo, hi = p.bounds
        value = engine_dsl.compile_expr(Apply(p.name, (Apply("logits"),)))(
            mode="exact", logits=x)
        assert bool(((value >= lo - BOUNDS_SLACK) & (value <= hi + BOUNDS_SLACK)).all()), \
            (p.name, value)


@pytest.mark.parametrize("text,want", [
    # a hidden-teacher run found the first for a teacher written as the second
    ("(sample (temperature (repetition-penalty logits 1.59) 0.8))",
     "(sample (repetition-penalty (temperature logits 0.8) 1.59))"),
    ("(sample (repetition-penalty (temperature logits 0.8) 1.59))",
     "(sample (repetition-penalty (temperature logits 0.8) 1.59))"),
    ("(sample (top-k (temperature logits 0.5) 7))", "(sample (top-k (temperature logits 0.5) 7))"),
    ("(sample (temperature (top-k logits 7) 0.5))", "(sample (top-k (temperature logits 0.5) 7))"),
    # commuting brings equal transforms together, which then merge
    ("(sample (temperature (top-k (temperature logits 0.5) 7) 0.5))",
     "(sample (top-k (temperature logits 0.25) 7))"),
    ("(sample (top-p (temperature logits 0.5) 0.9))",
     "(sample (top-p (temperature logits 0.5) 0.9))"),
])
def test_commuting_transforms_print_in_one_canonical_order(text, want):
    """Nestings of transforms whose registry entries say they commute are ordered by the
    registry (earlier innermost), so equivalent programs print the same."""
    e = engine_dsl.read_expr(text, Type.DECODER)
    assert engine_dsl.expr_to_scheme(simplify(e, SPACE)) == want
