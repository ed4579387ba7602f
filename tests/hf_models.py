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


def available(family: str) -> bool:
    """Whether the installed transformers has `family` (newer families are skipped on older
    versions)."""
    from transformers import CONFIG_MAPPING

    return family in CONFIG_MAPPING


def config(family: str, **sizes):
    import transformers
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    n = len(SPECIALS) + len(CHARS)
    ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    # families the adapter has no entry for (found by layout and checked by a probe)
    if family == "qwen3":
        return transformers.Qwen3Config(num_hidden_layers=2, hidden_size=32, head_dim=8,
                                        num_attention_heads=4, num_key_value_heads=2,
                                        intermediate_size=64, vocab_size=n,
                                        max_position_embeddings=64, **ids, **sizes)
    if family == "qwen3_5_text":  # hybrid: a linear-attention layer (Gated DeltaNet), then full
        return transformers.Qwen3_5TextConfig(
            num_hidden_layers=2, layer_types=["linear_attention", "full_attention"],
            hidden_size=32, head_dim=8, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, linear_key_head_dim=8, linear_value_head_dim=8,
            linear_num_key_heads=2, linear_num_value_heads=4, vocab_size=n,
            max_position_embeddings=64, **ids, **sizes)
    if family == "opt":
        return transformers.OPTConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                      ffn_dim=64, vocab_size=n, max_position_embeddings=64,
                                      word_embed_proj_dim=32, **ids, **sizes)
    if family == "falcon":
        return transformers.FalconConfig(num_hidden_layers=2, hidden_size=32,
                                         num_attention_heads=4, vocab_size=n, **ids, **sizes)
    if family == "granite":  # its logits are scaled after the head: refused
        return transformers.GraniteConfig(num_hidden_layers=2, hidden_size=32,
                                          num_attention_heads=4, intermediate_size=64,
                                          vocab_size=n, max_position_embeddings=64,
                                          logits_scaling=4.0, **ids, **sizes)
    if family == "gpt2":
        return GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=n, n_positions=64,
                          **ids, **sizes)
    if family == "llama":
        return LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                           num_key_value_heads=2, intermediate_size=64, vocab_size=n,
                           max_position_embeddings=64, **ids, **sizes)
    if family == "gpt_neox":
        return GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                             intermediate_size=64, vocab_size=n, max_position_embeddings=64,
                             **ids, **sizes)
    raise ValueError(family)


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
