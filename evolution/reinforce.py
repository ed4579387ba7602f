"""The model's loss through the champion program, for rewards with and without a gradient.

Layer 1 trains the model on `lm_loss + loop.program_lambda x extra_loss` (`neural.train`);
the co-training objective (`loop.model_objective`) picks the extra loss:

* `likelihood` (`evolution.loop.ChampionLoss`): the NLL of the batch's answer tokens under
  the champion program's relaxed distribution.
* `reinforce` (`ReinforceLoss`): the champion *writes* and a reward judges what it wrote.
  Each training step draws `samples` prompts of the train split (fixed by the run's seed and
  the trainer's step, so a resumed run draws the same), decodes them with the champion
  (exact mode, sampled, the step's own draws), scores each continuation with the reward, and
  takes the REINFORCE loss

      - sum over sampled tokens of a_i x log pi(y_it | prompt_i, y_i<t) / tokens,
        a_i = (r_i - mean r) / std r

  where pi is the champion's relaxed per-step distribution over the model's logits (the one
  `likelihood` trains, differentiable in the model), the baseline is the batch's mean reward
  and the advantage is in units of the batch's spread (so `loop.program_lambda` means the
  same whatever the reward's scale; equal rewards give no loss). The model's own
  language-model loss on its corpus batch is the likelihood anchor (weight 1;
  `loop.program_lambda` weighs the reward term against it), so the model cannot drift into
  text only the reward likes.

Rewards: `(examples, texts, stopped) -> one float per example`, higher is better.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch

import engine_dsl
from engine_dsl.nodes import Expr
from neural import ByteTokenizer, Example

from .evaluation import cache_rows

Reward = Callable[[list[Example], list[str], list[bool]], Sequence[float]]


def relaxed_policy(decoder: Expr) -> torch.nn.Module:
    """The compiled Logits program of a Decoder, its constants frozen (the model learns)."""
    from engine_dsl.decoders import plan

    return engine_dsl.compile_expr(plan(decoder).logits_expr).requires_grad_(False)


def token_log_probs(policy, model, ids: torch.Tensor, mask: torch.Tensor,
                    attention_mask: torch.Tensor, sharpness: float, breakers=None
                    ) -> torch.Tensor:
    """(R,) log-probability of each token marked by `mask` (right-padded rows `ids`) under
    the policy's relaxed distribution, differentiable in the model; rows in mask order."""
    rows = cache_rows(model, ids, mask, attention_mask=attention_mask, grad=True,
                      breakers=breakers)
    scores = policy(mode="relaxed", sharpness=sharpness, **rows.sources())
    logp = torch.log_softmax(scores.float(), dim=-1)
    return logp.gather(1, rows.targets[:, None]).squeeze(1)


class ReinforceLoss:
    """`extra_loss(model, batch)` of `loop.model_objective = "reinforce"` (module doc). The
    corpus batch is not read: it is the anchor's, and the trainer takes its loss itself.
    `last` holds the rewards of the latest step."""

    def __init__(self, decoder: Expr, reward: Reward, examples: Sequence[Example], *,
                 samples: int, max_new_tokens: int, seed: Callable[[], int],
                 tokenizer: ByteTokenizer | None = None, sharpness: float = 30.0,
                 breakers=None):
        if not examples:
            raise ValueError("reinforce needs prompts to sample: no train examples")
        self.reward, self.examples = reward, list(examples)
        self.samples, self.max_new_tokens, self.seed = samples, max_new_tokens, seed
        self.tokenizer = tokenizer or ByteTokenizer()
        self.sharpness, self.breakers = sharpness, breakers
        self.last: list[float] = []
        self.set(decoder)

    def set(self, decoder: Expr) -> None:
        self.decoder = decoder
        self.policy = relaxed_policy(decoder)

    def write(self, model, examples: Sequence[Example], seed: int):
        """The champion's continuations of the examples' prompts: (prompt ids, Decodings)."""
        tok = self.tokenizer
        prompts = [tok.encode(e.input, bos=True) for e in examples]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                written = engine_dsl.decode(model, self.decoder, prompts,
                                            max_new_tokens=self.max_new_tokens,
                                            stop_token=tok.eos_id, pad_token=tok.pad_id,
                                            seed=seed, breakers=self.breakers)
        finally:
            model.train(was_training)
        return prompts, written

    def __call__(self, model, batch=None) -> torch.Tensor:
        seed = self.seed()
        rng = random.Random(seed)
        examples = rng.sample(self.examples, min(self.samples, len(self.examples)))
        prompts, written = self.write(model, examples, seed)
        tok = self.tokenizer
        texts = [tok.decode(d.tokens) for d in written]
        rewards = torch.tensor([float(r) for r in self.reward(
            examples, texts, [d.stopped for d in written])])
        self.last = rewards.tolist()
        spread = rewards.std() if len(rewards) > 1 else torch.tensor(0.0)
        advantage = (rewards - rewards.mean()) / spread.clamp(min=1e-6)
        seqs = [p + d.tokens + ([tok.eos_id] if d.stopped else [])
                for p, d in zip(prompts, written, strict=True)]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), tok.pad_id, dtype=torch.long)
        attention = torch.zeros_like(ids, dtype=torch.bool)
        written_mask = torch.zeros_like(attention)
        for i, (p, s) in enumerate(zip(prompts, seqs, strict=True)):
            ids[i, : len(s)] = torch.tensor(s)
            attention[i, : len(s)] = True
            written_mask[i, len(p): len(s)] = True
        if not written_mask.any():  # nothing was written: no gradient to give
            return torch.zeros(())
        logp = token_log_probs(self.policy, model, ids, written_mask, attention,
                               self.sharpness, self.breakers)
        seq = written_mask[:, 1:].nonzero(as_tuple=True)[0]  # the sequence of each row
        return -(advantage[seq] * logp).mean()
