"""Reading a run (issue 15): programs as a person writes them, one score per program and
split, commands per definition, `compare`, every error of a file, progress, `config`, and
what tuning did. The run-reading tests share the session's one tiny run (conftest)."""

import io
import json
import time
import tomllib

import pytest
from conftest import ROOT, cli

import engine_dsl
from engine_dsl import RealConst, Type, read_expr, walk
from engine_dsl.files import read_file
from evolution.report import one_line, readable
from evolution.simplify import simplify


def _decoder(src):
    return read_expr(src, Type.DECODER)


# --- programs as a person writes them ------------------------------------------------------


@pytest.mark.parametrize("evolved, written", [
    ("(sample (temperature (if #t logits logits) 0.7219647619808731))",
     "(sample (temperature logits 0.722))"),
    ("(sample (temperature (if #f logits logits) (entropy logits)))",
     "(sample (temperature logits (entropy logits)))"),
    ("(sample (top-p logits 0.99996))", "(sample (top-p logits 0.99996))"),  # 1.0 is outside
    ("(greedy (layer-mix #(0.123456 2.0)))", "(greedy (layer-mix #(0.1235 2.0)))"),
    ("(sample (temperature logits (fixed 0.7219647619808731)))",
     "(sample (temperature logits (fixed 0.7219647619808731)))"),  # a hand-lock is exact
])
def test_readable_programs_are_simplified_with_short_constants(evolved, written):
    assert engine_dsl.expr_to_scheme(readable(_decoder(evolved))) == written


def test_a_bootstrap_interval_does_not_depend_on_the_order_of_the_values():
    from evolution.report import bootstrap_ci

    values = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert bootstrap_ci(values, 200, seed=3) == bootstrap_ci(sorted(values), 200, seed=3)
    assert bootstrap_ci([1.0] * 6, 200) == (1.0, 1.0, 1.0)


def test_one_line_views_never_paste_a_block():
    long = _decoder("(vote 5 (sample (top-p (temperature (repetition-penalty (mix (layer 1) "
                    "(layer 2) 0.5) 1.1) 0.8) 0.9)))")
    text = engine_dsl.expr_to_scheme(long)
    assert one_line(text, 200) == " ".join(text.split()) and "\n" not in one_line(text, 200)
    short = one_line(long, 40)
    assert len(short) <= 40 and short.startswith("(vote 5 (sample") and " ... " in short
    assert short.endswith("0.8) 0.9)))")


def test_simplify_command_prints_the_simplified_file(tmp_path):
    src = tmp_path / "p.scm"
    src.write_text(";; mine\n(define a (sample (temperature (if #t logits (layer 1)) 1.0)))\n")
    proc = cli("simplify", src, check=0)
    assert proc.stdout == ";; mine\n(define a (sample logits))\n"


def test_what_a_run_writes_is_readable(tiny_run):
    out, proc = tiny_run
    files = [out / "hall-of-fame.scm", *sorted((out / "generations").iterdir())]
    for path in files:
        for d in read_file(path):
            assert simplify(d.body) == d.body, (path, d.name)
            for n in walk(d.body):
                if isinstance(n, RealConst) and not n.fixed:
                    assert len(repr(n.value).lstrip("0.").replace(".", "")) <= 8, n
            assert any(c.startswith(";; scored: valid split, 6 prompts, model of generation")
                       for c in d.comments)
    gen_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("gen ")]
    assert len(gen_lines) == 3 and all("tuned " in ln for ln in gen_lines)


# --- one score per program and split -------------------------------------------------------


def test_every_view_shows_the_hall_of_fames_score(tiny_run):
    """eval of the hall of fame on the valid split re-scores each program with the draws and
    the model of the last generation: the scores its comment block records."""
    out, _ = tiny_run
    result = json.loads(cli("eval", out / "hall-of-fame.scm", "--run", out, check=0).stdout)
    assert result["scored_on"] == "valid split, 6 prompts, model of generation 2"
    assert result["score"].startswith("exact match")
    for d in read_file(out / "hall-of-fame.scm"):
        info = dict(c.lstrip("; ").split(": ", 1) for c in d.comments)
        got = result["programs"][d.name]
        assert (f"{got['score']:.6g}", f"{got['cost']:.6g}") == (info["score"], info["cost"])
        assert got["n"] == 6
        lo, hi = got["ci95"]
        assert info["scored"] == ("valid split, 6 prompts, model of generation 2 (exact match; "
                                  f"95% interval [{lo:.3f}, {hi:.3f}])")
    report = json.loads((out / "report.json").read_text())
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert report["programs"]["champion"]["valid"]["score"] == log[-1]["valid"]["champion"]


def test_rescoring_repeats_the_last_generations_draws(tiny_run):
    from evolution.views import open_run

    out, _ = tiny_run
    run = open_run(str(out))
    program = _decoder("(sample (temperature logits 3.0))")
    _, _, (answers,) = run.per_item("valid", [program])
    prompts = [run.tokenizer.encode(e.input, bos=True) for e in run._examples("valid")]
    (decoded,) = engine_dsl.decode(run.model, [program], prompts, seed=0 * 1000 + 2,
                                   max_new_tokens=run.answer_cap(),
                                   stop_token=run.tokenizer.eos_id,
                                   pad_token=run.tokenizer.pad_id)
    assert answers == [run.tokenizer.decode(a.tokens) for a in decoded]


def test_lineage_keeps_the_score_of_the_individuals_own_generation(tiny_run):
    out, _ = tiny_run
    shown = cli("lineage", out, "g0-1", check=0).stdout
    gen0 = {d.name: d for d in read_file(out / "generations" / "gen-0000.scm")}
    score = float(dict(c.lstrip("; ").split(": ", 1) for c in gen0["g0-1"].comments)["score"])
    assert f"score {score:.3f}" in shown and "taken in the individual's own generation" in shown


# --- commands per definition ---------------------------------------------------------------


def test_def_picks_one_definition_for_trace_eval_and_export(tiny_run):
    out, _ = tiny_run
    layers = ROOT / "programs" / "layers.scm"
    names = [d.name for d in read_file(layers)]
    err = cli("trace", layers, "--run", out, "--prompt", "1+2=", check=1).stderr
    assert "choose one with --def NAME" in err and len(err.strip().splitlines()) == 1
    traced = cli("trace", layers, "--run", out, "--prompt", "1+2=", "--def", names[1],
                 check=0).stdout
    assert traced.startswith(f"trace of {names[1]}:")
    result = json.loads(cli("eval", layers, "--run", out, "--def", names[0], check=0).stdout)
    assert set(result["programs"]) == {names[0], "greedy"}
    err = cli("eval", layers, "--run", out, "--def", "nope", check=1).stderr
    assert f"no definition 'nope' (the file defines {', '.join(names)})" in err
    truncation = ROOT / "programs" / "truncation.scm"
    first = read_file(truncation)[0].name
    exported = json.loads(cli("export", truncation, "--hf", "--def", first, check=0).stdout)
    assert isinstance(exported, dict) and exported


def test_compare_gives_the_paired_difference_and_where_answers_differ(tiny_run, tmp_path):
    out, _ = tiny_run
    both = tmp_path / "both.scm"
    both.write_text("(define hot (sample (temperature logits 3.0)))\n"
                    "(define plain (greedy logits))\n")
    shown = cli("compare", f"{both}:hot", f"{both}:plain", "--run", out, check=0).stdout
    assert "common random numbers" in shown and "95% interval" in shown
    assert "paired bootstrap over 6 prompts" in shown
    assert "answers differ on 6 of 6 prompts" in shown  # a hot sampler never writes 1111
    same = cli("compare", f"{both}:plain", ROOT / "programs" / "greedy.scm", "--run", out,
               "--split", "test", check=0).stdout
    assert "A - B = +0.000, 95% interval [+0.000, +0.000]" in same
    assert "answers differ on 0 of 6 prompts." in same


def test_check_reports_every_error_of_a_file(tmp_path):
    bad = tmp_path / "bad.scm"
    bad.write_text("(define a (sample (top-p logitz 1.5)))\n"
                   "(define b (greedy (temperature logits -1)))\n"
                   "(define c (greedy logits))\n")
    proc = cli("check", bad, check=1)
    heads = [ln for ln in proc.stderr.splitlines() if ": error: " in ln]
    assert heads == [f"{bad}:1:26: error: unknown name 'logitz'; did you mean 'logits'?",
                     f"{bad}:1:33: error: p of top-p must be in (0, 1), found 1.5",
                     f"{bad}:2:39: error: t of temperature must be > 0, found -1"]


# --- progress --------------------------------------------------------------------------------


def test_progress_is_a_line_at_a_fixed_interval_when_not_a_terminal():
    from rich.console import Console

    from evolution.progress import progress, status_line

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=40)
    with progress(console, "pre-training", total=100, interval=0.05) as advance:
        advance(25)
        time.sleep(0.3)
    lines = buf.getvalue().splitlines()
    assert len(lines) >= 3 and all(ln.startswith("pre-training: 25/100 after 0:00") for ln in lines)
    assert status_line("tuning", 30, 120, 60.0) == "tuning: 30/120 after 1:00, about 3:00 left"
    assert status_line("scoring", 0, None, 3725) == "scoring: still running after 1:02:05"


def test_progress_on_a_terminal_shows_an_eta():
    from rich.console import Console

    from evolution.progress import progress

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100)
    with progress(console, "pre-training", total=10) as advance:
        for _ in range(10):
            advance()
            time.sleep(0.01)
    assert "pre-training" in buf.getvalue() and "ETA" in buf.getvalue()


# --- settings --------------------------------------------------------------------------------


def test_config_lists_every_key_with_default_and_meaning():
    from evolution.loop import DERIVED
    from evolution.settings import RunConfig, to_dict

    shown = cli("config", check=0).stdout
    listed = tomllib.loads(shown)  # the listing is a TOML file of the defaults
    defaults = to_dict(RunConfig())

    def keys(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and k != "mutation_weights":
                yield from keys(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    expected = {k: v for k, v in keys(defaults) if k not in DERIVED}
    assert dict(keys(listed)) == {k: (list(v) if isinstance(v, tuple) else v)
                                  for k, v in expected.items()}
    for line in shown.splitlines():
        if " = " in line and not line.startswith("#"):
            assert len(line.split("  # ", 1)[1].strip()) > 3, line
    for key in DERIVED:
        assert f"# {key.split('.')[1]}: set by the run: " in shown


def test_config_toml_leaves_out_what_the_run_derives(tiny_run):
    out, _ = tiny_run
    written = tomllib.loads((out / "config.toml").read_text())
    assert "steps" not in written["train"] and "seed" not in written["evolution"]


def test_the_log_says_how_many_tunings_were_kept_and_undone(tiny_run):
    out, _ = tiny_run
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert log[0]["tuning"] is None  # generation 0 tunes nothing
    for e in log[1:]:
        assert set(e["tuning"]) == {"kept", "undone"}
    shown = cli("show", out, check=0).stdout
    assert "tuned: kept/undone" in shown


def test_trace_shows_the_whole_answer_and_the_final_answer():
    """With a task rule, trace's last line gives both the whole answer and the final answer
    extracted from it (None where the rule finds none); without one, only the answer."""
    import ast

    import torch

    from engine_dsl.nodes import Definition
    from evolution.views import trace_decoding
    from neural import GPT, ByteTokenizer, GPTConfig
    from neural.tasks import extractor

    torch.manual_seed(0)
    model, tok = GPT(GPTConfig(block_size=16, n_layer=1, n_head=1, n_embd=8)), ByteTokenizer()
    d = Definition("g", _decoder("(greedy logits)"))
    plain = trace_decoding(model, tok, d, "1+2=", seed=0, max_new_tokens=3)
    answer = plain.splitlines()[-1]
    assert answer.startswith("answer: ") and "final answer" not in answer
    text = ast.literal_eval(answer[len("answer: "):])
    marked = trace_decoding(model, tok, d, "1+2=", seed=0, max_new_tokens=3,
                            extract=lambda t: "#" + t)
    assert marked.splitlines()[-1] == f"{answer}  final answer: {'#' + text!r}"
    none = trace_decoding(model, tok, d, "1+2=", seed=0, max_new_tokens=3,
                          extract=extractor("#"))
    assert none.splitlines()[-1] == f"{answer}  final answer: None"
