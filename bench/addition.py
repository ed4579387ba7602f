"""Benchmark: the default GPT on 3-digit addition, 2 CPU threads.

Trains `GPTConfig()` with `TrainConfig()` (overridable below) on the train split of
`get_task("addition", difficulty=3)` and reports greedy exact match on the test split and the
wall time of training. Goal: >= 90% in <= 3 minutes.

    .venv/bin/python bench/addition.py   # 3000 steps; --steps N to change
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from neural import (  # noqa: E402
    GPT,
    ByteTokenizer,
    GPTConfig,
    TrainConfig,
    Trainer,
    get_task,
    greedy_accuracy,
)


def main(argv=None) -> int:
    defaults = TrainConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--digits", type=int, default=3)
    ap.add_argument("--size", type=int, default=50_000, help="examples before the split")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=defaults.batch_size)
    ap.add_argument("--lr", type=float, default=defaults.learning_rate)
    ap.add_argument("--warmup", type=int, default=defaults.warmup_steps)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=0, help="valid accuracy every N steps")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tok = ByteTokenizer()
    task = get_task("addition", difficulty=args.digits, size=args.size, seed=args.seed)
    model = GPT(GPTConfig())
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                      warmup_steps=args.warmup, seed=args.seed)
    trainer = Trainer(model, tok, task.train, cfg)
    print(f"model {model.get_num_params():,} params {model.config}; train {len(task.train)}, "
          f"test {len(task.test)} examples; {cfg}", flush=True)

    start = time.perf_counter()
    eval_time = 0.0
    for step in range(1, cfg.steps + 1):
        m = trainer.step()
        if args.eval_every and step % args.eval_every == 0:
            t = time.perf_counter()
            acc = greedy_accuracy(model, tok, task.valid[:500])
            eval_time += time.perf_counter() - t
            print(f"step {step} loss {m['loss']:.4f} lr {m['lr']:.2e} valid@500 {acc:.3f} "
                  f"t {time.perf_counter() - start - eval_time:.1f}s", flush=True)
    train_s = time.perf_counter() - start - eval_time
    t = time.perf_counter()
    test_acc = greedy_accuracy(model, tok, task.test)
    eval_s = time.perf_counter() - t
    result = {"test_exact_match": round(test_acc, 4), "train_seconds": round(train_s, 1),
              "test_eval_seconds": round(eval_s, 1), "steps": cfg.steps,
              "batch_size": cfg.batch_size, "threads": args.threads,
              "params": model.get_num_params()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
