"""Gradient tuning as evolution runs it (`LikelihoodTuner.run` and `engine_dsl.tune`'s
per-step callback, which the tuning benchmark reads its curves through)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import engine_dsl
from engine_dsl import Type
from engine_dsl.tuning import TuneBatch, tune
from evolution.evaluation import CachedRows, LikelihoodEvaluator
from evolution.tuner import LikelihoodTuner


def _rows(temperature=0.5, n=1000, V=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, V, generator=g) * 2
    targets = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=g)[:, 0]
    return CachedRows(logits, (), torch.full((n, 1), -1), targets, None, None, 1, 1)


def test_tune_calls_back_after_every_step_with_the_current_constants():
    rows = _rows()
    seen = []

    def record(step, module):
        seen.append((step, module.to_expr()))

    r = tune(engine_dsl.read_expr("(temperature logits 1.0)"),
             TuneBatch(logits=rows.logits, targets=rows.targets), steps=5, lr=0.1,
             callback=record)
    assert [s for s, _ in seen] == [1, 2, 3, 4, 5]
    assert seen[-1][1] == r.program  # the last callback sees the written-back constants
    temps = [e.args[1].value for _, e in seen]
    assert temps == sorted(temps, reverse=True) and temps[0] < 1.0  # moving down to 0.5


def test_tuner_run_returns_the_result_and_call_the_program():
    rows = _rows()
    tuner = LikelihoodTuner(rows, steps=40, lr=0.1, batch=None)
    d = engine_dsl.read_expr("(sample (temperature logits 1.0))", Type.DECODER)
    losses = []
    ev = LikelihoodEvaluator(rows, smoothing=0.0)
    result = tuner.run(d, callback=lambda step, m: losses.append(
        -ev.log_likelihood(engine_dsl.Apply("sample", (m.to_expr(),)))))
    assert len(result.losses) == 41 and len(losses) == 40
    assert losses[-1] < losses[0]
    assert result.program == tuner(d)  # same batch, same steps: the same tuned program
    (t,) = engine_dsl.tunable_constants(result.program)
    assert t.value == pytest.approx(0.5, rel=0.1)
    assert tuner.evaluations == 82


def test_tuner_run_is_none_when_nothing_can_move():
    rows = _rows(n=50)
    tuner = LikelihoodTuner(rows, steps=3, batch=None)
    fixed = engine_dsl.read_expr("(sample (temperature logits (fixed 0.7)))", Type.DECODER)
    assert tuner.run(fixed) is None and tuner(fixed) is fixed
    assert LikelihoodTuner(rows, steps=0).run(
        engine_dsl.read_expr("(sample (temperature logits 0.7))", Type.DECODER)) is None
    assert tuner.evaluations == 0


NUCLEUS = "(sample (top-p (temperature logits 1.0) 0.9))"


def test_the_guard_undoes_a_tuning_that_made_the_exact_likelihood_worse():
    """Five Adam steps on the relaxed loss move a top-p program the wrong way for its exact
    distribution (soft mask around the cliff): the guard keeps the original constants."""
    rows = _rows(n=400)
    exact = LikelihoodEvaluator(rows).log_likelihood
    d = engine_dsl.read_expr(NUCLEUS, Type.DECODER)
    unguarded = LikelihoodTuner(rows, steps=5, lr=0.1, batch=None, guard=False)(d)
    assert unguarded != d and exact(unguarded) < exact(d) - 0.05
    guarded = LikelihoodTuner(rows, steps=5, lr=0.1, batch=None)
    assert guarded(d) is d and guarded.rejected == 1


@settings(max_examples=25, deadline=None)
@given(src=st.sampled_from([NUCLEUS, "(sample (min-p logits 0.05))",
                            "(sample (temperature logits 1.0))", "(sample (typical logits 0.9))",
                            "(greedy (temperature (top-k logits 5) 1.5))"]),
       lr=st.floats(0.01, 3.0), steps=st.integers(1, 6), seed=st.integers(0, 2**31 - 1))
def test_a_guarded_tuning_never_lowers_the_exact_likelihood_of_its_batch(src, lr, steps, seed):
    rows = _rows(n=300)
    tuner = LikelihoodTuner(rows, steps=steps, lr=lr, batch=100)
    d = engine_dsl.read_expr(src, Type.DECODER)
    tuned = tuner(d, seed)
    exact = LikelihoodEvaluator(tuner.batch_rows(seed)).log_likelihood
    assert exact(tuned) >= exact(d)
    assert tuner.rejected == 0 or tuned is d
