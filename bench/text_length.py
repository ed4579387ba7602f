"""Diagnosis: does MAUVE tell decoders apart better on longer continuations? (issue 12)

    OMP_NUM_THREADS=2 .venv/bin/python bench/text_length.py --length 512 --cuts 128 256 512

The text benchmark (`bench/text.py`) continues 64-byte prompts by 128 bytes, and at 1,024
prompts MAUVE's 95% interval of a paired difference is 0.11-0.13 wide there, wider than the
spread of the good samplers (docs/BENCHMARKS.md). MAUVE's papers read 256-1,024 tokens.
This script trains the `shakespeare` task's model (its default architecture and training,
`model.block_size` = prompt + `--length`, so the model and the judge see whole rows) and
its judge, by a run of generation 0 only (`OUT/cL-sK/run`, reused by a later call), then
continues the first N test prompts by `--length` bytes with each decoder below (one batched
decode each, the same draws for all). Each set of continuations, and the human ones, is then
cut to its first C bytes for each C of `--cuts` and read by the judge: a sampled
continuation's first C bytes are what a C-byte decode with the same draws writes, so every
cut measures the same samples of the same model with the same judge, and only the length
MAUVE reads differs. Per cut and decoder: MAUVE against the human continuations (the mean
over `MAUVE_SEEDS` k-means quantizations, as `text.objective = mauve`), its paired
difference with nucleus 0.95 with a 95% interval from random halves of the prompts
(`TextScorer.paired_interval`), rep-4, judge perplexity against human's, and the share of
continuations that end in a loop; then the mean width of the paired intervals, against the
first cut's (the baseline of the same call).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import torch  # noqa: E402

import engine_dsl  # noqa: E402
from engine_dsl import Type  # noqa: E402
from engine_dsl.printer import expr_to_scheme  # noqa: E402
from evolution.loop import CoEvolution  # noqa: E402
from evolution.rundir import RunDir  # noqa: E402
from evolution.settings import resolve  # noqa: E402
from evolution.text_scoring import NUCLEUS_95, TextScorer  # noqa: E402
from neural.tasks import DEFAULT_PROMPT_BYTES  # noqa: E402
from neural.text_measures import loop_share, perplexity, rep_n  # noqa: E402

BASELINE = expr_to_scheme(engine_dsl.registry.baseline())  # greedy
DECODERS = {  # the first is the reference of the paired differences
    "nucleus 0.95": NUCLEUS_95,
    "greedy": BASELINE,
    "pure sampling": "(sample logits)",
    "nucleus 0.9": "(sample (top-p logits 0.9))",
    "t 0.9, nucleus 0.95": "(sample (top-p (temperature logits 0.9) 0.95))",
    "t 1.1, nucleus 0.9": "(sample (top-p (temperature logits 1.1) 0.9))",
    "top-n-sigma 1": "(sample (top-n-sigma logits 1.0))",
    "dry + nucleus 0.95": "(sample (top-p (dry logits 0.8 1.75 2) 0.95))",
    "dry + pure sampling": "(sample (dry logits 0.8 1.75 2))",
    "typical 0.5": "(sample (typical logits 0.5))",
}


def trained_run(out: Path, length: int, seed: int, log) -> CoEvolution:
    """A shakespeare run at continuation length `length` after generation 0 (pre-training;
    the judge trained on first use), reused from `out` when there."""
    path = out / f"c{length}-s{seed}" / "run"
    rundir = RunDir(path)
    if rundir.is_run() and rundir.log_entries():
        log(f"L {length}: reusing {path}")
        return CoEvolution.resume(rundir)
    shutil.rmtree(path, ignore_errors=True)  # none, or one stopped before generation 0 ended
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = resolve(None, ["task.name=shakespeare", f"run.seed={seed}",
                         f"task.continuation_bytes={length}",
                         f"model.block_size={DEFAULT_PROMPT_BYTES + length}",
                         "run.generations=0", "loop.program_lambda=0", "loop.valid_prompts=8",
                         "evolution.population_size=4", "text.objective=mauve",
                         "loop.decode_memory_mb=16384"])
    run = CoEvolution.start(cfg, RunDir(path))
    t0 = time.perf_counter()
    run.generation(0)
    log(f"L {length}: pre-training and generation 0 in {time.perf_counter() - t0:.0f} s")
    return run


def continuations(run: CoEvolution, examples, names, seed: int, log) -> dict:
    """{decoder: its answers} for the examples' prompts, the same draws for every decoder."""
    out = {}
    for name in names:
        src = DECODERS[name]
        t0 = time.perf_counter()
        out[name] = run.decode([engine_dsl.read_expr(src, Type.DECODER)], examples, seed)[0]
        log(f"{name}: written in {time.perf_counter() - t0:.0f} s")
    return out


def measure(run: CoEvolution, examples, answers: dict, cut: int, halves: int) -> dict:
    """{decoder: measures} of the answers and the human continuations cut to `cut` bytes."""
    def first(text: str) -> str:
        return text.encode("utf-8")[:cut].decode("utf-8", errors="ignore")

    scorer = TextScorer.of(run.judge, [replace(e, output=first(e.output)) for e in examples],
                           "mauve")
    written = {name: scorer.read([run.tokenizer.decode(a.tokens[:cut]) for a in ans],
                                 [a.stopped and len(a.tokens) <= cut for a in ans])
               for name, ans in answers.items()}
    ref, human = written["nucleus 0.95"], scorer.human
    ppl_human = perplexity(human.judge)
    rows = {}
    for name, w in written.items():
        diff = scorer.paired_interval(w, None if w is ref else ref, halves)
        rows[name] = {"MAUVE": scorer.score(w), "minus nucleus 0.95": diff,
                      "rep-4": rep_n(w.texts, 4), "PPL / human": perplexity(w.judge) / ppl_human,
                      "loops %": loop_share(w.texts)}
    rows["human"] = {"MAUVE": scorer.score(human), "minus nucleus 0.95": None,
                     "rep-4": rep_n(human.texts, 4), "PPL / human": 1.0,
                     "loops %": loop_share(human.texts)}
    return {"prompts": len(examples), "rows": rows}


def table(length: int, result: dict, base_width: float | None) -> tuple[list[str], float]:
    lines = [f"Continuations cut to {length} bytes, {result['prompts']} test prompts:", "",
             "| decoder | MAUVE | minus nucleus 0.95 [95%] | rep-4 | PPL / human | loops % |",
             "|---|---:|---|---:|---:|---:|"]
    widths = []
    for name, r in result["rows"].items():
        d = r["minus nucleus 0.95"]
        if d is None or name == "nucleus 0.95":
            cell = "-" if d is None else "(reference)"
        else:
            cell = f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"
            if DECODERS[name] != BASELINE:  # greedy's MAUVE is near 0: its interval says
                # little
                widths.append(d[2] - d[1])
        lines.append(f"| {name} | {r['MAUVE']:.3f} | {cell} | {r['rep-4']:.1f} | "
                     f"{r['PPL / human']:.3f} | {r['loops %']:.1f} |")
    width = sum(widths) / len(widths)
    lines += ["", f"Mean width of the paired intervals (sampling decoders): {width:.3f}"
              + (f", {width / base_width:.2f}x the first cut's" if base_width else "")]
    return lines, width


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=512,
                    help="continuation length in bytes of the task, the model and the decode")
    ap.add_argument("--cuts", type=int, nargs="+", default=[128, 256, 512],
                    help="lengths the continuations are measured at (the first is the "
                         "baseline; at most --length)")
    ap.add_argument("--prompts", type=int, default=1024, help="test prompts")
    ap.add_argument("--seed", type=int, default=0, help="run seed")
    ap.add_argument("--halves", type=int, default=30, help="random halves per interval")
    ap.add_argument("--decoders", nargs="+", choices=list(DECODERS), default=list(DECODERS),
                    metavar="NAME", help="the decoders measured (nucleus 0.95, the reference, "
                                         "always): " + ", ".join(DECODERS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/echo-forge-text-length",
                    help="run directories, reused by a later call")
    args = ap.parse_args(argv)
    if max(args.cuts) > args.length:
        ap.error(f"--cuts: at most --length ({args.length})")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    started = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - started:6.0f} s] {msg}", file=sys.stderr, flush=True)

    run = trained_run(out, args.length, args.seed, log)
    try:
        examples = run.task.test[:args.prompts]
        names = ["nucleus 0.95", *(d for d in args.decoders if d != "nucleus 0.95")]
        answers = continuations(run, examples, names, args.seed * 1000 + 999, log)
        base, results = None, {}
        for cut in args.cuts:
            results[cut] = measure(run, examples, answers, cut, args.halves)
            part, width = table(cut, results[cut], base)
            base = base or width
            print("\n".join(part) + "\n", flush=True)
    finally:
        run.close()
    (out / f"c{args.length}-s{args.seed}" / "result.json").write_text(json.dumps(results) + "\n")
    print(f"`OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} .venv/bin/python "
          f"bench/text_length.py {shlex.join(sys.argv[1:] if argv is None else argv)}`: "
          f"{(time.perf_counter() - started) / 60:.1f} minutes, load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
