"""DRY in exact mode against a port of llama.cpp's `llama_sampler_dry_apply`
(src/llama-sampling.cpp, from koboldcpp), with its sequence breakers built as llama.cpp's
`get_overlapping_token_sequences` builds them."""

import math
import os

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sem_parity import KINDS, make_logits

import engine_dsl
from engine_dsl.primitives.penalties import DEFAULT_BREAKERS, Breakers

EXAMPLES = 300 if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else 40
F32 = torch.float32


def f32(v: float) -> float:
    return float(torch.tensor(v, dtype=F32))


def llama_dry(logits, last_tokens, multiplier, base, allowed, breakers):
    """Port of `llama_sampler_dry_apply` (dry_penalty_last_n = -1: the whole context).
    logits: one row (float32); last_tokens: the context, oldest first; breakers: a list of
    (head, tail) as llama.cpp's dry_processed_breakers multimap. Float constants as float32,
    the power in double, the penalty stored as a float, as in C++."""
    multiplier, base = f32(multiplier), f32(base)
    out = logits.clone()
    if multiplier == 0.0 or base < 1.0:
        return out
    n_last = len(last_tokens)

    def rat(i):
        return last_tokens[n_last - 1 - i]

    if n_last <= allowed:
        return out
    repeat_count = [0] * n_last
    max_token_repeat = {}
    rep_limit = n_last
    for i in range(n_last):
        token = rat(i)
        tails = [t for h, t in breakers if h == token]
        if not tails:
            continue
        longest = -1
        for tail in tails:
            seq_len = len(tail)
            if longest < seq_len <= i:
                if all(tail[o] == rat(i - o - 1) for o in range(seq_len)):
                    longest = seq_len
        if longest >= 0:
            rep_limit = i - longest
            break
    if rep_limit < allowed:
        return out
    last = n_last - 1
    rt = lt = 0
    for k in range(1, n_last):
        if k > rt:
            n = 0
            while n + k < n_last and rat(n) == rat(n + k):
                n += 1
            repeat_count[last - k] = min(n, rep_limit)
            if n > 0:
                lt, rt = k, k + n - 1
        else:
            p = k - lt
            right_part_len = rt - k + 1
            if repeat_count[last - p] < right_part_len:
                repeat_count[last - k] = min(repeat_count[last - p], rep_limit)
            else:
                i = rt + 1
                while i < n_last and rat(i) == rat(i - k):
                    i += 1
                repeat_count[last - k] = min(i - k, rep_limit)
                lt, rt = k, i - 1
    for i in range(n_last - 1):
        repeat_len = repeat_count[i]
        if repeat_len >= allowed:
            token = rat(n_last - 2 - i)
            if token not in max_token_repeat or max_token_repeat[token] < repeat_len:
                max_token_repeat[token] = repeat_len
    max_exponent = 0
    if base > f32(1.000001):
        max_exponent = int(f32(f32(88.7228391) / f32(math.log(base))))
    for tok, length in max_token_repeat.items():
        if any(h == tok and not t for h, t in breakers):
            continue
        repeat_exp = length - allowed
        if max_exponent > 0 and repeat_exp > max_exponent:
            repeat_exp = max_exponent
        penalty = torch.tensor(multiplier * math.pow(base, repeat_exp), dtype=torch.float64)
        out[tok] = out[tok] - penalty.to(out.dtype)
    return out


def as_pairs(b: Breakers):
    return [(t, ()) for t in sorted(b.single)] + list(b.seqs)


def ours(x, hist, multiplier, base, allowed, breakers):
    f = engine_dsl.logits_fn(f"(dry logits {multiplier} {base} {allowed})")
    return f(x, history=hist, breakers=breakers)


@settings(max_examples=EXAMPLES)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 4), V=st.sampled_from([1, 2, 3, 6, 40]),
       kind=st.sampled_from(KINDS), T=st.integers(0, 40),
       multiplier=st.sampled_from([0.0, 1e-30, 0.8, 2.0, 1e30]),
       base=st.sampled_from([1.0, 1.0000001, 1.75, 3.0, 1e10]), allowed=st.integers(1, 4),
       breakers=st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=3), max_size=3))
def test_dry_matches_llama_cpp(seed, B, V, kind, T, multiplier, base, allowed, breakers):
    """Small vocabularies (repeats everywhere), breaker sequences of one to three tokens."""
    x = make_logits(seed, B, V, kind)
    hist = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))
    single = frozenset(b[0] for b in breakers if len(b) == 1)
    seqs = tuple(dict.fromkeys((b[0], tuple(b[1:])) for b in breakers if len(b) > 1))
    brk = Breakers(single, seqs)
    got = ours(x, hist, multiplier, base, allowed, brk)
    for r in range(B):
        want = llama_dry(x[r], hist[r].tolist(), multiplier, base, allowed, as_pairs(brk))
        want = want.clamp(min=-torch.finfo(F32).max).where(torch.isfinite(x[r]), x[r])
        assert torch.equal(got[r], want), (r, hist[r].tolist())


def test_llama_cpp_example():
    """llama.cpp's comment: context 'a b c c b c y a b c' has repeat counts
    0 0 3 1 0 2 0 0 0 0, so c extends 'a b c' (3), b extends 'c' (1), y extends 'b c' (2)."""
    a, b, c, y = 0, 1, 2, 3
    hist = torch.tensor([[a, b, c, c, b, c, y, a, b, c]])
    out = ours(torch.zeros(1, 5), hist, 1.0, 2.0, 1, None)
    assert out.tolist() == [[0.0, -1.0, -4.0, -2.0, 0.0]]  # 2^(n - 1): b 1, c 4, y 2


def test_breakers_stop_repeats():
    """A breaker cuts the repeat: after ':' only the tokens after it count."""
    hist = torch.tensor([[5, 6, 7, 9, 5, 6, 7, 9, 5, 6]])
    x = torch.zeros(1, 10)
    assert ours(x, hist, 1.0, 2.0, 2, None)[0, 7] == -2.0 ** 4  # '5 6 7 9 5 6' repeats: 6
    cut = ours(x, hist, 1.0, 2.0, 2, Breakers(frozenset({9})))
    assert cut[0, 7] == -1.0  # only '5 6' after the last 9: n = 2
    assert ours(x, hist, 1.0, 2.0, 2, Breakers(frozenset({7})))[0, 7] == 0.0  # a breaker


def test_breaker_strings_become_token_sequences_as_llama_cpp_builds_them():
    """get_overlapping_token_sequences on a toy vocabulary: a token holding the string is a
    breaker alone; one ending with a beginning of it breaks together with the tokens of the
    rest of the string."""
    vocab = [b"a", b"b", b":", b"\n", b"x\n", b"ab", b"", b"\n\n", b"b:", b"za"]

    def encode(s: bytes):
        return [vocab.index(bytes([c])) for c in s]

    brk = Breakers.from_strings(["\n", "b:", "ab", ""], len(vocab), vocab.__getitem__, encode)
    assert brk.single == {3, 4, 7, 8, 5}
    assert brk.seqs == ((1, (2,)), (5, (2,)), (0, (1,)), (9, (1,)))
    defaults = Breakers.from_strings(DEFAULT_BREAKERS, 259, lambda i: bytes([i]) if i < 256
                                     else b"", lambda s: list(s))
    assert defaults.single == {10, 58, 34, 42} and not defaults.seqs


def test_a_multi_token_breaker_cuts_only_as_a_whole():
    """'b' then ':' is a breaker; 'b' alone is not."""
    brk = Breakers(frozenset(), ((1, (2,)),))
    x = torch.zeros(1, 6)
    hist = torch.tensor([[4, 5, 1, 3, 4, 5, 1, 3, 4, 5]])
    assert ours(x, hist, 1.0, 2.0, 2, brk)[0, 1] == -2.0 ** 4  # no ':' anywhere
    hist = torch.tensor([[4, 5, 1, 2, 4, 5, 1, 2, 4, 5]])
    assert ours(x, hist, 1.0, 2.0, 2, brk)[0, 1] == -1.0  # repeat 'b :' cut: '4 5' only
