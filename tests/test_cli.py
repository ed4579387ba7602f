"""The command line's check and fmt (DESIGN §5): exit codes 0 / 1 / 2, never a traceback."""

import subprocess
import sys

import pytest
from conftest import ROOT

import run_evolution
from engine_dsl import read

PROGRAMS = sorted((ROOT / "programs").iterdir())


def test_shipped_programs_check():
    assert run_evolution.main(["check", *map(str, PROGRAMS)]) == 0


def test_at_least_eight_seed_programs_cover_every_family_and_hy():
    from engine_dsl import PRIMITIVES, Apply, walk
    from engine_dsl.files import read_file

    assert len(PROGRAMS) >= 8 and any(p.suffix == ".hy" for p in PROGRAMS)
    used = {n.op for p in PROGRAMS for d in read_file(p) for n in walk(d.body)
            if isinstance(n, Apply)}
    assert used == set(PRIMITIVES), set(PRIMITIVES) - used


@pytest.mark.parametrize("path", PROGRAMS, ids=[p.name for p in PROGRAMS])
def test_fmt_is_a_no_op_on_shipped_programs(path, capsys):
    assert run_evolution.main(["fmt", str(path)]) == 0
    assert capsys.readouterr().out == path.read_text()


def test_fmt_write_then_again_changes_nothing(tmp_path):
    src = tmp_path / "p.scm"
    src.write_text(";; keep me\n(define   a\n (sample   (top-p logits .9)))\n")
    assert run_evolution.main(["fmt", "--write", str(src)]) == 0
    once = src.read_text()
    assert once == ";; keep me\n(define a (sample (top-p logits 0.9)))\n"
    assert run_evolution.main(["fmt", "--write", str(src)]) == 0
    assert src.read_text() == once


def test_fmt_to_hy_writes_a_sibling_that_reads_back_the_same(tmp_path):
    src = tmp_path / "p.scm"
    src.write_text((ROOT / "programs" / "confidence.scm").read_text())
    assert run_evolution.main(["fmt", "--write", "--to", "hy", str(src)]) == 0
    hy = tmp_path / "p.hy"
    assert read(hy.read_text(), "p.hy") == read(src.read_text(), "p.scm")


def test_check_error_leaves_file_untouched_and_fmt_write_refuses(tmp_path, capsys):
    src = tmp_path / "bad.scm"
    src.write_text("(define a (greedy logitz))\n")
    assert run_evolution.main(["fmt", "--write", str(src)]) == 1
    assert src.read_text() == "(define a (greedy logitz))\n"
    assert "bad.scm:1:19: error:" in capsys.readouterr().err


def test_missing_file_is_a_one_line_error(tmp_path, capsys):
    assert run_evolution.main(["check", str(tmp_path / "nope.scm")]) == 1
    err = capsys.readouterr().err
    assert "cannot read file" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["check", ""], ["export", "", "--hf"],
                                  ["evolve", "--seeds", "", "--generations", "0"]])
def test_an_empty_file_name_is_refused_not_read_as_the_current_directory(argv, capsys):
    assert run_evolution.main(argv) == 1
    err = capsys.readouterr().err
    assert "an empty file name" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("flag", ["--out", "--resume", "--config", "--model-from"])
def test_an_empty_path_flag_is_a_usage_error_not_the_default(flag, tmp_path, monkeypatch,
                                                             capsys):
    monkeypatch.chdir(tmp_path)  # `--out ''` once made runs/TASK-seedK here
    with pytest.raises(SystemExit) as info:
        run_evolution.main(["evolve", flag, ""])
    assert info.value.code == 2
    assert f"{flag}: expected a path, found ''" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_usage_errors_exit_2():
    proc = subprocess.run([sys.executable, str(ROOT / "run_evolution.py"), "fmt", "--to", "c"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_check_does_not_import_torch():
    """The reading/checking half starts fast: check never imports torch."""
    code = ("import sys, run_evolution; run_evolution.main(['check', 'programs/nucleus.scm']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_export_to_each_engine_or_a_one_line_refusal(tmp_path, capsys):
    src = tmp_path / "p.scm"
    src.write_text("(define a (sample (top-p (top-k (temperature logits 0.7) 40) 0.9)))\n"
                   "(define b (vote 3 (sample logits)))\n")
    assert run_evolution.main(["export", str(src), "--to", "llama.cpp", "--def", "a"]) == 0
    assert capsys.readouterr().out.startswith("--samplers 'temperature;top_k;top_p' --temp 0.7")
    assert run_evolution.main(["export", str(src), "--to", "ollama", "--def", "a"]) == 0
    assert "PARAMETER top_k 40" in capsys.readouterr().out.splitlines()
    assert run_evolution.main(["export", str(src), "--to", "vllm", "--def", "b"]) == 1
    err = capsys.readouterr().err
    assert "p.scm:2:" in err and "'vote' decodes several answers" in err
    with pytest.raises(SystemExit) as e:
        run_evolution.main(["export", str(src), "--to", "nowhere"])
    assert e.value.code == 2
