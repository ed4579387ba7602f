"""Co-training with a reward that has no gradient (`loop.model_objective = "reinforce"`)."""

import random

import pytest
import torch

import engine_dsl
from engine_dsl import Type
from evolution.reinforce import ReinforceLoss
from neural import GPT, ByteTokenizer, Example, GPTConfig, TrainConfig, Trainer
from neural.tasks import TextCorpus, continuations

tok = ByteTokenizer()
SAMPLE = engine_dsl.read_expr("(sample logits)", Type.DECODER)


def share_of_a(examples, texts, stopped):
    """A toy reward: the share of the letter `a` in what was written."""
    return [t.count("a") / max(len(t), 1) for t in texts]


@pytest.fixture(scope="module")
def letters():
    rng = random.Random(0)
    text = " ".join("".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 6)))
                    for _ in range(3000))
    return text, continuations(text, 8, 8)


def _trained(text, examples, program_lambda: float):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=24))
    step = {"n": 0}
    loss = ReinforceLoss(SAMPLE, share_of_a, examples, samples=16, max_new_tokens=6,
                         seed=lambda: step["n"])
    trainer = Trainer(model, tok, TextCorpus([text]),
                      TrainConfig(steps=30, batch_size=8, warmup_steps=5, learning_rate=1e-2,
                                  extra_lambda=program_lambda), extra_loss=loss)
    trainer.train(callback=lambda m: step.update(n=m["step"]))
    return model, loss


def mean_reward(model, loss, examples) -> float:
    _, written = loss.write(model, examples[:128], seed=12345)
    return sum(share_of_a(None, [tok.decode(d.tokens) for d in written], None)) / 128


def test_reinforce_moves_the_model_toward_the_reward(letters):
    """A reward without a gradient (share of `a` written) rises under reinforce, beside
    plain training on the same corpus, which leaves it near the corpus's 1/8."""
    text, examples = letters
    plain, loss = _trained(text, examples, 0.0)
    rewarded, loss_r = _trained(text, examples, 3.0)
    base, moved = mean_reward(plain, loss, examples), mean_reward(rewarded, loss_r, examples)
    assert base < 0.2 and moved > base + 0.1, (base, moved)
    assert len(loss_r.last) == 16


def test_reinforce_loss_is_zero_when_every_reward_is_the_same(letters):
    """The baseline is the batch's mean reward: equal rewards give no advantage, no loss."""
    text, examples = letters
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=24))
    flat = ReinforceLoss(SAMPLE, lambda e, t, s: [1.0] * len(t), examples, samples=8,
                         max_new_tokens=4, seed=lambda: 0)
    assert flat(model).item() == 0.0


def test_the_step_draws_are_repeatable(letters):
    """The prompts and draws of a step follow from its seed (a resumed run repeats them)."""
    text, examples = letters
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=24))
    seen = []
    loss = ReinforceLoss(SAMPLE, lambda e, t, s: seen.append((e, t)) or [0.0] * len(t),
                         examples, samples=4, max_new_tokens=4, seed=lambda: 7)
    loss(model)
    loss(model)
    assert seen[0] == seen[1] and all(isinstance(e, Example) for e in seen[0][0])


def test_a_run_co_trains_by_reinforce(tmp_path):
    """loop.model_objective = "reinforce": generation 1 trains the model on what the champion
    writes (answer tasks: rewarded by exact match), and logs the mean reward."""
    import json

    from conftest import TINY

    from evolution.loop import CoEvolution
    from evolution.rundir import RunDir
    from evolution.settings import ConfigError, resolve

    with pytest.raises(ConfigError, match="loop.model_objective must be one of likelihood, "
                                          "reinforce, found 'reward'"):
        resolve(TINY, ["loop.model_objective=reward"])
    cfg = resolve(TINY, ["loop.model_objective=reinforce", "loop.reinforce_samples=4",
                         "run.generations=1"])
    run = CoEvolution.start(cfg, RunDir(tmp_path / "run"))
    try:
        assert isinstance(run.champion_loss, ReinforceLoss)
        run.run()
    finally:
        run.close()
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert "reward" not in log[0]["model"]  # pre-training: the language-model loss alone
    assert 0.0 <= log[1]["model"]["reward"] <= 1.0
