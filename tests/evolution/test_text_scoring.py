"""Scores of text-task programs from what they write (evolution.text_scoring)."""

import math

import pytest
import torch

import engine_dsl
from evolution.text_scoring import NUCLEUS_95, TextEvaluator, TextScorer, Written
from neural import GPT, ByteTokenizer, GPTConfig
from neural.text_measures import Judge, JudgeScores

TOK = ByteTokenizer()


def tiny_judge(seed=0):
    torch.manual_seed(seed)
    return Judge(GPT(GPTConfig(block_size=48, n_layer=1, n_head=2, n_embd=16)))


def written(texts, log_ppl):
    """Continuations whose judge reading has the given per-byte log-perplexities."""
    tokens = torch.tensor([len(t.encode()) for t in texts])
    return Written(list(texts), [False] * len(texts),
                   JudgeScores(torch.tensor(log_ppl) * tokens, tokens,
                               torch.zeros(len(texts), 4)))


def scorer(objective, references):
    return TextScorer(tiny_judge(), ["p"] * len(references), references, objective)


def test_human_objective_by_hand():
    """Human: log-PPL 2, no repeated 4-gram. Generated: log-PPL 3; "a b c d a b c d" holds
    4-grams abcd bcda cdab dabc abcd (4 distinct of 5), "x y z w" one of one: rep-4 =
    100 (1 - 5/6) -> -(1 + 1/6)."""
    refs = ["one two three four five", "six seven eight nine"]
    s = scorer("human", refs)
    s.human = written(refs, [2.0, 2.0])
    assert s.score(s.human) == pytest.approx(0.0)
    gen = written(["a b c d a b c d", "x y z w"], [3.0, 3.0])
    assert s.score(gen) == pytest.approx(-(1 + 1 / 6))
    # a bootstrap resample holding only the second prompt: log-PPL gap 1, no repeats
    assert s.score(gen, [1, 1]) == pytest.approx(-1.0)


def test_human_rewards_by_hand():
    """Per continuation: minus its gaps to the human set (log-PPL 2, rep-4 0)."""
    refs = ["one two three four five", "six seven eight nine"]
    s = scorer("human", refs)
    s.human = written(refs, [2.0, 2.0])
    gen = written(["a b c d a b c d", "x y z w"], [3.0, 1.5])
    assert s.rewards(gen).tolist() == pytest.approx([-1.2, -0.5])


def test_seed_reward_by_hand():
    """"a b a" (5 bytes, distinct-1 2/3) against a 10-byte reference, judge PPL 50:
    -50/100 - 0.1 x 5/10 + 0.1 x 2/3."""
    s = scorer("reward", ["xxxxxxxxxx"])
    gen = written(["a b a"], [math.log(50.0)])
    want = -0.5 - 0.05 + 0.1 * 2 / 3
    assert s.rewards(gen).tolist() == pytest.approx([want])
    assert s.score(gen) == pytest.approx(want)


def test_mauve_objective_of_the_human_text_is_one():
    refs = [f"line {i} of the play" for i in range(30)]
    s = TextScorer(tiny_judge(), [f"prompt {i}" for i in range(30)], refs, "mauve")
    assert s.score(s.read(refs, [False] * 30)) == pytest.approx(1.0)


def test_unknown_objective():
    with pytest.raises(ValueError, match="unknown text objective 'nope'"):
        scorer("nope", ["x"])


def test_interval_holds_the_score_and_repeats():
    refs = ["to be or not to be", "that is the question", "whether tis nobler", "in the mind"]
    s = scorer("human", refs)
    gen = s.read(["to be to be to be to be", "the the the", "nobler still", "mind"], [False] * 4)
    value, lo, hi = s.interval(gen, 200, seed=3)
    assert lo <= value <= hi
    assert s.interval(gen, 200, seed=3) == (value, lo, hi)


def test_programs_are_scored_on_common_draws():
    """Scoring programs together or one by one gives the same (score, cost): the same
    per-prompt draws whatever else is decoded."""
    torch.manual_seed(1)
    model = GPT(GPTConfig(block_size=48, n_layer=1, n_head=2, n_embd=16)).eval()
    prompts = ["the ", "a cat ", "so "]
    refs = ["quick brown", "sat on the mat", "it goes"]
    s = TextScorer(tiny_judge(), prompts, refs)
    ev = TextEvaluator(model, s, [TOK.encode(p, bos=True) for p in prompts], TOK.decode,
                       seed=7, max_new_tokens=12, stop_token=TOK.eos_id, pad_token=TOK.pad_id)
    progs = [engine_dsl.read_expr(t, engine_dsl.Type.DECODER)
             for t in ("(greedy logits)", NUCLEUS_95, "(sample (temperature logits 0.7))")]
    together = ev(progs)
    alone = [ev([p])[0] for p in progs]
    for (a, ca), (b, cb) in zip(together, alone, strict=True):
        assert a == pytest.approx(b, abs=1e-6) and ca == cb
    # decoded in groups of programs that fit a row budget: the same continuations
    grouped = TextEvaluator(model, s, [TOK.encode(p, bos=True) for p in prompts], TOK.decode,
                            seed=7, max_rows=len(prompts), max_new_tokens=12,
                            stop_token=TOK.eos_id, pad_token=TOK.pad_id)
    whole, split = ev.write(progs), grouped.write(progs)
    assert [w.texts for w, _ in whole] == [w.texts for w, _ in split]
    assert [c for _, c in whole] == [c for _, c in split]


def test_a_text_run_selects_on_what_programs_write(tmp_path):
    """A text-task run scores programs by the text objective, and `show` prints one held-out
    prompt continued by greedy, nucleus 0.95 and the champion beside the human text."""
    import json

    from conftest import TINY, cli

    corpus = tmp_path / "story.txt"
    corpus.write_text("".join(f"On day {i} the {['red', 'old', 'tall'][i % 3]} ship sailed "
                              f"to the {['north', 'east'][i % 2]} harbour.\n"
                              for i in range(1500)))
    out = tmp_path / "run"
    cli("evolve", "--out", out, "--config", TINY, "--task", f"text:{corpus}",
        "--generations", "1", "--set", "task.prompt_bytes=12", "--set",
        "task.continuation_bytes=12", "--set", "loop.max_new_tokens=0",
        "--set", "text.judge_steps=5", check=0)
    entry = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert entry["valid"]["champion"] <= 0.0  # minus gaps: 0 is the human text
    shown = cli("show", out, check=0).stdout
    assert "nucleus 0.95" in shown and "human" in shown and "champion" in shown


def test_text_settings_are_checked():
    from evolution.settings import ConfigError, resolve

    with pytest.raises(ConfigError, match="text.objective must be one of human, mauve, reward"):
        resolve(sets=["text.objective=nope"])
    with pytest.raises(ConfigError, match="text.judge_steps must be in"):
        resolve(sets=["text.judge_steps=-1"])
    with pytest.raises(ConfigError, match="give the judge its own steps"):
        resolve(sets=["task.name=text:x.txt", "loop.pretrain_steps=0"])
    assert resolve(sets=["text.objective=mauve"]).text.objective == "mauve"


def test_text_reward_is_each_continuations_reward():
    """The co-training reward of (examples, texts, stopped) is `TextScorer.rewards` against
    the examples' human continuations; the human text itself is rewarded best."""
    from evolution.text_scoring import text_reward
    from neural.tasks import Example

    judge = tiny_judge()
    examples = [Example("the cat ", "sat on the mat and"), Example("a dog ", "ran to the hill")]
    texts = ["sat sat sat sat sat sat", "ran to the hill"]
    got = text_reward(judge)(examples, texts, [False, False])
    s = TextScorer(judge, [e.input for e in examples], [e.output for e in examples])
    assert got == pytest.approx(s.rewards(s.read(texts, [False, False])).tolist())
    assert got[0] < 0
