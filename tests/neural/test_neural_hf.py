"""The Hugging Face adapter speaks the same protocol (tiny random GPT-2, nothing downloaded)."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lm_checks import cached_logits  # noqa: E402

from neural.hf import HFModel  # noqa: E402

ATOL = 1e-5


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=259,
                                     n_positions=64)
    path = tmp_path_factory.mktemp("gpt2")
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    return HFModel.from_pretrained(str(path))


def ids_of(batch, length, seed=1):
    return torch.randint(0, 259, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_protocol_outputs(model):
    """Attributes from the config; logits (B,T,V); one residual stream (B,T,C) per block;
    lens(residuals[-1]) equals the logits."""
    assert (model.n_layer, model.n_head, model.vocab_size) == (2, 2, 259)
    out = model.forward_step(ids_of(2, 5))
    assert out.logits.shape == (2, 5, 259)
    assert len(out.residuals) == 2 and all(r.shape == (2, 5, 32) for r in out.residuals)
    assert torch.allclose(model.lens(out.residuals[-1]), out.logits, atol=ATOL)


@pytest.mark.parametrize("batch,prompt_len,steps", [(1, 1, 5), (3, 4, 4)])
def test_kv_cache_equals_full_forward(model, batch, prompt_len, steps):
    """Incremental decoding through the cache gives the full forward's logits."""
    ids = ids_of(batch, prompt_len + steps)
    full = model.forward_step(ids).logits
    assert torch.allclose(cached_logits(model, ids, prompt_len), full, atol=ATOL)


def test_cache_can_be_continued_twice(model):
    """HF caches update in place; the adapter copies, so a cache can be reused."""
    ids = ids_of(1, 6)
    out = model.forward_step(ids[:, :4])
    x = model.forward_step(ids[:, 4:5], cache=out.cache).logits
    model.forward_step(ids[:, 5:6], cache=out.cache)
    assert torch.allclose(model.forward_step(ids[:, 4:5], cache=out.cache).logits, x,
                          atol=ATOL)


def test_left_padded_rows_equal_unpadded(model):
    """A left-padded row gives the logits of the same row alone, prompt and cached step."""
    short, long_ = ids_of(1, 3, seed=2)[0], ids_of(1, 6, seed=3)[0]
    ids = torch.stack([torch.cat([torch.zeros(3, dtype=torch.long), short]), long_])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1] * 6], dtype=torch.bool)
    out = model.forward_step(ids, attention_mask=mask)
    assert torch.allclose(out.logits[0, 3:], model.forward_step(short[None]).logits[0],
                          atol=ATOL)
    nxt = torch.tensor([[7], [9]])
    mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.bool)], 1)
    step = model.forward_step(nxt, attention_mask=mask, cache=out.cache)
    alone = model.forward_step(torch.cat([short, torch.tensor([7])])[None]).logits[0, -1]
    assert torch.allclose(step.logits[0, -1], alone, atol=ATOL)


def test_head_gates(model):
    """Gates of one change nothing; gates are differentiable; a closed head matters."""
    ids = ids_of(2, 5)
    plain = model.forward_step(ids).logits
    assert torch.allclose(model.forward_step(ids, head_gates=torch.ones(2, 2)).logits, plain,
                          atol=ATOL)
    gates = torch.full((2, 2, 2), 0.5, requires_grad=True)
    model.forward_step(ids, head_gates=gates).logits.square().mean().backward()
    assert gates.grad is not None and gates.grad.abs().sum() > 0
    closed = torch.ones(2, 2)
    closed[1, 0] = 0.0
    assert not torch.allclose(model.forward_step(ids, head_gates=closed).logits, plain,
                              atol=1e-4)
