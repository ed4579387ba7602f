"""A small decoder-only GPT: layer 1 of Echo Forge.

Reads top to bottom, nanoGPT style: attention, MLP, block, the config, then the model.
Two entry points:

* `GPT.forward(ids, targets=None)` for training: (logits, loss).
* `GPT.forward_step(ids, attention_mask=, cache=, head_gates=)` for decoding: the small model
  protocol of `engine_dsl.protocol` (satisfied structurally; this package never imports
  engine_dsl). It returns a `StepOutput` with the final logits, the residual stream after
  every block, and a KV cache to pass back with the next tokens.

Shapes: B = batch rows, T = new tokens, S = past + new tokens, C = n_embd, V = vocab_size,
L = n_layer, H = n_head, hs = C // H.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

from .kv import GrowingKV, grow, select
from .tokenizer import ByteTokenizer

IGNORE_INDEX = -100  # target value that the training loss skips
POSITIONS = ("learned", "rope")  # GPTConfig.positions
ROPE_BASE = 10000.0  # RoPE's frequencies: base ** (-2i / head size), as in Su et al. and LLaMA


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE (Su et al. 2021): each pair (x_i, x_{i + hs/2}) of x (..., T, hs) turned by the
    angle of its position and frequency; cos, sin (..., T, hs/2). A query turned for position m
    and a key turned for position n have a dot product that depends on m - n only."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd

    def forward(self, x, attn_mask=None, past=None, gates=None, rope=None):
        """x (B, T, C); attn_mask None (plain causal) or (B, 1, T, S): bool, True = may
        attend, or additive (0 = may attend, -inf); past None, (k, v) each (B, H, S_past, hs)
        or a `GrowingKV`; gates None or (B or 1, H); rope None or the (cos, sin) of the new
        positions, each (B or 1, 1, T, hs/2): queries and keys are turned by them (the cache
        holds turned keys).
        Returns y and this layer's cache: (k, v) without a past, else a `GrowingKV`."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, hs)
        if rope is not None:
            q, k = rotate(q, *rope), rotate(k, *rope)
        kv = (k, v)
        if past is not None:  # grown in place, not by a torch.cat of the whole cache
            kv = grow(past, k, v)
            k, v = kv.keys, kv.values  # (B, H, S, hs)
        dropout_p = self.attn_dropout if self.training else 0.0
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        # y: (B, H, T, hs)
        if gates is not None:
            y = y * gates[:, :, None, None].to(y.dtype)  # scale each head's output
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads side by side
        y = self.resid_dropout(self.c_proj(y))
        return y, kv


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, attn_mask=None, past=None, gates=None, rope=None):
        a, kv = self.attn(self.ln_1(x), attn_mask, past, gates, rope)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, kv


# field -> (lowest, highest, highest excluded) of GPTConfig's numbers: the domain of the
# `model.*` settings and of a model's config.json (an int bound: an integer field)
MODEL_DOMAINS = {"vocab_size": (1, 2**20, False), "block_size": (2, 2**16, False),
                 "n_layer": (1, 256, False), "n_head": (1, 256, False),
                 "n_embd": (1, 2**14, False), "dropout": (0.0, 1.0, True)}


@dataclass
class GPTConfig:
    vocab_size: int = ByteTokenizer.vocab_size  # 256 bytes + BOS, EOS, PAD
    block_size: int = 128  # longest sequence, in real (non-pad) tokens
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 128  # model width; must be a multiple of n_head
    dropout: float = 0.0  # in [0, 1); 0 keeps training deterministic and fastest
    bias: bool = True  # biases in Linear and LayerNorm layers
    tie_weights: bool = True  # LM head shares the token embedding matrix
    # where a token is: learned (a trained vector per position, GPT-2) | rope (rotary, Su et al.)
    positions: str = "learned"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        """Build from a dict, ignoring unknown keys (configs from newer versions still load)."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    def check(self) -> None:
        """ValueError naming the first field outside its domain (the run settings' domain of
        `model.*`): a config read from a file is checked before a model of it is built."""
        for name, (lo, hi, open_hi) in MODEL_DOMAINS.items():
            value, integer = getattr(self, name), isinstance(lo, int)
            if (type(value) not in ((int,) if integer else (int, float)) or not lo <= value
                    or not (value < hi if open_hi else value <= hi)):
                bounds = f"[{lo}, {hi}" if integer else f"[{lo:g}, {hi:g}"
                raise ValueError(f"{name} must be {'an integer' if integer else 'a number'} in "
                                 f"{bounds}{')' if open_hi else ']'}, found {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd = {self.n_embd} must be a multiple of n_head = "
                             f"{self.n_head}")
        for name in ("bias", "tie_weights"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, found {getattr(self, name)!r}")


@dataclass
class StepOutput:
    """What `forward_step` returns (the fields of engine_dsl.protocol.ModelOutput)."""

    logits: torch.Tensor  # (B, T, V) final-layer next-token logits
    residuals: tuple[torch.Tensor, ...]  # L tensors (B, T, C): residual stream after each block
    cache: Any  # KVCache; pass back as `cache=` with the next tokens


@dataclass
class KVCache:
    """Keys and values of every past position, and which of them are real tokens. A layer's
    are a (keys, values) pair (B, H, S, hs) after a prefill, a `GrowingKV` once selected or
    grown by decoding steps."""

    layers: list[tuple[torch.Tensor, torch.Tensor] | GrowingKV] = field(default_factory=list)
    mask: torch.Tensor | None = None  # (B, S) bool, True = real token

    @property
    def length(self) -> int:
        return 0 if self.mask is None else self.mask.size(1)

    def select(self, index: torch.Tensor, room: int | None = None) -> KVCache:
        """The cache of rows `index` (a copy), with room for exactly `room` more positions
        (None: a few) that decoding steps then fill in place."""
        return KVCache([kv.select(index, room) if isinstance(kv, GrowingKV) else
                        select(*kv, index, room) for kv in self.layers],
                       None if self.mask is None else self.mask.index_select(0, index))


def step_mask(ids, attention_mask, cache) -> tuple[torch.Tensor, int]:
    """`forward_step`'s (B, S) bool mask over past + new positions (True = real token) and
    the number of past positions; a missing `attention_mask` means every new token is real."""
    B, T = ids.shape
    past_len = 0 if cache is None else cache.length
    if attention_mask is None:
        new = torch.ones(B, T, dtype=torch.bool, device=ids.device)
        return (new if cache is None else torch.cat((cache.mask, new), dim=1)), past_len
    mask = attention_mask.to(device=ids.device, dtype=torch.bool)
    if mask.shape != (B, past_len + T):
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)}, expected "
                         f"{(B, past_len + T)} (past {past_len} + new {T} positions)")
    return mask, past_len


def step_gates(head_gates: torch.Tensor, n_layer: int, n_head: int) -> torch.Tensor:
    """`forward_step`'s head gates, (L, H) or (B, L, H), as (B or 1, L, H)."""
    gates = head_gates if head_gates.dim() == 3 else head_gates.unsqueeze(0)
    if gates.shape[1:] != (n_layer, n_head):
        raise ValueError(f"head_gates has shape {tuple(head_gates.shape)}, expected "
                         f"({n_layer}, {n_head}) or (B, {n_layer}, {n_head})")
    return gates


class GPT(nn.Module):
    """Decoder-only transformer with pre-norm blocks, logit lens, head gates and a KV cache."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.vocab_size is not None
        assert config.block_size is not None
        if config.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(POSITIONS)}, found "
                             f"{config.positions!r}")
        if config.positions == "rope" and (config.n_embd // config.n_head) % 2:
            raise ValueError(f"rope turns pairs of a head's dimensions: n_embd / n_head = "
                             f"{config.n_embd // config.n_head} must be even")
        self.config = config
        self.n_layer = config.n_layer
        self.n_head = config.n_head
        self.vocab_size = config.vocab_size
        learned = config.positions == "learned"
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            **({"wpe": nn.Embedding(config.block_size, config.n_embd)} if learned else {}),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if not learned:  # the rotation frequencies, one per pair of a head's dimensions
            hs = config.n_embd // config.n_head
            self.register_buffer("rope_freq", ROPE_BASE ** (-torch.arange(0, hs, 2) / hs),
                                 persistent=False)
        if config.tie_weights:
            self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # scaled init of the residual projections (GPT-2 paper)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self) -> int:
        """Number of parameters (tied matrices counted once)."""
        return sum(p.numel() for p in self.parameters())

    def lens(self, residual: torch.Tensor) -> torch.Tensor:
        """Logit lens: final LayerNorm + LM head on any residual stream, (..., C) -> (..., V)."""
        return self.lm_head(self.transformer.ln_f(residual))

    def forward(self, ids, targets=None, attention_mask=None):
        """Training forward. ids (B, T) long; targets (B, T) long with IGNORE_INDEX where no
        loss is taken. Right padding needs no attention_mask (causal attention never looks
        ahead); pass one for left padding. Returns (logits (B, T, V), loss or None)."""
        out = self.forward_step(ids, attention_mask=attention_mask, residuals=False)
        logits = out.logits
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        return logits, loss

    def select_cache(self, cache: KVCache, index: torch.Tensor,
                     room: int | None = None) -> KVCache:
        """The cache of rows `index` (a copy; `cache` is left as it was), with room for
        exactly `room` more positions (None: a few)."""
        return cache.select(index, room)

    def forward_step(self, ids, *, attention_mask=None, cache=None, head_gates=None,
                     residuals=True, last_only=False) -> StepOutput:
        """One protocol call: run the new tokens `ids` (B, T) after the positions in `cache`.

        attention_mask: (B, S) bool/0-1 over past + new positions, True = real token; None
          means every new token is real. Position ids count real tokens only, so a
          left-padded row gives the same logits as that row unpadded; pad keys are never
          attended to.
        head_gates: (L, H) or (B, L, H) multipliers of each head's output (differentiable).
        residuals: False skips collecting the per-block streams (training fast path).
        last_only: the logits of the last position only, (B, 1, V) (a prefill for decoding).
        """
        B, T = ids.size()
        mask, past_len = step_mask(ids, attention_mask, cache)
        S = past_len + T

        plain = cache is None and bool(mask.all())
        if plain:
            if T > self.config.block_size:
                raise ValueError(f"sequence of {T} tokens exceeds block_size "
                                 f"{self.config.block_size}")
            pos = torch.arange(T, dtype=torch.long, device=ids.device).unsqueeze(0)  # (1, T)
            attn_mask = None
        else:
            pos_all = (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, S)
            pos = pos_all[:, past_len:]  # (B, T)
            if int(pos.max()) >= self.config.block_size:
                raise ValueError(f"sequence of {int(pos.max()) + 1} real tokens exceeds "
                                 f"block_size {self.config.block_size}")
            q_idx = torch.arange(past_len, S, device=ids.device)[:, None]  # (T, 1)
            k_idx = torch.arange(S, device=ids.device)[None, :]  # (1, S)
            causal = k_idx <= q_idx  # (T, S)
            # a query may always see itself, so a pad query row is never empty (no NaN)
            allowed = (causal & mask[:, None, :]) | (k_idx == q_idx)  # (B, T, S)
            # additive, as scaled_dot_product_attention would make it in every block: once
            attn_mask = torch.zeros(B, 1, T, S, dtype=self.lm_head.weight.dtype,
                                    device=ids.device)
            attn_mask.masked_fill_(~allowed.unsqueeze(1), float("-inf"))  # (B, 1, T, S)

        gates = None if head_gates is None else step_gates(head_gates, self.n_layer,
                                                           self.n_head)

        x = self.transformer.wte(ids)
        rope = None
        if self.config.positions == "learned":
            x = x + self.transformer.wpe(pos)
        else:
            angle = (pos[..., None] * self.rope_freq.float()).unsqueeze(1)  # (B|1, 1, T, hs/2)
            rope = (angle.cos().to(x.dtype), angle.sin().to(x.dtype))
        x = self.transformer.drop(x)
        streams = []
        new_layers = []
        for i, block in enumerate(self.transformer.h):
            past = None if cache is None else cache.layers[i]
            x, kv = block(x, attn_mask, past, None if gates is None else gates[:, i], rope)
            new_layers.append(kv)
            if residuals:
                streams.append(x)
        logits = self.lens(x[:, -1:] if last_only else x)  # (B, T or 1, V)
        return StepOutput(logits=logits, residuals=tuple(streams),
                          cache=KVCache(layers=new_layers, mask=mask))

    def configure_optimizer(self, weight_decay, learning_rate, betas):
        """AdamW with weight decay on matrices only (not biases, norms)."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, foreach=True)
