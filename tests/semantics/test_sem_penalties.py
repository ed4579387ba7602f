"""Exact mode of the penalties against their references: vLLM's `apply_penalties` (a port
below, vLLM is not installable here) and transformers' `NoRepeatNGramLogitsProcessor`; on
ties, -inf scores, one token, and the ends of each constant's domain."""

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sem_parity import KINDS, make_logits
from transformers import NoRepeatNGramLogitsProcessor

import engine_dsl

EXAMPLES = 300 if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else 40


def vllm_apply_penalties(logits, output_tokens, presence, frequency):
    """Port of vLLM `apply_penalties` (vllm/model_executor/layers/utils.py, with
    `get_token_bin_counts_and_mask`), repetition penalty 1: output tokens padded with
    vocab_size; counts over the generated answer only."""
    num_seqs, vocab_size = logits.shape
    tokens = torch.where(output_tokens < 0, vocab_size, output_tokens)
    bin_counts = torch.zeros((num_seqs, vocab_size + 1), dtype=torch.long)
    bin_counts.scatter_add_(1, tokens, torch.ones_like(tokens))
    output_bin_counts = bin_counts[:, :vocab_size]
    output_mask = output_bin_counts > 0
    frequency = torch.full((num_seqs,), frequency, dtype=logits.dtype)
    presence = torch.full((num_seqs,), presence, dtype=logits.dtype)
    logits = logits.clone()
    logits -= frequency.unsqueeze(dim=1) * output_bin_counts
    logits -= presence.unsqueeze(dim=1) * output_mask
    return logits


weights = st.sampled_from([-2.0, -1.0, -0.3, 0.0, 1e-30, 0.1, 0.5, 1.3, 2.0])


@settings(max_examples=EXAMPLES)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 4), V=st.sampled_from([1, 2, 5, 64, 300]),
       kind=st.sampled_from(KINDS), a=weights, T=st.integers(0, 20),
       op=st.sampled_from(["frequency-penalty", "presence-penalty"]))
def test_frequency_and_presence_penalties_match_vllm(seed, B, V, kind, a, T, op):
    x = make_logits(seed, B, V, kind)
    g = torch.Generator().manual_seed(seed)
    gen = torch.randint(0, V, (B, T), generator=g)
    gen = torch.where(torch.rand(B, T, generator=g) < 0.2, -1, gen)  # padding
    f = engine_dsl.logits_fn(f"({op} logits {a})")
    freq, pres = (a, 0.0) if op == "frequency-penalty" else (0.0, a)
    assert torch.equal(f(x, generated=gen), vllm_apply_penalties(x, gen, pres, freq))


def test_frequency_counts_and_presence_flags():
    x = torch.zeros(1, 4)
    gen = torch.tensor([[2, 2, 2, 0, -1]])
    assert engine_dsl.logits_fn("(frequency-penalty logits 0.5)")(x, generated=gen).tolist() \
        == [[-0.5, 0.0, -1.5, 0.0]]
    assert engine_dsl.logits_fn("(presence-penalty logits -2.0)")(x, generated=gen).tolist() \
        == [[2.0, 0.0, 2.0, 0.0]]


def test_penalty_weights_outside_vllms_range_are_refused():
    with pytest.raises(engine_dsl.DslError, match=r"x\.scm:1:45: error: a of "
                                                  r"frequency-penalty must be in \[-2, 2\]"):
        engine_dsl.read("(define x (sample (frequency-penalty logits 2.5)))", "x.scm")


@settings(max_examples=EXAMPLES)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 4), V=st.sampled_from([2, 3, 5, 50]),
       kind=st.sampled_from(KINDS), n=st.integers(1, 6), T=st.integers(1, 24))
def test_no_repeat_ngram_matches_transformers(seed, B, V, kind, n, T):
    """Same banned tokens as the processor on prompt + answer ids (small vocabularies make
    repeats common); where it would ban every token the best one stays."""
    x = make_logits(seed, B, V, kind)
    ids = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))
    want = NoRepeatNGramLogitsProcessor(n)(ids, x.clone())
    got = engine_dsl.logits_fn(f"(no-repeat-ngram logits {n})")(x, history=ids)
    ok = torch.isfinite(want).any(-1)
    assert torch.equal(got[ok], want[ok])
    for row in (~ok & torch.isfinite(x).any(-1)).nonzero().flatten().tolist():
        top = int(x[row].argmax())
        assert torch.isfinite(got[row]).nonzero().flatten().tolist() == [top]
        assert got[row, top] == x[row, top]


def test_no_repeat_ngram_skips_padding_on_either_side():
    """Decode pads prompts on the left, teacher-forced rows are padded on the right: each row
    is its own token sequence."""
    x = make_logits(3, 3, 6, "normal")
    rows = [[1, 2, 3, 1, 2], [4, 4, 4], [5, 1, 5]]
    hist = torch.tensor([[1, 2, 3, 1, 2], [-1, -1, 4, 4, 4], [5, 1, 5, -1, -1]])
    got = engine_dsl.logits_fn("(no-repeat-ngram logits 2)")(x, history=hist)
    for r, ids in enumerate(rows):
        want = NoRepeatNGramLogitsProcessor(2)(torch.tensor([ids]), x[r:r + 1].clone())
        assert torch.equal(got[r:r + 1], want)
    assert torch.isneginf(got[0, 3]) and torch.isneginf(got[1, 4]) and torch.isneginf(got[2, 1])


def test_a_trigram_ban_example():
    """'a b c a b' bans c after 'a b' with n = 3, and nothing with n = 4."""
    x = torch.zeros(1, 4)
    hist = torch.tensor([[0, 1, 2, 0, 1]])
    out = engine_dsl.logits_fn("(no-repeat-ngram logits 3)")(x, history=hist)
    assert torch.isfinite(out).tolist() == [[True, True, False, True]]
    out = engine_dsl.logits_fn("(no-repeat-ngram logits 4)")(x, history=hist)
    assert torch.isfinite(out).all()
