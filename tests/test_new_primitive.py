"""Adding a primitive is one entry in one place (DESIGN §1).

The script below registers two primitives the language does not have, each one entry with its
kernels and nothing else: `count-penalty`, which reads how often each token was generated,
and `drop-top`, which reads per-row random numbers from the common random numbers. It then
reads, checks, prints, decodes, tunes, mutates, simplifies, traces and documents programs
that use them, and runs the registry-driven property tests (invariants, relaxed gradients,
the relaxed-to-exact limit) with them in the registry. It runs in a fresh interpreter:
primitives are registered before `evolution` builds its DEAP primitive set.
"""

import os
import subprocess
import sys

from conftest import ROOT

SCRIPT = r'''
import random
import sys

import pytest
import torch

import engine_dsl
from engine_dsl.primitives._torch import BIG, NEG_INF, apply_soft_mask, col, finite_only
from engine_dsl.registry import PRIMITIVES, Arg, entry, register
from engine_dsl.types import NONNEGATIVE, PROBABILITY, Type

L, R = Type.LOGITS, Type.REAL


# --- the two entries, with their kernels: all that is added -----------------------------------

def count_penalty(ctx, x, a):
    counts = ctx.counts(x.size(-1), x.device).to(x.dtype)
    return finite_only(lambda v: v - col(a, v) * counts, x)


def _top_of_two(x):
    """(B, V) mask of each row's top token, where at least one other token survives."""
    two = torch.isfinite(x).sum(-1, keepdim=True) >= 2
    top = torch.zeros_like(x, dtype=torch.bool).scatter(1, x.argmax(-1, keepdim=True), True)
    return top & two


def drop_top_exact(ctx, x, p):
    u = ctx.uniform().to(device=x.device, dtype=x.dtype)[:, None]
    return x.masked_fill(_top_of_two(x) & (u < col(p, x)), NEG_INF)


def drop_top_relaxed(ctx, x, p):
    u = ctx.uniform().to(device=x.device, dtype=x.dtype)[:, None]
    keep = (-ctx.sharpness * (col(p, x) - u)).expand_as(x)  # log-odds of keeping the top
    return apply_soft_mask(x, torch.where(_top_of_two(x), keep, torch.full_like(x, BIG)))


register(entry("count-penalty", [Arg("L", L), Arg("a", R, NONNEGATIVE, test_range=(0.0, 3.0))],
               L, "transform", "scores minus a x how often the token was generated",
               exact=count_penalty, reads={"generated"}, neutral=0.0, shift="equivariant"))
register(entry("drop-top", [Arg("L", L), Arg("p", R, PROBABILITY)], L, "transform",
               "with probability p per row and step, drop the top token (if another survives)",
               exact=drop_top_exact, relaxed=drop_top_relaxed, reads={"uniform"}))

# --- read, check, print ------------------------------------------------------------------------
TEXT = "(define both (sample (drop-top (count-penalty logits 0.5) 0.3)))"
(d,) = engine_dsl.read(TEXT, "x.scm")
assert engine_dsl.to_scheme([d]).strip() == TEXT
assert engine_dsl.read(engine_dsl.to_hy([d]), "x.hy")[0].body == d.body
with pytest.raises(engine_dsl.DslError,
                   match=r"b\.scm:1:41: error: a of count-penalty must be >= 0"):
    engine_dsl.read("(define b (sample (count-penalty logits -1.0)))", "b.scm")
with pytest.raises(engine_dsl.DslError, match="drop-top"):
    engine_dsl.read("(define b (sample (drop-top logits)))", "b.scm")

# --- decode ------------------------------------------------------------------------------------
from neural import GPT, ByteTokenizer  # noqa: E402
from neural.model import GPTConfig  # noqa: E402

torch.manual_seed(0)
model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64)).eval()
tok = ByteTokenizer()
prompts = [tok.encode(s, bos=True) for s in ("12+34=", "7+8=", "hello")]


def run(text, **kw):
    return engine_dsl.decode(model, engine_dsl.read_expr(text, Type.DECODER), prompts,
                             max_new_tokens=8, seed=3, **kw)


a = run("(sample (drop-top (count-penalty logits 0.5) 0.3))")
assert [x.tokens for x in a] == [x.tokens for x in run(
    "(sample (drop-top (count-penalty logits 0.5) 0.3))", share=False)]  # reference path
for ans in run("(sample (count-penalty logits 50.0))"):  # a repeat costs e^-50
    assert len(set(ans.tokens)) == len(ans.tokens), ans.tokens
greedy = run("(greedy logits)")
second = run("(greedy (drop-top logits 0.999999))")  # the top token always dropped
assert all(s.tokens[0] != g.tokens[0] for s, g in zip(second, greedy))
never = run("(greedy (drop-top logits 0.000001))")
assert [x.tokens for x in never] == [x.tokens for x in greedy]

# --- tune --------------------------------------------------------------------------------------
g = torch.Generator().manual_seed(0)
n, V = 64, 259
batch = engine_dsl.TuneBatch(
    logits=torch.randn(n, V, generator=g), targets=torch.randint(0, V, (n,), generator=g),
    generated=torch.randint(0, V, (n, 6), generator=g),
    uniform=lambda stream: torch.rand(n, generator=torch.Generator().manual_seed(stream),
                                      dtype=torch.float64))
result = engine_dsl.tune(d, batch, steps=5, lr=0.1)
assert all(torch.isfinite(torch.tensor(result.losses))), result.losses
before = [c.value for c in engine_dsl.tunable_constants(d.body)]
after = [c.value for c in engine_dsl.tunable_constants(result.program.body)]
assert all(x != y for x, y in zip(before, after)), (before, after)

# --- mutate, generate (the DEAP primitive set is built now) --------------------------------------
from evolution.bridge import PSET, SearchSpace, individual, to_expr, to_tree  # noqa: E402
from evolution.random_trees import ConstantSampler, random_individual  # noqa: E402
from evolution.simplify import simplify  # noqa: E402
from evolution.variation import mut_constant, mut_node_replacement  # noqa: E402

assert {"count-penalty", "drop-top"} <= set(PSET.mapping)
assert to_expr(to_tree(d.body)) == d.body
rng = random.Random(0)
space = SearchSpace(n_layer=2, n_head=2, vocab_size=V)
sampler = ConstantSampler(space)
ops = set()
for _ in range(400):
    ops |= {n.op for n in engine_dsl.walk(to_expr(random_individual(rng, sampler, (2, 4))))
            if isinstance(n, engine_dsl.Apply)}
assert {"count-penalty", "drop-top"} <= ops, ops
(mutant,) = mut_constant(individual(d.body), rng, mode="all")
assert [c.value for c in engine_dsl.tunable_constants(to_expr(mutant))] != before
replaced = set()
for _ in range(200):
    (m,) = mut_node_replacement(individual(engine_dsl.read_expr("(sample (top-p logits 0.5))",
                                                                Type.DECODER)), rng, sampler)
    replaced |= {n.op for n in engine_dsl.walk(to_expr(m)) if isinstance(n, engine_dsl.Apply)}
assert "drop-top" in replaced or "count-penalty" in replaced, replaced
with pytest.raises(RuntimeError, match="before importing"):
    register(entry("late", [Arg("L", L)], L, "transform", "too late", exact=count_penalty))

# --- simplify ----------------------------------------------------------------------------------
e = engine_dsl.read_expr("(sample (count-penalty (if #t logits logits) 0.0))", Type.DECODER)
assert engine_dsl.expr_to_scheme(simplify(e, space)) == "(sample logits)"

# --- trace -------------------------------------------------------------------------------------
from evolution.views import trace_decoding  # noqa: E402

shown = trace_decoding(model, tok, d, "12+", seed=3, max_new_tokens=3)
assert "(count-penalty logits 0.5)" in shown and "chosen" in shown, shown
first = shown.split("chosen ")[1].split(" (p")[0]
decoded = engine_dsl.decode(model, d, [tok.encode("12+", bos=True)], max_new_tokens=3, seed=3)
assert first == repr(tok.decode(decoded[0].tokens[:1])), (first, decoded)

# --- document ----------------------------------------------------------------------------------
from engine_dsl.docs import language_markdown  # noqa: E402

doc = language_markdown()
assert "`(count-penalty L a)`" in doc and "`(drop-top L p)`" in doc

# --- the registry-driven property tests cover them ---------------------------------------------
from hypothesis import settings  # noqa: E402

settings.register_profile("proof", deadline=None)
settings.load_profile("proof")
sys.path.insert(0, "tests")
sys.path.insert(0, "tests/semantics")
import test_sem_relaxed as laws  # noqa: E402

for name in ("count-penalty", "drop-top"):
    programs = [p for p in laws.GRAD_PROGRAMS if name in engine_dsl.expr_to_scheme(p)]
    assert programs, name
    for p in programs:
        laws.test_every_constant_gets_a_finite_nonzero_gradient(p)
        laws.test_gradients_stay_finite_with_excluded_tokens(p)
        laws.test_gradients_agree_with_finite_differences(p)
    for p in [p for p in laws.LIMIT_PROGRAMS if name in engine_dsl.expr_to_scheme(p)]:
        laws.test_relaxed_tends_to_exact_as_sharpness_grows(p)
laws.test_invariants_of_random_programs()
laws.test_first_argument_exclusions_stay_excluded()
print("ok")
'''


def test_a_primitive_added_in_one_entry_works_everywhere():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("HYPOTHESIS_PROFILE", None)  # the property tests at their everyday size
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-4000:]
