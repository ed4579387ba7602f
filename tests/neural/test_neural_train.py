"""Trainer: plain loss at lambda 0, the extra loss hook, schedule, Grokfast, greedy decoding."""

import subprocess
import sys

import pytest
import torch

from neural import (
    GPT,
    ByteTokenizer,
    GPTConfig,
    TrainConfig,
    Trainer,
    get_task,
    greedy_accuracy,
    greedy_decode,
    lr_at,
)

tok = ByteTokenizer()
TINY = GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=16)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return GPT(TINY)


@pytest.fixture(scope="module")
def examples():
    return get_task("addition", difficulty=2, size=300).train


def answer_logit_mean(model, batch):
    """A stand-in extra loss that depends on the model: mean square of answer logits."""
    logits, _ = model(batch.inputs)
    return logits[batch.answer_mask[:, 1:]].square().mean()


def test_lambda_zero_is_plain_lm_loss(examples):
    """With extra_lambda = 0 the step loss is the model's own LM loss and the extra loss
    callable is never called."""
    def boom(model, batch):
        raise AssertionError("extra_loss called at lambda 0")

    trainer = Trainer(tiny_model(), tok, examples, TrainConfig(batch_size=8), extra_loss=boom)
    batch = trainer.sample_batch()
    total, lm, extra = trainer.loss(batch)
    _, plain = trainer.model(batch.inputs, batch.targets(answer_only=True))
    assert extra is None and torch.equal(total, plain) and torch.equal(lm, plain)
    m = trainer.step()
    assert m["extra_loss"] is None and m["loss"] == m["lm_loss"]


def test_lambda_zero_trains_like_no_extra_loss(examples):
    """Training with a callable at lambda 0 gives the same parameters as without one."""
    a = Trainer(tiny_model(), tok, examples, TrainConfig(batch_size=8),
                extra_loss=answer_logit_mean)
    b = Trainer(tiny_model(), tok, examples, TrainConfig(batch_size=8))
    a.train(3)
    b.train(3)
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_restore_returns_to_a_snapshot_exactly(examples):
    """Steps from a restored snapshot repeat those first taken from it (the same batches,
    moments, Grokfast EMA and co-training gradients), and a snapshot survives its use."""
    cfg = TrainConfig(batch_size=8, grokfast_lambda=0.5, extra_lambda=0.5)
    trainer = Trainer(tiny_model(), tok, examples, cfg, extra_loss=answer_logit_mean)
    trainer.train(2)
    snap = trainer.snapshot()
    first = trainer.train(3)
    weights = [p.detach().clone() for p in trainer.params]
    trainer.restore(snap)
    assert trainer.step_num == 2
    assert trainer.train(3) == first
    assert all(torch.equal(p, w) for p, w in zip(trainer.params, weights, strict=True))
    trainer.restore(snap)
    assert all(torch.equal(p, w) for p, w in zip(trainer.params, snap["weights"], strict=True))
    assert trainer.train(3) == first


def test_extra_loss_gradients_flow(examples):
    """The step loss is lm + lambda * extra, and its gradient is the weighted sum of both
    gradients, so the extra loss reaches every parameter it depends on."""
    lam = 0.5
    trainer = Trainer(tiny_model(), tok, examples,
                      TrainConfig(batch_size=8, extra_lambda=lam), extra_loss=answer_logit_mean)
    batch = trainer.sample_batch()
    model = trainer.model

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    total, lm, extra = trainer.loss(batch)
    assert torch.allclose(total, lm + lam * extra)
    g_total = grads(total)
    g_lm = grads(trainer.loss(batch)[1])
    g_extra = grads(answer_logit_mean(model, batch))
    assert any(g.abs().sum() > 0 for g in g_extra)
    for gt, gl, ge in zip(g_total, g_lm, g_extra, strict=True):
        assert torch.allclose(gt, gl + lam * ge, atol=1e-6)
    m = trainer.step()
    assert m["extra_loss"] is not None and m["loss"] != m["lm_loss"]


def test_extra_lambda_without_callable_is_an_error(examples):
    """A non-zero lambda needs a callable."""
    with pytest.raises(ValueError, match="extra_loss"):
        Trainer(tiny_model(), tok, examples, TrainConfig(extra_lambda=1.0))


def test_warmup_then_cosine():
    """lr rises linearly over warmup, peaks at learning_rate, and decays to min_lr."""
    cfg = TrainConfig(steps=100, warmup_steps=10, learning_rate=1e-2, min_lr=1e-3)
    lrs = [lr_at(cfg, s) for s in range(120)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[9] == pytest.approx(1e-2)
    assert all(a >= b - 1e-12 for a, b in zip(lrs[9:100], lrs[10:100], strict=False))
    assert lrs[100] == lrs[119] == pytest.approx(1e-3)


def test_grokfast_adds_the_slow_gradient(examples):
    """After the first step the EMA equals the first gradient, and with a non-zero factor
    the update differs from plain training."""
    cfg = TrainConfig(batch_size=8, grokfast_lambda=2.0, grad_clip=0.0)
    a = Trainer(tiny_model(), tok, examples, cfg)
    b = Trainer(tiny_model(), tok, examples, TrainConfig(batch_size=8, grad_clip=0.0))
    a.step()
    b.step()
    assert a.grokfast_ema is not None and len(a.grokfast_ema) == len(a.params)
    a.step()
    b.step()
    assert any(not torch.equal(p, q) for p, q in zip(a.model.parameters(),
                                                     b.model.parameters(), strict=True))


def test_training_reduces_loss(examples):
    """A few dozen steps lower the loss on a tiny model (the trainer trains)."""
    trainer = Trainer(tiny_model(), tok, examples,
                      TrainConfig(steps=40, batch_size=16, warmup_steps=5))
    history = trainer.train()
    assert len(history) == 40 and trainer.step_num == 40
    assert sum(m["loss"] for m in history[-5:]) < sum(m["loss"] for m in history[:5])


def naive_greedy(model, prompt, n):
    ids = tok.encode(prompt, bos=True)
    out = []
    for _ in range(n):
        nxt = int(model.forward_step(torch.tensor([ids])).logits[0, -1].argmax())
        if nxt == tok.eos_id:
            break
        out.append(nxt)
        ids.append(nxt)
    return tok.decode(out)


def test_greedy_decode_equals_uncached_per_row_decoding():
    """Batched, left-padded, KV-cached greedy decoding gives each row the answer of plain
    full-forward argmax decoding of that row alone."""
    torch.manual_seed(1)
    model = GPT(TINY).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40)  # peaky logits, so EOS shows up in some rows
    prompts = ["1+2=", "123+45=", "", "zz"]
    got = greedy_decode(model, tok, prompts, max_new_tokens=6, batch_size=3)
    with torch.no_grad():
        assert got == [naive_greedy(model, p, 6) for p in prompts]


def test_greedy_accuracy_counts_exact_matches(examples):
    """greedy_accuracy is the fraction of examples whose greedy answer equals the output."""
    model = tiny_model()
    answers = greedy_decode(model, tok, [e.input for e in examples[:20]], 4)
    fake = [type(e)(e.input, a) for e, a in zip(examples[:20], answers, strict=True)]
    assert greedy_accuracy(model, tok, fake, 4) == 1.0
    assert greedy_accuracy(model, tok, examples[:20]) == sum(
        a == e.output for a, e in zip(answers, examples[:20], strict=True)) / 20
    assert greedy_accuracy(model, tok, []) == 0.0


def test_neural_imports_neither_engine_dsl_nor_transformers():
    """neural never imports engine_dsl or evolution, and loads transformers only on demand."""
    code = ("import sys, neural; bad = [m for m in ('engine_dsl', 'evolution', 'transformers',"
            " 'deap') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_set_examples_switches_the_data(examples):
    """After set_examples (e.g. a curriculum step), batches come from the new examples."""
    trainer = Trainer(tiny_model(), tok, examples, TrainConfig(batch_size=8))
    trainer.step()
    harder = get_task("addition", difficulty=3, size=50).train
    trainer.set_examples(harder)
    batch = trainer.sample_batch()
    prompts = {tok.decode(row[: row.tolist().index(ord("=")) + 1]) for row in batch.ids}
    assert prompts <= {e.input for e in harder}


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_projection_never_lets_the_extra_loss_oppose_the_lm_loss(examples, sign):
    """The safeguard: the step gradient is g_lm + lambda * g_extra where the two agree, and
    where they oppose, g_extra loses its component along g_lm, so the step's inner product
    with g_lm is at least |g_lm|^2 (co-training never slows the LM loss to first order)."""
    lam = 2.0
    trainer = Trainer(tiny_model(), tok, examples, TrainConfig(batch_size=8, extra_lambda=lam),
                      extra_loss=lambda m, b: sign * m(b.inputs, b.targets())[1])
    batch = trainer.sample_batch()
    trainer.backward(batch)
    step = torch.cat([p.grad.flatten() for p in trainer.params])
    trainer.model.zero_grad()
    trainer.loss(batch)[1].backward()
    g_lm = torch.cat([p.grad.flatten() for p in trainer.params])
    # extra = sign * lm: agreeing (sign 1) adds lam * g_lm; opposing (sign -1) is removed
    expected = g_lm * (1 + lam) if sign > 0 else g_lm
    assert torch.allclose(step, expected, atol=1e-6)
    assert float(step @ g_lm) >= float(g_lm @ g_lm) * (1 - 1e-5)
