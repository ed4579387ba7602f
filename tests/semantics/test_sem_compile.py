"""Compilation: parameters are the trainable constants in prefix order, write-back is one call,
sources are checked, and each non-truncation primitive means what DESIGN §2 says."""

import math

import pytest
import torch

import engine_dsl
from engine_dsl import DslError, read_expr
from engine_dsl.compile import compile_expr, to_domain, to_unconstrained, write_back
from engine_dsl.nodes import Apply, CountConst, RealConst, Span, WeightsConst
from engine_dsl.semantics import Sources
from engine_dsl.types import PENALTY, POSITIVE, PROBABILITY, UNIT


def test_parameters_are_the_tunable_constants_in_prefix_order():
    f = engine_dsl.logits_fn("(mix (temperature logits 0.5) (top-p logits (fixed 0.9)) 0.3)")
    assert len(list(f.parameters())) == 2
    assert f.values() == [0.5, 0.3]
    assert [float(b) for b in f.buffers()] == [0.9]  # (fixed c) is a buffer


@pytest.mark.parametrize("domain,value", [(POSITIVE, 0.8), (PROBABILITY, 0.9), (UNIT, 0.0),
                                          (UNIT, 1.0), (PENALTY, 1.0), (PENALTY, 3.5),
                                          (POSITIVE, 1e-9), (POSITIVE, 500.0)])
def test_unconstrained_parameters_are_finite_and_map_back(domain, value):
    raw = to_unconstrained(value, domain)
    assert math.isfinite(raw)
    back = float(to_domain(torch.tensor(raw, dtype=torch.float64), domain))
    assert back == pytest.approx(value, abs=2e-6, rel=1e-12)


def test_closed_domain_ends_evaluate_exactly():
    """mix weight 0 / 1 and penalty 1 give finite parameters and exact literal behaviour."""
    x = torch.randn(3, 7)
    y = torch.randn(3, 7)
    f0 = engine_dsl.logits_fn("(mix logits (temperature logits 2.0) 0.0)")
    f1 = engine_dsl.logits_fn("(mix logits (temperature logits 2.0) 1.0)")
    assert all(math.isfinite(float(p.detach())) for p in f0.parameters())
    assert torch.allclose(f0(x), torch.log_softmax(x / 2.0, -1))
    assert torch.allclose(f1(x), torch.log_softmax(x, -1))
    pen = engine_dsl.logits_fn("(repetition-penalty logits 1.0)")
    assert torch.equal(pen(y, history=torch.tensor([[0, 1]] * 3)), y)


def test_write_back_is_one_call_and_prints_plain_floats():
    expr = read_expr("(top-p (temperature logits 0.8) 0.9)")
    f = compile_expr(expr)
    assert f.to_expr() == expr  # untouched: the literals themselves
    with torch.no_grad():
        f.constants[0].copy_(torch.tensor(to_unconstrained(0.65, POSITIVE), dtype=torch.float64))
    tuned = f.to_expr()
    t = tuned.args[0].args[1].value
    assert type(t) is float and t == pytest.approx(0.65, abs=1e-12)
    assert tuned.args[1].value == 0.9
    assert read_expr(engine_dsl.expr_to_scheme(tuned)) == tuned
    # the exact module now uses the tuned value
    x = torch.randn(2, 9)
    assert torch.allclose(f(x), engine_dsl.logits_fn(engine_dsl.expr_to_scheme(tuned))(x))


def test_write_back_into_a_decoder_and_weights():
    prog = read_expr("(vote 3 (sample (temperature (layer-mix #(0.0 1.0)) 0.7)))",
                     engine_dsl.Type.DECODER)
    out = write_back(prog, [(0.5, -0.5), 1.25])
    assert out.args[1].args[0].args[0].args[0] == WeightsConst((0.5, -0.5))
    assert out.args[1].args[0].args[1].value == 1.25
    with pytest.raises(ValueError):
        write_back(prog, [1.0])


def test_logits_fn_reads_scheme_and_reports_errors():
    with pytest.raises(DslError):
        engine_dsl.logits_fn("(top-q logits 0.9)")
    with pytest.raises(ValueError):
        engine_dsl.logits_fn("logits")(torch.zeros(1, 3), mode="fuzzy")


def test_missing_sources_are_clear_errors():
    f = engine_dsl.logits_fn("(repetition-penalty logits 1.2)")
    with pytest.raises(DslError, match="history"):
        f(torch.zeros(2, 5))
    with pytest.raises(DslError, match="residuals"):
        engine_dsl.logits_fn("(layer 1)")(torch.zeros(2, 5))
    with pytest.raises(DslError, match="gated"):
        engine_dsl.logits_fn("(gated #(0.0 0.0))")(torch.zeros(2, 5))


def lens_sources(B=3, C=4, V=6, L=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(C, V, generator=g)
    res = [torch.randn(B, C, generator=g) for _ in range(L)]
    return Sources(logits=res[-1] @ W, residuals=res, lens=lambda h: h @ W), W


def test_layer_and_layer_mix_read_the_residual_streams():
    src, W = lens_sources()
    assert torch.allclose(engine_dsl.logits_fn("(layer 1)")(sources=src), src.residuals[0] @ W)
    assert torch.allclose(engine_dsl.logits_fn("(layer 2)")(sources=src), src.logits)
    mixed = engine_dsl.logits_fn("(layer-mix #(0.0 1.0))")(sources=src)
    a = torch.softmax(torch.tensor([0.0, 1.0]), 0)
    assert torch.allclose(mixed, (a[0] * src.residuals[0] + a[1] * src.residuals[1]) @ W,
                          atol=1e-6)


def test_layer_out_of_range_and_wrong_weight_counts_name_the_span():
    src, _ = lens_sources()
    span = Span("p.scm", 3, 9)
    bad = compile_expr(Apply("layer", (CountConst(5),), span=span))
    with pytest.raises(DslError) as err:
        bad(sources=src)
    assert "p.scm:3:9" in str(err.value) and "2 blocks" in str(err.value)
    mix = compile_expr(Apply("layer-mix", (WeightsConst((0.0, 0.0, 0.0)),), span=span))
    with pytest.raises(DslError, match="p.scm:3:9"):
        mix(sources=src)
    gated = compile_expr(Apply("gated", (WeightsConst((0.0,) * 3),), span=span))
    with pytest.raises(DslError, match="2 x 2"):
        gated(sources=Sources(logits=src.logits, gated_forward=lambda g: src.logits, n_layer=2,
                              n_head=2))


def test_gated_calls_the_model_with_sigmoid_gates():
    seen = []
    base = torch.randn(2, 5)

    def forward(gates):
        seen.append(gates)
        return base * gates.sum()

    f = engine_dsl.logits_fn("(gated #(0.0 0.0 10.0 -10.0))")
    out = f(sources=Sources(logits=base, gated_forward=forward, n_layer=2, n_head=2))
    assert seen[0].shape == (2, 2)
    assert torch.allclose(seen[0], torch.sigmoid(torch.tensor([[0.0, 0.0], [10.0, -10.0]])))
    assert torch.allclose(out, base * seen[0].sum())
    pre = torch.randn(2, 5)
    assert torch.equal(f(base, gated_forward=[pre]), pre)  # precomputed gated logits


def test_if_mix_contrast_and_measures():
    x = torch.tensor([[2.0, 1.0, float("-inf")], [0.0, 0.0, 0.0]])
    f = engine_dsl.logits_fn("(if (< (entropy logits) 0.9) logits (temperature logits 2.0))")
    out = f(x)
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], x[1] / 2.0)
    ent = engine_dsl.compile_expr(read_expr("(entropy logits)", engine_dsl.Type.REAL))(x)
    assert torch.allclose(ent, torch.distributions.Categorical(logits=x).entropy())
    mp = engine_dsl.compile_expr(read_expr("(max-prob logits)", engine_dsl.Type.REAL))(x)
    assert torch.allclose(mp, torch.softmax(x, -1).amax(-1))
    mg = engine_dsl.compile_expr(read_expr("(margin logits)", engine_dsl.Type.REAL))(x)
    p = torch.softmax(x, -1).sort(-1, descending=True).values
    assert torch.allclose(mg, p[:, 0] - p[:, 1])
    mix = engine_dsl.logits_fn("(mix logits (temperature logits 0.5) 0.25)")(x)
    want = 0.25 * torch.log_softmax(x, -1) + 0.75 * torch.log_softmax(x / 0.5, -1)
    assert torch.equal(torch.isinf(mix), torch.isinf(want))
    assert torch.allclose(mix[torch.isfinite(mix)], want[torch.isfinite(want)])
    con = engine_dsl.logits_fn("(contrast logits (top-k logits 1) 0.5)")(x)
    assert torch.isinf(con[0, 2]) and torch.isfinite(con[0, :2]).all()
    assert torch.isfinite(con[1]).all()  # B's exclusions are floored, not +inf


def test_mix_of_disjoint_kept_sets_keeps_the_first_argument():
    x = torch.tensor([[3.0, 2.9, -1.0]])
    f = engine_dsl.logits_fn("(mix (top-k logits 1) (top-k (repetition-penalty logits 2.0) 1) 0.5)")
    y = f(x, history=torch.tensor([[0]]))  # A keeps token 0 only, B token 1 only
    assert torch.isfinite(y).tolist() == [[True, False, False]]


def test_boolean_constants_and_logic():
    x = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    f = engine_dsl.logits_fn("(if (and #t (not (or #f (> (max-prob logits) 0.9)))) logits "
                             "(top-k logits 1))")
    out = f(x)
    assert torch.equal(out[0], x[0])  # max-prob .73: condition holds
    assert torch.isinf(out[1, 0]) and out[1, 1] == 3.0
    r = f(x, mode="relaxed")
    assert torch.isfinite(r).all()


def test_real_valued_expression_arguments_are_clamped_into_their_domain():
    x = torch.tensor([[5.0, 0.0, 0.0]])
    f = engine_dsl.logits_fn("(temperature logits (margin (top-k logits 1)))")  # margin = 1
    assert torch.allclose(f(x), x)
    g = engine_dsl.logits_fn("(temperature logits (entropy (top-k logits 1)))")  # entropy 0
    assert torch.isfinite(g(x)).all()
    h = engine_dsl.logits_fn("(top-p logits (max-prob (top-k logits 1)))")  # p = 1 -> 1-eps
    assert torch.isfinite(h(x)).sum() >= 1


def test_hand_built_asts_compile():
    e = Apply("temperature", (Apply("logits"), RealConst(0.5)))
    x = torch.randn(2, 4)
    assert torch.equal(compile_expr(e)(x), x / 0.5)
