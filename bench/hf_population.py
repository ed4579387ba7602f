"""Benchmark: a population of decoding programs on your own (Hugging Face) model.

P programs that transformers can express (temperature, top-k, top-p, min-p, typical,
repetition penalty; greedy or sampling) x N prompts of `--prompt-tokens` tokens, each answer
`--tokens` new tokens (no stop token), on a small random GPT-2-shaped model
(`transformers.GPT2LMHeadModel`), two ways:

* naive: what a user would do today: a loop over the programs, each calling
  `model.generate` with the program's exported GenerationConfig (`export --to hf`), batched
  over the N prompts: P prefills of N prompts, P decoding loops of N rows;
* batched: `engine_dsl.decode` of all P programs x N prompts through `neural.hf.HFModel`:
  each prompt prefilled once and its cache (transformers' DynamicCache) copied to the P rows
  that start with it, then one KV-cached forward per step for all P x N rows.

Goal: naive / batched >= 3 on 2 CPU cores (>= 10 on a GPU). Both sides generate the same
number of tokens; the greedy programs' answers are checked to agree with `generate`'s
(reported as `greedy_agreement`: the fraction of greedy rows whose tokens are identical; a
flat random model has near-ties where float rounding of the two paths may differ).
Per repeat both contenders run once (alternating); the ratio is the median of the per-repeat
ratios with a 95% bootstrap interval, since a shared machine is noisy.

    .venv/bin/python bench/hf_population.py                      # P=16, N=64, 128 + 32 tokens
    .venv/bin/python bench/hf_population.py --programs 8 --prompts 16 --repeats 2   # quick
    .venv/bin/python bench/hf_population.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import engine_dsl  # noqa: E402
from engine_dsl.export import export  # noqa: E402
from neural.device import DeviceError, device_name, resolve_device  # noqa: E402

# programs a GenerationConfig can express, a quarter of them greedy
PROGRAMS = [
    "(greedy logits)",
    "(sample logits)",
    "(sample (temperature logits 0.7))",
    "(sample (top-k (temperature logits 0.9) 40))",
    "(greedy (repetition-penalty logits 1.2))",
    "(sample (top-p (temperature logits 0.8) 0.9))",
    "(sample (min-p (temperature logits 1.1) 0.05))",
    "(sample (typical logits 0.95))",
    "(greedy (repetition-penalty logits 1.5))",
    "(sample (top-p (top-k (temperature logits 0.6) 50) 0.95))",
    "(sample (top-p (repetition-penalty logits 1.2) 0.92))",
    "(sample (min-p (repetition-penalty (temperature logits 0.75) 1.1) 0.1))",
    "(greedy (repetition-penalty logits 1.05))",
    "(sample (top-k (repetition-penalty logits 1.3) 20))",
    "(sample (typical (temperature logits 0.9) 0.8))",
    "(sample (min-p (top-p (temperature logits 1.3) 0.97) 0.02))",
]


def model_of(args, device):
    from transformers import GPT2Config, GPT2LMHeadModel

    from neural.hf import HFModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=args.layers, n_embd=args.width, n_head=args.heads,
                        vocab_size=args.vocab, n_positions=args.prompt_tokens + args.tokens,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0)
    hf = GPT2LMHeadModel(config).to(device).eval()
    hf.generation_config.eos_token_id = None  # every answer runs to --tokens, as in decode
    hf.generation_config.pad_token_id = 0
    return HFModel(hf)


def naive(model, configs, ids) -> list[torch.Tensor]:
    """One `generate` per program, batched over the prompts."""
    mask = torch.ones_like(ids)
    with torch.no_grad():
        return [model.hf.generate(input_ids=ids, attention_mask=mask, generation_config=c)
                [:, ids.size(1):] for c in configs]


def timed(fn, clock: str = "wall"):
    """(seconds, result) of fn(), GPU work included; `clock` cpu: this process's CPU time
    (all its threads), which other jobs on a shared machine disturb less than wall time."""
    now = time.process_time if clock == "cpu" else time.perf_counter
    t = now()
    out = fn()
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return now() - t, out


def bootstrap_median(xs: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the median of xs."""
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(n))
    return meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=32, help="new tokens per answer")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: process CPU time (a shared machine; with --threads 1)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    try:
        device = resolve_device(args.device)
        import transformers
        from transformers import GenerationConfig
    except (DeviceError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # greedy configs' unused keys are not news
    model = model_of(args, device)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, args.vocab, (args.prompts, args.prompt_tokens), generator=g)
    prompts = ids.tolist()
    ids = ids.to(device)
    if not 1 <= args.programs <= len(PROGRAMS):
        print(f"error: --programs must be 1 to {len(PROGRAMS)}", file=sys.stderr)
        return 2
    progs = PROGRAMS[:args.programs]
    configs = [GenerationConfig(**export(engine_dsl.read_expr(p, engine_dsl.Type.DECODER),
                                         "hf"),
                                max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                                eos_token_id=None, pad_token_id=0) for p in progs]
    kw = dict(max_new_tokens=args.tokens, stop_token=None, seed=0, pad_token=0)

    engine_dsl.decode(model, progs[:2], prompts[:2], **kw)  # warm-up (both paths)
    naive(model, configs[:1], ids[:2])
    load_before = os.getloadavg()
    times = {"naive": [], "batched": []}
    for _ in range(args.repeats):
        t, generated = timed(lambda: naive(model, configs, ids), args.clock)
        times["naive"].append(t)
        t, decoded = timed(lambda: engine_dsl.decode(model, progs, prompts, **kw), args.clock)
        times["batched"].append(t)
    greedy = [q for q, p in enumerate(progs) if p.startswith("(greedy")]
    same = sum(list(d.tokens) == row for q in greedy
               for d, row in zip(decoded[q], generated[q].tolist(), strict=True))
    ratios = [n / b for n, b in zip(times["naive"], times["batched"], strict=True)]
    lo, hi = bootstrap_median(ratios)
    res = {"programs": len(progs), "prompts": args.prompts, "prompt_tokens": args.prompt_tokens,
           "tokens": args.tokens, "model": {"layers": args.layers, "width": args.width,
                                            "heads": args.heads, "vocab": args.vocab},
           "threads": args.threads, "device": device_name(device), "repeats": args.repeats,
           "clock": args.clock,
           "naive_s": [round(t, 2) for t in times["naive"]],
           "batched_s": [round(t, 2) for t in times["batched"]],
           "naive_over_batched": round(statistics.median(ratios), 2),
           "ci95": [round(lo, 2), round(hi, 2)],
           "greedy_agreement": round(same / max(1, len(greedy) * args.prompts), 3),
           "load_before": [round(x, 2) for x in load_before],
           "load_after": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(res))
    goal = 10 if device.type == "cuda" else 3
    print(f"naive/batched = {res['naive_over_batched']} [{lo:.2f}, {hi:.2f}] (goal >= {goal})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
