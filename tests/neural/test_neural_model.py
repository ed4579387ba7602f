"""The GPT satisfies the small model protocol: KV cache, padding, logit lens, head gates."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from lm_checks import cached_logits, check_cache_is_a_value

from neural import GPT, GPTConfig, KVCache, StepOutput
from neural.model import rotate

ATOL = 1e-5


@pytest.fixture(scope="module", params=["learned", "rope"])
def model(request):
    torch.manual_seed(0)
    m = GPT(GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=16, positions=request.param))
    # non-trivial biases and norms so masking mistakes show up in the logits
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.eval()


def ids_of(batch, length, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, length), generator=g)


def test_protocol_attributes_and_output_shapes(model):
    """forward_step returns (B,T,V) logits, L residual streams (B,T,C) and a cache."""
    out = model.forward_step(ids_of(3, 5))
    assert isinstance(out, StepOutput) and isinstance(out.cache, KVCache)
    assert (model.n_layer, model.n_head, model.vocab_size) == (2, 2, 259)
    assert out.logits.shape == (3, 5, 259)
    assert len(out.residuals) == 2 and all(r.shape == (3, 5, 16) for r in out.residuals)


def test_lens_of_last_residual_equals_logits(model):
    """lens(residuals[-1]) is exactly the final logits; lens of earlier blocks has shape V."""
    out = model.forward_step(ids_of(2, 7))
    assert torch.equal(model.lens(out.residuals[-1]), out.logits)
    assert model.lens(out.residuals[0]).shape == out.logits.shape


def test_training_forward_matches_forward_step(model):
    """forward(ids) gives the same logits as forward_step(ids)."""
    ids = ids_of(2, 9)
    logits, loss = model(ids)
    assert loss is None
    assert torch.allclose(logits, model.forward_step(ids).logits, atol=ATOL)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("prompt_len,steps", [(1, 6), (4, 3), (9, 12)])
def test_kv_cache_incremental_equals_full_forward(model, batch, prompt_len, steps):
    """Feeding a prompt then one token at a time through the cache gives the logits of one
    full forward over the whole sequence, at every position."""
    ids = ids_of(batch, prompt_len + steps, seed=prompt_len)
    full = model.forward_step(ids).logits
    assert torch.allclose(cached_logits(model, ids, prompt_len), full, atol=ATOL)


def test_kv_cache_chunks_of_several_tokens(model):
    """The cache also accepts several new tokens per call."""
    ids = ids_of(2, 10)
    full = model.forward_step(ids).logits
    a = model.forward_step(ids[:, :3])
    b = model.forward_step(ids[:, 3:7], cache=a.cache)
    c = model.forward_step(ids[:, 7:], cache=b.cache)
    assert torch.allclose(torch.cat([a.logits, b.logits, c.logits], 1), full, atol=ATOL)


def test_cache_can_be_continued_twice(model):
    """A cache is not consumed: continuing it two ways gives two independent answers."""
    ids = ids_of(1, 6)
    out = model.forward_step(ids[:, :4])
    x = model.forward_step(ids[:, 4:5], cache=out.cache).logits
    model.forward_step(ids[:, 5:6], cache=out.cache)
    assert torch.equal(model.forward_step(ids[:, 4:5], cache=out.cache).logits, x)


def test_a_grown_cache_continued_two_ways_keeps_both(model):
    """Decoding steps grow the cache in place (`neural.kv.GrowingKV`); it stays a value."""
    check_cache_is_a_value(model, ids_of(2, 30), ids_of(2, 30, seed=2), ATOL)


def test_a_cache_under_autograd_is_never_written_in_place(model):
    """With a gradient the cache grows by new tensors: gradients through cached steps are
    those of the full forward."""
    ids = ids_of(2, 8)
    model.zero_grad()
    cached_logits(model, ids, 3).square().mean().backward()
    cached = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.forward_step(ids).logits.square().mean().backward()
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in
               zip(cached, model.parameters(), strict=True))
    model.zero_grad()


@pytest.mark.parametrize("lengths", [[5, 2, 8], [1, 7], [3, 3]])
def test_left_padded_batch_equals_unpadded_rows(model, lengths):
    """Each row of a left-padded batch, prompt and cached continuation alike, has the logits
    of that row run alone without padding (positions count real tokens only)."""
    width, steps = max(lengths), 4
    rows = [ids_of(1, n + steps, seed=n)[0] for n in lengths]
    ids = torch.full((len(rows), width), 258)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (row, n) in enumerate(zip(rows, lengths, strict=True)):
        ids[i, width - n :] = row[:n]
        mask[i, width - n :] = True
    out = model.forward_step(ids, attention_mask=mask)
    got = [out.logits[:, -1]]
    for t in range(steps):
        mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=torch.bool)], 1)
        nxt = torch.stack([row[n + t] for row, n in zip(rows, lengths, strict=True)])[:, None]
        out = model.forward_step(nxt, attention_mask=mask, cache=out.cache)
        got.append(out.logits[:, -1])
    got = torch.stack(got, 1)  # (B, steps + 1, V)
    for i, (row, n) in enumerate(zip(rows, lengths, strict=True)):
        alone = model.forward_step(row[None]).logits[0, n - 1 :]
        assert torch.allclose(got[i], alone, atol=ATOL), f"row {i}"
        assert torch.isfinite(out.logits).all()


def test_head_gates_of_one_are_no_gates(model):
    """Gates of 1.0 (shape (L,H) or (B,L,H)) leave the output unchanged."""
    ids = ids_of(2, 6)
    plain = model.forward_step(ids).logits
    assert torch.allclose(model.forward_step(ids, head_gates=torch.ones(2, 2)).logits, plain,
                          atol=ATOL)
    assert torch.allclose(model.forward_step(ids, head_gates=torch.ones(2, 2, 2)).logits,
                          plain, atol=ATOL)


def test_head_gates_are_differentiable_and_matter(model):
    """Closing a head changes the logits, and gradients flow into the gates."""
    ids = ids_of(2, 6)
    gates = torch.full((2, 2), 0.5, requires_grad=True)
    out = model.forward_step(ids, head_gates=gates)
    out.logits.square().mean().backward()
    assert gates.grad is not None and gates.grad.abs().sum() > 0
    closed = torch.ones(2, 2)
    closed[0, 1] = 0.0
    assert not torch.allclose(model.forward_step(ids, head_gates=closed).logits,
                              model.forward_step(ids).logits, atol=1e-4)


def test_per_row_head_gates_apply_to_their_row(model):
    """(B,L,H) gates: row b's logits equal a (L,H) call with row b's gates."""
    ids = ids_of(2, 5)
    gates = torch.rand(2, 2, 2, generator=torch.Generator().manual_seed(3))
    both = model.forward_step(ids, head_gates=gates).logits
    for b in range(2):
        one = model.forward_step(ids[b : b + 1], head_gates=gates[b]).logits
        assert torch.allclose(both[b : b + 1], one, atol=ATOL)


def test_bad_shapes_are_clear_errors(model):
    """Wrong mask or gate shapes and too-long inputs raise ValueError with the shapes."""
    with pytest.raises(ValueError, match="attention_mask"):
        model.forward_step(ids_of(1, 3), attention_mask=torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="head_gates"):
        model.forward_step(ids_of(1, 3), head_gates=torch.ones(3, 2))
    with pytest.raises(ValueError, match="block_size"):
        model.forward_step(ids_of(1, 33))


def test_rope_turns_each_pair_by_position_times_frequency():
    """Worked by hand: head size 4 has frequencies 1 and 10000^(-1/2) = 0.01; the pairs are
    (x0, x2) and (x1, x3); a quarter turn maps (1, 0) to (0, 1)."""
    rope = GPT(GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=8, positions="rope"))
    assert torch.allclose(rope.rope_freq, torch.tensor([1.0, 0.01]))
    x = torch.tensor([1.0, 2.0, 0.0, 0.0])
    angle = torch.tensor([math.pi / 2, 0.0])  # the first pair turned a quarter, the second not
    assert torch.allclose(rotate(x, angle.cos(), angle.sin()), torch.tensor([0.0, 2.0, 1.0, 0.0]),
                          atol=1e-6)


@given(st.integers(0, 200), st.integers(0, 200), st.integers(0, 200), st.integers(0, 2**16))
def test_rope_attention_scores_depend_on_the_distance_only(m, n, shift, seed):
    """A query at position m and a key at position n score as they do at m + shift and
    n + shift: attention learns distances, not a table entry per position."""
    freq = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    q, k = torch.randn(2, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def turned(x, pos):
        return rotate(x, (pos * freq).cos(), (pos * freq).sin())

    score = turned(q, m) @ turned(k, n)
    assert torch.isclose(score, turned(q, m + shift) @ turned(k, n + shift), atol=1e-9)


def test_rope_model_has_no_position_table():
    """positions = "rope": no wpe (block_size x n_embd fewer parameters), nothing new saved;
    a head size that cannot be cut into pairs, or an unknown kind, is a ValueError."""
    shape = dict(block_size=32, n_layer=2, n_head=2, n_embd=16)
    learned, rope = GPT(GPTConfig(**shape)), GPT(GPTConfig(**shape, positions="rope"))
    assert learned.get_num_params() - rope.get_num_params() == 32 * 16
    assert set(learned.state_dict()) - set(rope.state_dict()) == {"transformer.wpe.weight"}
    assert set(rope.state_dict()) <= set(learned.state_dict())
    with pytest.raises(ValueError, match="n_embd / n_head = 3 must be even"):
        GPT(GPTConfig(**{**shape, "n_embd": 6}, positions="rope"))
    with pytest.raises(ValueError, match="positions must be one of learned, rope"):
        GPT(GPTConfig(**shape, positions="alibi"))


@torch.no_grad()  # (under autograd a cache is never written in place)
def test_a_cache_selected_with_room_grows_in_place(model):
    """`select_cache(cache, index, room=n)` makes room once: n decoding steps then write
    into the same buffers, with the logits of the cache selected without room."""
    ids, index = ids_of(2, 10), torch.tensor([1, 0, 1])
    out = model.forward_step(ids[:, :6])
    roomy = model.select_cache(out.cache, index, room=4)
    plain = model.select_cache(out.cache, index)
    buffers = [kv.keys.data_ptr() for kv in roomy.layers]
    mask = torch.ones(3, 6, dtype=torch.bool)
    for t in range(6, 10):
        mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.bool)], 1)
        a = model.forward_step(ids[index, t:t + 1], attention_mask=mask, cache=roomy)
        b = model.forward_step(ids[index, t:t + 1], attention_mask=mask, cache=plain)
        assert torch.equal(a.logits, b.logits)
        roomy, plain = a.cache, b.cache
    assert [kv.keys.data_ptr() for kv in roomy.layers] == buffers
    assert roomy.length == 10


def test_decoding_never_copies_the_cache_again(model, monkeypatch):
    """`decode` gives the model the room its rows will use, at the shared prefill and when
    finished rows are dropped: no decoding step copies a cache to grow it."""
    import engine_dsl
    from neural.kv import GrowingKV

    def no_copy(*args, **kwargs):
        raise AssertionError("a decoding step copied the cache")

    prompts = [list(range(3, 9)), [7, 8], [5, 6, 7, 8]]
    programs = ["(greedy logits)", "(sample logits)", "(sample (top-k logits 3))"]
    kw = dict(max_new_tokens=12, seed=3)
    unstopped = engine_dsl.decode(model, programs, prompts, share=False, **kw)
    early = [t for p in unstopped for a in p for t in a.tokens[:6]]
    kw["stop_token"] = max(set(early), key=early.count)  # stops a few rows early
    expected = engine_dsl.decode(model, programs, prompts, share=False, **kw)
    final_lengths, select = [], model.select_cache

    def recording(cache, index, room=None):
        final_lengths.append(cache.length + room)
        return select(cache, index, room)

    monkeypatch.setattr(model, "select_cache", recording)
    monkeypatch.setattr(GrowingKV, "of", no_copy)
    answers = engine_dsl.decode(model, programs, prompts, **kw)
    assert [[a.tokens for a in p] for p in answers] == [[a.tokens for a in p] for p in expected]
    # the prefill, then finished rows dropped (a quarter of the 9 rows stopped early) ...
    assert sum(a.stopped and len(a.tokens) < 11 for p in answers for a in p) >= 3
    assert len(final_lengths) >= 2
    # ... each with room up to the longest answer's last fed token: prompt 6 + 12 - 1
    assert set(final_lengths) == {17}
