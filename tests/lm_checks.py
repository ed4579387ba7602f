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
