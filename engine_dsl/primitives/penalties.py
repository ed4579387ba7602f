"""Penalties on tokens the sequence already holds: transformers'
RepetitionPenaltyLogitsProcessor and NoRepeatNGramLogitsProcessor, vLLM's frequency and
presence penalties (`apply_penalties`), llama.cpp's DRY (`llama_sampler_dry_apply`) with its
sequence breakers (`Breakers`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..types import NONNEGATIVE, PENALTY, Domain, Type
from . import Arg, Export, entry
from ._torch import BIG, NEG_INF, F, apply_soft_mask, col, finite_only, torch

L, R, C = Type.LOGITS, Type.REAL, Type.COUNT

# vLLM and OpenAI accept frequency and presence penalties in [-2, 2] (negative: encourage)
PENALTY_WEIGHT = Domain("penalty weight", lo=-2.0, hi=2.0, lo_open=False, hi_open=False,
                        transform="sigmoid")


def history_ids(ctx, x):
    """History ids (B, T) with padding mapped to column V (dropped after a scatter)."""
    ids = ctx.need("history")
    V = x.size(-1)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0).expand(x.size(0), -1)
    ids = ids.to(device=x.device, dtype=torch.long)
    pad = ids < 0
    if ctx.sources.history_mask is not None:
        pad = pad | ~ctx.sources.history_mask.to(device=x.device, dtype=torch.bool)
    return torch.where(pad, V, ids.clamp(max=V))


def _penalise(s, r):
    return torch.where(s < 0, s * r, s / r)


def repetition_penalty_exact(ctx, x, r):
    ids = ctx.need("history")
    if ctx.sources.history_mask is None and ids.dim() == 2 and ids.numel() \
            and ids.dtype == torch.long and ids.device == x.device:
        lo, hi = torch.aminmax(ids)
        if int(lo) >= 0 and int(hi) < x.size(-1):  # no padding: skip the extra column
            xp = x.clone()
            return xp.scatter_(1, ids, _penalise(x.gather(1, ids), col(r, x)))
    ids = history_ids(ctx, x)
    xp = F.pad(x, (0, 1))
    xp.scatter_(1, ids, _penalise(xp.gather(1, ids), col(r, x)))
    return xp[..., : x.size(-1)]


def repetition_penalty_relaxed(ctx, x, r):
    """Same values as exact; a token mask instead of scatter so repeated ids in the history
    do not count twice in the gradient."""
    ids = history_ids(ctx, x)
    seen = torch.zeros(x.size(0), x.size(-1) + 1, dtype=torch.bool, device=x.device)
    seen = seen.scatter(1, ids, True)[:, : x.size(-1)]
    return torch.where(seen, finite_only(_penalise, x, col(r, x)), x)


# ----------------------------------------------------------------------------- vLLM penalties


def _answer_counts(ctx, x):
    """(ids (B, T) of the answer, padding at column V; how often each one's token occurs
    in its row): the counts where they matter, without a (B, V) table."""
    ids = ctx.need("generated").to(device=x.device, dtype=torch.long)
    V = x.size(-1)
    ids = torch.where((ids < 0) | (ids >= V), V, ids)
    return ids, (ids[:, :, None] == ids[:, None, :]).sum(-1)


def _subtract_at_answer(ctx, x, a, amount):
    """x minus a x amount(count) at the answer's tokens (vLLM's arithmetic, same values):
    over the vocabulary when it is small, else only at the answer's tokens."""
    T = ctx.need("generated").size(-1)
    if x.size(-1) <= T * T:
        return x - col(a, x) * amount(ctx.counts(x.size(-1), x.device)).to(x.dtype)
    ids, counts = _answer_counts(ctx, x)
    xp = F.pad(x, (0, 1))
    xp.scatter_(1, ids, xp.gather(1, ids) - col(a, x) * amount(counts).to(x.dtype))
    return xp[:, : x.size(-1)]


def frequency_penalty(ctx, x, a):
    """vLLM `apply_penalties` (vllm/model_executor/layers/utils.py): logits -= a x count of
    the token in the generated answer."""
    return _subtract_at_answer(ctx, x, a, lambda c: c)


def frequency_penalty_relaxed(ctx, x, a):
    counts = ctx.counts(x.size(-1), x.device)
    return finite_only(lambda v: v - col(a, v) * counts.to(v.dtype), x)


def presence_penalty(ctx, x, a):
    """vLLM `apply_penalties`: logits -= a on every token the answer holds."""
    return _subtract_at_answer(ctx, x, a, lambda c: c > 0)


def presence_penalty_relaxed(ctx, x, a):
    seen = ctx.counts(x.size(-1), x.device) > 0
    return finite_only(lambda v: v - col(a, v) * seen.to(v.dtype), x)


# ----------------------------------------------------------------------------- no-repeat-ngram


def right_aligned_history(ctx, x):
    """(B, T) history ids with each row's tokens moved to the right end (order kept), -1
    before them: rows padded anywhere (decode pads prompts on the left, teacher-forced rows
    on the right) line up at their last token."""
    ids = history_ids(ctx, x)
    valid = ids < x.size(-1)
    if bool(valid.all()):
        return ids
    order = torch.sort(valid.to(torch.int8), dim=1, stable=True).indices
    return torch.where(valid.gather(1, order), ids.gather(1, order), -1)


def banned_ngram_ids(ctx, x, n: int):
    """(B, W) ids of the tokens whose emission would repeat an n-gram of prompt + answer
    (transformers `_calc_banned_ngram_tokens`), V where none."""
    B, V = x.shape
    h = right_aligned_history(ctx, x)
    T, n = h.size(1), max(int(n), 1)
    if n > T:
        return torch.full((B, 1), V, dtype=torch.long, device=x.device)
    nxt = h[:, n - 1:]  # the token after each (n - 1)-gram that starts at j
    match = h[:, : T - n + 1] >= 0  # a window starting at a token lies inside the row
    if n > 1:
        windows = h.unfold(1, n - 1, 1)[:, : T - n + 1]  # (B, T - n + 1, n - 1)
        match = match & (windows == h[:, T - n + 1:, None].transpose(1, 2)).all(-1)
    return torch.where(match, nxt, V)


def no_repeat_ngram_exact(ctx, x, n: int):
    """-inf at the banned tokens; where every candidate was banned the best one stays
    (transformers keeps none)."""
    ids = banned_ngram_ids(ctx, x, n)
    hit = ids < x.size(-1)
    out = x.clone().scatter_reduce_(1, torch.where(hit, ids, 0),
                                    torch.where(hit, NEG_INF, float("inf")).to(x.dtype), "amin")
    dead = hit.any(-1)
    if bool(dead.any()):
        dead &= (out.amax(-1) == NEG_INF) & (x.amax(-1) > NEG_INF)
        if bool(dead.any()):
            top = x[dead].argmax(-1, keepdim=True)
            out[dead] = out[dead].scatter(1, top, x[dead].gather(1, top))
    return out


def no_repeat_ngram_relaxed(ctx, x, n: int):
    """Banned tokens sit at the relaxed floor (>= 1e4 below every other token)."""
    banned = no_repeat_ngram_exact(ctx, x.detach(), n) == NEG_INF
    return apply_soft_mask(x, torch.full_like(x, BIG).masked_fill(banned, -BIG))


# ----------------------------------------------------------------------------- DRY

# llama.cpp's default DRY sequence breakers (common/common.h: dry_sequence_breakers)
DEFAULT_BREAKERS = ("\n", ":", "\"", "*")
BREAKER_MAX_CHARS, BREAKER_MAX_TAIL = 40, 20  # llama.cpp's MAX_CHAR_LEN and MAX_SEQ_LEN


@dataclass(frozen=True)
class Breakers:
    """DRY sequence breakers as token ids (llama.cpp's `dry_processed_breakers`): tokens that
    are a breaker on their own (`single`), and (head, tail) sequences that are one only
    together (a breaker string the tokenizer splits)."""

    single: frozenset[int] = frozenset()
    seqs: tuple[tuple[int, tuple[int, ...]], ...] = ()
    _masks: dict = field(default_factory=dict, compare=False, repr=False)

    def mask(self, V: int, device):
        """(V,) bool: the single-token breakers."""
        key = (V, str(device))
        if key not in self._masks:
            m = torch.zeros(V + 1, dtype=torch.bool)
            m[[min(t, V) for t in self.single]] = True
            self._masks[key] = m[:V].to(device)
        return self._masks[key]

    @classmethod
    def from_strings(cls, strings: Iterable[str], vocab_size: int,
                     token_bytes: Callable[[int], bytes],
                     encode: Callable[[bytes], list[int]]) -> Breakers:
        """The breaker strings as token ids of a tokenizer (llama.cpp
        `get_overlapping_token_sequences`, from koboldcpp): a token whose text contains the
        string breaks on its own; a token whose text ends with a beginning of the string
        breaks together with the tokens of the rest of the string (at most 20)."""
        single, seqs = set(), []
        for text in strings:
            s = text.encode("utf-8")[:BREAKER_MAX_CHARS]
            if not s:
                continue
            for tok in range(vocab_size):
                word = token_bytes(tok)
                if s in word:
                    single.add(tok)
                    continue
                pos = word.find(s[:1])
                while pos != -1:
                    i = 1
                    while i < len(s) and i + pos < len(word) and word[pos + i] == s[i]:
                        i += 1
                    if i == len(s) or i + pos >= len(word):  # the word ends inside s
                        tail = (tok, tuple(encode(s[i:])[:BREAKER_MAX_TAIL]))
                        if tail not in seqs:
                            seqs.append(tail)
                    pos = word.find(s[:1], pos + 1)
        return cls(frozenset(single), tuple(seqs))


NO_BREAKERS = Breakers()
FLOAT_MAX_LOG = 88.7228391  # llama.cpp: log of the largest float


def _repeat_limit(r, valid, brk: Breakers, V: int):
    """(B,) llama.cpp's rep_limit: tokens from the end to the last sequence breaker (minus
    the breaker's tail), or the whole history. r: history, last token first."""
    B, T = r.shape
    best = torch.full((B, T), -1, dtype=torch.long, device=r.device)
    best.masked_fill_(valid & brk.mask(V, r.device)[r.clamp(min=0, max=V - 1)] & (r < V), 0)
    for head, tail in brk.seqs:
        m = len(tail)
        if m >= T:
            continue
        ok = r[:, m:] == head
        for o, t in enumerate(tail):  # the tail follows the head: nearer the end
            ok &= r[:, m - o - 1: T - o - 1] == t
        ok = F.pad(ok & valid[:, m:], (m, 0))
        best = torch.where(ok & (best < m), m, best)
    found = best >= 0
    first = torch.where(found.any(-1), found.to(torch.int8).argmax(-1), T)
    lim = first - best.gather(1, first.clamp(max=T - 1)[:, None]).squeeze(1)
    return torch.where(first < T, lim, valid.sum(-1))


def _dry_hits(ctx, x, allowed: int):
    """(tokens (B, P), lengths (B, P)): for each place in the history, the token that
    followed a repeat of the last tokens and the repeat's length (llama.cpp's
    dry_repeat_count), where it is at least `allowed` and the token no single-token breaker
    (elsewhere: token V, length 0); None for a history under two tokens."""
    V = x.size(-1)
    r = right_aligned_history(ctx, x).flip(1)  # r[:, i]: last_tokens.rat(i)
    T = r.size(1)
    if T < 2:
        return None
    valid = r >= 0
    brk = ctx.sources.breakers or NO_BREAKERS
    limit = _repeat_limit(r, valid, brk, V)
    # Z[:, d - 1]: how many tokens before the token d places back repeat the last ones (the
    # reverse Z-algorithm's counts), capped by the breakers' limit: the shifts still
    # matching after k tokens, extended one token at a time while any is left
    active = valid[:, 1:] & (r[:, 1:] == r[:, :1])
    Z = active.to(torch.long)
    top = int(limit.max())
    for k in range(1, min(T - 1, top)):
        if not bool(active.any()):
            break
        active = F.pad(active[:, : T - 1 - k] & (r[:, 1 + k:] == r[:, k:k + 1]), (0, k))
        Z += active
    Z = torch.minimum(Z, limit[:, None])
    nxt = r[:, : T - 1]  # the token that followed each repeat
    hit = (Z >= allowed) & (nxt >= 0)
    if brk.single:
        hit &= ~brk.mask(V, x.device)[nxt.clamp(min=0, max=V - 1)]
    return torch.where(hit, nxt, V), torch.where(hit, Z, 0)


def _dry_penalty(n, multiplier, base, allowed: int, dt):
    """multiplier x base^(n - allowed) where n > 0 (0 elsewhere), as llama.cpp computes it:
    float constants, the power in double (its exponent capped so that the power stays a
    float), rounded to dtype `dt`; capped at dt's largest value."""
    m = (multiplier if isinstance(multiplier, torch.Tensor)
         else torch.tensor(float(multiplier), dtype=torch.float64)).to(dt).to(torch.float64)
    b = (base if isinstance(base, torch.Tensor)
         else torch.tensor(float(base), dtype=torch.float64)).to(dt)
    m, b = (v[:, None] if v.dim() else v for v in (m, b))  # per-row constants
    b64 = b.to(torch.float64)
    cap = torch.where(b > 1.000001, torch.floor(FLOAT_MAX_LOG / torch.log(b.float())),
                      float("inf")).to(torch.float64)
    e = torch.minimum((n - allowed).to(torch.float64), cap)
    pen = torch.where(n > 0, m * b64 ** e.clamp(min=0), 0.0)
    return pen.clamp(max=torch.finfo(dt).max).to(dt)


def dry_exact(ctx, x, multiplier, base, allowed: int):
    """llama.cpp `llama_sampler_dry_apply` over prompt + answer: a token that would extend a
    repeat of n >= allowed tokens loses multiplier x base^(n - allowed) (`_dry_penalty`); a
    score stays finite. Only the tokens that followed repeats are touched."""
    hits = _dry_hits(ctx, x, int(allowed))
    if hits is None:
        return x
    tok, z = hits
    cols = (z > 0).any(0).nonzero().squeeze(1)  # places where some row has a hit
    if cols.numel() == 0:
        return x
    tok, z = tok[:, cols], z[:, cols]
    n = torch.where(tok[:, :, None] == tok[:, None, :], z[:, None, :], 0).amax(-1)
    pen = _dry_penalty(n, multiplier, base, int(allowed), x.dtype)
    xp = F.pad(x, (0, 1))
    new = (xp.gather(1, tok) - pen).clamp(min=-torch.finfo(x.dtype).max)
    xp.scatter_(1, tok, torch.where(torch.isfinite(xp.gather(1, tok)), new, NEG_INF))
    return xp[:, : x.size(-1)]


def dry_relaxed(ctx, x, multiplier, base, allowed: int):
    """The same penalties as a (B, V) table, differentiable in multiplier and base."""
    B, V = x.shape
    n = torch.zeros(B, V + 1, dtype=torch.long, device=x.device)
    hits = _dry_hits(ctx, x, int(allowed))
    if hits is not None:
        n.scatter_reduce_(1, hits[0], hits[1], "amax")
    pen = _dry_penalty(n[:, :V], multiplier, base, int(allowed), x.dtype)
    big = torch.finfo(x.dtype).max
    return finite_only(lambda v: (v - pen).clamp(min=-big), x)


ENTRIES = [
    entry("repetition-penalty", [Arg("L", L), Arg("r", R, PENALTY, test_range=(1.0, 20.0))], L,
          "transform",
          "on tokens already in prompt or answer: positive scores / r, negative scores x r",
          exact=repetition_penalty_exact, relaxed=repetition_penalty_relaxed,
          reads={"history"}, neutral=1.0,
          export={"hf": Export(("repetition_penalty",), 0, (1.0,)),
                  # llama.cpp penalises the last n tokens of the context (prompt included)
                  "llama.cpp": Export(("--repeat-penalty",), neutral=(1.0,),
                                      extra={"--repeat-last-n": -1}, sampler="penalties"),
                  "llama-server": Export(("repeat_penalty",), neutral=(1.0,),
                                         extra={"repeat_last_n": -1}, sampler="penalties"),
                  "vllm": Export(("repetition_penalty",), 0, (1.0,))}),
    entry("frequency-penalty", [Arg("L", L), Arg("a", R, PENALTY_WEIGHT)], L, "transform",
          "minus a x how often the token occurs in the generated answer (OpenAI / vLLM "
          "`apply_penalties`, frequency_penalty; a in [-2, 2], negative encourages)",
          exact=frequency_penalty, relaxed=frequency_penalty_relaxed, reads={"generated"},
          neutral=0.0, shift="equivariant",
          commutes={"presence-penalty"},
          # vLLM counts the output only, as this does; llama.cpp counts the prompt too
          export={"vllm": Export(("frequency_penalty",), 1, (0.0,))}),
    entry("presence-penalty", [Arg("L", L), Arg("a", R, PENALTY_WEIGHT)], L, "transform",
          "minus a on every token the generated answer holds (OpenAI / vLLM "
          "`apply_penalties`, presence_penalty; a in [-2, 2], negative encourages)",
          exact=presence_penalty, relaxed=presence_penalty_relaxed, reads={"generated"},
          neutral=0.0, shift="equivariant",
          export={"vllm": Export(("presence_penalty",), 1, (0.0,))}),
    entry("no-repeat-ngram", [Arg("L", L), Arg("n", C, test_range=(1, 4))], L, "transform",
          "exclude every token that would repeat an n-gram of prompt + answer (transformers "
          "`NoRepeatNGramLogitsProcessor`); where every token would go, the best one stays",
          exact=no_repeat_ngram_exact, relaxed=no_repeat_ngram_relaxed, reads={"history"},
          shift="equivariant",
          # a processor: applied when greedy too, beside the repetition penalty (they commute)
          export={"hf": Export(("no_repeat_ngram_size",), 0, (0,))}),
    entry("dry", [Arg("L", L), Arg("multiplier", R, NONNEGATIVE, test_range=(0.0, 3.0)),
                  Arg("base", R, PENALTY, test_range=(1.0, 3.0)),
                  Arg("allowed-length", C, test_range=(1, 3))], L, "transform",
          "DRY, don't repeat yourself (llama.cpp `llama_sampler_dry_apply`, from koboldcpp): "
          "a token that would extend a repeat of n >= allowed-length tokens of prompt + "
          "answer loses multiplier x base^(n - allowed-length); repeats do not reach back "
          "past the last sequence breaker (a task setting, task.dry_breakers: llama.cpp's "
          "newline, ':', '\"', '*'), and single-token breakers are never penalised",
          exact=dry_exact, relaxed=dry_relaxed, reads={"history", "breakers"},
          shift="equivariant",
          # exported with llama.cpp's default breakers (the task setting's default)
          export={"llama.cpp": Export(("--dry-multiplier", "--dry-base",
                                       "--dry-allowed-length"), neutral=(0.0, 1.75, 2),
                                      extra={"--dry-penalty-last-n": -1}, sampler="dry"),
                  "llama-server": Export(("dry_multiplier", "dry_base", "dry_allowed_length"),
                                         neutral=(0.0, 1.75, 2),
                                         extra={"dry_penalty_last_n": -1}, sampler="dry")}),
]
