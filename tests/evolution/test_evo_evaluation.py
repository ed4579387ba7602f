"""Population evaluation and tuning: the likelihood objective, gradient tuning, batched
decoding of a whole population, and parallel maps (processes; Ray when installed)."""

import importlib.util
import math
import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import engine_dsl
from engine_dsl import Type
from evolution.bridge import SearchSpace
from evolution.config import EvolutionConfig
from evolution.evaluation import (
    CachedRows,
    DecodeEvaluator,
    LikelihoodEvaluator,
    ProcessMap,
    cache_rows,
    forward_cost,
    mean_kl,
    program_groups,
)
from evolution.population import build_toolbox, evolve_generation, initial_population
from evolution.tuner import LikelihoodTuner


def _d(text):
    return engine_dsl.read_expr(text, Type.DECODER)


def _synthetic_rows(temperature=0.5, n=2000, V=20, seed=0):
    """Rows whose targets are drawn from softmax(logits / temperature): the teacher is
    (sample (temperature logits T))."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, V, generator=g) * 2
    targets = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=g)[:, 0]
    return CachedRows(logits, (), torch.full((n, 1), -1), targets, None, None, 1, 1)


def _tiny_model():
    from neural import GPT, GPTConfig

    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=48)).eval()


def test_likelihood_score_is_the_mean_log_probability():
    """For (sample logits) the score is the mean smoothed log-softmax at the targets; the
    cost counts vote repeats."""
    rows = _synthetic_rows()
    ev = LikelihoodEvaluator(rows, smoothing=0.0)
    (score, cost), (_, vote_cost) = ev([_d("(sample logits)"), _d("(vote 3 (sample logits))")])
    expected = torch.log_softmax(rows.logits, -1).gather(1, rows.targets[:, None]).mean()
    assert score == pytest.approx(float(expected), rel=1e-5)
    assert (cost, vote_cost) == (1.0, 3.0)
    assert forward_cost(_d("(best-of 2 (greedy (gated #(0.0 0.0 0.0 0.0))))")) == 4.0


def test_the_teacher_scores_best_and_has_zero_kl():
    """The teacher's own program maximises the likelihood among nearby temperatures, and
    its KL to itself is 0."""
    rows = _synthetic_rows()
    ev = LikelihoodEvaluator(rows)
    progs = [_d(f"(sample (temperature logits {t}))") for t in (0.3, 0.5, 0.8)]
    scores = [s for s, _ in ev(progs)]
    assert scores[1] == max(scores)
    assert mean_kl(progs[1], progs[1], rows) == pytest.approx(0.0, abs=1e-6)
    assert mean_kl(progs[1], progs[2], rows) > 0.01


def test_gradient_tuning_recovers_a_temperature():
    """A few dozen Adam steps move a temperature of 1.0 to the teacher's 0.5 (within 5%)."""
    rows = _synthetic_rows()
    tuner = LikelihoodTuner(rows, steps=60, lr=0.1, batch=None)
    tuned = tuner(_d("(sample (temperature logits 1.0))"), seed=0)
    (t,) = engine_dsl.tunable_constants(tuned)
    assert t.value == pytest.approx(0.5, rel=0.05)
    assert tuner.evaluations == 61


def test_cached_rows_match_the_model():
    """Cached rows hold the model's logits at the scored positions and the next tokens."""
    model = _tiny_model()
    ids = torch.randint(0, 256, (3, 10))
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, 5:] = True
    rows = cache_rows(model, ids, mask)
    assert len(rows) == 15
    full = model.forward_step(ids).logits
    assert torch.allclose(rows.logits[0], full[0, 4]) and rows.targets[0] == ids[0, 5]
    # the layer lens and the gated pass are consistent with the final logits
    out = engine_dsl.compile_expr(engine_dsl.read_expr("(layer 2)"))(**rows.sources())
    assert torch.allclose(out, rows.logits, atol=1e-5)
    ones = torch.full((2, 2), 1.0)
    assert torch.allclose(rows.gated(ones), rows.logits, atol=1e-5)



def test_a_subset_of_rows_is_those_rows():
    """subset(index) holds the rows at index, and its gated pass (run over only the
    sequences those rows are in) gives the full pass's logits at them."""
    model = _tiny_model()
    ids = torch.randint(0, 256, (4, 9))
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, 4:] = True
    rows = cache_rows(model, ids, mask)
    index = torch.tensor([13, 2, 14, 3])  # rows of sequences 2, 0, 2, 0 (5 rows each)
    sub = rows.subset(index)
    assert torch.equal(sub.logits, rows.logits[index])
    assert torch.equal(sub.targets, rows.targets[index])
    assert sub.gated.ids.size(0) == 2  # only sequences 0 and 2 are run
    gates = torch.rand(2, 2)
    assert torch.allclose(sub.gated(gates), rows.gated(gates)[index], atol=1e-6)

def test_generations_over_a_batched_decode():
    """evolve_generation runs on DecodeEvaluator: every program of the population is
    decoded in one batched call per generation and gets a valid (score, cost, size)."""
    model = _tiny_model()
    calls = []
    ev = DecodeEvaluator(model, [[256, 49, 50], [256, 51]], [[50], [52]], max_new_tokens=3)

    def evaluate(exprs):
        calls.append(len(exprs))
        return ev(exprs)

    cfg = EvolutionConfig(population_size=6, tune_steps=0)
    tb = build_toolbox(cfg, SearchSpace(2, 2, model.vocab_size))
    rng = random.Random(0)
    pop = initial_population(tb, rng, [engine_dsl.read("(define g (greedy logits))")[0]])
    for _ in range(2):
        pop = evolve_generation(pop, evaluate, tb, rng)
    assert len(calls) == 3  # generation 0, then one call per generation
    assert all(i.fitness.valid and i.fitness.values[1] > 0 for i in pop)
    assert all(0.0 <= i.fitness.values[0] <= 1.0 for i in pop)


def test_program_groups_by_hand():
    """Rows 16, 1, 5, 16, 3 under a limit of 21: 16 + 1 (a 5 more is 22), 5 + 16, 3."""
    assert program_groups([16, 1, 5, 16, 3], 21) == [range(0, 2), range(2, 4), range(4, 5)]
    assert program_groups([30, 2], 21) == [range(0, 1), range(1, 2)]  # too big: alone
    assert program_groups([16, 1, 5], None) == [range(0, 3)]
    assert program_groups([], 21) == []


@given(st.lists(st.integers(1, 40), max_size=30), st.integers(1, 60))
def test_program_groups_cover_in_order_fit_and_are_full(rows, limit):
    """Groups are consecutive and cover every program once, in order; each fits the limit
    or is one program; none could have taken the next program."""
    groups = program_groups(rows, limit)
    assert [i for g in groups for i in g] == list(range(len(rows)))
    for k, g in enumerate(groups):
        total = sum(rows[i] for i in g)
        assert total <= limit or len(g) == 1
        if k + 1 < len(groups):
            assert total + rows[g.stop] > limit


def test_decoding_in_groups_of_programs_gives_the_same_answers(monkeypatch):
    """A decode split into groups of programs (a row budget of 8 rows per prompt) answers
    exactly as one decode of them all: tokens, cost, log-likelihood and scores, prompt by
    prompt (the draws are keyed by prompt, sample and step)."""
    model = _tiny_model()
    prompts = [[256, 49, 50], [256, 51], [256, 52, 43, 53], [256, 54, 55]]
    refs = [[50], [52], [53], [55]]
    progs = [_d(s) for s in (
        "(vote 4 (sample (temperature logits 1.5)))", "(greedy logits)",
        "(sample (top-k (temperature logits 2.0) 5))", "(vote 6 (sample logits))",
        "(best-of 2 (sample (top-p logits 0.9)))", "(vote 4 (sample (temperature logits 1.5)))",
        "(sample (temperature logits 1.2))")]
    calls = []
    real = engine_dsl.decode

    def counting(model, programs, *a, **kw):
        calls.append(len(programs))
        return real(model, programs, *a, **kw)

    monkeypatch.setattr(engine_dsl, "decode", counting)
    whole = DecodeEvaluator(model, prompts, refs, seed=7, max_new_tokens=5)
    grouped = DecodeEvaluator(model, prompts, refs, seed=7, max_rows=8 * len(prompts),
                              max_new_tokens=5)
    one, split = whole.decode(progs), grouped.decode(progs)
    assert calls == [7, 3, 2, 2]  # rows per prompt 4 1 1 | 6 2 | 4 1 (each next one: > 8)
    assert [[(d.tokens, d.stopped, d.cost, d.log_likelihood) for d in a] for a in one] == \
        [[(d.tokens, d.stopped, d.cost, d.log_likelihood) for d in a] for a in split]
    assert whole(progs) == grouped(progs)


def test_process_map_matches_the_serial_map():
    """Tuning over two worker processes gives the same programs as in-process tuning
    (the tuner, its cached rows and the expressions pickle)."""
    rows = _synthetic_rows(n=300)
    tuner = LikelihoodTuner(rows, steps=3, lr=0.1, batch=100)
    items = [(_d(f"(sample (temperature logits {t}))"), s) for s, t in enumerate((0.7, 1.5))]

    def call(item):
        return tuner(*item)

    serial = [call(i) for i in items]
    with ProcessMap(workers=2) as pmap:
        parallel = pmap(_TuneItem(tuner), items)
    assert parallel == serial


class _TuneItem:
    def __init__(self, tuner):
        self.tuner = tuner

    def __call__(self, item):
        return self.tuner(*item)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="Ray is an optional extra (pip install 'echo-forge[ray]'), "
                           "installed by the dev extra; missing here")
def test_ray_map_on_a_local_instance():
    """Tuning as Ray tasks on a local Ray instance gives the same programs as in-process
    tuning (the same contract as ProcessMap)."""
    from evolution.evaluation import RayMap
    from evolution.population import _TuneCall  # defined in the package: workers import it

    rows = _synthetic_rows(n=300)
    tuner = LikelihoodTuner(rows, steps=3, lr=0.1, batch=100)
    items = [(_d(f"(sample (temperature logits {t}))"), s) for s, t in enumerate((0.7, 1.5))]
    serial = [tuner(*i) for i in items]
    rmap = RayMap(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert rmap(_TuneCall(tuner), items) == serial
        assert rmap(math.sqrt, [1.0, 4.0, 9.0]) == [1.0, 2.0, 3.0]
    finally:
        rmap.close()
