"""Your own model: a Hugging Face causal LM in a local directory, behind the same small model
protocol as `neural.GPT` (`forward_step`, `lens`, `select_cache`, `n_layer`, `n_head`,
`vocab_size`), with its own tokenizer behind the `ByteTokenizer` interface.

    model = HFModel.from_pretrained("path/to/model", device="cpu", train_mode="frozen")
    tok = HFTokenizer.from_pretrained("path/to/model")

Needs the `hf` extra (transformers; `lora` adds peft). A directory holds config.json,
safetensors weights and tokenizer files; it is read with `local_files_only` (never a hub
download) and only safetensors weights are loaded (no pickle). `fingerprint(dir)` is the
sha256 of the weight files: a run records it and refuses a model whose weights changed.

Families (`FAMILIES`): GPT-2, Llama / Mistral / Qwen2 and GPT-NeoX, whose blocks, final norm
and each attention block's output projection the adapter knows. Another family is used where
one of the layouts of `LAYOUTS` (Qwen3, Gemma, Phi, OPT, Falcon, GPT-J, ...) fits it and its
final norm and head on the last block's stream give its own logits, checked on a probe
forward when it is loaded. Any other causal LM still decodes from its logits
(`unavailable_inputs`: where no layout fits, no `layer`, `layer-mix` or `gated`; where the
logits are soft-capped or scaled after the head, as Gemma 2's and Granite's are, no `layer` or
`layer-mix`, which could not reproduce that; a program that reads one is an error naming the
family, and evolution leaves them out). Whatever the family, a second probe at load checks
that a left-padded row of a batch and a step through the cache give the model's plain
forward's logits; a model whose forward does not take the mask and positions as given is
refused rather than decoded wrongly:

* residual streams are read by forward hooks on the blocks. HF's own `hidden_states[k]` is
  the stream after block k for k < L, but the last one is taken after the final norm, which
  would break `lens(residuals[-1]) == logits`; the hooks give the stream itself.
* `lens` is the model's own final norm and LM head.
* head gates scale each head's slice of the output projection's input (heads side by side
  there in every family) by a forward pre-hook, before the projection mixes them.
* the KV cache is transformers' own (`DynamicCache`), passed under the name the installed
  version takes (`cache`, formerly `past_key_values`), so no deprecation warning; after the
  prefill its layers grow in place (`neural.kv.GrowingKV`) instead of by `torch.cat`.

Training modes: `frozen` (programs only; no parameter takes a gradient), `full` (every
weight), `lora` (peft adapters on the family's default target modules, or the ones given;
the base weights stay frozen). `trainable_state()` is what a run saves: nothing, every
weight, or the adapters.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import inspect
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .kv import GrowingKV
from .model import IGNORE_INDEX, StepOutput, step_gates, step_mask


class HFError(Exception):
    """A model directory or setting that cannot be used; `str()` is one line."""


@dataclass(frozen=True)
class Layout:
    blocks: str  # the list of transformer blocks
    norm: str  # the final norm
    proj: str  # inside a block: the attention output projection (heads side by side at its input)


_LLAMA = Layout("model.layers", "model.norm", "self_attn.o_proj")
FAMILIES: dict[str, Layout] = {
    "gpt2": Layout("transformer.h", "transformer.ln_f", "attn.c_proj"),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "gpt_neox": Layout("gpt_neox.layers", "gpt_neox.final_layer_norm", "attention.dense"),
}
# Where the parts sit in other families transformers ships, tried in order on a model whose
# family has no entry above; one is used only if the model's own logits are its final norm
# and head on the last block's stream (checked on a probe when the model is loaded).
LAYOUTS = (
    _LLAMA,  # Qwen3, Gemma, Phi-3, OLMo, StarCoder2, Mixtral, StableLM, ...
    Layout("model.layers", "model.final_layernorm", "self_attn.dense"),  # Phi
    Layout("model.decoder.layers", "model.decoder.final_layer_norm", "self_attn.out_proj"),  # OPT
    Layout("transformer.h", "transformer.ln_f", "attn.c_proj"),  # GPT-BigCode
    Layout("transformer.h", "transformer.ln_f", "attn.out_proj"),  # GPT-J, CodeGen
    Layout("transformer.h", "transformer.ln_f", "self_attention.dense"),  # Falcon, BLOOM
    # a language model inside a multimodal one: Gemma 3, Mistral 3, Qwen2.5-VL, ...
    Layout("model.language_model.layers", "model.language_model.norm", "self_attn.o_proj"),
)
TRAIN_MODES = ("frozen", "full", "lora")
_HEX = frozenset("0123456789ABCDEFabcdef")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


@dataclass(frozen=True)
class HFConfig:
    """The sizes the rest of Echo Forge reads (`model.config`)."""

    model_type: str
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int
    block_size: int  # longest sequence the model's positions allow

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ()  # module names; empty: peft's default (or all-linear)


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _find_layout(hf_model: nn.Module, family: str | None) -> tuple[Layout | None, str]:
    """The layout of `LAYOUTS` that fits the model (its blocks and final norm; one with the
    attention output projection first), and why its lens cannot be used ("" if it can): the
    lens is the model's own only if its logits are its head on the final norm's output and
    that norm reads the last block's stream, checked on a probe forward whose norm output is
    replaced by large random values (a logit scale or soft cap shows there), so `layer` and
    `layer-mix` mean on it what they mean on the known families. (None, why) where no layout
    fits: the model decodes from its logits only."""
    head = hf_model.get_output_embeddings()
    fits = [lay for lay in LAYOUTS if head is not None and _get(hf_model, lay.norm) is not None
            and len(_get(hf_model, lay.blocks) or ())]
    if not fits:
        return None, "none of the known layouts of blocks and final norm fits it"
    layout = min(fits, key=lambda lay: _get(_get(hf_model, lay.blocks)[0], lay.proj) is None)
    blocks, norm = _get(hf_model, layout.blocks), _get(hf_model, layout.norm)
    seen: dict[str, torch.Tensor] = {}

    def stream(module, args, out):
        seen["stream"] = out[0] if isinstance(out, tuple) else out

    def normed(module, args, out):
        seen["input"] = args[0]
        g = torch.Generator(device=out.device).manual_seed(0)
        seen["output"] = torch.randn(out.shape, generator=g, device=out.device,
                                     dtype=out.dtype) * 1000
        return seen["output"]

    hooks = [blocks[-1].register_forward_hook(stream), norm.register_forward_hook(normed)]
    training = hf_model.training
    hf_model.eval()  # no dropout in the probe
    try:
        with torch.no_grad():
            ids = torch.arange(3, device=head.weight.device)[None] % head.weight.shape[0]
            logits = hf_model(input_ids=ids).logits
            ok = (len(seen) == 3 and torch.equal(seen["input"], seen["stream"])
                  and torch.allclose(head(seen["output"]), logits, rtol=1e-4, atol=1e-3))
    except Exception as e:  # a model that cannot run a forward at all
        raise HFError(f"model family '{family}' ({type(hf_model).__name__}): a probe forward "
                      f"failed ({_first_line(e)})") from None
    finally:
        for h in hooks:
            h.remove()
        hf_model.train(training)
    if not ok:
        return layout, (f"its logits are not its head on its final norm ({layout.norm}) of the "
                      f"last block's stream (a logit scale or soft cap, or a projection after "
                      f"the norm)")
    return layout, ""


def _text_config(config):
    """The config of the language model inside `config` (itself, unless it is multimodal)."""
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def _size(config, *names: str) -> int | None:
    """The first of `names` that `config` sets to a positive integer."""
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _transformers():
    try:
        import transformers
    except ImportError:
        raise HFError("hf: models need the 'hf' extra: pip install 'echo-forge[hf]' "
                      "(transformers)") from None
    return transformers


# --- the directory -------------------------------------------------------------------------


def weight_files(directory: str | Path) -> list[Path]:
    """The safetensors weight files of a model directory, sorted by name."""
    return sorted(Path(directory).glob("*.safetensors"))


def check_directory(directory: str | Path) -> Path:
    """`directory` if it looks like a local HF model (config.json and safetensors weights);
    HFError naming what is missing otherwise."""
    d = Path(directory)
    if not d.is_dir():
        raise HFError(f"hf:{directory}: no such directory (a local model directory with "
                      "config.json, safetensors weights and tokenizer files)")
    if not (d / "config.json").is_file():
        raise HFError(f"hf:{directory}: no config.json; not a Hugging Face model directory")
    if not weight_files(d):
        pickled = sorted(p.name for p in d.glob("*.bin"))
        hint = (f" (found {', '.join(pickled)}: pickle files are not loaded; convert them to "
                "safetensors)" if pickled else "")
        raise HFError(f"hf:{directory}: no *.safetensors weights{hint}")
    return d


def fingerprint(directory: str | Path) -> str:
    """sha256 over the weight files (their names and contents), hex."""
    h = hashlib.sha256()
    for path in weight_files(directory):
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def _hf_config(directory: Path):
    transformers = _transformers()
    try:
        with _quiet(transformers):
            return transformers.AutoConfig.from_pretrained(str(directory),
                                                           local_files_only=True)
    except Exception as e:  # transformers' errors have no common public type
        raise HFError(f"hf:{directory}: cannot read config.json ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


@contextlib.contextmanager
def _quiet(transformers):
    """transformers' warnings and load report (a table of keys) are many lines on stderr;
    what they say of a directory is raised as one line by the caller instead."""
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.utils.logging.set_verbosity(verbosity)


# --- the tokenizer -------------------------------------------------------------------------


class HFTokenizer:
    """A model's own tokenizer behind the `ByteTokenizer` interface (`encode`, `decode`,
    `token_bytes`, `bos_id`, `eos_id`, `pad_id`, `vocab_size`, `to_dict`).

    Prompts start with the tokenizer's BOS token, or its EOS token where it has none (as
    GPT-2's `<|endoftext|>` serves both); answers end with EOS; padding is the PAD token or,
    where there is none, EOS (padding is masked out, never attended to nor a target)."""

    def __init__(self, tokenizer, vocab_size: int, path: str, eos_id: int | None = None):
        """`eos_id`: the model's end-of-sequence token (config.json's), used where the
        tokenizer names none."""
        self.tok = tokenizer
        self.path = path
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else eos_id
        if eos is None:
            raise HFError(f"hf:{path}: neither the tokenizer nor config.json names an "
                          "end-of-sequence token (answers need one to stop)")
        self.eos_id = int(eos)
        bos = tokenizer.bos_token_id
        self.bos_id = int(bos) if bos is not None else self.eos_id
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.eos_id
        self.vocab_size = int(vocab_size)
        self._special = set(tokenizer.all_special_ids) | {self.eos_id}
        self._bytes: list[bytes] | None = None

    @classmethod
    def from_pretrained(cls, directory: str) -> HFTokenizer:
        d = check_directory(directory)
        config = _hf_config(d)  # AutoTokenizer reads it too: its errors are config.json's
        if not any((d / f).is_file() for f in TOKENIZER_FILES):
            raise HFError(f"hf:{directory}: cannot load the tokenizer (no tokenizer files: "
                          f"expected one of {', '.join(TOKENIZER_FILES)})")
        transformers = _transformers()
        try:
            with _quiet(transformers):
                tok = transformers.AutoTokenizer.from_pretrained(str(d), local_files_only=True)
        except Exception as e:  # missing or damaged tokenizer files
            raise HFError(f"hf:{directory}: cannot load the tokenizer ({_first_line(e)})") \
                from None
        if len(tok) <= len(tok.all_special_ids):
            raise HFError(f"hf:{directory}: cannot load the tokenizer (its vocabulary is "
                          "empty; the tokenizer files are damaged)")
        rows = _size(_text_config(config), "vocab_size") or 0
        if rows and len(tok) > rows:  # its last ids have no embedding: an index error mid-run
            raise HFError(f"hf:{directory}: the tokenizer has {len(tok)} tokens but the model "
                          f"only {rows} (config.json vocab_size); ids from {rows} on have no "
                          "embedding (resize the model's embeddings to the tokenizer)")
        eos = getattr(_text_config(config), "eos_token_id", None)
        eos = eos[0] if isinstance(eos, (list, tuple)) and eos else eos
        return cls(tok, max(len(tok), rows), str(directory),
                   eos if isinstance(eos, int) and 0 <= eos < max(len(tok), rows) else None)

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        ids = list(self.tok.encode(text, add_special_tokens=False))
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids, *, stop_at_eos: bool = False) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id and stop_at_eos:
                break
            if i not in self._special:
                out.append(i)
        return self.tok.decode(out, skip_special_tokens=True,
                               clean_up_tokenization_spaces=False)

    def token_bytes(self, i: int) -> bytes:
        """The bytes token `i` stands for in running text (none for special tokens), as
        llama.cpp's token pieces: a sentencepiece token's leading space (its '▁', which
        decoding a token alone drops) kept, a byte-fallback piece `<0xHH>` its byte."""
        if self._bytes is None:  # once, for the whole vocabulary (DRY's breakers ask each)
            self._bytes = self._pieces()
        return self._bytes[i] if 0 <= i < len(self._bytes) else b""

    def _pieces(self) -> list[bytes]:
        n, opts = len(self.tok), {"clean_up_tokenization_spaces": False}
        anchor = (self.encode("a") or [None])[-1]  # a token read after it is mid-text
        lead = self.tok.decode([anchor], **opts) if anchor is not None else ""
        after = (self.tok.batch_decode([[anchor, t] for t in range(n)], **opts)
                 if lead else [None] * n)
        pieces = self.tok.convert_ids_to_tokens(list(range(n)))
        out = []
        for t, (text, piece) in enumerate(zip(after, pieces, strict=True)):
            if t in self._special:
                out.append(b"")
            elif isinstance(piece, str) and len(piece) == 6 and piece.startswith("<0x") \
                    and piece.endswith(">") and all(c in _HEX for c in piece[3:5]):
                out.append(bytes([int(piece[3:5], 16)]))
            elif text is not None and text.startswith(lead):
                out.append(text[len(lead):].encode("utf-8"))
            else:
                out.append(self.tok.decode([t], **opts).encode("utf-8"))
        return out

    def encode_bytes(self, data: bytes) -> list[int]:
        """Token ids of UTF-8 text given as bytes (a DRY breaker's tail)."""
        return self.encode(data.decode("utf-8", errors="ignore"))

    def to_dict(self) -> dict:
        return {"kind": "hf", "vocab_size": self.vocab_size, "bos_id": self.bos_id,
                "eos_id": self.eos_id, "pad_id": self.pad_id}

    def __eq__(self, other):
        return isinstance(other, HFTokenizer) and other.to_dict() == self.to_dict()

    def __hash__(self):
        return hash(tuple(self.to_dict().items()))


# --- the model -----------------------------------------------------------------------------


class HFCache:
    """The HF cache object plus the mask of every past position (True = real token)."""

    def __init__(self, past: Any, mask: torch.Tensor):
        self.past = past
        self.mask = mask

    @property
    def length(self) -> int:
        return self.mask.size(1)


@functools.cache
def _growing_layer() -> type:
    """transformers' `DynamicLayer` over a `GrowingKV` (the class is made on first use, so
    that this module imports without transformers)."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """One block's keys and values, grown in place (`neural.kv.GrowingKV`): a step copies
        its own positions, not the whole cache as `DynamicLayer`'s `torch.cat` does (a third
        of a batched step at a thousand rows). Copies of the layer (`_copy_past`) share the
        buffers and stay values. The other methods are `DynamicLayer`'s, which read `keys`
        and `values`."""

        @classmethod
        def of(cls, layer: DynamicLayer) -> DynamicLayer:
            """A filled `DynamicLayer` as a growing one (its tensors copied at the first
            step)."""
            new = cls()
            new.__dict__.update(layer.__dict__)
            new._set(GrowingKV.wrap(layer.keys, layer.values))
            return new

        def _set(self, kv: GrowingKV) -> None:
            self._kv = kv
            self.keys, self.values = kv.keys, kv.values

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:  # after a reset
                self._set(GrowingKV.wrap(*super().update(key_states, value_states)))
            else:
                self._set(self._kv.append(key_states, value_states))
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self._kv.length if self.is_initialized else 0

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self._set(self._kv.select(indices))

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            self.batch_select_indices(beam_idx.to(self.keys.device))

        def batch_repeat_interleave(self, repeats: int) -> None:
            self._set(GrowingKV.of(self.keys.repeat_interleave(repeats, dim=0),
                                   self.values.repeat_interleave(repeats, dim=0)))

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError(f"crop({tokens_to_remove}): expected a count <= 0")
            self._set(self._kv.prefix(self._kv.length + tokens_to_remove))

    return GrowingLayer


def _growing(past):
    """`past` with its filled plain `DynamicLayer`s replaced by growing ones (in place);
    other layers (sliding windows, quantized, ...) and caches without `layers` are left as
    they are."""
    layers = getattr(past, "layers", None)
    if layers is None:
        return past
    from transformers.cache_utils import DynamicLayer

    for i, layer in enumerate(layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys.dim() == 4:
            layers[i] = _growing_layer().of(layer)
    return past


def _copy_past(past):
    """A copy of an HF cache that the next call may update without touching `past`, so one
    cache can be continued in several ways (HF caches are updated in place; their key-value
    layers re-bind their tensors rather than write into them, so a shallow copy of each
    serves; a layer that writes into its tensors, as linear attention's convolution and
    recurrent states are written, is copied whole)."""
    layers = getattr(past, "layers", None)
    if layers is None:
        return copy.deepcopy(past)
    from transformers import cache_utils

    linear = getattr(cache_utils, "LinearAttentionCacheLayerMixin", ())
    new = copy.copy(past)
    new.layers = [copy.copy(layer) if isinstance(layer, cache_utils.DynamicLayer)
                  and not isinstance(layer, linear) else copy.deepcopy(layer)
                  for layer in layers]
    return new


class HFModel(nn.Module):
    """A `transformers` causal LM wrapped as an Echo Forge language model."""

    is_hf = True

    def __init__(self, hf_model: nn.Module, *, train_mode: str = "frozen",
                 lora: LoraSettings | None = None, source: dict | None = None):
        super().__init__()
        config = hf_model.config
        family = getattr(config, "model_type", None)
        if train_mode not in TRAIN_MODES:
            raise HFError(f"train mode '{train_mode}': expected one of {', '.join(TRAIN_MODES)}")
        layout, why = (FAMILIES[family], "") if family in FAMILIES else \
            _find_layout(hf_model, family)
        self.train_mode = train_mode
        self.lora = lora or LoraSettings()
        self.source = dict(source or {})
        object.__setattr__(self, "peft", None)
        hf_model.requires_grad_(train_mode == "full")
        if train_mode == "lora":
            object.__setattr__(self, "peft", _with_lora(hf_model, self.lora))
        self.hf = hf_model  # peft injects its adapters into these very modules
        head = hf_model.get_output_embeddings()
        blocks, norm = (None, None) if layout is None else \
            (_get(hf_model, layout.blocks), _get(hf_model, layout.norm))
        if layout is not None and (blocks is None or norm is None or head is None):
            raise HFError(f"model family '{family}' ({type(hf_model).__name__}): expected "
                          f"{layout.blocks}, {layout.norm} and an output embedding")
        # plain references, not submodules: their parameters already live under self.hf
        object.__setattr__(self, "blocks", list(blocks or ()))
        object.__setattr__(self, "final_norm", norm)
        object.__setattr__(self, "head", head)
        text = _text_config(config)  # a multimodal model's sizes are its text model's
        self.n_layer = len(self.blocks) or _size(text, "num_hidden_layers", "n_layer") or 1
        self.n_head = _size(text, "num_attention_heads", "n_head") or 1
        self.vocab_size = (head.weight.shape[0] if head is not None else None) or \
            _size(text, "vocab_size")
        n_embd = _size(text, "hidden_size", "n_embd") or 0
        positions = _size(text, "max_position_embeddings", "n_positions") or 2**16
        if not self.vocab_size:
            raise HFError(f"model family '{family}' ({type(hf_model).__name__}): no output "
                          "embedding and no vocab_size in config.json")
        self.config = HFConfig(family, self.n_layer, self.n_head, n_embd, self.vocab_size,
                               positions)
        self._streams: list[torch.Tensor] | None = None
        self._gates: torch.Tensor | None = None  # (B|1, L, H) during a gated call
        projections = [_get(b, layout.proj) for b in self.blocks] if layout else []
        self.supports_head_gates = bool(projections) and all(p is not None for p in projections)
        # the program inputs this model cannot give, each with why (`SearchSpace.for_model`
        # keeps them out of the search; a program that reads one is an error naming it)
        name = f"the model family '{family}' ({type(hf_model).__name__})"
        self.unavailable_inputs: dict[str, str] = {}
        if why:
            self.unavailable_inputs.update(dict.fromkeys(("residuals", "lens"), f"{name}: {why}"))
        if not self.supports_head_gates:
            self.unavailable_inputs["gated_forward"] = (
                f"{name} has no per-head attention output projection to scale")
        for block in self.blocks:
            block.register_forward_hook(self._record_stream)
        if self.supports_head_gates:
            for i, proj in enumerate(projections):
                proj.register_forward_pre_hook(self._gate_hook(i))
        params = inspect.signature(hf_model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keeps_logits = "logits_to_keep" in params
        self._check_decoding(f"model family '{family}' ({type(hf_model).__name__})")

    def _check_decoding(self, name: str) -> None:
        """The logits decoding reads are the model's own: a left-padded row of a batch and
        a step through the cache give its plain forward's logits on the row alone, checked
        once on a probe of six tokens (a model that ignored the mask or the positions it is
        given would otherwise decode wrongly without a word); HFError where they differ."""
        device = self.head.weight.device if self.head is not None else device_of(self.hf)
        ids = (torch.arange(6, device=device) * 7 + 3) % self.vocab_size
        pad = torch.zeros(2, dtype=torch.long, device=device)
        batch = torch.stack([torch.cat([pad, ids[:3]]), ids[:5]])
        mask = torch.ones(2, 5, dtype=torch.bool, device=device)
        mask[0, :2] = False
        training = self.hf.training
        self.hf.eval()  # no dropout in the probe
        try:
            with torch.no_grad():
                plain = self.hf(input_ids=ids[None]).logits[0].float()
                out = self.forward_step(batch, attention_mask=mask)
                step = self.forward_step(torch.stack([ids[3:4], ids[5:6]]), cache=out.cache,
                                         attention_mask=F.pad(mask, (0, 1), value=True))
        except Exception as e:  # a model that cannot run a forward at all
            raise HFError(f"{name}: a probe forward failed ({_first_line(e)})") from None
        finally:
            self.hf.train(training)
        got = torch.stack([*out.logits[0, 2:].float(), step.logits[0, -1].float(),
                           *out.logits[1].float(), step.logits[1, -1].float()])
        want = plain[[0, 1, 2, 3, 0, 1, 2, 3, 4, 5]]
        gap = float((got - want).abs().max())
        if not gap <= 1e-3 * max(1.0, float(want.abs().max())):  # NaN fails too
            raise HFError(f"{name}: its logits in a left-padded batch or through its cache are "
                          f"not those of its plain forward (by {gap:.3g} on a probe); it "
                          "cannot be decoded in batches")

    @classmethod
    def from_pretrained(cls, directory: str, *, device: str | torch.device = "cpu",
                        train_mode: str = "frozen", lora: LoraSettings | None = None
                        ) -> HFModel:
        """Load a causal LM from a local directory (never downloads; safetensors only), in
        float32 on `device`."""
        d = check_directory(directory)
        transformers = _transformers()
        _hf_config(d)  # a one-line error for an unreadable config.json
        transformers.utils.logging.disable_progress_bar()  # one line per load is noise
        try:
            with _quiet(transformers):
                model, info = transformers.AutoModelForCausalLM.from_pretrained(
                    str(d), local_files_only=True, use_safetensors=True, dtype=torch.float32,
                    output_loading_info=True, ignore_mismatched_sizes=True)
        except Exception as e:  # damaged weights, ...
            raise HFError(f"hf:{directory}: cannot load the model ({_first_line(e)})") \
                from None
        # tensors of another shape than config.json gives, places it has with no weights
        # (they would be random) or weights it has no place for: not one model
        for key, what in (("mismatched_keys", "{} of the weights {} another shape than "
                                              "config.json gives"),
                          ("missing_keys", "config.json has {} the weights lack"),
                          ("unexpected_keys", "the weights have {} config.json has no place "
                                              "for")):
            keys = sorted(k if isinstance(k, str) else k[0] for k in info.get(key) or ())
            if keys:
                n = f"{len(keys)} tensor{'s' if len(keys) > 1 else ''}"
                raise HFError(f"hf:{directory}: "
                              f"{what.format(n, 'has' if len(keys) == 1 else 'have')} "
                              f"(first: {keys[0]}); they are "
                              "not one model (the directory is damaged)")
        model.to(device).eval()
        return cls(model, train_mode=train_mode, lora=lora,
                   source={"path": str(directory), "fingerprint": fingerprint(d)})

    # --- hooks -----------------------------------------------------------------------------

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

    # --- the protocol ----------------------------------------------------------------------

    def lens(self, residual: torch.Tensor) -> torch.Tensor:
        """The model's own final norm + LM head on any residual stream, (..., C) -> (..., V)."""
        if "lens" in self.unavailable_inputs:
            raise HFError(f"(layer k) and layer-mix: {self.unavailable_inputs['lens']}")
        return self.head(self.final_norm(residual))

    def _call(self, ids, mask, past, *, use_cache: bool, last_only: bool = False):
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)[:, mask.size(1) - ids.size(1):]
        kwargs = {self._cache_kw: past} if past is not None else {}
        if last_only and self._keeps_logits:
            kwargs["logits_to_keep"] = 1
        return self.hf(input_ids=ids, attention_mask=mask.long(), position_ids=positions,
                       use_cache=use_cache, **kwargs)

    def forward_step(self, ids, *, attention_mask=None, cache=None, head_gates=None,
                     last_only=False) -> StepOutput:
        """Same contract as `neural.GPT.forward_step` (`last_only` through transformers'
        `logits_to_keep` where the model takes it)."""
        mask, _ = step_mask(ids, attention_mask, cache)
        gates = None
        if head_gates is not None:
            if not self.supports_head_gates:
                raise HFError(f"(gated ...): {self.unavailable_inputs['gated_forward']}")
            gates = step_gates(head_gates, self.n_layer, self.n_head)
        past = None if cache is None else _copy_past(cache.past)
        self._streams, self._gates = [], gates
        try:
            out = self._call(ids, mask, past, use_cache=True, last_only=last_only)
            streams = tuple(self._streams)
        finally:
            self._streams, self._gates = None, None
        new_past = getattr(out, self._cache_kw, None)
        if past is None and new_past is not None:
            new_past = _growing(new_past)
        logits = out.logits[:, -1:] if last_only else out.logits
        return StepOutput(logits=logits, residuals=streams, cache=HFCache(new_past, mask))

    def select_cache(self, cache: HFCache, index: torch.Tensor) -> HFCache:
        """The cache of rows `index` (a copy; `cache` is left as it was)."""
        past = _copy_past(cache.past)
        past.reorder_cache(index.to(cache.mask.device))  # every kind of layer takes it
        return HFCache(past, cache.mask.index_select(0, index.to(cache.mask.device)))

    # --- training ----------------------------------------------------------------------------

    def forward(self, ids, targets=None, attention_mask=None):
        """Training forward, as `neural.GPT.forward`: (logits (B, T, V), loss or None)."""
        mask = (torch.ones_like(ids, dtype=torch.bool) if attention_mask is None
                else attention_mask.to(device=ids.device, dtype=torch.bool))
        logits = self._call(ids, mask, None, use_cache=False).logits
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(),
                                   targets.reshape(-1), ignore_index=IGNORE_INDEX)
        return logits, loss

    def configure_optimizer(self, weight_decay, learning_rate, betas):
        """AdamW over the trainable parameters (none when frozen), weight decay on matrices."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2],
                   "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What a run saves of this model: nothing (frozen), the LoRA adapters (peft's names,
        as in its adapter_model.safetensors) or every weight (full)."""
        if self.train_mode == "frozen":
            return {}
        if self.train_mode == "lora":
            from peft import get_peft_model_state_dict

            state = get_peft_model_state_dict(self.peft)
        else:
            state = self.hf.state_dict()
        from .checkpoint import unique_tensors

        return unique_tensors(state)  # tied weights once

    def load_trainable_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Put back what `trainable_state` gave (HFError where it does not fit)."""
        if self.train_mode == "frozen":
            if tensors:
                raise HFError("frozen model, but the run saved weights for it")
            return
        try:
            if self.train_mode == "lora":
                from peft import set_peft_model_state_dict

                result = set_peft_model_state_dict(self.peft, tensors)
                unexpected = list(getattr(result, "unexpected_keys", []) or [])
                missing = [k for k in getattr(result, "missing_keys", []) or []
                           if "lora_" in k]
            else:
                missing, unexpected = self.hf.load_state_dict(tensors, strict=False)
                full = self.hf.state_dict()
                loaded = {(full[n].untyped_storage().data_ptr(), full[n].storage_offset())
                          for n in tensors if n in full}
                missing = [n for n in missing if (full[n].untyped_storage().data_ptr(),
                                                  full[n].storage_offset()) not in loaded]
        except RuntimeError:
            raise HFError("the saved weights do not have the model's shapes") from None
        if missing or unexpected:
            raise HFError(f"the saved weights do not match the model (missing "
                          f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")

    def lora_dict(self) -> dict | None:
        """The LoRA settings (None unless train_mode is lora), for config.json."""
        return asdict(self.lora) if self.train_mode == "lora" else None

    def adapter_config(self) -> dict | None:
        """peft's adapter_config.json of a LoRA model (None otherwise), so the saved adapters
        load with `PeftModel.from_pretrained(base, run/model)`."""
        if self.peft is None:
            return None
        cfg = self.peft.peft_config["default"].to_dict()
        return {k: sorted(v) if isinstance(v, set) else v for k, v in cfg.items()
                if isinstance(v, (str, int, float, bool, list, tuple, set, dict, type(None)))}


def _with_lora(hf_model: nn.Module, settings: LoraSettings):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise HFError("hf.train_mode = lora needs the 'lora' extra: pip install "
                      "'echo-forge[lora]' (peft)") from None
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha,
                        lora_dropout=settings.dropout, task_type="CAUSAL_LM",
                        target_modules=list(settings.targets) or _default_targets(hf_model))
    try:
        with warnings.catch_warnings():  # peft asks transformers a renamed question
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                    category=FutureWarning)
            return get_peft_model(hf_model, config)
    except ValueError as e:  # e.g. target modules not found in the model
        raise HFError(f"hf.lora_targets: {_first_line(e)}") from None


def _default_targets(hf_model: nn.Module) -> str | None:
    """LoRA's target modules where none are given: peft's default for the family (None), or
    every linear layer but the head (peft's "all-linear") for a family peft has none for."""
    try:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    except ImportError:  # another peft: its own default, or its error naming the setting
        return None
    family = getattr(hf_model.config, "model_type", None)
    return None if family in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING else "all-linear"


def load_hf(directory: str, **kwargs) -> HFModel:
    """`HFModel.from_pretrained(directory, ...)`."""
    return HFModel.from_pretrained(directory, **kwargs)


def device_of(model) -> torch.device:
    """The device of a model's parameters (cpu when it has none)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


__all__ = ["FAMILIES", "HFConfig", "HFError", "HFModel", "HFTokenizer", "LoraSettings",
           "TRAIN_MODES", "check_directory", "device_of", "fingerprint", "load_hf"]
