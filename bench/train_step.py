"""Benchmark: one Trainer.step vs a bare PyTorch loop on the same model and batch shape.

The bare loop is plain AdamW + loss.backward() (no schedule, clipping or sampling); the
Trainer step adds batch sampling, the learning-rate schedule and gradient clipping. Steps
alternate in blocks; the medians of the per-step times are compared. Goal: ratio <= 1.2.

    .venv/bin/python bench/train_step.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from neural import GPT, ByteTokenizer, GPTConfig, TrainConfig, Trainer, get_task  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=TrainConfig().batch_size)
    ap.add_argument("--block", type=int, default=10, help="steps per timed block")
    ap.add_argument("--repeats", type=int, default=15, help="timed blocks per contender")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    tok = ByteTokenizer()
    examples = get_task("addition", difficulty=3, size=5000).train
    torch.manual_seed(0)
    trainer = Trainer(GPT(GPTConfig()), tok, examples,
                      TrainConfig(steps=10**6, batch_size=args.batch_size))
    torch.manual_seed(0)
    bare_model = GPT(GPTConfig())
    bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=1e-3)
    batch = trainer.sample_batch()
    inputs, targets = batch.inputs, batch.targets()

    def bare_step():
        _, loss = bare_model(inputs, targets)
        bare_opt.zero_grad(set_to_none=True)
        loss.backward()
        bare_opt.step()

    def timed(fn):
        t = time.perf_counter()
        for _ in range(args.block):
            fn()
        return (time.perf_counter() - t) / args.block

    for _ in range(args.block):  # warm up both
        trainer.step()
        bare_step()
    trainer_times, bare_times = [], []
    for _ in range(args.repeats):
        trainer_times.append(timed(trainer.step))
        bare_times.append(timed(bare_step))
    t_med, b_med = statistics.median(trainer_times), statistics.median(bare_times)
    print(json.dumps({"trainer_step_ms": round(1000 * t_med, 2),
                      "bare_step_ms": round(1000 * b_med, 2), "ratio": round(t_med / b_med, 3),
                      "batch_size": args.batch_size, "tokens_per_row": inputs.size(1),
                      "threads": args.threads, "block": args.block,
                      "repeats": args.repeats}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
