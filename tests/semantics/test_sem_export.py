"""Export to engines: exact or refused. For transformers the exported GenerationConfig is
turned into transformers' own logits processors and must keep exactly the program's tokens."""

import json
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import exportable, transform_chains

import engine_dsl
from engine_dsl import Type
from engine_dsl.export import ENGINES, export, render

transformers = pytest.importorskip("transformers")

EXAMPLES = 150 if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else 30
V = 40


def program(text):
    return engine_dsl.read_expr(text, Type.DECODER)


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=8, n_head=1, vocab_size=V,
                                     n_positions=64)
    return transformers.GPT2LMHeadModel(config)


def hf_processors(model, settings_: dict, prompt_len: int):
    gc = transformers.GenerationConfig(**settings_)
    return model._get_logits_processor(generation_config=gc, input_ids_seq_length=prompt_len,
                                       encoder_input_ids=None, prefix_allowed_tokens_fn=None,
                                       logits_processor=transformers.LogitsProcessorList(),
                                       device="cpu")


# chains in transformers' order (the exporter accepts them), with random constants
ARG = {"repetition-penalty": st.floats(1.0, 3.0), "no-repeat-ngram": st.integers(1, 3),
       "temperature": st.floats(0.2, 3.0),
       "top-k": st.integers(1, V + 5), "top-p": st.floats(0.05, 0.95),
       "min-p": st.floats(0.01, 0.9), "typical": st.floats(0.05, 0.95),
       "epsilon": st.floats(0.001, 0.05), "eta": st.floats(0.001, 0.05)}
hf_programs = transform_chains(exportable("hf", reads={"history"}), ARG,
                               choosers=("sample", "greedy"), ordered=True)


@settings(max_examples=EXAMPLES, deadline=None)
@given(text=hf_programs, seed=st.integers(0, 10_000))
def test_transformers_processors_from_the_export_keep_the_programs_tokens(hf_model, text,
                                                                          seed):
    """The exported keys, run through transformers' own GenerationConfig -> processors, keep
    exactly the tokens the program keeps (sample), or the same argmax (greedy)."""
    e = program(text)
    try:
        got = export(e, "hf")
    except engine_dsl.DslError as err:  # transformers' greedy skips its warpers
        assert text.startswith("(greedy") and "greedily" in str(err)
        return
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, V, generator=g) * 3
    ids = torch.randint(0, V, (3, 7), generator=g)
    theirs = hf_processors(hf_model, got, ids.size(1))(ids, x.clone())
    ours = engine_dsl.compile_expr(e.args[0])(x, history=ids)
    if got["do_sample"]:
        assert torch.equal(torch.isfinite(theirs), torch.isfinite(ours)), (text, got)
    else:
        assert torch.equal(theirs.argmax(-1), ours.argmax(-1)), (text, got)


@pytest.mark.parametrize("engine,want", [
    ("hf", {"repetition_penalty": 1.2, "temperature": 0.8, "top_k": 0, "top_p": 0.9,
            "min_p": None, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
            "do_sample": True}),
    ("llama.cpp", {"--samplers": "penalties;temperature;top_p", "--temp": 0.8, "--top-k": 0,
                   "--top-p": 0.9, "--min-p": 0.0, "--typical": 1.0, "--top-nsigma": -1.0,
                   "--dynatemp-range": 0.0, "--dynatemp-exp": 1.0, "--repeat-penalty": 1.2,
                   "--repeat-last-n": -1}),
    ("llama-server", {"samplers": ["penalties", "temperature", "top_p"], "temperature": 0.8,
                      "top_k": 0, "top_p": 0.9, "min_p": 0.0, "typical_p": 1.0,
                      "top_n_sigma": -1.0, "dynatemp_range": 0.0, "dynatemp_exponent": 1.0,
                      "repeat_penalty": 1.2, "repeat_last_n": -1}),
    ("vllm", {"repetition_penalty": 1.2, "temperature": 0.8, "min_p": 0.0, "top_k": 0,
              "top_p": 0.9}),
])
def test_a_nucleus_program_exports_to_each_engine(engine, want):
    """The program's settings, and every other parameter the engine knows at its neutral
    value (the registry's: more appear as primitives are added)."""
    e = program("(sample (top-p (temperature (repetition-penalty logits 1.2) 0.8) 0.9))")
    got = export(e, engine)
    assert {k: got[k] for k in want} == want
    neutral = {k: v for p in engine_dsl.PRIMITIVES.values()
               if engine in p.export and not p.is_chooser
               for k, v in zip(p.export[engine].keys, p.export[engine].neutral, strict=True)}
    assert all(got[k] == v for k, v in neutral.items() if k not in want)


def test_renderings():
    e = program("(sample (top-p (top-k (temperature logits 0.7) 40) 0.9))")
    assert render(export(e, "llama.cpp"), "llama.cpp").startswith(
        "--samplers 'temperature;top_k;top_p' --temp 0.7 --top-k 40 --top-p 0.9 --min-p 0.0 "
        "--typical 1.0 ")
    assert render(export(e, "ollama"), "ollama").splitlines() == [
        "PARAMETER top_k 40", "PARAMETER temperature 0.7", "PARAMETER top_p 0.9",
        "PARAMETER min_p 0.0"]
    assert json.loads(render(export(e, "vllm"), "vllm"))["top_k"] == 40


def test_greedy_drops_what_keeps_the_argmax_and_sets_each_engines_greedy():
    e = program("(greedy (repetition-penalty (top-p (temperature logits 0.5) 0.5) 1.3))")
    assert export(e, "vllm")["temperature"] == 0.0
    assert export(e, "hf")["do_sample"] is False and export(e, "hf")["top_p"] == 1.0
    assert export(e, "llama.cpp")["--samplers"] == "penalties;temperature"
    assert export(e, "llama.cpp")["--temp"] == 0.0


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("text,why", [
    ("(vote 3 (sample logits))", "only a plain chooser"),
    ("(sample (if (< (entropy logits) 1.0) logits (temperature logits 0.5)))", "'if' has no"),
    ("(sample (temperature (layer 1) 0.5))", "'layer' has no"),
    ("(sample (temperature logits (entropy logits)))", "takes constants"),
    ("(sample (temperature (temperature logits 0.5) 0.5))", "applied twice"),
])
def test_what_an_engine_cannot_express_is_refused_at_its_node(engine, text, why):
    with pytest.raises(engine_dsl.DslError, match=why):
        export(program(text), engine)


def test_an_order_a_fixed_order_engine_cannot_reproduce_is_refused_and_commuting_is_not():
    late = program("(sample (temperature (top-p logits 0.9) 0.8))")
    for engine in ("hf", "vllm", "ollama"):
        with pytest.raises(engine_dsl.DslError, match="applied after"):
            export(late, engine)
    assert export(late, "llama.cpp")["--samplers"] == "top_p;temperature"
    # temperature and top-k commute: either nesting exports to the same settings
    a = program("(sample (temperature (top-k logits 5) 0.8))")
    b = program("(sample (top-k (temperature logits 0.8) 5))")
    assert export(a, "hf") == export(b, "hf")
    assert export(a, "ollama") == export(b, "ollama")
    with pytest.raises(engine_dsl.DslError, match="'typical' has no Ollama"):
        export(program("(sample (typical logits 0.9))"), "ollama")


def test_llama_cpp_temperature_sampler_is_one_of_temperature_or_dynamic_temperature():
    e = program("(sample (top-n-sigma (dynamic-temperature logits 0.8 0.5 1.5) 1.0))")
    got = export(e, "llama.cpp")
    assert got["--samplers"] == "temperature;top_n_sigma"
    assert (got["--temp"], got["--dynatemp-range"], got["--dynatemp-exp"]) == (0.8, 0.5, 1.5)
    assert got["--top-nsigma"] == 1.0
    both = program("(sample (temperature (dynamic-temperature logits 0.8 0.5 1.5) 0.9))")
    with pytest.raises(engine_dsl.DslError, match="both are its temperature"):
        export(both, "llama.cpp")


def test_penalties_export_where_an_engine_counts_what_they_count():
    e = program("(sample (presence-penalty (frequency-penalty logits 0.5) 0.25))")
    got = export(e, "vllm")
    assert (got["frequency_penalty"], got["presence_penalty"]) == (0.5, 0.25)
    with pytest.raises(engine_dsl.DslError, match="'presence-penalty' has no llama.cpp"):
        export(e, "llama.cpp")  # llama.cpp's window holds the prompt too
    dry = program("(sample (xtc (dry logits 0.8 1.75 2) 0.1 0.5))")
    got = export(dry, "llama.cpp")
    assert got["--samplers"] == "dry;xtc" and got["--dry-multiplier"] == 0.8
    assert (got["--xtc-threshold"], got["--xtc-probability"]) == (0.1, 0.5)
    assert got["--dry-penalty-last-n"] == -1


def test_mirostat_exports_as_llama_cpps_mirostat_mode_temperature_then_mirostat_only():
    """llama.cpp's common sampler with `--mirostat 2` runs temp, then mirostat v2, and no
    other sampler (common/sampling.cpp): exactly the programs of that shape export."""
    for text in ("(sample (mirostat (temperature logits 0.7) 4.0 0.2))",
                 "(sample (mirostat logits 4.0 0.2))"):
        got = export(program(text), "llama.cpp")
        assert "--samplers" not in got and got["--mirostat"] == 2
        assert (got["--mirostat-ent"], got["--mirostat-lr"]) == (4.0, 0.2)
        assert got["--temp"] == (0.7 if "temperature" in text else 1.0)
        body = export(program(text), "llama-server")
        assert "samplers" not in body and body["mirostat"] == 2
        assert (body["mirostat_tau"], body["mirostat_eta"]) == (4.0, 0.2)
    assert export(program("(sample (top-k logits 4))"), "llama.cpp")["--mirostat"] == 0
    for text, why in [("(sample (temperature (mirostat logits 4.0 0.2) 0.7))",
                       "'temperature' applied after 'mirostat'"),
                      ("(sample (mirostat (top-k logits 40) 4.0 0.2))",
                       "'top-k' before 'mirostat'"),
                      ("(sample (mirostat (dynamic-temperature logits 0.8 0.5 1.0) 4.0 0.2))",
                       "'dynamic-temperature' before 'mirostat'")]:
        with pytest.raises(engine_dsl.DslError, match=why):
            export(program(text), "llama.cpp")
    for engine in ("hf", "vllm", "ollama"):
        with pytest.raises(engine_dsl.DslError, match="'mirostat' has no"):
            export(program("(sample (mirostat logits 4.0 0.2))"), engine)


def test_llama_cpp_typical_after_top_n_sigma_is_refused():
    """llama.cpp's typical sums -p log p over the -inf scores top-n-sigma leaves (NaN);
    the other order, and each alone, export."""
    with pytest.raises(engine_dsl.DslError, match="'typical' after 'top-n-sigma'"):
        export(program("(sample (typical (top-k (top-n-sigma logits 1.0) 9) 0.5))"), "llama.cpp")
    got = export(program("(sample (top-n-sigma (typical logits 0.5) 1.0))"), "llama.cpp")
    assert got["--samplers"] == "typ_p;top_n_sigma"
