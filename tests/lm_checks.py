"""Checks that any model speaking the decoders' protocol (`engine_dsl.protocol.LanguageModel`:
the built-in GPT, a wrapped Hugging Face model) must pass."""

from __future__ import annotations

import torch


def cached_logits(model, ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """The logits of `ids` fed as a prompt of `prompt_len` tokens, then one token at a time
    through the KV cache: what one full forward gives, at every position."""
    out = model.forward_step(ids[:, :prompt_len])
    pieces = [out.logits]
    for t in range(prompt_len, ids.size(1)):
        out = model.forward_step(ids[:, t : t + 1], cache=out.cache)
        pieces.append(out.logits)
    return torch.cat(pieces, dim=1)


def check_cache_is_a_value(model, ids: torch.Tensor, other: torch.Tensor, atol: float):
    """A cache is a value though it grows in place: a prefix grown by two steps, continued
    with two different tokens, then each continuation again, gives each sequence's own
    full-forward logits; and decoding all of ids one token at a time (past the room made
    at the first step, where ids are long enough) gives the full forward's at every
    position."""
    with torch.no_grad():  # as decoding runs: in place (with a gradient nothing is)
        prefix = model.forward_step(ids[:, :3])
        prefix = model.forward_step(ids[:, 3:4], cache=prefix.cache)
        prefix = model.forward_step(ids[:, 4:5], cache=prefix.cache)
        a = model.forward_step(ids[:, 5:6], cache=prefix.cache)
        b = model.forward_step(other[:, 5:6], cache=prefix.cache)
        a2 = model.forward_step(ids[:, 6:7], cache=a.cache).logits[:, -1]
        b2 = model.forward_step(other[:, 6:7], cache=b.cache).logits[:, -1]
        mixed = torch.cat([ids[:, :5], other[:, 5:7]], dim=1)
        assert torch.allclose(a2, model.forward_step(ids[:, :7]).logits[:, -1], atol=atol)
        assert torch.allclose(b2, model.forward_step(mixed).logits[:, -1], atol=atol)
        assert torch.allclose(cached_logits(model, ids, 4), model.forward_step(ids).logits,
                              atol=atol)
