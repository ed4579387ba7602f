"""Exact mode keeps the same tokens as the Hugging Face warpers, and the registry and kernel
table agree."""

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

import engine_dsl
from engine_dsl import PRIMITIVES
from engine_dsl.primitives._torch import NUMPY_MAX_V, order_key, top_scores

EXAMPLES = 300 if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else 40


def test_every_primitive_has_kernels_of_its_arity():
    """Each entry holds an exact and a relaxed kernel taking ctx + one argument per slot."""
    import inspect

    for p in PRIMITIVES.values():
        for mode in ("exact", "relaxed"):
            params = inspect.signature(p.kernel(mode)).parameters.values()
            required = [q for q in params if q.default is inspect.Parameter.empty]
            assert len(required) == 1 + len(p.args), (p.name, mode)
        assert (p.distribution is not None) == p.is_chooser, p.name


def test_an_entry_without_a_kernel_is_refused():
    from engine_dsl.registry import Arg, entry, register

    with pytest.raises(ValueError, match="exact kernel"):
        register(entry("no-kernel", [Arg("L", engine_dsl.Type.LOGITS)],
                       engine_dsl.Type.LOGITS, "transform", "nothing"))
    assert "no-kernel" not in PRIMITIVES


def make_logits(seed: int, B: int, V: int, kind: str) -> torch.Tensor:
    """Random logits of a kind: normal, ties (small integers), -inf entries, tiny, huge."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, V, generator=g)
    if kind == "ties":
        x = torch.randint(-2, 3, (B, V), generator=g).float()
    elif kind == "uniform":
        x = torch.zeros(B, V)
    elif kind == "inf":
        drop = torch.rand(B, V, generator=g) < 0.5
        drop[:, 0] = False  # at least one finite score per row
        x = x.masked_fill(drop, float("-inf"))
    elif kind == "tiny":
        x = x * 1e-6
    elif kind == "huge":
        x = x * 1e4
    return x


KINDS = ["normal", "ties", "uniform", "inf", "tiny", "huge"]
VOCABS = st.sampled_from([2, 3, 5, 17, 64, 256, 1000])


def hf_warper(op: str, arg):
    return {"top-k": lambda: TopKLogitsWarper(int(arg)),
            "top-p": lambda: TopPLogitsWarper(arg),
            "min-p": lambda: MinPLogitsWarper(arg),
            "typical": lambda: TypicalLogitsWarper(arg),
            "temperature": lambda: TemperatureLogitsWarper(arg),
            "epsilon": lambda: EpsilonLogitsWarper(arg),
            "eta": lambda: EtaLogitsWarper(arg),
            "repetition-penalty": lambda: RepetitionPenaltyLogitsProcessor(arg)}[op]()


def ours(op: str, arg, x, history=None):
    text = f"({op} logits {arg})"
    return engine_dsl.logits_fn(text)(x, history=history)


probs = st.sampled_from([0.05, 0.1, 0.25, 0.5, 0.75, 0.8, 0.9, 0.95, 0.99, 0.3333])


@settings(max_examples=EXAMPLES)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 4), V=VOCABS, kind=st.sampled_from(KINDS),
       op=st.sampled_from(["top-p", "min-p", "typical", "epsilon", "eta"]), p=probs,
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_probability_truncations_match_transformers(seed, B, V, kind, op, p, dtype):
    """top-p, min-p, typical, epsilon and eta keep exactly the tokens the HF warper keeps,
    same values."""
    x = make_logits(seed, B, V, kind).to(dtype)
    want = hf_warper(op, p)(None, x.clone())
    assert torch.equal(ours(op, p, x), want)


@pytest.mark.parametrize("op", ["epsilon", "eta"])
@pytest.mark.parametrize("e", [1e-6, 3e-4, 0.02, 0.5, 1 - 1e-6])
@pytest.mark.parametrize("kind", KINDS)
def test_epsilon_and_eta_match_transformers_at_extreme_constants(op, e, kind):
    """Constants at the ends of what runs (a literal is clamped into [1e-6, 1 - 1e-6]), one
    token, a lone finite score: the warpers' sets."""
    for x in (make_logits(5, 3, 50, kind), make_logits(5, 2, 1, kind),
              make_logits(5, 2, 6, kind).masked_fill(torch.arange(6) > 0, float("-inf"))):
        assert torch.equal(ours(op, e, x), hf_warper(op, e)(None, x.clone())), x


def test_eta_cutoff_is_the_smaller_of_epsilon_and_the_entropy_term():
    """Uniform over 4 tokens plus a rare one: eta = min(e, sqrt(e) exp(-H))."""
    x = torch.tensor([[0.0, 0.0, 0.0, 0.0, -6.0]])
    f = engine_dsl.logits_fn("(eta logits 0.01)")  # p(rare) = 6.2e-4; eta = 0.1 * e^-H
    assert torch.isfinite(f(x)).tolist() == [[True, True, True, True, False]]
    g = engine_dsl.logits_fn("(epsilon logits 0.0005)")  # kept: 6.2e-4 >= 5e-4
    assert torch.isfinite(g(x)).all()


def _ties_reversed(x):
    """An ascending sort that orders equal values the other way from torch.sort."""
    flipped = x.flip(-1)
    idx = torch.sort(flipped, descending=False, stable=True).indices
    idx = x.size(-1) - 1 - idx
    return x.gather(-1, idx), idx


@settings(max_examples=EXAMPLES)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 4), V=VOCABS,
       kind=st.sampled_from(["ties", "uniform", "normal"]),
       op=st.sampled_from(["top-p", "typical"]), p=probs)
def test_a_fast_sort_that_orders_ties_differently_changes_nothing(seed, B, V, kind, op, p):
    """The sort-based kernels sort integer keys (faster); where the order of equal values
    matters they re-sort those rows with torch.sort, the warpers' order. With a sort that
    puts ties the other way round, the kept sets still match the warpers."""
    x = make_logits(seed, B, V, kind)
    want = hf_warper(op, p)(None, x.clone())
    from engine_dsl.primitives import truncations

    original = truncations.ascending
    truncations.ascending = _ties_reversed
    try:
        got = ours(op, p, x)
    finally:
        truncations.ascending = original
    assert torch.equal(got, want)


@settings(max_examples=EXAMPLES)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 4), V=VOCABS, kind=st.sampled_from(KINDS),
       k=st.integers(1, 1200))
def test_top_k_matches_transformers_ties_kept(seed, B, V, kind, k):
    x = make_logits(seed, B, V, kind)
    want = TopKLogitsWarper(k)(None, x.clone())
    assert torch.equal(ours("top-k", k, x), want)


@settings(max_examples=EXAMPLES)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 4), V=VOCABS, kind=st.sampled_from(KINDS),
       r=st.sampled_from([1.0, 1.05, 1.2, 2.0, 10.0]), T=st.integers(1, 30))
def test_repetition_penalty_matches_transformers(seed, B, V, kind, r, T):
    """Positive scores divided, negative multiplied, once per token of prompt + answer."""
    x = make_logits(seed, B, V, kind)
    ids = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))
    want = RepetitionPenaltyLogitsProcessor(r)(ids, x.clone())
    assert torch.equal(ours("repetition-penalty", r, x, ids), want)


def test_repetition_penalty_ignores_padding():
    """History padding (ids < 0, or history_mask False) penalises nothing."""
    x = make_logits(1, 2, 10, "normal")
    hist = torch.tensor([[-1, -1, 3, 4], [5, 5, 6, 7]])
    f = engine_dsl.logits_fn("(repetition-penalty logits 1.5)")
    got = f(x, history=hist)
    for row, ids in enumerate([[3, 4], [5, 5, 6, 7]]):
        want = RepetitionPenaltyLogitsProcessor(1.5)(torch.tensor([ids]), x[row:row + 1].clone())
        assert torch.equal(got[row:row + 1], want)
    masked = f(x, history=torch.tensor([[9, 9, 3, 4], [5, 5, 6, 7]]),
               history_mask=torch.tensor([[False, False, True, True], [True] * 4]))
    assert torch.equal(masked, got)


def hf_chain(ops):
    return LogitsProcessorList([hf_warper(op, arg) for op, arg in ops])


def program_of(ops):
    text = "logits"
    for op, arg in ops:
        text = f"({op} {text} {arg})"
    return text


CHAIN_STEPS = st.lists(
    st.one_of(st.tuples(st.just("temperature"), st.sampled_from([0.5, 0.8, 1.0, 1.7])),
              st.tuples(st.just("top-k"), st.integers(1, 60)),
              st.tuples(st.just("top-p"), probs),
              st.tuples(st.just("min-p"), probs)),
    min_size=2, max_size=5)


@settings(max_examples=EXAMPLES * 2)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 6), V=VOCABS, kind=st.sampled_from(KINDS),
       ops=CHAIN_STEPS)
def test_fused_chains_match_transformers(seed, B, V, kind, ops):
    """A fused run of temperature/top-k/top-p/min-p equals HF's processors applied in turn."""
    x = make_logits(seed, B, V, kind)
    want = hf_chain(ops)(None, x.clone())
    f = engine_dsl.logits_fn(program_of(ops))
    assert torch.equal(f(x), want)
    unfused = engine_dsl.compile_expr(f.expr, fuse=False)
    assert torch.equal(unfused(x), want)


@pytest.mark.parametrize("kind", ["normal", "ties", "inf", "huge"])
def test_benchmark_chain_matches_transformers_at_gpt2_vocabulary(kind):
    """The benchmark's chain, V = 50257 (GPT-2), with a 64-token history."""
    x = make_logits(7, 3, 50257, kind) * 3
    ids = torch.randint(0, 50257, (3, 64), generator=torch.Generator().manual_seed(3))
    ops = [("repetition-penalty", 1.2), ("temperature", 0.8), ("top-k", 40), ("top-p", 0.9)]
    want = hf_chain(ops)(ids, x.clone())
    assert torch.equal(engine_dsl.logits_fn(program_of(ops))(x, history=ids), want)


@pytest.mark.parametrize("op,arg", [("top-p", 0.9), ("min-p", 0.05), ("typical", 0.9),
                                    ("top-k", 50), ("epsilon", 3e-4), ("eta", 3e-4)])
def test_single_truncations_at_gpt2_vocabulary(op, arg):
    x = make_logits(11, 2, 50257, "normal") * 2
    assert torch.equal(ours(op, arg, x), hf_warper(op, arg)(None, x.clone()))


def test_top_p_keeps_the_token_that_crosses_p():
    """probabilities .5 .3 .2, p = .6: the .3 token crosses .6 and is kept."""
    x = torch.tensor([[0.5, 0.3, 0.2]]).log()
    out = ours("top-p", 0.6, x)
    assert torch.isfinite(out).tolist() == [[True, True, False]]


def test_top_k_keeps_ties_at_the_kth_score():
    x = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0]])
    assert torch.isfinite(ours("top-k", 2, x)).tolist() == [[True, False, True, True, False]]


def test_min_p_is_relative_to_the_top_probability():
    x = torch.tensor([[0.5, 0.3, 0.04, 0.16]]).log()
    out = ours("min-p", 0.1, x)  # bar: 0.05
    assert torch.isfinite(out).tolist() == [[True, True, False, True]]


def test_per_row_real_arguments():
    """A Real computed per row (here max-prob) acts row by row."""
    x = torch.tensor([[4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    f = engine_dsl.logits_fn("(top-p logits (max-prob logits))")
    kept = torch.isfinite(f(x)).sum(-1).tolist()
    assert kept[0] == 1 and kept[1] == 1  # row 2: p = .25 -> only the crossing token


def test_integer_order_keys_sort_like_the_floats():
    x = torch.tensor([[float("-inf"), -3.5, -0.0, 0.0, 1e-30, -1e-30, 2.0, float("inf"), 7.0]])
    for dtype in (torch.float32, torch.float64):
        xs = x.to(dtype)
        keys = order_key(xs)
        order = torch.sort(keys, stable=True).indices
        assert torch.equal(xs[0, order[0]], torch.sort(xs, stable=True).values[0])


@pytest.mark.parametrize("V", [300, NUMPY_MAX_V + 1])  # NumPy's values; torch's, with positions
@pytest.mark.parametrize("kind", ["normal", "ties", "inf"])
def test_top_scores_are_the_best_ascending(V, kind):
    x = make_logits(4, 3, V, kind)
    for n in (2, 41, V):
        vals, idx = top_scores(x, n)
        assert torch.equal(vals, torch.sort(x).values[:, V - n :])
        if idx is not None:
            assert torch.equal(x.gather(1, idx), vals)
    assert (top_scores(x, 41)[1] is None) == (V <= NUMPY_MAX_V)


@pytest.mark.parametrize("ops", [[("temperature", 0.01), ("top-k", 6)],
                                 [("temperature", 0.01), ("top-p", 0.999999)],
                                 [("top-k", 8), ("temperature", 0.01), ("top-p", 0.9)],
                                 [("temperature", 0.01), ("min-p", 1e-6)],
                                 [("top-p", 0.99), ("temperature", 0.001)]])
def test_fused_chains_at_the_ends_of_float32(ops):
    """Scores that a temperature sends to -inf, signed zeros, -inf: kept sets as HF's."""
    big = torch.finfo(torch.float32).max
    x = torch.tensor([[-big, -big / 2, -0.0, 0.0, 1.0, 2.0, -3e38, float("-inf"), 5.0, -1.0],
                      [-big, -big / 3, -big / 4, -big / 5, -big / 6, 1.0, 0.5, float("-inf"),
                       float("-inf"), 0.25]])
    assert torch.equal(engine_dsl.logits_fn(program_of(ops))(x), hf_chain(ops)(None, x.clone()))
