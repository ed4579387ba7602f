"""Benchmark: model training on a busy machine (issue 16, item 17).

Times --steps pre-training steps of the default model (4 layers, width 128, batch 64, the
addition task) in a fresh process, as `run_evolution.py` runs them (intra-op threads = the
machine's cores), under each OpenMP wait policy, with --busy processes spinning on the CPU
beside it ("loaded") and without ("quiet"; other users of the machine are not controlled, so
the load average at the start is printed). A run that passes --timeout is reported as such.

    .venv/bin/python bench/busy.py                        # 150 steps, 0 and 2 busy processes
    .venv/bin/python bench/busy.py --steps 50 --timeout 120
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

TRAIN = """
import os, sys, time, torch
sys.path.insert(0, os.getcwd())
from neural import GPT, ByteTokenizer, GPTConfig, Trainer, get_task
from neural.train import TrainConfig
torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
torch.manual_seed(0)
task = get_task("addition", size=4000)
trainer = Trainer(GPT(GPTConfig()), ByteTokenizer(), task.train, TrainConfig(steps={steps}))
t0 = time.perf_counter()
for _ in range({steps}):
    trainer.step()
print(time.perf_counter() - t0)
"""


def measure(policy: str | None, busy: int, steps: int, timeout: float) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(busy)]
    try:
        proc = subprocess.run([sys.executable, "-c", TRAIN.format(steps=steps)], env=env,
                              capture_output=True, text=True, timeout=timeout)
        return f"{float(proc.stdout.strip()):.1f} s" if proc.returncode == 0 else proc.stderr
    except subprocess.TimeoutExpired:
        return f"> {timeout:.0f} s (stopped)"
    finally:
        for s in spinners:
            s.kill()
            s.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.1f}; "
          f"{args.steps} steps of the default model")
    for busy in args.busy:
        for policy in ("PASSIVE", None, "ACTIVE"):
            t0 = time.time()
            result = measure(policy, busy, args.steps, args.timeout)
            print(f"  busy processes {busy}  OMP_WAIT_POLICY={policy or '(unset)':<9} "
                  f"{result}  (load {os.getloadavg()[0]:.1f}, {time.time() - t0:.0f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
