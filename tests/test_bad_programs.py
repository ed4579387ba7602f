"""Every file in tests/bad_programs/ is refused by `check` with exit 1, the exact line:col and
a message fragment, both written in the file's first line: `;; expect: LINE:COL: FRAGMENT`."""

from pathlib import Path

import pytest

import run_evolution

BAD = Path(__file__).parent / "bad_programs"
FILES = sorted(BAD.iterdir())


def expectation(path: Path) -> tuple[str, str]:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    where, fragment = first.removeprefix(";; expect: ").split(": ", 1)
    return where, fragment


def test_there_are_at_least_forty_bad_programs():
    assert len(FILES) >= 40


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_bad_program_is_refused_with_position_and_message(path, capsys):
    where, fragment = expectation(path)
    code = run_evolution.main(["check", str(path)])
    err = capsys.readouterr().err
    assert code == 1
    first_line = err.splitlines()[0]
    assert first_line.startswith(f"{path}:{where}: error: "), err
    assert fragment in first_line, err
    assert "Traceback" not in err
    # the offending line is quoted with a caret under the column; further errors of the
    # same file (check reports every one) follow in the same three-line form
    col = int(where.split(":")[1])
    lines = err.splitlines()
    assert len(lines) % 3 == 0 and lines[2] == "  " + " " * (col - 1) + "^", err
    assert all(ln.startswith(f"{path}:") for ln in lines[::3]), err
