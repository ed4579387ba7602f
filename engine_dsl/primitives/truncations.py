"""Temperature and the truncations (top-k, top-p, min-p, typical, epsilon, eta, top-n-sigma),
and llama.cpp's entropy-driven dynamic temperature.

Exact kernels follow the `transformers` warpers (TemperatureLogitsWarper, TopKLogitsWarper,
TopPLogitsWarper, MinPLogitsWarper, TypicalLogitsWarper, EpsilonLogitsWarper,
EtaLogitsWarper, min_tokens_to_keep = 1): the same operations in the same order, so kept sets
agree even on exact ties. `top-n-sigma` and `dynamic-temperature` port llama.cpp
(src/llama-sampling.cpp, `llama_sampler_top_n_sigma_apply`, `llama_sampler_temp_ext_apply`),
where the candidates are the finite scores of a row; they compute in the row's dtype with
torch's summation order, so a score within float rounding of a cut may fall the other way.

Relaxed kernels never make a new -inf: each computes a per-token margin m (how far inside
the kept set the token is, in the primitive's own unit: logits for top-k and top-n-sigma,
probability for top-p and typical, log-probability for min-p, epsilon and eta) and adds
log sigmoid(sharpness * m) to the scores, floored (see `_torch.apply_soft_mask`). The top
token of top-p/min-p/typical/epsilon/eta/top-n-sigma always keeps mask 1. The relaxed
dynamic temperature is the exact one with the temperature floored at 1e-6 (no top-only
branch).
"""

from __future__ import annotations

import operator

from ..types import DOMAIN_EPS, NONNEGATIVE, POSITIVE, PROBABILITY, Type
from . import Arg, Export, Fused, entry
from ._torch import (
    BIG,
    NEG_INF,
    all_finite,
    apply_soft_mask,
    ascending,
    col,
    colt,
    finite_only,
    one_minus,
    resort,
    sorted_soft_mask,
    tie_at_cut,
    torch,
)
from .measures import entropy_kernel

L, R, C = Type.LOGITS, Type.REAL, Type.COUNT
CUT_SLACK = 1e-6  # fused chain: a cumulative sum this close to a cut is re-done unfused


# ----------------------------------------------------------------------------- temperature


def _divisor(t, x):
    """t as x's dtype holds it: a temperature beyond the dtype's range would round to inf
    (and -inf / inf is NaN); the largest finite value divides the same to 0."""
    if isinstance(t, float):
        return t if t < 3e38 else min(t, torch.finfo(x.dtype).max)
    return col(t, x) if isinstance(t, int) else col(t, x).clamp(max=torch.finfo(x.dtype).max)


def temperature_exact(ctx, x, t):
    return x / _divisor(t, x)


def temperature_relaxed(ctx, x, t):
    return finite_only(lambda v: v / _divisor(t, v), x)


def temperature_fused(vals, t):
    return vals / _divisor(t, vals)


# ----------------------------------------------------------------------------- top-k


def top_k_exact(ctx, x, k: int):
    k = min(max(int(k), 1), x.size(-1))
    kth = torch.topk(x, k)[0][..., -1, None]
    return x.masked_fill(x < kth, NEG_INF)


def top_k_relaxed(ctx, x, k: int):
    V = x.size(-1)
    k = min(max(int(k), 1), V)
    sd = torch.sort(x, dim=-1, descending=True).values
    kth = sd[:, k - 1 : k]
    kept = (x >= kth).sum(-1, keepdim=True)  # the exact kept count (ties at the k-th kept)
    nxt = sd.gather(1, kept.clamp(max=V - 1))
    full = (kept >= V) | ~torch.isfinite(nxt) | ~torch.isfinite(kth)
    tau = torch.where(full, torch.zeros_like(kth), (kth + nxt) / 2)
    z = torch.where(full, torch.full_like(x, BIG), ctx.sharpness * (x - tau))
    return apply_soft_mask(x, z)


def top_k_fused(vals, k):
    K = vals.size(-1)
    k = min(max(int(k), 1), K)
    return vals.masked_fill(vals < vals[:, K - k : K - k + 1], NEG_INF)


# ----------------------------------------------------------------------------- top-p


def top_p_exact(ctx, x, p):
    sorted_logits, sorted_idx = ascending(x)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cum <= one_minus(p, x)
    remove[..., -1:] = False
    # the same values in the same order either way, so `remove` stands; only which of the
    # tied tokens it falls on can differ
    resort(x, sorted_idx, tie_at_cut(sorted_logits, remove))
    remove = remove.scatter(1, sorted_idx, remove)
    return x.masked_fill(remove, NEG_INF)


def top_p_relaxed(ctx, x, p):
    probs = torch.softmax(x, dim=-1)
    order = torch.sort(x, dim=-1, descending=True).indices
    ps = probs.gather(1, order)
    above = torch.cumsum(ps, dim=-1) - ps  # mass strictly before each token
    return apply_soft_mask(x, sorted_soft_mask(order, ctx.sharpness * (col(p, x) - above)))


def top_p_fused(vals, p):
    if vals.size(-1) < 2:
        return vals  # a lone survivor always stays
    cum = vals.softmax(dim=-1).cumsum(dim=-1)
    cut = one_minus(p, vals)
    remove = cum <= cut
    remove[:, -1] = False
    # order of ties and float sums may differ from a full sort at the cut: check for equal
    # scores either side of it (remove is a prefix) and for sums within CUT_SLACK of it
    tie = (vals[:, 1:] == vals[:, :-1]) & (remove[:, :-1] > remove[:, 1:])
    if bool(tie.any()) or bool(((cum - cut).abs() < CUT_SLACK).any()):
        return None
    return vals.masked_fill(remove, NEG_INF)


# ----------------------------------------------------------------------------- min-p


def min_p_exact(ctx, x, p):
    probs = torch.softmax(x, dim=-1)
    top = probs.amax(dim=-1, keepdim=True)
    remove = probs < col(p, x) * top
    remove.scatter_(-1, torch.topk(probs, 1, dim=-1).indices, False)
    return x.masked_fill(remove, NEG_INF)


def min_p_relaxed(ctx, x, p):
    logp = torch.log_softmax(x, dim=-1)
    top = logp.amax(-1, keepdim=True)
    z = ctx.sharpness * (logp - top - torch.log(colt(p, x)))
    z = torch.where(logp == top, torch.full_like(z, BIG), z)
    return apply_soft_mask(x, z)


def min_p_fused(vals, p):
    probs = vals.softmax(dim=-1)
    bar = col(p, vals) * probs[:, -1:]
    if bool(((probs - bar).abs() <= CUT_SLACK * bar).any()):
        return None  # too close to the cut to trust another summation order
    remove = probs < bar
    remove[:, -1] = False
    return vals.masked_fill(remove, NEG_INF)


# ----------------------------------------------------------------------------- typical


def typical_exact(ctx, x, p):
    normalized = torch.log_softmax(x, dim=-1)
    probs = torch.exp(normalized)
    ent = -(normalized * probs).nansum(-1, keepdim=True)
    shifted = torch.abs((-normalized) - ent)
    # torch.sort's order, the warper's: equal scores of different tokens (common in a large
    # vocabulary: |-log p - H| pairs up tokens on either side of the entropy) change the sums
    sorted_scores, sorted_idx = torch.sort(shifted, descending=False)
    sorted_logits = x.gather(-1, sorted_idx)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    last = (cum < col(p, x)).sum(dim=1)
    last.clamp_(max=sorted_scores.shape[-1] - 1)
    remove = sorted_scores > sorted_scores.gather(1, last.view(-1, 1))
    remove[..., :1] = False
    remove = remove.scatter(1, sorted_idx, remove)
    return x.masked_fill(remove, NEG_INF)


def typical_relaxed(ctx, x, p):
    logp = torch.log_softmax(x, dim=-1)
    fin = torch.isfinite(logp)
    safe = torch.where(fin, logp, torch.zeros_like(logp))
    ent = -(torch.exp(safe) * safe * fin).sum(-1, keepdim=True)
    shifted = torch.where(fin, torch.abs(-safe - ent), float("inf"))
    order = torch.sort(shifted.detach(), dim=-1).indices
    ps = torch.exp(safe).mul(fin).gather(1, order)
    above = torch.cumsum(ps, dim=-1) - ps
    return apply_soft_mask(x, sorted_soft_mask(order, ctx.sharpness * (col(p, x) - above)))


# ----------------------------------------------------------------------------- epsilon, eta


def _drop(x, remove):
    return torch.where(remove, NEG_INF, x)  # masked_fill's values, faster on the CPU


def _below_keep_top(x, probs, cutoff):
    """Where probs < cutoff, without each row's top scores, as the warpers
    (min_tokens_to_keep = 1: (probs < cutoff) & (x < top score)). Equal scores have equal
    probabilities, so a top score falls below the cutoff only in a row where every score
    does: only those rows need the comparison with the top score."""
    remove = probs < cutoff
    everything = probs.amax(dim=-1, keepdim=True) < cutoff
    if bool(everything.any()):
        rows = everything.squeeze(-1)
        remove[rows] = x[rows] < x[rows].amax(dim=-1, keepdim=True)
    return remove


def _top_mask(x, z):
    """Relaxed margins z with every top score of its row always kept."""
    return torch.where(x == x.amax(-1, keepdim=True), torch.full_like(z, BIG), z)


def epsilon_exact(ctx, x, e):
    return _drop(x, _below_keep_top(x, x.softmax(dim=-1), col(e, x)))


def epsilon_relaxed(ctx, x, e):
    z = ctx.sharpness * (torch.log_softmax(x, dim=-1) - torch.log(colt(e, x)))
    return apply_soft_mask(x, _top_mask(x, z))


def _eta_epsilon(e):
    """The warper holds epsilon as a float32 tensor (`torch.tensor(epsilon)`)."""
    return torch.tensor(e, dtype=torch.float32) if isinstance(e, (float, int)) else e


def eta_exact(ctx, x, e):
    probs = x.softmax(dim=-1)
    logp = x - x.logsumexp(dim=-1, keepdim=True)  # torch.distributions.Categorical.entropy
    ent = -(logp.clamp(min=torch.finfo(logp.dtype).min) * logp.softmax(dim=-1)).sum(-1)
    eps = _eta_epsilon(e)
    eta = torch.min(eps, torch.sqrt(eps) * torch.exp(-ent))[..., None]
    return _drop(x, _below_keep_top(x, probs, eta))


def eta_relaxed(ctx, x, e):
    logp = torch.log_softmax(x, dim=-1)
    log_e = torch.log(colt(e, x))
    log_eta = torch.minimum(log_e, 0.5 * log_e - entropy_kernel(ctx, x)[:, None])
    return apply_soft_mask(x, _top_mask(x, ctx.sharpness * (logp - log_eta)))


# ----------------------------------------------------------------------------- top-n-sigma


def _n_sigma_cut(x, n):
    """max - n x std of the finite scores of each row (population std), (B, 1)."""
    if not x.requires_grad and all_finite(x):  # no -inf to skip
        d = x - x.sum(-1, keepdim=True) / x.size(-1)
        std = torch.linalg.vector_norm(d, dim=-1, keepdim=True) / x.size(-1) ** 0.5
        return x.amax(-1, keepdim=True) - torch.where(std > 0, col(n, x) * std, 0.0)
    fin = torch.isfinite(x)
    cnt = fin.sum(-1, keepdim=True).clamp(min=1).to(x.dtype)
    vals = torch.where(fin, x, torch.zeros_like(x))
    mean = vals.sum(-1, keepdim=True) / cnt
    var = (torch.where(fin, x - mean, torch.zeros_like(x)) ** 2).sum(-1, keepdim=True) / cnt
    pos = var > 0
    std = torch.where(pos, torch.sqrt(torch.where(pos, var, torch.ones_like(var))),
                      torch.zeros_like(var))  # no NaN gradient at std = 0
    spread = torch.where(pos, col(n, x) * std, torch.zeros_like(std))
    return torch.where(fin, x, NEG_INF).amax(-1, keepdim=True) - spread


def top_n_sigma_exact(ctx, x, n):
    return _drop(x, x < _n_sigma_cut(x, n))


def top_n_sigma_relaxed(ctx, x, n):
    z = ctx.sharpness * (x - _n_sigma_cut(x, n))
    return apply_soft_mask(x, _top_mask(x, z))


# ----------------------------------------------------------------------------- dynamic temperature


def _col64(v, x):
    """A Real as a float64 (B, 1) or 0-dim tensor (the temperature's arithmetic)."""
    v = v.to(torch.float64) if isinstance(v, torch.Tensor) else torch.tensor(
        float(v), dtype=torch.float64, device=x.device)
    return v if v.dim() == 0 else v[:, None]


def _dynamic_temperature(x, t, delta, exponent, relaxed: bool):
    """(B, 1) llama.cpp's temperature, float64: min_t + (max_t - min_t) x (H / log n)^exponent,
    min_t = max(0, t - delta), max_t = t + delta, H the entropy of the softmax over the n
    finite scores; and (B, 1) where it applies (two candidates or more, or range 0)."""
    ent = entropy_kernel(None, x)[:, None].to(torch.float64)
    n = torch.isfinite(x).sum(-1, keepdim=True) if not all_finite(x) \
        else torch.full_like(ent, x.size(-1), dtype=torch.long)
    h = (ent / torch.log(n.clamp(min=2).to(torch.float64))).clamp(0.0, 1.0)  # H <= log n
    if relaxed:
        h = h.clamp(min=DOMAIN_EPS)  # finite gradient of h ** exponent
    w = h ** _col64(exponent, x)
    big = torch.finfo(torch.float64).max
    t, delta = _col64(t, x), _col64(delta, x)
    lo, hi = (t - delta).clamp(min=0.0), (t + delta).clamp(max=big)
    # range 0 is plain temperature, applied to a lone candidate too
    return (lo + (hi - lo) * w).clamp(max=big), (n > 1) | (delta <= 0)


def _divide(x, temp):
    return x / temp.to(x.dtype).clamp(max=torch.finfo(x.dtype).max)


def dynamic_temperature_exact(ctx, x, t, delta, exponent):
    temp, many = _dynamic_temperature(x, t, delta, exponent, relaxed=False)
    out = _divide(x, temp)
    # temp 0 in x's dtype (llama.cpp's temp_impl at temp <= 0; a float64 temperature below
    # the dtype's smallest number rounds to it), or so small that a score / temp overflows
    # (llama.cpp's float32 division then gives inf, and its softmax NaN): only the first
    # top score survives, as at the limit T -> 0
    over = (torch.isinf(out) & torch.isfinite(x)).any(-1, keepdim=True)
    zero = ((temp.to(x.dtype) <= 0) | over) & many
    if bool(zero.any()):
        top = torch.zeros_like(x, dtype=torch.bool).scatter(1, x.argmax(-1, keepdim=True), True)
        out = torch.where(zero, _drop(x, ~top), out)
    return torch.where(many, out, x) if not bool(many.all()) else out


def dynamic_temperature_relaxed(ctx, x, t, delta, exponent):
    temp, many = _dynamic_temperature(x, t, delta, exponent, relaxed=True)
    temp = torch.where(many, temp.clamp(min=DOMAIN_EPS), torch.ones_like(temp))
    return finite_only(lambda v: _divide(v, temp), x)


ENTRIES = [
    entry("temperature", [Arg("L", L), Arg("t", R, POSITIVE, test_range=(0.05, 20.0))], L,
          "transform", "L / t", exact=temperature_exact, relaxed=temperature_relaxed,
          neutral=1.0, merge=operator.mul, keeps_argmax=True, shift="equivariant",
          commutes={"top-k", "repetition-penalty"}, fused=Fused(temperature_fused, rescale=True),
          export={"hf": Export(("temperature",), 1, (1.0,), in_greedy=False),
                  "llama.cpp": Export(("--temp",), neutral=(1.0,), sampler="temperature"),
                  "llama-server": Export(("temperature",), neutral=(1.0,),
                                         sampler="temperature"),
                  "vllm": Export(("temperature",), 2, (1.0,), in_greedy=False),
                  "ollama": Export(("temperature",), 1, (1.0,), in_greedy=False)}),
    entry("top-k", [Arg("L", L), Arg("k", C, test_range=(1, 100))], L, "transform",
          "keep the k highest scores (ties at the k-th kept)", exact=top_k_exact,
          relaxed=top_k_relaxed, neutral="vocab", merge=min, keeps_argmax=True,
          shift="equivariant", fused=Fused(top_k_fused, keeps_top=True),
          export={"hf": Export(("top_k",), 2, (0,), in_greedy=False),
                  "llama.cpp": Export(("--top-k",), neutral=(0,), sampler="top_k"),
                  "llama-server": Export(("top_k",), neutral=(0,), sampler="top_k"),
                  "vllm": Export(("top_k",), 4, (0,), in_greedy=False),
                  "ollama": Export(("top_k",), 0, (0,), in_greedy=False)}),
    entry("top-p", [Arg("L", L), Arg("p", R, PROBABILITY)], L, "transform",
          "nucleus: keep the smallest top set whose probability reaches p", exact=top_p_exact,
          relaxed=top_p_relaxed, keeps_argmax=True, shift="equivariant",
          fused=Fused(top_p_fused, sorts=True),
          export={"hf": Export(("top_p",), 3, (1.0,), in_greedy=False),
                  "llama.cpp": Export(("--top-p",), neutral=(1.0,), sampler="top_p"),
                  "llama-server": Export(("top_p",), neutral=(1.0,), sampler="top_p"),
                  "vllm": Export(("top_p",), 5, (1.0,), in_greedy=False),
                  "ollama": Export(("top_p",), 2, (1.0,), in_greedy=False)}),
    entry("min-p", [Arg("L", L), Arg("p", R, PROBABILITY)], L, "transform",
          "keep tokens whose probability is at least p x the top probability",
          exact=min_p_exact, relaxed=min_p_relaxed, merge=max, keeps_argmax=True,
          shift="equivariant", fused=Fused(min_p_fused),
          export={"hf": Export(("min_p",), 4, (None,), in_greedy=False),
                  "llama.cpp": Export(("--min-p",), neutral=(0.0,), sampler="min_p"),
                  "llama-server": Export(("min_p",), neutral=(0.0,), sampler="min_p"),
                  "vllm": Export(("min_p",), 3, (0.0,), in_greedy=False),
                  "ollama": Export(("min_p",), 3, (0.0,), in_greedy=False)}),
    entry("typical", [Arg("L", L), Arg("p", R, PROBABILITY)], L, "transform",
          "locally typical set of probability mass p", exact=typical_exact,
          relaxed=typical_relaxed, shift="equivariant",
          export={"hf": Export(("typical_p",), 5, (1.0,), in_greedy=False),
                  # llama.cpp's typical sums -p log p over every candidate: the -inf scores
                  # top-n-sigma leaves in the array make its entropy NaN
                  "llama.cpp": Export(("--typical",), neutral=(1.0,), sampler="typ_p",
                                      not_after=frozenset({"top_n_sigma"})),
                  "llama-server": Export(("typical_p",), neutral=(1.0,), sampler="typ_p",
                                         not_after=frozenset({"top_n_sigma"}))}),
    entry("epsilon", [Arg("L", L), Arg("e", R, PROBABILITY, test_range=(0.001, 0.3))], L,
          "transform", "epsilon sampling: keep tokens whose probability is at least e "
          "(transformers EpsilonLogitsWarper)", exact=epsilon_exact, relaxed=epsilon_relaxed,
          keeps_argmax=True, shift="equivariant",
          export={"hf": Export(("epsilon_cutoff",), 6, (0.0,), in_greedy=False)}),
    entry("eta", [Arg("L", L), Arg("e", R, PROBABILITY, test_range=(0.001, 0.3))], L,
          "transform", "eta sampling: keep tokens whose probability is at least "
          "min(e, sqrt(e) exp(-entropy)) (transformers EtaLogitsWarper)", exact=eta_exact,
          relaxed=eta_relaxed, keeps_argmax=True, shift="equivariant",
          export={"hf": Export(("eta_cutoff",), 7, (0.0,), in_greedy=False)}),
    entry("top-n-sigma", [Arg("L", L), Arg("n", R, POSITIVE, test_range=(0.05, 5.0))], L,
          "transform", "keep scores >= max - n x std of the row's finite scores (llama.cpp "
          "src/llama-sampling.cpp llama_sampler_top_n_sigma_apply)", exact=top_n_sigma_exact,
          relaxed=top_n_sigma_relaxed, keeps_argmax=True, shift="equivariant",
          export={"llama.cpp": Export(("--top-nsigma",), neutral=(-1.0,),
                                      sampler="top_n_sigma"),
                  "llama-server": Export(("top_n_sigma",), neutral=(-1.0,),
                                         sampler="top_n_sigma")}),
    entry("dynamic-temperature",
          [Arg("L", L), Arg("t", R, POSITIVE, test_range=(0.05, 20.0)),
           Arg("range", R, NONNEGATIVE, test_range=(0.0, 5.0)),
           Arg("exponent", R, POSITIVE, test_range=(0.1, 4.0))], L, "transform",
          "L / T, T = lo + (t + range - lo) x (H / log n)^exponent, lo = max(0, t - range), "
          "H the entropy over the n finite scores (n = 1: unchanged; T = 0: the top score) "
          "(llama.cpp src/llama-sampling.cpp llama_sampler_temp_ext_apply)",
          exact=dynamic_temperature_exact, relaxed=dynamic_temperature_relaxed,
          keeps_argmax=True, shift="equivariant",
          # llama.cpp's temperature sampler is this one (temp_ext); range 0 = plain. Its
          # entropy is normalised by the array's size, which after top-n-sigma still counts
          # the tokens it set to -inf: a different temperature, so that order is refused
          export={"llama.cpp": Export(("--temp", "--dynatemp-range", "--dynatemp-exp"),
                                      neutral=(1.0, 0.0, 1.0), sampler="temperature",
                                      not_after=frozenset({"top_n_sigma"})),
                  "llama-server": Export(("temperature", "dynatemp_range",
                                          "dynatemp_exponent"), neutral=(1.0, 0.0, 1.0),
                                         sampler="temperature",
                                         not_after=frozenset({"top_n_sigma"}))}),
]
