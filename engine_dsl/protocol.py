"""The small model protocol that decoders need (DESIGN §1).

`neural.GPT` satisfies it structurally without importing this module, and so can any adapter
(e.g. a Hugging Face causal LM). Keep this file the one place the protocol is written down.

Shapes: B = batch rows, T = new tokens in this call, S = past + new tokens, V = vocabulary,
C = model width, L = number of blocks, H = heads per block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@dataclass
class ModelOutput:
    """What one forward call returns."""

    logits: torch.Tensor  # (B, T, V) final-layer next-token logits
    residuals: tuple[torch.Tensor, ...]  # L tensors (B, T, C): residual stream after each block
    cache: Any  # opaque KV cache; pass back as `cache=` with the next tokens


@runtime_checkable
class LanguageModel(Protocol):
    """A causal LM that decoding programs can query.

    `forward_step(ids, attention_mask=..., cache=..., head_gates=...)`:
      * ids: (B, T) token ids of the new positions.
      * attention_mask: (B, S) bool/0-1, True for real tokens over past + new positions
        (left padding is False). Positions are counted over real tokens only, so a
        left-padded row gives the same logits as the same row unpadded.
      * cache: None for the first call, else the `cache` of the previous output.
      * head_gates: None, or (L, H) / (B, L, H) multipliers of each attention head's output
        (already in [0, 1]; the caller applies the sigmoid). Differentiable.
    `lens(residual)`: final norm + LM head applied to a residual stream (..., C) -> (..., V).

    Optional: `select_cache(cache, index) -> cache`, the cache of rows `index` (a LongTensor).
    Decoders use it to share a prompt's prefix across programs and to drop finished rows; a
    cache made only of batch-first tensors works without it (see engine_dsl.decoders).
    Optional: a `room` keyword of `select_cache`: how many more positions the rows will
    append (decoders pass it, so a cache can make room once instead of growing).
    Optional: a `last_only` keyword of `forward_step`: True asks for the last position's
    logits only, (B, 1, V); decoders pass it to prefills (their other positions go unused).
    """

    n_layer: int
    n_head: int
    vocab_size: int

    def forward_step(
        self,
        ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        head_gates: torch.Tensor | None = None,
    ) -> ModelOutput: ...

    def lens(self, residual: torch.Tensor) -> torch.Tensor: ...
