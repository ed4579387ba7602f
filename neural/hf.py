"""Optional adapter: a Hugging Face causal LM in a local directory, behind the same small
model protocol as `neural.GPT` (`forward_step`, `lens`, `n_layer`, `n_head`, `vocab_size`).

Needs the `hf` extra (`pip install echo-forge[hf]`); transformers is imported only when an
adapter is built. Supported layouts (others raise a clear error):

* GPT-2 style: `transformer.h[i]` blocks, `transformer.ln_f`, heads concatenated at the input
  of `attn.c_proj`.
* Llama style: `model.layers[i]`, `model.norm`, heads concatenated at the input of
  `self_attn.o_proj`.

Residual streams are read by forward hooks on the blocks (HF's own `hidden_states` holds the
final stream after the final norm, which would break `lens(residuals[-1]) == logits`); head
gates scale each head's slice of the output-projection input by a forward pre-hook.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .model import StepOutput, step_gates, step_mask

_LAYOUTS = [
    # (blocks, final norm, output projection inside a block)
    ("transformer.h", "transformer.ln_f", "attn.c_proj"),
    ("model.layers", "model.norm", "self_attn.o_proj"),
]


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


class HFCache:
    """The HF cache object plus the mask of every past position (True = real token)."""

    def __init__(self, past: Any, mask: torch.Tensor):
        self.past = past
        self.mask = mask

    @property
    def length(self) -> int:
        return self.mask.size(1)


def _copy_past(past):
    """A copy of an HF cache that the next call may update without touching `past`, so one
    cache can be continued in several ways (HF caches are updated in place)."""
    layers = getattr(past, "layers", None)
    if layers is None:
        return copy.deepcopy(past)
    new = copy.copy(past)
    new.layers = [copy.copy(layer) for layer in layers]  # DynamicLayer.update re-binds tensors
    return new


class HFModel(nn.Module):
    """A `transformers` causal LM wrapped as an Echo Forge language model."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model
        config = hf_model.config
        for layout in _LAYOUTS:
            blocks, norm = _get(hf_model, layout[0]), _get(hf_model, layout[1])
            if blocks is not None and norm is not None:
                proj_path = layout[2]
                break
        else:
            raise TypeError(f"unsupported Hugging Face model {type(hf_model).__name__}: "
                            f"expected GPT-2 style (transformer.h, transformer.ln_f) or Llama "
                            f"style (model.layers, model.norm) modules")
        # plain references, not submodules: their parameters already live under self.hf
        object.__setattr__(self, "blocks", list(blocks))
        object.__setattr__(self, "final_norm", norm)
        object.__setattr__(self, "head", hf_model.get_output_embeddings())
        self.n_layer = len(self.blocks)
        self.n_head = int(getattr(config, "num_attention_heads", None) or config.n_head)
        self.vocab_size = int(config.vocab_size)
        self.n_embd = int(getattr(config, "hidden_size", None) or config.n_embd)
        self._streams: list[torch.Tensor] | None = None
        self._gates: torch.Tensor | None = None  # (B|1, L, H) during a gated call
        projections = [_get(b, proj_path) for b in self.blocks]
        self.supports_head_gates = all(p is not None for p in projections)
        for block in self.blocks:
            block.register_forward_hook(self._record_stream)
        if self.supports_head_gates:
            for i, proj in enumerate(projections):
                proj.register_forward_pre_hook(self._gate_hook(i))

    @classmethod
    def from_pretrained(cls, directory: str, **kwargs) -> HFModel:
        """Load a causal LM from a local directory (never downloads)."""
        try:
            from transformers import AutoModelForCausalLM
        except ImportError:
            raise ImportError("neural.hf needs the 'hf' extra: pip install "
                              "'echo-forge[hf]' (transformers)") from None
        model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, **kwargs)
        return cls(model.eval())

    def _record_stream(self, module, args, output):
        if self._streams is not None:
            self._streams.append(output[0] if isinstance(output, tuple) else output)

    def _gate_hook(self, layer: int):
        def hook(module, args):
            if self._gates is None:
                return None
            x = args[0]  # (B, T, C), heads side by side
            B, T, C = x.shape
            g = self._gates[:, layer].to(x.dtype)  # (B|1, H)
            x = (x.view(B, T, self.n_head, C // self.n_head) * g[:, None, :, None]).view(B, T, C)
            return (x, *args[1:])

        return hook

    def lens(self, residual: torch.Tensor) -> torch.Tensor:
        """Final norm + LM head on any residual stream, (..., C) -> (..., V)."""
        return self.head(self.final_norm(residual))

    def forward_step(self, ids, *, attention_mask=None, cache=None, head_gates=None
                     ) -> StepOutput:
        """Same contract as `neural.GPT.forward_step`."""
        mask, past_len = step_mask(ids, attention_mask, cache)
        gates = None
        if head_gates is not None:
            if not self.supports_head_gates:
                raise NotImplementedError(
                    f"head_gates are not supported for {type(self.hf).__name__}: no per-head "
                    f"attention output projection found")
            gates = step_gates(head_gates, self.n_layer, self.n_head)
        position_ids = (mask.long().cumsum(dim=1) - 1).clamp(min=0)[:, past_len:]  # (B, T)
        past = None if cache is None else _copy_past(cache.past)
        self._streams, self._gates = [], gates
        try:
            out = self.hf(input_ids=ids, attention_mask=mask.long(), position_ids=position_ids,
                          past_key_values=past, use_cache=True)
            streams = tuple(self._streams)
        finally:
            self._streams, self._gates = None, None
        return StepOutput(logits=out.logits, residuals=streams,
                          cache=HFCache(out.past_key_values, mask))


def load_hf(directory: str, **kwargs) -> HFModel:
    """`HFModel.from_pretrained(directory)`."""
    return HFModel.from_pretrained(directory, **kwargs)
