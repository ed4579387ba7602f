"""Decoding: many programs x many prompts in one batch, KV-cached forwards each step.

    answers = decode(model, [prog_a, prog_b], [[5, 7, 2], [9]], max_new_tokens=16,
                     stop_token=1, seed=0)          # answers[p][i]: a Decoding
    answers = decode(model, prog_a, prompts)        # one program: answers[i]

`model` follows `engine_dsl.protocol.LanguageModel`. A program is a Decoder-typed `Expr`, a
`Definition`, or Scheme text. Its shape is always a chain of `vote`/`best-of` layers over a
`greedy` or `sample` of one Logits expression; it runs n1 x n2 x ... "samples" per prompt.

Rows. Every (program, prompt, sample) is one row of one batch; a program with `gated` nodes
adds one extra row ("stream") per gated node that reads the same tokens with that node's head
gates (per-row `head_gates` (B, L, H), ones for plain rows). Rows are laid out program by
program (greedy programs' rows first, then sampling programs', then the gated streams), so
each program's rows are one contiguous slice of the step's logits. Prompts are left-padded
(attention mask False). Each step, each program's exact module transforms only its own rows'
logits (with their history - built only for programs that read it -, last-position residual
streams and gated streams as sources); then one argmax picks the tokens of all greedy rows
and one inverse-CDF draw those of all sampling rows (row by row the same operations as per
program). Identical programs (same structure and constants, `DecoderPlan`s compared by their
current constant values) are decoded once and their answers copied.

Chunks. On the CPU the rows run through the model in chunks of `CHUNK_ROWS` rows, each with
its own cache (`chunk_rows`): a KV-cached step is bound by the model copying its cache, and
small buffers are reused by the allocator and stay in cache (about twice as fast for 16k
rows). Per row the model sees the same inputs, so answers do not depend on the chunking (up
to float rounding of batched matmuls, as below).

Sharing. When the model's cache can be re-indexed (a `select_cache(cache, index)` method, or a
cache made only of tensors / lists / tuples / dicts / dataclasses whose tensors all have the
batch on dim 0), each distinct (prompt, gates) prefix is run once and its cache copied to all
rows that start with it, and rows that finished (stop token or length cap) are dropped from
the batch (each chunk's cache re-indexed on its own) once at least a quarter of it has
finished. Otherwise every row runs from the start and finished rows keep running (their
outputs are ignored). `share=False` also turns off the merging of identical programs.

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


def _plan_key(pl: DecoderPlan):
    """Identity of a plan's behaviour (structure and current constants), or None."""
    try:
        key = (pl.base, tuple(pl.layers), pl.logits_expr, tuple(pl.module.values()))
        hash(key)
    except TypeError:
        return None
    return key


@dataclass
class _Block:
    """One distinct program's rows: main rows [start, start + n) in (prompt, sample) order,
    then one block of n rows per gated stream at stream_starts."""

    plan: DecoderPlan
    start: int
    n: int
    stream_starts: list[int]
    reads_history: bool
    reads_residuals: bool
    samples: int = 1


CHUNK_ROWS = 1024  # rows per forward call on the CPU (see `chunk_rows`)


def chunk_rows(device: torch.device) -> int | None:
    """Rows per model call when decoding on `device` (None: the whole batch in one call).

    On the CPU a KV-cached step is bound by copying the cache (the model appends the new
    keys and values with `torch.cat`); chunks of about a thousand rows keep those buffers
    small enough to be reused by the allocator and to stay in cache, which halves the step
    time of a 16k-row batch (measured: 14.9 s -> 6.2 s for 64 x 256 rows x 8 tokens on the
    default GPT). Accelerators want the whole batch in one call.
    """
    return CHUNK_ROWS if torch.device(device).type == "cpu" else None


def _last_positions(outs, with_residuals: bool):
    """Last-position logits and residual streams of chunked model outputs, concatenated."""
    if len(outs) == 1:
        o = outs[0]
        return o.logits[:, -1], [h[:, -1] for h in o.residuals] if with_residuals else []
    logits = torch.cat([o.logits[:, -1] for o in outs])
    if not with_residuals:
        return logits, []
    return logits, [torch.cat([o.residuals[k][:, -1] for o in outs])
                    for k in range(len(outs[0].residuals))]


def _take(x: torch.Tensor, sel: slice | torch.Tensor) -> torch.Tensor:
    return x[sel] if isinstance(sel, slice) else x.index_select(0, sel)


@torch.no_grad()
def decode(model, programs, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 32,
           stop_token: int | None = None, seed: int = 0, pad_token: int = 0,
           share: bool = True):
    """Decode every program on every prompt in one batch per step (see the module doc).

    Returns answers[p][i] (a `Decoding`) for a list of programs, answers[i] for one program.
    `share=False` disables prefix sharing, compaction and the merging of identical programs
    (a plainer reference path).
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

    # -- identical programs (same structure and constants) decode once
    slot_of, distinct, seen = [], [], {}
    for pl in plans:
        key = _plan_key(pl) if share else None
        if key is None or key not in seen:
            if key is not None:
                seen[key] = len(distinct)
            slot_of.append(len(distinct))
            distinct.append(pl)
        else:
            slot_of.append(seen[key])

    # -- rows: main rows of greedy programs, then of sampling programs, then gated streams.
    # Each program's rows are contiguous, so its logits are a slice of the batch.
    order = sorted(range(len(distinct)), key=lambda q: distinct[q].base != "greedy")
    blocks: list[_Block] = [None] * len(distinct)  # type: ignore[list-item]
    cursor = 0
    for q in order:
        pl = distinct[q]
        blocks[q] = _Block(pl, cursor, N * pl.samples, [], "history" in pl.module.reads,
                           "residuals" in pl.module.reads, pl.samples)
        cursor += N * pl.samples
    R_main = cursor
    G_main = sum(blocks[q].n for q in order if distinct[q].base == "greedy")
    gates_of: list[torch.Tensor] = []  # one (L, H) per gated stream, in row order
    for q in order:
        b = blocks[q]
        if b.plan.module.n_gated:
            for g in b.plan.module.gate_values(L, H):
                b.stream_starts.append(cursor)
                gates_of.append(g)
                cursor += b.n
    R = cursor
    # per row: prompt, sample, gated stream (0 = plain) and its main row
    prompt_parts, sample_parts, gate_parts, main_parts = [], [], [], []
    k = 0
    for q in order:
        b = blocks[q]
        S = b.plan.samples
        pr = torch.arange(N).repeat_interleave(S)
        sa = torch.arange(S).repeat(N)
        mr = torch.arange(b.start, b.start + b.n)
        prompt_parts.append(pr)
        sample_parts.append(sa)
        gate_parts.append(torch.zeros(b.n, dtype=torch.long))
        main_parts.append(mr)
    for q in order:
        b = blocks[q]
        S = b.plan.samples
        for _ in b.stream_starts:
            k += 1
            prompt_parts.append(torch.arange(N).repeat_interleave(S))
            sample_parts.append(torch.arange(S).repeat(N))
            gate_parts.append(torch.full((b.n,), k, dtype=torch.long))
            main_parts.append(torch.arange(b.start, b.start + b.n))
    prompt_t = torch.cat(prompt_parts)
    sample_t = torch.cat(sample_parts)
    gate_t = torch.cat(gate_parts)
    main_t = torch.cat(main_parts)
    n_gates = len(gates_of)
    gate_rows = None
    if n_gates:
        table = torch.stack([torch.ones(L, H)] + [g.float() for g in gates_of]).to(device)
        gate_rows = table.index_select(0, gate_t.to(device))  # (R, L, H)

    # -- prompts, left padded
    P = max(len(p) for p in prompts)
    prompt_ids = torch.full((N, P), pad_token, dtype=torch.long)
    prompt_mask = torch.zeros(N, P, dtype=torch.bool)
    for i, p in enumerate(prompts):
        prompt_ids[i, P - len(p):] = torch.tensor(p)
        prompt_mask[i, P - len(p):] = True
    prompt_hist = torch.where(prompt_mask, prompt_ids, -1)  # -1 = padding in history
    prompt_len = prompt_mask.sum(1)

    # -- prefill: each distinct (gates, prompt) once (unit g * N + i), then copy to the rows
    select = None
    if share:
        u_prompt = torch.arange(N).repeat(1 + n_gates)
        u_gates = None
        if n_gates:
            u_gates = table.repeat_interleave(N, dim=0)
        out = model.forward_step(prompt_ids[u_prompt].to(device),
                                 attention_mask=prompt_mask[u_prompt].to(device),
                                 head_gates=u_gates)
        select = _cache_selector(model, out.cache, N * (1 + n_gates))
    # the batch runs as consecutive chunks of rows, each with its own cache: [rows, cache]
    chunk = chunk_rows(device) or R
    spans = [(c0, min(c0 + chunk, R)) for c0 in range(0, R, chunk)]
    if select is not None:
        k_dev = (gate_t * N + prompt_t).to(device)
        parts = [[c1 - c0, select(out.cache, k_dev[c0:c1])] for c0, c1 in spans]
        logits = out.logits[:, -1].index_select(0, k_dev)
        residuals = [h[:, -1].index_select(0, k_dev) for h in out.residuals]
    else:  # run every row's prompt itself
        outs = [model.forward_step(prompt_ids[prompt_t[c0:c1]].to(device),
                                   attention_mask=prompt_mask[prompt_t[c0:c1]].to(device),
                                   head_gates=None if gate_rows is None else gate_rows[c0:c1])
                for c0, c1 in spans]
        parts = [[c1 - c0, o.cache] for (c0, c1), o in zip(spans, outs, strict=True)]
        logits, residuals = _last_positions(outs, True)
    mask = prompt_mask[prompt_t].to(device)
    needs_residuals = any(b.reads_residuals for b in blocks)

    gen = torch.full((R, max_new_tokens), -1, dtype=torch.long)
    gen_len = torch.zeros(R, dtype=torch.long)
    stopped = torch.zeros(R, dtype=torch.bool)
    ll = torch.zeros(R, dtype=torch.float64)
    done = torch.zeros(R, dtype=torch.bool)
    rid = torch.arange(R)  # original row id of each row in the batch (ascending)
    finished_in_batch = 0
    # block boundaries as original row ids; in the batch they are searchsorted(rid, ...)
    edges = torch.tensor(sorted({0, G_main, R_main, R}
                                | {b.start for b in blocks} | {b.start + b.n for b in blocks}
                                | {s for b in blocks for s in b.stream_starts}
                                | {s + b.n for b in blocks for s in b.stream_starts}))
    edge_list = edges.tolist()
    main_pos = main_t  # position of each row's main row in the batch

    for t in range(max_new_tokens):
        B = rid.numel()
        live_t = ~done[rid]
        all_live = bool(live_t.all())
        if B == R:
            at = dict(zip(edge_list, edge_list, strict=True))
        else:
            at = dict(zip(edge_list, torch.searchsorted(rid, edges).tolist(), strict=True))
        M, G = at[R_main], at[G_main]
        if not all_live:
            n_live = torch.cat([torch.zeros(1, dtype=torch.long), live_t.long().cumsum(0)])
        main_logits = logits[:M]
        Y = torch.empty_like(main_logits) if all_live else torch.zeros_like(main_logits)
        separate = []  # (position index or slice, chosen) of programs sampled on their own
        for b in blocks:
            a, e = at[b.start], at[b.start + b.n]
            if a == e:
                continue
            idx = None
            if not all_live:
                alive = int(n_live[e] - n_live[a])
                if alive == 0:
                    continue
                if alive < e - a:
                    idx = live_t[a:e].nonzero().squeeze(1)
            if idx is None:  # every row of the block is live: slices, no copies
                rows = rid[a:e]
                sel: slice | torch.Tensor = slice(a, e)
                streams = [logits[at[s0]:at[s0] + e - a] for s0 in b.stream_starts]
            else:
                rows = rid[a + idx]
                i_dev = idx.to(device)
                sel = i_dev + a
                streams = [logits.index_select(0, i_dev + at[s0]) for s0 in b.stream_starts]
            hist = None
            if b.reads_history:
                hist = torch.cat([prompt_hist[prompt_t[rows]], gen[rows, :t]], dim=1).to(device)
            src = sem.Sources(
                logits=_take(logits, sel), history=hist,
                residuals=[_take(h, sel) for h in residuals] if b.reads_residuals else None,
                lens=model.lens, n_layer=L, n_head=H, gated=streams or None)
            y = b.plan.module(sources=src, mode="exact")
            if y.dtype != Y.dtype or y.shape != src.logits.shape:
                # unusual output: choose this program's tokens on its own (as before)
                if b.plan.base == "greedy":
                    chosen = sem.greedy_exact(None, y)
                else:
                    u = uniforms(seed, prompt_t[rows], sample_t[rows], t)
                    chosen = sem.sample_exact(None, y, u)
                separate.append((slice(a, e) if idx is None else a + idx, chosen))
            elif idx is None:
                Y[a:e] = y
            else:
                Y.index_copy_(0, (a + idx).to(device), y)
        # one argmax for all greedy rows, one inverse-CDF draw for all sampling rows
        chosen = torch.zeros(M, dtype=torch.long, device=device)
        if G:
            chosen[:G] = sem.greedy_exact(None, Y[:G])
        if M > G:
            rows = rid[G:M]
            u = uniforms(seed, prompt_t[rows], sample_t[rows], t).to(device)
            step = chunk_rows(device) or M - G
            for c0 in range(G, M, step):  # row by row the same; small buffers are faster
                c1 = min(c0 + step, M)
                chosen[c0:c1] = sem.sample_exact(None, Y[c0:c1], u[c0 - G:c1 - G])
        for where_, c in separate:
            chosen[where_ if isinstance(where_, slice) else where_.to(device)] = c
        # in the logits' own precision (a float64 copy of every row cost more than the
        # programs); summed over the answer in float64
        lp = torch.log_softmax(main_logits, dim=-1).gather(1, chosen[:, None]).squeeze(1)
        lp = lp.double().cpu()
        chosen = chosen.cpu()
        if all_live:
            ll[rid[:M]] += lp
        else:
            keep_m = live_t[:M]
            ll[rid[:M][keep_m]] += lp[keep_m]
        # stream rows take their main row's token
        if B == R:
            tok = chosen[main_pos] if R > R_main else chosen
        else:
            tok = chosen[torch.searchsorted(rid, main_t[rid])]
        if all_live:
            rows = rid
            gen[rows, t] = tok
        else:
            rows = rid[live_t]
            gen[rows, t] = tok[live_t]
        gen_len[rows] += 1
        hit_stop = (tok == stop_token) if stop_token is not None else torch.zeros_like(live_t)
        stopped[rows] = hit_stop if all_live else hit_stop[live_t]
        newly = live_t & (hit_stop | (t + 1 >= max_new_tokens))
        n_new = int(newly.sum())
        if n_new:
            done[rid[newly]] = True
            if bool(done.all()):
                break
        finished_in_batch += n_new
        if select is not None and finished_in_batch * 4 >= B:
            keep = (~done[rid]).nonzero().squeeze(1)
            k_dev = keep.to(device)
            c0, kept_parts = 0, []
            for n, part_cache in parts:
                mine = k_dev[(k_dev >= c0) & (k_dev < c0 + n)] - c0
                if mine.numel() == n:
                    kept_parts.append([n, part_cache])
                elif mine.numel():
                    kept_parts.append([mine.numel(), select(part_cache, mine)])
                c0 += n
            parts = kept_parts
            mask = mask.index_select(0, k_dev)
            tok = tok[keep]
            rid = rid[keep]
            finished_in_batch = 0
        mask = torch.cat([mask, torch.ones(rid.numel(), 1, dtype=torch.bool, device=device)],
                         dim=1)
        gates_now = None
        if gate_rows is not None:
            gates_now = gate_rows if rid.numel() == R else gate_rows.index_select(
                0, rid.to(device))
        tok_dev, outs, c0 = tok[:, None].to(device), [], 0
        for part in parts:
            n, c1 = part[0], c0 + part[0]
            o = model.forward_step(tok_dev[c0:c1], attention_mask=mask[c0:c1], cache=part[1],
                                   head_gates=None if gates_now is None else gates_now[c0:c1])
            part[1] = o.cache
            outs.append(o)
            c0 = c1
        logits, residuals = _last_positions(outs, needs_residuals)

    # -- answers: samples -> vote / best-of layers, innermost first
    gen_l, len_l, stop_l, ll_l = gen.tolist(), gen_len.tolist(), stopped.tolist(), ll.tolist()
    plen = prompt_len.tolist()
    answers: list[list[Decoding]] = []
    for b in blocks:
        pl, S = b.plan, b.samples
        n_streams = 1 + pl.module.n_gated
        per_prompt = []
        for i in range(N):
            cands = []
            for j in range(S):
                r = b.start + i * S + j
                g = len_l[r]
                toks = gen_l[r][:g - 1 if stop_l[r] else g]
                cost = n_streams * (plen[i] + g - 1)
                cands.append(Decoding(toks, stop_l[r], cost, ll_l[r]))
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
        answers.append(per_prompt)
    results, used = [], set()
    for q in slot_of:
        if q in used:  # a duplicate program: its own copies of the same answers
            results.append([dataclasses.replace(d, tokens=list(d.tokens)) for d in answers[q]])
        else:
            used.add(q)
            results.append(answers[q])
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
