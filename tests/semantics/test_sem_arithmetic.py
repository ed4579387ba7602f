"""Arithmetic on Reals (+ - * / min max) and the rule that maps a computed Real into the
domain of the slot it stands in (engine_dsl/primitives/arithmetic.py)."""

import math
import operator
import random
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import engine_dsl
from engine_dsl import Type
from engine_dsl.compile import compile_expr

MAX = sys.float_info.max
FLOATS = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([0.0, -0.0, 1e-13, -1e-12, 1e-11,
                                                          MAX, -MAX, 1e300, 5e-324]))


def value(text: str, x=None, mode="exact", **kw):
    """The per-row value of a Real expression."""
    x = torch.zeros(2, 4) if x is None else x
    return compile_expr(engine_dsl.read_expr(text, Type.REAL))(x, mode=mode, **kw)


def saturate(v: float) -> float:
    return min(max(v, -MAX), MAX)


def protected(a, b):
    return a / b if abs(b) > 1e-12 else a


OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": protected,
       "min": min, "max": max}


@settings(max_examples=200)
@given(op=st.sampled_from(sorted(OPS)), a=FLOATS, b=FLOATS)
def test_literal_arithmetic_is_python_arithmetic_saturated(op, a, b):
    """Literals combine as Python floats do, saturated at the largest finite float: never
    inf, never NaN; the same on computed operands (float64 tensors) and in relaxed mode."""
    want = saturate(OPS[op](a, b))
    got = value(f"({op} {a!r} {b!r})")
    assert got.tolist() == [want, want]
    f = compile_expr(engine_dsl.read_expr(f"({op} (max-prob logits) {b!r})", Type.REAL))
    x = torch.tensor([[0.0, -1e9], [0.0, 0.0]])  # max-prob: 1.0 and 0.5
    want_rows = [saturate(OPS[op](m, b)) for m in (1.0, 0.5)]
    assert f(x).tolist() == want_rows
    assert torch.isfinite(value(f"({op} {a!r} {b!r})", mode="relaxed")).all()


def test_protected_division():
    assert value("(/ 3.0 0.0)").tolist() == [3.0, 3.0]
    assert value("(/ 3.0 1e-12)").tolist() == [3.0, 3.0]
    assert value("(/ 3.0 -2e-12)").tolist() == [-1.5e12, -1.5e12]
    assert value("(/ 1.0 4.0)").tolist() == [0.25, 0.25]
    r = value("(/ 2.0 (entropy logits))", torch.tensor([[0.0, -1e9], [0.0, 0.0]]))
    assert r.tolist() == pytest.approx([2.0, 2.0 / math.log(2.0)])  # entropy 0 -> a


def test_adaptive_temperature_from_the_issue():
    """(temperature logits (* 0.5 (entropy logits))) divides each row by half its entropy."""
    x = torch.randn(4, 9, generator=torch.Generator().manual_seed(0))
    got = engine_dsl.logits_fn("(temperature logits (* 0.5 (entropy logits)))")(x)
    ent = -(x.log_softmax(-1).exp() * x.log_softmax(-1)).sum(-1)
    torch.testing.assert_close(got, x / (0.5 * ent.double())[:, None].float())


@pytest.mark.parametrize("text,same", [
    ("(temperature logits (- 0.5 1.0))", "(temperature logits 1e-6)"),
    ("(top-p logits (+ 0.5 0.7))", "(top-p logits 0.999999)"),
    ("(top-p logits (* -1.0 (max-prob logits)))", "(top-p logits 1e-6)"),
    ("(repetition-penalty logits (min 0.5 3.0))", "(repetition-penalty logits 1.0)"),
    ("(mix logits (layer 1) (max 2.0 0.0))", "(mix logits (layer 1) 1.0)"),
])
def test_a_computed_real_is_clamped_into_its_slot_in_exact_mode(text, same):
    """Outside the domain: the nearest value inside (open ends by 1e-6)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 12, generator=g)
    src = engine_dsl.semantics.Sources(logits=x, history=torch.randint(0, 12, (3, 5), generator=g),
                                       residuals=[torch.randn(3, 4, generator=g)],
                                       lens=lambda h: h @ torch.ones(4, 12))
    assert torch.equal(engine_dsl.logits_fn(text)(sources=src),
                       engine_dsl.logits_fn(same)(sources=src))


@pytest.mark.parametrize("domain", ["positive", "probability", "unit", "penalty"])
@given(v=st.floats(-1e6, 1e6), s=st.sampled_from([1.0, 30.0, 1e4]))
def test_the_smooth_clamp_is_inside_increasing_and_tends_to_the_clamp(domain, v, s):
    from engine_dsl import types
    from engine_dsl.semantics import clamp_to_domain

    d = {"positive": types.POSITIVE, "probability": types.PROBABILITY, "unit": types.UNIT,
         "penalty": types.PENALTY}[domain]
    t = torch.tensor([v, v + 1e-3], dtype=torch.float64, requires_grad=True)
    out = clamp_to_domain(t, d, s)
    assert all(d.contains(o) or o in (d.lo, d.hi) for o in out.tolist())
    assert out[0] <= out[1] + 1e-12  # increasing (up to rounding)
    out.sum().backward()
    assert torch.isfinite(t.grad).all() and (t.grad >= 0).all()
    hard = d.clamp(v)
    assert abs(float(clamp_to_domain(t[:1].detach(), d, 1e6)) - hard) <= 1e-5 * max(1, abs(v))


def test_relaxed_gradients_reach_constants_outside_the_domain():
    """(- 0.5 1.0) as a temperature is -0.5 (clamped to 1e-6 when exact); the relaxed smooth
    clamp still gives both constants a finite, non-zero gradient."""
    x = torch.randn(4, 9, generator=torch.Generator().manual_seed(2))
    for text in ("(temperature logits (- 0.5 1.0))", "(top-p logits (+ 0.5 0.7))",
                 "(top-p logits (- (max-prob logits) 2.0))"):
        f = engine_dsl.logits_fn(text)
        f(x, mode="relaxed").log_softmax(-1)[:, 0].sum().backward()
        for p in f.parameters():
            assert torch.isfinite(p.grad) and p.grad != 0, text


def test_relaxed_min_and_max_are_smooth_and_tend_to_exact():
    for op, want in (("min", 0.6), ("max", 1.4)):
        vals = [value(f"({op} 0.6 1.4)", mode="relaxed", sharpness=s).item()
                for s in (1.0, 30.0, 1e4)]  # a relaxed constant expression is 0-dim
        assert abs(vals[-1] - want) < 1e-9 and abs(vals[0] - want) > 1e-3
        f = compile_expr(engine_dsl.read_expr(f"({op} 0.6 1.4)", Type.REAL))
        f(torch.zeros(1, 3), mode="relaxed", sharpness=10.0).sum().backward()
        assert all(p.grad != 0 for p in f.parameters())


def test_arithmetic_reads_checks_and_prints():
    text = "(define adapt (sample (top-p (temperature logits (* 0.5 (entropy logits))) " \
           "(min 0.95 (+ 0.5 (max-prob logits))))))"
    (d,) = engine_dsl.read(text, "a.scm")
    assert " ".join(engine_dsl.to_scheme([d]).split()) == text
    assert engine_dsl.read(engine_dsl.to_hy([d]), "a.hy")[0].body == d.body
    want = r"a\.scm:1:32: error: expected Logits, found \(\+ \.\.\.\) of type Real"
    with pytest.raises(engine_dsl.DslError, match=want):
        engine_dsl.read("(define b (sample (temperature (+ logits 1.0) 0.5)))", "a.scm")


def test_simplifier_drops_neutral_operands_of_computed_reals_only():
    from evolution.simplify import simplify

    def s(text):
        return engine_dsl.expr_to_scheme(simplify(engine_dsl.read_expr(text, Type.REAL)))

    assert s("(+ (entropy logits) 0.0)") == "(entropy logits)"
    assert s("(+ 0.0 (entropy logits))") == "(entropy logits)"
    assert s("(* 1.0 (max-prob logits))") == "(max-prob logits)"
    assert s("(/ (margin logits) 1.0)") == "(margin logits)"
    assert s("(- (margin logits) 0.0)") == "(margin logits)"
    assert s("(- 0.0 (margin logits))") == "(- 0.0 (margin logits))"
    assert s("(min (entropy logits) (entropy logits))") == "(entropy logits)"
    assert s("(+ -2.0 0.0)") == "(+ -2.0 0.0)"  # a literal could leave its slot's domain


def test_random_programs_grow_and_mutate_arithmetic_in_every_real_slot():
    """The DEAP bridge: an arithmetic node returns the plain Real, which fits every Real slot
    (a temperature, a probability, a comparison)."""
    from evolution.bridge import SearchSpace, individual, to_expr
    from evolution.random_trees import ConstantSampler, random_individual
    from evolution.variation import mut_node_replacement

    rng = random.Random(0)
    sampler = ConstantSampler(SearchSpace(n_layer=2, n_head=2, vocab_size=40))
    parents = set()
    for _ in range(400):
        e = to_expr(random_individual(rng, sampler, (2, 5)))
        engine_dsl.read(engine_dsl.to_scheme([engine_dsl.Definition("p", e)]), "p.scm")
        for n in engine_dsl.walk(e):
            if isinstance(n, engine_dsl.Apply):
                parents |= {n.op for a in n.args if isinstance(a, engine_dsl.Apply)
                            and a.op in ("+", "-", "*", "/", "min", "max")}
    assert {"temperature", "<"} <= parents, parents
    seen = set()
    for _ in range(300):
        (m,) = mut_node_replacement(individual(engine_dsl.read_expr(
            "(sample (temperature logits (+ 0.5 (entropy logits))))", Type.DECODER)), rng,
            sampler)
        seen |= {n.op for n in engine_dsl.walk(to_expr(m)) if isinstance(n, engine_dsl.Apply)}
    assert {"-", "*", "/", "min", "max"} <= seen, seen
