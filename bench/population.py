"""Benchmark: evaluating a population of P decoding programs on N prompts.

Contenders, on the same model and prompts, every row generating --tokens tokens (no stop
token):

* batched: `engine_dsl.decode` of all P programs x N prompts at once (KV-cached forwards
  over every row each step, common random numbers) - what `evolution.DecodeEvaluator` runs;
* floor: a bare KV-cached greedy decode of the same model tokens with no program at all, on
  `decode`'s schedule (each distinct prompt prefilled once and its cache copied to its rows,
  rows run in chunks of `engine_dsl.decoders.chunk_rows`): P x N rows, plus N rows per
  `gated` node in the population - a gated node is a second forward pass with its own head
  gates, model tokens the programs ask for, prefilled on its own. batched / floor is what the
  programs cost on top of the model work they need;
* bare floor: the same without the gated rows (P x N rows only): batched / bare floor also
  charges the gated passes to the programs;
* naive: program by program (`engine_dsl.decoders.decode_each`: the same engine, KV cache
  and prefill sharing, N rows per decode).

Goals: batched / floor <= 1.5; naive / batched >= 10. Programs: the shipped seeds plus
random typed programs from the GP generator, vote/best-of wrappers removed (so every program
has exactly N main rows), all distinct (`decode` decodes identical programs once, which would
flatter it). Medians of --repeats runs; wall and CPU time are both reported, `--clock` picks
the one the ratios use (with one thread the CPU time is the work done, whatever else a shared
machine runs; on a quiet machine the two agree).

    .venv/bin/python bench/population.py            # P=64, N=256, one thread
    .venv/bin/python bench/population.py --programs 8 --prompts 32 --repeats 1   # quick
    .venv/bin/python bench/population.py --device cuda    # on a GPU (--device auto: if any)

Against an earlier commit (`--against CHECKOUT`, e.g. a `git worktree add` of main): the
batched decode of the same workload by this checkout and by that one, each in a fresh
process (`--worker`), in alternating rounds (`--repeats`); reports after / before with a
95% bootstrap interval over the rounds (`--clock cpu` on a shared machine) and whether both
wrote the same answers (tokens and log-likelihoods, bit for bit; exit 1 if not).

`--run DIR` takes the workload from a trained run instead: its model, its task's test
prompts, its answer cap as the tokens per answer (unless --tokens), its stop token, and
bench/text.py's fixed decoders (greedy, pure sampling, top-k 40, nucleus 0.95, ...) as the
programs (the first --programs of them):

    OMP_NUM_THREADS=1 .venv/bin/python bench/population.py --run runs/text-0 --programs 8 \
        --prompts 128 --against /tmp/main-before --repeats 3 --clock cpu
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _import_root() -> str:
    """The checkout whose packages this process imports: a worker's --root (the code to
    time), else the one this file is in."""
    if "--root" in sys.argv[:-1]:
        return os.path.abspath(sys.argv[sys.argv.index("--root") + 1])
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


sys.path.insert(0, _import_root())

import torch  # noqa: E402

import engine_dsl  # noqa: E402
from engine_dsl.decoders import (  # noqa: E402
    _cache_selector,
    _row_bytes,
    chunk_rows,
    decode_each,
    plan,
)
from engine_dsl.primitives.decoders import rewrap  # noqa: E402
from evolution.bridge import SearchSpace, to_expr  # noqa: E402
from evolution.random_trees import ConstantSampler, random_individual  # noqa: E402
from neural import GPT, ByteTokenizer, GPTConfig, get_task  # noqa: E402
from neural.device import DeviceError, device_name, resolve_device  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def programs(n: int, model, seed: int = 0) -> list:
    """The shipped seeds (wrappers removed) then random programs, n distinct in all."""
    out, seen = [], set()

    def add(expr):
        if expr not in seen:
            seen.add(expr)
            out.append(expr)

    for f in sorted((ROOT / "programs").glob("*.scm")):
        for d in engine_dsl.read(f.read_text(), str(f)):
            add(rewrap(d.body))
    space = SearchSpace.for_model(model)
    rng, sampler = random.Random(seed), ConstantSampler(space)
    while len(out) < n:
        add(rewrap(to_expr(random_individual(rng, sampler, (2, 5)))))
    return out[:n]


def _left_padded(prompts: list[list[int]], pad: int):
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = True
    return ids, mask


@torch.no_grad()
def floor_decode(model, prompts: list[list[int]], copies: int, tokens: int, pad: int,
                 streams: int = 0, device="cpu"):
    """Bare KV-cached greedy decoding of (copies + streams) x len(prompts) rows on `decode`'s
    schedule: the prompts prefilled once plain and once per stream, each cache copied to its
    rows with room for the steps to come, rows in chunks."""
    N = len(prompts)
    device = torch.device(device)
    ids, mask = (t.to(device) for t in _left_padded(prompts, pad))
    units = torch.arange(N, device=device).repeat(1 + streams)
    out = model.forward_step(ids[units], attention_mask=mask[units])
    select = _cache_selector(model, out.cache, units.numel())
    rows = torch.cat([torch.arange(N).repeat(copies), N + torch.arange(N * streams)]).to(device)
    chunk = chunk_rows(device, _row_bytes(model, ids.size(1) + tokens)) or rows.numel()
    chunks = []  # [cache, mask, next ids] per chunk of rows; steps outer, chunks inner
    for c0 in range(0, rows.numel(), chunk):
        r = rows[c0:c0 + chunk]
        chunks.append([select(out.cache, r, tokens - 1), mask[units][r],
                       out.logits[r, -1].argmax(-1, keepdim=True)])
    for _ in range(tokens - 1):
        for c in chunks:
            c[1] = torch.cat((c[1], torch.ones_like(c[2], dtype=torch.bool)), 1)
            o = model.forward_step(c[2], attention_mask=c[1], cache=c[0])
            c[0], c[2] = o.cache, o.logits[:, -1].argmax(-1, keepdim=True)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of fn(). With one torch thread the CPU
    time is the work done, whatever else the machine runs; on a quiet machine the two agree."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()  # GPU work is asynchronous: count it where it ends
    return time.perf_counter() - w, time.process_time() - c


def run_workload(args, device):
    """(model, prompts, programs, decode keywords) of a trained run (--run) or of a fresh
    default GPT on addition prompts."""
    if args.run:
        from text import BASELINES  # bench/text.py, beside this file

        from evolution.loop import CoEvolution
        from evolution.rundir import RunDir

        run = CoEvolution.open(RunDir(args.run), device=str(device))
        tok = run.tokenizer
        prompts = [tok.encode(e.input, bos=True) for e in run.task.test[: args.prompts]]
        progs = [engine_dsl.read_expr(p, engine_dsl.Type.DECODER)
                 for p in list(BASELINES.values())[: args.programs]]
        kw = dict(max_new_tokens=args.tokens or run.answer_cap(), stop_token=tok.eos_id,
                  seed=0, pad_token=tok.pad_id, breakers=run.breakers)
        return run.model, prompts, progs, kw
    torch.manual_seed(0)
    model = GPT(GPTConfig()).to(device).eval()
    tok = ByteTokenizer()
    examples = get_task("addition", difficulty=3, size=4 * args.prompts).train[: args.prompts]
    prompts = [tok.encode(e.input, bos=True) for e in examples]
    kw = dict(max_new_tokens=args.tokens or 8, stop_token=None, seed=0, pad_token=tok.pad_id)
    return model, prompts, programs(args.programs, model), kw


def worker(args, device) -> int:
    """Time one batched decode of the workload with the code under --root; print its JSON:
    wall and CPU seconds and a digest of every answer's tokens and log-likelihood."""
    model, prompts, progs, kw = run_workload(args, device)
    engine_dsl.decode(model, progs[:2], prompts[:4], **kw)  # warm-up
    out = []
    wall, cpu = timed(lambda: out.append(engine_dsl.decode(model, progs, prompts, **kw)))
    digest = hashlib.sha256(json.dumps([[[a.tokens, a.log_likelihood.hex()] for a in ans]
                                        for ans in out[0]]).encode()).hexdigest()
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "digest": digest}))
    return 0


def against(args) -> int:
    """This checkout's batched decode against --against's, alternating fresh processes."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    before = os.path.abspath(args.against)
    if not os.path.isdir(os.path.join(before, "engine_dsl")):
        print(f"error: --against {args.against}: not a checkout of this project (no "
              "engine_dsl/)", file=sys.stderr)
        return 1
    flags = ["--programs", str(args.programs), "--prompts", str(args.prompts),
             "--threads", str(args.threads), "--device", args.device,
             *(["--tokens", str(args.tokens)] if args.tokens else []),
             *(["--run", args.run] if args.run else [])]
    times: dict[str, list[dict]] = {"before": [], "after": []}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        for name, root in (("before", before), ("after", here)):
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                                   "--root", root, *flags], capture_output=True, text=True)
            if done.returncode:
                print(f"error: the {name} worker failed:\n{done.stderr.strip()}",
                      file=sys.stderr)
                return 1
            times[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    from primitives import ratio_interval  # bench/primitives.py, beside this file

    clock = f"{args.clock}_s"
    a, b = ([t[clock] for t in times[k]] for k in ("after", "before"))
    lo, hi = ratio_interval(a, b)
    same = len({t["digest"] for ts in times.values() for t in ts}) == 1
    res = {"programs": args.programs, "prompts": args.prompts, "run": args.run,
           "threads": args.threads, "clock": args.clock, "load_before": load_before,
           "before_s": [round(x, 2) for x in b], "after_s": [round(x, 2) for x in a],
           "after_over_before": round(statistics.median(a) / statistics.median(b), 3),
           "ci95": [round(lo, 3), round(hi, 3)], "same_answers": same,
           "load_after": os.getloadavg()[0]}
    print(json.dumps(res))
    print(f"after / before = {res['after_over_before']} [{lo:.3f}, {hi:.3f}] "
          f"({args.clock} time, median of {args.repeats}); answers "
          + ("identical" if same else "DIFFER"))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0 if same else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=None,
                    help="new tokens per answer (default 8; with --run, the run's answer cap)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: stable timings on a shared machine)")
    ap.add_argument("--skip-naive", action="store_true", help="the naive loop is the slowest")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="which time the ratios use (cpu: this process's CPU time, robust to "
                         "other jobs on a shared machine when --threads is 1)")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--run", help="a trained run's directory: its model, test prompts, "
                                  "answer cap and bench/text.py's fixed decoders")
    ap.add_argument("--against", metavar="CHECKOUT",
                    help="time this checkout's batched decode against that one's")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)  # read before the imports
    args = ap.parse_args(argv)
    if args.against:
        return against(args)
    try:
        device = resolve_device(args.device)
    except DeviceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    torch.set_num_threads(args.threads)
    if args.worker:
        return worker(args, device)
    model, prompts, progs, kw = run_workload(args, device)
    tokens = kw["max_new_tokens"]

    engine_dsl.decode(model, progs[:2], prompts[:4], **kw)  # warm-up
    streams = sum(plan(p).module.n_gated for p in progs)
    pad = kw["pad_token"]
    runs = {"floor": lambda: floor_decode(model, prompts, len(progs), tokens, pad, streams,
                                          device),
            "bare_floor": lambda: floor_decode(model, prompts, len(progs), tokens, pad,
                                               device=device),
            "batched": lambda: engine_dsl.decode(model, progs, prompts, **kw)}
    if not args.skip_naive:
        runs["naive"] = lambda: decode_each(model, progs, prompts, **kw)
    times = {k: [] for k in runs}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        for k, fn in runs.items():
            times[k].append(timed(fn))
    clock = 1 if args.clock == "cpu" else 0
    res = {"programs": len(progs), "prompts": len(prompts), "tokens": tokens,
           "threads": args.threads, "device": device_name(device),
           "rows": len(progs) * len(prompts),
           "gated_stream_rows": streams * len(prompts), "load_before": load_before,
           "clock": args.clock}
    for k, ts in times.items():
        res[f"{k}_wall_s"] = round(statistics.median(t[0] for t in ts), 3)
        res[f"{k}_cpu_s"] = round(statistics.median(t[1] for t in ts), 3)
    med = {k: statistics.median(t[clock] for t in ts) for k, ts in times.items()}
    res["batched_over_floor"] = round(med["batched"] / med["floor"], 2)
    res["batched_over_bare_floor"] = round(med["batched"] / med["bare_floor"], 2)
    if "naive" in med:
        res["naive_over_batched"] = round(med["naive"] / med["batched"], 2)
    res["load_after"] = os.getloadavg()[0]
    print(json.dumps(res))
    print(f"batched/floor = {res['batched_over_floor']} (goal <= 1.5; bare floor: "
          f"{res['batched_over_bare_floor']})"
          + (f"; naive/batched = {res['naive_over_batched']} (goal >= 10)"
             if "naive" in med else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
