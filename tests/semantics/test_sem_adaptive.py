"""XTC and mirostat v2 in exact mode against ports of llama.cpp (src/llama-sampling.cpp:
`llama_sample_xtc_apply`, `llama_sampler_mirostat_v2_apply`); the XTC draw comes from the
common random numbers; mirostat's mu is per-row state that evolves over a decode as the
reference's formula says."""

import math
import os

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sem_decoders import StandIn
from test_sem_parity import KINDS, make_logits

import engine_dsl
from engine_dsl import read_expr

EXAMPLES = 300 if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else 40
DEC = engine_dsl.Type.DECODER


def llama_xtc(row: torch.Tensor, threshold: float, probability: float, chance: float):
    """Port of `llama_sample_xtc_apply` on one row (min_keep 1): the token-data array holds
    the finite scores (llama.cpp's candidates), probabilities as the kernel computes them
    (torch.softmax), sorted descending by a stable sort (equal ones in token order); the
    threshold a float of the row's precision, as llama.cpp's."""
    out = row.clone()
    threshold = torch.tensor(threshold, dtype=row.dtype).item()
    cand = [(i, p) for i, p in enumerate(torch.softmax(row, -1).tolist())
            if math.isfinite(row[i])]
    if probability <= 0.0 or threshold > 0.5 or len(cand) < 2:
        return out
    if chance > probability:
        return out
    cand.sort(key=lambda c: -c[1])
    pos_last = 0
    for i, (_, p) in enumerate(cand):
        if p >= threshold:
            pos_last = i
        else:
            break
    if len(cand) - pos_last >= 1 and pos_last > 0:
        for tok, _ in cand[:pos_last]:
            out[tok] = float("-inf")
    return out


@settings(max_examples=EXAMPLES)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 5), V=st.sampled_from([1, 2, 3, 5, 20, 300]),
       kind=st.sampled_from(KINDS + ["peaked"]),
       threshold=st.sampled_from([1e-6, 0.01, 0.05, 0.1, 0.2, 1 / 3, 0.5, 0.5000001, 0.9]),
       probability=st.sampled_from([1e-6, 0.3, 0.5, 0.999999]))
def test_xtc_matches_llama_cpp(seed, B, V, kind, threshold, probability):
    """Constants from the ends of what a program may hold (probabilities are kept 1e-6
    inside (0, 1) at run time)."""
    if kind == "peaked":  # several tokens above the threshold
        x = torch.log(torch.tensor([[0.3, 0.25, 0.2, 0.15, 0.1] * ((V + 4) // 5)])[:, :V]
                      ).expand(B, V).clone()
    else:
        x = make_logits(seed, B, V, kind)
    u = torch.rand(B, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    f = engine_dsl.logits_fn(f"(xtc logits {threshold} {probability})")
    got = f(x, uniform=lambda stream: u)
    for r in range(B):
        assert torch.equal(got[r], llama_xtc(x[r], threshold, probability, float(u[r])))


def test_xtc_drops_all_top_choices_but_the_least_likely():
    x = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1]]).log()
    u = torch.tensor([0.2, 0.8], dtype=torch.float64)  # row 2 does not draw below 0.5
    out = engine_dsl.logits_fn("(xtc logits 0.15 0.5)")(x, uniform=lambda s: u)
    assert torch.isfinite(out).tolist() == [[False, False, True, True], [True] * 4]


def test_xtc_draws_from_the_common_random_numbers():
    """Decoding XTC with the same seed gives the same answers, alone or beside another
    program (the draw belongs to the node's stream, not to the batch)."""
    model = StandIn(vocab=11)
    prompts = [[1, 2, 3], [4, 5], [6]]
    p = read_expr("(sample (xtc (temperature logits 3.0) 0.05 0.7))", DEC)
    other = read_expr("(sample (top-k logits 3))", DEC)
    alone = engine_dsl.decode(model, p, prompts, max_new_tokens=6, seed=5)
    both = engine_dsl.decode(model, [other, p], prompts, max_new_tokens=6, seed=5)
    assert [a.tokens for a in alone] == [a.tokens for a in both[1]]
    plain = engine_dsl.decode(model, read_expr("(sample (temperature logits 3.0))", DEC),
                              prompts, max_new_tokens=6, seed=5)
    assert [a.tokens for a in alone] != [a.tokens for a in plain]


def llama_mirostat_v2_truncate(row: torch.Tensor, mu: float) -> torch.Tensor:
    """Port of the truncation of `llama_sampler_mirostat_v2_apply`: candidates sorted by
    probability, cut at the first whose surprise -log2 p exceeds mu, at least one kept."""
    p = torch.softmax(row, -1)
    order = sorted(range(row.numel()), key=lambda i: -float(p[i]))
    size = len(order)
    for k, i in enumerate(order):
        if -torch.log2(p[i]) > torch.tensor(mu, dtype=row.dtype):
            size = k
            break
    size = max(size, 1)
    out = torch.full_like(row, float("-inf"))
    keep = order[:size]
    out[keep] = row[keep]
    return out


@settings(max_examples=EXAMPLES)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 4), V=st.sampled_from([1, 2, 5, 50]),
       kind=st.sampled_from(KINDS), tau=st.sampled_from([1e-6, 0.5, 1.0, 2.5, 5.0, 1e6]))
def test_mirostat_first_step_matches_llama_cpp(seed, B, V, kind, tau):
    """With state, the first step truncates at mu = 2 tau."""
    from engine_dsl.semantics import RowState

    x = make_logits(seed, B, V, kind)
    got = engine_dsl.logits_fn(f"(mirostat logits {tau} 0.1)")(x, state=RowState(B))
    for r in range(B):
        want = llama_mirostat_v2_truncate(x[r], 2 * tau)
        if torch.equal(got[r], want):
            continue
        # tokens of exactly equal probability: which of them a sort puts first is the
        # sort's business (llama.cpp leaves it unspecified); the kept probabilities agree
        p = torch.softmax(x[r], -1)
        ours, theirs = torch.isfinite(got[r]), torch.isfinite(want)
        assert torch.equal(p[ours].sort().values, p[theirs].sort().values), (r, tau, kind)


def test_mu_evolves_over_a_decode_as_llama_cpp_updates_it():
    """Over a sampled decode: each step keeps the port's set at the row's mu, and mu then
    becomes mu - eta (-log2 p(chosen among the kept) - tau), row by row."""
    tau, eta = 1.2, 0.4
    model = StandIn(vocab=11)
    prompts = [[1, 2, 3], [4, 5], [6], [7, 7]]
    prog = read_expr(f"(vote 2 (sample (mirostat (temperature logits 2.0) {tau} {eta})))", DEC)
    seen = []  # observe sees each step before the chooser's token updates mu

    def observe(t, q, rows, src, y, chosen):
        seen.append((rows.clone(), src.logits.clone(), y.clone(), chosen.clone(),
                     src.state.values[0].clone()))

    engine_dsl.decode(model, prog, prompts, max_new_tokens=6, seed=2, observe=observe)
    mu = torch.full((8,), 2 * tau, dtype=torch.float64)
    assert len(seen) >= 3
    moved = set()
    for rows, logits, y, chosen, after in seen:
        for k, r in enumerate(rows.tolist()):
            assert after[r].item() == pytest_approx(float(mu[r]))  # the state used this step
            want = llama_mirostat_v2_truncate(logits[k] / 2.0, float(mu[r]))
            assert torch.equal(torch.isfinite(y[k]), torch.isfinite(want))
            p = torch.softmax(y[k], -1)[chosen[k]]
            mu[r] = float(mu[r]) - eta * (-math.log2(float(p)) - tau)
            moved.add(round(float(mu[r]), 9))
    assert len(moved) > 4  # mu differs between rows and steps


def pytest_approx(v):
    import pytest

    return pytest.approx(v, rel=1e-6, abs=1e-9)


def test_mirostat_without_state_makes_expected_updates():
    """Scoring rows carry no state: mu is 2 tau after no answer token, and one expected
    update (expected surprise of the kept set) per answer token so far."""
    x = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    tau, eta = 0.9, 0.5
    f = engine_dsl.logits_fn(f"(mirostat logits {tau} {eta})")
    mu = 2 * tau
    for n in range(4):
        gen = torch.tensor([[3] * n + [-1] * (4 - n)])
        out = f(x, generated=gen)
        want = llama_mirostat_v2_truncate(x[0], mu)
        assert torch.equal(out[0], want), n
        q = torch.softmax(want, -1)
        h = -sum(float(v) * math.log2(float(v)) for v in q if v > 0)
        mu = mu - eta * (h - tau)
