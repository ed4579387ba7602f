"""Decoding: many programs x many prompts, one batched, KV-cached forward per step.

    answers = decode(model, [prog_a, prog_b], [[5, 7, 2], [9]], max_new_tokens=16,
                     stop_token=1, seed=0)          # answers[p][i]: a Decoding
    answers = decode(model, prog_a, prompts)        # one program: answers[i]

`model` follows `engine_dsl.protocol.LanguageModel`. A program is a Decoder-typed `Expr`, a
`Definition`, or Scheme text. Its shape is always a chain of `vote`/`best-of` layers over a
`greedy` or `sample` of one Logits expression; it runs n1 x n2 x ... "samples" per prompt.

Rows. Every (program, prompt, sample) is one row of one batch; a program with `gated` nodes
adds one extra row ("stream") per gated node that reads the same tokens with that node's head
gates (per-row `head_gates` (B, L, H), ones for plain rows), all in the same forward call.
Prompts are left-padded (attention mask False). Each step, each program's exact module
transforms only its own rows' logits (with their history, last-position residual streams and
gated streams as sources) and picks the next tokens.

Sharing. When the model's cache can be re-indexed (a `select_cache(cache, index)` method, or a
cache made only of tensors / lists / tuples / dicts / dataclasses whose tensors all have the
batch on dim 0), each distinct (prompt, gates) prefix is run once and its cache copied to all
rows that start with it, and rows that finished (stop token or length cap) are dropped from
the batch once at least a quarter of it has finished. Otherwise every row runs from the start
and finished rows keep running (their outputs are ignored).

Common random numbers. `sample` draws by inverse CDF with u = uniform(seed, prompt i,
sample j, step t), a splitmix64 hash of those four integers computed in int64 torch ops: the
same for every program and every batch composition. So decoding P programs together gives
the same answers as decoding each alone (up to float rounding of the model's batched matmuls;
exact for the test stand-in), and comparing programs compares them on the same draws.

Per answer (`Decoding`): token ids (without the stop token), whether it stopped, cost = model
forward positions computed for it (per stream: prompt + generated - 1, since the last token
is never fed back; summed over streams and samples), and the answer's log-likelihood under
the plain model (sum of log-softmax of the final logits at each chosen token, stop included).
vote picks the most frequent answer (ties: highest log-likelihood, then first sample);
best-of the highest log-likelihood; their cost is the sum over their samples.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import semantics as sem
from .compile import LogitsProgram
from .nodes import Apply, Definition, Expr, type_of
from .types import Type


@dataclass
class Decoding:
    """One answer of one program to one prompt."""

    tokens: list[int]  # generated ids, stop token excluded
    stopped: bool  # ended on the stop token (False: hit the length cap)
    cost: int  # model forward positions spent on this answer (all samples and streams)
    log_likelihood: float  # of the tokens (stop included) under the plain model


@dataclass
class DecoderPlan:
    """A Decoder program as its layers (outer first), base step rule and Logits program."""

    expr: Expr
    layers: list[tuple[str, int]]  # ("vote" | "best-of", n), outermost first
    base: str  # "greedy" | "sample"
    logits_expr: Expr
    module: LogitsProgram

    @property
    def samples(self) -> int:
        return math.prod(n for _, n in self.layers)


def plan(program: Expr | Definition | str) -> DecoderPlan:
    """Split a Decoder program into its vote/best-of layers, base rule and Logits program."""
    if isinstance(program, str):
        from .checker import read_expr

        program = read_expr(program, Type.DECODER)
    expr = program.body if isinstance(program, Definition) else program
    if type_of(expr) is not Type.DECODER:
        raise ValueError(f"expected a Decoder program, got a {type_of(expr)} expression")
    layers, node = [], expr
    while isinstance(node, Apply) and node.op in ("vote", "best-of"):
        layers.append((node.op, int(node.args[0].value)))
        node = node.args[1]
    assert isinstance(node, Apply) and node.op in ("greedy", "sample"), node
    return DecoderPlan(expr, layers, node.op, node.args[0], LogitsProgram(node.args[0]))


# ----------------------------------------------------------------------------- random numbers

_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_M2 = 0x94D049BB133111EB - (1 << 64)


def _srl(z: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns."""
    return (z >> n) & ((1 << (64 - n)) - 1)


def _mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (wrap-around arithmetic)."""
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    return z ^ _srl(z, 31)


def uniforms(seed: int, prompt: torch.Tensor, sample: torch.Tensor, step: int) -> torch.Tensor:
    """u in [0, 1) (float64, one per row) depending only on (seed, prompt, sample, step)."""
    seed = int(seed) & ((1 << 64) - 1)
    seed = seed - (1 << 64) if seed >= 1 << 63 else seed
    z = torch.full_like(prompt, seed, dtype=torch.int64)
    for v in (prompt.to(torch.int64), sample.to(torch.int64),
              torch.full_like(prompt, int(step), dtype=torch.int64)):
        z = _mix64(z + _GOLDEN) ^ v
    z = _mix64(z + _GOLDEN)
    return _srl(z, 11).to(torch.float64) * (2.0 ** -53)


# ----------------------------------------------------------------------------- caches


def _tensors_batched(obj: Any, batch: int) -> bool:
    if isinstance(obj, torch.Tensor):
        return obj.dim() >= 1 and obj.size(0) == batch
    if obj is None or isinstance(obj, (int, float, str, bool)):
        return True
    if isinstance(obj, (list, tuple)):
        return all(_tensors_batched(o, batch) for o in obj)
    if isinstance(obj, dict):
        return all(_tensors_batched(o, batch) for o in obj.values())
    if dataclasses.is_dataclass(obj):
        return all(_tensors_batched(getattr(obj, f.name), batch)
                   for f in dataclasses.fields(obj))
    return False


def _select(obj: Any, index: torch.Tensor) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.index_select(0, index)
    if isinstance(obj, list):
        return [_select(o, index) for o in obj]
    if isinstance(obj, tuple):
        return tuple(_select(o, index) for o in obj)
    if isinstance(obj, dict):
        return {k: _select(v, index) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(obj, **{f.name: _select(getattr(obj, f.name), index)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj


def _cache_selector(model, cache, batch: int):
    """A function (cache, index) -> cache, or None if this cache cannot be re-indexed."""
    if hasattr(model, "select_cache"):
        return model.select_cache
    if _tensors_batched(cache, batch):
        return _select
    return None


# ----------------------------------------------------------------------------- decoding


def _as_list(programs):
    single = isinstance(programs, (str, Definition)) or not isinstance(programs, Sequence)
    return ([programs] if single else list(programs)), single


@torch.no_grad()
def decode(model, programs, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 32,
           stop_token: int | None = None, seed: int = 0, pad_token: int = 0,
           share: bool = True):
    """Decode every program on every prompt in one batch per step (see the module doc).

    Returns answers[p][i] (a `Decoding`) for a list of programs, answers[i] for one program.
    `share=False` disables prefix sharing and compaction (a plainer reference path).
    """
    progs, single = _as_list(programs)
    plans = [p if isinstance(p, DecoderPlan) else plan(p) for p in progs]
    prompts = [list(map(int, p)) for p in prompts]
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    N, L, H = len(prompts), model.n_layer, model.n_head
    device = next((t.device for t in _model_tensors(model)), torch.device("cpu"))

    # -- rows: per program, main rows (i, j) then one block per gated stream
    prog, stream, prompt_of, sample_of, gate_key = [], [], [], [], []
    gates_of: list[torch.Tensor] = []
    needs_residuals = any("residuals" in pl.module.reads for pl in plans)
    for p, pl in enumerate(plans):
        gates = pl.module.gate_values(L, H) if pl.module.n_gated else []
        for s in range(1 + len(gates)):
            for i in range(N):
                for j in range(pl.samples):
                    prog.append(p)
                    stream.append(s)
                    prompt_of.append(i)
                    sample_of.append(j)
                    gate_key.append(None if s == 0 else (p, s))
            if s:
                gates_of.append(gates[s - 1])
    R = len(prog)
    prog_t = torch.tensor(prog)
    stream_t = torch.tensor(stream)
    prompt_t = torch.tensor(prompt_of)
    sample_t = torch.tensor(sample_of)
    any_gated = any(pl.module.n_gated for pl in plans)
    gate_rows = None
    if any_gated:
        gate_rows = torch.ones(R, L, H, device=device)
        k = 0
        for p, pl in enumerate(plans):
            for s in range(1, 1 + pl.module.n_gated):
                rows = ((prog_t == p) & (stream_t == s)).nonzero().squeeze(1)
                gate_rows[rows] = gates_of[k].to(device=device, dtype=gate_rows.dtype)
                k += 1

    # -- prompts, left padded
    P = max(len(p) for p in prompts)
    prompt_ids = torch.full((N, P), pad_token, dtype=torch.long)
    prompt_mask = torch.zeros(N, P, dtype=torch.bool)
    for i, p in enumerate(prompts):
        prompt_ids[i, P - len(p):] = torch.tensor(p)
        prompt_mask[i, P - len(p):] = True
    prompt_hist = torch.where(prompt_mask, prompt_ids, -1)  # -1 = padding in history
    prompt_len = prompt_mask.sum(1)

    # -- prefill: each distinct (prompt, gates) once, then copy to the rows
    keys = sorted({(prompt_of[r], gate_key[r]) for r in range(R)},
                  key=lambda k: (k[1] is not None, k[1] or (0, 0), k[0]))
    key_index = {k: u for u, k in enumerate(keys)}
    U = len(keys)
    u_prompt = torch.tensor([k[0] for k in keys])
    u_gates = None
    if any_gated:
        u_gates = torch.ones(U, L, H, device=device)
        for u, (_, g) in enumerate(keys):
            if g is not None:
                first = next(r for r in range(R) if gate_key[r] == g)
                u_gates[u] = gate_rows[first]
    select = None
    if share:
        out = model.forward_step(prompt_ids[u_prompt].to(device),
                                 attention_mask=prompt_mask[u_prompt].to(device),
                                 head_gates=u_gates)
        select = _cache_selector(model, out.cache, U)
    if select is not None:
        row_key = torch.tensor([key_index[(prompt_of[r], gate_key[r])] for r in range(R)])
        k_dev = row_key.to(device)
        cache = select(out.cache, k_dev)
        logits = out.logits[:, -1].index_select(0, k_dev)
        residuals = [h[:, -1].index_select(0, k_dev) for h in out.residuals]
    else:  # run every row's prompt itself
        out = model.forward_step(prompt_ids[prompt_t].to(device),
                                 attention_mask=prompt_mask[prompt_t].to(device),
                                 head_gates=gate_rows)
        cache = out.cache
        logits = out.logits[:, -1]
        residuals = [h[:, -1] for h in out.residuals]
    mask = prompt_mask[prompt_t].to(device)

    gen = torch.full((R, max_new_tokens), -1, dtype=torch.long)
    gen_len = torch.zeros(R, dtype=torch.long)
    stopped = torch.zeros(R, dtype=torch.bool)
    ll = torch.zeros(R, dtype=torch.float64)
    done = torch.zeros(R, dtype=torch.bool)
    rid = torch.arange(R)  # original row id of each row in the batch
    finished_in_batch = 0

    for t in range(max_new_tokens):
        tok = torch.zeros(rid.numel(), dtype=torch.long)
        p_of = prog_t[rid]
        s_of = stream_t[rid]
        live = ~done[rid]
        for p, pl in enumerate(plans):
            main = ((p_of == p) & (s_of == 0) & live).nonzero().squeeze(1)
            if main.numel() == 0:
                continue
            m_dev = main.to(device)
            hist = torch.cat([prompt_hist[prompt_t[rid[main]]], gen[rid[main], :t]], dim=1)
            streams = [((p_of == p) & (s_of == s) & live).nonzero().squeeze(1).to(device)
                       for s in range(1, 1 + pl.module.n_gated)]
            src = sem.Sources(
                logits=logits.index_select(0, m_dev), history=hist.to(device),
                residuals=[h.index_select(0, m_dev) for h in residuals]
                if needs_residuals and "residuals" in pl.module.reads else None,
                lens=model.lens, n_layer=L, n_head=H,
                gated=[logits.index_select(0, s) for s in streams] if streams else None)
            y = pl.module(sources=src, mode="exact")
            if pl.base == "greedy":
                chosen = sem.greedy_exact(None, y)
            else:
                u = uniforms(seed, prompt_t[rid[main]], sample_t[rid[main]], t)
                chosen = sem.sample_exact(None, y, u)
            chosen = chosen.cpu()
            lp = torch.log_softmax(src.logits.double(), dim=-1)
            ll[rid[main]] += lp.gather(1, chosen.to(device)[:, None]).squeeze(1).cpu()
            tok[main] = chosen
            for s_rows in streams:
                tok[s_rows.cpu()] = chosen
        rows = rid[live]
        gen[rows, t] = tok[live]
        gen_len[rows] += 1
        hit_stop = (tok == stop_token) if stop_token is not None else torch.zeros_like(live)
        stopped[rows] = hit_stop[live]
        newly = live & (hit_stop | torch.tensor(t + 1 >= max_new_tokens))
        done[rid[newly]] = True
        if bool(done.all()):
            break
        finished_in_batch += int(newly.sum())
        if select is not None and finished_in_batch * 4 >= rid.numel():
            keep = (~done[rid]).nonzero().squeeze(1)
            k_dev = keep.to(device)
            cache = select(cache, k_dev)
            mask = mask.index_select(0, k_dev)
            tok = tok[keep]
            rid = rid[keep]
            finished_in_batch = 0
        mask = torch.cat([mask, torch.ones(rid.numel(), 1, dtype=torch.bool, device=device)],
                         dim=1)
        out = model.forward_step(tok[:, None].to(device), attention_mask=mask, cache=cache,
                                 head_gates=None if gate_rows is None
                                 else gate_rows.index_select(0, rid.to(device)))
        cache = out.cache
        logits = out.logits[:, -1]
        residuals = [h[:, -1] for h in out.residuals] if needs_residuals else []

    # -- answers: samples -> vote / best-of layers, innermost first
    results: list[list[Decoding]] = []
    for p, pl in enumerate(plans):
        n_streams = 1 + pl.module.n_gated
        per_prompt = []
        for i in range(N):
            cands = []
            for j in range(pl.samples):
                r = ((prog_t == p) & (stream_t == 0) & (prompt_t == i) & (sample_t == j)) \
                    .nonzero().item()
                g = int(gen_len[r])
                toks = gen[r, :g].tolist()
                if stopped[r]:
                    toks = toks[:-1]
                cost = n_streams * (int(prompt_len[i]) + g - 1)
                cands.append(Decoding(toks, bool(stopped[r]), cost, float(ll[r])))
            for op, n in reversed(pl.layers):
                choose = sem.KERNELS[op].exact
                nxt = []
                for g0 in range(0, len(cands), n):
                    group = cands[g0:g0 + n]
                    best = group[choose(None, n, [(tuple(c.tokens), c.log_likelihood)
                                                  for c in group])]
                    nxt.append(dataclasses.replace(best, cost=sum(c.cost for c in group)))
                cands = nxt
            assert len(cands) == 1
            per_prompt.append(cands[0])
        results.append(per_prompt)
    return results[0] if single else results


def decode_each(model, programs, prompts, **kw):
    """Reference: decode program by program (same answers as `decode`, more forwards)."""
    progs, single = _as_list(programs)
    out = [decode(model, p if isinstance(p, DecoderPlan) else plan(p), prompts, **kw)
           for p in progs]
    return out[0] if single else out


def _model_tensors(model):
    params = getattr(model, "parameters", None)
    if callable(params):
        yield from params()


__all__ = ["Decoding", "DecoderPlan", "decode", "decode_each", "plan", "uniforms"]
