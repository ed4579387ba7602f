"""Benchmark: the samplers practitioners tune, ours (exact mode) against their references.

    .venv/bin/python bench/samplers.py [--repeats 50] [--threads 1] [--write]

Each primitive alone at [256 x 256] and [64 x 50257], penalties and DRY with a 128-token
history (64 of them the answer), against: transformers' NoRepeatNGramLogitsProcessor; ports
of vLLM's `apply_penalties` (torch, as vLLM runs it); ports of llama.cpp's
`llama_sampler_dry_apply`, `llama_sample_xtc_apply` and `llama_sampler_mirostat_v2_apply`
(the test suite's, row by row as llama.cpp works). Results are checked equal first, then
timed interleaved (median); goal: ratio <= 0.5. `--write` replaces its section
of docs/BENCHMARKS.md. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "semantics"),
                str(ROOT / "bench")]

from primitives import _median_seconds, write_section  # noqa: E402
from test_sem_dry import as_pairs, llama_dry  # noqa: E402
from test_sem_penalties import vllm_apply_penalties  # noqa: E402

import engine_dsl  # noqa: E402
from engine_dsl.primitives.penalties import Breakers  # noqa: E402
from engine_dsl.semantics import RowState  # noqa: E402

SHAPES = [(256, 256), (64, 50257)]
NOTE = ("Misses, and why: frequency/presence penalty at [256 x 256] do what vLLM does (one dense "
        "subtraction of the counts; at a large vocabulary only the answer's tokens are touched, "
        "0.18); no-repeat-ngram at both sizes and DRY at [64 x 50257] are bound by copying the "
        "logits into the output (their references' Python loops over 128 tokens cost less than "
        "one copy of 64 x 50257 floats on this loaded machine); the kernels only touch the banned "
        "or penalised tokens.")
BREAKERS = Breakers(frozenset({10, 58, 34, 42}))  # llama.cpp's defaults, byte tokens


def xtc_port(x, threshold, probability, u):
    """`llama_sample_xtc_apply` row by row: softmax, sort descending, cut the top run."""
    out = x.clone()
    for r in range(x.size(0)):
        if probability <= 0.0 or threshold > 0.5 or float(u[r]) > probability:
            continue
        p, order = torch.sort(torch.softmax(x[r], -1), stable=True, descending=True)
        pos_last = max(int((p >= threshold).sum()) - 1, 0)
        if pos_last > 0:
            out[r, order[:pos_last]] = float("-inf")
    return out


def mirostat_port(x, mu):
    """`llama_sampler_mirostat_v2_apply`'s cut row by row: softmax, sort descending, keep
    the candidates before the first with -log2 p > mu (at least one)."""
    out = torch.full_like(x, float("-inf"))
    for r in range(x.size(0)):
        p, order = torch.sort(torch.softmax(x[r], -1), stable=True, descending=True)
        size = max(int((-torch.log2(p) <= mu).sum()), 1)  # a prefix: surprise ascends
        out[r, order[:size]] = x[r, order[:size]]
    return out


def cases(B, V, g):
    from transformers import NoRepeatNGramLogitsProcessor

    x = torch.randn(B, V, generator=g) * 3
    hist = torch.randint(0, min(V, 64), (B, 128), generator=g)  # repeats happen
    gen = hist[:, 64:]
    u = torch.rand(B, generator=g, dtype=torch.float64)
    mu = 4.0
    dry_pairs = as_pairs(BREAKERS)
    return x, [
        ("frequency-penalty", "(frequency-penalty logits 0.5)", dict(generated=gen),
         lambda: vllm_apply_penalties(x, gen, 0.0, 0.5), "vLLM apply_penalties (port)"),
        ("presence-penalty", "(presence-penalty logits 0.5)", dict(generated=gen),
         lambda: vllm_apply_penalties(x, gen, 0.5, 0.0), "vLLM apply_penalties (port)"),
        ("no-repeat-ngram", "(no-repeat-ngram logits 3)", dict(history=hist),
         lambda: NoRepeatNGramLogitsProcessor(3)(hist, x.clone()),
         "transformers NoRepeatNGramLogitsProcessor"),
        ("dry", "(dry logits 0.8 1.75 2)", dict(history=hist, breakers=BREAKERS),
         lambda: torch.stack([llama_dry(x[r], hist[r].tolist(), 0.8, 1.75, 2, dry_pairs)
                              for r in range(B)]), "llama.cpp llama_sampler_dry_apply (port)"),
        ("xtc", "(xtc logits 0.02 0.5)", dict(uniform=lambda s: u),
         lambda: xtc_port(x, 0.02, 0.5, u), "llama.cpp llama_sample_xtc_apply (port)"),
        ("mirostat", f"(mirostat logits {mu / 2} 0.1)", dict(state=None),
         lambda: mirostat_port(x, mu), "llama.cpp llama_sampler_mirostat_v2_apply (port)"),
    ]


def run(repeats: int) -> list[dict]:
    rows = []
    for B, V in SHAPES:
        g = torch.Generator().manual_seed(B * V)
        x, todo = cases(B, V, g)
        for name, text, kw, theirs, ref in todo:
            f = engine_dsl.logits_fn(text)
            if "state" in kw:  # a fresh state each call: the first step, mu = 2 tau
                def ours(f=f, x=x, B=B):
                    return f(x, state=RowState(B))
            else:
                def ours(f=f, kw=kw, x=x):
                    return f(x, **kw)
            with torch.inference_mode():
                if not torch.equal(ours(), theirs()):
                    raise SystemExit(f"{name}: results differ at [{B} x {V}]")
                reps = repeats if V < 10_000 else max(repeats // 5, 5)
                t_ours, t_theirs = _median_seconds([ours, theirs], reps)
            rows.append(dict(name=name, ref=ref, shape=f"{B} x {V}", ours_ms=t_ours * 1e3,
                             theirs_ms=t_theirs * 1e3, ratio=t_ours / t_theirs))
    return rows


def table(rows: list[dict], command: str) -> str:
    import transformers

    load = os.getloadavg()[0]
    lines = [
        "## Samplers: penalties, DRY, XTC, mirostat",
        "",
        "Each sampler of the 'samplers practitioners tune' alone, exact mode, against its "
        f"reference on the same inputs (logits ~ 3 N(0,1); transformers "
        f"{transformers.__version__}; history 128 tokens over the first 64 ids so repeats "
        "occur, the last 64 of them the answer; DRY with llama.cpp's default breakers). "
        "Identical outputs checked first; medians of interleaved runs; goal ratio <= 0.5. "
        "The llama.cpp references are Python/torch ports run row by row as llama.cpp works "
        "(llama.cpp itself is C++ and not installed here): their times say how a per-row "
        "implementation fares in Python, not how fast llama.cpp is.",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), torch "
        f"{torch.__version__}, Python {platform.python_version()}; load average {load:.1f} "
        "on 2 cores shared with other engineers' jobs.",
        "",
        "| primitive | reference | batch x vocab | ours (ms) | reference (ms) | ratio |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        miss = "" if r["ratio"] <= 0.5 else " (miss)"
        lines.append(f"| {r['name']} | {r['ref']} | {r['shape']} | {r['ours_ms']:.3f} | "
                     f"{r['theirs_ms']:.3f} | {r['ratio']:.2f}{miss} |")
    return "\n".join(lines + ["", NOTE, ""])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(args.repeats)
    given = sys.argv[1:] if argv is None else argv
    text = table(rows, (".venv/bin/python bench/samplers.py " + " ".join(given)).strip())
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
