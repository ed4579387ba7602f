"""Constant tuning: teacher-forced loss under the relaxed program, known optima recovered,
constants written back (Lamarckian) in one call."""

import pytest
import torch

import engine_dsl
from engine_dsl import Definition, read_expr
from engine_dsl.primitives.truncations import top_p_exact
from engine_dsl.semantics import Context, Sources
from engine_dsl.tuning import TuneBatch, tune


def synthetic(N=4000, V=32, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, V, generator=g) * scale, g


def draw(logits, g):
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=g).squeeze(1)


def test_temperature_lands_on_the_data_temperature():
    """Targets ~ softmax(L / 0.6): temperature tuned from 1.0 lands at 0.6 +- 0.03."""
    L, g = synthetic()
    t = draw(L / 0.6, g)
    r = tune(read_expr("(temperature logits 1.0)"), TuneBatch(logits=L, targets=t), steps=150,
             lr=0.05)
    assert r.program.args[1].value == pytest.approx(0.6, abs=0.03)
    assert r.losses[-1] < r.losses[0]
    assert len(r.losses) == 151


@pytest.mark.parametrize("start", [0.5, 0.95])
def test_top_p_lands_on_the_data_cut(start):
    """Targets drawn from top-p(L, 0.8): the tuned p lands within 0.05 of 0.8."""
    L, g = synthetic(seed=1)
    t = draw(top_p_exact(Context(Sources(L)), L, 0.8), g)
    r = tune(read_expr(f"(top-p logits {start})"), TuneBatch(logits=L, targets=t), steps=150,
             lr=0.05, sharpness=100.0)
    assert r.program.args[1].value == pytest.approx(0.8, abs=0.05)


def test_decoder_definitions_are_tuned_through_their_logits_expression():
    L, g = synthetic(N=2000, seed=2)
    t = draw(L / 0.5, g)
    d = engine_dsl.read("(define d (vote 3 (sample (temperature logits (fixed 0.9)))))\n"
                        "(define e (best-of 2 (sample (top-k (temperature logits 1.0) 30))))")
    fixed = tune(d[0], TuneBatch(logits=L, targets=t), steps=5)
    assert fixed.program == d[0]  # a fixed constant does not move
    assert len(fixed.losses) == 1
    r = tune(d[1], TuneBatch(logits=L, targets=t), steps=80, lr=0.05)
    assert isinstance(r.program, Definition) and r.program.name == "e"
    temp = r.program.body.args[1].args[0].args[0].args[1].value
    assert type(temp) is float and temp == pytest.approx(0.5, abs=0.06)
    # the written-back program prints and reads back unchanged
    again = engine_dsl.read(engine_dsl.to_scheme((r.program,)))[0]
    assert again.body == r.program.body


def test_weights_of_gated_heads_are_tuned_through_the_model_callable():
    """d loss / d g flows through a (stand-in) gated forward pass."""
    L, g = synthetic(N=500, V=10, seed=3)
    bias = torch.randn(2, 2, 10, generator=g)

    def gated(gates):  # (n_layer, n_head) -> logits: each head pushes its own direction
        return L + torch.einsum("lh,lhv->v", gates, bias)

    target_gates = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = draw(gated(target_gates), g)
    batch = TuneBatch(logits=L, targets=t, gated_forward=gated, n_layer=2, n_head=2)
    r = tune(read_expr("(gated #(0.0 0.0 0.0 0.0))"), batch, steps=60, lr=0.1)
    assert r.losses[-1] < r.losses[0]
    w = r.program.args[0].values
    assert w[0] > 0 and w[3] > 0 and w[1] < 0 and w[2] < 0


def test_ignore_index_rows_and_module_input():
    L, g = synthetic(N=300, seed=4)
    t = draw(L, g)
    t[::2] = -100
    f = engine_dsl.logits_fn("(temperature logits 2.0)")
    r = tune(f, TuneBatch(logits=L, targets=t), steps=40, lr=0.05)
    assert r.program is f and f.values()[0] < 2.0
    with pytest.raises(ValueError):
        tune(f, TuneBatch(logits=L, targets=t), steps=10, max_steps=5)
