"""Your own model, the adapter: tiny random GPT-2, Llama and GPT-NeoX models saved to a
temporary directory (nothing downloaded) speak the decoders' protocol. Program sources are
checked against the model's own `output_hidden_states`, the cache against a full forward."""

import functools
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

import hf_models as tiny  # noqa: E402
from lm_checks import check_cache_is_a_value  # noqa: E402

import engine_dsl  # noqa: E402
from engine_dsl.decoders import decode, decode_each  # noqa: E402
from neural.hf import HFError, HFModel, HFTokenizer, fingerprint  # noqa: E402

# the last 5 by layout; Qwen3.5 mixes linear-attention layers (their states are written in
# place in the cache) with full attention; Gemma 3 (4B and up) is multimodal, its language
# model inside
FAMILIES = ["gpt2", "llama", "gpt_neox", "qwen3", "opt", "falcon"] + [
    pytest.param(f, marks=pytest.mark.skipif(not tiny.available(f), reason=f"no {f} here"))
    for f in ("qwen3_5_text", "gemma3")]
ATOL = 1e-5


@pytest.fixture(scope="module", params=FAMILIES)
def model(request, tmp_path_factory):
    path = tiny.save(request.param, tmp_path_factory.mktemp(request.param))
    return HFModel.from_pretrained(str(path))


def ids_of(batch, length, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, len(tiny.SPECIALS) + len(tiny.CHARS), (batch, length), generator=g)


def test_streams_and_lens_are_the_models_own(model):
    """Block k's stream is HF's hidden_states[k] (k < L; HF takes the last after the final
    norm); the lens of the last stream is the model's logits; `(layer k)` and `layer-mix`
    are the model's final norm and head on those hidden states."""
    ids = ids_of(2, 6)
    out = model.forward_step(ids)
    ref = model.hf(input_ids=ids, output_hidden_states=True)
    hidden = ref.hidden_states  # embeddings, then after each block (last: normed)
    assert len(out.residuals) == model.n_layer == len(hidden) - 1
    for k in range(model.n_layer - 1):
        assert torch.equal(out.residuals[k], hidden[k + 1])
    assert torch.allclose(model.lens(out.residuals[-1]), ref.logits, atol=ATOL)
    assert torch.allclose(out.logits, ref.logits, atol=ATOL)
    head, norm = model.hf.get_output_embeddings(), model.final_norm
    src = dict(logits=out.logits[:, -1], residuals=[r[:, -1] for r in out.residuals],
               lens=model.lens, n_layer=model.n_layer, n_head=model.n_head)
    lens1 = engine_dsl.logits_fn("(layer 1)")(**src)
    assert torch.allclose(lens1, head(norm(hidden[1][:, -1])), atol=ATOL)
    w = torch.tensor([0.3, -0.2])
    mixed = engine_dsl.logits_fn("(layer-mix #(0.3 -0.2))")(**src)
    weights = torch.softmax(w, 0)
    stream = weights[0] * hidden[1][:, -1] + weights[1] * out.residuals[1][:, -1]
    assert torch.allclose(mixed, head(norm(stream)), atol=ATOL)


def test_cache_is_transformers_own_and_warns_nothing(model):
    """KV-cached steps equal a full forward, through transformers' DynamicCache, with no
    deprecation (or any other) warning."""
    ids = ids_of(3, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = model.forward_step(ids).logits
        out = model.forward_step(ids[:, :4])
        assert isinstance(out.cache.past, transformers.DynamicCache)
        pieces = [out.logits]
        for t in range(4, 7):
            out = model.forward_step(ids[:, t:t + 1], cache=out.cache)
            pieces.append(out.logits)
    assert torch.allclose(torch.cat(pieces, 1), full, atol=ATOL)


def test_select_cache_copies_rows(model):
    """`select_cache` gives the rows asked for (repeats allowed) and leaves the cache as it
    was, so one prompt's prefix serves many rows."""
    ids = ids_of(2, 5)
    out = model.forward_step(ids[:, :4])
    picked = model.select_cache(out.cache, torch.tensor([1, 1, 0]))
    step = model.forward_step(ids[[1, 1, 0], 4:5], cache=picked).logits[:, -1]
    again = model.forward_step(ids[:, 4:5], cache=out.cache).logits[:, -1]
    full = model.forward_step(ids).logits[:, -1]
    assert torch.allclose(step, full[[1, 1, 0]], atol=ATOL)
    assert torch.allclose(again, full, atol=ATOL)


def test_a_cache_continued_two_ways_keeps_both(model):
    """The cache grows in place (transformers' DynamicLayer over a GrowingKV) and stays a
    value."""
    check_cache_is_a_value(model, ids_of(2, 44), ids_of(2, 44, seed=2), ATOL)


def test_head_gates_scale_heads(model):
    """Gates of one change nothing; a closed head changes the logits; gradients reach the
    gates. (A model with a block that has no attention output projection, as Qwen3.5's
    linear-attention blocks, has no gates: an error naming the family.)"""
    ids = ids_of(2, 5)
    if not model.supports_head_gates:
        with pytest.raises(HFError, match=r"\(gated \.\.\.\): the model family '\w+' .* has "
                                          "no per-head attention output projection"):
            model.forward_step(ids, head_gates=torch.ones(model.n_layer, model.n_head))
        return
    plain = model.forward_step(ids).logits
    ones = torch.ones(model.n_layer, model.n_head)
    assert torch.allclose(model.forward_step(ids, head_gates=ones).logits, plain, atol=ATOL)
    closed = ones.clone()
    closed[0, 1] = 0.0
    assert not torch.allclose(model.forward_step(ids, head_gates=closed).logits, plain,
                              atol=1e-4)
    gates = torch.full((model.n_layer, model.n_head), 0.5, requires_grad=True)
    model.forward_step(ids, head_gates=gates).logits.square().mean().backward()
    assert gates.grad.abs().sum() > 0


def test_batched_decode_equals_program_by_program(model):
    """Many programs x prompts in one batch (shared prefill through `select_cache`) give the
    answers of decoding each program alone."""
    gates = " ".join(str((-1.0) ** i) for i in range(model.n_layer * model.n_head))
    progs = ["(greedy logits)", "(sample (top-p (temperature logits 0.7) 0.9))",
             "(greedy (mix logits (layer 1) 0.6))"]
    progs += [f"(sample (gated #({gates})))"] if model.supports_head_gates else []
    prompts = [[1, 5, 6, 7], [1, 9], [1, 12, 13, 14, 15]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batched = decode(model, progs, prompts, max_new_tokens=5, seed=3)
    alone = decode_each(model, progs, prompts, max_new_tokens=5, seed=3)
    assert [[a.tokens for a in p] for p in batched] == [[a.tokens for a in p] for p in alone]


def test_tokenizer_is_the_models_own(tmp_path):
    """Prompts start with BOS, answers end with EOS, decode drops special tokens."""
    tok = HFTokenizer.from_pretrained(str(tiny.save("gpt2", tmp_path)))
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 0)
    ids = tok.encode("12+3=", bos=True)
    assert ids == [1] + [len(tiny.SPECIALS) + tiny.CHARS.index(c) for c in "12+3="]
    assert tok.decode(tok.encode("abc", eos=True) + [5]) == "abc1"
    assert tok.decode(tok.encode("abc", eos=True) + [5], stop_at_eos=True) == "abc"
    assert tok.token_bytes(tok.encode("z")[0]) == b"z" and tok.token_bytes(tok.eos_id) == b""
    assert tok.encode_bytes(b"a1 ") == tok.encode("a1 ")  # DRY breakers' tails


def test_token_pieces_of_a_sentencepiece_tokenizer():
    """DRY's breakers read each token's bytes as llama.cpp's pieces: a '▁' token keeps its
    space (decoding it alone drops it), a byte-fallback piece is its byte."""
    tok = HFTokenizer(tiny.sentencepiece_tokenizer(), 300, "sp")
    the, ids = tok.tok.convert_tokens_to_ids("▁the"), tok.encode("a the é")
    assert tok.tok.convert_ids_to_tokens(ids) == ["▁", "a", "▁the", "▁", "<0xC3>", "<0xA9>"]
    assert [tok.token_bytes(i) for i in ids] == [b" ", b"a", b" the", b" ", b"\xc3", b"\xa9"]
    assert tok.decode(ids) == "a the é" and the in ids
    assert tok.token_bytes(tok.eos_id) == b""


def test_fingerprint_follows_the_weights(tmp_path):
    a = tiny.save("gpt2", tmp_path / "a")
    b = tiny.save("gpt2", tmp_path / "b")
    c = tiny.save("gpt2", tmp_path / "c", seed=1)
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)


def test_a_family_whose_logits_are_not_its_lens_decodes_from_its_logits(tmp_path):
    """Granite divides its logits by a scale after the head: its lens is not its own, so
    `(layer k)` and `layer-mix` are unavailable (named, with why), while its logits and its
    head gates are the model's own."""
    model = HFModel.from_pretrained(str(tiny.save("granite", tmp_path)))
    assert set(model.unavailable_inputs) == {"residuals", "lens"}
    assert model.unavailable_inputs["lens"].startswith(
        "the model family 'granite' (GraniteForCausalLM): its logits are not its head on its "
        "final norm (model.norm)")
    ids = ids_of(2, 5)
    out = model.forward_step(ids)
    assert torch.allclose(out.logits, model.hf(input_ids=ids).logits, atol=ATOL)
    with pytest.raises(HFError, match=r"\(layer k\) and layer-mix: the model family 'granite'"):
        model.lens(out.residuals[-1])
    gated = model.forward_step(ids, head_gates=torch.ones(model.n_layer, model.n_head))
    assert torch.allclose(gated.logits, out.logits, atol=ATOL)


def test_pickle_weights_are_not_loaded(tmp_path):
    tiny.save("gpt2", tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(HFError, match="no \\*.safetensors weights .*pickle files are not "
                                      "loaded"):
        HFModel.from_pretrained(str(tmp_path))


def test_padded_embeddings_and_a_tokenizer_larger_than_the_model(tmp_path):
    """Embeddings padded past the tokenizer (vocab_size in config.json > len(tokenizer), as
    many models ship) are the model's vocabulary; a tokenizer with more tokens than the model
    has embeddings is refused in one line (its last ids would fail mid-run)."""
    n = len(tiny.SPECIALS) + len(tiny.CHARS)
    padded = tiny.save("llama", tmp_path / "padded", vocab_size=n + 21)
    assert HFTokenizer.from_pretrained(str(padded)).vocab_size == n + 21
    assert HFModel.from_pretrained(str(padded)).vocab_size == n + 21
    small = tiny.save("llama", tmp_path / "small", vocab_size=n - 10)
    with pytest.raises(HFError) as e:
        HFTokenizer.from_pretrained(str(small))
    assert str(e.value) == (f"hf:{small}: the tokenizer has {n} tokens but the model only "
                            f"{n - 10} (config.json vocab_size); ids from {n - 10} on have no "
                            "embedding (resize the model's embeddings to the tokenizer)")


def test_a_damaged_config_is_named_before_the_tokenizer(tmp_path):
    """The run loads the tokenizer first; a config.json that is not JSON is named as such,
    not as a tokenizer that cannot load (AutoTokenizer reads config.json too)."""
    tiny.save("gpt2", tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", ')
    with pytest.raises(HFError, match=f"^hf:{tmp_path}: cannot read config.json "):
        HFTokenizer.from_pretrained(str(tmp_path))


def test_a_model_whose_logits_decoding_cannot_reproduce_is_refused(tmp_path):
    """A probe at load: a left-padded row and a cached step must give the model's plain
    forward's logits. A forward that ignores the mask and positions it is given (as a family
    transformers wires otherwise might) would decode wrongly without a word: refused."""
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny.save("gpt2", tmp_path))
    forward = hf.forward

    @functools.wraps(forward)  # its signature: the cache keyword the version takes
    def ignoring(*args, attention_mask=None, position_ids=None, **kw):
        return forward(*args, **kw)

    hf.forward = ignoring
    with pytest.raises(HFError, match=r"^model family 'gpt2' \(GPT2LMHeadModel\): its logits in "
                                      r"a left-padded batch or through its cache are not those "
                                      r"of its plain forward \(by [0-9.e-]+ on a probe\); it "
                                      "cannot be decoded in batches$"):
        HFModel(hf)


def test_a_model_that_ignores_padding_is_refused(tmp_path):
    """Mamba takes no attention mask: a left-padded row is another sequence there, so the
    probe refuses it in one line rather than decoding it wrongly."""
    path = tiny.save("mamba", tmp_path)
    with pytest.raises(HFError, match=r"^model family 'mamba' \(MambaForCausalLM\): its logits "
                                      "in a left-padded batch or through its cache are not "):
        HFModel.from_pretrained(str(path))


def test_greedy_decoding_is_transformers_generate(model):
    """`(greedy logits)` decodes the tokens `generate(do_sample=False)` gives, prompts of
    different lengths in one batch."""
    prompts = [[1, 5, 6, 7], [1, 9], [1, 12, 13, 14, 15, 16]]
    answers = decode(model, "(greedy logits)", prompts, max_new_tokens=6)
    for prompt, answer in zip(prompts, answers, strict=True):
        ids = torch.tensor([prompt])
        gen = model.hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                max_new_tokens=6, min_new_tokens=6, eos_token_id=None,
                                pad_token_id=0)
        assert list(answer.tokens) == gen[0, len(prompt):].tolist()


@pytest.mark.parametrize("config_eos", [2, None])
def test_a_tokenizer_without_eos_takes_the_models(tmp_path, config_eos):
    """A tokenizer that names no end-of-sequence token takes config.json's (the model's
    own); where neither names one, one line says so."""
    from transformers import PreTrainedTokenizerFast

    path = tiny.save("llama", tmp_path, eos_token_id=config_eos)
    PreTrainedTokenizerFast(tokenizer_object=tiny.tokenizer().backend_tokenizer,
                            bos_token="<s>", pad_token="<pad>", unk_token="<unk>"
                            ).save_pretrained(path)
    if config_eos is None:
        with pytest.raises(HFError, match=f"^hf:{path}: neither the tokenizer nor config.json "
                                          "names an end-of-sequence token"):
            HFTokenizer.from_pretrained(str(path))
        return
    tok = HFTokenizer.from_pretrained(str(path))
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 0)
    assert tok.decode(tok.encode("ab", eos=True) + [5], stop_at_eos=True) == "ab"
    assert tok.token_bytes(2) == b""


def test_lora_on_a_family_peft_has_no_default_for(tmp_path):
    """peft names default LoRA targets for the families it knows; on another (Granite here)
    the adapters go on every linear layer but the head (peft's all-linear), instead of an
    error asking for hf.lora_targets."""
    pytest.importorskip("peft")
    model = HFModel.from_pretrained(str(tiny.save("granite", tmp_path)), train_mode="lora")
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trained} >= {"q_proj", "o_proj",
                                                                          "down_proj"}
    assert not any("lm_head" in n for n in trained)
