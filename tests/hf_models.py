"""Tiny random Hugging Face models and a locally built tokenizer, saved to a directory (no
network): what a user's `hf:DIR` looks like, at a size that runs in seconds."""

from __future__ import annotations

from pathlib import Path

import torch

# every character the tests' tasks use, so each is one token of the word-level vocabulary
CHARS = list("0123456789+=abcdefghijklmnopqrstuvwxyz ")
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def tokenizer():
    """A character-level WordLevel tokenizer (built here, nothing downloaded), wrapped as
    transformers' PreTrainedTokenizerFast."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def sentencepiece_tokenizer():
    """A sentencepiece-like tokenizer (as Llama 2's): BPE over text whose spaces are '▁' (one
    before the text too), `<0xHH>` byte pieces for characters it lacks."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    pieces = (["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["▁"]
              + [c for c in CHARS if c != " "] + ["▁t", "▁th", "▁the"])
    merges = [("▁", "t"), ("▁t", "h"), ("▁th", "e")]
    tok = Tokenizer(models.BPE({p: i for i, p in enumerate(pieces)}, merges, unk_token="<unk>",
                               byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                           normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def available(family: str) -> bool:
    """Whether the installed transformers has `family` (newer families are skipped on older
    versions)."""
    from transformers import CONFIG_MAPPING

    return family in CONFIG_MAPPING


def config(family: str, **sizes):
    """A tiny `family` config: 2 blocks, width 32, the vocabulary of `tokenizer()`; `sizes`
    override any of its settings."""
    import transformers

    ids = dict(vocab_size=len(SPECIALS) + len(CHARS), bos_token_id=1, eos_token_id=2,
               pad_token_id=0)
    blocks = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4)
    llama = blocks | dict(intermediate_size=64, max_position_embeddings=64)
    gqa = dict(num_key_value_heads=2)
    families = {
        "gpt2": ("GPT2Config", dict(n_layer=2, n_embd=32, n_head=2, n_positions=64)),
        "llama": ("LlamaConfig", llama | gqa),
        "gpt_neox": ("GPTNeoXConfig", llama),
        # families the adapter has no entry for (found by layout and checked by a probe)
        "qwen3": ("Qwen3Config", llama | gqa | dict(head_dim=8)),
        "opt": ("OPTConfig", blocks | dict(ffn_dim=64, max_position_embeddings=64,
                                           word_embed_proj_dim=32)),
        "falcon": ("FalconConfig", blocks),
        # its logits are scaled after the head: no lens
        "granite": ("GraniteConfig", llama | dict(logits_scaling=4.0)),
        # hybrid: a linear-attention layer (Gated DeltaNet), then full attention
        "qwen3_5_text": ("Qwen3_5TextConfig", llama | gqa | dict(
            layer_types=["linear_attention", "full_attention"], head_dim=8,
            linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2,
            linear_num_value_heads=4)),
        # a state-space model: it takes no attention mask, so left padding changes its logits
        "mamba": ("MambaConfig", dict(num_hidden_layers=2, hidden_size=32, state_size=4,
                                      expand=2, conv_kernel=4)),
        # multimodal: a text model (Gemma 3's, with sliding-window layers) inside; no images
        "gemma3": ("Gemma3Config", dict(
            text_config=ids | llama | gqa | dict(head_dim=8, sliding_window=16),
            vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, image_size=28, patch_size=14),
            mm_tokens_per_image=4, boi_token_index=40, eoi_token_index=41,
            image_token_index=42)),
    }
    if family not in families:
        raise ValueError(family)
    name, settings = families[family]
    top = {} if "text_config" in settings else ids
    return getattr(transformers, name)(**(top | settings | sizes))


def save(family: str, path: Path, seed: int = 0, **sizes) -> Path:
    """A tiny random `family` model and its tokenizer saved into `path`."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config(family, **sizes))
    model.save_pretrained(path)  # safetensors
    tokenizer().save_pretrained(path)
    return path
