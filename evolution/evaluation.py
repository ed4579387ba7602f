"""Population evaluation: many programs over one shared model computation, and parallel maps.

Programs only transform logits, so the model work is shared:

* `LikelihoodEvaluator` (teacher-forced objective): one forward over a data set of token
  sequences, cached (final logits, every block's residual stream, histories); each program
  is then a cheap transform of the cached rows, scored by the mean log-likelihood of the
  observed next tokens. Used by tuning, the tuning benchmark and the recovery benchmark.
* `DecodeEvaluator` (answer tasks): `engine_dsl.decode` over the whole list of programs x
  prompts, one batched KV-cached forward per decoding step, with common random numbers (the
  same per-prompt seeds for every program), so scores are paired comparisons.

`ProcessMap` and `RayMap` are drop-in `toolbox.map`s for the per-individual work (tuning).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from engine_dsl.nodes import Apply, Expr, walk
from engine_dsl.primitives import Primitive
from engine_dsl.primitives.decoders import structure
from engine_dsl.registry import PRIMITIVES

SMOOTHING = 1e-4  # likelihood: the program's distribution is mixed with this much uniform


# --- decoders as distributions ---------------------------------------------------------------


def sampling_logits(decoder: Expr) -> tuple[Primitive, Expr, int]:
    """(chooser, Logits expression, repeats) of a Decoder: the aggregators' counts multiply
    `repeats` (their answer distribution is approximated by the chooser's per-token
    distribution)."""
    s = structure(decoder)
    return s.chooser, s.logits, s.samples


def forward_cost(decoder: Expr) -> float:
    """Model forward tokens per answer token: repeats x (1 + one extra pass per node that
    reads a gated forward)."""
    _, logits_expr, repeats = sampling_logits(decoder)
    gated = sum(1 for n in walk(logits_expr)
                if isinstance(n, Apply) and "gated_forward" in PRIMITIVES[n.op].reads)
    return float(repeats * (1 + gated))


# --- cached teacher-forced rows ------------------------------------------------------------


class _Frozen:
    """Within the block the model's parameters take no gradient (tuning moves program
    constants only; the model is layer 1's business)."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in self.flags:
            p.requires_grad_(False)

    def __exit__(self, *exc):
        for p, flag in self.flags:
            p.requires_grad_(flag)


class FrozenLens:
    """The model's logit lens, differentiable in its input only (picklable)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, residual: torch.Tensor) -> torch.Tensor:
        with _Frozen(self.model):
            return self.model.lens(residual)


class GatedForward:
    """gates (L, H) -> (R, V): the logits of a head-gated forward pass at the cached rows
    (a picklable callable, so cached rows can be shipped to worker processes).
    grad=False: the model's parameters take no gradient (tuning); grad=True: differentiable
    in the model too (the model's training loss through a program)."""

    def __init__(self, model, ids: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor,
                 attention_mask: torch.Tensor | None = None, grad: bool = False):
        self.model, self.ids, self.seq, self.pos = model, ids, seq, pos
        self.attention_mask, self.grad = attention_mask, grad

    def __call__(self, gates: torch.Tensor) -> torch.Tensor:
        if self.grad:
            out = self.model.forward_step(self.ids, attention_mask=self.attention_mask,
                                          head_gates=gates)
        else:
            with _Frozen(self.model):
                out = self.model.forward_step(self.ids, attention_mask=self.attention_mask,
                                              head_gates=gates)
        return out.logits[self.seq, self.pos]

    def subset(self, index: torch.Tensor) -> GatedForward:
        """The pass over only the sequences the rows at `index` are in."""
        seqs, seq = torch.unique(self.seq[index], return_inverse=True)
        mask = None if self.attention_mask is None else self.attention_mask[seqs]
        return GatedForward(self.model, self.ids[seqs], seq, self.pos[index], mask, self.grad)


@dataclass
class CachedRows:
    """One row per scored position of a data set (R rows)."""

    logits: torch.Tensor  # (R, V) final-layer logits predicting the target
    residuals: tuple[torch.Tensor, ...]  # L tensors (R, C)
    history: torch.Tensor  # (R, T) ids of the sequence up to the position, -1 = padding
    targets: torch.Tensor  # (R,) the observed next token
    gated: GatedForward | None  # gates (L, H) -> (R, V) logits (None: no model)
    lens: Callable[[torch.Tensor], torch.Tensor] | None
    n_layer: int
    n_head: int
    generated: torch.Tensor | None = None  # (R, T) the answer up to the position, -1 = pad
    row_ids: torch.Tensor | None = None  # (R,) which row of the full set (its random numbers)
    breakers: Any = None  # DRY's sequence breakers as token ids (`Breakers`; None: none)

    def sources(self) -> dict:
        """Keyword sources for a compiled program (`LogitsProgram.__call__`). Random numbers:
        fixed per row (`uniforms(0, row, 0, 0, stream)`), so scores are repeatable."""
        from engine_dsl.decoders import uniforms

        rows = (torch.arange(len(self), device=self.logits.device) if self.row_ids is None
                else self.row_ids)
        zeros = torch.zeros_like(rows)
        return dict(logits=self.logits, residuals=list(self.residuals), history=self.history,
                    generated=self.generated, lens=self.lens, gated_forward=self.gated,
                    n_layer=self.n_layer, n_head=self.n_head, breakers=self.breakers,
                    uniform=lambda stream: uniforms(0, rows, zeros, 0, stream))

    def subset(self, index: torch.Tensor) -> CachedRows:
        """The rows at `index` (a gated pass then runs only over the sequences they are in)."""
        gated = None if self.gated is None else self.gated.subset(index)
        rows = (torch.arange(len(self), device=self.logits.device) if self.row_ids is None
                else self.row_ids)
        index = index.to(self.logits.device)
        return CachedRows(self.logits[index], tuple(r[index] for r in self.residuals),
                          self.history[index], self.targets[index], gated, self.lens,
                          self.n_layer, self.n_head,
                          None if self.generated is None else self.generated[index],
                          rows[index], self.breakers)

    def __len__(self) -> int:
        return self.targets.numel()


def cache_rows(model, ids: torch.Tensor, score_mask: torch.Tensor,
               attention_mask: torch.Tensor | None = None, grad: bool = False,
               breakers=None) -> CachedRows:
    """Run `model` once over right-padded sequences `ids` (S, T) and keep one row per
    position t where `score_mask[:, t + 1]` marks token t + 1 as scored (predicted at t).

    grad=False (tuning, scoring): no graph, and the lens and gated passes give no gradient to
    the model. grad=True (the model's training loss through a program): everything stays
    differentiable in the model's parameters. breakers: DRY's sequence breakers (`Breakers`)."""
    device = next((p.device for p in model.parameters()), ids.device)
    ids, score_mask = ids.to(device), score_mask.to(device)
    inputs = ids[:, :-1]  # the last token is only ever a target
    mask = None if attention_mask is None else attention_mask[:, :-1].to(device)
    with torch.set_grad_enabled(grad):
        out = model.forward_step(inputs, attention_mask=mask)
    si, ti = score_mask[:, 1:].nonzero(as_tuple=True)  # (sequence, position) of each row
    upto = torch.arange(inputs.size(1), device=device)[None, :] <= ti[:, None]
    hist = torch.where(upto, inputs[si], -1)
    answer = torch.where(upto & score_mask[si, :-1].bool(), inputs[si], -1)  # scored = answer
    if grad:
        lens = model.lens
    else:
        lens = FrozenLens(model)
    gated = GatedForward(model, inputs, si, ti, mask, grad)
    return CachedRows(out.logits[si, ti], tuple(r[si, ti] for r in out.residuals), hist,
                      ids[si, ti + 1], gated, lens, model.n_layer, model.n_head, answer,
                      breakers=breakers)



def program_scores(logits_expr: Expr | None, rows: CachedRows, *, mode: str = "exact",
                   program=None, sharpness: float | None = None) -> torch.Tensor:
    """(R, V) scores of a compiled Logits program on the cached rows."""
    import engine_dsl

    f = program if program is not None else engine_dsl.compile_expr(logits_expr)
    extra = {} if sharpness is None else {"sharpness": sharpness}
    return f(mode=mode, **rows.sources(), **extra).float()


def _log_probs(scores: torch.Tensor, chooser: Primitive) -> torch.Tensor:
    return chooser.distribution(scores)


def _smooth(logp: torch.Tensor, smoothing: float, V: int) -> torch.Tensor:
    """log((1 - s) p + s / V), elementwise on log-probabilities."""
    if smoothing <= 0:
        return logp
    return torch.log(torch.exp(logp) * (1 - smoothing) + smoothing / V)


def program_log_probs(logits_expr: Expr | None, chooser: Primitive, rows: CachedRows, *,
                      mode: str = "exact", program=None, smoothing: float = SMOOTHING,
                      sharpness: float | None = None) -> torch.Tensor:
    """(R, V) log-probabilities of the next token under a program (smoothed with uniform)."""
    scores = program_scores(logits_expr, rows, mode=mode, program=program, sharpness=sharpness)
    return _smooth(_log_probs(scores, chooser), smoothing, scores.size(-1))


def target_log_probs(logits_expr: Expr | None, chooser: Primitive, rows: CachedRows, *,
                     mode: str = "exact", program=None, smoothing: float = SMOOTHING,
                     sharpness: float | None = None) -> torch.Tensor:
    """(R,) smoothed log-probability of each row's observed next token."""
    scores = program_scores(logits_expr, rows, mode=mode, program=program, sharpness=sharpness)
    lp = _log_probs(scores, chooser).gather(1, rows.targets[:, None]).squeeze(1)
    return _smooth(lp, smoothing, scores.size(-1))


class LikelihoodEvaluator:
    """Score = mean log-likelihood of the data's next tokens under each Decoder program
    (its per-step distribution, exact mode, smoothed); cost = `forward_cost`."""

    def __init__(self, rows: CachedRows, smoothing: float = SMOOTHING):
        self.rows = rows
        self.smoothing = smoothing

    def log_likelihood(self, decoder: Expr) -> float:
        chooser, logits_expr, _ = sampling_logits(decoder)
        lp = target_log_probs(logits_expr, chooser, self.rows, smoothing=self.smoothing)
        return float(lp.mean())

    @torch.no_grad()
    def __call__(self, decoders: Sequence[Expr]) -> list[tuple[float, float]]:
        return [(self.log_likelihood(d), forward_cost(d)) for d in decoders]


def mean_kl(teacher: Expr, student: Expr, rows: CachedRows, smoothing: float = 1e-6) -> float:
    """Mean over rows of KL(teacher || student) of the per-step distributions (exact mode;
    the student is smoothed by `smoothing` so a dropped token costs a large finite amount)."""
    with torch.no_grad():
        tk, te, _ = sampling_logits(teacher)
        sk, se, _ = sampling_logits(student)
        lp = program_log_probs(te, tk, rows, smoothing=0.0)
        lq = program_log_probs(se, sk, rows, smoothing=smoothing)
        p = lp.exp()
        terms = torch.where(p > 0, p * (lp - lq), torch.zeros_like(p))
        return float(terms.sum(-1).mean())


# --- decoding many programs at once ----------------------------------------------------------


class DecodeEvaluator:
    """Answer-task scores from one batched decode of every program x prompt
    (`engine_dsl.decode`: one KV-cached forward per step for all rows, common random
    numbers: the same per-prompt draws for every program, so scores are paired).

    prompts: token id lists; references: what `score_fn(answers, references)` compares the
    answers (lists of `Decoding`) with (default: exact match of the token lists).
    Score per program = score_fn; cost = mean model forward positions per answer.
    """

    def __init__(self, model, prompts: Sequence[Sequence[int]], references: Sequence,
                 score_fn=None, seed: int = 0, max_rows: int | None = None, **decode_options):
        self.model, self.prompts, self.references = model, list(prompts), list(references)
        self.score_fn = score_fn or exact_match
        self.seed = seed
        self.max_rows = max_rows
        self.decode_options = decode_options

    @torch.no_grad()
    def __call__(self, decoders: Sequence[Expr]) -> list[tuple[float, float]]:
        return [(float(self.score_fn(a, self.references)),
                 sum(d.cost for d in a) / max(len(a), 1)) for a in self.decode(decoders)]

    @torch.no_grad()
    def decode(self, decoders: Sequence[Expr]) -> list[list]:
        """answers[p][i] (`engine_dsl.Decoding`) of every program on every prompt, decoded in
        consecutive groups of programs holding at most `max_rows` rows together (prompts x
        `forward_cost`; None: one decode), so one decode's caches fit its memory. A row's
        draws are keyed by its prompt, sample and step, not by its batch: the grouping
        changes the memory, not the answers."""
        import engine_dsl

        decoders = list(decoders)
        limit = None if self.max_rows is None else self.max_rows / max(len(self.prompts), 1)
        answers = []
        for group in program_groups([forward_cost(d) for d in decoders], limit):
            answers += engine_dsl.decode(self.model, decoders[group.start:group.stop],
                                         self.prompts, seed=self.seed, **self.decode_options)
        return answers


def program_groups(rows: Sequence[float], limit: float | None) -> list[range]:
    """Consecutive groups of indexes of `rows` whose rows sum to at most `limit` each (a
    single item above it alone), each as long as the next item allows; None: one group."""
    groups, start, total = [], 0, 0.0
    for i, r in enumerate(rows):
        if limit is not None and i > start and total + r > limit:
            groups.append(range(start, i))
            start, total = i, 0.0
        total += r
    return groups + [range(start, len(rows))] if rows else groups


def exact_match(answers: Sequence, references: Sequence) -> float:
    """Fraction of answers whose tokens equal the reference token list."""
    return sum(list(a.tokens) == list(r) for a, r in zip(answers, references, strict=True)) \
        / max(len(answers), 1)


# --- parallel maps ---------------------------------------------------------------------------


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


class ProcessMap:
    """`map(fn, items)` over a pool of worker processes (results in order). `fn` and the
    items must pickle (evolution's individuals and callables do). Use as `toolbox.map`."""

    def __init__(self, workers: int = 2, threads_per_worker: int = 1, start_method: str = "spawn"):
        import multiprocessing as mp

        self.pool = mp.get_context(start_method).Pool(workers, _init_worker,
                                                      (threads_per_worker,))

    def __call__(self, fn, items):
        return self.pool.map(fn, list(items), chunksize=1)

    def close(self) -> None:
        self.pool.close()
        self.pool.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RayMap:
    """`map(fn, items)` as Ray tasks, for more than one machine (optional extra: `ray`).
    `address=None` starts or joins a local Ray instance."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None, **init_options):
        try:
            import ray
        except ImportError as e:  # pragma: no cover - depends on the optional extra
            raise ImportError("RayMap needs Ray: pip install 'echo-forge[ray]'") from e
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, num_cpus=num_cpus, **init_options)

        @ray.remote
        def _call(fn, item):
            return fn(item)

        self._call = _call

    def __call__(self, fn, items):
        ref = self.ray.put(fn)
        return self.ray.get([self._call.remote(ref, item) for item in items])

    def close(self) -> None:
        self.ray.shutdown()
