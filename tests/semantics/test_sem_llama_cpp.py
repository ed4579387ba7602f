"""Samplers and exports against llama.cpp's own compiled code, through `llama-cpp-python`.

llama.cpp's sampler API applies a sampler to a token-data array (id, logit, p) without a
model: each sampler below is llama.cpp's (src/llama-sampling.cpp), built the way its common
sampler builds them from command-line settings (common/sampling.cpp). The package builds
llama.cpp from source (minutes of compiling), so it is an optional test dependency:
`pip install llama-cpp-python` to run this file. DRY needs a model's vocabulary to build its
sequence breakers and is checked against the port in test_sem_dry.py instead.

A kept set is compared exactly, and the kept tokens' probabilities to float32 rounding. A
token within float rounding of a cut (top-p's cumulative sum, top-n-sigma's spread) may fall
either way between float32 sequential sums and torch's: the random scores below make that
vanishingly rare, and the derandomized CI examples are fixed.
"""

import ctypes
import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import exportable, transform_chains

import engine_dsl
from engine_dsl import Type
from engine_dsl.export import export
from engine_dsl.semantics import RowState

llama = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (an optional test dependency: it "
                        "compiles llama.cpp from source; pip install llama-cpp-python)")

EXAMPLES = 150 if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else 30
V = 32


def apply(samplers, row: torch.Tensor, accepted=()) -> tuple[torch.Tensor, int]:
    """llama.cpp's samplers applied in order to one row: the scores of the tokens left in the
    array (-inf for the others), and the index llama.cpp selected (-1 if none)."""
    data = (llama.llama_token_data * len(row))(
        *[llama.llama_token_data(i, float(v), 0.0) for i, v in enumerate(row.tolist())])
    cur = llama.llama_token_data_array(data, len(row), -1, False)
    for s in samplers:
        for tok in accepted:
            llama.llama_sampler_accept(s, int(tok))
        llama.llama_sampler_apply(s, ctypes.byref(cur))
    out = torch.full((len(row),), -math.inf)
    for i in range(cur.size):
        out[cur.data[i].id] = cur.data[i].logit
    selected = int(cur.data[cur.selected].id) if cur.selected >= 0 else -1
    for s in samplers:
        llama.llama_sampler_free(s)
    return out, selected


def assert_same(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    kept = torch.isfinite(ours)
    assert torch.equal(kept, torch.isfinite(theirs)), what
    torch.testing.assert_close(torch.softmax(ours[kept].double(), -1),
                               torch.softmax(theirs[kept].double(), -1),
                               rtol=1e-4, atol=1e-6, msg=what)


def scores(seed: int, rows: int = 3) -> torch.Tensor:
    return torch.randn(rows, V, generator=torch.Generator().manual_seed(seed)) * 3


# what `--samplers NAME` builds in common/sampling.cpp from the exported settings (min_keep 0)
BUILD = {
    "top_k": lambda s: llama.llama_sampler_init_top_k(s["--top-k"]),
    "top_p": lambda s: llama.llama_sampler_init_top_p(s["--top-p"], 0),
    "min_p": lambda s: llama.llama_sampler_init_min_p(s["--min-p"], 0),
    "typ_p": lambda s: llama.llama_sampler_init_typical(s["--typical"], 0),
    "top_n_sigma": lambda s: llama.llama_sampler_init_top_n_sigma(s["--top-nsigma"]),
    "temperature": lambda s: llama.llama_sampler_init_temp_ext(
        s["--temp"], s["--dynatemp-range"], s["--dynatemp-exp"]),
    "xtc": lambda s: llama.llama_sampler_init_xtc(s["--xtc-probability"],
                                                  s["--xtc-threshold"], 0, 1),
}

ARGS = {"top-k": st.integers(1, V + 3), "top-p": st.floats(0.05, 0.95),
        "min-p": st.floats(0.01, 0.9), "typical": st.floats(0.05, 0.95),
        "top-n-sigma": st.floats(0.1, 3.0), "temperature": st.floats(0.2, 3.0)}


llama_programs = transform_chains(exportable("llama.cpp"), ARGS)  # any order, each once


@settings(max_examples=EXAMPLES, deadline=None)
@given(text=llama_programs, seed=st.integers(0, 10_000))
def test_the_llama_cpp_export_keeps_the_programs_tokens_in_llama_cpp(text, seed):
    """Verified, not asserted: llama.cpp's samplers built from the exported flags, in the
    exported `--samplers` order, keep exactly the program's tokens with its probabilities."""
    prog = engine_dsl.read_expr(text, Type.DECODER)
    try:
        flags = export(prog, "llama.cpp")
    except engine_dsl.DslError as err:  # a chain llama.cpp computes wrongly (NaN), or one
        # with two samplers llama.cpp has once (temperature and dynamic-temperature)
        assert "wrongly" in str(err) or "applied twice" in str(err)
        return
    x = scores(seed)
    ours = engine_dsl.compile_expr(prog.args[0])(x)
    for r in range(x.size(0)):
        chain = [BUILD[name](flags) for name in flags["--samplers"].split(";")]
        theirs, _ = apply(chain, x[r])
        assert_same(ours[r], theirs, f"{text} row {r}: {flags['--samplers']}")


@pytest.mark.parametrize("r,last_n", [(1.3, None), (1.7, None), (2.0, 4)])
def test_repetition_penalty_is_llama_cpps_penalties_over_the_accepted_tokens(r, last_n):
    """`--repeat-penalty` with the window over the whole history (`--repeat-last-n -1` is the
    context size); a window of the last n tokens is a different sampler, and differs."""
    x = scores(1, 4)
    hist = torch.randint(0, V, (4, 9), generator=torch.Generator().manual_seed(2))
    ours = engine_dsl.logits_fn(f"(repetition-penalty logits {r})")(x, history=hist)
    for row in range(4):
        n = hist.size(1) if last_n is None else last_n
        pen = llama.llama_sampler_init_penalties(V, n, r, 0.0, 0.0)
        theirs, _ = apply([pen], x[row], accepted=hist[row].tolist())
        if last_n is None:
            assert torch.equal(ours[row], theirs)
        elif set(hist[row, :-last_n].tolist()) - set(hist[row, -last_n:].tolist()):
            assert not torch.equal(ours[row], theirs)


def test_xtc_when_its_draw_fires_is_llama_cpps_xtc():
    """With probability just under 1 llama.cpp's draw (seeded mt19937) fires; ours is given a
    firing draw (0) from the common random numbers."""
    x = scores(3, 6) * 0.5
    for threshold in (0.05, 0.1, 0.2, 0.4):
        ours = engine_dsl.logits_fn(f"(xtc logits {threshold} 0.9999)")(
            x, uniform=lambda stream: torch.zeros(x.size(0), dtype=torch.float64))
        for r in range(x.size(0)):
            theirs, _ = apply([llama.llama_sampler_init_xtc(0.9999, threshold, 0, 7)], x[r])
            assert_same(ours[r], theirs, f"xtc {threshold} row {r}")
            assert torch.equal(ours[r], theirs)


@pytest.mark.parametrize("tau,eta", [(1.0, 0.1), (2.5, 0.5), (5.0, 1.0)])
def test_mirostat_v2_keeps_llama_cpps_set_and_moves_mu_as_llama_cpp_does(tau, eta):
    """One llama.cpp mirostat v2 sampler per row over three steps, fed llama.cpp's own
    choices: our kept set at each step equals llama.cpp's, and our mu (updated with the token
    llama.cpp selected) matches llama.cpp's next kept set."""
    steps = [scores(10 + k, 4) for k in range(3)]
    prog = engine_dsl.logits_fn(f"(mirostat logits {tau} {eta})")
    state = RowState(4)
    samplers = [llama.llama_sampler_init_mirostat_v2(r + 1, tau, eta) for r in range(4)]
    for x in steps:
        state.begin(None)
        ours = prog(x, state=state)
        chosen = []
        for r in range(4):
            data = (llama.llama_token_data * V)(
                *[llama.llama_token_data(i, float(v), 0.0) for i, v in enumerate(x[r].tolist())])
            cur = llama.llama_token_data_array(data, V, -1, False)
            llama.llama_sampler_apply(samplers[r], ctypes.byref(cur))
            theirs = torch.full((V,), -math.inf)
            for i in range(cur.size):
                theirs[cur.data[i].id] = x[r, cur.data[i].id]
            assert torch.equal(torch.isfinite(ours[r]), torch.isfinite(theirs)), (tau, r)
            chosen.append(int(cur.data[cur.selected].id))
        state.commit(torch.tensor(chosen))  # as decode does after its chooser
    for s in samplers:
        llama.llama_sampler_free(s)
