"""The command line fuzzed with a fixed seed (issue 16, item 15): settings, flags, damaged run
directories and program files. Whatever a user gives, the answer is exit 0, 1 or 2 with a
message, never a traceback and never `internal error`."""

import random
import shutil

import pytest
from conftest import ROOT

import run_evolution
from evolution.settings import RunConfig, _flat, to_dict

VALUES = ["nan", "inf", "-inf", "-1", "0", "1", "3", "0.5", "1.5", "1e308", str(2**70), "'x'",
          "[1, 2]", "true", "{a = 1}", '""']
PROGRAM_PIECES = ["(", ")", "[", "]", "#(", "#|", "|#", "#;", ";", "\\x41;", '"', "|", "'",
                  "define", "setv", "vote", "16", "sample", "logits", "top-p", "0.9", "1e308",
                  "-1", "nan", "#t", "(layer 9)", "\n", "\r", " ", "λ", "\x00", "True", "a.b"]


def run_main(capsys, *argv) -> tuple[int, str]:
    try:
        code = run_evolution.main([str(a) for a in argv])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    err = capsys.readouterr().err
    assert "internal error" not in err and "Traceback" not in err, (argv, err)
    assert code in (0, 1, 2), (argv, code, err)
    return code, err


@pytest.fixture
def occupied(tmp_path):
    """An --out that refuses a new run only after every setting, file and the model were
    read and checked (it holds other files), so no fuzzed run ever trains."""
    out = tmp_path / "occupied"
    out.mkdir()
    (out / "mine.txt").write_text("not a run\n")
    return out


def test_fuzzed_settings_are_refused_or_accepted_with_a_message(capsys, occupied):
    rng = random.Random(16)
    keys = sorted(_flat(to_dict(RunConfig())))
    for _ in range(120):
        sets = [f"{rng.choice(keys)}={rng.choice(VALUES)}" for _ in range(rng.randint(1, 2))]
        argv = ["evolve", "--out", occupied, "--config", ROOT / "tests" / "tiny.toml"]
        code, err = run_main(capsys, *argv, *[a for s in sets for a in ("--set", s)])
        assert code in (1, 2) and err.strip(), (sets, err)


def test_fuzzed_flags_are_refused_with_a_message(capsys, occupied, tmp_path):
    rng = random.Random(17)
    afile = tmp_path / "afile"
    afile.write_text("x\n")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    flags = {
        "--generations": ["-1", "0", "x", str(2**70)],
        "--population": ["0", "-3", "1"],
        "--train-steps": ["-1", "0"],
        "--seed": ["-1", str(2**64), "7"],
        "--task": ["nosuch", "jsonl:/nonexistent", f"jsonl:{afile}", "text:/dev/null",
                   "reverse", f"text:{tmp_path}"],
        "--mode": ["phase1", "x"],
        "--config": ["/dev/null", str(tmp_path), str(afile), "/nonexistent.toml"],
        "--seeds": [str(afile), "/dev/zero", str(dangling), str(ROOT / "programs")],
        "--model-from": [str(tmp_path), str(afile)],
    }
    outs = [occupied, "/proc/x", afile / "sub", dangling / "sub", tmp_path / ("n" * 300)]
    for _ in range(60):
        chosen = rng.sample(sorted(flags), rng.randint(1, 3))
        argv = ["evolve", "--out", rng.choice(outs)]
        for f in chosen:
            argv += [f, rng.choice(flags[f])]
        code, err = run_main(capsys, *argv)
        assert code in (1, 2) and err.strip(), (argv, err)


def _damage(rng: random.Random, path):
    kind = rng.choice(["truncate", "flip", "delete", "garbage", "empty", "dir"])
    if kind == "delete":
        path.unlink()
    elif kind == "dir":
        path.unlink()
        path.mkdir()
    else:
        data = bytearray(path.read_bytes())
        if kind == "truncate":
            data = data[: rng.randrange(len(data) + 1)]
        elif kind == "flip" and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == "garbage":
            data = bytearray(rng.randbytes(rng.randint(1, 64)))
        else:
            data = bytearray()
        path.write_bytes(bytes(data))
    return kind


def test_damaged_run_directories_are_read_with_a_message(capsys, tiny_run, tmp_path):
    rng = random.Random(18)
    program = ROOT / "programs" / "greedy.scm"
    for k in range(24):
        run = tmp_path / f"run{k}"
        shutil.copytree(tiny_run[0], run)
        files = sorted(p for p in run.rglob("*") if p.is_file() and p.name != ".lock")
        target = rng.choice(files)
        _damage(rng, target)
        for argv in (["show", run], ["lineage", run], ["eval", program, "--run", run],
                     ["trace", program, "--run", run, "--prompt", "12+34="]):
            run_main(capsys, *argv)
        if k % 3 == 0:  # resuming a finished run recomputes its report: a few of them
            run_main(capsys, "evolve", "--resume", run)
        if k % 4 == 1:  # as does the HTML page
            run_main(capsys, "report", run)
        shutil.rmtree(run)


def test_fuzzed_program_files_are_checked_and_formatted_with_a_message(capsys, tmp_path):
    rng = random.Random(19)
    shipped = sorted((ROOT / "programs").iterdir())
    for k in range(150):
        if k % 2:
            text = rng.choice(shipped).read_text()
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(text) + 1)
                text = text[:i] + rng.choice(PROGRAM_PIECES) + text[i + rng.randint(0, 3):]
        else:
            text = " ".join(rng.choice(PROGRAM_PIECES) for _ in range(rng.randint(0, 30)))
        path = tmp_path / f"p{k}{rng.choice(['.scm', '.hy'])}"
        path.write_text(text, encoding="utf-8")
        for argv in (["check", path], ["fmt", path], ["fmt", "--to", "hy", path],
                     ["fmt", "--write", "--to", "scheme", path], ["export", path, "--hf"],
                     ["simplify", path]):
            run_main(capsys, *argv)
