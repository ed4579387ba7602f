"""Training (AdamW, warmup + cosine, clipping, Grokfast, an extra loss) and greedy evaluation.

Batches (`neural.tasks.Batch`) are right-padded rows `BOS prompt answer EOS`: the model reads
`batch.inputs` (B, T-1), and logits[:, t] predicts `batch.ids[:, t + 1]`; the answer tokens
among those targets are `batch.answer_mask[:, 1:]`. No attention mask is needed for them.
Text tasks train on running text instead (`neural.tasks.TextCorpus`): rows `BOS` + a random
window of `block_size` bytes, every byte an answer token.

The co-evolution loop passes `extra_loss(model, batch) -> scalar tensor` (the answer-token
loss under the champion program's relaxed distribution); the step loss is
`lm_loss + extra_lambda * extra_loss`. With extra_lambda = 0 the callable is never called and
training is plain language modelling. The safeguard (`extra_projection`, on by default): where
the extra loss's gradient points against the LM loss's (a negative inner product), its
component along the LM gradient is removed (PCGrad, Yu et al. 2020), so a step never slows
the model's own loss to first order: <g_step, g_lm> >= |g_lm|^2. This module never imports
engine_dsl.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

import torch

from .model import IGNORE_INDEX
from .tasks import Batch, Example, TextCorpus, make_batch, make_prompt_batch
from .tokenizer import ByteTokenizer

ExtraLoss = Callable[[torch.nn.Module, Batch], torch.Tensor]


@dataclass
class TrainConfig:
    steps: int = 2000  # optimizer steps; the cosine schedule reaches min_lr here
    batch_size: int = 64  # rows per step, drawn with replacement from the train split
    learning_rate: float = 3e-3  # peak, after warmup
    min_lr: float = 3e-4  # floor of the cosine schedule
    warmup_steps: int = 100  # linear ramp from learning_rate / warmup_steps
    weight_decay: float = 0.1  # AdamW, matrices only
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.99  # AdamW second-moment decay
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    answer_only: bool = True  # LM loss on answer tokens only; False = prompt + answer
    grokfast_alpha: float = 0.98  # EMA decay of the slow-gradient filter, in [0, 1)
    grokfast_lambda: float = 0.0  # slow gradient added back x this factor; 0 = off
    extra_lambda: float = 0.0  # weight of the extra loss; 0 = plain training
    # remove the extra loss's gradient component that opposes the LM loss's (PCGrad)
    extra_projection: bool = True
    seed: int = 0  # batch sampling

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        if not isinstance(d, dict):
            raise TypeError(f"a training configuration is a JSON object, found {d!r}")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def check(self) -> None:
        """ValueError naming the first field of the wrong type or outside its domain (as the
        run settings' `train.*` bound them): a config read from a checkpoint is checked before
        a trainer runs it."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "bool":
                ok = type(value) is bool
            elif f.type == "int":
                ok = type(value) is int and value >= (1 if f.name in ("steps", "batch_size")
                                                      else 0)
            else:  # float: finite, >= 0; the decay rates below 1
                ok = (type(value) in (int, float) and math.isfinite(value) and value >= 0
                      and (value < 1 or f.name not in ("beta1", "beta2", "grokfast_alpha")))
            if not ok:
                raise ValueError(f"{f.name} is outside its domain, found {value!r}")


def lr_at(config: TrainConfig, step: int) -> float:
    """Learning rate of step `step` (0-based): linear warmup, cosine decay to min_lr."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    if step >= config.steps:
        return config.min_lr
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return config.min_lr + coeff * (config.learning_rate - config.min_lr)


class Trainer:
    """Trains a GPT on a list of examples; `step()` runs one optimizer step.

    State needed for an exact resume: the model, `optimizer`, `grokfast_ema`, `generator`
    (batch sampling), `step_num`, and the global RNGs; `neural.checkpoint` saves all of it.
    """

    def __init__(self, model, tokenizer: ByteTokenizer,
                 train_examples: Sequence[Example] | TextCorpus,
                 config: TrainConfig | None = None, extra_loss: ExtraLoss | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config = config or TrainConfig()
        if config.extra_lambda != 0 and extra_loss is None:
            raise ValueError("extra_lambda is not 0 but no extra_loss callable was given")
        self.extra_loss = extra_loss
        self.set_examples(train_examples)  # encoded once; each step indexes rows out of it
        self.optimizer = model.configure_optimizer(
            config.weight_decay, config.learning_rate, (config.beta1, config.beta2))
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.grokfast_ema: list[torch.Tensor] | None = None
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step_num = 0  # steps done so far

    def set_examples(self, train_examples: Sequence[Example] | TextCorpus) -> None:
        """Train on new examples (or running text) from the next step on (e.g. after a
        curriculum moved the difficulty); optimizer and schedule carry on."""
        if not len(train_examples):
            raise ValueError("no training examples")
        if isinstance(train_examples, TextCorpus):
            self.data = train_examples
        else:
            self.data = make_batch(self.tokenizer, train_examples, self.model.config.block_size)

    def sample_batch(self) -> Batch:
        """The next training batch (advances the sampling generator)."""
        if isinstance(self.data, TextCorpus):
            return self.data.sample(self.config.batch_size, self.model.config.block_size,
                                    self.generator)
        index = torch.randint(len(self.data), (self.config.batch_size,),
                              generator=self.generator)
        return self.data.select(index)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(total, lm_loss, extra_loss or None) of one batch, with gradients (the batch moved
        to the model's device first)."""
        device = next(self.model.parameters()).device
        if batch.ids.device != device:
            batch = Batch(batch.ids.to(device), batch.attention_mask.to(device),
                          batch.answer_mask.to(device))
        _, lm_loss = self.model(batch.inputs, batch.targets(self.config.answer_only))
        if self.config.extra_lambda == 0:
            return lm_loss, lm_loss, None
        extra = self.extra_loss(self.model, batch)
        return lm_loss + self.config.extra_lambda * extra, lm_loss, extra

    def backward(self, batch: Batch):
        """The step's gradients into `.grad` (see the module doc for the projection);
        returns `loss(batch)`."""
        loss, lm_loss, extra = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        if extra is None or not self.config.extra_projection:
            loss.backward()
            return loss, lm_loss, extra
        params = [p for p in self.params if p.requires_grad]
        g_lm = torch.autograd.grad(lm_loss, params, retain_graph=True, allow_unused=True)
        g_ex = torch.autograd.grad(extra, params, allow_unused=True)
        g_lm = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_lm, strict=True)]
        g_ex = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_ex, strict=True)]
        dot = sum((a * b).sum() for a, b in zip(g_lm, g_ex, strict=True))
        norm2 = sum(a.square().sum() for a in g_lm)
        coef = torch.clamp(dot / norm2.clamp(min=1e-30), max=0.0)  # only an opposing part
        lam = self.config.extra_lambda
        for p, a, b in zip(params, g_lm, g_ex, strict=True):
            p.grad = a + lam * (b - coef * a)
        return loss, lm_loss, extra

    def _grokfast(self):
        alpha, lamb = self.config.grokfast_alpha, self.config.grokfast_lambda
        grads = [p.grad for p in self.params if p.grad is not None]
        if self.grokfast_ema is None:
            self.grokfast_ema = [g.detach().clone() for g in grads]
        else:
            torch._foreach_lerp_(self.grokfast_ema, grads, 1.0 - alpha)
        torch._foreach_add_(grads, self.grokfast_ema, alpha=lamb)

    def step(self) -> dict:
        """One optimizer step; returns its metrics."""
        cfg = self.config
        lr = lr_at(cfg, self.step_num)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self.sample_batch()
        self.model.train()
        loss, lm_loss, extra = self.backward(batch)
        if cfg.grokfast_lambda != 0:
            self._grokfast()
        grad_norm = None
        if cfg.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip,
                                                             foreach=True))
        self.optimizer.step()
        self.step_num += 1
        return {"step": self.step_num, "loss": loss.item(), "lm_loss": lm_loss.item(),
                "extra_loss": None if extra is None else extra.item(), "lr": lr,
                "grad_norm": grad_norm}

    def snapshot(self) -> dict:
        """The trainer's state in memory (trainable weights, optimizer, Grokfast EMA, batch
        generator, step, torch's global RNG), copied: `restore(snapshot)` returns to it
        exactly, so two branches of training from it see the same batches."""
        return {"weights": [p.detach().clone() for p in self.params],
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "ema": None if self.grokfast_ema is None
                else [t.clone() for t in self.grokfast_ema],
                "generator": self.generator.get_state(), "step": self.step_num,
                "rng": torch.get_rng_state()}

    def restore(self, snapshot: dict) -> None:
        """Back to a `snapshot()` (which stays usable: nothing of it is shared)."""
        with torch.no_grad():
            for p, w in zip(self.params, snapshot["weights"], strict=True):
                p.copy_(w)
        self.optimizer.load_state_dict(copy.deepcopy(snapshot["optimizer"]))
        self.grokfast_ema = (None if snapshot["ema"] is None
                             else [t.clone() for t in snapshot["ema"]])
        self.generator.set_state(snapshot["generator"])
        self.step_num = snapshot["step"]
        torch.set_rng_state(snapshot["rng"])

    def train(self, steps: int | None = None, *, callback: Callable[[dict], None] | None = None
              ) -> list[dict]:
        """Run `steps` steps (default: up to config.steps); metrics of each step."""
        steps = self.config.steps - self.step_num if steps is None else steps
        history = []
        for _ in range(max(0, steps)):
            metrics = self.step()
            history.append(metrics)
            if callback is not None:
                callback(metrics)
        return history


@torch.no_grad()
def text_loss(model, corpus: TextCorpus, *, max_rows: int | None = None,
              batch_size: int = 64) -> float:
    """Mean next-byte loss (nats per byte) of `model` over `corpus` cut into consecutive
    windows of the model's block size (each read after BOS); `max_rows` windows at most,
    evenly spaced. NaN when the corpus has no whole window."""
    rows = corpus.windows(model.config.block_size)
    if max_rows is not None and len(rows) > max_rows:
        rows = rows.select(torch.linspace(0, len(rows) - 1, max_rows).long())
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, len(rows), batch_size):
            part = rows.select(torch.arange(start, min(start + batch_size, len(rows))))
            _, loss = model(part.inputs, part.targets())
            n = part.targets().ne(IGNORE_INDEX).sum().item()
            total += loss.item() * n
            count += n
    finally:
        model.train(was_training)
    return total / count if count else math.nan


@torch.no_grad()
def greedy_decode(model, tokenizer: ByteTokenizer, prompts: Sequence[str],
                  max_new_tokens: int, *, batch_size: int = 256) -> list[str]:
    """Greedy answers to `prompts`, each up to its first EOS or max_new_tokens tokens.
    Batched with left padding; one KV-cached `forward_step` per new token."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            ids, mask = make_prompt_batch(tokenizer, prompts[start:start + batch_size])
            out = model.forward_step(ids, attention_mask=mask, last_only=True)
            done = torch.zeros(ids.size(0), dtype=torch.bool)
            new_tokens = []
            for _ in range(max_new_tokens):
                nxt = out.logits[:, -1].argmax(dim=-1)  # (B,)
                nxt = nxt.masked_fill(done, tokenizer.eos_id)
                new_tokens.append(nxt)
                done |= nxt == tokenizer.eos_id
                if bool(done.all()) or len(new_tokens) == max_new_tokens:
                    break
                mask = torch.cat((mask, torch.ones_like(mask[:, :1])), dim=1)
                out = model.forward_step(nxt[:, None], attention_mask=mask, cache=out.cache)
            rows = torch.stack(new_tokens, dim=1).tolist() if new_tokens else [[]] * len(ids)
            answers.extend(tokenizer.decode(r, stop_at_eos=True) for r in rows)
    finally:
        if was_training:
            model.train()
    return answers


def greedy_accuracy(model, tokenizer: ByteTokenizer, examples: Sequence[Example],
                    max_new_tokens: int | None = None, *, batch_size: int = 256) -> float:
    """Fraction of examples whose greedy answer equals `output` exactly (0.0 if none).
    max_new_tokens defaults to the longest reference answer in bytes + 1 (for EOS)."""
    if not examples:
        return 0.0
    if max_new_tokens is None:
        max_new_tokens = max(len(ex.output.encode("utf-8")) for ex in examples) + 1
    answers = greedy_decode(model, tokenizer, [ex.input for ex in examples], max_new_tokens,
                            batch_size=batch_size)
    return sum(a == ex.output for a, ex in zip(answers, examples, strict=True)) / len(examples)
