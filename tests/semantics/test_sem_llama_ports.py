"""`top-n-sigma` and `dynamic-temperature` against ports of llama.cpp's samplers.

The ports below follow ggml-org/llama.cpp src/llama-sampling.cpp line by line, in float32 as
llama.cpp computes (sequential sums; `pow(float, 2)` promotes to double):
`llama_sampler_top_n_sigma_apply` and `llama_sampler_temp_ext_apply` (with
`llama_sampler_softmax_impl` and `llama_sampler_temp_impl`). A llama.cpp candidate array holds
the tokens still in play; Echo Forge marks a dropped token -inf, so the temp-ext port gets a
row's finite scores (top-n-sigma skips -inf itself). `llama-cpp-python` is not installed here,
so llama.cpp's compiled code is not run.

Ours sums in torch's order (float32 pairwise), so a score within float rounding of the
top-n-sigma cut may fall the other way: such tokens are allowed to differ, and are counted.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_sem_parity import EXAMPLES, KINDS, make_logits

import engine_dsl

f32 = np.float32
NEG_INF = f32(-np.inf)


def llama_top_n_sigma(logits: np.ndarray, n: float) -> tuple[np.ndarray, float]:
    """llama_sampler_top_n_sigma_apply on one row (float32); also returns the cut."""
    out = logits.astype(f32).copy()
    n = f32(n)
    if n <= 0 or out.size <= 1:
        return out, -math.inf
    mx, total, count = out[0], f32(0), 0
    for v in out:
        if v != NEG_INF:
            if v > mx:
                mx = v
            total = f32(total + v)
            count += 1
    mean = f32(total / f32(count)) if count > 0 else f32(0)
    acc = f32(0)
    for v in out:
        if v != NEG_INF:
            acc = f32(float(acc) + float(f32(v - mean)) ** 2)  # float += pow(float, 2)
    std = f32(math.sqrt(f32(acc / f32(count)))) if count > 0 else f32(0)
    cut = f32(mx - f32(n * std))
    out[out < cut] = NEG_INF
    return out, float(cut)


def llama_temp_ext(logits: np.ndarray, temp: float, delta: float, exponent: float) -> np.ndarray:
    """llama_sampler_temp_ext_apply on one row's candidates (its finite scores)."""
    out = logits.astype(f32).copy()
    alive = np.isfinite(out)
    cand = out[alive]
    temp, delta, exponent = f32(temp), f32(delta), f32(exponent)
    if delta > 0:
        min_temp = max(f32(0), f32(temp - delta))
        max_temp = f32(temp + delta)
        if cand.size <= 1:
            return out
        max_entropy = -f32(math.log(f32(1) / f32(cand.size)))
        srt = np.sort(cand)[::-1]  # llama_sampler_softmax_impl: sort, exp(l - max), normalise
        p = np.array([f32(math.exp(f32(v - srt[0]))) for v in srt], dtype=f32)
        p = (p / np.cumsum(p, dtype=f32)[-1]).astype(f32)
        entropy = f32(0)
        for q in p:
            if q > 0:
                entropy = f32(entropy - f32(q * f32(math.log(q))))
        normalized = f32(entropy / max_entropy)
        dyn = f32(min_temp + f32((max_temp - min_temp) * f32(normalized ** exponent)))
    else:
        dyn = temp
    if dyn <= 0:  # llama_sampler_temp_impl: keep the (first) top score only
        top = np.flatnonzero(alive)[np.argmax(cand)]
        kept = np.full_like(out, NEG_INF)
        kept[top] = out[top]
        return kept
    out[alive] = (cand / dyn).astype(f32)
    return out


N_VALUES = [1e-6, 1e-3, 0.3, 1.0, 2.0, 10.0, 1e6, 1e30]
ADVERSARIAL = KINDS + ["one", "lone"]


def adversarial_logits(seed: int, B: int, V: int, kind: str) -> torch.Tensor:
    """make_logits' kinds, plus a one-token vocabulary and rows with one finite score."""
    if kind == "one":
        return make_logits(seed, B, 1, "normal")
    x = make_logits(seed, B, V, "normal" if kind == "lone" else kind)
    if kind == "lone":
        x = x.masked_fill(torch.arange(V) != seed % V, float("-inf"))
    return x


def check_top_n_sigma(x: torch.Tensor, n: float) -> int:
    """Ours equals the port except at tokens within float rounding of the cut; returns how
    many such tokens differed."""
    got = engine_dsl.logits_fn(f"(top-n-sigma logits {n!r})")(x)
    differ = 0
    for row, out in zip(x, got, strict=True):
        want, cut = llama_top_n_sigma(row.numpy(), n)
        want = torch.from_numpy(want)
        mismatch = torch.isfinite(out) != torch.isfinite(want)
        if mismatch.any():
            fin = row[torch.isfinite(row)]
            scale = float(fin.abs().max()) + abs(float(fin.max()) - cut)
            assert ((row[mismatch] - cut).abs() <= 1e-4 * scale).all(), (row, n, cut)
            differ += int(mismatch.sum())
        both = torch.isfinite(out) & torch.isfinite(want)
        assert torch.equal(out[both], want[both])  # survivors keep their scores
    return differ


@settings(max_examples=EXAMPLES)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 4),
       V=st.sampled_from([2, 3, 5, 17, 64, 256, 1000]), kind=st.sampled_from(ADVERSARIAL),
       n=st.sampled_from(N_VALUES))
def test_top_n_sigma_matches_the_llama_cpp_port(seed, B, V, kind, n):
    assert check_top_n_sigma(adversarial_logits(seed, B, V, kind), n) <= 1


@pytest.mark.parametrize("kind", ADVERSARIAL)
@pytest.mark.parametrize("n", N_VALUES)
def test_top_n_sigma_agrees_with_the_port_on_every_kind(kind, n):
    assert check_top_n_sigma(adversarial_logits(3, 4, 300, kind), n) == 0


def test_top_n_sigma_by_hand():
    """Scores 0 1 2 3 4: mean 2, std sqrt(2), n = 1 keeps >= 2.586: 3 and 4; scores 4 4 3 2
    (-inf skipped): mean 3.25, std 0.829, keeps >= 3.171: the two 4s."""
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0], [4.0, float("-inf"), 4.0, 3.0, 2.0]])
    got = engine_dsl.logits_fn("(top-n-sigma logits 1.0)")(x)
    assert torch.isfinite(got).tolist() == [[False, False, False, True, True],
                                            [True, False, True, False, False]]
    same = torch.zeros(1, 6)  # std 0: every score equals the max, all kept
    assert torch.equal(engine_dsl.logits_fn("(top-n-sigma logits 3.0)")(same), same)


def temp_ext_without_overflow(row: np.ndarray, t: float, delta: float, e: float) -> np.ndarray:
    """The port, except where a score / its temperature overflows: llama.cpp then holds
    infinite scores (and its softmax NaN); Echo Forge keeps the top score alone there, as
    llama.cpp does at temperature 0 (the limit)."""
    with np.errstate(over="ignore"):
        out = llama_temp_ext(row, t, delta, e)
    if not np.isinf(out[np.isfinite(row)]).any():
        return out
    return llama_temp_ext(row, 0.0, 0.0, 1.0)  # temp_impl at temperature 0


def check_dynamic_temperature(x: torch.Tensor, t: float, delta: float, e: float):
    got = engine_dsl.logits_fn(f"(dynamic-temperature logits {t!r} {delta!r} {e!r})")(x)
    want = torch.from_numpy(np.stack([temp_ext_without_overflow(r.numpy(), t, delta, e)
                                      for r in x]))
    assert torch.equal(torch.isfinite(got), torch.isfinite(want)), (x, got, want)
    fin = torch.isfinite(want)
    # float32 rounding of the entropy differs by summation order; (H / log n)^exponent
    # multiplies its relative error by the exponent (up to 40 here)
    torch.testing.assert_close(got[fin], want[fin], rtol=1e-4 * max(1.0, e), atol=1e-30)


TEMPS = [1e-6, 0.05, 0.7, 1.0, 3.0, 1e30]
RANGES = [0.0, 1e-6, 0.3, 1.0, 5.0, 1e30]
EXPONENTS = [1e-6, 0.5, 1.0, 2.0, 40.0]


@settings(max_examples=EXAMPLES)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 4),
       V=st.sampled_from([2, 3, 5, 17, 64, 256, 1000]), kind=st.sampled_from(ADVERSARIAL),
       t=st.sampled_from(TEMPS), delta=st.sampled_from(RANGES), e=st.sampled_from(EXPONENTS))
# the float64 temperature (3e-182) rounded to float32 0 and every score / 0 was infinite
@example(seed=1, B=1, V=256, kind="huge", t=1e-6, delta=1e-6, e=40.0)
def test_dynamic_temperature_matches_the_llama_cpp_port(seed, B, V, kind, t, delta, e):
    check_dynamic_temperature(adversarial_logits(seed, B, V, kind), t, delta, e)


@pytest.mark.parametrize("kind", ADVERSARIAL)
def test_dynamic_temperature_agrees_with_the_port_on_every_kind(kind):
    x = adversarial_logits(4, 3, 200, kind)
    for t, delta, e in [(1.0, 0.5, 1.0), (0.2, 0.5, 2.0), (1.0, 0.0, 1.0), (1e30, 1e30, 0.5)]:
        check_dynamic_temperature(x, t, delta, e)


def test_dynamic_temperature_by_hand():
    """Uniform over 4 tokens: H / log 4 = 1, T = t + range; a certain row (H = 0) with
    t <= range: T = 0, the top score alone; a lone candidate: unchanged."""
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0], [200.0, 0.0, 0.0, 0.0],
                      [2.0, float("-inf"), float("-inf"), float("-inf")]])
    got = engine_dsl.logits_fn("(dynamic-temperature logits 0.5 0.5 1.0)")(x)
    assert torch.equal(got[0], torch.full((4,), 1.0))  # T = 1
    assert torch.isfinite(got[1]).tolist() == [True, False, False, False]
    assert got[1, 0] == 200.0
    assert torch.equal(got[2], x[2])


def test_dynamic_temperature_when_scores_over_the_temperature_overflow():
    """Scores 193.05 and 286.32: H = 93 e^-93 ~ 4e-39, T = 0.1 H / log 2 ~ 6e-40, a float32
    subnormal; 286 / T overflows (llama.cpp's port: inf inf). The top score alone survives."""
    x = torch.tensor([[193.053, 286.3207]])
    with np.errstate(over="ignore"):
        assert np.isposinf(llama_temp_ext(x[0].numpy(), 0.05, 0.05, 1.0)).all()
    got = engine_dsl.logits_fn("(dynamic-temperature logits 0.05 0.05 1.0)")(x)
    assert torch.equal(got, torch.tensor([[float("-inf"), 286.3207]]))
