"""Benchmark: the truncation chain, ours (exact mode) against transformers' processors.

    .venv/bin/python bench/primitives.py [--repeats 200] [--threads 1] [--write]

Chain: (top-p (top-k (temperature (repetition-penalty logits 1.2) 0.8) 40) 0.9), against
LogitsProcessorList([RepetitionPenalty(1.2), Temperature(0.8), TopK(40), TopP(0.9)]) on the
same inputs (random logits, a 64-token history per row), at [256 x 256] and [64 x 50257].
Reports the median time of repeated, interleaved runs and the ratio ours / theirs with a
95% bootstrap interval (goal <= 0.5), after checking that both give the same result.
`--write` replaces the "## Primitives" section of docs/BENCHMARKS.md with the table. Not a
test: timings depend on the machine.

    .venv/bin/python bench/primitives.py --samplers [--repeats 200] [--write]

Single samplers (epsilon, eta, top-n-sigma, dynamic-temperature, an arithmetic temperature)
against their references at the same shapes: the transformers warper, or for llama.cpp's
samplers a NumPy float32 transcription of the C++ (`llama_sampler_top_n_sigma_apply`,
`llama_sampler_temp_ext_apply` with its sort in `llama_sampler_softmax_impl`), one row at
a time as llama.cpp samples; `--write` replaces the "## Samplers" section.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine_dsl  # noqa: E402

CHAIN = "(top-p (top-k (temperature (repetition-penalty logits 1.2) 0.8) 40) 0.9)"
SHAPES = [(256, 256), (64, 50257)]


def _theirs():
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    return LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.2), TemperatureLogitsWarper(0.8),
                                TopKLogitsWarper(40), TopPLogitsWarper(0.9)])


def _times(fns, repeats: int) -> list[list[float]]:
    """Wall times of repeated calls of each function; runs are interleaved (a, b, a, b, ...)
    so that a change in machine load affects both sides alike."""
    for _ in range(max(3, repeats // 10)):  # warm up
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return times


def _median_seconds(fns, repeats: int) -> list[float]:
    return [statistics.median(ts) for ts in _times(fns, repeats)]


def ratio_interval(ours: list[float], theirs: list[float], n: int = 2000,
                   seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of median(ours) / median(theirs), resampling the interleaved
    rounds (each round's pair together)."""
    a, b = np.asarray(ours), np.asarray(theirs)
    pick = np.random.default_rng(seed).integers(0, len(a), (n, len(a)))
    r = np.median(a[pick], axis=1) / np.median(b[pick], axis=1)
    return float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))


def run(repeats: int) -> list[dict]:
    ours, theirs = engine_dsl.logits_fn(CHAIN), _theirs()
    rows = []
    for B, V in SHAPES:
        g = torch.Generator().manual_seed(B * V)
        logits = torch.randn(B, V, generator=g) * 3
        history = torch.randint(0, V, (B, 64), generator=g)
        with torch.inference_mode():
            a = ours(logits, history=history)
            b = theirs(history, logits.clone())
            if not torch.equal(a, b):
                raise SystemExit(f"results differ at [{B} x {V}]")
            reps = repeats if V < 10_000 else max(repeats // 4, 20)
            ts_ours, ts_theirs = _times(
                [lambda x=logits, h=history: ours(x, history=h),
                 lambda x=logits, h=history: theirs(h, x.clone())], reps)
        t_ours, t_theirs = statistics.median(ts_ours), statistics.median(ts_theirs)
        rows.append(dict(shape=f"{B} x {V}", ours_ms=t_ours * 1e3, theirs_ms=t_theirs * 1e3,
                         ratio=t_ours / t_theirs, ci95=ratio_interval(ts_ours, ts_theirs)))
    return rows


# ----------------------------------------------------------------------------- single samplers


def _np_top_n_sigma(x: torch.Tensor, n: float) -> torch.Tensor:
    """llama_sampler_top_n_sigma_apply, row by row, NumPy float32."""
    out = x.numpy().copy()
    n = np.float32(n)
    for row in out:
        fin = row[row != -np.inf]
        mean = fin.sum(dtype=np.float32) / np.float32(fin.size)
        std = np.sqrt(((fin - mean) ** 2).sum(dtype=np.float32) / np.float32(fin.size))
        row[row < fin.max() - n * std] = -np.inf
    return torch.from_numpy(out)


def _np_temp_ext(x: torch.Tensor, t: float, delta: float, exponent: float) -> torch.Tensor:
    """llama_sampler_temp_ext_apply, row by row, NumPy float32 (candidates: finite scores;
    softmax_impl sorts them)."""
    out = x.numpy().copy()
    lo, hi = max(np.float32(0), np.float32(t - delta)), np.float32(t + delta)
    for row in out:
        alive = np.isfinite(row)
        cand = np.sort(row[alive])[::-1]
        p = np.exp(cand - cand[0])
        p /= p.sum(dtype=np.float32)
        nz = p[p > 0]
        h = -(nz * np.log(nz)).sum(dtype=np.float32) / np.float32(np.log(cand.size))
        row[alive] /= lo + (hi - lo) * h ** np.float32(exponent)
    return torch.from_numpy(out)


def _hf(name: str, arg: float):
    """A transformers warper as a logits -> logits function."""
    import transformers

    warper = getattr(transformers, name)(arg)
    return lambda x: warper(None, x.clone())


def _adaptive_reference(x: torch.Tensor) -> torch.Tensor:
    logp = x.log_softmax(-1)
    ent = -(logp.exp() * logp).sum(-1, keepdim=True)
    return x / (0.5 * ent.double()).float()


SAMPLERS = [  # program, reference name, reference (logits -> logits), same result?
    ("(epsilon logits 0.0003)", "transformers EpsilonLogitsWarper(3e-4)",
     lambda: _hf("EpsilonLogitsWarper", 3e-4), torch.equal),
    ("(eta logits 0.0003)", "transformers EtaLogitsWarper(3e-4)",
     lambda: _hf("EtaLogitsWarper", 3e-4), torch.equal),
    ("(top-n-sigma logits 1.0)", "llama.cpp top-n-sigma, NumPy float32 port",
     lambda: (lambda x: _np_top_n_sigma(x, 1.0)),
     lambda a, b: torch.equal(torch.isfinite(a), torch.isfinite(b))),
    ("(dynamic-temperature logits 0.8 0.5 1.0)", "llama.cpp temp-ext, NumPy float32 port",
     lambda: (lambda x: _np_temp_ext(x, 0.8, 0.5, 1.0)),
     lambda a, b: torch.allclose(a, b, rtol=1e-4)),
    ("(temperature logits (* 0.5 (entropy logits)))", "the same in plain torch",
     lambda: _adaptive_reference, lambda a, b: torch.allclose(a, b, rtol=1e-5)),
]


def run_samplers(repeats: int) -> list[dict]:
    rows = []
    for text, ref_name, make_ref, same in SAMPLERS:
        ours, theirs = engine_dsl.logits_fn(text), make_ref()
        for B, V in SHAPES:
            logits = torch.randn(B, V, generator=torch.Generator().manual_seed(B * V)) * 3
            with torch.inference_mode():
                if not same(ours(logits), theirs(logits)):
                    raise SystemExit(f"{text} differs from {ref_name} at [{B} x {V}]")
                reps = repeats if V < 10_000 else max(repeats // 4, 20)
                t_ours, t_theirs = _median_seconds(
                    [lambda x=logits, f=ours: f(x), lambda x=logits, f=theirs: f(x)], reps)
            rows.append(dict(program=text, reference=ref_name, shape=f"{B} x {V}",
                             ours_ms=t_ours * 1e3, theirs_ms=t_theirs * 1e3,
                             ratio=t_ours / t_theirs))
    return rows


def samplers_table(rows: list[dict], command: str) -> str:
    lines = [
        "## Samplers",
        "",
        "Each sampler of issue 11 part B alone, exact mode, against its reference on the same "
        "inputs (logits ~ 3 N(0,1)): the transformers warper (identical output checked), or "
        "for llama.cpp's samplers a NumPy float32 transcription of the C++ run one row at a "
        "time as llama.cpp samples (same kept set / values within 1e-4 checked). Median of "
        "repeated runs, interleaved; goal: ratio <= 0.5.",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}; shared 2-core "
        "machine, other engineers' tests running (load average over 1/5/15 min at the end: "
        + " / ".join(f"{v:.1f}" for v in os.getloadavg()) + ").",
        "",
        "| program | reference | batch x vocab | ours (ms) | reference (ms) | ratio |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| `{r['program']}` | {r['reference']} | {r['shape']} | "
                     f"{r['ours_ms']:.3f} | {r['theirs_ms']:.3f} | {r['ratio']:.2f} |")
    lines += [
        "",
        "Ratios above 0.5 miss the goal. epsilon and eta keep the warpers' own operations "
        "(softmax; for eta also Categorical's entropy) so that the kept set is identical bit "
        "for bit; what they save is the warpers' topk(1) and masked_fill (the top score is "
        "protected only in rows where every probability is below the cutoff; torch.where "
        "instead of masked_fill, which is slower on the CPU). top-n-sigma and the dynamic "
        "temperature skip their -inf guards when a row sum is finite (one reduction) and "
        "compute the spread and the entropy in a few vectorised passes; against NumPy's "
        "compiled row loops at V = 50257 both sides are memory-bound passes. The arithmetic "
        "temperature is compared with the same computation written inline in torch: the "
        "program adds only its tree walk and a float64 multiply, so it cannot be 2x faster; "
        "its cost is the entropy measure's.",
        "",
    ]
    return "\n".join(lines)


def table(rows: list[dict], command: str) -> str:
    import transformers

    lines = [
        "## Primitives",
        "",
        f"Chain `{CHAIN}` in exact mode against `transformers` {transformers.__version__} "
        "`LogitsProcessorList` of RepetitionPenalty(1.2), Temperature(0.8), TopK(40), "
        "TopP(0.9); same inputs (logits ~ 3 N(0,1), 64 history tokens per row), identical "
        "outputs checked. Median of repeated runs, ours and theirs interleaved, the ratio's "
        "95% interval by resampling the rounds; goal: ratio <= 0.5. Measured on a shared "
        "2-core machine with other jobs running, one torch thread (with 2 threads on a busy "
        "machine, OpenMP spin-waits dominate both sides).",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, NumPy {np.__version__}, Python "
        f"{platform.python_version()}; load average over 1/5/15 min at the end: "
        + " / ".join(f"{v:.1f}" for v in os.getloadavg()) + ".",
        "",
        "| batch x vocab | ours (ms) | transformers (ms) | ratio ours/theirs | 95% interval |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lo, hi = r["ci95"]
        lines.append(f"| {r['shape']} | {r['ours_ms']:.3f} | {r['theirs_ms']:.3f} | "
                     f"{r['ratio']:.2f} | [{lo:.2f}, {hi:.2f}] |")
    lines += [
        "",
        "How: the compiled module fuses the run temperature/top-k/top-p into one selection "
        "of the k+1 best penalised scores (up to 8192 tokens on the CPU NumPy's vectorised "
        "sort, or partition, of the values alone, several times faster than torch's topk, "
        "which sorts (value, index) pairs row by row; above, torch.topk); temperature and "
        "top-p then work on the 40 survivors only, ascending, with no full-vocabulary sort, "
        "and the kept tokens are those scoring at least the lowest survivor of the last cut. "
        "Ties at the k-th score, or a tie or near-tie (1e-6) at the top-p cut, fall back to "
        "the unfused kernels, which follow transformers operation by operation, so the kept "
        "set is always the same as theirs. Repetition penalty is a gather/scatter over the "
        "history ids.",
        "",
    ]
    return "\n".join(lines)


def write_section(text: str, path: Path = ROOT / "docs" / "BENCHMARKS.md") -> None:
    """Replace (or append) the section headed by text's first line, leaving other sections
    alone."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = old.splitlines()
    title = text.splitlines()[0].strip()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == title), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")),
                   len(lines))
        new = "\n".join(lines[:start] + text.rstrip("\n").splitlines() + [""] + lines[end:])
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new.rstrip("\n") + "\n")
    tmp.replace(path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: stable figures on a shared machine)")
    ap.add_argument("--samplers", action="store_true",
                    help="the single samplers against their references instead of the chain")
    ap.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    given = sys.argv[1:] if argv is None else argv
    command = (".venv/bin/python bench/primitives.py " + " ".join(given)).strip()
    if args.samplers:
        text = samplers_table(run_samplers(args.repeats), command)
    else:
        text = table(run(args.repeats), command)
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
