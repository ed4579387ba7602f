"""Reading, checking and formatting files as a hostile user would (issue 16): nothing lost,
nothing half-said, reading linear and bounded."""

import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from hypothesis import given
from hypothesis import strategies as st

import run_evolution
from engine_dsl import DslError, read
from engine_dsl.files import read_file
from engine_dsl.reader import MAX_NESTING, MAX_TOKEN, read_datums

GREEDY = "(define a (greedy logits))"


def fmt_write(path, *extra) -> int:
    return run_evolution.main(["fmt", "--write", *extra, str(path)])


@pytest.mark.parametrize("text", [";; only a comment\n", "", "  \n\n", "#| block |#\n"])
def test_a_file_without_definitions_is_an_error_and_fmt_keeps_it(tmp_path, capsys, text):
    src = tmp_path / "p.scm"
    src.write_text(text)
    for command in (["check"], ["fmt", "--write"], ["export", "--hf"]):
        assert run_evolution.main([*command, str(src)]) == 1
        assert f"{src}:1:1: error: no definitions" in capsys.readouterr().err
    assert src.read_text() == text


@pytest.mark.parametrize("newline", ["\r", "\r\n"])
def test_cr_and_crlf_end_lines(tmp_path, capsys, newline):
    src = tmp_path / "p.scm"
    src.write_bytes(f";; x{newline}(define a{newline}(greedy logits){newline}".encode())
    assert run_evolution.main(["check", str(src)]) == 1
    assert f"{src}:2:1: error: unclosed '('" in capsys.readouterr().err
    src.write_bytes(f";; x{newline}{GREEDY}{newline}; y{newline}".encode())
    (d,) = read_file(src)
    assert d.comments == (";; x", "; y")
    assert fmt_write(src) == 0
    assert src.read_text() == f";; x\n; y\n{GREEDY}\n"


def test_block_and_datum_comments_are_kept_as_line_comments(tmp_path):
    src = tmp_path / "p.scm"
    src.write_text("#| provenance:\n   hand-written |#\n"
                   "(define a #;(top-k logits 3) (greedy logits))\n")
    assert fmt_write(src) == 0
    once = src.read_text()
    assert once == ("; #| provenance:\n;    hand-written |#\n; #;(top-k logits 3)\n"
                    f"{GREEDY}\n")
    assert fmt_write(src) == 0 and src.read_text() == once


def test_a_hex_escape_in_a_name_starts_no_comment(tmp_path):
    src = tmp_path / "p.scm"
    src.write_text("(define a\\x41; (greedy logits))\n")
    assert fmt_write(src) == 0
    assert src.read_text() == "(define a\\x41; (greedy logits))\n"
    deep = "(define a\\x41; (greedy " + "(" * 100_000 + "logits" + ")" * 100_002 + "\n"
    with pytest.raises(DslError, match=f"nesting deeper than {MAX_NESTING}"):
        read(deep, "d.scm")


@pytest.mark.parametrize("name, to", [("True", "hy"), ("a.b", "hy"), ("|a b|", "hy"),
                                      ("1+", "scheme"), ("a,b", "scheme")])
def test_fmt_to_a_dialect_that_cannot_read_a_name_back_refuses(tmp_path, capsys, name, to):
    src = tmp_path / ("p.scm" if to == "hy" else "p.hy")
    define = "define" if to == "hy" else "setv"
    src.write_text(f"({define} {name} (greedy logits))\n")
    assert run_evolution.main(["fmt", "--to", to, str(src)]) == 1
    assert f"'{name}' cannot be written in" in capsys.readouterr().err
    assert fmt_write(src, "--to", to) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_fmt_write_never_replaces_a_different_sibling(tmp_path, capsys):
    hy, scm = tmp_path / "x.hy", tmp_path / "x.scm"
    hy.write_text("(setv a (greedy logits))\n")
    scm.write_text(";; mine, by hand\n(define b (sample logits))\n")
    assert fmt_write(hy, "--to", "scheme") == 1
    assert "x.scm already exists and differs" in capsys.readouterr().err
    assert scm.read_text() == ";; mine, by hand\n(define b (sample logits))\n"


def test_fmt_write_keeps_the_mode_and_writes_through_a_symlink(tmp_path):
    real = tmp_path / "real.scm"
    real.write_text("(define   a (greedy logits))\n")
    real.chmod(0o640)
    link = tmp_path / "link.scm"
    link.symlink_to(real)
    assert fmt_write(link) == 0
    assert link.is_symlink() and real.read_text() == f"{GREEDY}\n"
    assert real.stat().st_mode & 0o777 == 0o640
    long_name = tmp_path / ("n" * 251 + ".scm")  # as long as a file name may be
    long_name.write_text("(define   a (greedy logits))\n")
    assert fmt_write(long_name) == 0 and long_name.read_text() == f"{GREEDY}\n"


def test_caps_apply_while_reading_and_messages_quote_a_window(tmp_path):
    with pytest.raises(DslError, match=f"a token longer than {MAX_TOKEN} characters") as e:
        read("(define " + "a" * 3_000_000 + " (greedy logits))", "p.scm")
    assert len(str(e.value)) < 600
    with pytest.raises(DslError, match=r"p.scm:1:30: error: more than 4096 items in one form"):
        read("(define a (greedy (layer-mix #(" + "0 " * 1_000_000 + "))))", "p.scm")
    for special in ("/dev/zero", "/dev/null"):
        with pytest.raises(DslError, match="not a regular file"):
            read_file(special)
    fifo = tmp_path / "fifo.scm"
    os.mkfifo(fifo)
    with pytest.raises(DslError, match="not a regular file"):
        read_file(fifo)


def test_reading_is_linear_in_the_number_of_comment_lines():
    def seconds(n):
        text = ";c\n" * n + GREEDY
        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            read(text, "p.scm")
            best = min(best, time.process_time() - t0)
        return best

    # quadratic reading (the old scanner) takes 64x as long for 8x the lines, linear 8x
    assert seconds(80_000) < 24 * seconds(10_000)


def test_check_piped_into_head_still_exits_with_the_checks_status(tmp_path):
    bad = tmp_path / "bad.scm"
    bad.write_text("(define a (greedy logitz))\n")
    files = " ".join([str(ROOT / "programs" / "greedy.scm")] * 50 + [str(bad)])
    proc = subprocess.run(f"{sys.executable} run_evolution.py check {files} | head -n 1; "
                          "exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash",
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "bad.scm:1:19: error: unknown name 'logitz'" in proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


@given(st.text(alphabet="()[]#|;\\x41 \n\r\"'a.", max_size=40))
def test_reading_any_text_is_a_program_or_a_positioned_error(text):
    try:
        read(text, "p.scm")
    except DslError as e:
        assert e.line >= 1 and e.col >= 1


@given(st.lists(st.sampled_from(["; c", "#| b |#", "#;(x)", GREEDY, "(define b (sample logits))"]),
                min_size=1, max_size=6))
def test_printing_keeps_every_comment(parts):
    text = "\n".join(parts) + "\n"
    try:
        defs = read(text, "p.scm")
    except DslError:
        return  # two definitions of one name
    kept = [c for d in defs for c in d.comments]
    assert len(kept) == sum(p in ("; c", "#| b |#", "#;(x)") for p in parts) if defs else True
    _, comments = read_datums(text, "p.scm")
    assert [c.text for c in comments] == [{"; c": "; c", "#| b |#": "; #| b |#",
                                           "#;(x)": "; #;(x)"}[p] for p in parts
                                          if p in ("; c", "#| b |#", "#;(x)")]


def test_nested_vote_and_best_of_counts_are_capped_by_their_product():
    """The decodes per answer multiply: 16^5 passed `check` and took 24 GB."""
    with pytest.raises(DslError, match=r"v.scm:1:26: error: nested counts multiply to "
                                       r"16 x 16 = 256, which exceeds the cap max_votes = 16"):
        read("(define v (vote 16 (vote 16 (vote 16 (vote 16 (vote 16 (sample logits)))))))",
             "v.scm")
    with pytest.raises(DslError, match="4 x 5 = 20"):
        read("(define x (vote 4 (best-of 5 (sample logits))))", "x.scm")
    (d,) = read("(define y (best-of 4 (vote 4 (sample logits))))", "y.scm")
    assert d.name == "y"


def test_programs_the_gp_builds_are_within_the_product_cap():
    import random

    from engine_dsl import Limits, to_scheme
    from engine_dsl.checker import within_caps
    from evolution.bridge import SearchSpace, to_expr
    from evolution.config import EvolutionConfig
    from evolution.population import build_toolbox, mutate
    from evolution.random_trees import ConstantSampler, random_individual

    rng = random.Random(0)
    space = SearchSpace(2, 2, 259)
    sampler, limits = ConstantSampler(space), Limits()
    toolbox = build_toolbox(EvolutionConfig(population_size=4), space)
    for _ in range(200):
        ind = random_individual(rng, sampler, (2, 6))
        parent = to_expr(ind)  # operators change their argument in place (the GP clones first)
        child, _ = mutate(ind, toolbox, rng)
        for e in (parent, to_expr(child)):
            assert within_caps(e, limits)
            read(to_scheme([engine_dsl_definition(e)]), "p.scm")


def engine_dsl_definition(e):
    from engine_dsl import Definition

    return Definition("p", e)


@pytest.mark.parametrize("name", ["p.scm", "p.hy"])
def test_a_byte_order_mark_is_read_past_and_fmt_drops_it(tmp_path, name):
    src = tmp_path / name
    text = GREEDY if name.endswith(".scm") else "(setv a (greedy logits))"
    src.write_bytes(b"\xef\xbb\xbf;; c\n" + text.encode() + b"\n")
    assert read_file(src) == read(f";; c\n{text}\n", name)
    assert fmt_write(src) == 0
    assert src.read_bytes() == f";; c\n{text}\n".encode()


def test_a_quoted_line_shows_control_characters_as_question_marks(tmp_path, capsys):
    src = tmp_path / "p.scm"
    src.write_bytes(b"(define a (greedy\x1b[2J\x07 logits))\n")
    assert run_evolution.main(["check", str(src)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[1:] == ["  (define a (greedy?[2J? logits))", " " * 19 + "^"]


def test_a_write_that_fails_names_the_file_not_its_temp_file(tmp_path):
    """A refused write (here: report.json is a directory) names the file written, not its
    temp file, and leaves no temp file beside it."""
    from engine_dsl.files import atomic_write

    target = tmp_path / "report.json"
    target.mkdir()
    with pytest.raises(IsADirectoryError) as info:
        atomic_write(target, "{}")
    assert info.value.filename == str(target)
    assert list(tmp_path.iterdir()) == [target]
