"""The registry is the single source of truth: docs and the checker follow it."""

from conftest import ROOT  # noqa: F401  (path set-up)

from engine_dsl import PRIMITIVES, Apply, read, walk
from engine_dsl.docs import language_markdown
from engine_dsl.registry import Limits


def test_language_doc_is_generated_from_the_registry():
    """docs/LANGUAGE.md is what the registry generates (python -m engine_dsl.docs)."""
    assert (ROOT / "docs" / "LANGUAGE.md").read_text(encoding="utf-8") == language_markdown()


def test_every_primitive_is_documented():
    doc = language_markdown()
    assert all(f"`{p.usage()}`" in doc for p in PRIMITIVES.values())


def test_every_primitive_is_known_to_the_checker():
    """Each primitive applied to arguments of its slot types checks (one synthetic program each)."""
    sample = {"Logits": "logits", "Real": "0.5", "Count": "2", "Weights": "#(0.0 1.0)",
              "Bool": "#t", "Decoder": "(greedy logits)"}
    wrap = {"Logits": "(greedy {})", "Real": "(greedy (if (< {} 0.5) logits logits))",
            "Bool": "(greedy (if {} logits logits))", "Decoder": "{}"}
    for p in PRIMITIVES.values():
        args = " ".join("1.5" if a.domain is not None and not a.domain.contains(0.5)
                        else sample[str(a.type)] for a in p.args)
        form = f"({p.name} {args})" if p.args else p.name
        (d,) = read(f"(define x {wrap[str(p.returns)].format(form)})", "x.scm")
        assert p.name in {n.op for n in walk(d.body) if isinstance(n, Apply)}


def test_limits_are_plain_config_values():
    assert set(Limits.field_names()) >= {"max_size", "max_height", "max_votes"}
