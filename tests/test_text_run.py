"""A run on a text task (continuations of a user's file): its settings, its training on the
whole text of the train works, its scoring on held-out continuations."""

import json

import pytest
from conftest import TINY, cli

from evolution.settings import ConfigError, resolve
from neural.tasks import TextCorpus


def test_text_tasks_get_a_context_that_holds_prompt_and_continuation():
    """Text tasks default to model.block_size 192 = 64 + 128, rotary positions (and the
    pre-training of the shakespeare benchmark); answer tasks keep 128 and a learned position
    table; a prompt and continuation longer than the context is a settings error naming the
    keys."""
    text = resolve(None, ["task.name=shakespeare"])
    assert (text.model.block_size, text.model.positions, text.train.batch_size,
            text.loop.pretrain_steps) == (192, "rope", 4, 1200)
    assert resolve(None, ["task.name=text:x.txt"]).model.block_size == 192
    assert (resolve(None, []).model.block_size, resolve(None, []).model.positions) == \
        (128, "learned")
    with pytest.raises(ConfigError, match="model.n_embd / model.n_head = 1 must be even"):
        resolve(None, ["task.name=shakespeare", "model.n_head=128"])
    assert resolve(None, ["task.name=shakespeare", "model.block_size=256",
                          "loop.decode_memory_mb=8192"]).model.block_size == 256
    with pytest.raises(ConfigError, match=r"task.prompt_bytes \+ task.continuation_bytes = 192 "
                                          r"exceeds model.block_size = 128"):
        resolve(None, ["task.name=shakespeare", "model.block_size=128"])
    with pytest.raises(ConfigError, match=r"task.continuation_bytes must be in \[1, 65536\]"):
        resolve(None, ["task.continuation_bytes=0"])


def test_a_text_run_recorded_before_model_positions_keeps_its_learned_table(tmp_path):
    """A run's config.toml without model.positions (written before the key existed, when every
    model had a learned table) reads as "learned" on resume, eval and show; a user's own
    config file without it takes the text tasks' default, "rope"."""
    from evolution.loop import config_text
    from evolution.settings import recorded_config

    path = tmp_path / "config.toml"
    text = config_text(resolve(None, ["task.name=shakespeare"]))
    path.write_text(text)
    assert recorded_config(path).model.positions == "rope"
    old = text.replace('positions = "rope"\n', "")
    assert "positions" not in old
    path.write_text(old)
    assert recorded_config(path).model.positions == "learned"
    assert recorded_config(path, ["run.generations=9"]).run.generations == 9
    assert resolve(str(path)).model.positions == "rope"


def test_a_text_selection_takes_the_fresh_prompts_one_decode_fits():
    """A text task's final selection decodes at most what `loop.decode_memory_mb` holds: the
    shakespeare model (4 layers x 128, block 192, 16 votes at most) takes 16 x (2 x 4 x 192 x
    128 + 4 x 256) x 4 bytes = 12.06 MB a prompt, so 4096 MB fit 339 of them; a run recorded
    with the answer tasks' 500 still reads (and selects on 339), 256 stay 256."""
    from evolution.settings import text_select_prompts

    assert text_select_prompts(resolve(None, ["task.name=shakespeare"])) == 256
    old = resolve(None, ["task.name=shakespeare", "loop.select_prompts=500"])
    assert text_select_prompts(old) == 339
    assert text_select_prompts(resolve(None, ["task.name=shakespeare", "loop.select_prompts=500",
                                              "loop.decode_memory_mb=8192"])) == 500


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text("".join(f"On day {i} the {['red', 'old', 'tall'][i % 3]} ship sailed "
                            f"to the {['north', 'east'][i % 2]} harbour.\n"
                            for i in range(3000)))
    return path


@pytest.mark.parametrize("objective", ["likelihood", "reinforce"])
def test_a_text_run_trains_on_running_text_and_scores_continuations(tmp_path, text_file,
                                                                     objective):
    """Both co-training objectives run on a text task; reinforce logs the mean reward of
    the champion's continuations (the text objective's: minus gaps, at most 0)."""
    from evolution.loop import CoEvolution
    from evolution.rundir import RunDir

    cfg = resolve(TINY, [f"task.name=text:{text_file}", "task.prompt_bytes=12",
                         "task.continuation_bytes=12", "loop.max_new_tokens=0",
                         "run.generations=1", f"loop.model_objective={objective}",
                         "loop.reinforce_samples=4"])
    run = CoEvolution.start(cfg, RunDir(tmp_path / "run"))
    try:
        assert run.task.kind == "text" and isinstance(run.trainer.data, TextCorpus)
        assert run.answer_cap() == 12  # the continuation's bytes; no stop token
        report = run.run()
        # the race's prompts: valid prompts after those of every generation and the first
        # stage, none twice; none where text.race_prompts = 0
        fresh, race = run.fresh_examples(), run.race_examples()
        seen = run.task.split("valid")[:cfg.loop.valid_prompts] + fresh
        assert race and not {id(e) for e in race} & {id(e) for e in seen}
        assert run.task.split("valid")[:len(seen) + len(race)] == seen + race
        run.cfg.text.race_prompts = 0
        assert run.race_examples() == []
    finally:
        run.close()
    programs = report["programs"]
    assert set(programs) >= {"champion", "greedy", "nucleus 0.95"}
    assert programs["greedy"]["test"]["score"] < 0  # minus its gaps to human text
    # chosen on fresh valid prompts among the front, the seeds and nucleus 0.95, which the
    # champion is then compared with on test, paired
    sel, vs = report["selection"], report["champion_vs_reference"]
    assert sel["reference"] == "nucleus 0.95" and sel["prompts"] > 0 and sel["candidates"] >= 2
    assert sel["rule"].startswith("one-standard-error")
    # then a race: the candidates close to the best (and nucleus 0.95) on more fresh prompts
    assert sel["race"]["prompts"] == len(race) and 1 <= sel["race"]["programs"] <= 5
    shown = cli("show", tmp_path / "run", check=0).stdout
    assert (f"fresh valid prompts, then {sel['race']['programs']} of them on "
            f"{sel['race']['prompts']} more: valid {sel['valid']:.3f}") in shown
    assert vs["diff"] == pytest.approx(programs["champion"]["test"]["score"]
                                       - programs["nucleus 0.95"]["test"]["score"])
    assert vs["low"] <= vs["diff"] <= vs["high"]
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["generation"] for e in log] == [0, 1]
    assert ("reward" in log[1]["model"]) == (objective == "reinforce")
    if objective == "reinforce":
        assert log[1]["model"]["reward"] <= 0


def test_a_text_task_that_does_not_fit_is_one_line(tmp_path, text_file):
    proc = cli("evolve", "--out", tmp_path / "r", "--config", TINY, "--task",
               f"text:{text_file}", check=1)
    assert "model.block_size = 32" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_a_text_file_of_one_long_line_names_the_file_and_what_is_missing(tmp_path):
    """A file without line ends is one section, which lands in one split: the error names the
    file and asks for more lines (not "more examples", which a text file has none of)."""
    text = tmp_path / "one.txt"
    text.write_text("to be or not to be " * 400)
    proc = cli("evolve", "--out", tmp_path / "r", "--config", TINY, "--task", f"text:{text}",
               "--set", "task.prompt_bytes=8", "--set", "task.continuation_bytes=8", check=1)
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {text}: too little text for a ") and "(it gave 1)" in line
    assert line.endswith("give it more lines")
    assert not (tmp_path / "r").exists()
