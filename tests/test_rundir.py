"""One owner for run state (issue 10, item 4) and run directories that survive what users and
crashes do to them (issue 16): the typed state, the lock, resume that extends or refuses,
damaged files named in one line, nothing finished rewritten."""

import json
import os
import re
import shutil

import pytest
from conftest import ROOT, TINY
from conftest import cli as run_cli
from hypothesis import given
from hypothesis import strategies as st

from evolution.rundir import RunDir, RunError, RunState


def cli(*args, check=None):
    proc = run_cli(*args, check=check)
    assert "internal error" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def run(tiny_run, tmp_path):
    """A copy of the session's finished two-generation tiny run."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run[0], copy)
    return copy


def snapshot(run) -> dict:
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != ".lock"}


# --- the typed state ----------------------------------------------------------------------


states = st.builds(
    RunState, next_generation=st.integers(0, 10**6), log_lines=st.integers(0, 10**6),
    difficulty=st.none() | st.integers(1, 32),
    # random.getstate(): 624 words of the Mersenne twister, then its index (0 to 624)
    rng=st.tuples(st.just(3), st.tuples(*[st.integers(0, 2**32 - 1)] * 624,
                                        st.integers(0, 624)), st.none()),
    population=st.none() | st.just({"individuals": [], "generation": 1, "serial": 0}),
    champion=st.just("(greedy logits)"),
    log_entry=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5)),
    data=st.none() | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64))


@given(states)
def test_run_state_round_trips_through_json(state):
    assert RunState.from_json(json.loads(json.dumps(state.to_json())), "s.json") == state


@pytest.mark.parametrize("key", ["next_generation", "rng", "log_entry", "champion"])
def test_run_state_missing_or_ill_typed_key_names_it(key):
    data = RunState(1, 1, None, (3, (0,) * 625, None), None, "(greedy logits)", {}).to_json()
    with pytest.raises(RunError, match=f"^s.json: missing key '{key}'"):
        RunState.from_json({k: v for k, v in data.items() if k != key}, "s.json")
    with pytest.raises(RunError, match=f"^s.json: '{key}' has the wrong type"):
        RunState.from_json(data | {key: True}, "s.json")


def test_run_state_data_digest_is_optional_but_typed():
    """A run made before the data digest was kept has none (it resumes unchecked); one of the
    wrong type is a damaged checkpoint."""
    data = RunState(1, 1, None, (3, (0,) * 625, None), None, "(greedy logits)", {}).to_json()
    assert RunState.from_json({k: v for k, v in data.items() if k != "data"}, "s.json").data \
        is None
    with pytest.raises(RunError, match="^s.json: 'data' has the wrong type; the checkpoint is "
                                       "damaged$"):
        RunState.from_json(data | {"data": 5}, "s.json")


@pytest.mark.parametrize("rng", [[3, [1, 2], None], [7, [0] * 625, None],
                                 [3, [0] * 624 + [625], None], [3, [-1] + [0] * 624, None]])
def test_a_random_state_random_cannot_take_is_named(rng):
    """Well-typed but not a state `random.setstate` takes (the wrong length, version, index or
    a negative word): named at reading, not an internal ValueError when the run resumes."""
    data = RunState(1, 1, None, (3, (0,) * 625, None), None, "(greedy logits)", {}).to_json()
    with pytest.raises(RunError, match="^s.json: 'rng' is not a random state; the checkpoint "
                                       "is damaged$"):
        RunState.from_json(data | {"rng": rng}, "s.json")


# --- resume: extend, refuse, the lock -----------------------------------------------------


def test_resume_with_more_generations_extends_the_run_and_model_is_never_absent(
        run, monkeypatch):
    """In process, to watch the model directory at every file replacement."""
    from evolution.loop import CoEvolution

    real_replace, seen = os.replace, []

    def replace(src, dst, *a, **k):
        seen.append((run / "model").is_dir())
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    resumed = CoEvolution.resume(RunDir(run), overrides={"run": {"generations": 3}})
    assert resumed.next_generation == 3
    try:
        resumed.run()
    finally:
        resumed.close()
    log = RunDir(run).log_entries()
    assert [e["generation"] for e in log] == [0, 1, 2, 3]
    assert "generations = 3" in (run / "config.toml").read_text()
    assert seen and all(seen)


@pytest.mark.parametrize("args, message", [
    (["--task", "reverse"], "task.name = 'reverse' would change what the run is"),
    (["--seed", "7"], "run.seed = 7 would change what the run is"),
    (["--set", "model.n_layer=3"], "model.n_layer = 3 would change what the run is"),
    (["--set", "train.learning_rate=0.1"], "train.learning_rate = 0.1 would change"),
    (["--generations", "1"], "run.generations = 1, but 2 generations are done"),
])
def test_resume_refuses_flags_that_change_what_the_run_is(run, args, message):
    before = snapshot(run)
    proc = cli("evolve", "--resume", run, *args, check=1)
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert snapshot(run) == before


def test_resume_takes_no_config_file(run):
    assert cli("evolve", "--resume", run, "--config", TINY, check=2).returncode == 2


def test_a_second_process_is_told_who_holds_the_run(run):
    held = RunDir(run)
    held.lock()
    try:
        proc = cli("evolve", "--resume", run, check=1)
        assert f"{run} is in use by process {os.getpid()} on" in proc.stderr
    finally:
        held.unlock()
    cli("evolve", "--resume", run, check=0)  # a lock dies with its holder's descriptor


# --- damage: detected, named, nothing finished rewritten ----------------------------------


def test_a_run_without_checkpoint_is_not_started_over(run):
    shutil.rmtree(run / "checkpoint")
    before = snapshot(run)
    proc = cli("evolve", "--resume", run, check=1)
    assert "checkpoint is missing, so this run cannot be continued exactly" in proc.stderr
    assert f"--model-from {run}" in proc.stderr
    assert snapshot(run) == before


def test_a_torn_last_log_line_is_shown_without_it_and_repaired_on_resume(run):
    whole = (run / "log.jsonl").read_bytes()
    (run / "log.jsonl").write_bytes(whole[:-40])
    shown = cli("show", run, check=0).stdout
    assert "2 of 3 generations done" in shown
    cli("evolve", "--resume", run, check=0)
    assert (run / "log.jsonl").read_bytes() == whole


def test_a_damaged_earlier_log_line_is_named(run):
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text("\n".join(["{oops", *lines[1:]]) + "\n")
    assert f"{run / 'log.jsonl'}:1: not a log entry" in cli("show", run, check=1).stderr


@pytest.mark.parametrize("keep, section", [(0, "run"), (-1, "evolution")])
def test_an_emptied_or_cut_short_config_is_named_not_read_as_the_defaults(run, keep, section):
    """An empty config.toml once showed, evaluated and resumed the run as the default
    settings' (another task, another model size); one cut before [evolution] alike."""
    lines = (run / "config.toml").read_text().splitlines(keepends=True)
    cut = lines.index("[evolution]\n") if keep else 0
    (run / "config.toml").write_text("".join(lines[:cut]))
    before = snapshot(run)
    expected = (f"error: {run / 'config.toml'}: no [{section}] table; a run records every "
                "section of its settings (the file is damaged or was cut short)")
    assert cli("show", run, check=1).stderr.strip() == expected
    assert cli("evolve", "--resume", run, "--generations", "3", check=1).stderr.strip() \
        == expected
    assert snapshot(run) == before


def _retype_generation(text):
    text = text.replace('attr.name="generation" attr.type="long"',
                        'attr.name="generation" attr.type="string"')
    key = text.split('attr.name="generation"')[0].rsplit('id="', 1)[1].split('"')[0]
    return text.replace(f'<data key="{key}">0</data>', f'<data key="{key}">zero</data>', 1)


@pytest.mark.parametrize("damage, message", [
    (_retype_generation, "individual 'g0-0' has generation 'zero', not a number"),
    (lambda t: t.replace("</graph>", '<edge source="g0-0" target="g0-0" /></graph>'),
     "an individual is its own ancestor (a cycle)"),
])
def test_a_lineage_of_valid_graphml_but_not_a_lineage_is_named(run, damage, message):
    """GraphML that parses but holds what `record` never writes: an attribute of another type
    (an internal ValueError) or a cycle (`lineage` an internal error, `report` never ended)."""
    path = run / "lineage.graphml"
    path.write_text(damage(path.read_text()))
    expected = f"error: {path}: {message}; the file is damaged"
    assert cli("lineage", run, check=1).stderr.strip() == expected
    assert cli("report", run, check=1).stderr.strip() == expected


def _edit_log_line(run, k, change):
    lines = (run / "log.jsonl").read_text().splitlines()
    entry = json.loads(lines[k])
    change(entry)
    lines[k] = json.dumps(entry)
    (run / "log.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("change", [lambda e: e.pop("valid"),
                                    lambda e: e["champion"].update(size="two"),
                                    lambda e: e.update(front=[{"cost": 1.0}])])
def test_an_earlier_log_line_without_what_is_read_of_it_is_named(run, change):
    """A line of JSON that lacks a key show, lineage or the plots read (or has it ill-typed)
    is as damaged as one that is not JSON: named, not an internal error."""
    _edit_log_line(run, 0, change)
    expected = (f"error: {run / 'log.jsonl'}:1: not a log entry (damaged); remove the file's "
                "lines from here on and resume to write them again")
    assert cli("show", run, check=1).stderr.strip() == expected
    assert cli("lineage", run, check=1).stderr.strip() == expected


def test_a_last_log_line_without_what_is_read_of_it_is_repaired_on_resume(run):
    whole = (run / "log.jsonl").read_bytes()
    _edit_log_line(run, -1, lambda e: e["champion"].pop("id"))
    assert "2 of 3 generations done" in cli("show", run, check=0).stdout
    cli("evolve", "--resume", run, check=0)
    assert (run / "log.jsonl").read_bytes() == whole


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / "checkpoint" / "latest.json").write_text('{"checkpoint": "../../x"}'),
     "names '../../x', not a checkpoint of this run"),
    (lambda r: _edit_state(r, lambda s: s.pop("rng")), "missing key 'rng'"),
    (lambda r: _truncate(next((r / "checkpoint").glob("gen-*/trainer/trainer.safetensors"))),
     "unreadable safetensors file"),
    (lambda r: _truncate(next((r / "checkpoint").glob("gen-*/lineage.graphml"))),
     "unreadable lineage"),
    (lambda r: (r / "checkpoint" / "latest.json").write_bytes(b"\xff\xfe"),
     "latest.json: unreadable"),
    # found before a generation's work, not when its results are written
    (lambda r: (shutil.rmtree(r / "model"), (r / "model").write_text("x")),
     "model: a file where the run keeps a directory"),
    (lambda r: (r / "report.json").unlink() or (r / "report.json").mkdir(),
     "report.json: a directory where the run keeps a file"),
])
def test_damaged_checkpoint_files_are_named_on_resume(run, damage, message):
    damage(run)
    before = snapshot(run)
    proc = cli("evolve", "--resume", run, check=1)
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert snapshot(run) == before


@pytest.mark.parametrize("damage, message", [
    (lambda r: _truncate(r / "model" / "model.safetensors"), "unreadable safetensors file"),
    (lambda r: _flip(r / "model" / "model.safetensors"), "model"),
    (lambda r: (r / "model" / "config.json").write_bytes(b"\xff{}"), "not UTF-8 JSON"),
    (lambda r: _edit_json(r / "model" / "config.json", lambda c: c.update(n_embd=64)),
     "do not have the shapes config.json gives"),
    (lambda r: _edit_json(r / "model" / "config.json", lambda c: c.update(n_head=5)),
     "not a model configuration"),
    # checked before a model is built: no division by zero, no torch error, no allocation
    (lambda r: _edit_json(r / "model" / "config.json", lambda c: c.update(n_head=0)),
     "config.json: not a model configuration (n_head must be an integer in [1, 256], found "
     "0); the file is damaged"),
    (lambda r: _edit_json(r / "model" / "config.json", lambda c: c.update(dropout=float("nan"))),
     "(dropout must be a number in [0, 1), found nan)"),
    (lambda r: _edit_json(r / "model" / "config.json", lambda c: c.update(block_size=10**11)),
     "(block_size must be an integer in [2, 65536], found 100000000000)"),
])
def test_a_damaged_model_is_named_by_eval(run, damage, message):
    damage(run)
    proc = cli("eval", ROOT / "programs" / "greedy.scm", "--run", run)
    if proc.returncode != 0:  # a flipped bit may land in a weight: then it is only a weight
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_what_the_file_system_refuses_is_named_by_the_path_asked_for(run, tmp_path):
    """A file system's refusal (here: directories where files belong, or a file where a
    directory belongs; read-only run directories and permissions behave alike) names the
    run directory or file given, and says what could not be done; nothing is changed."""
    (tmp_path / "file").write_text("x")
    proc = cli("evolve", "--out", tmp_path / "file" / "r", "--config", TINY, check=1)
    assert proc.stderr.strip() == (f"error: {tmp_path / 'file' / 'r'}: cannot create the run "
                                   "directory: Not a directory")
    (run / ".lock").unlink()
    (run / ".lock").mkdir()
    before = snapshot(run)
    proc = cli("evolve", "--resume", run, "--generations", "3", check=1)
    assert proc.stderr.strip() == (f"error: {run}: cannot take the run's lock (Is a directory);"
                                   " continuing a run writes into its directory")
    assert snapshot(run) == before
    weights = run / "model" / "model.safetensors"
    weights.unlink()
    weights.mkdir()
    proc = cli("eval", ROOT / "programs" / "greedy.scm", "--run", run, check=1)
    assert proc.stderr.strip() == f"error: {weights}: cannot read: Is a directory"


def test_model_from_a_file_or_nothing_is_named_as_such(tmp_path):
    for source, what in [(ROOT / "programs" / "greedy.scm", "a file, not a"),
                         (tmp_path / "nope", "no such")]:
        proc = cli("evolve", "--out", tmp_path / "r", "--config", TINY, "--model-from", source,
                   check=1)
        assert proc.stderr.strip() == f"error: --model-from {source}: {what} run directory"
    assert not (tmp_path / "r").exists()


def test_run_model_from_in_a_config_starts_from_that_run_s_model(tiny_run, tmp_path):
    """`run.model_from` of a config file or --set (a run's own config.toml, re-run) is what
    --model-from is; it was silently dropped, the run started from a fresh model."""
    proc = cli("evolve", "--out", tmp_path / "r", "--config", TINY, "--generations", "0",
               "--set", f"run.model_from='{tiny_run[0]}'", "--set", "model.n_layer=1", check=0)
    recorded = (tmp_path / "r" / "config.toml").read_text()
    assert f'model_from = "{tiny_run[0]}"' in recorded, proc.stderr
    assert "n_layer = 2" in recorded  # the model's own size, as with --model-from
    proc = cli("evolve", "--out", tmp_path / "s", "--config", TINY, "--set",
               f"run.model_from='{tmp_path / 'none'}'", check=1)
    assert proc.stderr.strip() == f"error: --model-from {tmp_path / 'none'}: no such run " \
                                  "directory"


def test_a_data_file_cut_short_after_the_run_is_named_by_eval_and_resume(tmp_path):
    """The run reads its jsonl file again on eval and resume; cut to one example it leaves a
    split empty, which was an internal 'max() arg is an empty sequence'."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"input": f"{i}+{i}=", "output": str(2 * i)}) + "\n"
                            for i in range(200)))
    run = tmp_path / "r"
    cli("evolve", "--out", run, "--config", TINY, "--task", f"jsonl:{data}", "--generations",
        "0", check=0)
    data.write_text('{"input": "1+1=", "output": "2"}\n')
    before = snapshot(run)
    # the one example is hashed into one split: another is empty
    expected = re.compile(rf"error: task 'jsonl:{re.escape(str(data))}' has an empty "
                          r"(train|valid|test) split; give it more examples")
    assert expected.fullmatch(cli("eval", ROOT / "programs" / "greedy.scm", "--run", run,
                                  check=1).stderr.strip())
    assert expected.fullmatch(cli("evolve", "--resume", run, "--generations", "1",
                                  check=1).stderr.strip())
    assert snapshot(run) == before


def test_a_data_file_edited_after_the_run_is_refused_on_resume(tmp_path):
    """The run was made on one set of examples; a resume on others (an edited line: every split
    still full, so nothing else notices) would go on silently on other data than its
    generations, log and report were made with."""
    data = tmp_path / "d.jsonl"
    lines = [json.dumps({"input": f"{i}+{i}=", "output": str(2 * i)}) + "\n" for i in range(200)]
    data.write_text("".join(lines))
    run = tmp_path / "r"
    cli("evolve", "--out", run, "--config", TINY, "--task", f"jsonl:{data}", "--generations",
        "0", check=0)
    data.write_text("".join(lines[:-1]) + json.dumps({"input": "1+1=", "output": "3"}) + "\n")
    before = snapshot(run)
    proc = cli("evolve", "--resume", run, "--generations", "1", check=1)
    assert proc.stderr.strip() == (
        f"error: task 'jsonl:{data}' now holds other examples than the run was made with (its "
        "data, or the code that makes them, changed), so the run cannot continue exactly; "
        f"restore the data, or start a new run from this one's results: evolve --model-from "
        f"{run}")
    assert snapshot(run) == before
    data.write_text("".join(lines))  # restored: the run goes on
    cli("evolve", "--resume", run, "--generations", "1", check=0)


def test_a_program_spec_without_a_file_is_named(tiny_run):
    proc = cli("compare", ":x", ROOT / "programs" / "greedy.scm", "--run", tiny_run[0], check=1)
    assert proc.stderr.strip() == "error: ':x': expected FILE or FILE:NAME, found no FILE " \
                                  "before ':'"


def test_model_from_a_run_of_another_task_is_refused(tiny_run, tmp_path):
    finished = tiny_run[0]
    proc = cli("evolve", "--out", tmp_path / "r", "--config", TINY, "--task", "reverse",
               "--model-from", finished, check=1)
    assert "its model was trained on task 'addition', not 'reverse'" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_trace_and_eval_refuse_what_they_cannot_do(tiny_run, tmp_path):
    finished = tiny_run[0]
    empty = tmp_path / "empty.scm"
    empty.write_text(";; nothing here\n")
    assert "no definitions" in cli("trace", empty, "--run", finished, "--prompt", "1+1=",
                                   check=1).stderr
    assert "no definitions" in cli("eval", empty, "--run", finished, check=1).stderr
    greedy = ROOT / "programs" / "greedy.scm"
    long = cli("trace", greedy, "--run", finished, "--prompt", "9" * 200, check=1).stderr
    assert "block size" in long
    assert cli("trace", greedy, "--run", finished, "--prompt", "1", "--top", "-1",
               check=2).returncode == 2


def test_trace_takes_every_prompt_a_decode_fits(tiny_run):
    """The answer's last token is never fed back, so a prompt of block_size - cap + 1 tokens
    decodes (as the run's own check allows; `report` of a text run with a prompt of
    task.prompt_bytes, 64 + BOS + 128 = 193 > 192 tokens, was refused); one more is not."""
    greedy = ROOT / "programs" / "greedy.scm"
    # tiny.toml: block 32, answer cap 4; BOS + 28 bytes + 4 - 1 = 32
    out = cli("trace", greedy, "--run", tiny_run[0], "--prompt", "1" * 28, check=0).stdout
    assert out.splitlines()[-1].startswith("answer: ")
    proc = cli("trace", greedy, "--run", tiny_run[0], "--prompt", "1" * 29, check=1)
    assert proc.stderr.strip() == ("error: the prompt (30 tokens) and 4 answer tokens exceed "
                                   "the model's block size of 32; shorten the prompt")


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _edit_state(run, change):
    _edit_json(next((run / "checkpoint").glob("gen-*/state.json")), change)


def test_an_answer_cap_that_leaves_no_room_for_the_prompt_is_refused_up_front(tmp_path):
    proc = cli("evolve", "--out", tmp_path / "r", "--config", TINY, "--set",
               "loop.max_new_tokens=31", check=1)
    assert "loop.max_new_tokens: the task's longest prompt" in proc.stderr
    assert "exceed model.block_size = 32" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_a_prompt_that_is_not_utf8_is_refused(tiny_run):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable.encode(), str(ROOT / "run_evolution.py").encode(),
                           b"trace", str(ROOT / "programs" / "greedy.scm").encode(), b"--run",
                           str(tiny_run[0]).encode(), b"--prompt", b"\xff\xfe"],
                          capture_output=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1 and b"--prompt is not UTF-8 text" in proc.stderr, proc.stderr
