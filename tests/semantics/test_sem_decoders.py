"""Decoders over the small model protocol, with a tiny deterministic stand-in model:
greedy/sample/vote/best-of, stop token and length cap, common random numbers, cost, and
P programs batched giving exactly the answers of each program alone."""

from dataclasses import dataclass

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import engine_dsl
from engine_dsl import read_expr
from engine_dsl.decoders import Decoding, decode, decode_each, plan, uniforms
from engine_dsl.primitives.decoders import inverse_cdf
from engine_dsl.protocol import LanguageModel, ModelOutput
from engine_dsl.registry import PRIMITIVES

DEC = engine_dsl.Type.DECODER


@dataclass
class StandInCache:
    ids: torch.Tensor  # (B, S) every position so far
    mask: torch.Tensor  # (B, S) True = real token


class StandIn:
    """Tiny deterministic causal LM (float64): embedding + position, n_layer blocks of a
    masked causal mean ("attention") split into heads, each head scaled by its gate, then a
    tanh MLP. Its KV cache is trivially correct: it keeps all ids and recomputes."""

    def __init__(self, vocab=11, width=8, n_layer=2, n_head=2, seed=0, opaque_cache=False):
        g = torch.Generator().manual_seed(seed)
        self.n_layer, self.n_head, self.vocab_size = n_layer, n_head, vocab
        self.emb = torch.randn(vocab, width, generator=g, dtype=torch.float64)
        self.pos = torch.randn(64, width, generator=g, dtype=torch.float64) * 0.3
        self.att = [torch.randn(width, width, generator=g, dtype=torch.float64) / width ** 0.5
                    for _ in range(n_layer)]
        self.mlp = [torch.randn(width, width, generator=g, dtype=torch.float64) / width ** 0.5
                    for _ in range(n_layer)]
        self.head = torch.randn(width, vocab, generator=g, dtype=torch.float64) * 2
        self.opaque_cache = opaque_cache
        self.positions = 0  # forward positions computed (for tests of sharing)

    def lens(self, h):
        return (h / (h.norm(dim=-1, keepdim=True) + 1e-6)) @ self.head

    def forward_step(self, ids, *, attention_mask=None, cache=None, head_gates=None):
        B, T = ids.shape
        past_ids = cache.ids if cache is not None else ids[:, :0]
        past_mask = cache.mask if cache is not None else torch.ones(B, 0, dtype=torch.bool)
        full = torch.cat([past_ids, ids], 1)
        if attention_mask is None:
            attention_mask = torch.cat([past_mask, torch.ones(B, T, dtype=torch.bool)], 1)
        mask = attention_mask.bool()
        self.positions += int(mask[:, -T:].sum())
        pos = (mask.long().cumsum(1) - 1).clamp(min=0)
        x = self.emb[full] + self.pos[pos]
        w = mask.double()  # (B, S)
        causal = torch.tril(torch.ones(full.size(1), full.size(1), dtype=torch.float64))
        weights = causal[None] * w[:, None, :]  # (B, S, S)
        weights = weights / weights.sum(-1, keepdim=True).clamp(min=1)
        gates = None
        if head_gates is not None:
            gates = head_gates if head_gates.dim() == 3 else head_gates[None].expand(B, -1, -1)
        streams = []
        for layer in range(self.n_layer):
            a = (weights @ x) @ self.att[layer]  # (B, S, C)
            if gates is not None:
                hs = a.size(-1) // self.n_head
                a = (a.view(B, -1, self.n_head, hs)
                     * gates[:, layer].double()[:, None, :, None]).view_as(a)
            x = x + torch.tanh(a)
            x = x + torch.tanh(x @ self.mlp[layer])
            streams.append(x)
        logits = self.lens(x)
        new_cache = StandInCache(full, mask)
        if self.opaque_cache:
            new_cache = _Opaque(new_cache)
        return ModelOutput(logits[:, -T:], tuple(s[:, -T:] for s in streams), new_cache)


class _Opaque:
    """A cache the decoder cannot re-index (no batch-first tensors visible)."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_stand_in_satisfies_the_protocol():
    assert isinstance(StandIn(), LanguageModel)


def test_left_padding_and_cache_do_not_change_logits():
    m = StandIn()
    one = m.forward_step(torch.tensor([[3, 4, 5]])).logits[:, -1]
    padded = m.forward_step(torch.tensor([[0, 0, 3, 4, 5]]),
                            attention_mask=torch.tensor([[False, False, True, True, True]]))
    assert torch.allclose(padded.logits[:, -1], one)
    first = m.forward_step(torch.tensor([[3, 4]]))
    step = m.forward_step(torch.tensor([[5]]), cache=first.cache)
    assert torch.allclose(step.logits[:, -1], one)


def assert_same(a, b):
    """Same tokens, stop flags and costs; log-likelihoods equal up to float rounding."""
    if isinstance(a, Decoding):
        assert (a.tokens, a.stopped, a.cost) == (b.tokens, b.stopped, b.cost)
        assert a.log_likelihood == pytest.approx(b.log_likelihood, abs=1e-9)
        return
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert_same(x, y)


PROMPTS = [[1, 2, 3], [4], [5, 6, 7, 8, 9], [2, 2]]
PROGRAMS = [
    "(greedy logits)",
    "(sample logits)",
    "(sample (top-p (temperature logits 0.7) 0.9))",
    "(vote 3 (sample (top-k logits 4)))",
    "(best-of 2 (sample (min-p logits 0.1)))",
    "(greedy (repetition-penalty logits 1.8))",
    "(sample (contrast logits (layer 1) 0.3))",
    "(sample (layer-mix #(0.0 1.0)))",
    "(sample (mix logits (gated #(3.0 -3.0 3.0 3.0)) 0.5))",
    "(vote 2 (best-of 2 (sample (if (< (entropy logits) 1.5) logits (top-k logits 2)))))",
]


def naive_greedy(model, program_text, prompt, max_new, stop):
    """Reference greedy decoding: full recomputation, one row, no cache."""
    f = engine_dsl.logits_fn(program_text)
    ids = list(prompt)
    out = []
    for _ in range(max_new):
        o = model.forward_step(torch.tensor([ids]))
        y = f(o.logits[:, -1], history=torch.tensor([ids]))
        tok = int(torch.argmax(y, -1))
        ids.append(tok)
        out.append(tok)
        if tok == stop:
            break
    return out


@pytest.mark.parametrize("text", ["logits", "(repetition-penalty (top-k logits 3) 2.0)"])
def test_greedy_matches_a_naive_loop(text):
    m = StandIn()
    got = decode(m, read_expr(f"(greedy {text})", DEC), PROMPTS, max_new_tokens=6,
                 stop_token=0)
    for prompt, d in zip(PROMPTS, got, strict=True):
        want = naive_greedy(m, text, prompt, 6, 0)
        assert d.tokens + ([0] if d.stopped else []) == want


def test_batched_programs_give_the_answers_of_each_program_alone():
    """One batch for all programs = each program decoded alone (common random numbers)."""
    m = StandIn()
    progs = [read_expr(t, DEC) for t in PROGRAMS]
    together = decode(m, progs, PROMPTS, max_new_tokens=7, stop_token=0, seed=5)
    alone = decode_each(m, progs, PROMPTS, max_new_tokens=7, stop_token=0, seed=5)
    assert_same(together, alone)
    reversed_order = decode(m, progs[::-1], PROMPTS, max_new_tokens=7, stop_token=0, seed=5)
    assert_same(reversed_order[::-1], together)


def test_unshared_path_and_opaque_caches_give_the_same_answers():
    progs = [read_expr(t, DEC) for t in PROGRAMS]
    shared = decode(StandIn(), progs, PROMPTS, max_new_tokens=5, stop_token=0, seed=2)
    plain = decode(StandIn(), progs, PROMPTS, max_new_tokens=5, stop_token=0, seed=2,
                   share=False)
    opaque = decode(StandIn(opaque_cache=True), progs, PROMPTS, max_new_tokens=5,
                    stop_token=0, seed=2)
    assert_same(shared, plain)
    assert_same(shared, opaque)


def test_sharing_runs_fewer_model_positions():
    progs = [read_expr("(vote 4 (sample logits))", DEC)] * 3
    a, b = StandIn(), StandIn()
    decode(a, progs, PROMPTS, max_new_tokens=8, stop_token=0)
    decode(b, progs, PROMPTS, max_new_tokens=8, stop_token=0, share=False)
    assert a.positions < b.positions


def test_stop_token_and_length_cap():
    m = StandIn()
    for d in decode(m, "(sample logits)", PROMPTS * 3, max_new_tokens=4, stop_token=3, seed=1):
        assert len(d.tokens) <= 4
        assert 3 not in d.tokens
        assert d.stopped or len(d.tokens) == 4


def test_cost_counts_forward_positions_per_answer():
    m = StandIn()
    prompts = [[1, 2, 3], [4]]
    g = decode(m, "(greedy logits)", prompts, max_new_tokens=5)
    for p, d in zip(prompts, g, strict=True):
        assert not d.stopped and len(d.tokens) == 5
        assert d.cost == len(p) + 5 - 1
    v = decode(m, "(vote 3 (greedy logits))", prompts, max_new_tokens=5)
    assert [d.cost for d in v] == [3 * d.cost for d in g]
    gated = decode(m, "(greedy (gated #(0.0 0.0 0.0 0.0)))", prompts, max_new_tokens=5)
    assert [d.cost for d in gated] == [2 * d.cost for d in g]


def test_log_likelihood_is_the_plain_models():
    m = StandIn()
    prompt = [1, 2, 3]
    d = decode(m, "(sample (temperature logits 3.0))", [prompt], max_new_tokens=4, seed=9)[0]
    ids, total = list(prompt), 0.0
    for tok in d.tokens:
        lp = torch.log_softmax(m.forward_step(torch.tensor([ids])).logits[0, -1], -1)
        total += float(lp[tok])
        ids.append(tok)
    assert d.log_likelihood == pytest.approx(total, abs=1e-9)


def test_best_of_one_is_the_sample_itself():
    """Sample j = 0 sees the same random numbers whatever wraps it."""
    m = StandIn()
    a = decode(m, "(sample logits)", PROMPTS, max_new_tokens=6, seed=3)
    b = decode(m, "(best-of 1 (sample logits))", PROMPTS, max_new_tokens=6, seed=3)
    assert_same(a, b)


def test_gated_heads_change_the_gated_stream():
    m = StandIn()
    open_ = decode(m, "(greedy (gated #(20.0 20.0 20.0 20.0)))", PROMPTS, max_new_tokens=4)
    plain = decode(m, "(greedy logits)", PROMPTS, max_new_tokens=4)
    shut = decode(m, "(greedy (gated #(-20.0 -20.0 -20.0 -20.0)))", PROMPTS,
                  max_new_tokens=4)
    assert [d.tokens for d in open_] == [d.tokens for d in plain]
    assert [d.tokens for d in shut] != [d.tokens for d in plain]


def splitmix_reference(seed, i, j, t):
    M = (1 << 64) - 1

    def mix(z):
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & M
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & M
        return z ^ (z >> 31)

    z = seed & M
    for v in (i, j, t):
        z = mix((z + 0x9E3779B97F4A7C15) & M) ^ v
    z = mix((z + 0x9E3779B97F4A7C15) & M)
    return (z >> 11) * 2.0 ** -53


def test_uniforms_are_a_counter_based_hash():
    i = torch.tensor([0, 1, 2, 3, 1000])
    j = torch.tensor([0, 0, 5, 7, 3])
    u = uniforms(42, i, j, 9)
    for k in range(5):
        assert u[k].item() == splitmix_reference(42, int(i[k]), int(j[k]), 9)
    many = uniforms(1, torch.arange(20000), torch.zeros(20000, dtype=torch.long), 0)
    assert 0 <= many.min() and many.max() < 1
    assert abs(many.mean().item() - 0.5) < 0.01


def test_inverse_cdf_sampling_follows_the_distribution():
    x = torch.tensor([[0.0, 1.0, 2.0, float("-inf")]]).expand(20000, -1)
    u = uniforms(0, torch.arange(20000), torch.zeros(20000, dtype=torch.long), 0)
    tok = inverse_cdf(x, u)
    freq = torch.bincount(tok, minlength=4).double() / 20000
    assert freq[3] == 0
    assert torch.allclose(freq[:3], torch.softmax(x[0, :3].double(), -1), atol=0.015)


def test_vote_and_best_of_selection_rules():
    vote, best = PRIMITIVES["vote"].exact, PRIMITIVES["best-of"].exact
    cands = [((1, 2), -3.0), ((4,), -1.0), ((1, 2), -3.0), ((4,), -0.5), ((7,), 0.0)]
    assert vote(None, 5, cands) in (1, 3)  # tie 2-2: the higher log-likelihood answer (4,)
    assert best(None, 5, cands) == 4
    assert vote(None, 2, [((1,), -1.0), ((2,), -1.0)]) == 0  # full tie: first sample


def test_vote_returns_the_most_frequent_answer():
    m = StandIn()
    d = decode(m, "(vote 5 (sample (temperature logits 2.0)))", [[1, 2]], max_new_tokens=2,
               seed=4)[0]
    p = plan(read_expr("(vote 5 (sample (temperature logits 2.0)))", DEC))
    assert p.samples == 5 and p.chooser.name == "sample" \
        and [(a.name, n) for a, n in p.layers] == [("vote", 5)]
    assert isinstance(d, Decoding) and d.cost == 5 * (2 + len(d.tokens) - 1 + int(d.stopped))


def test_decode_rejects_bad_inputs():
    m = StandIn()
    with pytest.raises(ValueError):
        decode(m, "(greedy logits)", [[]])
    with pytest.raises(ValueError):
        decode(m, "(greedy logits)", [[1]], max_new_tokens=0)
    with pytest.raises(ValueError):
        plan(read_expr("(top-k logits 3)"))


@pytest.mark.parametrize("share", [True, False])
def test_row_chunks_give_the_same_answers(monkeypatch, share):
    """The batch runs in chunks of rows (each with its own cache, compacted on its own):
    tiny chunks change nothing."""
    import engine_dsl.decoders as decoders

    progs = [read_expr(t, DEC) for t in PROGRAMS]
    whole = decode(StandIn(), progs, PROMPTS, max_new_tokens=6, stop_token=0, seed=7,
                   share=share)
    monkeypatch.setattr(decoders, "CHUNK_ROWS", 3)
    assert decoders.chunk_rows(torch.device("cpu")) == 3
    chunked = decode(StandIn(), progs, PROMPTS, max_new_tokens=6, stop_token=0, seed=7,
                     share=share)
    assert_same(chunked, whole)


def test_identical_programs_decode_once():
    """Equal programs (same structure and constants) share rows; each gets its own answers."""
    texts = ["(sample (top-p logits 0.8))", "(greedy logits)", "(sample (top-p logits 0.8))"]
    a, b = StandIn(), StandIn()
    got = decode(a, [read_expr(t, DEC) for t in texts], PROMPTS, max_new_tokens=5,
                 stop_token=0, seed=1)
    decode(b, [read_expr(t, DEC) for t in texts[:2]], PROMPTS, max_new_tokens=5,
           stop_token=0, seed=1)
    assert a.positions == b.positions
    assert_same(got, decode_each(StandIn(), texts, PROMPTS, max_new_tokens=5, stop_token=0,
                                 seed=1))
    assert got[0][0] is not got[2][0] and got[0][0].tokens is not got[2][0].tokens
    # same expression, a tuned constant: a different program
    tuned = plan(read_expr(texts[0], DEC))
    with torch.no_grad():
        tuned.module.constants[0].add_(-3.0)
    assert tuned.module.values() != plan(read_expr(texts[0], DEC)).module.values()
    both = decode(StandIn(), [texts[0], tuned], PROMPTS, max_new_tokens=5, seed=1)
    assert_same(both[1], decode(StandIn(), tuned, PROMPTS, max_new_tokens=5, seed=1))


def test_greedy_and_sampling_programs_in_any_order_and_length():
    """Rows are laid out greedy programs first; answers come back in the caller's order,
    also for programs with different sample counts and gated streams."""
    texts = ["(vote 2 (sample logits))", "(greedy (gated #(1.0 -2.0 0.5 3.0)))",
             "(best-of 3 (greedy (repetition-penalty logits 1.5)))", "(sample (layer 1))"]
    for order in (texts, texts[::-1], texts[1:] + texts[:1]):
        together = decode(StandIn(), order, PROMPTS, max_new_tokens=6, stop_token=0, seed=3)
        alone = decode_each(StandIn(), order, PROMPTS, max_new_tokens=6, stop_token=0,
                            seed=3)
        assert_same(together, alone)


@given(seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from([torch.float32, torch.float64]),
       u=st.one_of(st.floats(0.0, 1.0, exclude_max=True), st.just(1.0 - 2.0 ** -53)))
def test_sample_draws_only_tokens_that_can_be_drawn(seed, dtype, u):
    """Inverse CDF: never a token of probability 0 (an excluded -inf), u near 1 included,
    and it is the first token whose cumulative probability exceeds u x the total."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(4, 13, generator=g) * 4).to(dtype)
    x[torch.rand(4, 13, generator=g) < 0.5] = float("-inf")
    x[:, 5] = 0.0  # at least one token survives in every row
    tok = inverse_cdf(x, torch.full((4,), u, dtype=torch.float64))
    assert bool(torch.isfinite(x.gather(1, tok[:, None])).all())
    cum = torch.softmax(x, -1).cumsum(-1)
    target = (torch.tensor(u, dtype=dtype) * cum[:, -1])
    for r in range(4):
        below = cum[r, : tok[r]]
        assert bool((below <= target[r]).all())


def test_vote_counts_final_answers_by_the_callers_key():
    """`answer_key` is the final answer vote counts: with one key for every answer, all
    samples agree, so vote returns the most likely whole answer, as best-of does; with the
    tokens as key, answers are what they were."""
    m, prompts = StandIn(), [[1, 2], [3], [4, 5, 6]]
    kw = dict(max_new_tokens=4, stop_token=0, seed=2)
    pooled = decode(m, "(vote 6 (sample (temperature logits 3.0)))", prompts,
                    answer_key=lambda tokens: "same", **kw)
    best = decode(m, "(best-of 6 (sample (temperature logits 3.0)))", prompts, **kw)
    assert [d.tokens for d in pooled] == [d.tokens for d in best]
    plain = decode(m, "(vote 6 (sample (temperature logits 3.0)))", prompts, **kw)
    keyed = decode(m, "(vote 6 (sample (temperature logits 3.0)))", prompts,
                   answer_key=tuple, **kw)
    assert [d.tokens for d in plain] == [d.tokens for d in keyed]


def test_vote_picks_the_most_likely_answer_of_the_most_frequent_key():
    vote = PRIMITIVES["vote"].exact
    # keys: final answers "7" (twice) and "9" (once, most likely): "7" wins, its better chain
    assert vote(None, 3, [("7", -3.0), ("9", -0.5), ("7", -2.0)]) == 2
