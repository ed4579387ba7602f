"""Samplers that draw or adapt: llama.cpp's XTC (a random draw per row and step, from the
common random numbers) and mirostat v2 (a per-row target mu carried across steps).

Both follow llama.cpp's src/llama-sampling.cpp: `llama_sample_xtc_apply` and
`llama_sampler_mirostat_v2_apply`, as logits transforms (llama.cpp's mirostat also samples;
here a chooser does, and the node's `update` sees the token it chose).
"""

from __future__ import annotations

import math

from ..types import POSITIVE, PROBABILITY, Type
from . import Arg, Export, entry
from ._torch import BIG, NEG_INF, F, apply_soft_mask, col, torch

L, R = Type.LOGITS, Type.REAL
LN2 = math.log(2.0)
MU_BOUND = 1e300  # mu stays finite (an update of two huge constants would give inf - inf)
WARMUP = 16  # at most this many expected mu updates without carried state (see mirostat)


def _per_row(v, B, device):
    """A Real as a (B,) float64 tensor (keeps the gradient of a tensor)."""
    t = torch.as_tensor(v, dtype=torch.float64, device=device) if not isinstance(
        v, torch.Tensor) else v.to(device=device, dtype=torch.float64)
    return t.expand(B) if t.dim() == 0 else t


def _top(x):
    return torch.zeros_like(x, dtype=torch.bool).scatter(1, x.argmax(-1, keepdim=True), True)


# ----------------------------------------------------------------------------- XTC


def _next_probability(x):
    """(B, V): for each token, the probability of the one right below it in llama.cpp's order
    (probability descending; equal ones in token order), -1 for the last candidate.
    Excluded tokens are no candidates."""
    fin = torch.isfinite(x)
    p = torch.where(fin, torch.softmax(x, -1), -1.0)
    ps, order = torch.sort(p.detach(), stable=True, dim=-1, descending=True)
    ps = p.gather(1, order)  # with its gradient
    nxt = torch.cat([ps[:, 1:], torch.full_like(ps[:, :1], -1.0)], 1)
    return torch.empty_like(nxt).scatter(1, order, nxt)


def _fires(ctx, x, probability):
    u = ctx.uniform().to(device=x.device, dtype=torch.float64)
    return u, u <= _per_row(probability, x.size(0), x.device)  # llama.cpp: chance > p: no-op


def xtc_exact(ctx, x, threshold, probability):
    """Only the rows whose draw fires, and in them only the candidates that can reach the
    threshold (at most 1/threshold + 1 of them: a top-k, not a sort)."""
    u, fire = _fires(ctx, x, probability)
    thr = _per_row(threshold, x.size(0), x.device).to(x.dtype)  # compared as llama.cpp's floats
    fire = fire & (thr <= 0.5)  # llama.cpp: threshold > 0.5 leaves the row as it is
    rows = fire.nonzero().squeeze(1)
    if rows.numel() == 0:
        return x
    xs, t = x[rows], thr[rows][:, None]
    V = x.size(-1)
    k = min(V, int(1.0 / max(float(t.min()), 1e-300)) + 2) if float(t.min()) > 0 else V
    p = torch.where(torch.isfinite(xs), torch.softmax(xs, -1), -1.0)
    top, idx = torch.topk(p, k, -1)
    top, idx = top.gather(1, idx.argsort(-1)), idx.sort(-1).values  # token order, then
    ps, o = torch.sort(top, stable=True, dim=-1, descending=True)  # llama.cpp's order
    nxt = torch.cat([ps[:, 1:], torch.full_like(ps[:, :1], -1.0)], 1)
    if k == V:
        cut = nxt >= t
    else:  # the k-th candidate is below the threshold (fewer than k reach it)
        cut = (nxt >= t) & (torch.arange(k, device=x.device) < k - 1)
    drop = torch.zeros_like(cut).scatter(1, o, cut)
    out = x.clone()
    out[rows] = xs.scatter(1, idx, torch.where(drop, NEG_INF, xs.gather(1, idx)))
    return out


def xtc_relaxed(ctx, x, threshold, probability):
    """Removal of a token has soft probability a x b: a = sigmoid(s (probability - u)) (the
    draw fires), b = sigmoid(s (p_next - threshold)) (a less likely token is above the
    threshold too); the kept mask is 1 - a b."""
    u = ctx.uniform().to(device=x.device, dtype=x.dtype)
    s = ctx.sharpness
    za = s * (col(probability, x) - u[:, None])
    zb = s * (_next_probability(x) - col(threshold, x))
    lab = (F.logsigmoid(za) + F.logsigmoid(zb)).clamp(max=-1e-30)
    z = torch.log(-torch.expm1(lab)) - lab  # logit of 1 - a b
    return apply_soft_mask(x, z)


# ----------------------------------------------------------------------------- mirostat v2


def _kept(x, mu):
    """llama.cpp: keep the tokens whose surprise -log2 p is at most mu (at least the top)."""
    return (-torch.log2(torch.softmax(x, -1)) <= col(mu, x)) | _top(x)


def _soft_z(ctx, x, mu):
    z = ctx.sharpness * (col(mu, x) + torch.log_softmax(x, -1) / LN2)
    return torch.where(_top(x), torch.full_like(z, BIG), z)


def _truncate(ctx, x, mu, relaxed: bool):
    if relaxed:
        return apply_soft_mask(x, _soft_z(ctx, x, mu))
    return x.masked_fill(~_kept(x, mu), NEG_INF)


def _step(mu, surprise, tau, eta):
    """mu - eta (observed surprise - tau), kept finite."""
    return (mu - eta * (surprise - tau)).clamp(-MU_BOUND, MU_BOUND)


def _mu(ctx, x, tau, eta, relaxed: bool):
    """This step's mu per row: the carried state (first step: 2 tau); without carried state
    (teacher-forced scoring and tuning) the mu after one expected update per answer token so
    far (at most WARMUP), each with this step's distribution and its expected surprise."""
    B, dev = x.size(0), x.device
    tau_r = _per_row(tau, B, dev)
    init = (2 * tau_r).clamp(-MU_BOUND, MU_BOUND)
    if ctx.sources.state is not None:
        return ctx.state(lambda: init.detach()).to(dev)
    n = (ctx.need("generated") >= 0).sum(-1).to(dev).clamp(max=WARMUP)
    mu, eta_r = init, _per_row(eta, B, dev)
    for k in range(int(n.max()) if n.numel() else 0):
        logq = torch.log_softmax(_truncate(ctx, x, mu, relaxed), -1)
        safe = torch.where(torch.isfinite(logq), logq, torch.zeros_like(logq))
        expected = -(safe.exp() * safe).sum(-1).to(torch.float64) / LN2
        mu = torch.where(n > k, _step(mu, expected, tau_r, eta_r), mu)
    return mu


def mirostat_exact(ctx, x, tau, eta):
    return _truncate(ctx, x, _mu(ctx, x, tau, eta, False), False)


def mirostat_relaxed(ctx, x, tau, eta):
    return _truncate(ctx, x, _mu(ctx, x, tau, eta, True), True)


def mirostat_update(mu, out, chosen, x, tau, eta):
    """llama.cpp: observed surprise = -log2 p of the chosen token among the kept ones (this
    node's output, renormalised); mu -= eta (observed - tau). A token this node excluded
    (another `if` branch chose it) leaves mu as it was."""
    B, dev = out.size(0), out.device
    p = torch.softmax(out, -1).gather(1, chosen[:, None]).squeeze(1)
    observed = (-torch.log2(p)).to(torch.float64)
    new = _step(mu, observed, _per_row(tau, B, dev), _per_row(eta, B, dev))
    return torch.where(torch.isfinite(observed), new, mu)


ENTRIES = [
    entry("xtc", [Arg("L", L), Arg("threshold", R, PROBABILITY, test_range=(0.05, 0.6)),
                  Arg("probability", R, PROBABILITY)], L, "transform",
          "exclude top choices (llama.cpp `llama_sample_xtc_apply`): with the given "
          "probability per row and step (a draw from the common random numbers), drop every "
          "token whose probability is at least threshold except the least likely of them "
          "(equal probabilities: the last in token order stays); threshold > 0.5 does nothing",
          exact=xtc_exact, relaxed=xtc_relaxed, reads={"uniform"}, shift="equivariant",
          export={"llama.cpp": Export(("--xtc-threshold", "--xtc-probability"),
                                      neutral=(0.1, 0.0), sampler="xtc"),
                  "llama-server": Export(("xtc_threshold", "xtc_probability"),
                                         neutral=(0.1, 0.0), sampler="xtc")}),
    entry("mirostat", [Arg("L", L), Arg("tau", R, POSITIVE, test_range=(0.5, 10.0)),
                       Arg("eta", R, POSITIVE, test_range=(0.01, 1.0))], L, "transform",
          "mirostat v2 (llama.cpp `llama_sampler_mirostat_v2_apply`): keep the tokens whose "
          "surprise -log2 p is at most mu (at least the top one); mu starts at 2 tau per row "
          "and after each chosen token becomes mu - eta (-log2 p(chosen among the kept) - "
          "tau). Scoring and tuning carry no state: mu is then the one after an expected "
          "update per answer token so far (at most 16)",
          exact=mirostat_exact, relaxed=mirostat_relaxed, reads={"state", "generated"},
          keeps_argmax=True, shift="equivariant", update=mirostat_update,
          # llama.cpp's common sampler: mirostat 2 = temp, then mirostat v2 (no other sampler)
          export={"llama.cpp": Export(("--mirostat-ent", "--mirostat-lr"), neutral=(5.0, 0.1),
                                      mode=("--mirostat", 2, 0),
                                      alone_after=frozenset({"--temp"})),
                  "llama-server": Export(("mirostat_tau", "mirostat_eta"), neutral=(5.0, 0.1),
                                         mode=("mirostat", 2, 0),
                                         alone_after=frozenset({"temperature"}))}),
]
