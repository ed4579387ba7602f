"""The co-evolution loop end to end (DESIGN §3-§6): the run directory, resume after SIGKILL,
Ctrl-C, inspection commands and bad input. Runs `run_evolution.py` as a user would."""

import json
import re
import signal
import subprocess
import sys
import time

import networkx as nx
import pytest
from conftest import ENV, ROOT, TINY, cli

from engine_dsl.files import read_file


def test_a_run_writes_the_directory_of_design_4(tiny_run):
    out, proc = tiny_run
    for name in ("config.toml", "seeds", "generations", "hall-of-fame.scm", "log.jsonl",
                 "lineage.graphml", "model/model.safetensors", "model/config.json",
                 "checkpoint/latest.json", "report.json"):
        assert (out / name).exists(), name
    assert sorted(p.name for p in (out / "generations").iterdir()) == [
        "gen-0000.scm", "gen-0001.scm", "gen-0002.scm"]
    assert {p.name for p in (out / "plots").iterdir()} == {
        "score-cost.png", "pareto-front.png", "constants.png", "model-loss.png"}
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [e["generation"] for e in log] == [0, 1, 2]
    assert {"champion", "greedy"} <= set(log[-1]["valid"])
    graph = nx.read_graphml(out / "lineage.graphml")
    assert log[-1]["champion"]["id"] in graph
    # the per-generation line shows best score, greedy, cost, size and the champion
    assert proc.stdout.count("greedy") >= 3 and "gen   2" in proc.stdout


def test_population_and_hall_of_fame_are_reusable_seed_files(tiny_run):
    out, _ = tiny_run
    hof = read_file(out / "hall-of-fame.scm")
    assert hof and all(any(c.startswith(";; score:") for c in d.comments) for d in hof)
    pop = read_file(out / "generations" / "gen-0002.scm")
    assert len(pop) == 4
    assert all(any(c.startswith(";; parents:") for c in d.comments) for d in pop)


def test_final_report_has_test_scores_with_intervals(tiny_run):
    out, proc = tiny_run
    report = json.loads((out / "report.json").read_text())
    names = set(report["programs"])
    assert {"champion", "greedy", "seed:greedy-baseline", "seed:nucleus-vote",
            "seed:entropy-branch"} == names
    for r in report["programs"].values():
        lo, hi = r["test"]["ci95"]
        assert lo <= r["test"]["score"] <= hi and r["test"]["n"] == 6
    assert "final report" in proc.stdout
    cg = report["champion_vs_greedy"]
    assert cg["low"] <= cg["diff"] <= cg["high"] and cg["n"] == 6
    line = next(x for x in proc.stdout.splitlines() if x.startswith("champion vs greedy"))
    assert re.fullmatch(r"champion vs greedy on test: [+-]\d\.\d{3} \[[+-]\d\.\d{3}, "
                        r"[+-]\d\.\d{3}\]", line), line
    sel = report["selection"]
    assert sel["prompts"] > 0 and sel["gap"] == pytest.approx(sel["valid"] - sel["test"])
    # the seeds are candidates whatever the front: greedy, nucleus-vote, entropy-branch
    assert sel["candidates"] >= 3
    assert "valid-to-test gap" in proc.stdout
    assert len(report["samples"]) == 5 and all(
        x["champion_answer"] == x["champion"] for x in report["samples"])  # no rule: as is


def test_no_pickle_anywhere_in_the_run(tiny_run):
    out, _ = tiny_run
    for path in out.rglob("*"):
        if path.is_file():
            head = path.read_bytes()[:2]
            assert head not in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"), path
            assert path.suffix not in (".pkl", ".pickle", ".pt", ".pth"), path


def test_show_lineage_eval_trace_export(tiny_run):
    out, _ = tiny_run
    shown = cli("show", out, check=0).stdout
    assert "hall of fame" in shown and "final report" in shown
    assert "ancestry of" in cli("lineage", out, check=0).stdout
    result = json.loads(cli("eval", ROOT / "programs" / "nucleus.scm", "--run", out,
                            "--split", "test", check=0).stdout)
    assert result["split"] == "test" and {"nucleus-vote", "greedy"} == set(result["programs"])
    traced = cli("trace", ROOT / "programs" / "entropy-branch.scm", "--run", out,
                 "--prompt", "12+34=", check=0).stdout
    assert "(entropy logits)" in traced and "branch" in traced and "chosen" in traced
    exported = json.loads(cli("export", ROOT / "programs" / "greedy.scm", "--hf",
                              check=0).stdout)
    assert exported["do_sample"] is False
    err = cli("export", ROOT / "programs" / "best-of.scm", "--hf", check=1).stderr
    assert "only a plain chooser (greedy, sample)" in err


def test_trace_chooses_the_tokens_decode_chooses(tiny_run, tmp_path):
    """The answer `trace` prints is the one `decode` gives that prompt (its first sample):
    the same uniforms and the same inverse-CDF draw, also for a flat distribution."""
    import engine_dsl
    from evolution.views import open_run, trace

    out, _ = tiny_run
    run = open_run(str(out))
    tok = run.tokenizer
    programs = ["(sample (temperature logits 4.0))", "(sample (top-p logits 0.9))",
                "(greedy (temperature logits 0.5))",
                "(sample (mirostat (dry (temperature logits 2.0) 2.0 1.5 1) 2.0 0.3))"]
    assert run.breakers.single == {ord(c) for c in "\n:\"*"}  # llama.cpp's, as bytes
    for src in programs:
        path = tmp_path / "p.scm"
        path.write_text(f"(define p {src})\n")
        body = engine_dsl.read(path.read_text(), str(path))[0].body
        for prompt in ["12+34=", "7+8=", "999+1="]:
            traced = trace(str(path), str(out), prompt).splitlines()[-1]
            (got,) = engine_dsl.decode(run.model, [body], [tok.encode(prompt, bos=True)],
                                       max_new_tokens=run.answer_cap(),
                                       stop_token=tok.eos_id, seed=run.cfg.run.seed,
                                       breakers=run.breakers)[0]
            assert traced == f"answer: {tok.decode(got.tokens)!r}", (src, prompt)


def test_hand_edit_loop_continues_from_edited_programs_and_trained_model(tiny_run, tmp_path):
    out, _ = tiny_run
    edited = tmp_path / "edited.scm"
    text = (out / "hall-of-fame.scm").read_text()
    edited.write_text(text + "\n;; my own idea\n(define mine (sample (top-k logits 3)))\n")
    again = tmp_path / "again"
    cli("evolve", "--out", again, "--config", TINY, "--seeds", edited, "--model-from", out,
        "--generations", "1", check=0)
    gen0 = read_file(again / "generations" / "gen-0000.scm")
    assert any(c == ";; operator: seed:mine" for d in gen0 for c in d.comments)


def _hall_of_fame_after_kill(tmp_path, name, wait_for):
    out = tmp_path / name
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_evolution.py"), "evolve", "--out",
                             str(out), "--config", TINY], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not wait_for(out):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if not (out / "config.toml").exists():  # killed before the run directory was made
        return None
    cli("evolve", "--resume", out, check=0)
    return (out / "hall-of-fame.scm").read_text()


def test_a_run_killed_at_any_point_resumes_to_the_same_hall_of_fame(tiny_run, tmp_path):
    """SIGKILL at several points (mid generation, right after a commit, mid commit), then
    --resume: the hall of fame equals the uninterrupted run's, byte for byte."""
    out, _ = tiny_run
    expected = (out / "hall-of-fame.scm").read_text()

    def log_lines(n):
        return lambda d: (d / "log.jsonl").exists() and \
            len((d / "log.jsonl").read_text().splitlines()) >= n

    points = {
        "mid-pre-training": lambda d: (d / "config.toml").exists(),
        "after-gen-0-log": log_lines(1),
        "after-gen-1-log": log_lines(2),
        "gen-1-checkpoint": lambda d: (d / "checkpoint" / "gen-0001").exists(),
        "gen-2-file": lambda d: (d / "generations" / "gen-0002.scm").exists(),
    }
    resumed = 0
    for name, wait_for in points.items():
        got = _hall_of_fame_after_kill(tmp_path, name, wait_for)
        if got is not None:
            resumed += 1
            assert got == expected, name
    assert resumed >= 3


def test_ctrl_c_exits_cleanly_and_the_run_resumes(tmp_path):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_evolution.py"), "evolve", "--out",
                             str(out), "--config", TINY, "--generations", "6"], cwd=ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint" / "latest.json").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err
    cli("evolve", "--resume", out, check=0)
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [e["generation"] for e in log] == list(range(7))


@pytest.mark.parametrize("args, fragment", [
    (["--task", "nosuch"], "unknown task 'nosuch'"),
    (["--seeds", "nope.scm"], "nope.scm:1:1: error: cannot read file"),
    (["--set", "evolution.popsize=3"], "unknown config key 'evolution.popsize'"),
    (["--set", "loop.train_steps=lots"], "loop.train_steps must be an integer"),
    (["--config", "missing.toml"], "missing.toml: cannot read config file"),
    (["--set", "task.answer_regex='(unclosed'"], "task.answer_regex: not a regular expression"),
    # a device has no end: these once read until memory ran out (20 GB in a minute)
    (["--task", "text:/dev/zero"], "error: /dev/zero: not a regular file; give a data file"),
    (["--task", "jsonl:/dev/zero"], "error: /dev/zero: not a regular file; give a data file"),
    (["--config", "/dev/zero"], "error: /dev/zero: larger than 1048576 bytes; not a config file"),
])
def test_bad_input_is_one_line_exit_1(tmp_path, args, fragment):
    proc = cli("evolve", "--out", tmp_path / "r", *args, check=1)
    assert fragment in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "r").exists()


def test_bad_jsonl_names_file_and_line(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"input": "a", "output": "b"}\n{"input": "c"}\n')
    proc = cli("evolve", "--out", tmp_path / "r", "--task", f"jsonl:{data}", check=1)
    assert f"{data}:2:" in proc.stderr and "output" in proc.stderr


def test_seed_over_a_cap_is_refused(tmp_path):
    seed = tmp_path / "big.scm"
    seed.write_text("(define big (vote 99 (sample logits)))\n")
    proc = cli("evolve", "--out", tmp_path / "r", "--seeds", seed, check=1)
    assert "big.scm:1:19: error: 99 exceeds the cap max_votes = 16" in proc.stderr


def test_data_refused_after_the_directory_exists_leaves_nothing_behind(tmp_path):
    """Answers longer than model.block_size (32 in tiny.toml) pass the prompt checks (the
    answer cap is 4 tokens) and are refused only when the trainer encodes them, after the run
    directory was created: the failed start removes it (an empty --out given stays empty), so
    the same command after fixing the data starts, not "already holds a run"."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"input": f"q{i}=", "output": "x" * 40}) + "\n"
                            for i in range(60)))
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "r", empty):
        proc = cli("evolve", "--out", out, "--config", TINY, "--task", f"jsonl:{data}",
                   check=1)
        assert proc.stderr.strip().splitlines() == [
            f"error: {data}:2: example 'q1='... has 45 tokens, more than model.block_size 32 "
            "+ 1"]
    assert not (tmp_path / "r").exists()
    assert empty.is_dir() and not any(empty.iterdir())


def test_a_failure_in_generation_0_removes_the_new_run_but_keeps_a_committed_one(tmp_path,
                                                                                monkeypatch):
    """An error before generation 0 is committed leaves no directory; after it, the run
    stays whole and resumable."""
    from evolution.loop import CoEvolution
    from evolution.rundir import RunDir
    from evolution.settings import resolve
    from neural import DataError

    cfg = resolve(TINY, ["run.generations=1"])
    failing = CoEvolution.start(cfg, RunDir(tmp_path / "a"))
    assert (tmp_path / "a" / "config.toml").exists()

    def bad_training(*args):
        raise DataError("bad data")

    monkeypatch.setattr(failing, "_train", bad_training)
    with pytest.raises(DataError):
        failing.generation(0)
    failing.close()
    assert not (tmp_path / "a").exists()

    run = CoEvolution.start(resolve(TINY, ["run.generations=1"]), RunDir(tmp_path / "b"))
    run.generation(0)
    monkeypatch.setattr(run, "_train", bad_training)
    with pytest.raises(DataError):
        run.generation(1)
    run.close()
    resumed = CoEvolution.resume(RunDir(tmp_path / "b"))
    assert resumed.next_generation == 1
    resumed.close()


def test_an_existing_run_is_never_overwritten(tiny_run):
    out, _ = tiny_run
    before = (out / "hall-of-fame.scm").read_bytes()
    proc = cli("evolve", "--out", out, "--config", TINY, check=1)
    assert "already holds a run" in proc.stderr
    assert (out / "hall-of-fame.scm").read_bytes() == before


def test_resume_of_a_finished_run_only_reports(tiny_run):
    out, _ = tiny_run
    before = (out / "hall-of-fame.scm").read_bytes()
    cli("evolve", "--resume", out, check=0)
    assert (out / "hall-of-fame.scm").read_bytes() == before


def test_phase1_mode_keeps_the_seeds_structure(tmp_path):
    """--mode phase1: the population is the seed programs; only their constants move."""
    from engine_dsl import Apply, walk

    out = tmp_path / "p1"
    cli("evolve", "--out", out, "--config", TINY, "--mode", "phase1", check=0)

    def shapes(path):
        return sorted(str([n.op if isinstance(n, Apply) else type(n).__name__
                           for n in walk(d.body)]) for d in read_file(path))

    seeds = [ROOT / "programs" / p for p in ("greedy.scm", "nucleus.scm", "entropy-branch.scm")]
    expected = sorted(s for p in seeds for s in shapes(p))
    assert shapes(out / "generations" / "gen-0002.scm") == expected
    # every generation tunes the two seeds that have constants, and says what it kept
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [e["tuning"]["kept"] + e["tuning"]["undone"] for e in log[1:]] == [2, 2]

    def constants(path):
        return sorted(n.value for d in read_file(path) for n in walk(d.body)
                      if type(n).__name__ == "RealConst")

    assert constants(out / "generations" / "gen-0002.scm") != \
        constants(out / "generations" / "gen-0000.scm")


def test_phased_mode_trains_model_then_programs_then_both(tmp_path):
    out = tmp_path / "phased"
    cli("evolve", "--out", out, "--config", TINY, "--mode", "phased", "--generations", "3",
        "--set", "loop.phased_model_generations=1", "--set",
        "loop.phased_program_generations=1", check=0)
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    trained = [e["model"] is not None for e in log]
    assert trained == [True, True, False, True]
    ops = [c for d in read_file(out / "generations" / "gen-0001.scm") for c in d.comments
           if c.startswith(";; generation:")]
    assert all(c == ";; generation: 0" for c in ops)  # generation 1 only trained the model
