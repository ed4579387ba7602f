"""Tasks: formats, deterministic disjoint splits, file errors naming file:line, curriculum."""

import json
import re

import pytest
import torch

from neural import (
    IGNORE_INDEX,
    ByteTokenizer,
    Curriculum,
    DataError,
    Example,
    get_task,
    make_batch,
    make_prompt_batch,
    split_of,
)
from neural.tasks import read_jsonl


@pytest.mark.parametrize("name", ["addition", "reverse", "sort", "copy"])
def test_builtin_split_is_deterministic_and_disjoint(name):
    """The same arguments give the same three splits; no example is in two splits; the
    split of an example depends only on its content."""
    a = get_task(name, size=500, seed=1)
    b = get_task(name, size=500, seed=1)
    assert (a.train, a.valid, a.test) == (b.train, b.valid, b.test)
    sets = [set(a.train), set(a.valid), set(a.test)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert len(a.train) > len(a.valid) > 0 and len(a.test) > 0
    other = get_task(name, size=500, seed=2)
    for split in ("train", "valid", "test"):
        for ex in other.split(split):
            assert split_of(ex) == split


def test_builtin_answers_are_correct():
    """addition: zero-padded operands, plain sum; reverse, sort, copy do what they say."""
    for ex in get_task("addition", difficulty=2, size=50).train:
        a, b = ex.input.rstrip("=").split("+")
        assert len(a) == len(b) == 2 and int(ex.output) == int(a) + int(b)
    for ex in get_task("reverse", size=50).train:
        assert ex.output == ex.input[:-1][::-1]
    for ex in get_task("sort", size=50).train:
        assert ex.output == "".join(sorted(ex.input[:-1]))
    for ex in get_task("copy", size=50).train:
        assert ex.output == ex.input[:-1]


def test_difficulty_knob():
    """Difficulty sets the digits of addition and the maximum length of letter tasks."""
    assert get_task("addition", difficulty=5, size=20).train[0].input.index("+") == 5
    assert max(len(e.output) for e in get_task("copy", difficulty=2, size=200).train) == 2
    with pytest.raises(DataError, match="difficulty"):
        get_task("addition", difficulty=0)


def test_small_space_is_exhausted_not_looped_forever():
    """A size larger than the task's space gives every distinct example once."""
    t = get_task("addition", difficulty=1, size=10_000)
    assert len(t.train) + len(t.valid) + len(t.test) == 100


def test_unknown_task_is_data_error():
    """An unknown name is a DataError listing the known ones."""
    with pytest.raises(DataError, match="unknown task 'nope'.*addition"):
        get_task("nope")


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_jsonl_task(tmp_path):
    """jsonl:PATH reads input/output objects, skipping blank lines."""
    rows = [{"input": f"q{i}", "output": f"a{i}"} for i in range(40)]
    p = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    t = get_task(f"jsonl:{p}")
    assert sorted(t.train + t.valid + t.test, key=lambda e: int(e.input[1:])) == [
        Example(r["input"], r["output"]) for r in rows]
    assert t.kind == "answer"


@pytest.mark.parametrize("lines,line,message", [
    (['{"input": "a", "output": "b"}', '{"input": "a"}'], 2, "missing field 'output'"),
    (['{"output": "b"}'], 1, "missing field 'input'"),
    (['{"input": "a", "output": "b"}', "", '{"input": "a", "output": "b"'], 3, "invalid JSON"),
    (['[1, 2]'], 1, "expected a JSON object with 'input' and 'output', found an array"),
    (['{"input": 1, "output": "b"}'], 1, "field 'input' must be a string, found a number"),
    (['{"input": "a", "output": null}'], 1, "field 'output' must be a string, found null"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, lines, line, message):
    """A malformed line or missing field is a DataError whose str starts with file:line."""
    p = write(tmp_path / "data.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        get_task(f"jsonl:{p}")
    assert str(info.value).startswith(f"{p}:{line}: {message}")
    assert (info.value.filename, info.value.line) == (p, line)


def test_a_byte_that_is_not_utf8_is_named_by_its_line_and_a_bom_is_read_past(tmp_path):
    p = tmp_path / "data.jsonl"
    good = '{"input": "a", "output": "b"}\n'
    p.write_bytes(good.encode() * 2 + b'{"input": "\xff", "output": "b"}\n')
    with pytest.raises(DataError, match=re.escape(f"{p}:3: not UTF-8 text (byte 0xff")):
        get_task(f"jsonl:{p}")
    p.write_bytes(b"\xef\xbb\xbf" + good.encode() * 2)
    assert read_jsonl(str(p)) == [Example("a", "b")] * 2


def test_an_example_too_long_for_the_model_is_named_by_its_line(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text('{"input": "a", "output": "b"}\n{"input": "a", "output": "bbbbbbbbbb"}\n')
    examples = read_jsonl(str(p))
    assert make_batch(ByteTokenizer(), examples[:1], block_size=4).ids.shape == (1, 4)
    with pytest.raises(DataError, match=f"^{re.escape(str(p))}:2: example 'a'... has 13 tokens"):
        make_batch(ByteTokenizer(), examples, block_size=4)


def test_missing_file_is_data_error(tmp_path):
    """A missing file is a DataError naming it."""
    with pytest.raises(DataError, match="nothere.jsonl: cannot read file"):
        get_task(f"jsonl:{tmp_path / 'nothere.jsonl'}")


def test_curriculum_moves_toward_the_band():
    """Success above 75% raises difficulty, below 55% lowers it, inside the band keeps it."""
    c = Curriculum("addition", difficulty=3)
    assert c.update(0.9) == 4
    assert c.update(0.65) == 4
    assert c.update(0.2) == 3
    assert c.update(0.0) == 2
    assert c.task().difficulty == 2
    low = Curriculum("copy", difficulty=1)
    assert low.update(0.0) == 1  # clamped at the minimum


def test_make_batch_masks():
    """Rows are BOS prompt answer EOS, right-padded; targets keep answer tokens only (or all
    real tokens with answer_only=False)."""
    tok = ByteTokenizer()
    b = make_batch(tok, [Example("1+2=", "3"), Example("10+20=", "30")], block_size=16)
    assert b.ids[0].tolist() == [256, *b"1+2=", *b"3", 257, 258, 258, 258]
    tgt = b.targets(answer_only=True)
    assert tgt[0].tolist() == [IGNORE_INDEX] * 4 + [ord("3"), 257] + [IGNORE_INDEX] * 3
    assert (b.targets(answer_only=False)[1] != IGNORE_INDEX).all()
    assert b.select(torch.tensor([0])).ids.shape == (1, 7)
    ids, mask = make_prompt_batch(tok, ["ab", "abcd"])
    assert ids[0].tolist() == [258, 258, 256, 97, 98] and mask[0].tolist() == [0, 0, 1, 1, 1]


@pytest.mark.parametrize("line, message", [
    ('{"input": "\\ud800", "output": "b"}', "a string holds an unpaired surrogate"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"input": "a", "output": "b", "n": ' + "9" * 5000 + "}", "a number with too many digits"),
])
def test_jsonl_that_is_not_text_is_a_data_error_at_its_line(tmp_path, line, message):
    path = tmp_path / "d.jsonl"
    path.write_text('{"input": "a", "output": "b"}\n' + line + "\n")
    with pytest.raises(DataError, match=f"^{path}:2: invalid JSON: {message}"):
        read_jsonl(str(path))


def test_jsonl_lines_end_at_lf_only(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"input": "a\u2028b", "output": "c\u0085"}\r\n{"input": "d", "output": "e"}')
    assert read_jsonl(str(path)) == [Example("a\u2028b", "c\u0085"), Example("d", "e")]


def test_running_sum_adds_in_a_random_order_then_gives_the_result():
    """Worked by hand: operands 47, 18, 92, 35 taken in the order 92, 47, 18, 35: 92+47 =
    139, +18 = 157, +35 = 192. Every chain adds each operand once and ends in the sum."""
    import random as _random

    from neural.tasks import BUILTIN_TASKS

    class Fixed(_random.Random):
        def randrange(self, n):
            return next(self.values)

        def sample(self, xs, k):
            return [92, 47, 18, 35]

    rng = Fixed(0)
    rng.values = iter([47, 18, 92, 35])
    ex = BUILTIN_TASKS["running-sum"].make(rng, 4)
    assert ex == Example("47+18+92+35=", "92+47=139+18=157+35=192#192")
    task = get_task("running-sum", size=200)
    assert task.extract(ex.output) == "192" and task.difficulty == 3
    for e in task.train:
        operands = sorted(map(int, e.input[:-1].split("+")))
        steps, total = e.output.split("#")
        added = [int(steps.split("+")[0])] + [int(s.split("=")[0])
                                             for s in steps.split("+")[1:]]
        assert sorted(added) == operands and int(total) == sum(operands)
    firsts = [e.output.split("+")[0] == e.input.split("+")[0] for e in task.train]
    assert 0.2 < sum(firsts) / len(firsts) < 0.5  # a random order: about 1 in 3 starts there


def test_extraction_rules():
    """Marker: the text after the last marker; regex: the last match, its first group if it
    has one; no rule: the whole text; None where the rule finds nothing."""
    from neural.tasks import extractor

    assert extractor("#")("1,2#3#45") == "45"
    assert extractor("#")("123") is None
    assert extractor(None, r"answer: (\d+)")("answer: 1 ... answer: 22.") == "22"
    assert extractor(None, r"\d+")("a1b22c") == "22"
    assert extractor(None, r"\d+")("none") is None
    assert extractor()("as is") == "as is"
    task = get_task("running-sum", size=50)
    assert task.is_correct("1,9#10", "5,9#10") and not task.is_correct("10", "9#10")


def test_jsonl_answer_regex(tmp_path):
    """A jsonl task scores by the regex; a reference it finds nothing in, or a bad regex,
    is a DataError naming the file's line."""
    path = tmp_path / "d.jsonl"
    path.write_text('{"input": "q", "output": "so = 4"}\n{"input": "r", "output": "so = 5"}\n')
    task = get_task(f"jsonl:{path}", answer_regex=r"= (\d+)")
    assert task.answer_regex == r"= (\d+)" and task.is_correct("thus = 4", "so = 4")
    path.write_text('{"input": "q", "output": "so = 4"}\n{"input": "r", "output": "five"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: .*no final answer"):
        get_task(f"jsonl:{path}", answer_regex=r"= (\d+)")
    with pytest.raises(DataError, match="answer regex"):
        get_task(f"jsonl:{path}", answer_regex="(")


def test_a_regex_that_misses_a_builtin_reference_is_an_error():
    with pytest.raises(DataError, match="finds no final answer in the reference"):
        get_task("addition", size=20, answer_regex="x")
    assert get_task("running-sum", size=20, answer_regex=r"#(\d+)").extract("1+2=3#3") == "3"
