"""Diagnosis: why the shakespeare model sat near 2.5 nats per byte (issue 12, docs/BENCHMARKS.md).

Trains on the shakespeare task's train works, one torch thread, and prints the held-out loss
on the valid split every `--every` steps: on 300 evenly spaced windows of 64 bytes (the
model's first 64 positions, comparable across window lengths) and, when the model's
position table holds 192, on 100 windows of 192 bytes. Two loops over the same data:

* `--loop ours`: `neural.GPT` trained by `neural.Trainer` on `TextCorpus.sample` windows
  (BOS + `--block` bytes), as a run does;
* `--loop independent`: a 60-line nanoGPT-style model (its own attention, init, tied
  weights) and a plain AdamW loop with the same schedule (`neural.train.lr_at`), on the same
  windows. It can also shift each row's positions by a random offset in the table
  (`--offset`), or train on `--short-steps` steps of `--short-batch` x `--short-block` before
  the `--batch` x `--block` windows.

`--positions`: learned (a trained table, GPT-2) | rope (rotary, no table) | sinusoidal (a
learned table that starts as sinusoids of the table's scale).

    OMP_NUM_THREADS=1 .venv/bin/python bench/shakespeare_plateau.py --loop ours \\
        --block 64 --batch 12 --steps 2000 --every 250          # nanoGPT's recipe
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from neural import GPT, ByteTokenizer, Trainer, get_task  # noqa: E402
from neural.model import IGNORE_INDEX, GPTConfig  # noqa: E402
from neural.tasks import TextCorpus  # noqa: E402
from neural.train import TrainConfig, lr_at  # noqa: E402


def rope(x, pos):
    """Rotary positions, interleaved pairs (x0, x1), (x2, x3), ...: x (B, H, T, hs)."""
    hs = x.size(-1)
    ang = pos[..., None].float() * (1.0 / (10000 ** (torch.arange(0, hs, 2).float() / hs)))
    cos, sin = ang.cos()[:, None], ang.sin()[:, None]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2)


class IndependentGPT(nn.Module):
    """nanoGPT's model.py, condensed: pre-norm blocks, GELU MLP, tied head, GPT-2 init."""

    def __init__(self, vocab, table, positions, n_layer=4, n_head=4, n_embd=128):
        super().__init__()
        C = n_embd
        self.wte, self.wpe = nn.Embedding(vocab, C), nn.Embedding(table, C)
        self.h = nn.ModuleList([nn.ModuleDict(dict(
            ln1=nn.LayerNorm(C), attn=nn.Linear(C, 3 * C), proj=nn.Linear(C, C),
            ln2=nn.LayerNorm(C), fc=nn.Linear(C, 4 * C), proj2=nn.Linear(4 * C, C)))
            for _ in range(n_layer)])
        self.lnf = nn.LayerNorm(C)
        self.head = nn.Linear(C, vocab, bias=False)
        self.wte.weight = self.head.weight
        self.n_head, self.positions = n_head, positions
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, 0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for n, p in self.named_parameters():
            if n.endswith("proj.weight") or n.endswith("proj2.weight"):
                nn.init.normal_(p, 0, 0.02 / math.sqrt(2 * n_layer))

    def forward(self, idx, targets, offset=None):
        B, T = idx.shape
        pos = torch.arange(T)[None] + (0 if offset is None else offset[:, None])
        x = self.wte(idx) + (0 if self.positions == "rope" else self.wpe(pos))
        for b in self.h:
            q, k, v = b["attn"](b["ln1"](x)).split(x.size(-1), 2)
            q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
            if self.positions == "rope":
                q, k = rope(q, pos), rope(k, pos)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + b["proj"](y.transpose(1, 2).reshape(B, T, -1))
            x = x + b["proj2"](F.gelu(b["fc"](b["ln2"](x))))
        logits = self.head(self.lnf(x))
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                                       ignore_index=IGNORE_INDEX)


def sinusoids(table: torch.Tensor) -> None:
    """Overwrite a (T, C) position table with sinusoids scaled to the init's std 0.02."""
    T, C = table.shape
    pos = torch.arange(T)[:, None].float()
    div = torch.exp(torch.arange(0, C, 2).float() * (-math.log(10000.0) / C))
    pe = torch.zeros(T, C)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
    with torch.no_grad():
        table.copy_(pe * (0.02 / pe.std()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop", choices=["ours", "independent"], default="ours")
    ap.add_argument("--positions", choices=["learned", "rope", "sinusoidal"], default="learned")
    ap.add_argument("--block", type=int, default=64, help="bytes per training window")
    ap.add_argument("--table", type=int, default=0, help="positions the model holds (0: --block)")
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--offset", action="store_true",
                    help="independent loop: each row at a random offset in the table")
    ap.add_argument("--short-steps", type=int, default=0,
                    help="independent loop: first steps on --short-batch x --short-block")
    ap.add_argument("--short-block", type=int, default=64)
    ap.add_argument("--short-batch", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.loop == "ours" and (a.offset or a.short_steps):
        ap.error("--offset and --short-steps apply to --loop independent")
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    task = get_task("shakespeare")
    train, valid = task.training_data(), TextCorpus(task.works["valid"])
    table = a.table or a.block
    evals = []
    for width, rows in ((64, 300), (192, 100)):
        if width <= table:
            w = valid.windows(width)
            evals.append((width, w.select(torch.linspace(0, len(w) - 1, rows).long())))

    config = TrainConfig(steps=a.steps, batch_size=a.batch, learning_rate=a.lr,
                         min_lr=a.min_lr, warmup_steps=a.warmup, seed=a.seed)
    generator = torch.Generator().manual_seed(a.seed)
    if a.loop == "ours":
        model = GPT(GPTConfig(block_size=table, positions="rope" if a.positions == "rope"
                              else "learned"))
        wpe = None if a.positions == "rope" else model.transformer.wpe.weight
    else:
        model = IndependentGPT(ByteTokenizer.vocab_size, table, a.positions)
        wpe = model.wpe.weight
    if a.positions == "sinusoidal":
        sinusoids(wpe)
    if a.loop == "ours":
        trainer = Trainer(model, ByteTokenizer(), train, config)

        def step(i):
            return trainer.step()["lm_loss"]
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2],
                                  "weight_decay": config.weight_decay},
                                 {"params": [p for p in params if p.dim() < 2],
                                  "weight_decay": 0.0}],
                                lr=a.lr, betas=(config.beta1, config.beta2))

        def step(i):
            for g in opt.param_groups:
                g["lr"] = lr_at(config, i)
            short = i < a.short_steps
            batch = train.sample(a.short_batch if short else a.batch,
                                 a.short_block if short else a.block, generator)
            offset = None
            if a.offset:
                offset = torch.randint(table - a.block + 1, (len(batch),), generator=generator)
            _, loss = model(batch.inputs, batch.targets(), offset)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            opt.step()
            return loss.item()

    @torch.no_grad()
    def heldout(rows):
        model.eval()
        _, loss = model(rows.inputs, rows.targets())
        model.train()
        return round(loss.item(), 4)

    print(json.dumps(vars(a)), flush=True)
    cpu, recent = 0.0, []
    for i in range(a.steps):
        c = time.process_time()
        recent.append(step(i))
        cpu += time.process_time() - c
        if (i + 1) % a.every == 0 or i + 1 == a.steps:
            point = {"step": i + 1, "cpu_seconds": round(cpu, 1),
                     "train_loss": round(sum(recent) / len(recent), 3),
                     **{f"heldout_{w}": heldout(rows) for w, rows in evals},
                     "load": round(os.getloadavg()[0], 1)}
            print(json.dumps(point), flush=True)
            recent = []
    return 0


if __name__ == "__main__":
    sys.exit(main())
