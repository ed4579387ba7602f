"""Reading, checking and printing: the laws of DESIGN §2 'Tooling contract'."""

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import LANGUAGE_EXAMPLES, programs, sexpr_text

import engine_dsl
from engine_dsl import DslError, read, to_hy, to_scheme
from engine_dsl.reader import read_datums

ROOT = Path(__file__).resolve().parent.parent


@settings(max_examples=LANGUAGE_EXAMPLES)
@given(programs())
def test_scheme_round_trip(p):
    """read(to_scheme(p)) == p, and printing is a fixed point."""
    text = to_scheme(p)
    again = read(text, "p.scm")
    assert again == p
    assert to_scheme(again) == text


@settings(max_examples=LANGUAGE_EXAMPLES)
@given(programs())
def test_hy_round_trip(p):
    """read(to_hy(p)) == p through Hy's reader, and Hy printing is a fixed point."""
    text = to_hy(p)
    again = read(text, "p.hy")
    assert again == p
    assert to_hy(again) == text


@settings(max_examples=LANGUAGE_EXAMPLES)
@given(st.one_of(sexpr_text(), st.text(max_size=60)), st.sampled_from(["t.scm", "t.hy"]))
def test_reading_any_text_raises_nothing_but_dsl_error(text, filename):
    """Whatever the text, read() returns a program or raises DslError with a position."""
    try:
        read(text, filename)
    except DslError as e:
        assert e.filename == filename and e.line >= 1 and e.col >= 1


@settings(max_examples=LANGUAGE_EXAMPLES)
@given(st.binary(max_size=40))
def test_reading_any_bytes_raises_nothing_but_dsl_error(data):
    try:
        read(data, "b.scm")
    except DslError:
        pass


@pytest.mark.parametrize(
    "text, kinds",
    [
        ("#| a #| nested |# still comment |# x", ["symbol"]),
        ("#;(skipped datum) y", ["symbol"]),
        ("#; #; a b c", ["symbol"]),
        ("[a b]", ["list"]),
        ('"tab\\t quote\\" newline\\n \\x41; end"', ["string"]),
        ("#\\a #\\space #\\x41 #\\( #\\;", ["char"] * 5),
        ("#t #f #true #false", ["bool"] * 4),
        ("1 -2 +3 .5 -.5e3 1e10 6.02E+23 1/2 #x1F #b101 #o17 #e1.5 #i3 +inf.0 -nan.0",
         ["number"] * 15),
        ("#(1 2 (3))", ["vector"]),
        ("'a `(b ,c ,@d)", ["quote", "quote"]),
        ("+ - ... ->x <=? a.b |two words| \\x41;bc", ["symbol"] * 8),
        ("; line comment\nx ; trailing", ["symbol"]),
        ("(a . b)", ["other"]),
        ("#u8(1 2)", ["other"]),
    ],
)
def test_reader_accepts_r7rs_lexical_syntax(text, kinds):
    datums, _ = read_datums(text, "r.scm")
    assert [d.kind for d in datums] == kinds


def test_numbers_read_to_their_values():
    datums, _ = read_datums("1 .5 -.5e3 1e10 1/2 #x1F #b101 #e1.5 #i3 6/3", "n.scm")
    assert [d.value for d in datums] == [1, 0.5, -500.0, 1e10, 0.5, 31, 5, 1.5, 3.0, 2]


def test_positions_are_one_based_line_and_column():
    (d,), _ = read_datums("\n\n   (define a\n  (greedy logits))", "p.scm")
    assert (d.span.line, d.span.col) == (3, 4)
    body = d.value[2]
    assert (body.span.line, body.span.col) == (4, 3)


def test_comment_block_above_a_definition_is_kept():
    text = (";; id: 7\n;; parents: 3 5\n(define a (greedy logits))\n\n"
            "; second\n(define b (sample logits))\n")
    defs = read(text, "c.scm")
    assert defs[0].comments == (";; id: 7", ";; parents: 3 5")
    assert defs[1].comments == ("; second",)
    assert to_scheme(defs) == text


def test_floats_print_so_they_read_back_exactly():
    for x in [0.1, 1 / 3, 1e-300, 123456789.123456789, 5e-324, 0.9999999999999999]:
        (d,) = read(f"(define a (sample (temperature logits {x!r})))", "f.scm")
        (again,) = read(to_scheme((d,)), "f.scm")
        assert again.body.args[0].args[1].value == x


def test_integer_in_real_slot_reads_as_real():
    (d,) = read("(define a (sample (temperature logits 1)))", "i.scm")
    assert d.body.args[0].args[1] == engine_dsl.RealConst(1.0)


def test_fixed_constants_are_not_tunable():
    (d,) = read("(define a (sample (top-p (temperature logits (fixed 0.7)) 0.9)))", "x.scm")
    assert [c.value for c in engine_dsl.tunable_constants(d.body)] == [0.9]


def test_deep_nesting_is_an_error_not_a_crash():
    n = 5000
    text = "(define a (greedy " + "(temperature " * n + "logits" + " 1.0)" * n + "))"
    for name in ("deep.scm", "deep.hy"):
        with pytest.raises(DslError, match="nesting deeper"):
            read(text.replace("define", "setv") if name.endswith(".hy") else text, name)


def test_hy_with_side_effects_only_produces_an_error(tmp_path):
    """A Hy file that would run os.system is read, never evaluated: nothing happens."""
    marker = tmp_path / "pwned"
    source = tmp_path / "evil.hy"
    source.write_text(f'(import os)\n(os.system "touch {marker}")\n'
                      f'(defreader x (os.system "touch {marker}"))\n#x 1\n')
    proc = subprocess.run([sys.executable, str(ROOT / "run_evolution.py"), "check", str(source)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_read_expr_reads_one_logits_expression():
    e = engine_dsl.read_expr("(top-p (temperature logits 0.8) 0.9)")
    assert e.op == "top-p" and engine_dsl.type_of(e) is engine_dsl.Type.LOGITS
    with pytest.raises(DslError, match="expected Logits"):
        engine_dsl.read_expr("(greedy logits)")
