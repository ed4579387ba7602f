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
finished. Each copy is told how many positions its rows will still append (`room`, where
the model's `select_cache` takes it), so the steps grow the cache in place. Otherwise every
row runs from the start and finished rows keep running (their outputs are ignored).
`share=False` also turns off the merging of identical programs.

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

Answers with steps. `answer_key(tokens) -> hashable` (default: the tokens themselves) is the
final answer a task extracts from a whole answer (e.g. the text after a marker `#`): `vote`
counts answers by their key, so chains of steps that reach the same result vote together, and
returns the most likely whole answer among those with the most frequent key. The caller
supplies the rule (the task's), so decoding stays independent of tokenizers and tasks.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from . import semantics as sem
from .compile import LogitsProgram
from .nodes import Definition, Expr, type_of
from .primitives import Primitive
from .primitives.decoders import structure
from .registry import PRIMITIVES
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
    """A Decoder program as its aggregator layers (outer first), its chooser and its compiled
    Logits program (`primitives.decoders.structure`)."""

    expr: Expr
    layers: list[tuple[Primitive, int]]  # (aggregator, n), outermost first
    chooser: Primitive
    logits_expr: Expr
    module: LogitsProgram

    @property
    def samples(self) -> int:
        return math.prod(n for _, n in self.layers)


def plan(program: Expr | Definition | str) -> DecoderPlan:
    """Split a Decoder program into its aggregator layers, chooser and Logits program."""
    if isinstance(program, str):
        from .checker import read_expr

        program = read_expr(program, Type.DECODER)
    expr = program.body if isinstance(program, Definition) else program
    if type_of(expr) is not Type.DECODER:
        raise ValueError(f"expected a Decoder program, got a {type_of(expr)} expression")
    s = structure(expr)
    return DecoderPlan(expr, list(s.layers), s.chooser, s.logits, LogitsProgram(s.logits))


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


def uniforms(seed: int, prompt: torch.Tensor, sample: torch.Tensor, step: int,
             stream: int = 0) -> torch.Tensor:
    """u in [0, 1) (float64, one per row) depending only on (seed, prompt, sample, step,
    stream). Stream 0 is the chooser's draw; a program node's stream is 1 + a hash of its
    primitive's name (`Sources.uniform`)."""
    seed = int(seed) & ((1 << 64) - 1)
    seed = seed - (1 << 64) if seed >= 1 << 63 else seed
    z = torch.full_like(prompt, seed, dtype=torch.int64)
    parts = [prompt.to(torch.int64), sample.to(torch.int64),
             torch.full_like(prompt, int(step), dtype=torch.int64)]
    if stream:  # stream 0 hashes as it always did
        parts.append(torch.full_like(prompt, int(stream), dtype=torch.int64))
    for v in parts:
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


def _takes(method, keyword: str) -> bool:
    """Whether `method` takes `keyword` (an optional part of `protocol.LanguageModel`)."""
    try:
        return keyword in inspect.signature(method).parameters
    except (TypeError, ValueError):  # no signature to read
        return False


def _last_only(model) -> dict:
    """`forward_step`'s keyword for a prefill whose last position alone is read, where the
    model takes it."""
    return {"last_only": True} if _takes(model.forward_step, "last_only") else {}


def _cache_selector(model, cache, batch: int):
    """A function (cache, index, room) -> cache, or None if this cache cannot be re-indexed.
    `room`: how many positions the rows will still append, passed on where the model's
    `select_cache` takes it (so that the decoding steps never copy the cache again)."""
    if hasattr(model, "select_cache"):
        if _takes(model.select_cache, "room"):
            return model.select_cache
        return lambda cache, index, room: model.select_cache(cache, index)
    if _tensors_batched(cache, batch):
        return lambda cache, index, room: _select(cache, index)
    return None


# ----------------------------------------------------------------------------- decoding


def _as_list(programs):
    single = isinstance(programs, (str, Definition)) or not isinstance(programs, Sequence)
    return ([programs] if single else list(programs)), single


def _plan_key(pl: DecoderPlan):
    """Identity of a plan's behaviour (structure and current constants), or None."""
    try:
        key = (pl.chooser.name, tuple((p.name, n) for p, n in pl.layers), pl.logits_expr,
               tuple(pl.module.values()))
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
    state: sem.RowState | None = None  # per-row state of stateful primitives

    @property
    def reads(self) -> set[str]:
        return self.plan.module.reads


CHUNK_ROWS = 1024  # rows per forward call on the CPU (see `chunk_rows`)
GPU_MEMORY_FRACTION = 0.5  # of a GPU's memory that one decode's caches and logits may fill


def chunk_rows(device: torch.device, row_bytes: int | None = None) -> int | None:
    """Rows per model call when decoding on `device` (None: the whole batch in one call).

    On the CPU chunks of about a thousand rows keep a step's buffers small enough to be
    reused by the allocator and to stay in cache (measured when the models' caches still
    grew by `torch.cat`: 14.9 s -> 6.2 s for 64 x 256 rows x 8 tokens on the default GPT).
    A GPU wants as many rows per call as its memory holds: `row_bytes` (one row's cache and
    logits, `_row_bytes`) into `GPU_MEMORY_FRACTION` of the device's total memory - its
    total, not what is free at the moment, so the chunks, and with them the float rounding
    of the batched matmuls, are the same on every run on that device.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return CHUNK_ROWS
    if device.type != "cuda" or not row_bytes:
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    return max(1, int(total * GPU_MEMORY_FRACTION) // row_bytes)


def _row_bytes(model, length: int) -> int | None:
    """Bytes one decoding row holds (float32 keys and values of `length` positions in every
    block, a few rows of logits), from the model's `config` sizes (None where it has none)."""
    cfg = getattr(model, "config", None)
    width = getattr(cfg, "n_embd", None)
    if not width:
        return None
    return 4 * (2 * model.n_layer * length * int(width) + 4 * model.vocab_size)


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


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="echo-forge-decode")


def _in_parallel(calls, device) -> list:
    """The results of `calls` (no arguments each), in order. On the CPU with more than one
    torch thread they run side by side: the programs of a step are independent, and their
    kernels (sorts above all) run on one core each, which torch does not split across its
    threads; each kernel's result is the same on any thread."""
    workers = min(torch.get_num_threads(), len(calls))
    if workers < 2 or torch.device(device).type != "cpu":
        return [c() for c in calls]
    grad = torch.is_grad_enabled()  # thread-local in torch: the callers' mode, here too

    def run(call):
        with torch.set_grad_enabled(grad):
            return call()

    return list(_pool(workers).map(run, calls))


def _take(x: torch.Tensor, sel: slice | torch.Tensor) -> torch.Tensor:
    return x[sel] if isinstance(sel, slice) else x.index_select(0, sel)


# ----------------------------------------------------------------------------- row layout


def _distinct(plans: list[DecoderPlan], share: bool):
    """Identical programs (same structure and constants) decode once: (slot of each plan,
    the distinct plans)."""
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
    return slot_of, distinct


@dataclass
class _Layout:
    """Every row of one decode. Main rows come program by program, grouped by chooser (in
    registry order), so each program's rows and each chooser's rows are contiguous; then one
    block of rows per gated stream. Per row: its prompt, sample, gated stream (0 = plain) and
    main row."""

    blocks: list[_Block]  # by distinct program
    groups: list[tuple[Primitive, int, int]]  # chooser and its main rows [start, end)
    R_main: int
    R: int
    prompt_t: torch.Tensor
    sample_t: torch.Tensor
    gate_t: torch.Tensor
    main_t: torch.Tensor
    gates_of: list[torch.Tensor]  # one (L, H) per gated stream, in row order

    @functools.cached_property
    def edges(self) -> torch.Tensor:
        """Block and group boundaries as original row ids."""
        b = self.blocks
        return torch.tensor(sorted({0, self.R_main, self.R}
                                   | {g0 for _, g0, _ in self.groups}
                                   | {x.start for x in b} | {x.start + x.n for x in b}
                                   | {s for x in b for s in x.stream_starts}
                                   | {s + x.n for x in b for s in x.stream_starts}))


def _layout(distinct: list[DecoderPlan], N: int, L: int, H: int) -> _Layout:
    rank = {name: i for i, name in enumerate(PRIMITIVES)}
    order = sorted(range(len(distinct)), key=lambda q: rank[distinct[q].chooser.name])
    blocks: list[_Block] = [None] * len(distinct)  # type: ignore[list-item]
    groups: list[tuple[Primitive, int, int]] = []
    cursor = 0
    for q in order:
        pl = distinct[q]
        n = N * pl.samples
        state = sem.RowState(n) if "state" in pl.module.reads else None
        blocks[q] = _Block(pl, cursor, n, [], state)
        if groups and groups[-1][0] is pl.chooser:
            groups[-1] = (pl.chooser, groups[-1][1], cursor + n)
        else:
            groups.append((pl.chooser, cursor, cursor + n))
        cursor += n
    R_main = cursor
    gates_of: list[torch.Tensor] = []
    for q in order:
        b = blocks[q]
        if b.plan.module.n_gated:
            for g in b.plan.module.gate_values(L, H):
                b.stream_starts.append(cursor)
                gates_of.append(g)
                cursor += b.n
    parts: list[list[torch.Tensor]] = [[], [], [], []]  # prompt, sample, gate, main row

    def add(b: _Block, gate: int):
        S = b.plan.samples
        parts[0].append(torch.arange(N).repeat_interleave(S))
        parts[1].append(torch.arange(S).repeat(N))
        parts[2].append(torch.full((b.n,), gate, dtype=torch.long))
        parts[3].append(torch.arange(b.start, b.start + b.n))

    for q in order:
        add(blocks[q], 0)
    k = 0
    for q in order:
        for _ in blocks[q].stream_starts:
            k += 1
            add(blocks[q], k)
    prompt_t, sample_t, gate_t, main_t = (torch.cat(p) for p in parts)
    return _Layout(blocks, groups, R_main, cursor, prompt_t, sample_t, gate_t, main_t, gates_of)


# ----------------------------------------------------------------------------- decoding state


@dataclass
class _Rows:
    """The batch as it decodes: which original rows are still in it (`rid`, ascending),
    their model caches (consecutive chunks: [rows, cache]), attention mask and last
    outputs, and per original row the answer so far."""

    rid: torch.Tensor
    parts: list
    mask: torch.Tensor
    logits: torch.Tensor
    residuals: list
    gen: torch.Tensor
    gen_len: torch.Tensor
    stopped: torch.Tensor
    ll: torch.Tensor
    done: torch.Tensor
    finished_in_batch: int = 0


def _prefill(model, lay: _Layout, prompt_ids, prompt_mask, device, share: bool, N: int,
             max_new_tokens: int):
    """Run the prompts: each distinct (gates, prompt) once and its cache copied to its rows
    when the cache can be re-indexed (`select` is then that function), else every row's
    prompt itself. Returns (rows, select)."""
    R, n_gates = lay.R, len(lay.gates_of)
    gate_rows = table = None
    if n_gates:
        L, H = lay.gates_of[0].shape
        table = torch.stack([torch.ones(L, H)] + [g.float() for g in lay.gates_of]).to(device)
        gate_rows = table.index_select(0, lay.gate_t.to(device))  # (R, L, H)
    select, last_only = None, _last_only(model)
    if share:
        u_prompt = torch.arange(N).repeat(1 + n_gates)
        u_gates = table.repeat_interleave(N, dim=0) if n_gates else None
        out = model.forward_step(prompt_ids[u_prompt].to(device),
                                 attention_mask=prompt_mask[u_prompt].to(device),
                                 head_gates=u_gates, **last_only)
        select = _cache_selector(model, out.cache, N * (1 + n_gates))
    chunk = chunk_rows(device, _row_bytes(model, prompt_ids.size(1) + max_new_tokens)) or R
    spans = [(c0, min(c0 + chunk, R)) for c0 in range(0, R, chunk)]
    if select is not None:
        k_dev = (lay.gate_t * N + lay.prompt_t).to(device)
        parts = [[c1 - c0, select(out.cache, k_dev[c0:c1], max_new_tokens - 1)]
                 for c0, c1 in spans]
        logits = out.logits[:, -1].index_select(0, k_dev)
        residuals = [h[:, -1].index_select(0, k_dev) for h in out.residuals]
    else:  # run every row's prompt itself
        outs = [model.forward_step(prompt_ids[lay.prompt_t[c0:c1]].to(device),
                                   attention_mask=prompt_mask[lay.prompt_t[c0:c1]].to(device),
                                   head_gates=None if gate_rows is None else gate_rows[c0:c1],
                                   **last_only)
                for c0, c1 in spans]
        parts = [[c1 - c0, o.cache] for (c0, c1), o in zip(spans, outs, strict=True)]
        logits, residuals = _last_positions(outs, True)
    rows = _Rows(rid=torch.arange(R), parts=parts, mask=prompt_mask[lay.prompt_t].to(device),
                 logits=logits, residuals=residuals,
                 gen=torch.full((R, max_new_tokens), -1, dtype=torch.long),
                 gen_len=torch.zeros(R, dtype=torch.long),
                 stopped=torch.zeros(R, dtype=torch.bool),
                 ll=torch.zeros(R, dtype=torch.float64), done=torch.zeros(R, dtype=torch.bool))
    return rows, select, gate_rows


def _random(seed: int, lay: _Layout, rows: torch.Tensor, t: int, device):
    """Sources.uniform for these original rows at step t (common random numbers)."""
    prompt, sample = lay.prompt_t[rows], lay.sample_t[rows]
    return lambda stream: uniforms(seed, prompt, sample, t, stream).to(device)


def decode_step(t: int, st: _Rows, lay: _Layout, model, *, seed: int, prompt_hist,
                device, observe=None, breakers=None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One decoding step: every program's exact module transforms its own live rows'
    logits (from the sources it reads), then each chooser picks the tokens of all its rows
    at once. Returns (chosen token per main row in the batch, live mask of the batch, all
    live). `observe(t, q, rows, sources, scores, chosen)`, if given, sees each program's
    rows (original ids), the sources and scores its module got and the tokens chosen."""
    R, R_main = lay.R, lay.R_main
    B = st.rid.numel()
    live_t = ~st.done[st.rid]
    all_live = bool(live_t.all())
    edges = lay.edges  # computed once per decode
    edge_list = edges.tolist()
    if B == R:
        at = dict(zip(edge_list, edge_list, strict=True))
    else:
        at = dict(zip(edge_list, torch.searchsorted(st.rid, edges).tolist(), strict=True))
    M = at[R_main]
    if not all_live:
        n_live = torch.cat([torch.zeros(1, dtype=torch.long), live_t.long().cumsum(0)])
    logits = st.logits
    main_logits = logits[:M]
    Y = torch.empty_like(main_logits) if all_live else torch.zeros_like(main_logits)
    separate = []  # (position index or slice, chosen) of programs that choose on their own
    seen = []  # for observe: (q, rows, sel, sources, scores)
    stateful = []  # (RowState, sel) of programs carrying per-row state
    work = []  # (q, block, first row, idx, rows, sel, sources) of each program with live rows
    for q, b in enumerate(lay.blocks):
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
            rows = st.rid[a:e]
            sel: slice | torch.Tensor = slice(a, e)
            streams = [logits[at[s0]:at[s0] + e - a] for s0 in b.stream_starts]
        else:
            rows = st.rid[a + idx]
            i_dev = idx.to(device)
            sel = i_dev + a
            streams = [logits.index_select(0, i_dev + at[s0]) for s0 in b.stream_starts]
        reads = b.reads
        if b.state is not None:
            b.state.begin(rows - b.start)
            stateful.append((b.state, sel))
        src = sem.Sources(
            logits=_take(logits, sel),
            history=torch.cat([prompt_hist[lay.prompt_t[rows]], st.gen[rows, :t]], dim=1)
            .to(device) if "history" in reads else None,
            generated=st.gen[rows, :t].to(device) if "generated" in reads else None,
            residuals=[_take(h, sel) for h in st.residuals] if "residuals" in reads else None,
            lens=model.lens, n_layer=model.n_layer, n_head=model.n_head,
            gated_forward=streams or None,
            uniform=_random(seed, lay, rows, t, device) if "uniform" in reads else None,
            state=b.state, breakers=breakers if "breakers" in reads else None)
        work.append((q, b, a, e, idx, rows, sel, src))
    outs = _in_parallel([functools.partial(b.plan.module, sources=src, mode="exact")
                         for _, b, *_, src in work], device)
    for (q, b, a, e, idx, rows, sel, src), y in zip(work, outs, strict=True):
        if observe is not None:
            seen.append((q, rows, sel, src, y))
        if y.dtype != Y.dtype or y.shape != src.logits.shape:
            # unusual output: choose this program's tokens on its own
            ctx = sem.Context(sem.Sources(uniform=_random(seed, lay, rows, t, device)))
            separate.append((slice(a, e) if idx is None else a + idx,
                             b.plan.chooser.exact(ctx, y)))
        elif idx is None:
            Y[a:e] = y
        else:
            Y.index_copy_(0, (a + idx).to(device), y)
    # each chooser once over all its rows (in chunks: row by row the same, small buffers
    # are faster)
    chosen = torch.zeros(M, dtype=torch.long, device=device)
    for chooser, g0, g1 in lay.groups:
        c_lo, c_hi = at[g0], at[g1]
        step = chunk_rows(device) or max(c_hi - c_lo, 1)
        for c0 in range(c_lo, c_hi, step):
            c1 = min(c0 + step, c_hi)
            ctx = sem.Context(sem.Sources(uniform=_random(seed, lay, st.rid[c0:c1], t, device)))
            chosen[c0:c1] = chooser.exact(ctx, Y[c0:c1])
    for where_, c in separate:
        chosen[where_ if isinstance(where_, slice) else where_.to(device)] = c
    for q, rows, sel, src, y in seen:
        observe(t, q, rows, src, y, chosen[sel])
    for state, sel in stateful:  # stateful nodes see the tokens chosen
        state.commit(chosen[sel])
    return chosen, live_t, all_live


def _advance(t: int, chosen, live_t, all_live: bool, st: _Rows, lay: _Layout, model, *,
             select, gate_rows, stop_token, max_new_tokens: int, device,
             needs_residuals: bool) -> bool:
    """Record the chosen tokens (stream rows take their main row's), the answers'
    log-likelihood and stops; drop finished rows once a quarter of the batch has finished
    (when caches can be re-indexed); feed the tokens to the model. False when every row is
    done."""
    R, R_main = lay.R, lay.R_main
    B, M = st.rid.numel(), chosen.numel()
    # in the logits' own precision (a float64 copy of every row cost more than the
    # programs); summed over the answer in float64
    lp = torch.log_softmax(st.logits[:M], dim=-1).gather(1, chosen[:, None]).squeeze(1)
    lp = lp.double().cpu()
    chosen = chosen.cpu()
    if all_live:
        st.ll[st.rid[:M]] += lp
    else:
        keep_m = live_t[:M]
        st.ll[st.rid[:M][keep_m]] += lp[keep_m]
    if B == R:
        tok = chosen[lay.main_t] if R > R_main else chosen
    else:
        tok = chosen[torch.searchsorted(st.rid, lay.main_t[st.rid])]
    rows = st.rid if all_live else st.rid[live_t]
    st.gen[rows, t] = tok if all_live else tok[live_t]
    st.gen_len[rows] += 1
    hit_stop = (tok == stop_token) if stop_token is not None else torch.zeros_like(live_t)
    st.stopped[rows] = hit_stop if all_live else hit_stop[live_t]
    newly = live_t & (hit_stop | (t + 1 >= max_new_tokens))
    n_new = int(newly.sum())
    if n_new:
        st.done[st.rid[newly]] = True
        if bool(st.done.all()):
            return False
    st.finished_in_batch += n_new
    if select is not None and st.finished_in_batch * 4 >= B:
        keep = (~st.done[st.rid]).nonzero().squeeze(1)
        k_dev = keep.to(device)
        c0, kept_parts = 0, []
        for n, part_cache in st.parts:
            mine = k_dev[(k_dev >= c0) & (k_dev < c0 + n)] - c0
            if mine.numel() == n:
                kept_parts.append([n, part_cache])
            elif mine.numel():
                kept_parts.append([mine.numel(),
                                   select(part_cache, mine, max_new_tokens - 1 - t)])
            c0 += n
        st.parts = kept_parts
        st.mask = st.mask.index_select(0, k_dev)
        tok = tok[keep]
        st.rid = st.rid[keep]
        st.finished_in_batch = 0
    st.mask = torch.cat([st.mask, torch.ones(st.rid.numel(), 1, dtype=torch.bool,
                                             device=device)], dim=1)
    gates_now = None
    if gate_rows is not None:
        gates_now = gate_rows if st.rid.numel() == R else gate_rows.index_select(
            0, st.rid.to(device))
    tok_dev, outs, c0 = tok[:, None].to(device), [], 0
    for part in st.parts:
        n, c1 = part[0], c0 + part[0]
        o = model.forward_step(tok_dev[c0:c1], attention_mask=st.mask[c0:c1], cache=part[1],
                               head_gates=None if gates_now is None else gates_now[c0:c1])
        part[1] = o.cache
        outs.append(o)
        c0 = c1
    st.logits, st.residuals = _last_positions(outs, needs_residuals)
    return True


def _aggregate(lay: _Layout, st: _Rows, N: int, prompt_len: list[int],
               answer_key=None) -> list[list[Decoding]]:
    """Per distinct program and prompt: its samples' answers, reduced by the aggregator
    layers, innermost first; aggregators compare answers by `answer_key(tokens)`."""
    key = answer_key or tuple
    gen_l, len_l = st.gen.tolist(), st.gen_len.tolist()
    stop_l, ll_l = st.stopped.tolist(), st.ll.tolist()
    answers: list[list[Decoding]] = []
    for b in lay.blocks:
        pl, S = b.plan, b.plan.samples
        n_streams = 1 + pl.module.n_gated
        per_prompt = []
        for i in range(N):
            cands = []
            for j in range(S):
                r = b.start + i * S + j
                g = len_l[r]
                toks = gen_l[r][:g - 1 if stop_l[r] else g]
                cost = n_streams * (prompt_len[i] + g - 1)
                cands.append(Decoding(toks, stop_l[r], cost, ll_l[r]))
            for agg, n in reversed(pl.layers):
                nxt = []
                for g0 in range(0, len(cands), n):
                    group = cands[g0:g0 + n]
                    best = group[agg.exact(None, n, [(key(c.tokens), c.log_likelihood)
                                                     for c in group])]
                    nxt.append(dataclasses.replace(best, cost=sum(c.cost for c in group)))
                cands = nxt
            assert len(cands) == 1
            per_prompt.append(cands[0])
        answers.append(per_prompt)
    return answers


@torch.no_grad()
def decode(model, programs, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 32,
           stop_token: int | None = None, seed: int = 0, pad_token: int = 0,
           share: bool = True, observe=None, breakers=None, answer_key=None):
    """Decode every program on every prompt in one batch per step (see the module doc).

    Returns answers[p][i] (a `Decoding`) for a list of programs, answers[i] for one program.
    `share=False` disables prefix sharing, compaction and the merging of identical programs
    (a plainer reference path). `observe`: see `decode_step` (q indexes the distinct
    programs, in the order given when no two are identical). `breakers`: DRY's sequence
    breakers for the model's tokenizer (`primitives.penalties.Breakers`; None: none).
    `answer_key(tokens) -> hashable`: the final answer `vote` counts (None: the tokens).
    """
    progs, single = _as_list(programs)
    plans = [p if isinstance(p, DecoderPlan) else plan(p) for p in progs]
    prompts = [list(map(int, p)) for p in prompts]
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    N = len(prompts)
    device = next((t.device for t in _model_tensors(model)), torch.device("cpu"))
    slot_of, distinct = _distinct(plans, share)
    lay = _layout(distinct, N, model.n_layer, model.n_head)

    # prompts, left padded
    P = max(len(p) for p in prompts)
    prompt_ids = torch.full((N, P), pad_token, dtype=torch.long)
    prompt_mask = torch.zeros(N, P, dtype=torch.bool)
    for i, p in enumerate(prompts):
        prompt_ids[i, P - len(p):] = torch.tensor(p)
        prompt_mask[i, P - len(p):] = True
    prompt_hist = torch.where(prompt_mask, prompt_ids, -1)  # -1 = padding in history

    st, select, gate_rows = _prefill(model, lay, prompt_ids, prompt_mask, device, share, N,
                                     max_new_tokens)
    needs_residuals = any("residuals" in b.reads for b in lay.blocks)
    for t in range(max_new_tokens):
        chosen, live_t, all_live = decode_step(t, st, lay, model, seed=seed,
                                               prompt_hist=prompt_hist, device=device,
                                               observe=observe, breakers=breakers)
        if not _advance(t, chosen, live_t, all_live, st, lay, model, select=select,
                        gate_rows=gate_rows, stop_token=stop_token,
                        max_new_tokens=max_new_tokens, device=device,
                        needs_residuals=needs_residuals):
            break

    answers = _aggregate(lay, st, N, prompt_mask.sum(1).tolist(), answer_key)
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
